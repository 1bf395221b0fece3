"""The modular paradigm with Crab's segmentation branch: mask tokens in the answer, a mask decoder on top.

:class:`SegmentationAVLLM` is the modular paradigm (:class:`~crabzoo.paradigms.base.AVLLM`: encoders ->
connectors -> placeholders -> LLM) plus Crab v1's segmentation branch. For segmentation tasks (``s4``, ``ms3``,
``ref_avs`` when the object exists) the training target ends with
``<mask_start><mask_0><mask_1><mask_2><mask_3><mask_4><mask_5><mask_end>``; the LLM's last hidden states at the
six ``<mask_k>`` tokens and two extra layers of the visual encoder (CLIP layers 14 and 22 in Crab) feed a mask
head (:class:`~crabzoo.heads.base.MaskHead`), trained with BCE + 0.5 Dice added to the LM loss: crabzoo's
:class:`~crabzoo.heads.mask_decoder.MaskDecoder` (states at the mask tokens) or Crab's own
:class:`~crabzoo.heads.crab_seg.CrabSegModule` (states one position before them, as Crab reads them), which
takes Crab's released stage-3 weights.

At evaluation the model generates; when the generation holds all six mask tokens, one forward pass over
prompt + generation gives their hidden states, the decoder predicts the mask and the task's AVSBench / Ref-AVS
metric scores it directly. Otherwise the task's own parser reads the text (box filling), as for any model.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from crabzoo.adapters.base import Adapter
from crabzoo.backbones.base import Backbone
from crabzoo.backbones.hf_causal_lm import MASK_QUERY_TOKENS
from crabzoo.connectors.base import ConnectorFactory
from crabzoo.data.collate import Processor
from crabzoo.encoders.base import AudioEncoder, MediaFeatures, VisualEncoder
from crabzoo.errors import CrabzooError
from crabzoo.heads.base import MaskHead
from crabzoo.heads.mask_decoder import MaskDecoder
from crabzoo.paradigms.base import AVLLM, STREAM_OF_KIND, _default_optimizer

MASK_SUFFIX = "<mask_start>" + "".join(MASK_QUERY_TOKENS) + "<mask_end>"
"""What Crab v1 appends to a segmentation target (``MASK_QUERY_TOKENS`` are scale-major: ``<mask_0..2>`` prompt
scale 0, ``<mask_3..5>`` scale 1)."""

SEGMENTATION_TASKS: tuple[str, ...] = ("s4", "ms3", "ref_avs")
"""Tasks whose targets get the mask suffix (when their truth has a ground-truth mask)."""

MaskDecoderFactory = Callable[[int, int], MaskHead]
"""``(llm_dim, visual_dim) -> MaskHead``: the widths come from the backbone and the visual encoder."""


@dataclass
class MaskProcessor(Processor):
    """A :class:`~crabzoo.data.collate.Processor` that adds the mask suffix and the ground-truth mask.

    For a sample of a segmentation task whose truth names a mask (``truth["mask_path"]``), the target is the
    task's own target text followed by ``mask_suffix`` (the text is truncated first, so the suffix always
    survives ``max_target_tokens``), and the item holds ``mask`` (bool ``mask_size``, nearest-resized, any
    non-zero pixel is foreground) and ``has_mask=True``. Other samples are processed as by the base class,
    with ``has_mask=False``.

    Args:
        mask_suffix: Text appended to segmentation targets (tokenised on its own).
        mask_size: ``(H, W)`` of the loaded masks (the decoder's output size).
        seg_tasks: Task names that get the suffix.
    """

    mask_suffix: str = MASK_SUFFIX
    mask_size: tuple[int, int] = (224, 224)
    seg_tasks: tuple[str, ...] = SEGMENTATION_TASKS

    def suffix_ids(self) -> list[int]:
        """Token ids of ``mask_suffix``."""
        return self.backbone.tokenizer(self.mask_suffix, add_special_tokens=False)["input_ids"]

    def mask_target_ids(self, target: str) -> list[int]:
        """Target text (truncated to leave room for the suffix), the suffix, then EOS."""
        tok = self.backbone.tokenizer
        suffix = self.suffix_ids()
        room = max(self.max_target_tokens - len(suffix), 0)
        return tok(target, add_special_tokens=False)["input_ids"][:room] + suffix + [tok.eos_token_id]

    def __call__(self, sample: Any) -> dict[str, Any]:
        """The base item plus ``mask`` (bool ``(H, W)`` or ``None``) and ``has_mask``."""
        item = super().__call__(sample)
        truth = sample.truth if isinstance(sample.truth, dict) else {}
        path = truth.get("mask_path")
        if sample.task not in self.seg_tasks or not path or truth.get("exists") is False:
            return {**item, "mask": None, "has_mask": False}
        from crabzoo.tasks import get_task
        from crabzoo.tasks.masks import read_mask

        text = sample.target or get_task(sample.task).format_target(sample.truth)
        item["target_ids"] = torch.tensor(self.mask_target_ids(text), dtype=torch.long)
        item["mask"] = torch.from_numpy(read_mask(path, tuple(self.mask_size)).copy())
        item["has_mask"] = True
        return item

    @staticmethod
    def collate(items: list[dict[str, Any] | None]) -> dict[str, Any]:
        """The base batch plus ``masks`` (bool ``(B, H, W)``, zeros where absent) and ``has_mask`` (bool ``(B,)``)."""
        from crabzoo.data.skips import is_skipped

        batch = Processor.collate(items)
        kept = [it for it in items if not is_skipped(it)]
        shapes = {tuple(it["mask"].shape) for it in kept if it.get("mask") is not None}
        if len(shapes) > 1:
            raise ValueError(f"masks of one batch differ in size: {sorted(shapes)}")
        batch["has_mask"] = torch.tensor([bool(it.get("has_mask")) for it in kept], dtype=torch.bool)
        if shapes:
            masks = torch.zeros(len(kept), *shapes.pop(), dtype=torch.bool)
            for b, it in enumerate(kept):
                if it.get("mask") is not None:
                    masks[b] = it["mask"]
            batch["masks"] = masks
        else:
            batch["masks"] = None
        return batch


class StageWeights(L.Callback):
    """Write a stage's trainable weights to ``<log_dir>/weights.safetensors`` when fitting ends (atomically).

    The next stage reads them with ``init_checkpoint`` (safetensors: no pickled objects are loaded). Only
    parameters with ``requires_grad`` are written (connectors, adapter, heads, trained embeddings); frozen
    modules come from their own public checkpoints.

    Args:
        filename: File name inside the run directory (``trainer.log_dir``, else ``default_root_dir``).
    """

    def __init__(self, filename: str = "weights.safetensors") -> None:
        self.filename = filename

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import os
        import tempfile
        from pathlib import Path

        from safetensors.torch import save_file

        from crabzoo.distributed import full_tensor

        state = {n: full_tensor(p.detach()).cpu().contiguous().clone() for n, p in pl_module.named_parameters() if p.requires_grad}
        folder = Path(trainer.log_dir or trainer.default_root_dir)  # log_dir broadcasts: every rank reads it
        if not trainer.is_global_zero:
            return
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{self.filename}.tmp-")
        os.close(fd)
        try:
            save_file(state, tmp)
            os.replace(tmp, folder / self.filename)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


class SegmentationAVLLM(AVLLM):
    """The modular AV-LLM with Crab v1's mask-token segmentation branch.

    The visual encoder must select ``num_scales + 1`` hidden layers (e.g. CLIP ViT-L/14 ``[14, 22, 23]``): the
    last feeds the LLM, the others (``seg_layers``) feed the mask decoder's scales, taken at the sample's frame
    (the first visual step; segmentation samples carry one image). The mask decoder is the module group
    ``head``.

    Args:
        backbone: The LLM; it must have the mask tokens (``HFCausalLM(mask_tokens=True)``) and return hidden
            states (``forward(..., output_hidden_states=True)``).
        audio_encoder: Audio encoder.
        visual_encoder: Visual encoder exposing extra layers (``MediaFeatures.extra_layers``).
        audio_connector: Audio connector factory.
        visual_connector: Visual connector factory.
        mask_decoder: Factory ``(llm_dim, visual_dim) -> MaskHead`` (default: :class:`MaskDecoder` at Crab's sizes;
            :class:`~crabzoo.heads.crab_seg.CrabSegModule` is Crab's own module, which takes its stage-3 weights).
        seg_layers: Visual hidden-layer indices (as given to the encoder) feeding the decoder's scales, in
            scale order; ``None``: every selected layer but the last.
        seg_tasks: Tasks trained and scored through the mask tokens.
        mask_suffix: Text appended to the targets of segmentation samples that have a mask.
        mask_weight: Weight of the mask loss added to the LM loss.
        train_embeddings: Also train the LLM's input embeddings and LM head (Crab stage 3: ``embed_tokens``
            and ``lm_head``), whatever ``train_groups`` says about ``llm``.
        freeze_adapter: Keep the adapter's weights fixed (e.g. the stage-2 I-LoRA during stage 3).
        init_checkpoint: Weights of an earlier stage (its ``weights.safetensors`` from :class:`StageWeights`, or a
            ``torch.save`` file of tensors); parameters it lacks (the new mask decoder) keep their init.
        adapter: Adapter (LoRA, I-LoRA, ...).
        train_groups: Module groups trained in full (``head`` is the mask decoder).
        optimizer: Optimizer factory.
        scheduler: Learning-rate scheduler factory.
        system_prompt: Optional system turn.
        max_new_tokens: Generation length at evaluation.
        task_max_new_tokens: Generation length per task, overriding ``max_new_tokens`` for batches of those tasks
            (e.g. ``{ks: 12, s4: 72}``: short answers stop early even when the model never emits EOS).
        max_target_tokens: Target truncation length (the mask suffix is always kept).
        generate_val: Generate and score at validation.
        task_names: Task order for task-routed adapters.
        feature_cache: Directory of the frozen encoders' feature cache (see :class:`~crabzoo.paradigms.base.AVLLM`).
        save_frozen: Keep frozen parameters in checkpoints (see :class:`~crabzoo.paradigms.base.AVLLM`).
        mask_protocol: ``avsbench`` or ``crab_plus`` mask scores (see :class:`~crabzoo.paradigms.base.AVLLM`).
        released: Released weight files loaded at setup, in order (Crab: the stage-2 ``finetune_weights.bin``,
            then the stage-3 ``avs_finetune_weights.bin`` into a :class:`~crabzoo.heads.crab_seg.CrabSegModule`),
            see :mod:`crabzoo.paradigms.released`.
    """

    packs_sequences = False  # the mask tokens' hidden states are read at left-padded positions

    def __init__(
        self,
        backbone: Backbone,
        audio_encoder: AudioEncoder | None = None,
        visual_encoder: VisualEncoder | None = None,
        audio_connector: ConnectorFactory | None = None,
        visual_connector: ConnectorFactory | None = None,
        mask_decoder: MaskDecoderFactory = MaskDecoder,
        seg_layers: Sequence[int] | None = None,
        seg_tasks: Sequence[str] = SEGMENTATION_TASKS,
        mask_suffix: str = MASK_SUFFIX,
        mask_weight: float = 1.0,
        train_embeddings: bool = False,
        freeze_adapter: bool = False,
        init_checkpoint: str | None = None,
        adapter: Adapter | None = None,
        train_groups: Sequence[str] = ("connector", "head"),
        optimizer: OptimizerCallable = _default_optimizer,
        scheduler: LRSchedulerCallable | None = None,
        system_prompt: str | None = None,
        max_new_tokens: int = 64,
        task_max_new_tokens: dict[str, int] | None = None,
        max_target_tokens: int = 256,
        generate_val: bool = True,
        task_names: Sequence[str] | None = None,
        feature_cache: str | None = None,
        save_frozen: bool = True,
        mask_protocol: str = "avsbench",
        released: str | Sequence[str] | None = None,
    ) -> None:
        if visual_encoder is None:
            raise CrabzooError("SegmentationAVLLM needs model.init_args.visual_encoder (its extra layers feed the mask decoder)")
        selected = [int(i) for i in getattr(visual_encoder, "layers", [])]
        self.seg_layers = [int(i) for i in seg_layers] if seg_layers is not None else selected[:-1]
        missing = [i for i in self.seg_layers if i not in selected[:-1]]
        if not self.seg_layers or missing:
            raise CrabzooError(
                f"SegmentationAVLLM: seg_layers {self.seg_layers} must be among the visual encoder's extra layers "
                f"{selected[:-1]}; select them in visual_encoder.init_args.layers (e.g. [14, 22, 23]: the last feeds the LLM)"
            )
        self._mask_decoder_factory = mask_decoder
        self.seg_tasks = tuple(seg_tasks)
        self.mask_suffix = mask_suffix
        self.mask_weight = float(mask_weight)
        super().__init__(
            backbone,
            audio_encoder=audio_encoder,
            visual_encoder=visual_encoder,
            audio_connector=audio_connector,
            visual_connector=visual_connector,
            adapter=adapter,
            train_groups=train_groups,
            optimizer=optimizer,
            scheduler=scheduler,
            system_prompt=system_prompt,
            max_new_tokens=max_new_tokens,
            task_max_new_tokens=task_max_new_tokens,
            max_target_tokens=max_target_tokens,
            generate_val=generate_val,
            task_names=task_names,
            feature_cache=feature_cache,
            save_frozen=save_frozen,
            mask_protocol=mask_protocol,
            released=released,
        )
        self.mask_token_ids = self._mask_token_ids()
        if train_embeddings:
            self._unfreeze_embeddings()
        if freeze_adapter and adapter is not None:
            for p in adapter.trainable_parameters():
                p.requires_grad_(False)
        if init_checkpoint is not None:
            self.load_stage(init_checkpoint)

    # ------------------------------------------------------------------ assembly
    def _build_extra(self, width: int) -> None:
        self.mask_decoder = self._mask_decoder_factory(width, self.visual_encoder.out_dim)
        if len(self.seg_layers) != self.mask_decoder.num_scales:
            raise CrabzooError(
                f"SegmentationAVLLM: the mask decoder has {self.mask_decoder.num_scales} scales but seg_layers "
                f"names {len(self.seg_layers)} layers ({self.seg_layers})"
            )

    def extra_heads(self) -> list[nn.Module]:
        return [self.mask_decoder]

    def _mask_token_ids(self) -> list[int]:
        tok = self.backbone.tokenizer
        vocab = tok.get_vocab()
        absent = [t for t in MASK_QUERY_TOKENS if t not in vocab]
        if absent:
            raise CrabzooError(
                f"SegmentationAVLLM: the tokenizer lacks the mask tokens {absent}; set "
                "model.init_args.backbone.init_args.mask_tokens: true"
            )
        ids = [int(tok.convert_tokens_to_ids(t)) for t in MASK_QUERY_TOKENS]
        return ids[: self.mask_decoder.num_mask_tokens]

    def _unfreeze_embeddings(self) -> None:
        model = getattr(self.backbone, "model", None)
        if model is None or not hasattr(model, "get_input_embeddings"):
            raise CrabzooError(f"train_embeddings: {type(self.backbone).__name__} exposes no input/output embeddings")
        for module in (model.get_input_embeddings(), model.get_output_embeddings()):
            if module is not None:
                module.requires_grad_(True)

    def make_processor(self) -> MaskProcessor:
        """A :class:`MaskProcessor` with this model's suffix, tasks and mask size."""
        return MaskProcessor(
            backbone=self.backbone,
            audio_encoder=self.audio_encoder,
            visual_encoder=self.visual_encoder,
            system_prompt=self.system_prompt,
            max_target_tokens=self.max_target_tokens,
            mask_suffix=self.mask_suffix,
            mask_size=tuple(self.mask_decoder.mask_size),
            seg_tasks=self.seg_tasks,
            feature_cache=self.checked_feature_cache(),
        )

    # ------------------------------------------------------------------ forward
    def _embeddings(self, raw: dict[str, MediaFeatures]) -> dict[str, list[Tensor]]:
        """Connectors over raw encoder outputs, then per placeholder kind and sample the token rows."""
        connectors = {"audio": self.audio_connector, "visual": self.visual_connector}
        result: dict[str, list[Tensor]] = {}
        for kind, stream in STREAM_OF_KIND.items():
            if stream not in raw:
                continue
            feats = connectors[stream](raw[stream])
            tokens = feats.tokens
            result[kind] = [tokens[b][feats.mask[b]].reshape(-1, tokens.shape[-1]) for b in range(tokens.shape[0])]
        return result

    def visual_layers(self, raw: dict[str, MediaFeatures]) -> list[Tensor]:
        """The ``seg_layers`` patch grids ``(B, N, D)`` of each sample's frame."""
        feats = raw.get("visual")
        if feats is None or any(i not in feats.extra_layers for i in self.seg_layers):
            raise CrabzooError(
                f"SegmentationAVLLM: the visual features lack layers {self.seg_layers} (cached features keep only "
                "the LLM layer; disable the feature cache for segmentation)"
            )
        return [feats.extra_layers[i][:, 0] for i in self.seg_layers]

    def _spliced_positions(self, ids: list[Tensor], media: dict[str, list[Tensor]], length: int) -> list[Tensor]:
        """Position of every original token in the spliced, left-padded sequence of :meth:`splice`."""
        out = []
        for b, seq in enumerate(ids):
            grow = torch.zeros(seq.shape[0], dtype=torch.long, device=seq.device)
            for kind in STREAM_OF_KIND:
                if kind in media:
                    grow[seq == self.backbone.placeholder_id(kind)] = media[kind][b].shape[0] - 1
            before = grow.cumsum(0) - grow
            total = seq.shape[0] + int(grow.sum())
            out.append(torch.arange(seq.shape[0], device=seq.device) + before + (length - total))
        return out

    def _mask_states(self, ids: list[Tensor], positions: list[Tensor], hidden: Tensor, rows: list[int]) -> Tensor:
        """``(len(rows), num_mask_tokens, D)`` last hidden states at each row's last ``<mask_k>`` token, moved by
        the head's ``state_offset`` (``-1``: the state that predicts the token, as Crab reads them)."""
        offset = int(self.mask_decoder.state_offset)
        states = []
        for b in rows:
            picked = []
            for tid in self.mask_token_ids:
                where = (ids[b] == tid).nonzero().flatten()
                if where.numel() == 0:
                    raise CrabzooError(f"sample {b} has no {self.backbone.tokenizer.convert_ids_to_tokens(tid)} token")
                picked.append(positions[b][where[-1]] + offset)
            states.append(hidden[b, torch.stack(picked)])
        return torch.stack(states)

    def _decode(self, states: Tensor, layers: list[Tensor]) -> Tensor:
        dtype = next(self.mask_decoder.parameters()).dtype
        return self.mask_decoder(states.to(dtype), [layer.to(dtype) for layer in layers])

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Teacher-forced pass: ``{"loss", "lm_loss", "mask_loss", "per_sample"}``.

        ``loss = lm_loss + mask_weight * mask_loss``; ``mask_loss`` is 0 for a batch without masks.
        """
        self._set_task_ids(batch)
        raw = self.encode_raw(batch)
        media = self._embeddings(raw)
        inputs, attention, labels = self.splice(batch["input_ids"], batch["labels"], media)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        loss, per_sample, hidden = self.backbone(inputs, attention, positions, output_hidden_states=True, labels=labels)
        has_mask = batch.get("has_mask")
        rows = [] if has_mask is None else [int(b) for b in has_mask.nonzero().flatten()]
        # a batch without masks still touches every decoder weight (zero gradient), as DDP expects
        mask_loss = sum((p.sum() * 0.0 for p in self.mask_decoder.parameters() if p.requires_grad), loss.new_zeros(()))
        if rows:
            spliced = self._spliced_positions(batch["input_ids"], media, inputs.shape[1])
            states = self._mask_states(batch["input_ids"], spliced, hidden, rows)
            layers = [layer[rows] for layer in self.visual_layers(raw)]
            logits_masks = self._decode(states, layers)
            mask_loss = self.mask_decoder.loss(logits_masks, batch["masks"][rows].to(logits_masks.device)).float()
        return {"loss": loss + self.mask_weight * mask_loss, "lm_loss": loss, "mask_loss": mask_loss, "per_sample": per_sample}

    @torch.no_grad()
    def generate_ids(self, batch: dict[str, Any], max_new_tokens: int | None = None) -> Tensor:
        """Greedy new token ids ``(B, n)`` for the prompts of a batch."""
        self._set_task_ids(batch)
        media = self._embeddings(self.encode_raw(batch))
        inputs, attention, _ = self.splice(batch["prompt_ids"], None, media)
        return self.backbone.generate(inputs, attention, max_new_tokens or self.generation_length(batch.get("tasks", ())))

    @torch.no_grad()
    def decode_masks(self, batch: dict[str, Any], generated: Tensor) -> tuple[Tensor, Tensor]:
        """Masks from generations that hold every mask token.

        One teacher-forced pass over prompt + generation (up to the first EOS) gives the mask tokens' last
        hidden states; the decoder turns them into masks.

        Args:
            batch: The batch whose prompts were continued.
            generated: ``(B, n)`` new token ids (e.g. from :meth:`generate_ids`).

        Returns:
            ``masks`` bool ``(B, H, W)`` at the decoder's ``mask_size`` (all False where no mask was decoded)
            and ``found`` bool ``(B,)``.
        """
        eos = self.backbone.eos_token_id
        seqs, found = [], []
        for b, prompt in enumerate(batch["prompt_ids"]):
            gen = generated[b].to(prompt.device)
            stop = (gen == eos).nonzero().flatten()
            gen = gen[: int(stop[0])] if stop.numel() else gen
            seqs.append(torch.cat([prompt, gen]))
            found.append(all(bool((gen == t).any()) for t in self.mask_token_ids))
        h, w = self.mask_decoder.mask_size
        masks = torch.zeros(len(seqs), h, w, dtype=torch.bool, device=self.device)
        rows = [b for b, ok in enumerate(found) if ok]
        if rows:
            self._set_task_ids(batch)
            raw = self.encode_raw(batch)
            media = {kind: [v[b] for b in rows] for kind, v in self._embeddings(raw).items()}
            ids = [seqs[b] for b in rows]
            inputs, attention, _ = self.splice(ids, None, media)
            positions = (attention.cumsum(-1) - 1).clamp(min=0)
            _, hidden = self.backbone(inputs, attention, positions, output_hidden_states=True)
            spliced = self._spliced_positions(ids, media, inputs.shape[1])
            states = self._mask_states(ids, spliced, hidden, list(range(len(rows))))
            layers = [layer[rows] for layer in self.visual_layers(raw)]
            masks[rows] = self.mask_decoder.predict(self._decode(states, layers)).to(masks.device)
        return masks, torch.tensor(found, dtype=torch.bool)

    @torch.no_grad()
    def generate(self, batch: dict[str, Any], max_new_tokens: int | None = None) -> list[str]:
        """Greedy generations (decoded text, special tokens dropped)."""
        new = self.generate_ids(batch, max_new_tokens)
        return self.backbone.tokenizer.batch_decode(new, skip_special_tokens=True)

    def predictions(self, batch: dict[str, Any]) -> tuple[list[str], list[Any]]:
        """Generated texts and the parsed predictions; segmentation samples with decoded masks carry ``mask``.

        A mask-token prediction keeps what the parser read from the text (category, name, ...) and adds the
        decoded mask (``exists=True``); if the text does not parse, it is ``{"mask": ..., "exists": True}``.
        """
        from crabzoo.tasks import get_task
        from crabzoo.tasks.base import ParseFailure

        new = self.generate_ids(batch)
        texts = self.backbone.tokenizer.batch_decode(new, skip_special_tokens=True)
        masks, found = self.decode_masks(batch, new)
        preds: list[Any] = []
        for b, (task, text) in enumerate(zip(batch["tasks"], texts)):
            pred = get_task(task).parse(text)
            if task in self.seg_tasks and bool(found[b]):
                base = pred if isinstance(pred, dict) and not isinstance(pred, ParseFailure) else {}
                pred = {**base, "exists": True, "mask": masks[b].cpu().numpy()}
            preds.append(pred)
        return texts, preds

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        self._log_skipped(batch)
        if not batch["tasks"]:  # every sample of the batch was skipped: no step
            return None
        out = self(batch)
        loss = out["loss"]
        aux = self.adapter.aux_loss() if self.adapter is not None else None
        batch_size = len(batch["tasks"])
        if aux is not None:
            self.log("train/aux_loss", aux.detach(), batch_size=batch_size)
            loss = loss + aux
        self.log("train/loss", out["lm_loss"].detach(), prog_bar=True, batch_size=batch_size)
        self.log("train/mask_loss", out["mask_loss"].detach(), prog_bar=True, batch_size=batch_size)
        self._log_per_task("train", batch, out["per_sample"].detach())
        return loss

    def _eval_step(self, batch: dict[str, Any], prefix: str) -> None:
        if self.generate_val:
            self._score_skipped(batch)
        if not batch["tasks"]:
            return
        if any(self._has_target(batch)):  # the teacher-forced losses need reference texts
            out = self(batch)
            batch_size = len(batch["tasks"])
            self.log(f"{prefix}/loss", out["lm_loss"], prog_bar=True, batch_size=batch_size, sync_dist=True)
            self.log(f"{prefix}/mask_loss", out["mask_loss"], batch_size=batch_size, sync_dist=True)
            self._log_per_task(prefix, batch, out["per_sample"])
        if not self.generate_val:
            return
        from crabzoo.tasks import get_task

        _, preds = self.predictions(batch)
        by_task: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
        for task, pred, truth in zip(batch["tasks"], preds, batch["truths"]):
            by_task[task][0].append(pred)
            by_task[task][1].append(truth)
        for task, (task_preds, truths) in by_task.items():
            if task in self.seg_tasks:
                decoded = sum(isinstance(p, dict) and "mask" in p for p in task_preds) / len(task_preds)
                self.log(f"{prefix}/{task}/mask_decoded", float(decoded), batch_size=len(task_preds), sync_dist=True)
            if task not in self.val_metrics:
                self.val_metrics[task] = self.make_metric(task).to(self.device)
            self.val_metrics[task].update(task_preds, truths)
            self._truths[task].extend(truths)
