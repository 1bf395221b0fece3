"""Load the weight files Crab and Crab+ released into a crabzoo paradigm (``model.init_args.released``).

What each release holds, as its training and inference scripts write and read it (``torch.save`` of a flat
state dict, read back with ``load_state_dict(strict=False)``):

* **Crab+** (GeWu-Lab/Crab_Plus): ``finetune_weights.bin``, the ``lora_*`` parameters of the peft-wrapped
  Qwen2.5-Omni-7B thinker: ``base_model.model.<thinker path>.lora_A.weight`` (r, d_in),
  ``.lora_B0.weight`` .. ``.lora_B2.weight`` (d_out, r) and ``.lora_route.weight`` (3, d_in), where the thinker
  paths are ``model.layers.*`` (LLM q/k/v/o/gate/up/down), ``audio_tower.layers.*.self_attn.{q,k,v}_proj`` and
  ``visual.blocks.*.mlp.{gate,up,down}_proj``. The same keys with a leading ``thinker.`` (the names inside the
  whole Omni model, as the release's ``model_trainable_params.txt`` and ``crabzoo export`` write them) load too.
  The base thinker comes from the backbone's ``name_or_path``.
* **Crab** (GeWu-Lab/Crab): ``finetune_weights.bin`` (stage 2: multi-task instruction tuning) holds the two
  Q-Former projectors ``base_model.model.model.vl_projector.*`` / ``al_projector.*`` (LAVIS BERT names, see
  :func:`crabzoo.connectors.qformer.from_crab_state_dict`) and the LLM's I-LoRA
  ``base_model.model.model.layers.*.{q,k,v,o,gate,up,down}_proj.lora_*``. ``avs_finetune_weights.bin``
  (s4 / ms3 / ref_avs) and ``avss_finetune_weights.bin`` (AVSS) are stage 3: Crab's trainer saves the
  parameters whose names contain ``seg_module``, ``embed_tokens`` or ``lm_head`` (its ``save_modules``; the
  I-LoRA is frozen in that stage and not saved), so they hold the 235 parameters of
  ``base_model.model.model.seg_module.*`` (:class:`~crabzoo.heads.crab_seg.CrabSegModule`, loaded with every
  name and shape checked; the module's two position buffers are not in the file and keep their values), and
  ``base_model.model.model.embed_tokens.weight`` / ``base_model.model.lm_head.weight`` of LLaMA-2's 32000 tokens
  followed by the 17 Crab adds (``<image>``, ``<image_start>``, ``<image_end>``, the same for video and audio,
  ``<mask_start>``, ``<mask_end>``, ``<mask_0>`` .. ``<mask_5>``). Their rows go to the backbone's embeddings
  by token name (crabzoo's tokenizer adds the same tokens in another order). ``lora_*`` tensors, should a file
  hold them, go to the I-LoRA as in stage 2. ``audio_pretrain.bin``, ``visual_pretrain.bin`` and
  ``segmentation_pretrain.bin`` are stage 1 and do not load here.

A stage-3 file needs the stage-2 file too: give both, ``released: [finetune_weights.bin,
avs_finetune_weights.bin]`` (recipes/released/crab_seg.yaml). Every tensor of a file must land in the model
(no silent partial load); shapes and head counts are checked.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from crabzoo.adapters.interop import CRAB_PREFIX, import_official
from crabzoo.errors import CrabzooError

CRAB_PLUS_FILE = "finetune_weights.bin"
"""File name of Crab+'s released I-LoRA."""

CRAB_FILES = {
    "finetune_weights.bin": "stage 2 (Q-Former projectors + LLM I-LoRA)",
    "avs_finetune_weights.bin": "stage 3 (segmentation module, embed_tokens, lm_head; s4 / ms3 / ref_avs)",
    "avss_finetune_weights.bin": "stage 3 (segmentation module, embed_tokens, lm_head; AVSS)",
    "audio_pretrain.bin": "stage 1 (audio projector)",
    "visual_pretrain.bin": "stage 1 (visual projector)",
    "segmentation_pretrain.bin": "stage 1 (segmentation module)",
}
"""File names of Crab's released stage checkpoints and what each holds."""

CRAB_PROJECTORS = {"visual": CRAB_PREFIX + "model.vl_projector.", "audio": CRAB_PREFIX + "model.al_projector."}
"""Key prefixes of Crab's two Q-Former projectors (modality -> prefix)."""

CRAB_SEG_PREFIX = CRAB_PREFIX + "model.seg_module."
"""Key prefix of Crab's segmentation module in its stage-3 files."""

CRAB_EMBEDDINGS = {"input": CRAB_PREFIX + "model.embed_tokens.weight", "output": CRAB_PREFIX + "lm_head.weight"}
"""Keys of the LLaMA input embeddings and LM head in Crab's stage-3 files (which -> key)."""

CRAB_ADDED_TOKENS: tuple[str, ...] = (
    "<image>", "<image_start>", "<image_end>", "<video>", "<video_start>", "<video_end>",
    "<audio>", "<audio_start>", "<audio_end>", "<mask_start>", "<mask_end>",
    *(f"<mask_{i}>" for i in range(6)),
)
"""The tokens Crab appends to LLaMA's vocabulary, in its order (rows ``base .. base + 16`` of its embeddings)."""

CRAB_PLUS_TOWERS = (CRAB_PREFIX + "audio_tower.", CRAB_PREFIX + "visual.")
"""Key prefixes only Crab+'s file has (the thinker's audio and vision towers)."""

THINKER = "thinker."


@dataclass(frozen=True)
class ReleasedWeights:
    """What :func:`load_released` put into the model.

    Attributes:
        path: The file read.
        layout: ``crab_plus`` or ``crab``.
        n_tensors: Tensors in the file (all loaded, except the text-side Q-Former tensors Crab never uses).
        adapted_modules: Adapted linear layers whose I-LoRA came from the file.
        connectors: Connectors loaded from the file (``visual_connector`` / ``audio_connector``).
        heads: Heads loaded from the file (``mask_decoder``).
        embeddings: Backbone embeddings loaded from the file (``input`` / ``output``).
    """

    path: str
    layout: str
    n_tensors: int
    adapted_modules: int
    connectors: tuple[str, ...] = ()
    heads: tuple[str, ...] = ()
    embeddings: tuple[str, ...] = ()

    def summary(self) -> str:
        """What went where, e.g. ``the I-LoRA of 224 modules, visual_connector, audio_connector``."""
        parts = [f"the I-LoRA of {self.adapted_modules} modules"] if self.adapted_modules else []
        parts += list(self.connectors) + list(self.heads)
        parts += [f"the backbone's {which} embeddings" for which in self.embeddings]
        return ", ".join(parts)


def read_released(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a released file (``.bin`` / ``.pt`` with ``weights_only=True``, or ``.safetensors``).

    Raises:
        CrabzooError: The file is missing, unreadable with ``weights_only=True`` or not a flat state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CrabzooError(
            f"released weights {path}: no such file; download it (docs: Reproducing Crab and Crab+) and pass "
            "its path with --model.init_args.released"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as err:
        raise CrabzooError(
            f"released weights {path}: cannot read it as a state dict with weights_only=True "
            f"({str(err).splitlines()[0][:160] if str(err) else type(err).__name__})"
        ) from None
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise CrabzooError(f"released weights {path}: expected a flat state dict of tensors (torch.save of one)")
    return state


def _layout_error(path: Path, expected: str, state: dict[str, Tensor]) -> CrabzooError:
    hint = ""
    if any(k.startswith(tuple(CRAB_PROJECTORS.values())) for k in state):
        hint = " (it is Crab's file: load it with recipes/released/crab.yaml)"
    elif any(k.removeprefix(THINKER).startswith(tuple(CRAB_PLUS_TOWERS)) for k in state):
        hint = " (it is Crab+'s file: load it with recipes/released/crab_plus.yaml)"
    return CrabzooError(f"released weights {path}: expected {expected}{hint}; its keys look like {sorted(state)[:2]}")


def _adapter(model: Any, path: Path, what: str) -> Any:
    from crabzoo.adapters.ilora import ILoRA

    if not isinstance(getattr(model, "adapter", None), ILoRA):
        raise CrabzooError(
            f"released weights {path} hold {what}'s I-LoRA: set model.init_args.adapter to crabzoo.adapters.ILoRA "
            f"with the release's groups, targets, n_heads, rank and alpha (recipes/released/)"
        )
    return model.adapter


def _import(adapter: Any, path: Path, state: dict[str, Tensor], prefixes: dict[str, str]) -> dict[str, str]:
    try:
        return import_official(adapter, state, prefixes=prefixes, strict=True)
    except CrabzooError as err:
        raise CrabzooError(f"released weights {path}: {err}") from None


def _load_crab_plus(model: Any, path: Path, state: dict[str, Tensor]) -> ReleasedWeights:
    from crabzoo.export.official import official_prefixes

    expected = (
        f"Crab+'s {CRAB_PLUS_FILE} (lora_A / lora_B<i> / lora_route tensors under "
        f"{CRAB_PREFIX}model.layers.*, {CRAB_PREFIX}audio_tower.*, {CRAB_PREFIX}visual.*)"
    )
    state = {k[len(THINKER):] if k.startswith(THINKER) else k: v for k, v in state.items()}
    if not all(".lora_" in k and k.startswith(CRAB_PREFIX) for k in state):
        raise _layout_error(path, expected, state)
    adapter = _adapter(model, path, "Crab+")
    # the release's keys have no "thinker." in front, which is what the "crab" prefixes give for the thinker
    mapping = _import(adapter, path, state, official_prefixes(model, "crab", list(adapter.groups)))
    return ReleasedWeights(str(path), "crab_plus", len(state), len(mapping))


def _load_connector(model: Any, path: Path, modality: str, state: dict[str, Tensor]) -> str:
    from crabzoo.connectors.qformer import QFormerConnector, from_crab_state_dict

    name = f"{modality}_connector"
    connector = getattr(model, name, None)
    if not isinstance(connector, QFormerConnector):
        raise CrabzooError(
            f"released weights {path} hold Crab's {modality} Q-Former projector: model.init_args.{name} must be "
            "crabzoo.connectors.QFormerConnector (paradigms/modular-qformer.yaml)"
        )
    renamed = from_crab_state_dict(state, modality)
    try:
        connector.load_state_dict(renamed, strict=True)
    except RuntimeError as err:
        raise CrabzooError(
            f"released weights {path}: Crab's {modality} projector does not fit model.init_args.{name} "
            f"({str(err).splitlines()[0][:200]}); use the Crab sizes of paradigms/modular-qformer.yaml"
        ) from None
    return name


def _load_seg_module(model: Any, path: Path, state: dict[str, Tensor]) -> str:
    from crabzoo.heads.crab_seg import CrabSegModule

    head = getattr(model, "mask_decoder", None)
    if not isinstance(head, CrabSegModule):
        have = "no mask head" if head is None else f"mask head {type(head).__name__}"
        raise CrabzooError(
            f"released weights {path} hold Crab's segmentation module ({CRAB_SEG_PREFIX}*) but the model has {have}: "
            "use crabzoo.paradigms.modular.SegmentationAVLLM with model.init_args.mask_decoder "
            "crabzoo.heads.crab_seg.CrabSegModule (recipes/released/crab_seg.yaml)"
        )
    renamed = {k[len(CRAB_SEG_PREFIX):]: v for k, v in state.items()}
    own = head.state_dict()
    buffers = {name for name, _ in head.named_buffers()}
    unknown = sorted(set(renamed) - set(own))
    missing = sorted(set(own) - set(renamed) - buffers)
    wrong = [
        f"{k}: file {tuple(v.shape)}, head {tuple(own[k].shape)}"
        for k, v in renamed.items()
        if k in own and v.shape != own[k].shape
    ]
    if unknown or missing or wrong:
        if unknown:
            found = f"names the head lacks {unknown[:3]}"
        else:
            found = f"lacks {missing[:3]}" if missing else f"shapes differ ({wrong[0]})"
        raise CrabzooError(
            f"released weights {path}: Crab's segmentation module does not fit model.init_args.mask_decoder "
            f"({found}; {len(unknown)} unknown, {len(missing)} missing, {len(wrong)} mis-shaped); give CrabSegModule "
            "Crab's sizes (recipes/released/crab_seg.yaml) and the backbone's and visual encoder's widths"
        )
    head.load_state_dict({**{b: own[b] for b in buffers if b not in renamed}, **renamed}, strict=True)
    return "mask_decoder"


def _load_embedding_rows(model: Any, path: Path, which: str, weight: Tensor) -> str:
    llm = getattr(getattr(model, "backbone", None), "model", None)
    module = None
    if llm is not None:
        module = llm.get_input_embeddings() if which == "input" else llm.get_output_embeddings()
    if module is None:
        raise CrabzooError(
            f"released weights {path} hold Crab's {CRAB_EMBEDDINGS[which]}: the backbone exposes no {which} embeddings"
        )
    target = module.weight
    tok = model.backbone.tokenizer
    vocab = tok.get_vocab()
    absent = [t for t in CRAB_ADDED_TOKENS if t not in vocab]
    base = weight.shape[0] - len(CRAB_ADDED_TOKENS) if weight.dim() == 2 else -1
    ids = [int(tok.convert_tokens_to_ids(t)) for t in CRAB_ADDED_TOKENS if t in vocab]
    if absent:
        raise CrabzooError(
            f"released weights {path}: the tokenizer lacks Crab's tokens {absent[:3]}; set "
            "model.init_args.backbone.init_args.mask_tokens: true"
        )
    if base < 0 or weight.shape[1] != target.shape[1] or min(ids) < base or max(ids) >= target.shape[0]:
        raise CrabzooError(
            f"released weights {path}: {CRAB_EMBEDDINGS[which]} {tuple(weight.shape)} does not fit the backbone's "
            f"{which} embeddings {tuple(target.shape)} (Crab's rows: {base} base tokens, then its "
            f"{len(CRAB_ADDED_TOKENS)} added tokens, here at ids {min(ids)}..{max(ids)}); use Crab's LLM, "
            "meta-llama/Llama-2-7b-chat-hf"
        )
    with torch.no_grad():
        target[:base].copy_(weight[:base])
        target[torch.tensor(ids, device=target.device)] = weight[base:].to(target.device, target.dtype)
    return which


def _load_crab_stage3(model: Any, path: Path, state: dict[str, Tensor]) -> ReleasedWeights:
    from crabzoo.export.official import official_prefixes

    seg = {k: v for k, v in state.items() if k.startswith(CRAB_SEG_PREFIX)}
    lora = {k: v for k, v in state.items() if ".lora_" in k and k.startswith(CRAB_PREFIX)}
    embeddings = {which: state[key] for which, key in CRAB_EMBEDDINGS.items() if key in state}
    left = sorted(set(state) - set(seg) - set(lora) - set(CRAB_EMBEDDINGS.values()))
    if left:
        raise CrabzooError(
            f"released weights {path}: a Crab stage-3 file holds {CRAB_SEG_PREFIX}*, "
            f"{' and '.join(CRAB_EMBEDDINGS.values())} (and I-LoRA tensors); it also has {len(left)} other "
            f"tensors, e.g. {left[:2]}"
        )
    llm = getattr(getattr(model, "backbone", None), "model", None)
    out = llm.get_output_embeddings() if llm is not None else None
    tied = out is not None and llm.get_input_embeddings().weight is out.weight
    if len(embeddings) == 2 and tied:
        raise CrabzooError(
            f"released weights {path}: the file has separate embed_tokens and lm_head but the backbone ties them"
        )
    heads = (_load_seg_module(model, path, seg),)
    mapping: dict[str, str] = {}
    if lora:
        adapter = _adapter(model, path, "Crab")
        mapping = _import(adapter, path, lora, official_prefixes(model, "crab", list(adapter.groups)))
    done = tuple(_load_embedding_rows(model, path, which, weight) for which, weight in embeddings.items())
    return ReleasedWeights(str(path), "crab", len(state), len(mapping), heads=heads, embeddings=done)


def _load_crab(model: Any, path: Path, state: dict[str, Tensor]) -> ReleasedWeights:
    from crabzoo.export.official import official_prefixes

    if any(k.startswith(CRAB_SEG_PREFIX) for k in state):
        return _load_crab_stage3(model, path, state)
    expected = (
        f"Crab's stage-2 finetune_weights.bin ({CRAB_PROJECTORS['visual']}*, {CRAB_PROJECTORS['audio']}* and "
        f"{CRAB_PREFIX}model.layers.*.lora_* tensors)"
    )
    lora = {k: v for k, v in state.items() if ".lora_" in k}
    groups = {m: {k: v for k, v in state.items() if k.startswith(prefix)} for m, prefix in CRAB_PROJECTORS.items()}
    left = set(state) - set(lora) - {k for g in groups.values() for k in g}
    if not lora or not all(groups.values()) or left or not all(k.startswith(CRAB_PREFIX) for k in lora):
        raise _layout_error(path, expected, state)
    adapter = _adapter(model, path, "Crab")
    mapping = _import(adapter, path, lora, official_prefixes(model, "crab", list(adapter.groups)))
    connectors = tuple(_load_connector(model, path, m, groups[m]) for m in ("visual", "audio"))
    return ReleasedWeights(str(path), "crab", len(state), len(mapping), connectors)


def load_released(model: Any, path: str | Path) -> ReleasedWeights:
    """Load a released Crab+ or Crab weight file into ``model``.

    The layout follows the paradigm: the Qwen2.5-Omni thinker (:class:`~crabzoo.paradigms.omni.OmniAVLLM`)
    takes Crab+'s file (its adapter), any other paradigm Crab's stage-2 file (adapter and connectors) or a
    stage-3 file (mask head, embeddings), told apart by their keys (see the module docstring).

    Raises:
        CrabzooError: A missing or unreadable file, a file of the other layout or stage, or one whose tensors
            do not fit the model (names, head counts, shapes).
    """
    from crabzoo.export.official import is_omni

    path = Path(path)
    state = read_released(path)
    loaded = _load_crab_plus(model, path, state) if is_omni(model) else _load_crab(model, path, state)
    rank_zero_info(f"crabzoo: released {loaded.layout} weights {path}: {loaded.n_tensors} tensors read into {loaded.summary()}")
    return loaded
