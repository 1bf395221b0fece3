"""``crabzoo serve`` throughput: requests/s and p50 / p95 latency with batching off and on, side by side.

Starts the server twice on the same checkpoint: ``--max_batch_size 1`` (every request generated alone) and
``--max_batch_size B --batch_timeout T`` (concurrent requests generated together). Each time ``--clients``
threads send ``--requests`` chat completions in all through the ``openai`` client (a video, its audio and a
question each, ``max_tokens`` tokens, 2 warm-up requests first); latency is measured per request from send to
the full answer. Without ``--ckpt_path`` a tiny checkpoint is fit first on a small AVSynth set in a temporary
folder (the test suite's tiny MLP paradigm, seconds on a CPU).

Usage::

    python benchmarks/serve_throughput.py                                 # tiny model, 48 requests, 8 clients
    python benchmarks/serve_throughput.py --ckpt_path CKPT --device cuda --requests 200 --clients 16
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "inference"))

QUESTIONS = ["What is making the sound?", "Describe the video.", "What happens first?", "Is anyone speaking?",
             "Which instrument plays?", "Where is the sound coming from?", "How many objects move?", "What is here?"]


def tiny_checkpoint(folder: Path) -> tuple[Path, list[tuple[Path, Path]]]:
    """Fit the tiny MLP paradigm for two steps on a small AVSynth set; the checkpoint and a ks test clip."""
    from ask_helpers import fit_tiny, ks_clip

    from crabzoo.data.avsynth import synthesize

    synthesize(folder / "data", workers=1, clips=30, seed=0, soundtrack=False)
    ckpt = fit_tiny(folder / "data", folder / "run")
    clips = [ks_clip(folder / "data", 0)]
    return ckpt, [(c.video, c.audio) for c in clips]


def measure(url: str, clips: list[tuple[Path, Path]], requests: int, clients: int, max_tokens: int) -> dict:
    """Send ``requests`` chat completions from ``clients`` threads; throughput and latency percentiles."""
    from openai import OpenAI
    from serve_helpers import user_message

    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
    model = client.models.list().data[0].id

    def one(i: int) -> float:
        video, audio = clips[i % len(clips)]
        start = time.perf_counter()
        reply = client.chat.completions.create(
            model=model, messages=user_message(QUESTIONS[i % len(QUESTIONS)], video=video, audio=audio),
            max_tokens=max_tokens,
        )
        assert reply.choices[0].message.content is not None
        return time.perf_counter() - start

    for i in range(2):
        one(i)
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def client_loop() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            seconds = one(i)
            with lock:
                latencies.append(seconds)

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "requests": len(latencies), "seconds": wall, "requests_per_s": len(latencies) / wall,
        "p50_s": statistics.median(ordered), "p95_s": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", help="checkpoint to serve (default: fit a tiny one first)")
    parser.add_argument("--video", help="video file of the requests (with --ckpt_path; default: AVSynth clips)")
    parser.add_argument("--audio", help="audio file of the requests")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--requests", type=int, default=48, help="requests per row (default 48)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads (default 8)")
    parser.add_argument("--max_batch_size", type=int, default=8, help="batch size of the batching row (default 8)")
    parser.add_argument("--batch_timeout", type=float, default=0.05, help="batch timeout of the batching row (s)")
    parser.add_argument("--max_tokens", type=int, default=16, help="tokens per answer (default 16)")
    args = parser.parse_args()

    from serve_helpers import serving

    with tempfile.TemporaryDirectory(prefix="serve_throughput_") as tmp:
        folder = Path(tmp)
        if args.ckpt_path:
            if not (args.video and args.audio):
                parser.error("--ckpt_path needs --video and --audio for the requests")
            ckpt, clips = Path(args.ckpt_path), [(Path(args.video), Path(args.audio))]
        else:
            ckpt, clips = tiny_checkpoint(folder)
        rows = {"batching off": ["--max_batch_size", "1"],
                f"batching on (B={args.max_batch_size})": ["--max_batch_size", str(args.max_batch_size),
                                                           "--batch_timeout", str(args.batch_timeout)]}
        results = {}
        for name, extra in rows.items():
            serve_args = ["--ckpt_path", str(ckpt), "--device", args.device, "--max_tokens", str(args.max_tokens), *extra]
            with serving(serve_args, folder / "server.log") as url:
                results[name] = measure(url, clips, args.requests, args.clients, args.max_tokens)
    print(f"crabzoo serve, {args.requests} requests from {args.clients} clients, {args.max_tokens} tokens each, "
          f"device {args.device}")
    print(f"{'':<22}{'requests/s':>12}{'p50 (s)':>10}{'p95 (s)':>10}")
    for name, r in results.items():
        print(f"{name:<22}{r['requests_per_s']:>12.2f}{r['p50_s']:>10.3f}{r['p95_s']:>10.3f}")
    base, batched = results.values()
    print(f"batching on / off: {batched['requests_per_s'] / base['requests_per_s']:.2f}x requests/s, "
          f"p50 {batched['p50_s'] / base['p50_s']:.2f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
