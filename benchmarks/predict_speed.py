"""Tokens/s of batched ``crabzoo predict`` against a plain per-sample ``generate`` loop, side by side.

Both sides run the same model (the tiny MLP paradigm of the quickstart, random weights unless ``--ckpt_path``
gives trained ones) on the same AVSynth test samples, media decoding and preprocessing included:

- ``predict``: Lightning's predict loop over the data module (batches of ``--batch`` samples of one task,
  left-padded, greedy, with the backbone's KV cache), i.e. what ``crabzoo predict`` runs;
- ``loop``: one sample at a time through ``model.generate``.

Generated tokens are counted by re-tokenising each generation (the same count for both sides).

Usage::

    python benchmarks/predict_speed.py [--samples-per-task 16] [--batch 8] [--max-new-tokens 32] [--ckpt_path CKPT]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["ks", "emotion", "a2v", "ave"]


def build(data: Path, work: Path, max_new_tokens: int, ckpt_path: str | None):
    """The tiny MLP paradigm (quickstart recipe) with its tokenizer trained on ``data``."""
    from crabzoo.inference.loading import model_from_configs

    override = work / "override.yaml"
    override.write_text(yaml.safe_dump({"model": {"init_args": {
        "backbone": {"init_args": {"tokenizer_corpus": str(data / "AVUIE_2")}}, "max_new_tokens": max_new_tokens}}}))
    model, _ = model_from_configs([ROOT / "recipes" / "quickstart.yaml", override])
    if ckpt_path:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)["state_dict"]
        model.load_state_dict(state, strict=False)
    return model.eval()


def count_tokens(model, texts: list[str]) -> int:
    tok = model.backbone.tokenizer
    return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)


def run_predict(model, dm) -> tuple[list[str], float]:
    import lightning as L

    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, use_distributed_sampler=False)
    start = time.perf_counter()
    batches = trainer.predict(model, datamodule=dm)
    seconds = time.perf_counter() - start
    records = sorted((r for batch in batches for r in batch), key=lambda r: r["id"])
    return [r["generation"] for r in records], seconds


def run_loop(model, dm) -> tuple[list[str], float]:
    samples = sorted(dm.splits["val"], key=lambda s: s.id)
    start = time.perf_counter()
    texts = []
    with torch.no_grad():
        for sample in samples:
            batch = dm.processor.collate([dm.processor(sample)])
            texts += model.generate(batch)
    return texts, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples-per-task", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--ckpt_path", help="trained weights of the quickstart model (default: random weights)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from crabzoo.data.avsynth import synthesize
    from crabzoo.data.datamodule import AVUIEDataModule

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clips = 5 * args.samples_per_task * len(TASKS)  # the last fifth of each task's clips is its test split
        synthesize(work / "data", clips=clips, seed=0, tasks=TASKS, workers=1, soundtrack=False, reasoning=False)
        model = build(work / "data", work, args.max_new_tokens, args.ckpt_path)
        dm = AVUIEDataModule(str(work / "data"), tasks=TASKS, batch_size=args.batch, num_workers=0,
                             max_val_per_task=args.samples_per_task)
        dm.processor = model.make_processor()
        dm.setup("predict")
        n = len(dm.splits["val"])
        warm = dm.processor.collate([dm.processor(dm.splits["val"][0])])
        model.generate(warm)  # first-call costs (allocations, kernels) out of both timings

        batched, t_batched = run_predict(model, dm)
        looped, t_loop = run_loop(model, dm)

    tok_b, tok_l = count_tokens(model, batched), count_tokens(model, looped)
    same = sum(a == b for a, b in zip(batched, looped))
    print(f"{n} samples ({len(TASKS)} tasks), max_new_tokens {args.max_new_tokens}, {args.threads} thread(s), "
          f"{'trained' if args.ckpt_path else 'random'} weights")
    print(f"{'mode':<28} {'tokens':>8} {'seconds':>9} {'tokens/s':>10}")
    print(f"{f'predict (batch {args.batch}, KV cache)':<28} {tok_b:>8} {t_batched:>9.2f} {tok_b / t_batched:>10.1f}")
    print(f"{'per-sample generate loop':<28} {tok_l:>8} {t_loop:>9.2f} {tok_l / t_loop:>10.1f}")
    print(f"speed-up: {(tok_b / t_batched) / (tok_l / t_loop):.2f}x tokens/s; identical generations {same}/{n}")


if __name__ == "__main__":
    main()
