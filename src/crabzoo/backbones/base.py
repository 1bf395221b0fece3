"""Contract of the LLM backbone.

A backbone owns everything that is specific to one language model: tokenizer, chat template, special and
placeholder tokens, the embedding table, the decoder-layer class (for sharding and activation checkpointing),
its module groups and the default names of the linears adapters attach to.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from torch import Tensor, nn

PLACEHOLDERS: dict[str, str] = {"video": "<video>", "image": "<image>", "audio": "<audio>"}
"""Default placeholder token per media kind; the paradigm replaces each by that medium's embeddings."""

MEDIA_WRAPPERS: dict[str, tuple[str, str]] = {
    "video": ("<video_start>", "<video_end>"),
    "image": ("<image_start>", "<image_end>"),
    "audio": ("<audio_start>", "<audio_end>"),
}
"""Start/end tokens around each placeholder (as in Crab); added to the tokenizer as special tokens."""


class Backbone(nn.Module, ABC):
    """A causal language model that accepts ``inputs_embeds``.

    Attributes:
        module_group: ``"llm"``; used by freezing, adapter placement and sharding.
        adapter_targets: Default suffixes of the linears that adapters attach to.
        supports_packing: Whether ``forward`` takes packed rows (a 4D mask from ``packed_attention_mask`` and
            ``segments``; see :mod:`crabzoo.data.packing`).
    """

    module_group: str = "llm"
    supports_packing: ClassVar[bool] = False
    adapter_targets: ClassVar[tuple[str, ...]] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

    @property
    @abstractmethod
    def tokenizer(self):
        """The Hugging Face tokenizer (with placeholder tokens added and a chat template set)."""

    @property
    @abstractmethod
    def hidden_size(self) -> int:
        """Width of the token embeddings."""

    @property
    @abstractmethod
    def decoder_layer_cls(self) -> type[nn.Module]:
        """Class of one decoder layer (the unit of FSDP sharding and activation checkpointing)."""

    @property
    def placeholders(self) -> dict[str, str]:
        """Placeholder token per media kind (``video``, ``image``, ``audio``)."""
        return PLACEHOLDERS

    @property
    def media_wrappers(self) -> dict[str, tuple[str, str]]:
        """Start/end tokens around each placeholder (``<video_start>``/``<video_end>``; Omni: ``<|vision_bos|>``...)."""
        return MEDIA_WRAPPERS

    def placeholder_id(self, kind: str) -> int:
        """Token id of the placeholder of a media kind."""
        return self.tokenizer.convert_tokens_to_ids(self.placeholders[kind])

    @abstractmethod
    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        """Apply the chat template to ``[{"role": ..., "content": ...}, ...]`` and return the text."""

    @abstractmethod
    def embed(self, input_ids: Tensor) -> Tensor:
        """Token embeddings ``(B, L) -> (B, L, hidden_size)``."""

    @abstractmethod
    def forward(self, inputs_embeds: Tensor, attention_mask: Tensor, position_ids: Tensor | None = None) -> Tensor:
        """Logits ``(B, L, V)`` for a batch of embeddings.

        Implementations also accept ``labels=(B, L)``: then they return ``(loss, per_sample)`` of
        :func:`crabzoo.backbones.loss.supervised_loss` instead of logits (the LM head runs only on supervised
        positions, inside ``forward`` so that sharding hooks see it).
        """

    @abstractmethod
    def hidden_states(self, inputs_embeds: Tensor, attention_mask: Tensor, position_ids: Tensor | None = None) -> Tensor:
        """Final hidden states ``(B, L, hidden_size)`` (after the decoder's final norm), without the LM head."""

    @abstractmethod
    def output_embeddings(self) -> nn.Module:
        """The LM head (``hidden_size -> vocabulary``); ``head(hidden_states(...))`` equals :meth:`forward`'s logits."""

    @abstractmethod
    def generate(self, inputs_embeds: Tensor, attention_mask: Tensor, max_new_tokens: int) -> Tensor:
        """Greedy continuation of left-padded embeddings; returns the new token ids ``(B, <= max_new_tokens)``."""

    def default_adapter_targets(self) -> dict[str, tuple[str, ...]]:
        """Default adapter target suffixes per module group this backbone owns (``{"llm": adapter_targets}``)."""
        return {self.module_group: tuple(self.adapter_targets)}

    def module_groups(self) -> dict[str, nn.Module]:
        """Named groups of submodules (``{"llm": self}`` by default; omni backbones add their encoders)."""
        return {self.module_group: self}

    @abstractmethod
    def save_pretrained(self, directory: str | Path) -> None:
        """Write the model and tokenizer in Hugging Face format."""
