"""Small tokenizers trained locally on a dataset's own text, cached on disk.

Tiny test and CPU models need a tokenizer, and no hub is reachable. :func:`train_tokenizer` trains a
byte-level BPE (the ``tokenizers`` library) on an iterable of strings and saves it as a Hugging Face tokenizer
directory in a cache keyed by a hash of the corpus and the settings, so the second call with the same corpus
loads it from disk.

Cache location: ``$CRABZOO_CACHE/tokenizers`` when the environment variable ``CRABZOO_CACHE`` is set, else
``~/.cache/crabzoo/tokenizers``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crabzoo.errors import CrabzooError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS: tuple[str, ...] = ("<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>")
"""Special tokens every locally trained tokenizer has (bos, eos, pad and the two ChatML turn markers)."""

TOKENIZER_FORMAT_VERSION = 1
"""Bumped whenever the training recipe changes, so stale cache entries are not reused."""


def cache_root() -> Path:
    """Directory holding cached tokenizers (``$CRABZOO_CACHE/tokenizers`` or ``~/.cache/crabzoo/tokenizers``)."""
    base = os.environ.get("CRABZOO_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "crabzoo"
    return root / "tokenizers"


def corpus_from_directory(root: str | Path, split: str = "train") -> list[str]:
    """Every string value of every record of ``<root>/*/<split>.json`` (the AV-UIE layout).

    Records are JSON arrays of dicts; nested lists and dicts are walked, so instructions, targets, questions
    and options all end up in the corpus; media file names (``*.mp4``, ``*.wav``, ``*.jpg``, ...) are skipped.
    Files are read in sorted order so the corpus (and its hash) is stable.

    Args:
        root: A data root with one folder per task (AV-UIE v2 or AVSynth).
        split: Annotation file stem to read.

    Raises:
        CrabzooError: When no ``*/<split>.json`` exists under ``root``.
    """
    root = Path(root)
    files = sorted(root.glob(f"*/{split}.json"))
    if not files:
        raise CrabzooError(f"tokenizer corpus: no '*/{split}.json' under {root}; point tokenizer_corpus at a data root")
    texts: list[str] = []
    for file in files:
        with open(file, encoding="utf-8") as fh:
            records = json.load(fh)
        for record in records if isinstance(records, list) else [records]:
            texts.extend(_strings(record))
    return texts


MEDIA_SUFFIXES: tuple[str, ...] = (".mp4", ".avi", ".mkv", ".webm", ".wav", ".mp3", ".flac", ".jpg", ".jpeg", ".png")
"""String values ending in these (media file names) are left out of the corpus."""


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        if value and not value.lower().endswith(MEDIA_SUFFIXES):
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def corpus_key(texts: Iterable[str], vocab_size: int, min_frequency: int) -> tuple[str, list[str]]:
    """Hash of the corpus and the training settings, and the corpus materialised as a list."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"v": TOKENIZER_FORMAT_VERSION, "vocab": vocab_size, "min_freq": min_frequency,
                              "special": SPECIAL_TOKENS}).encode())
    materialised: list[str] = []
    for text in texts:
        materialised.append(text)
        encoded = text.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return digest.hexdigest()[:24], materialised


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 1024,
    cache_dir: str | Path | None = None,
    min_frequency: int = 2,
) -> PreTrainedTokenizerFast:
    """Train (or load from the cache) a byte-level BPE tokenizer on ``texts``.

    The result round-trips any text (byte-level: no unknown token), has ``<s>`` as bos, ``</s>`` as eos and
    ``<pad>`` as pad, plus the ChatML markers ``<|im_start|>``/``<|im_end|>``. Placeholder tokens are added
    later by the backbone.

    Args:
        texts: The training corpus.
        vocab_size: Target vocabulary size (the 256 byte symbols and the special tokens included).
        cache_dir: Cache directory (defaults to :func:`cache_root`).
        min_frequency: Minimum pair frequency for a BPE merge.

    Returns:
        A ``transformers.PreTrainedTokenizerFast`` loaded from its cache directory.
    """
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(_train_cached(texts, vocab_size, cache_dir, min_frequency)))


def _train_cached(texts: Iterable[str], vocab_size: int, cache_dir: str | Path | None, min_frequency: int) -> Path:
    """Train into the cache unless the entry exists; return the entry's directory."""
    key, corpus = corpus_key(texts, vocab_size, min_frequency)
    if not corpus:
        raise CrabzooError("train_tokenizer: the corpus is empty; give it the dataset's instructions and targets")
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    target = root / f"bpe-{vocab_size}-{key}"
    if not (target / "tokenizer.json").is_file():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
        try:
            _train(corpus, vocab_size, min_frequency).save_pretrained(str(tmp))
            try:
                os.replace(tmp, target)
            except OSError:  # another process finished first: keep its copy
                if not (target / "tokenizer.json").is_file():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def _train(corpus: list[str], vocab_size: int, min_frequency: int) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        clean_up_tokenization_spaces=False,
    )


AVSYNTH_CORPUS_CLIPS = 60
"""Clips AVSynth synthesises (then deletes) to get its text when no data root is given."""


def avsynth_corpus(corpus_dir: str | Path | None = None) -> list[str]:
    """The AVSynth text corpus.

    Uses ``corpus_dir`` (a data root written by AVSynth, or any AV-UIE root) when given. Otherwise, when the
    AVSynth package provides ``crabzoo.data.avsynth.corpus_texts()``, its texts; else it synthesises a small
    AVSynth dataset (:data:`AVSYNTH_CORPUS_CLIPS` clips, seed 0) in a temporary directory and reads its
    ``*/train.json`` records.
    """
    if corpus_dir is not None:
        return corpus_from_directory(corpus_dir)
    from crabzoo.data import avsynth

    texts_fn = getattr(avsynth, "corpus_texts", None)
    if texts_fn is not None:
        return list(texts_fn())
    with tempfile.TemporaryDirectory(prefix="crabzoo-avsynth-text-") as tmp:
        manifest = avsynth.synthesize(tmp, clips=AVSYNTH_CORPUS_CLIPS, seed=0)
        return corpus_from_directory(manifest.get("root", tmp))


def train_avsynth_tokenizer(vocab_size: int = 1024, corpus_dir: str | Path | None = None) -> PreTrainedTokenizerFast:
    """A tokenizer trained on the AVSynth text (see :func:`avsynth_corpus`), cached.

    Without ``corpus_dir`` the synthesised corpus is deterministic, so an alias file in the cache
    (``avsynth-v<writer version>-<clips>-<vocab>.txt``) names the trained directory and later calls skip the
    synthesis altogether.
    """
    from transformers import PreTrainedTokenizerFast

    if corpus_dir is not None:
        return train_tokenizer(avsynth_corpus(corpus_dir), vocab_size=vocab_size)
    from crabzoo.data.avsynth import writer

    root = cache_root()
    alias = root / f"avsynth-v{getattr(writer, 'VERSION', 0)}-{AVSYNTH_CORPUS_CLIPS}-{vocab_size}.txt"
    if alias.is_file():
        target = root / alias.read_text().strip()
        if (target / "tokenizer.json").is_file():
            return PreTrainedTokenizerFast.from_pretrained(str(target))
    target = _train_cached(avsynth_corpus(None), vocab_size, root, 2)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".alias-")
    with os.fdopen(fd, "w") as fh:
        fh.write(target.name)
    os.replace(tmp, alias)
    return PreTrainedTokenizerFast.from_pretrained(str(target))
