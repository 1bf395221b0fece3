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
  ``base_model.model.model.layers.*.{q,k,v,o,gate,up,down}_proj.lora_*``. ``avs_finetune_weights.bin`` and
  ``avss_finetune_weights.bin`` (stage 3) hold the segmentation module ``base_model.model.model.seg_module.*``
  with ``embed_tokens`` and ``lm_head``; ``audio_pretrain.bin``, ``visual_pretrain.bin`` and
  ``segmentation_pretrain.bin`` are stage 1. Only the stage-2 file loads here: Crab's ``seg_module`` is laid out
  differently from :class:`~crabzoo.heads.mask_decoder.MaskDecoder`, so the stage-3 files are refused by name.

Every tensor of the file must land in the model (no silent partial load); shapes and head counts are checked.
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
    """

    path: str
    layout: str
    n_tensors: int
    adapted_modules: int
    connectors: tuple[str, ...] = ()


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


def _load_crab(model: Any, path: Path, state: dict[str, Tensor]) -> ReleasedWeights:
    from crabzoo.export.official import official_prefixes

    if any(k.startswith(CRAB_SEG_PREFIX) for k in state):
        raise CrabzooError(
            f"released weights {path}: this is Crab's stage-3 segmentation file ({CRAB_SEG_PREFIX}*); crabzoo's "
            "mask decoder does not share its layout, so it cannot be loaded; give Crab's stage-2 "
            f"finetune_weights.bin ({CRAB_FILES['finetune_weights.bin']})"
        )
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
    """Load a released Crab+ or Crab weight file into ``model`` (its adapter and, for Crab, its connectors).

    The layout follows the paradigm: the Qwen2.5-Omni thinker (:class:`~crabzoo.paradigms.omni.OmniAVLLM`)
    takes Crab+'s file, any other paradigm Crab's stage-2 file (see the module docstring).

    Raises:
        CrabzooError: A missing or unreadable file, a file of the other layout or stage, or one whose tensors
            do not fit the model (names, head counts, shapes).
    """
    from crabzoo.export.official import is_omni

    path = Path(path)
    state = read_released(path)
    loaded = _load_crab_plus(model, path, state) if is_omni(model) else _load_crab(model, path, state)
    extra = f", {', '.join(loaded.connectors)}" if loaded.connectors else ""
    rank_zero_info(
        f"crabzoo: released {loaded.layout} weights {path}: {loaded.n_tensors} tensors read into the I-LoRA of "
        f"{loaded.adapted_modules} modules{extra}"
    )
    return loaded
