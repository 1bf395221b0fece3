"""CLIP vision towers: open_clip models and transformers' ``CLIPVisionModel``.

Both give patch tokens (CLS dropped) of selected hidden layers per frame. Crab uses OpenAI CLIP ViT-L/14 at
224 px (256 patches per frame, width 1024) with hidden states 14, 22 and 23.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor, nn

from crabzoo.encoders.common import CLIP_MEAN, CLIP_STD
from crabzoo.encoders.frames import FrameEncoder
from crabzoo.errors import CrabzooError


class ClipEncoder(FrameEncoder):
    """The vision tower of an open_clip model.

    Args:
        model_name: An open_clip architecture (``"ViT-L-14"``), or ``"local-dir:/path"`` (a folder with
            ``open_clip_config.json`` and weights, open_clip's own format), or ``"hf-hub:org/repo"``.
        pretrained: A pretrained tag (``"openai"``) or a local checkpoint file, loaded by open_clip with
            ``weights_only=True``; ``None`` keeps random weights (or the weights of a ``local-dir:``).
        layers: Hidden-state indices; the last one feeds the LLM (see :class:`FrameEncoder`). Index 0 is not
            available through open_clip.
        image_size: Override the model's input size (positional embeddings are resized by open_clip).
        freeze: Set ``requires_grad=False`` (the paradigm may unfreeze the group).

    Example (YAML):
        ```yaml
        visual_encoder:
          class_path: crabzoo.encoders.ClipEncoder
          init_args: {model_name: ViT-L-14, pretrained: openai, layers: [14, 22, 23]}
        ```
    """

    adapter_targets: ClassVar[tuple[str, ...]] = ("c_fc", "c_proj")
    """The MLP linears: open_clip's attention is ``nn.MultiheadAttention``, whose projections are not called
    as modules, so adapters cannot wrap them."""

    def __init__(
        self,
        model_name: str,
        pretrained: str | None = None,
        layers: Sequence[int] = (-1,),
        image_size: int | None = None,
        freeze: bool = True,
    ) -> None:
        super().__init__()
        import open_clip

        kwargs = {"force_image_size": image_size} if image_size else {}
        try:
            model = open_clip.create_model(model_name, pretrained=pretrained, **kwargs)
        except (RuntimeError, FileNotFoundError, ValueError) as err:
            raise CrabzooError(f"ClipEncoder: cannot build open_clip model {model_name!r} (pretrained={pretrained!r}): {str(err)[:300]}") from err
        visual = getattr(model, "visual", None)
        if visual is None or not hasattr(visual, "transformer"):
            raise CrabzooError(f"ClipEncoder: {model_name!r} has no ViT vision tower; choose a ViT model (e.g. ViT-L-14)")
        self.model_name, self.pretrained = model_name, pretrained
        self.visual = visual
        cfg = open_clip.get_model_preprocess_cfg(model)
        size = visual.image_size
        self._setup(layers, len(visual.transformer.resblocks), size, cfg.get("mean", CLIP_MEAN), cfg.get("std", CLIP_STD),
                    visual.transformer.width, freeze)
        if 0 in self.layer_indices:
            raise CrabzooError("ClipEncoder: hidden-state index 0 (embeddings) is not exposed by open_clip; use indices >= 1")

    @property
    def block_cls(self) -> type[nn.Module]:
        return type(self.visual.transformer.resblocks[0])

    def layer_tokens(self, pixels: Tensor, indices: list[int]) -> list[Tensor]:
        blocks = [i - 1 for i in indices]
        out = self.visual.forward_intermediates(
            pixels, indices=sorted(set(blocks)), stop_early=True, intermediates_only=True, output_fmt="NLC"
        )["image_intermediates"]
        by_block = dict(zip(sorted(set(blocks)), out))
        return [by_block[b] for b in blocks]


class HFClipEncoder(FrameEncoder):
    """transformers' ``CLIPVisionModel`` (loads the vision tower of a full CLIP checkpoint too).

    Args:
        model: Hub id or local folder (``openai/clip-vit-large-patch14``); ``None`` with ``config``.
        config: ``CLIPVisionConfig`` fields for a randomly initialised model (tiny tests), used when ``model``
            is ``None``.
        layers: Hidden-state indices (``hidden_states[i]``); the last one feeds the LLM.
        image_size: Input size; defaults to the config's ``image_size``.
        freeze: Set ``requires_grad=False`` (the paradigm may unfreeze the group).

    Mean/std come from the folder's ``preprocessor_config.json`` when present, else OpenAI CLIP's values.

    Example (YAML):
        ```yaml
        visual_encoder:
          class_path: crabzoo.encoders.HFClipEncoder
          init_args: {model: openai/clip-vit-large-patch14, layers: [14, 22, 23]}
        ```
    """

    adapter_targets: ClassVar[tuple[str, ...]] = ("q_proj", "k_proj", "v_proj", "out_proj")

    def __init__(
        self,
        model: str | None = None,
        config: dict | None = None,
        layers: Sequence[int] = (-1,),
        image_size: int | None = None,
        freeze: bool = True,
    ) -> None:
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel

        if model is None and config is None:
            raise CrabzooError("HFClipEncoder: give `model` (a hub id or folder) or `config` (CLIPVisionConfig fields)")
        if model is not None:
            try:
                self.clip = CLIPVisionModel.from_pretrained(model)
            except OSError as err:
                raise CrabzooError(f"HFClipEncoder: cannot load {model!r}: {err}") from err
        else:
            self.clip = CLIPVisionModel(CLIPVisionConfig(**config))
        self.model_name = model
        cfg = self.clip.config
        mean, std = _processor_stats(model)
        self._setup(layers, cfg.num_hidden_layers, image_size or cfg.image_size, mean, std, cfg.hidden_size, freeze)

    @classmethod
    def from_pretrained(cls, name_or_dir: str, **kwargs: Any) -> HFClipEncoder:
        """Load a hub id or a ``save_pretrained`` folder (a full CLIP checkpoint or a vision-only one)."""
        return cls(model=name_or_dir, **kwargs)

    @property
    def block_cls(self) -> type[nn.Module]:
        tower = getattr(self.clip, "vision_model", self.clip)  # transformers < 5 nests the tower
        return type(tower.encoder.layers[0])

    def save_pretrained(self, path: str) -> None:
        """Save the vision model in the transformers format."""
        self.clip.save_pretrained(path)

    def layer_tokens(self, pixels: Tensor, indices: list[int]) -> list[Tensor]:
        out = self.clip(pixel_values=pixels, output_hidden_states=True, interpolate_pos_encoding=tuple(pixels.shape[-2:]) != (self.clip.config.image_size,) * 2)
        return [out.hidden_states[i][:, 1:] for i in indices]


def _processor_stats(model: str | None) -> tuple[Sequence[float], Sequence[float]]:
    if model is None or not (Path(model) / "preprocessor_config.json").is_file():
        return CLIP_MEAN, CLIP_STD
    import json

    cfg = json.loads((Path(model) / "preprocessor_config.json").read_text())
    return cfg.get("image_mean", CLIP_MEAN), cfg.get("image_std", CLIP_STD)
