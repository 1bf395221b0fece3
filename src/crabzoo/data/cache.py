"""An on-disk cache of frozen encoder outputs, shared across runs, data workers and processes.

A frozen encoder gives the same features for the same media every epoch, so decoding, preprocessing and
encoding need to happen once. Each entry is one safetensors file named by a hash of its full key::

    <root>/<EncoderClass>-<fingerprint>/<h[:2]>/<h>.safetensors        h = sha256(sample id, media policy, ...)

The fingerprint (:meth:`crabzoo.encoders.base.MediaEncoder.fingerprint`) covers the encoder's class, its
preprocessing config and its weights; the per-entry hash covers the preprocessing config again, the sample id
and the crop/media policy. Changing any of them gives another file, so stale features are never read
(invalidation by key). Entries are written to a temporary file in the same directory and renamed into place,
so concurrent writers (data workers, ranks, runs) never expose a partial file, and there is no global index to
corrupt: ``info`` walks the tree.

The ``crabzoo cache`` command (``info`` / ``clear``) inspects and empties a cache directory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crabzoo.errors import CrabzooError

DEFAULT_ROOT = Path(os.environ.get("CRABZOO_CACHE", Path.home() / ".cache" / "crabzoo" / "features"))
"""Default cache directory (``$CRABZOO_CACHE`` or ``~/.cache/crabzoo/features``)."""

SUFFIX = ".safetensors"
FEATURES = "features"


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """The full key of one cache entry.

    Attributes:
        encoder: Encoder class name (a directory prefix, for ``info``/``clear``).
        fingerprint: Encoder fingerprint (class, config, weights).
        digest: Hash of the preprocessing config, sample id and media policy.
    """

    encoder: str
    fingerprint: str
    digest: str

    @property
    def relpath(self) -> str:
        """Path of the entry relative to the cache root."""
        return f"{self.encoder}-{self.fingerprint}/{self.digest[:2]}/{self.digest}{SUFFIX}"


class FeatureCache:
    """Opt-in feature cache rooted at a directory.

    Args:
        root: Cache directory (created on the first write).

    Example:
        >>> cache = FeatureCache(tmp_path)                                   # doctest: +SKIP
        >>> key = cache.key(encoder, sample.id, policy={"frames": 10})        # doctest: +SKIP
        >>> feats = cache.get(key)                                            # doctest: +SKIP
        >>> if feats is None:                                                 # doctest: +SKIP
        ...     feats = encoder(inputs).tokens[0]; cache.put(key, feats)
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._fingerprints: dict[int, tuple[Any, str]] = {}

    # ------------------------------------------------------------------ keys
    def fingerprint(self, encoder: Any) -> str:
        """The encoder's fingerprint, computed once per encoder object (encoders are frozen)."""
        cached = self._fingerprints.get(id(encoder))
        if cached is not None and cached[0] is encoder:
            return cached[1]
        value = str(encoder.fingerprint())
        self._fingerprints[id(encoder)] = (encoder, value)
        return value

    def key(
        self,
        encoder: Any,
        sample_id: str,
        policy: Mapping[str, Any] | str | None = None,
        fingerprint: str | None = None,
    ) -> CacheKey:
        """The key of one sample's features.

        Args:
            encoder: A :class:`~crabzoo.encoders.base.MediaEncoder` (or any object with ``fingerprint()``
                and ``preprocess_config()``).
            sample_id: The sample's id (unique within the data set).
            policy: How the media was cropped/sampled (task media policy: frames, audio windows, ...).
            fingerprint: The encoder's fingerprint when already known (data workers receive it precomputed).
        """
        name = type(encoder).__name__
        pre = encoder.preprocess_config() if hasattr(encoder, "preprocess_config") else {}
        digest = _digest({"sample": str(sample_id), "policy": policy, "preprocess": pre})
        return CacheKey(name, fingerprint or self.fingerprint(encoder), digest)

    def path(self, key: CacheKey | str) -> Path:
        """The file of an entry (``key`` may also be a :attr:`CacheKey.relpath` string)."""
        return self.root / (key if isinstance(key, str) else key.relpath)

    # ------------------------------------------------------------------ entries
    def contains(self, key: CacheKey | str) -> bool:
        """Whether an entry exists (no read)."""
        return self.path(key).is_file()

    def get_entry(self, key: CacheKey | str) -> dict[str, Any] | None:
        """All tensors of an entry (``features`` and any extras), or ``None`` on a miss or unreadable file."""
        from safetensors.torch import load_file

        file = self.path(key)
        if not file.is_file():
            return None
        try:
            return load_file(str(file))
        except Exception:  # an unreadable entry is a miss; the next put replaces it
            return None

    def get(self, key: CacheKey | str) -> Any:
        """The cached features tensor, or ``None``."""
        entry = self.get_entry(key)
        return None if entry is None else entry.get(FEATURES)

    def put(self, key: CacheKey | str, tensor: Any, **extra: Any) -> Path:
        """Store features (and optional extra tensors, e.g. ``timestamps``) atomically.

        Args:
            key: From :meth:`key`.
            tensor: The features of one sample (no batch dimension).
            **extra: More tensors to keep in the same entry.

        Returns:
            The entry's file.
        """
        from safetensors.torch import save_file

        file = self.path(key)
        file.parent.mkdir(parents=True, exist_ok=True)
        tensors = {FEATURES: tensor, **extra}
        data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=".", suffix=".tmp")
        os.close(fd)
        try:
            save_file(data, tmp, metadata={"entry": key if isinstance(key, str) else key.relpath})
            os.replace(tmp, file)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return file

    # ------------------------------------------------------------------ maintenance
    def _encoder_dirs(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and "-" in p.name)

    def info(self) -> dict[str, Any]:
        """``{"root", "entries", "bytes", "encoders": {"<Class>-<fingerprint>": {"entries", "bytes"}}}``."""
        encoders: dict[str, dict[str, int]] = {}
        for d in self._encoder_dirs():
            files = [f for f in d.rglob(f"*{SUFFIX}") if not f.name.startswith(".")]
            encoders[d.name] = {"entries": len(files), "bytes": sum(f.stat().st_size for f in files)}
        return {
            "root": str(self.root),
            "entries": sum(e["entries"] for e in encoders.values()),
            "bytes": sum(e["bytes"] for e in encoders.values()),
            "encoders": encoders,
        }

    def clear(self, encoder: str | None = None) -> int:
        """Delete entries; returns how many were removed.

        Args:
            encoder: Only the entries of encoders whose class name or ``<Class>-<fingerprint>`` directory
                name equals this (``None``: all).
        """
        removed = 0
        for d in self._encoder_dirs():
            if encoder is not None and encoder not in (d.name, d.name.rsplit("-", 1)[0]):
                continue
            removed += sum(1 for f in d.rglob(f"*{SUFFIX}") if not f.name.startswith("."))
            shutil.rmtree(d, ignore_errors=True)
        return removed


def cached_encode(
    cache: FeatureCache,
    encoder: Any,
    sample_ids: Sequence[str],
    compute: Callable[[list[int]], Sequence[Any]],
    policy: Mapping[str, Any] | str | None = None,
) -> list[Any]:
    """Features of a batch of samples: cache hits are read, misses are computed together and stored.

    Args:
        cache: The cache.
        encoder: The frozen encoder (its fingerprint keys the entries).
        sample_ids: Ids of the batch's samples.
        compute: Called once with the positions of the misses; returns their features (one tensor each),
            e.g. decode + preprocess + encode.
        policy: Media policy shared by the batch (part of the key).

    Returns:
        One features tensor per sample, in order.
    """
    keys = [cache.key(encoder, sid, policy) for sid in sample_ids]
    out: list[Any] = [cache.get(k) for k in keys]
    missing = [i for i, v in enumerate(out) if v is None]
    if missing:
        computed = compute(missing)
        for i, feats in zip(missing, computed):
            cache.put(keys[i], feats)
            out[i] = feats
    return out


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{n} B"


def main(argv: list[str]) -> None:
    """``crabzoo cache info|clear [--root DIR] [--encoder NAME] [--yes]``."""
    parser = argparse.ArgumentParser(prog="crabzoo cache", description="Inspect or clear the feature cache.")
    sub = parser.add_subparsers(dest="action", required=True)
    p_info = sub.add_parser("info", help="entries and size per encoder")
    p_info.add_argument("--root", default=str(DEFAULT_ROOT), help="cache directory (default: %(default)s)")
    p_info.add_argument("--json", action="store_true", help="print JSON")
    p_clear = sub.add_parser("clear", help="delete cached features")
    p_clear.add_argument("--root", default=str(DEFAULT_ROOT), help="cache directory (default: %(default)s)")
    p_clear.add_argument("--encoder", default=None, help="only this encoder (class name or <Class>-<fingerprint>)")
    p_clear.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    args = parser.parse_args(argv)
    cache = FeatureCache(args.root)
    if args.action == "info":
        info = cache.info()
        if args.json:
            print(json.dumps(info, indent=2))
            return
        print(f"cache {info['root']}: {info['entries']} entries, {_human(info['bytes'])}")
        for name, e in info["encoders"].items():
            print(f"  {name:<40} {e['entries']:>8} entries  {_human(e['bytes']):>10}")
        return
    if not Path(args.root).is_dir():
        raise CrabzooError(f"no feature cache at {args.root} (give the directory with --root)")
    if not args.yes:
        what = f"the {args.encoder} entries" if args.encoder else "every entry"
        answer = input(f"delete {what} of the feature cache at {args.root}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return
    removed = cache.clear(args.encoder)
    print(f"removed {removed} entries from {args.root}")
