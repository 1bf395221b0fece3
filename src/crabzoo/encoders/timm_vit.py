"""timm Vision Transformers as frame encoders (any model with ``forward_intermediates``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from crabzoo.encoders.frames import FrameEncoder
from crabzoo.errors import CrabzooError


class TimmViTEncoder(FrameEncoder):
    """A timm ViT by name; patch tokens (class/register tokens dropped) of selected blocks per frame.

    Args:
        model_name: timm architecture, e.g. ``"vit_base_patch16_224"`` or ``"vit_tiny_patch16_224"``.
        checkpoint: Optional local weights: a ``.safetensors`` file or a ``torch.save``d state dict (read with
            ``weights_only=True``); ``None`` keeps random init (no download is attempted).
        layers: Hidden-state indices (``i`` = output of block ``i``, ``-1`` = last block, before the final
            norm); the last one feeds the LLM.
        image_size: Input size (timm's ``img_size``); defaults to the architecture's.
        model_kwargs: Extra ``timm.create_model`` arguments (e.g. ``{"depth": 2}``).
        freeze: Set ``requires_grad=False`` (the paradigm may unfreeze the group).

    Example (YAML, the quickstart's tiny encoder):
        ```yaml
        visual_encoder:
          class_path: crabzoo.encoders.TimmViTEncoder
          init_args: {model_name: vit_tiny_patch16_224, image_size: 32, model_kwargs: {depth: 2}}
        ```
    """

    adapter_targets: ClassVar[tuple[str, ...]] = ("qkv", "proj")

    def __init__(
        self,
        model_name: str,
        checkpoint: str | None = None,
        layers: Sequence[int] = (-1,),
        image_size: int | None = None,
        model_kwargs: dict[str, Any] | None = None,
        freeze: bool = True,
    ) -> None:
        super().__init__()
        import timm

        kwargs = dict(model_kwargs or {})
        if image_size:
            kwargs["img_size"] = image_size
        try:
            self.vit = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
        except RuntimeError as err:
            raise CrabzooError(f"TimmViTEncoder: cannot build timm model {model_name!r}: {err}") from err
        if not hasattr(self.vit, "forward_intermediates") or not hasattr(self.vit, "blocks"):
            raise CrabzooError(f"TimmViTEncoder: {model_name!r} is not a ViT with forward_intermediates; pick a vit_* model")
        if checkpoint is not None:
            self._load(checkpoint)
        self.model_name, self.checkpoint = model_name, checkpoint
        cfg = timm.data.resolve_data_config({}, model=self.vit)
        size = tuple(self.vit.patch_embed.img_size)
        self._setup(layers, len(self.vit.blocks), size, cfg["mean"], cfg["std"], self.vit.embed_dim, freeze)
        if 0 in self.layer_indices:
            raise CrabzooError("TimmViTEncoder: hidden-state index 0 (embeddings) is not exposed by timm; use indices >= 1")

    def _load(self, checkpoint: str) -> None:
        path = Path(checkpoint)
        if not path.is_file():
            raise CrabzooError(f"TimmViTEncoder: checkpoint {path} does not exist")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        missing, unexpected = self.vit.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("head.")]
        if missing or unexpected:
            raise CrabzooError(f"TimmViTEncoder: checkpoint {path} does not match the model: missing {missing[:10]}, unexpected {unexpected[:10]}")

    @property
    def block_cls(self) -> type[nn.Module]:
        return type(self.vit.blocks[0])

    def layer_tokens(self, pixels: Tensor, indices: list[int]) -> list[Tensor]:
        blocks = sorted({i - 1 for i in indices})
        out = self.vit.forward_intermediates(pixels, indices=blocks, output_fmt="NLC", intermediates_only=True, stop_early=True)
        by_block = dict(zip(blocks, out))
        return [by_block[i - 1] for i in indices]
