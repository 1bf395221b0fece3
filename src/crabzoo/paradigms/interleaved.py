"""Time-interleaved paradigm (video-SALMONN-style): one fused audio-visual token stream.

The audio and visual encoders' features are aligned in time and fused window by window by a
:class:`~crabzoo.connectors.base.FusionConnector` (e.g. a window-level Q-Former). The fused stream replaces the
visual placeholder (``<video>`` or ``<image>``); the audio placeholder is removed, since its content is already
in the fused windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from crabzoo.adapters.base import Adapter
from crabzoo.backbones.base import Backbone
from crabzoo.connectors.base import FusionConnectorFactory
from crabzoo.encoders.base import AudioEncoder, VisualEncoder
from crabzoo.errors import CrabzooError
from crabzoo.paradigms.base import AVLLM, _default_optimizer


class InterleavedAVLLM(AVLLM):
    """An AV-LLM whose audio and visual tokens are fused per time window before the LLM.

    Args:
        backbone: The LLM.
        audio_encoder: Audio encoder (required).
        visual_encoder: Visual encoder (required).
        fusion_connector: Factory ``(audio_dim, visual_dim, out_dim) -> FusionConnector``.
        adapter: Optional adapter (LoRA, I-LoRA, ...).
        train_groups: Module groups trained in full.
        optimizer: Optimizer factory applied to trainable parameters only.
        scheduler: Learning-rate scheduler factory.
        system_prompt: Optional system turn.
        max_new_tokens: Generation length at evaluation.
        task_max_new_tokens: Generation length per task, overriding ``max_new_tokens`` for batches of those tasks
            (e.g. ``{ks: 12, s4: 72}``: short answers stop early even when the model never emits EOS).
        max_target_tokens: Target truncation length.
        generate_val: Generate and score at validation.
        task_names: Task order for task-routed adapters.
        feature_cache: Directory of the frozen encoders' feature cache (see :class:`~crabzoo.paradigms.base.AVLLM`).
        save_frozen: Keep frozen parameters in checkpoints (see :class:`~crabzoo.paradigms.base.AVLLM`).
        mask_protocol: ``avsbench`` or ``crab_plus`` mask scores (see :class:`~crabzoo.paradigms.base.AVLLM`).
    """

    stream_connectors = False

    def __init__(
        self,
        backbone: Backbone,
        audio_encoder: AudioEncoder,
        visual_encoder: VisualEncoder,
        fusion_connector: FusionConnectorFactory,
        adapter: Adapter | None = None,
        train_groups: Sequence[str] = ("connector",),
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
    ) -> None:
        if audio_encoder is None or visual_encoder is None:
            raise CrabzooError("the interleaved paradigm needs both model.init_args.audio_encoder and visual_encoder")
        self._fusion_factory = fusion_connector
        super().__init__(
            backbone,
            audio_encoder=audio_encoder,
            visual_encoder=visual_encoder,
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
        )

    def _build_extra(self, width: int) -> None:
        self.fusion_connector = self._fusion_factory(self.audio_encoder.out_dim, self.visual_encoder.out_dim, width)

    def extra_connectors(self) -> list[nn.Module]:
        return [self.fusion_connector]

    def media_embeddings(self, batch: dict[str, Any]) -> dict[str, list[Tensor]]:
        """The fused windows at the visual placeholder, nothing at the audio placeholder."""
        feats = self.encode_raw(batch)
        fused = self.fusion_connector(feats["audio"], feats["visual"])
        width = fused.tokens.shape[-1]
        rows = [fused.tokens[b][fused.mask[b]].reshape(-1, width) for b in range(fused.tokens.shape[0])]
        empty = [r.new_zeros(0, width) for r in rows]
        return {"video": rows, "image": rows, "audio": empty}
