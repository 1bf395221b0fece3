"""CTranslate2 Whisper (``model.bin``) -> a transformers ``WhisperModel`` directory crabzoo loads.

``crabzoo convert whisper-ct2 SRC OUT`` reads a CTranslate2 Whisper directory (``model.bin`` plus
``vocabulary.txt``, optionally ``config.json`` and ``tokenizer.json``; or ``packaged:whisper-tiny.en``) and
writes a ``save_pretrained`` folder: ``config.json``, ``model.safetensors`` (float32),
``preprocessor_config.json`` (``WhisperFeatureExtractor``), and the tokenizer when one ships. Then
``WhisperAudioEncoder(model=OUT)`` and ``WhisperModel.from_pretrained(OUT)`` load it offline.

The ``model.bin`` layout (binary version 6, little-endian; a *string* is a ``uint16`` length that counts a
trailing NUL, the UTF-8 bytes, then the NUL)::

    uint32 binary version | string spec name ("WhisperSpec") | uint32 spec revision | uint32 variable count
    per variable: string name | uint8 rank | uint32 dim * rank | uint8 dtype id | uint32 byte count | bytes
    uint32 alias count | per alias: string alias | string variable it stands for

with dtype ids 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16. Rank-0 variables are the spec's
settings (``encoder/num_heads``, ``decoder/activation``, ...); int8/int16 weights carry a ``<name>_scale``
(``float = int / scale``, per output row for int8) and are dequantised here.

Weights are written as float32: transformers 5 loads with ``dtype="auto"``, so float16 weights would make the
encoder run in float16 (slow on CPUs, and unlike every other Whisper checkpoint crabzoo loads). float16 ->
float32 is exact, so the file doubles (151 MB for tiny.en) but loses nothing.

The variable mapping (``L`` = layer index)::

    encoder/conv{1,2}/{weight,bias}                 encoder.conv{1,2}.*
    encoder/position_encodings/encodings            encoder.embed_positions.weight
    */layer_L/self_attention/linear_0 (q|k|v rows)  *.layers.L.self_attn.{q,k,v}_proj  (split)
    */layer_L/self_attention/linear_1               *.layers.L.self_attn.out_proj
    */layer_L/self_attention/layer_norm             *.layers.L.self_attn_layer_norm
    decoder/layer_L/attention/linear_0              decoder.layers.L.encoder_attn.q_proj
    decoder/layer_L/attention/linear_1 (k|v rows)   decoder.layers.L.encoder_attn.{k,v}_proj  (split)
    decoder/layer_L/attention/linear_2              decoder.layers.L.encoder_attn.out_proj
    decoder/layer_L/attention/layer_norm            decoder.layers.L.encoder_attn_layer_norm
    */layer_L/ffn/linear_{0,1}                      *.layers.L.fc{1,2}
    */layer_L/ffn/layer_norm                        *.layers.L.final_layer_norm
    */layer_norm                                    *.layer_norm          (gamma/beta -> weight/bias)
    decoder/embeddings/weight                       decoder.embed_tokens.weight
    decoder/position_encodings/encodings            decoder.embed_positions.weight
    decoder/projection/weight                       (an alias of the embeddings: HF ties proj_out to them)

HF's ``k_proj`` has no bias; the fused CT2 bias holds zeros there (any value would be exact to drop anyway:
``q . b_k`` is the same for every key, so the softmax does not see it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crabzoo.errors import CrabzooError

PACKAGED = "whisper-tiny.en"
"""The packaged weight this module converts by default (``packaged:whisper-tiny.en``)."""

BINARY_VERSION = 6
"""The ``model.bin`` binary version this reader knows (CTranslate2 3.x and 4.x write it)."""

DTYPES: dict[int, str] = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
"""CTranslate2's dtype ids (the ``DataType`` enum order)."""

MARKER = "crabzoo_conversion.json"
"""File in every converted directory: the source and the converter (also how OUT is recognised as ours)."""

GELU = 3
"""CTranslate2's id of the exact (erf) GELU, Whisper's activation."""


@dataclass
class CT2Model:
    """The contents of one ``model.bin``.

    Attributes:
        version: Binary format version.
        spec: Spec name (``"WhisperSpec"``).
        revision: Spec revision.
        variables: Name -> array (bfloat16 already widened to float32).
        aliases: Alias name -> the name of the variable it shares.
    """

    version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray] = field(repr=False)
    aliases: dict[str, str]

    def __contains__(self, name: str) -> bool:
        return name in self.variables or name in self.aliases

    def __getitem__(self, name: str) -> np.ndarray:
        return self.variables[self.aliases.get(name, name)]

    def scalar(self, name: str, default: int | None = None) -> int | None:
        """A rank-0 setting as an int (``default`` when the file lacks it)."""
        if name not in self:
            return default
        return int(self[name].reshape(-1)[0])


class _Reader:
    """Bounds-checked little-endian reads from a bytes buffer; errors name the file and the offset."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path, self.pos = memoryview(data), path, 0

    def fail(self, what: str) -> CrabzooError:
        return CrabzooError(f"{self.path}: not a CTranslate2 model.bin ({what} at byte {self.pos})")

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"truncated: {n} bytes wanted, {len(self.data) - self.pos} left")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def string(self) -> str:
        n = self.unpack("H")
        raw = self.take(n)
        if n == 0 or raw[-1] != 0:
            raise self.fail("string without its NUL terminator")
        try:
            return bytes(raw[:-1]).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("string that is not UTF-8") from None


def read_model_bin(path: str | Path) -> CT2Model:
    """Parse a CTranslate2 ``model.bin`` (see the module docstring for the layout).

    Raises:
        CrabzooError: the file is missing, truncated, of another binary version, or otherwise malformed.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CrabzooError(f"cannot read {path}: {err.strerror or err}") from None
    r = _Reader(data, path)
    version = r.unpack("I")
    if version != BINARY_VERSION:
        raise r.fail(f"binary version {version}, this reader knows {BINARY_VERSION}")
    spec, revision, count = r.string(), r.unpack("I"), r.unpack("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = r.string()
        shape = tuple(r.unpack("I") for _ in range(r.unpack("B")))
        type_id = r.unpack("B")
        if type_id not in DTYPES:
            raise r.fail(f"unknown dtype id {type_id} of {name!r}")
        nbytes = r.unpack("I")
        dtype = DTYPES[type_id]
        itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
        if nbytes != itemsize * int(np.prod(shape, dtype=np.int64)):
            raise r.fail(f"{name!r} has {nbytes} bytes for shape {shape} of {dtype}")
        raw = r.take(nbytes)
        if dtype == "bfloat16":  # the high half of a float32
            value = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            value = np.frombuffer(raw, np.dtype(dtype).newbyteorder("<"))
        variables[name] = value.reshape(shape)
    aliases = {}
    for _ in range(r.unpack("I")):
        alias, target = r.string(), r.string()
        if target not in variables:
            raise r.fail(f"alias {alias!r} of a missing variable {target!r}")
        aliases[alias] = target
    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} trailing bytes")
    return CT2Model(version, spec, revision, variables, aliases)


def _float(model: CT2Model, name: str) -> np.ndarray:
    """A weight as float32, dequantised when it is stored as int8/int16 with a ``_scale`` (an alias's scale
    is its target's)."""
    name = model.aliases.get(name, name)
    value = model[name]
    if value.dtype.kind in "iu":
        scale_name = f"{name}_scale"
        if scale_name not in model:
            raise CrabzooError(f"CTranslate2 variable {name!r} is {value.dtype} without {scale_name!r}")
        scale = model[scale_name].astype(np.float32)
        scale = scale.reshape(scale.shape + (1,) * (value.ndim - scale.ndim)) if scale.ndim else scale
        return value.astype(np.float32) / scale
    return value.astype(np.float32)


def _layers(model: CT2Model, side: str) -> int:
    found = {int(m.group(1)) for name in model.variables if (m := re.match(rf"{side}/layer_(\d+)/", name))}
    if found != set(range(len(found))):
        raise CrabzooError(f"CTranslate2 Whisper: {side} layers {sorted(found)} are not 0..N-1")
    return len(found)


def whisper_state_dict(model: CT2Model) -> dict[str, np.ndarray]:
    """The transformers ``WhisperModel`` state dict (float32 arrays) of a CTranslate2 Whisper model.

    Raises:
        CrabzooError: not a ``WhisperSpec``, settings a Whisper does not have (another activation, post-norm,
            ALiBi, scaled embeddings), an untied output projection, or variables this mapping does not place.
    """
    if model.spec != "WhisperSpec":
        raise CrabzooError(f"CTranslate2 model is a {model.spec}, not a WhisperSpec")
    wrong = {
        "decoder/activation": (model.scalar("decoder/activation", GELU), GELU),
        "decoder/pre_norm": (model.scalar("decoder/pre_norm", 1), 1),
        "decoder/alibi": (model.scalar("decoder/alibi", 0), 0),
        "decoder/scale_embeddings": (model.scalar("decoder/scale_embeddings", 0), 0),
        "decoder/start_from_zero_embedding": (model.scalar("decoder/start_from_zero_embedding", 0), 0),
    }
    bad = [f"{k}={v}" for k, (v, want) in wrong.items() if v != want]
    if bad:
        raise CrabzooError(f"CTranslate2 Whisper with settings transformers' Whisper lacks: {', '.join(bad)}")
    used: set[str] = set()

    def get(name: str) -> np.ndarray:
        if name not in model:
            raise CrabzooError(f"CTranslate2 Whisper lacks the variable {name!r}")
        target = model.aliases.get(name, name)
        used.update((target, f"{target}_scale"))
        return _float(model, name)

    sd: dict[str, np.ndarray] = {}

    def linear(src: str, dst: str) -> None:
        sd[f"{dst}.weight"] = get(f"{src}/weight")
        sd[f"{dst}.bias"] = get(f"{src}/bias")

    def fused(src: str, dsts: list[str]) -> None:  # rows of q|k|v (or k|v), equal parts
        weight, bias = get(f"{src}/weight"), get(f"{src}/bias")
        if weight.shape[0] % len(dsts):
            raise CrabzooError(f"CTranslate2 Whisper: {src} has {weight.shape[0]} rows, not {len(dsts)} equal parts")
        for dst, w, b in zip(dsts, np.split(weight, len(dsts)), np.split(bias, len(dsts))):
            sd[f"{dst}.weight"] = w
            if not dst.endswith("k_proj"):  # HF's k_proj has no bias (softmax-invariant; zeros in CT2)
                sd[f"{dst}.bias"] = b

    def norm(src: str, dst: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = get(f"{src}/gamma"), get(f"{src}/beta")

    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"encoder.{conv}")
    for side in ("encoder", "decoder"):
        sd[f"{side}.embed_positions.weight"] = get(f"{side}/position_encodings/encodings")
        norm(f"{side}/layer_norm", f"{side}.layer_norm")
        for i in range(_layers(model, side)):
            src, dst = f"{side}/layer_{i}", f"{side}.layers.{i}"
            fused(f"{src}/self_attention/linear_0", [f"{dst}.self_attn.{p}_proj" for p in "qkv"])
            linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
            norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
            if side == "decoder":
                linear(f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
                fused(f"{src}/attention/linear_1", [f"{dst}.encoder_attn.{p}_proj" for p in "kv"])
                linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
                norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
            linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
            linear(f"{src}/ffn/linear_1", f"{dst}.fc2")
            norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
    sd["decoder.embed_tokens.weight"] = get("decoder/embeddings/weight")
    if "decoder/projection/weight" in model:
        projection = get("decoder/projection/weight")
        if not np.array_equal(projection, sd["decoder.embed_tokens.weight"]):
            raise CrabzooError("CTranslate2 Whisper with an output projection untied from the embeddings")
        if "decoder/projection/bias" in model and np.any(get("decoder/projection/bias")):
            raise CrabzooError("CTranslate2 Whisper with an output projection bias (transformers' Whisper has none)")
    left = sorted(n for n, v in model.variables.items() if v.ndim and n not in used)
    if left:
        raise CrabzooError(f"CTranslate2 Whisper variables this converter does not place: {', '.join(left[:8])}")
    return sd


def _vocabulary(src: Path) -> list[str]:
    """The CT2 vocabulary (``vocabulary.txt``, one token a line, or ``vocabulary.json``, a list)."""
    if (src / "vocabulary.json").is_file():
        return list(json.loads((src / "vocabulary.json").read_text(encoding="utf-8")))
    if (src / "vocabulary.txt").is_file():
        return (src / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    return []


def whisper_config(model: CT2Model, src: Path, state: dict[str, np.ndarray]):
    """The ``WhisperConfig`` of a CT2 Whisper: shapes from the weights, heads from the spec, special token ids
    from the vocabulary, suppressed tokens from the CT2 ``config.json``."""
    from transformers import WhisperConfig

    d_model, n_mels = state["encoder.conv1.weight"].shape[:2]
    vocab = state["decoder.embed_tokens.weight"].shape[0]
    tokens = _vocabulary(src)
    english_only = vocab < 51865  # openai's rule: the multilingual vocabulary has one more token

    def token_id(token: str, fallback: int) -> int:
        return tokens.index(token) if token in tokens else fallback

    eot = token_id("<|endoftext|>", 50256 if english_only else 50257)
    sot = token_id("<|startoftranscript|>", eot + 1)
    ct2_config = json.loads((src / "config.json").read_text()) if (src / "config.json").is_file() else {}
    heads = {side: model.scalar(f"{side}/num_heads") for side in ("encoder", "decoder")}
    if None in heads.values():
        raise CrabzooError("CTranslate2 Whisper lacks encoder/num_heads or decoder/num_heads")
    return WhisperConfig(
        vocab_size=int(vocab),
        num_mel_bins=int(n_mels),
        d_model=int(d_model),
        encoder_layers=_layers(model, "encoder"),
        decoder_layers=_layers(model, "decoder"),
        encoder_attention_heads=heads["encoder"],
        decoder_attention_heads=heads["decoder"],
        encoder_ffn_dim=int(state["encoder.layers.0.fc1.weight"].shape[0]),
        decoder_ffn_dim=int(state["decoder.layers.0.fc1.weight"].shape[0]),
        max_source_positions=int(state["encoder.embed_positions.weight"].shape[0]),
        max_target_positions=int(state["decoder.embed_positions.weight"].shape[0]),
        activation_function="gelu",
        scale_embedding=False,
        bos_token_id=sot,
        decoder_start_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        suppress_tokens=ct2_config.get("suppress_ids"),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin", [220, eot]),
    )


def _source(src: str | Path) -> Path:
    """The CT2 directory of ``src`` (a directory, its ``model.bin``, or ``packaged:NAME``)."""
    from crabzoo import pretrained

    if pretrained.is_packaged(src):
        return pretrained.locate(str(src)).parent
    path = Path(src).expanduser()
    if path.is_file() and path.name == "model.bin":
        path = path.parent
    if not (path / "model.bin").is_file():
        raise CrabzooError(f"{src}: no CTranslate2 model.bin there (give a CTranslate2 Whisper directory)")
    return path


def _check_out(out: Path, src: Path) -> None:
    """Refuse to replace a directory that is not an earlier conversion (or that holds the source)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise CrabzooError(f"{out} exists and is not a directory")
    if out.resolve() == src.resolve() or out.resolve() in src.resolve().parents:
        raise CrabzooError(f"{out}: the output would replace the source {src}")
    if any(out.iterdir()) and not (out / MARKER).is_file():
        raise CrabzooError(f"{out} exists and is not an earlier crabzoo conversion; give a new or empty folder")


def convert_whisper_ct2(src_dir: str | Path, out_dir: str | Path) -> Path:
    """Convert a CTranslate2 Whisper directory into a transformers ``WhisperModel`` folder (atomically).

    Args:
        src_dir: Directory with ``model.bin`` (and ``vocabulary.txt``; ``config.json`` and
            ``tokenizer.json`` when present), its ``model.bin``, or ``packaged:NAME``.
        out_dir: Folder to write; an earlier conversion there is replaced in one rename.

    Returns:
        ``out_dir`` as a ``Path``.

    Raises:
        CrabzooError: ``src_dir`` is missing or garbled, or ``out_dir`` exists and is not an earlier conversion.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import WhisperFeatureExtractor, WhisperModel

    from crabzoo.backbones.hf_causal_lm import atomic_save_dir
    from crabzoo.pretrained import sha256

    src, out = _source(src_dir), Path(out_dir).expanduser()
    _check_out(out, src)
    model = read_model_bin(src / "model.bin")
    state = whisper_state_dict(model)
    config = whisper_config(model, src, state)
    with torch.device("meta"):
        hf = WhisperModel(config)
    try:
        hf.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=True, assign=True)
    except RuntimeError as err:
        raise CrabzooError(f"CTranslate2 Whisper does not fit transformers' WhisperModel: {err}") from None
    hf.eval()
    window_seconds = 2 * config.max_source_positions * 160 // 16000
    features = WhisperFeatureExtractor(feature_size=config.num_mel_bins, chunk_length=window_seconds)
    marker = {
        "converter": "crabzoo.convert.whisper_ct2",
        "source": str(src / "model.bin"),
        "source_sha256": sha256(src / "model.bin"),
        "spec": f"{model.spec} revision {model.revision} (binary version {model.version})",
        "dtype": "float32",
    }

    def write(tmp: Path) -> None:  # what save_pretrained writes, without its progress bar
        config.architectures = ["WhisperModel"]
        config.save_pretrained(tmp)
        save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        features.save_pretrained(tmp)
        if (src / "tokenizer.json").is_file():
            shutil.copyfile(src / "tokenizer.json", tmp / "tokenizer.json")
            eot = "<|endoftext|>"
            tokenizer_config = {
                "tokenizer_class": "WhisperTokenizer",
                "bos_token": eot,
                "eos_token": eot,
                "unk_token": eot,
                "pad_token": eot,
                "model_max_length": 1024,
                "clean_up_tokenization_spaces": False,
            }
            (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private; a shared cache is read by others too
        for file in tmp.iterdir():
            os.chmod(file, 0o666 & ~umask)

    atomic_save_dir(out, write)
    return out


def parameter_counts(shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """``{"total", "encoder", "decoder"}`` parameter counts from a WhisperModel state dict's ``name -> shape``."""
    counts = {"encoder": 0, "decoder": 0}
    for name, shape in shapes.items():
        counts[name.split(".", 1)[0]] += int(np.prod(shape, dtype=np.int64))
    return {"total": counts["encoder"] + counts["decoder"], **counts}


CONVERTED_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", MARKER)
"""Files of a complete conversion folder."""


def packaged_whisper_dir(name: str = PACKAGED) -> Path:
    """The converted transformers folder of a packaged CT2 Whisper, converting it on the first call.

    The folder is :func:`crabzoo.pretrained.converted_dir` ``(name, model.bin, "hf")`` (keyed by the source's
    sha256), written once by :func:`crabzoo.pretrained.converted_once`: concurrent first calls convert once,
    later ones find the folder (a new process hashes the source, ~0.1 s).

    Raises:
        CrabzooError: ``name`` is not a CTranslate2 Whisper weight, or its package is not installed.
    """
    from crabzoo import pretrained

    entry = pretrained.weight(name)
    if not entry.format.startswith("CTranslate2"):
        raise CrabzooError(f"packaged weight {entry.name!r} is a {entry.format}, not a CTranslate2 Whisper")
    source = pretrained.locate(entry.name)  # model.bin; the converter reads its whole directory
    return pretrained.converted_once(entry.name, source, CONVERTED_FILES, lambda src, out: convert_whisper_ct2(src.parent, out))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``crabzoo convert whisper-ct2``."""
    parser.add_argument("src", metavar="SRC", help="CTranslate2 Whisper directory (model.bin, vocabulary.txt) or packaged:whisper-tiny.en")
    parser.add_argument("out", metavar="OUT", help="folder to write (new, empty, or an earlier conversion)")


def run(args: argparse.Namespace) -> None:
    """Convert ``args.src`` into ``args.out`` and print one line: where, how many parameters, how long."""
    from safetensors import safe_open

    start = time.perf_counter()
    out = convert_whisper_ct2(args.src, args.out)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        counts = parameter_counts({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})
    print(
        f"wrote {out}: transformers WhisperModel, {counts['total'] / 1e6:.2f} M parameters "
        f"(encoder {counts['encoder'] / 1e6:.2f} M, decoder {counts['decoder'] / 1e6:.2f} M), float32, "
        f"in {time.perf_counter() - start:.1f} s"
    )

