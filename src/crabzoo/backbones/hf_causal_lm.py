"""Any ``transformers`` causal LM (LLaMA, Qwen2, Mistral, ...) as a crabzoo backbone.

Two ways to build one:

* ``HFCausalLM(name_or_path="meta-llama/Llama-2-7b-chat-hf")`` or a local directory: ``from_pretrained``, the
  real path (the full-size paradigm YAMLs); a GGUF file (``name_or_path=dir, gguf_file=name``, a ``.gguf`` path, or
  a packaged weight such as ``packaged:smollm2-135m-instruct``) is dequantised once and cached as safetensors
  (:mod:`crabzoo.backbones.gguf`), with the file's own tokenizer and chat template;
* ``HFCausalLM(config={"model_type": "llama", "hidden_size": 64, ...}, tokenizer="avsynth", ...)``: a tiny
  random-init model (seeded) with a tokenizer trained locally (see :mod:`crabzoo.backbones.tokenizer`), for
  tests and CPU runs.

Either way the tokenizer gets the placeholder tokens as special tokens, the embedding table is resized to
match, and a chat template is set (the tokenizer's own, else a built-in one). ``save_pretrained(dir)`` writes
model and tokenizer in Hugging Face format, and ``HFCausalLM(name_or_path=dir)`` reloads them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from crabzoo.backbones.base import MEDIA_WRAPPERS, PLACEHOLDERS, Backbone
from crabzoo.backbones.chat_templates import TEMPLATES
from crabzoo.errors import CrabzooError
from crabzoo.backbones.loss import supervised_index, supervised_loss

PROJECTIONS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Attention and MLP projections of LLaMA-family decoders."""

ADAPTER_TARGETS: dict[str, tuple[str, ...]] = {
    "llama": PROJECTIONS,
    "mistral": PROJECTIONS,
    "qwen2": PROJECTIONS,
    "qwen3": PROJECTIONS,
    "gemma": PROJECTIONS,
    "gemma2": PROJECTIONS,
    "olmo": PROJECTIONS,
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
    "gpt2": ("c_attn", "c_proj", "c_fc"),
}
"""Default adapter target suffixes per ``model_type`` (other types: :data:`PROJECTIONS`, filtered to those present)."""

PACKING_ATTENTION: tuple[str, ...] = ("sdpa", "eager")
"""Attention implementations that take the additive 4D mask of packed rows."""

MASK_TOKENS: tuple[str, ...] = ("<mask_start>", "<mask_end>")
"""Crab's segmentation wrapper tokens (special)."""

MASK_QUERY_TOKENS: tuple[str, ...] = tuple(f"<mask_{i}>" for i in range(6))
"""Crab's six mask query tokens ``<mask_0>`` … ``<mask_5>`` (2 scales × 3)."""


def placeholder_tokens() -> list[str]:
    """Placeholder and wrapper tokens every backbone adds as special tokens."""
    tokens = list(PLACEHOLDERS.values())
    for start, end in MEDIA_WRAPPERS.values():
        tokens += [start, end]
    return tokens


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"bfloat16"`` / ``"bf16"`` / ``torch.bfloat16`` -> ``torch.bfloat16`` (``None`` and ``"auto"`` -> ``None``)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
    name = aliases.get(dtype, dtype)
    if name == "auto":
        return None
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise CrabzooError(f"torch_dtype={dtype!r} is not a torch dtype; use bfloat16, float16 or float32")
    return value


def atomic_save_dir(directory: str | Path, write) -> None:
    """Call ``write(tmp_dir)`` then move ``tmp_dir`` to ``directory`` (replacing it) in one rename."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    old = None
    try:
        write(tmp)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            os.replace(directory, old)
        os.replace(tmp, directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def set_activation_checkpointing(model, enable: bool) -> None:
    """Switch non-reentrant activation checkpointing of a ``transformers`` model on or off.

    ``transformers`` 5.x names it ``activation_checkpointing_*`` (the ``gradient_checkpointing_*`` names are
    deprecated); older versions only have the latter.
    """
    if hasattr(model, "activation_checkpointing_enable"):
        if enable:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif enable:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


def load_tokenizer(
    tokenizer: str | None,
    name_or_path: str | None,
    tokenizer_corpus: str | None,
    tokenizer_vocab_size: int,
):
    """Resolve the ``tokenizer`` argument of a backbone (see :class:`HFCausalLM`)."""
    from transformers import AutoTokenizer

    from crabzoo.backbones.tokenizer import corpus_from_directory, train_avsynth_tokenizer, train_tokenizer

    if tokenizer == "avsynth":
        return train_avsynth_tokenizer(tokenizer_vocab_size, tokenizer_corpus)
    if tokenizer is None and tokenizer_corpus is not None:
        return train_tokenizer(corpus_from_directory(tokenizer_corpus), vocab_size=tokenizer_vocab_size)
    source = tokenizer or name_or_path
    if source is None:
        raise CrabzooError(
            "backbone tokenizer is missing: give tokenizer='avsynth' (with tokenizer_corpus=<data root>), "
            "a tokenizer directory, or name_or_path"
        )
    try:
        if _generic_tokenizer(source):  # a locally trained tokenizer: keep its class, whatever the model type
            from transformers import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast.from_pretrained(source)
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise CrabzooError(
            f"tokenizer {source!r} could not be loaded ({err}); give a local tokenizer directory"
        ) from err


def _generic_tokenizer(source: str) -> bool:
    """Whether a local tokenizer directory holds a plain ``tokenizers`` tokenizer (no model-specific class).

    ``AutoTokenizer`` would otherwise pick the class of the checkpoint's model type (e.g. Qwen2's, which adds
    its own special tokens) for a tokenizer that was trained locally.
    """
    config = Path(source) / "tokenizer_config.json"
    if not config.is_file():
        return False
    import json

    cls = json.loads(config.read_text()).get("tokenizer_class")
    return cls in ("TokenizersBackend", "PreTrainedTokenizerFast")


class HFCausalLM(Backbone):
    """A Hugging Face causal LM with placeholder tokens, a chat template and ``inputs_embeds`` I/O.

    Args:
        name_or_path: Hub name or local directory for ``from_pretrained``, a ``.gguf`` file, or a packaged weight
            (``packaged:smollm2-135m-instruct``, see :mod:`crabzoo.pretrained`); exclusive with ``config``.
        gguf_file: Name of a GGUF file inside the ``name_or_path`` directory.
        config: ``transformers`` config as a plain dict with ``model_type`` (random init; ``vocab_size`` and the
            bos/eos/pad ids are taken from the tokenizer).
        tokenizer: ``None`` (the checkpoint's own tokenizer, or one trained on ``tokenizer_corpus``),
            ``"avsynth"`` (trained locally on the AVSynth text), or a tokenizer directory.
        tokenizer_corpus: Data root whose ``*/train.json`` string fields are the tokenizer's training corpus.
        tokenizer_vocab_size: Vocabulary size of a locally trained tokenizer.
        chat_template: Template used when the tokenizer has none: ``"chatml"``, ``"llama2"`` or a Jinja string.
        force_chat_template: Use ``chat_template`` even when the tokenizer has its own.
        mask_tokens: Add Crab's ``<mask_start>``/``<mask_end>`` (special) and ``<mask_0>`` … ``<mask_5>``.
        torch_dtype: Weight dtype (``"bfloat16"``, ``"float32"``, ...; ``None``: the checkpoint's / float32).
        attn_implementation: ``"sdpa"``, ``"eager"``, ``"flash_attention_2"`` or ``None`` (library default).
        gradient_checkpointing: Recompute decoder-layer activations in the backward pass.
        adapter_targets: Override the default adapter target suffixes.
        seed: Seed of the random initialisation (``config``), and of the embedding rows added for new tokens.
    """

    supports_packing = True

    def __init__(
        self,
        name_or_path: str | None = None,
        config: dict[str, Any] | None = None,
        gguf_file: str | None = None,
        tokenizer: str | None = None,
        tokenizer_corpus: str | None = None,
        tokenizer_vocab_size: int = 1024,
        chat_template: str = "chatml",
        force_chat_template: bool = False,
        mask_tokens: bool = False,
        torch_dtype: str | None = None,
        attn_implementation: str | None = None,
        gradient_checkpointing: bool = False,
        adapter_targets: Sequence[str] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if (name_or_path is None) == (config is None):
            raise CrabzooError("HFCausalLM: give exactly one of name_or_path (a checkpoint) or config (a dict)")
        from transformers import AutoConfig, AutoModelForCausalLM

        self.name_or_path = name_or_path
        if name_or_path is not None:
            from crabzoo.backbones.gguf import cached_gguf_dir, gguf_source

            source = gguf_source(name_or_path, gguf_file)
            if source is not None:
                name_or_path = str(cached_gguf_dir(source, name_or_path.removeprefix("packaged:") if
                                                   name_or_path.startswith("packaged:") else None))
        tok = load_tokenizer(tokenizer, name_or_path, tokenizer_corpus, tokenizer_vocab_size)
        self._setup_tokenizer(tok, chat_template, force_chat_template, mask_tokens)
        self._tokenizer = tok
        dtype = resolve_dtype(torch_dtype)
        extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
        if name_or_path is not None:
            try:
                self.model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype or "auto", **extra)
            except OSError as err:
                raise CrabzooError(f"HFCausalLM: cannot load {name_or_path!r} ({err})") from err
        else:
            values = dict(config)
            model_type = values.pop("model_type", None)
            if model_type is None:
                raise CrabzooError("HFCausalLM: config needs a model_type (e.g. llama, qwen2, mistral)")
            values.update(
                vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )
            cfg = AutoConfig.for_model(model_type, **values)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.model = AutoModelForCausalLM.from_config(cfg, **extra)
            if dtype is not None:
                self.model.to(dtype)
        if self.model.get_input_embeddings().num_embeddings < len(tok):
            from transformers.utils import logging as hf_logging

            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()  # its note on how the new rows are drawn is not the user's concern
            try:
                with torch.random.fork_rng(devices=[]):  # the new rows are sampled: seeded, so a rebuild gives them back
                    torch.manual_seed(seed)
                    self.model.resize_token_embeddings(len(tok))
            finally:
                hf_logging.set_verbosity(verbosity)
        self.model.config.pad_token_id = tok.pad_token_id
        self.model.generation_config.pad_token_id = tok.pad_token_id
        self.model.generation_config.eos_token_id = tok.eos_token_id
        model_type = self.model.config.model_type
        self.adapter_targets = tuple(adapter_targets) if adapter_targets else self._default_targets(model_type)
        if gradient_checkpointing:
            self.gradient_checkpointing(True)

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _setup_tokenizer(tok, chat_template: str, force: bool, mask_tokens: bool) -> None:
        """Add placeholder tokens, set the chat template (and its eos) when needed, and pad (= eos if missing)."""
        specials = placeholder_tokens() + (list(MASK_TOKENS) if mask_tokens else [])
        missing = [t for t in specials if t not in tok.get_vocab()]
        if missing:
            tok.add_tokens(missing, special_tokens=True)
        if mask_tokens:
            queries = [t for t in MASK_QUERY_TOKENS if t not in tok.get_vocab()]
            if queries:
                tok.add_tokens(queries)
        if force or not tok.chat_template:
            template = TEMPLATES.get(chat_template)
            if template is None:
                tok.chat_template = chat_template
            else:
                if template.eos_token not in tok.get_vocab():
                    tok.add_tokens([template.eos_token], special_tokens=True)
                tok.chat_template = template.jinja
                tok.eos_token = template.eos_token
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token

    def _default_targets(self, model_type: str) -> tuple[str, ...]:
        wanted = ADAPTER_TARGETS.get(model_type, PROJECTIONS)
        names = {name.rsplit(".", 1)[-1] for name, m in self.model.named_modules() if isinstance(m, nn.Linear)}
        present = tuple(t for t in wanted if t in names)
        if not present and model_type not in ADAPTER_TARGETS:
            raise CrabzooError(
                f"HFCausalLM: no default adapter targets for model_type {model_type!r}; set adapter_targets "
                f"to suffixes of its linear layers, e.g. {sorted(names)[:6]}"
            )
        return present or wanted

    # ------------------------------------------------------------------ contract
    @property
    def tokenizer(self):
        return self._tokenizer

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.get_text_config().hidden_size)

    @property
    def bos_token_id(self) -> int | None:
        return self._tokenizer.bos_token_id

    @property
    def eos_token_id(self) -> int:
        return self._tokenizer.eos_token_id

    @property
    def pad_token_id(self) -> int:
        return self._tokenizer.pad_token_id

    @property
    def decoder_layer_cls(self) -> type[nn.Module]:
        layers = getattr(self.model.get_decoder(), "layers", None)
        if isinstance(layers, nn.ModuleList) and len(layers):
            return type(layers[0])
        names = set(getattr(self.model, "_no_split_modules", None) or ())
        for module in self.model.modules():
            if type(module).__name__ in names:
                return type(module)
        raise CrabzooError(f"{type(self.model).__name__}: cannot find its decoder-layer class")

    @property
    def generation_prompt(self) -> str:
        """What the template writes after the last user turn when asked for a generation prompt.

        ``"<|im_end|>\\n<|im_start|>assistant\\n"`` for ChatML, ``" [/INST]"`` for LLaMA-2-chat.
        """
        marker = "\x00user\x00"
        text = self.render([{"role": "user", "content": marker}], add_generation_prompt=True)
        return text[text.rindex(marker) + len(marker) :]

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        return self._tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def embed(self, input_ids: Tensor) -> Tensor:
        return self.model.get_input_embeddings()(input_ids)

    def forward(
        self,
        inputs_embeds: Tensor,
        attention_mask: Tensor,
        position_ids: Tensor | None = None,
        output_hidden_states: bool = False,
        labels: Tensor | None = None,
        segments: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, ...]:
        """Logits ``(B, L, V)``; with ``output_hidden_states=True``, ``(logits, last_hidden (B, L, D))``.

        ``last_hidden`` is the decoder's final hidden state (after the final norm), e.g. for Crab's mask tokens.
        With ``labels`` ``(B, L)`` no full logits are computed: the result is ``(loss, per_sample)`` of
        :func:`~crabzoo.backbones.loss.supervised_loss` (``(loss, per_sample, last_hidden)`` with
        ``output_hidden_states=True``). For packed rows, ``attention_mask`` is :meth:`packed_attention_mask`'s
        4D mask and ``segments`` (with ``labels``) gives one per-sample loss per packed sample.
        """
        if labels is not None:
            # sizes read before the decoder runs, so the loss queues without waiting (crabzoo.backbones.loss)
            index = supervised_index(labels)
            num_samples = None if segments is None else int(segments.max()) + 1
            hidden = self.hidden_states(inputs_embeds, attention_mask, position_ids)
            loss, per_sample = supervised_loss(
                hidden, labels, self.output_embeddings(), segments=segments, num_samples=num_samples, index=index
            )
            return (loss, per_sample, hidden) if output_hidden_states else (loss, per_sample)
        out = self.model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False,
            output_hidden_states=output_hidden_states,
        )
        if output_hidden_states:
            return out.logits, out.hidden_states[-1]
        return out.logits

    def packed_attention_mask(self, segments: Tensor, dtype: torch.dtype) -> Tensor:
        """The block-diagonal causal 4D mask of packed rows (:func:`crabzoo.data.packing.block_causal_mask`).

        Raises:
            CrabzooError: the model's attention implementation does not take a 4D float mask (only ``sdpa`` and
                ``eager`` do).
        """
        from crabzoo.data.packing import block_causal_mask

        implementation = getattr(self.model.config, "_attn_implementation", None) or "sdpa"
        if implementation not in PACKING_ATTENTION:
            raise CrabzooError(
                f"sequence packing needs attention that takes a 4D mask ({', '.join(PACKING_ATTENTION)}); this "
                f"backbone uses {implementation!r}: set backbone attn_implementation: sdpa or turn data packing off"
            )
        return block_causal_mask(segments, dtype)

    def hidden_states(self, inputs_embeds: Tensor, attention_mask: Tensor, position_ids: Tensor | None = None) -> Tensor:
        """Final hidden states ``(B, L, D)`` of the decoder (after its final norm), without the LM head."""
        out = self.model.get_decoder()(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        )
        return out.last_hidden_state

    def output_embeddings(self) -> nn.Module:
        """The LM head of the wrapped model."""
        return self.model.get_output_embeddings()

    @torch.no_grad()
    def generate(self, inputs_embeds: Tensor, attention_mask: Tensor, max_new_tokens: int) -> Tensor:
        """Greedy decoding from left-padded embeddings; rows that hit eos early are filled with pad ids.

        ``transformers`` returns only the new tokens when generation starts from ``inputs_embeds``.
        """
        return self.model.generate(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
        )

    def decoder_layers(self) -> nn.ModuleList:
        """The stack of decoder layers (for sharding plans)."""
        return self.model.get_decoder().layers

    def gradient_checkpointing(self, enable: bool = True) -> None:
        """Switch activation checkpointing of the decoder layers on or off."""
        set_activation_checkpointing(self.model, enable)

    def save_pretrained(self, directory: str | Path) -> None:
        def write(tmp: Path) -> None:
            self.model.save_pretrained(str(tmp))
            self._tokenizer.save_pretrained(str(tmp))

        atomic_save_dir(directory, write)
