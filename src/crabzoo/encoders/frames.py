"""The common shape of ViT frame encoders: normalised frames in, patch tokens of chosen layers out."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

from torch import Tensor, nn

from crabzoo.data.schema import VisualClip
from crabzoo.encoders.base import MediaFeatures, VisualEncoder
from crabzoo.encoders.common import encode_steps, frames_to_pixels, make_features, resolve_layers, step_mask


class FrameEncoder(VisualEncoder):
    """A ViT applied to every frame independently; patch tokens (prefix tokens dropped) per frame.

    ``layers`` are hidden-state indices in the Hugging Face convention: ``0`` is the embedding output,
    ``i`` the output of block ``i``, negative values count from the end (``-1`` = last block, before any final
    norm). The **last** entry feeds the LLM (``MediaFeatures.tokens``); the others come back in
    ``MediaFeatures.extra_layers`` keyed by the index as given. Crab selects ``[14, 22, 23]`` of ViT-L/14.

    Subclasses build the network, call :meth:`_setup` and implement :meth:`layer_tokens`.
    """

    def _setup(self, layers: Sequence[int], num_blocks: int, image_size: int | tuple[int, int],
               mean: Sequence[float], std: Sequence[float], width: int, freeze: bool) -> None:
        self.layers = [int(i) for i in layers]
        self.layer_indices = resolve_layers(self.layers, num_blocks, type(self).__name__)
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.width = int(width)
        if freeze:
            self.requires_grad_(False)
        self.eval()

    @property
    def out_dim(self) -> int:
        return self.width

    @property
    @abstractmethod
    def block_cls(self) -> type[nn.Module]:
        """The transformer block class (FSDP / activation-checkpointing unit)."""

    @abstractmethod
    def layer_tokens(self, pixels: Tensor, indices: list[int]) -> list[Tensor]:
        """Patch tokens ``(n, N, D)`` of normalised frames ``(n, 3, H, W)`` at non-negative hidden-state indices."""

    def preprocess_config(self) -> dict:
        return {"image_size": list(self.image_size), "mean": list(self.mean), "std": list(self.std), "resize": "bicubic"}

    def preprocess(self, clip: VisualClip) -> Tensor:
        """Frames -> ``(T, 3, H, W)`` float32 at the model's image size, mean/std normalised."""
        return frames_to_pixels(clip.frames, self.image_size, self.mean, self.std)

    def forward(self, inputs: Tensor, timestamps: Tensor | None = None, mask: Tensor | None = None) -> MediaFeatures:
        """Encode ``(B, T, 3, H, W)`` frames into ``(B, T, N, D)`` patch tokens of the last selected layer."""
        if inputs.dim() != 5 or inputs.shape[2] != 3:
            raise ValueError(f"{type(self).__name__} expects (B, T, 3, H, W) frames, got {tuple(inputs.shape)}")
        real = step_mask(inputs, mask)
        dtype = next(self.parameters()).dtype
        outs = encode_steps(lambda x: self.layer_tokens(x.to(dtype), self.layer_indices), inputs, real)
        extra = {layer: out for layer, out in zip(self.layers[:-1], outs[:-1])}
        return make_features(outs[-1], timestamps, real, extra)
