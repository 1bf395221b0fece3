"""GGUF checkpoints (llama.cpp's format) as ``transformers`` directories, converted once and cached.

``transformers`` reads a GGUF file through the ``gguf`` package and dequantises its tensors to torch, which takes
tens of seconds for even a small model. crabzoo does it once per file: the model and the file's own tokenizer
(with its chat template) are written with ``save_pretrained`` into the pretrained cache
(:func:`crabzoo.pretrained.converted_dir`, keyed by the file's sha256), and every later run loads that
directory in seconds.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from crabzoo import pretrained
from crabzoo.errors import CrabzooError


def gguf_source(name_or_path: str, gguf_file: str | None) -> Path | None:
    """The GGUF file a backbone argument names, or ``None`` when it names no GGUF.

    Accepted: ``packaged:NAME`` (a packaged GGUF weight), a path to a ``.gguf`` file, or a directory together with
    ``gguf_file`` (the file's name inside it, as in ``from_pretrained(dir, gguf_file=name)``).
    """
    if pretrained.is_packaged(name_or_path):
        path = pretrained.locate(name_or_path)
        return path if path.suffix == ".gguf" else None
    if gguf_file is not None:
        path = Path(name_or_path) / gguf_file
    elif str(name_or_path).endswith(".gguf"):
        path = Path(name_or_path)
    else:
        return None
    if not path.is_file():
        raise CrabzooError(f"GGUF file {path} not found; give the path of an existing .gguf file")
    return path


def convert_gguf(path: str | Path, out: str | Path, dtype: str = "float32") -> Path:
    """Dequantise a GGUF causal LM and write it, with its tokenizer, as a ``save_pretrained`` directory.

    Args:
        path: The ``.gguf`` file.
        out: Directory to write (replaced atomically).
        dtype: Weight dtype of the written model (``float32`` keeps the dequantised values exactly).

    Returns:
        ``out``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from crabzoo.backbones.hf_causal_lm import atomic_save_dir, resolve_dtype

    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError:
        raise CrabzooError("reading GGUF files needs the gguf package: run `pip install 'crabzoo[pretrained]'`") from None
    path = Path(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=resolve_dtype(dtype) or torch.float32
        )
    except (OSError, ValueError, KeyError) as err:
        raise CrabzooError(f"{path}: not a GGUF causal LM that transformers can read ({err})") from err
    # the loaded model remembers its GGUF origin and refuses save_pretrained: move its (already dequantised)
    # weights into a plain model of the same config
    config = model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    model = plain

    def write(tmp: Path) -> None:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))

    atomic_save_dir(out, write)
    return Path(out)


def cached_gguf_dir(path: str | Path, name: str | None = None) -> Path:
    """The converted directory of a GGUF file, converting it on first use (see :func:`convert_gguf`)."""
    path = Path(path)

    def convert(source: Path, out: Path) -> None:
        start = time.perf_counter()
        convert_gguf(source, out)
        print(f"crabzoo: converted {source.name} once into {out} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)

    return pretrained.converted_once(name or path.stem, path, ("config.json",), convert)
