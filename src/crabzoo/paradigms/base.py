"""The paradigm LightningModule: the factory that assembles an AV-LLM from interchangeable parts.

``AVLLM`` composes encoders -> connectors -> media embeddings placed at placeholder tokens -> LLM backbone
(+ adapter) and trains it with a causal-LM loss on the assistant turn only. Subclasses change the token layout
(:class:`~crabzoo.paradigms.interleaved.InterleavedAVLLM`) or hand media to a native omni model
(:class:`~crabzoo.paradigms.omni.OmniAVLLM`).
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from crabzoo.adapters.base import Adapter
from crabzoo.backbones.base import Backbone
from crabzoo.backbones.loss import IGNORE_INDEX
from crabzoo.connectors.base import ConnectorFactory
from crabzoo.data.collate import Processor
from crabzoo.data.packing import PACKING_KEY
from crabzoo.encoders.base import AudioEncoder, MediaFeatures, VisualEncoder
from crabzoo.errors import CrabzooError

# frozen encoders stay in eval mode on purpose (no dropout, fixed norm statistics); on_fit_start says so once
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")

STREAM_OF_KIND: dict[str, str] = {"video": "visual", "image": "visual", "audio": "audio"}
"""Which encoder stream feeds each placeholder kind."""

MODULE_GROUPS = ("llm", "audio_encoder", "visual_encoder", "connector", "head")


COMPONENT_ARGS = (
    "backbone", "audio_encoder", "visual_encoder", "audio_connector", "visual_connector", "fusion_connector",
    "mask_decoder", "adapter", "optimizer", "scheduler",
)
"""Init arguments that are objects or factories: kept out of ``hyper_parameters`` when built in Python."""


def save_config(module: L.LightningModule) -> None:
    """Store the module's configuration in its checkpoints' ``hyper_parameters``.

    Built by the CLI, the configuration is the YAML's ``class_path``/``init_args`` tree (components included),
    which is exactly what ``crabzoo validate --ckpt_path`` and ``load_from_checkpoint`` need to rebuild the
    model. Built in Python, component objects are left out (their weights are in the state dict).
    """
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters

    given = _given_hyperparameters.get() is not None
    module.save_hyperparameters(ignore=None if given else list(COMPONENT_ARGS), frame=inspect.currentframe().f_back)


def _default_optimizer(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)


class AVLLM(L.LightningModule):
    """Modular audio-visual LLM: encoders, connectors, a backbone and an optional adapter.

    Each medium's features replace its placeholder token (``<video>``, ``<image>``, ``<audio>``) in the prompt.
    Everything is frozen except the module groups named in ``train_groups`` and the adapter's parameters.

    Args:
        backbone: The LLM (owns tokenizer, chat template and placeholder tokens).
        audio_encoder: Audio encoder, or ``None`` for a vision-only model.
        visual_encoder: Visual encoder, or ``None`` for an audio-only model.
        audio_connector: Factory ``(in_dim, out_dim) -> Connector`` for the audio stream.
        visual_connector: Factory ``(in_dim, out_dim) -> Connector`` for the visual stream.
        adapter: Parameter-efficient adapter applied to the backbone/encoders (LoRA, I-LoRA, ...).
        train_groups: Module groups trained in full (``llm``, ``audio_encoder``, ``visual_encoder``,
            ``connector``, ``head``); all others are frozen.
        optimizer: Optimizer factory applied to trainable parameters only.
        scheduler: Learning-rate scheduler factory; stepped every optimizer step.
        system_prompt: System turn of the chat (``None``: none).
        max_new_tokens: Generation length at validation/test time.
        task_max_new_tokens: Generation length per task, overriding ``max_new_tokens`` for batches of those tasks
            (e.g. ``{ks: 12, s4: 72}``: short answers stop early even when the model never emits EOS).
        max_target_tokens: Training targets are truncated to this many tokens (the EOS token is kept).
        generate_val: Generate and score at validation (the loss is always computed).
        task_names: Task order for task-routed adapters (defaults to the datamodule's tasks).
        init_checkpoint: Weights of an earlier training stage to start from (e.g. Crab's stage-1 connectors):
            the ``weights.safetensors`` that :class:`~crabzoo.paradigms.modular.StageWeights` writes.
        feature_cache: Directory of an on-disk cache of the frozen encoders' outputs
            (:class:`~crabzoo.data.cache.FeatureCache`), shared by every run that names it: each sample is
            decoded and encoded once, later epochs and runs read its features. Needs frozen encoders.
        save_frozen: Keep frozen parameters in checkpoints. ``False`` (for pretrained components, which rebuild
            from their own files) writes only what trains (adapters, connectors, ...): a SmolLM2 checkpoint
            shrinks from 540 MB to the adapter's size. Loading puts the rebuilt frozen values back.
        released: Released weight files of the original authors loaded at setup, in order: one path or a list
            (Crab's stage-2 ``finetune_weights.bin``: both Q-Former projectors and the LLM's I-LoRA; then, for
            segmentation, a stage-3 file), see :mod:`crabzoo.paradigms.released`.
        mask_protocol: How segmentation masks are scored: ``avsbench`` (the AVSBench reference, per video) or
            ``crab_plus`` (Crab+'s rule, per frame); see :mod:`crabzoo.tasks.seg_metric`.

    Frozen encoders (not in ``train_groups`` and without trainable adapter weights) stay in eval mode while the
    model trains: they are fixed feature extractors, so dropout and layer drop stay off.
    """

    stream_connectors: bool = True
    """Whether each encoder stream has its own connector (``False`` for paradigms that fuse the streams)."""

    packs_sequences: bool = True
    """Whether :meth:`forward` handles packed batches (``False`` for paradigms with their own forward)."""

    def __init__(
        self,
        backbone: Backbone,
        audio_encoder: AudioEncoder | None = None,
        visual_encoder: VisualEncoder | None = None,
        audio_connector: ConnectorFactory | None = None,
        visual_connector: ConnectorFactory | None = None,
        adapter: Adapter | None = None,
        train_groups: Sequence[str] = ("connector",),
        optimizer: OptimizerCallable = _default_optimizer,
        scheduler: LRSchedulerCallable | None = None,
        system_prompt: str | None = None,
        max_new_tokens: int = 64,
        max_target_tokens: int = 256,
        generate_val: bool = True,
        task_names: Sequence[str] | None = None,
        task_max_new_tokens: dict[str, int] | None = None,
        init_checkpoint: str | None = None,
        feature_cache: str | None = None,
        save_frozen: bool = True,
        released: str | Sequence[str] | None = None,
        mask_protocol: str = "avsbench",
    ) -> None:
        super().__init__()
        save_config(self)
        from crabzoo.tasks.seg_metric import check_protocol

        self.save_frozen = save_frozen
        self.mask_protocol = check_protocol(mask_protocol)
        unknown = sorted(set(train_groups) - set(MODULE_GROUPS))
        if unknown:
            raise CrabzooError(f"train_groups: unknown group(s) {unknown}; choose from {list(MODULE_GROUPS)}")
        self.backbone = backbone
        self.audio_encoder = audio_encoder
        self.visual_encoder = visual_encoder
        width = backbone.hidden_size
        self.audio_connector = self._build_connector(audio_connector, audio_encoder, width, "audio") if self.stream_connectors else None
        self.visual_connector = self._build_connector(visual_connector, visual_encoder, width, "visual") if self.stream_connectors else None
        self._build_extra(width)
        self.adapter = adapter
        self.train_groups = tuple(train_groups)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.system_prompt = system_prompt
        self.max_new_tokens = max_new_tokens
        self.task_max_new_tokens = dict(task_max_new_tokens or {})
        self.max_target_tokens = max_target_tokens
        self.generate_val = generate_val
        self.task_names: list[str] = list(task_names or [])
        self.val_metrics = nn.ModuleDict()
        self.results: dict[str, dict[str, float]] = {}
        self.chance: dict[str, dict[str, float]] = {}
        self.protocols: dict[str, str] = {}
        """Task -> name of the scoring protocol, for tasks that have a choice (segmentation masks)."""
        self._truths: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.feature_cache = None
        if feature_cache is not None:
            from crabzoo.data.cache import FeatureCache

            self.feature_cache = FeatureCache(feature_cache)
        self._freeze()
        if adapter is not None:
            adapter.apply(self.module_groups(), self.default_adapter_targets())
        if released is not None:
            from crabzoo.paradigms.released import load_released

            for path in [released] if isinstance(released, str) else released:
                load_released(self, path)
        if init_checkpoint is not None:
            self.load_stage(init_checkpoint)

    def load_stage(self, path: str) -> None:
        """Load the weights an earlier stage wrote (see :class:`StageWeights`).

        ``path`` is a ``.safetensors`` file, or a file read with ``torch.load(weights_only=True)`` holding
        ``{"state_dict": ...}`` (a Lightning checkpoint whose hyper-parameters are plain data) or a state dict.
        Parameters the file lacks keep their values (frozen modules come from their own checkpoints; modules new
        in this stage keep their initialisation).

        Raises:
            CrabzooError: unreadable file, names this model does not have, or shapes that differ.
        """
        import pickle

        try:
            if str(path).endswith(".safetensors"):
                from safetensors.torch import load_file

                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
                state = state.get("state_dict", state)
        except (OSError, RuntimeError, pickle.UnpicklingError) as err:
            raise CrabzooError(
                f"init_checkpoint {path}: cannot read it with weights_only=True ({str(err).splitlines()[0][:160]}); it "
                "holds pickled objects, so give the stage's weights.safetensors (written by the "
                "crabzoo.paradigms.modular.StageWeights callback) instead"
            ) from None
        try:
            _, unexpected = self.load_state_dict(state, strict=False)
        except RuntimeError as err:
            raise CrabzooError(f"init_checkpoint {path}: shapes differ from this model ({str(err)[:300]})") from None
        if unexpected:
            raise CrabzooError(
                f"init_checkpoint {path} has weights this model lacks ({unexpected[:4]}); use the same paradigm, "
                "adapter and backbone options (mask_tokens: true) as the stage that wrote it"
            )

    # ------------------------------------------------------------------ assembly
    def _build_extra(self, width: int) -> None:
        """Hook for subclasses: build extra modules before freezing and adapter placement."""

    def extra_connectors(self) -> list[nn.Module]:
        """Connector modules beyond the per-stream ones (fusion connectors, heads' projections)."""
        return []

    def extra_heads(self) -> list[nn.Module]:
        """Output heads beyond the LM head (module group ``head``, e.g. a mask decoder)."""
        return []

    @staticmethod
    def _build_connector(
        factory: ConnectorFactory | None, encoder: nn.Module | None, width: int, stream: str
    ) -> nn.Module | None:
        if encoder is None:
            return None
        if factory is None:
            raise CrabzooError(
                f"{stream}_connector is missing: a model with a {stream} encoder needs "
                f"`model.init_args.{stream}_connector` (e.g. class_path: crabzoo.connectors.MLPConnector)"
            )
        return factory(encoder.out_dim, width)

    def module_groups(self) -> dict[str, nn.Module]:
        """Module group name -> module, for freezing, adapter placement and sharding."""
        groups: dict[str, nn.Module] = dict(self.backbone.module_groups())
        if self.audio_encoder is not None:
            groups["audio_encoder"] = self.audio_encoder
        if self.visual_encoder is not None:
            groups["visual_encoder"] = self.visual_encoder
        connectors = [m for m in (self.audio_connector, self.visual_connector) if m is not None] + self.extra_connectors()
        if connectors:
            groups["connector"] = nn.ModuleList(connectors)
        if self.extra_heads():
            groups["head"] = nn.ModuleList(self.extra_heads())
        return groups

    def default_adapter_targets(self) -> dict[str, Sequence[str]]:
        """Module group -> default adapter target suffixes (from each group's owner).

        The backbone's per-group defaults come first (an omni backbone also names its own encoders' targets);
        a crabzoo encoder's ``adapter_targets`` then set its group's defaults.
        """
        targets: dict[str, Sequence[str]] = {"llm": self.backbone.adapter_targets}
        targets.update(self.backbone.default_adapter_targets())
        for name, enc in (("audio_encoder", self.audio_encoder), ("visual_encoder", self.visual_encoder)):
            if enc is not None:
                targets[name] = tuple(getattr(enc, "adapter_targets", ()))
        return targets

    def _freeze(self) -> None:
        for name, module in self.module_groups().items():
            module.requires_grad_(name in self.train_groups)

    def frozen_encoders(self) -> dict[str, nn.Module]:
        """The encoders that nothing trains, by stream: their outputs are fixed (and cacheable)."""
        out = {}
        for stream, name in (("audio", "audio_encoder"), ("visual", "visual_encoder")):
            encoder = getattr(self, name, None)
            if encoder is not None and name not in self.train_groups and not any(p.requires_grad for p in encoder.parameters()):
                out[stream] = encoder
        return out

    def train(self, mode: bool = True) -> AVLLM:
        """Set train/eval mode; frozen encoders always stay in eval mode."""
        super().train(mode)
        if mode and hasattr(self, "train_groups"):
            for encoder in self.frozen_encoders().values():
                encoder.eval()
        return self

    def configure_model(self) -> None:
        """Apply FSDP2 sharding when the strategy provides a device mesh (ModelParallelStrategy)."""
        mesh = getattr(self, "_device_mesh", None)
        if mesh is None:
            return
        from crabzoo.distributed import shard_model

        precision = str(self.trainer.precision) if self._trainer is not None else None
        shard_model(self, mesh, mixed_precision=precision)

    # ------------------------------------------------------------------ data side
    def make_processor(self) -> Processor:
        """The sample -> tensors processor used by the data module's workers."""
        return Processor(
            backbone=self.backbone,
            audio_encoder=self.audio_encoder,
            visual_encoder=self.visual_encoder,
            system_prompt=self.system_prompt,
            max_target_tokens=self.max_target_tokens,
            feature_cache=self.checked_feature_cache(),
        )

    def checked_feature_cache(self) -> Any:
        """The feature cache for the processor, after checking that every encoder it would serve is frozen.

        Raises:
            CrabzooError: an encoder is trained (its features change every step, so caching them is wrong).
        """
        if self.feature_cache is None:
            return None
        frozen = self.frozen_encoders()
        trained = sorted(f"{s}_encoder" for s in ("audio", "visual") if getattr(self, f"{s}_encoder") is not None and s not in frozen)
        if trained:
            raise CrabzooError(
                f"feature_cache: {', '.join(trained)} is trained (train_groups or adapter weights), so its features "
                "change every step; freeze it or remove model.init_args.feature_cache"
            )
        return self.feature_cache

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        names = list(getattr(dm, "task_names", []) or [])
        if not self.task_names:
            self.task_names = names
        for name in names:
            if name not in self.val_metrics:
                self.val_metrics[name] = self.make_metric(name)

    # ------------------------------------------------------------------ forward
    def encode_raw(self, batch: dict[str, Any]) -> dict[str, MediaFeatures]:
        """Encoder outputs per stream (``{"audio": ..., "visual": ...}``).

        Cached features in ``batch["features"]`` are used as they are; the samples without them (``inputs``
        rows) are encoded, and stored in the feature cache when the batch names their ``cache_keys``.
        """
        out: dict[str, MediaFeatures] = {}
        for stream, encoder in (("audio", self.audio_encoder), ("visual", self.visual_encoder)):
            if encoder is None or stream not in batch["media"]:
                continue
            media = batch["media"][stream]
            cached = batch.get("features", {}).get(stream)
            if cached is None:
                feats = encoder(media["inputs"], media["timestamps"], media["mask"])
            else:
                feats = self._merge_cached(encoder, media, cached)
            if media.get("cache_keys") and self.feature_cache is not None:
                self._store_features(media, feats)
            out[stream] = feats
        return out

    @staticmethod
    def _merge_cached(encoder: nn.Module, media: dict[str, Any], cached: Tensor | dict[str, Any]) -> MediaFeatures:
        """Cached rows as read, the other rows (``~media["cached"]``) encoded from ``media["inputs"]``."""
        if isinstance(cached, Tensor):
            cached = {"tokens": cached}
        tokens, extra = cached["tokens"], dict(cached.get("extra", {}))
        hit = media.get("cached")
        if hit is None or bool(hit.all()):
            return MediaFeatures(tokens, media["timestamps"], media["mask"], extra)
        rows = (~hit).nonzero().flatten()
        fresh = encoder(media["inputs"], media["timestamps"][rows], media["mask"][rows])
        tokens = tokens.to(fresh.tokens.dtype).index_copy(0, rows, fresh.tokens)
        for i, x in fresh.extra_layers.items():
            if i in extra:
                extra[i] = extra[i].to(x.dtype).index_copy(0, rows, x)
        return MediaFeatures(tokens, media["timestamps"], media["mask"], {i: extra[i] for i in fresh.extra_layers if i in extra})

    def _store_features(self, media: dict[str, Any], feats: MediaFeatures) -> None:
        """Write the freshly encoded samples' features (valid time steps only) into the feature cache."""
        for b, key in enumerate(media["cache_keys"]):
            if key is None:
                continue
            t = int(media["mask"][b].sum())
            extra = {f"layer.{i}": x[b, :t] for i, x in feats.extra_layers.items()}
            self.feature_cache.put(key, feats.tokens[b, :t], timestamps=media["timestamps"][b, :t], **extra)

    def encode(self, batch: dict[str, Any]) -> dict[str, MediaFeatures]:
        """Encoder + connector per stream, in LLM width."""
        connectors = {"audio": self.audio_connector, "visual": self.visual_connector}
        return {stream: connectors[stream](feats) for stream, feats in self.encode_raw(batch).items()}

    def media_embeddings(self, batch: dict[str, Any]) -> dict[str, list[Tensor]]:
        """Per placeholder kind, per sample, the ``(n_tokens, width)`` embeddings that replace it."""
        streams = self.encode(batch)
        result: dict[str, list[Tensor]] = {}
        for kind, stream in STREAM_OF_KIND.items():
            feats = streams.get(stream)
            if feats is None:
                continue
            tokens = feats.tokens
            result[kind] = [tokens[b][feats.mask[b]].reshape(-1, tokens.shape[-1]) for b in range(tokens.shape[0])]
        return result

    def splice_rows(
        self, ids: list[Tensor], labels: list[Tensor] | None, media: dict[str, list[Tensor]]
    ) -> tuple[list[Tensor], list[Tensor] | None]:
        """Replace each placeholder token by its medium's embeddings, sample by sample (no padding).

        Args:
            ids: Per-sample token ids (unpadded).
            labels: Per-sample labels aligned with ``ids`` (or ``None`` for generation).
            media: Output of :meth:`media_embeddings`.

        Returns:
            Per sample, its embeddings ``(n_i, D)``, and its labels ``(n_i,)`` (``None`` without ``labels``).
        """
        placeholder_ids = {kind: self.backbone.placeholder_id(kind) for kind in STREAM_OF_KIND}
        rows, row_labels = [], []
        for b, seq in enumerate(ids):
            embeds = self.backbone.embed(seq.unsqueeze(0))[0]
            pieces, label_pieces, start = [], [], 0
            positions = [(int(p), kind) for kind, tid in placeholder_ids.items() for p in (seq == tid).nonzero().flatten()]
            for pos, kind in sorted(positions):
                pieces.append(embeds[start:pos])
                if labels is not None:
                    label_pieces.append(labels[b][start:pos])
                if kind not in media:
                    raise CrabzooError(
                        f"the prompt has a {self.backbone.placeholders[kind]} placeholder but the model has no encoder "
                        f"for {STREAM_OF_KIND[kind]} media; add `model.init_args.{STREAM_OF_KIND[kind]}_encoder`"
                    )
                block = media[kind][b].to(embeds.dtype)
                pieces.append(block)
                if labels is not None:
                    label_pieces.append(labels[b].new_full((block.shape[0],), IGNORE_INDEX))
                start = pos + 1
            pieces.append(embeds[start:])
            rows.append(torch.cat(pieces))
            if labels is not None:
                label_pieces.append(labels[b][start:])
                row_labels.append(torch.cat(label_pieces))
        return rows, (row_labels if labels is not None else None)

    def splice(
        self, ids: list[Tensor], labels: list[Tensor] | None, media: dict[str, list[Tensor]]
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Replace each placeholder token by its medium's embeddings and left-pad the batch.

        Args:
            ids: Per-sample token ids (unpadded).
            labels: Per-sample labels aligned with ``ids`` (or ``None`` for generation).
            media: Output of :meth:`media_embeddings`.

        Returns:
            ``inputs_embeds (B, L, D)``, ``attention_mask (B, L)`` and ``labels (B, L)`` (or ``None``).
        """
        rows, row_labels = self.splice_rows(ids, labels, media)
        length = max(r.shape[0] for r in rows)
        width = rows[0].shape[-1]
        inputs = rows[0].new_zeros(len(rows), length, width)
        attention = torch.zeros(len(rows), length, dtype=torch.long, device=inputs.device)
        out_labels = None if labels is None else torch.full((len(rows), length), IGNORE_INDEX, device=inputs.device)
        for b, row in enumerate(rows):
            inputs[b, length - row.shape[0] :] = row
            attention[b, length - row.shape[0] :] = 1
            if out_labels is not None:
                out_labels[b, length - row.shape[0] :] = row_labels[b]
        return inputs, attention, out_labels

    def _set_task_ids(self, batch: dict[str, Any]) -> None:
        if self.adapter is None:
            return
        index = {name: i for i, name in enumerate(self.task_names)}
        ids = torch.tensor([index.get(t, 0) for t in batch["tasks"]], device=self.device)
        self.adapter.set_task_ids(ids)

    @property
    def telemetry(self) -> Any:
        """The adapter's router telemetry (I-LoRA), or ``None``."""
        return getattr(self.adapter, "telemetry", None)

    @property
    def supports_packing(self) -> bool:
        """Whether this paradigm and its backbone train on packed rows (``data.init_args.packing``)."""
        return self.packs_sequences and getattr(self.backbone, "supports_packing", False)

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Teacher-forced pass: ``{"loss", "per_sample"}`` (mean token loss per sample).

        A batch marked for packing (:class:`~crabzoo.data.packing.PackingCollate`) goes through
        :meth:`packed_forward`, with the same result up to float rounding.
        """
        if batch.get(PACKING_KEY) is not None:
            return self.packed_forward(batch, batch[PACKING_KEY].get("pack_length"))
        self._set_task_ids(batch)
        media = self.media_embeddings(batch)
        inputs, attention, labels = self.splice(batch["input_ids"], batch["labels"], media)
        if self.telemetry is not None and self.telemetry.enabled:
            self.telemetry.start(list(batch["tasks"]), mask=attention)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        # the LM head and the fp32 cross-entropy run only on supervised positions (crabzoo.backbones.loss)
        loss, per_sample = self.backbone(inputs, attention, positions, labels=labels)
        return {"loss": loss, "per_sample": per_sample}

    def generation_length(self, tasks: Sequence[str]) -> int:
        """New tokens to generate for a batch of these tasks: the longest of their ``task_max_new_tokens``."""
        return max((self.task_max_new_tokens.get(t, self.max_new_tokens) for t in tasks), default=self.max_new_tokens)

    def packed_forward(self, batch: dict[str, Any], pack_length: int | None = None) -> dict[str, Tensor]:
        """Teacher-forced pass on packed rows: ``{"loss", "per_sample"}``, one per-sample loss per sample, in order.

        Every sample is encoded and spliced on its own, then the samples are packed into rows of at most
        ``pack_length`` embeddings (:func:`~crabzoo.data.packing.pack_rows`): position ids restart per sample,
        a block-diagonal causal mask keeps samples apart, and I-LoRA's task ids and router telemetry follow
        each token's sample. Training only: :meth:`generate` keeps one left-padded row per sample.

        Raises:
            CrabzooError: the paradigm or its backbone does not support packing.
        """
        from crabzoo.data.packing import pack_rows

        if not self.supports_packing:
            raise CrabzooError(
                f"{type(self).__name__} with {type(self.backbone).__name__} does not support sequence packing; "
                "set data.init_args.packing: false"
            )
        self._set_task_ids(batch)  # per sample, for adapters inside the encoders
        media = self.media_embeddings(batch)
        rows, row_labels = self.splice_rows(batch["input_ids"], batch["labels"], media)
        packed = pack_rows(rows, row_labels, pack_length)
        if self.adapter is not None:
            index = {name: i for i, name in enumerate(self.task_names)}
            sample_tasks = torch.tensor([index.get(t, 0) for t in batch["tasks"]], device=packed.segments.device)
            self.adapter.set_task_ids(sample_tasks[packed.segments.clamp(min=0)])  # per token of the packed rows
        if self.telemetry is not None and self.telemetry.enabled:
            self.telemetry.start(list(batch["tasks"]), sample_of_token=packed.segments)
        attention = self.backbone.packed_attention_mask(packed.segments, packed.inputs.dtype)
        loss, per_sample = self.backbone(
            packed.inputs, attention, packed.positions, labels=packed.labels, segments=packed.segments
        )
        return {"loss": loss, "per_sample": per_sample}

    @torch.no_grad()
    def generate(self, batch: dict[str, Any], max_new_tokens: int | None = None) -> list[str]:
        """Greedy generations (decoded text) for the prompts of a batch."""
        self._set_task_ids(batch)
        media = self.media_embeddings(batch)
        inputs, attention, _ = self.splice(batch["prompt_ids"], None, media)
        new = self.backbone.generate(inputs, attention, max_new_tokens or self.generation_length(batch.get("tasks", ())))
        return self.backbone.tokenizer.batch_decode(new, skip_special_tokens=True)

    # ------------------------------------------------------------------ steps
    @staticmethod
    def _has_target(batch: dict[str, Any]) -> list[bool]:
        """Per sample: whether it has target tokens (test records without a reference text have none)."""
        labels = batch.get("labels")
        if labels is None and isinstance(batch.get("inputs"), dict):  # the omni processor's batches
            labels = batch["inputs"].get("labels")
        if labels is None:
            return [True] * len(batch["tasks"])
        return [bool((row != IGNORE_INDEX).any()) for row in labels]

    def _log_per_task(self, prefix: str, batch: dict[str, Any], per_sample: Tensor) -> None:
        sums: dict[str, list[Tensor]] = defaultdict(list)
        for task, value, supervised in zip(batch["tasks"], per_sample, self._has_target(batch)):
            if supervised:
                sums[task].append(value)
        for task, values in sums.items():
            self.log(f"{prefix}/loss/{task}", torch.stack(values).mean(), batch_size=len(values), sync_dist=True)

    def _log_skipped(self, batch: dict[str, Any]) -> None:
        """Sum of skipped samples over the epoch (every batch counts, not only the logging steps')."""
        if batch.get("n_skipped"):
            self.log("data/skipped_media", float(batch["n_skipped"]), reduce_fx="sum", on_step=False, on_epoch=True, batch_size=1)

    def make_metric(self, task: str) -> Any:
        """The metric of ``task``; segmentation tasks score their masks with :attr:`mask_protocol`."""
        from crabzoo.tasks import get_task
        from crabzoo.tasks.segmentation import AVSBenchTask, RefAVSTask

        spec = get_task(task)
        if isinstance(spec, (AVSBenchTask, RefAVSTask)):
            return spec.make_metric(protocol=self.mask_protocol)
        return spec.make_metric()

    def _score_skipped(self, batch: dict[str, Any]) -> None:
        """Score every skipped sample of an eval batch as an unparsed (wrong) prediction of its task."""
        from crabzoo.data.skips import skipped_predictions
        from crabzoo.tasks import get_task

        for task, (preds, truths) in skipped_predictions(batch).items():
            if task not in self.val_metrics:
                self.val_metrics[task] = self.make_metric(task).to(self.device)
            self.val_metrics[task].update(preds, truths)
            self._truths[task].extend(truths)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        self._log_skipped(batch)
        if not batch["tasks"]:  # every sample of the batch was skipped: no step
            return None
        out = self(batch)
        loss = out["loss"]
        aux = self.adapter.aux_loss() if self.adapter is not None else None
        if aux is not None:
            self.log("train/aux_loss", aux.detach(), batch_size=len(batch["tasks"]))
            loss = loss + aux
        batch_size = len(batch["tasks"])
        self.log("train/loss", out["loss"].detach(), prog_bar=True, batch_size=batch_size)
        self._log_per_task("train", batch, out["per_sample"].detach())
        return loss

    def _eval_step(self, batch: dict[str, Any], prefix: str) -> None:
        if self.generate_val:
            self._score_skipped(batch)
        if not batch["tasks"]:
            return
        if any(self._has_target(batch)):  # the teacher-forced loss needs reference texts
            out = self(batch)
            self.log(f"{prefix}/loss", out["loss"], prog_bar=True, batch_size=len(batch["tasks"]), sync_dist=True)
            self._log_per_task(prefix, batch, out["per_sample"])
        if not self.generate_val:
            return
        from crabzoo.tasks import get_task

        recording = self.telemetry is not None and self.telemetry.enabled
        if recording:  # gates are averaged over the teacher-forced pass only
            self.telemetry.disable()
        texts = self.generate(batch)
        if recording:
            self.telemetry.enable()
        by_task: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
        for task, text, truth in zip(batch["tasks"], texts, batch["truths"]):
            preds, truths = by_task[task]
            preds.append(get_task(task).parse(text))
            truths.append(truth)
        for task, (preds, truths) in by_task.items():
            if task not in self.val_metrics:
                self.val_metrics[task] = self.make_metric(task).to(self.device)
            self.val_metrics[task].update(preds, truths)
            self._truths[task].extend(truths)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """One record per sample of the batch (see :mod:`crabzoo.predict`): id, task, prompt, generation, answer.

        The whole batch is generated at once (left-padded, greedy, with the backbone's KV cache). Samples whose
        media could not be read get a record without a generation; a batch of only those generates nothing.
        """
        from crabzoo.predict import prediction_record, skipped_record

        records = [skipped_record(s) for s in batch.get("skipped", [])]
        if not batch["tasks"]:
            return records
        texts = self.generate(batch)
        prompts = self._prompt_texts(batch)
        records += [prediction_record(i, t, p, g) for i, t, p, g in zip(batch["ids"], batch["tasks"], prompts, texts)]
        return records

    def _prompt_texts(self, batch: dict[str, Any]) -> list[str]:
        """The prompts as the model saw them (chat template and media placeholders kept)."""
        return self.backbone.tokenizer.batch_decode([ids.tolist() for ids in batch["prompt_ids"]], skip_special_tokens=False)

    def _compute_metrics(self, prefix: str) -> None:
        from crabzoo.tasks import get_task

        results: dict[str, dict[str, float]] = {}
        for task, metric in self.val_metrics.items():
            if not getattr(metric, "update_called", True):
                continue
            if getattr(metric, "protocol", None) is not None:
                self.protocols[task] = str(metric.protocol)
            values = metric.compute()
            results[task] = {k: float(v) for k, v in values.items()}
            for key, value in results[task].items():
                self.log(f"{prefix}/{task}/{key}", value, sync_dist=False)
            metric.reset()
            self.chance[task] = dict(get_task(task).chance(self._truths.pop(task, [])) or {})
        if results:
            self.results = results

    def _refresh_cache_keys(self) -> None:
        """Fingerprint the encoders again once a checkpoint's weights are in place (before data workers start)."""
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        processor = getattr(dm, "processor", None)
        if self.feature_cache is not None and hasattr(processor, "fingerprint_encoders"):
            processor.fingerprint_encoders()

    def on_fit_start(self) -> None:
        self._refresh_cache_keys()
        frozen = sum(not m.training for m in self.modules())
        if frozen:
            rank_zero_info(f"crabzoo: frozen encoders stay in eval mode ({frozen} modules)")

    def on_validation_start(self) -> None:
        if self.trainer.state.fn == "validate":
            self._refresh_cache_keys()

    def on_test_start(self) -> None:
        self._refresh_cache_keys()

    def on_predict_start(self) -> None:
        self._refresh_cache_keys()

    def on_validation_epoch_start(self) -> None:
        if self.telemetry is not None:
            self.telemetry.reset()
            self.telemetry.enable()

    def on_validation_epoch_end(self) -> None:
        self._compute_metrics("val")
        if self.telemetry is None:
            return
        self.telemetry.disable()
        if self._trainer is None or self.trainer.sanity_checking:
            return
        from pathlib import Path

        run_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)  # log_dir broadcasts: every rank reads it
        if self.trainer.is_global_zero:
            self.telemetry.save(run_dir / "router_telemetry" / f"step={self.global_step:06d}.json")

    def on_test_epoch_end(self) -> None:
        self._compute_metrics("test")

    # ------------------------------------------------------------------ checkpoints
    def frozen_parameter_names(self) -> set[str]:
        """State-dict names of the parameters that do not train (left out of checkpoints when ``save_frozen`` is off)."""
        return {name for name, p in self.named_parameters(remove_duplicate=False) if not p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.save_frozen:
            return
        frozen = self.frozen_parameter_names()
        state = checkpoint["state_dict"]
        for name in [k for k in state if k in frozen]:
            del state[name]
        checkpoint["crabzoo_frozen_omitted"] = sorted(frozen)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        omitted = checkpoint.get("crabzoo_frozen_omitted")
        if not omitted:
            return
        own = self.state_dict()
        state = checkpoint["state_dict"]
        for name in omitted:  # frozen values come from the components' own pretrained files, already loaded
            if name in own and name not in state:
                state[name] = own[name]

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise CrabzooError(
                "nothing to train: every module group is frozen and there is no adapter; set "
                "`model.init_args.train_groups` or `model.init_args.adapter`"
            )
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        if hasattr(scheduler, "set_total_steps"):
            total = self.trainer.estimated_stepping_batches
            scheduler.set_total_steps(int(total) if math.isfinite(total) else 1)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
