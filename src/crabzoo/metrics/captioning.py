"""Captioning: CIDEr-D, BLEU-1..4 and ROUGE-L as the COCO caption evaluation computes them, in pure Python.

Reference: the COCO caption evaluation code (tylin/coco-caption, packaged as ``pycocoevalcap``):
``cider/cider_scorer.py`` (``CiderScorer.compute_cider``), ``bleu/bleu_scorer.py``
(``BleuScorer.compute_score(option="closest")``), ``rouge/rouge.py`` (``Rouge.calc_score``). The functional
scorers take what those classes take: ``gts`` and ``res`` dicts ``id -> list of tokenised strings`` (``res``
holds one hypothesis per id) and return ``(corpus score, per-item scores)`` in the order of ``gts``' keys.

* CIDEr-D: n-grams n = 1..4 of whitespace tokens; document frequency = number of items whose *references*
  contain the n-gram (computed on the evaluated set itself); tf-idf weight ``tf * (log(#items) - log(max(1,
  df)))``; per n the clipped cosine ``sum(min(h, r) * r) / (|h| |r|)`` (0 when a norm is 0 -- the Python 3
  package's guard; the original Python 2 code returns NaN there) times the length penalty
  ``exp(-(len_h - len_r)^2 / (2 * 6^2))`` where the "length" is the number of *bigrams*, as the reference
  counts it; mean over n, mean over references, times 10; corpus value = mean over items. A one-item corpus
  scores 0 (every idf is log 1 - log 1 = 0).
* BLEU-n: corpus level: clipped n-gram matches (max count over references) and hypothesis n-gram counts summed
  over items; reference length per item is the reference length closest to the hypothesis length (ties -> the
  shorter); brevity penalty ``exp(1 - r / c)`` when ``c < r``, with the reference's smoothing constants
  (1e-15 added to numerators, 1e-9 to denominators). Per-item BLEU uses the same formula per sentence.
* ROUGE-L: per item, LCS with every reference (tokens from ``split(" ")``); precision and recall are maxima
  over references taken separately; F = (1 + 1.2^2) P R / (R + 1.2^2 P); corpus value = mean over items.

Tokenisation: the reference tokenises with the Stanford PTBTokenizer (Java) and drops punctuation tokens.
:func:`ptb_tokenize` is a pure-Python approximation of it (lower-case, split punctuation and clitics such as
``n't`` / ``'s``, drop the same punctuation tokens, keep bracket tokens ``-lrb-`` etc. as the lower-cased Java
output does); it matches the Java tokenizer on ordinary captions, not on every corner case.

METEOR (``CaptionMetric(meteor=True)``, :class:`MeteorScorer`) runs the Java METEOR 1.5 jar that
``pycocoevalcap`` ships (``meteor/meteor-1.5.jar`` with ``meteor/data/paraphrase-en.gz``) exactly as the COCO
evaluation's ``meteor/meteor.py`` does: ``java -jar -Xmx2G meteor-1.5.jar - - -stdio -l en -norm`` started in the
jar's folder; one ``SCORE ||| ref 1 ||| ... ||| ref n ||| hypothesis`` line per item, each answered by a line of
sufficient statistics; then one ``EVAL ||| stats 1 ||| ... ||| stats N`` line, answered by the N per-item scores and
the corpus score. The corpus score is the jar's aggregate over the pooled statistics, not the mean of the per-item
scores. It needs a Java runtime (``java`` on ``PATH``) and ``pip install "crabzoo[meteor]"``.
"""

from __future__ import annotations

import importlib.util
import math
import re
import shutil
import subprocess
import tempfile
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np
from torch import Tensor

from crabzoo.errors import CrabzooError
from crabzoo.metrics.base import BenchmarkMetric, PrimaryTerms, as_float, check_lengths, field, is_unparsed

PUNCTUATION: frozenset[str] = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
"""Tokens the COCO tokenizer drops (compared case-sensitively, so lower-cased brackets survive)."""

_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "{": "-lcb-", "}": "-rcb-", "[": "-lsb-", "]": "-rsb-"}
_CLITICS = frozenset(["n't", "'s", "'re", "'ve", "'ll", "'d", "'m"])
_CLITIC = re.compile(r"(?<=\w)(n't|'s|'re|'ve|'ll|'d|'m)\b")
_SEP_PUNCT = re.compile(r"(\.\.\.|--|[!?;\"`]|,(?!\d)|(?<!\d),|:(?!\d)|(?<!\d):)")

Refs = Mapping[Any, Sequence[str]]


def ptb_tokenize(text: str) -> str:
    """Lower-cased, space-joined tokens with punctuation tokens removed (approximates the COCO PTBTokenizer)."""
    text = str(text).lower().replace("\n", " ")
    for char, token in _BRACKETS.items():
        text = text.replace(char, f" {token} ")
    text = _SEP_PUNCT.sub(r" \1 ", text)
    text = _CLITIC.sub(r" \1", text)
    tokens: list[str] = []
    for tok in text.split():
        tail = []
        while len(tok) > 1 and tok[-1] in ".'" and tok not in _CLITICS and tok.count(".") <= 1:
            tail.insert(0, tok[-1])
            tok = tok[:-1]
        if len(tok) > 1 and tok[0] == "'" and tok not in _CLITICS:
            tokens.append("'")
            tok = tok[1:]
        tokens.extend([tok, *tail])
    return " ".join(t for t in tokens if t not in PUNCTUATION and t != '"')


def _ngrams(text: str, n: int = 4) -> Counter:
    words = text.split()
    return Counter(tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def _check(gts: Refs, res: Refs) -> list[Any]:
    if set(gts) != set(res):
        raise CrabzooError("caption scorer: gts and res must have the same ids")
    for key in gts:
        if len(res[key]) != 1 or len(gts[key]) < 1:
            raise CrabzooError(f"caption scorer: id {key!r} needs exactly one hypothesis and at least one reference")
    return list(gts)


# ---------------------------------------------------------------------- CIDEr-D
def cider_d(gts: Refs, res: Refs, n: int = 4, sigma: float = 6.0) -> tuple[float, np.ndarray]:
    """CIDEr-D of tokenised captions: ``(corpus mean, per-item scores)``."""
    ids = _check(gts, res)
    if not ids:
        return 0.0, np.zeros(0)
    refs = [[_ngrams(r, n) for r in gts[i]] for i in ids]
    hyps = [_ngrams(res[i][0], n) for i in ids]
    df: Counter = Counter()
    for item_refs in refs:
        df.update({g for counts in item_refs for g in counts})
    log_items = np.log(float(len(ids)))

    def vectorise(counts: Counter) -> tuple[list[dict], list[float], int]:
        vec: list[dict] = [{} for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            weight = float(tf) * (log_items - np.log(max(1.0, df[gram])))
            vec[k][gram] = weight
            norm[k] += weight**2
            if k == 1:
                length += tf
        return vec, [float(np.sqrt(x)) for x in norm], length

    scores = []
    for hyp, item_refs in zip(hyps, refs):
        vh, nh, lh = vectorise(hyp)
        total = np.zeros(n)
        for ref in item_refs:
            vr, nr, lr = vectorise(ref)
            penalty = np.e ** (-(float(lh - lr) ** 2) / (2 * sigma**2))
            val = np.zeros(n)
            for k in range(n):
                for gram, weight in vh[k].items():
                    ref_weight = vr[k].get(gram, 0.0)
                    val[k] += min(weight, ref_weight) * ref_weight
                if nh[k] != 0 and nr[k] != 0:
                    val[k] /= nh[k] * nr[k]
                val[k] *= penalty
            total += val
        scores.append(float(np.mean(total)) / len(item_refs) * 10.0)
    arr = np.array(scores)
    return float(np.mean(arr)), arr


# ---------------------------------------------------------------------- BLEU
def bleu(gts: Refs, res: Refs, n: int = 4) -> tuple[list[float], list[list[float]]]:
    """Corpus BLEU-1..n (closest reference length) and per-item BLEU-1..n, as ``Bleu(4).compute_score``."""
    ids = _check(gts, res)
    tiny, small = 1e-15, 1e-9
    total_correct, total_guess = [0] * n, [0] * n
    total_test = total_ref = 0
    per_item: list[list[float]] = [[] for _ in range(n)]
    for i in ids:
        hyp = res[i][0]
        test_len = len(hyp.split())
        max_counts: dict = {}
        ref_lens = []
        for ref in gts[i]:
            ref_lens.append(len(ref.split()))
            for gram, count in _ngrams(ref, n).items():
                max_counts[gram] = max(max_counts.get(gram, 0), count)
        ref_len = min((abs(length - test_len), length) for length in ref_lens)[1]
        guess = [max(0, test_len - k + 1) for k in range(1, n + 1)]
        correct = [0] * n
        for gram, count in _ngrams(hyp, n).items():
            correct[len(gram) - 1] += min(max_counts.get(gram, 0), count)
        total_test += test_len
        total_ref += ref_len
        for k in range(n):
            total_correct[k] += correct[k]
            total_guess[k] += guess[k]
        score = 1.0
        for k in range(n):
            score *= (float(correct[k]) + tiny) / (float(guess[k]) + small)
            per_item[k].append(score ** (1.0 / (k + 1)))
        ratio = (test_len + tiny) / (ref_len + small)
        if ratio < 1:
            for k in range(n):
                per_item[k][-1] *= math.exp(1 - 1 / ratio)
    corpus, score = [], 1.0
    for k in range(n):
        score *= float(total_correct[k] + tiny) / (total_guess[k] + small)
        corpus.append(score ** (1.0 / (k + 1)))
    ratio = (total_test + tiny) / (total_ref + small)
    if ratio < 1:
        corpus = [b * math.exp(1 - 1 / ratio) for b in corpus]
    return corpus, per_item


# ---------------------------------------------------------------------- ROUGE-L
def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(gts: Refs, res: Refs, beta: float = 1.2) -> tuple[float, np.ndarray]:
    """ROUGE-L F (beta 1.2, max precision and max recall over references): ``(mean, per-item)``."""
    ids = _check(gts, res)
    scores = []
    for i in ids:
        cand = res[i][0].split(" ")
        precisions, recalls = [], []
        for ref in gts[i]:
            tokens = ref.split(" ")
            lcs = _lcs(tokens, cand)
            precisions.append(lcs / float(len(cand)))
            recalls.append(lcs / float(len(tokens)))
        p, r = max(precisions), max(recalls)
        scores.append(((1 + beta**2) * p * r) / float(r + beta**2 * p) if p != 0 and r != 0 else 0.0)
    arr = np.array(scores)
    return (float(np.mean(arr)) if len(arr) else 0.0), arr


# ---------------------------------------------------------------------- METEOR
METEOR_JAR = "meteor-1.5.jar"
"""File name of the METEOR 1.5 jar inside ``pycocoevalcap/meteor/``."""

METEOR_TIMEOUT = 600.0
"""Default limit in seconds for one scoring call, JVM start included (loading the paraphrase table takes seconds)."""

_METEOR_FIX = 'pip install "crabzoo[meteor]" (it installs pycocoevalcap, which ships the jar) or pass meteor_jar'


def find_java() -> str:
    """Path of the ``java`` executable on ``PATH``.

    Raises:
        CrabzooError: no ``java`` on ``PATH``.
    """
    java = shutil.which("java")
    if java is None:
        raise CrabzooError(
            "METEOR needs a Java runtime but no `java` is on PATH; install a JRE (Java 8 or newer, e.g. "
            "`apt-get install default-jre-headless`) or leave meteor off"
        )
    return java


def find_meteor_jar(jar: str | Path | None = None) -> Path:
    """The METEOR 1.5 jar: ``jar`` itself, or the one inside the installed ``pycocoevalcap`` package.

    The English paraphrase table must sit next to it as ``data/paraphrase-en.gz`` (the package's layout).

    Raises:
        CrabzooError: the jar or its paraphrase table is missing.
    """
    if jar is None:
        spec = importlib.util.find_spec("pycocoevalcap")
        folders = list(spec.submodule_search_locations or []) if spec is not None else []
        if not folders:
            raise CrabzooError(f"METEOR needs the METEOR 1.5 jar, which comes with pycocoevalcap: {_METEOR_FIX}")
        jar = Path(folders[0]) / "meteor" / METEOR_JAR
    jar = Path(jar)
    if not jar.is_file():
        raise CrabzooError(f"METEOR jar {jar} not found: {_METEOR_FIX}")
    table = jar.parent / "data" / "paraphrase-en.gz"
    if not table.is_file():
        raise CrabzooError(f"METEOR paraphrase table {table} not found: {_METEOR_FIX}")
    return jar


def _meteor_text(text: str) -> str:
    # the "|||" field separator and line breaks would corrupt the line protocol
    return " ".join(str(text).replace("|||", "").split())


class MeteorScorer:
    """A METEOR 1.5 process in the COCO caption evaluation's configuration (``-l en -norm``, stdio mode).

    The JVM starts on the first :meth:`score` call (or :meth:`start`) and serves later calls until :meth:`close`;
    use it as a context manager. A call that fails or runs past ``timeout`` kills the process (the next call starts
    a fresh one) and raises :class:`CrabzooError`. Calls are serialised by a lock.

    Args:
        jar: Path of ``meteor-1.5.jar`` (default: the one in the installed ``pycocoevalcap``).
        java: The ``java`` executable (default: the one on ``PATH``).
        memory: JVM heap limit (``-Xmx``), ``"2G"`` as in the COCO evaluation.

    Raises:
        CrabzooError: no Java runtime, or no jar / paraphrase table.
    """

    def __init__(self, jar: str | Path | None = None, java: str | None = None, memory: str = "2G") -> None:
        self.jar = find_meteor_jar(jar)
        self.java = java or find_java()
        self.memory = memory
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def command(self) -> list[str]:
        """The command line of the METEOR process."""
        return [self.java, "-jar", f"-Xmx{self.memory}", str(self.jar), "-", "-", "-stdio", "-l", "en", "-norm"]

    def start(self) -> None:
        """Start the process now (it loads the paraphrase table while the caller does other work)."""
        with self._lock:
            self._ensure_started()

    def _ensure_started(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._stop()
        self._stderr = tempfile.TemporaryFile()  # a file, not a pipe: an unread pipe could fill up and block
        self._proc = subprocess.Popen(
            self.command, cwd=self.jar.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr
        )
        return self._proc

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()  # end of input: the jar exits by itself
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
        return f"; java said: {' | '.join(lines[-3:])}" if lines else ""

    def close(self) -> None:
        """End the process (idempotent)."""
        with self._lock:
            self._stop()

    def __enter__(self) -> MeteorScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._stop()
        except Exception:  # noqa: BLE001 -- interpreter shutdown: nothing left to report to
            pass

    def score(self, gts: Refs, res: Refs, timeout: float = METEOR_TIMEOUT) -> tuple[float, np.ndarray]:
        """METEOR of ``res`` against ``gts`` (the COCO ``compute_score`` inputs): ``(corpus, per-item scores)``.

        Raises:
            CrabzooError: the process failed, answered something unreadable, or ran past ``timeout`` seconds.
        """
        ids = _check(gts, res)
        if not ids:
            return 0.0, np.zeros(0)
        with self._lock:
            proc = self._ensure_started()
            expired = threading.Event()

            def kill() -> None:
                expired.set()
                proc.kill()

            timer = threading.Timer(timeout, kill)
            timer.daemon = True
            timer.start()
            try:
                stats = []
                for i in ids:
                    fields = ["SCORE", *(_meteor_text(r) for r in gts[i]), _meteor_text(res[i][0])]
                    stats.append(self._ask(proc, " ||| ".join(fields)))
                self._send(proc, " ||| ".join(["EVAL", *stats]))
                per_item = [float(self._read(proc)) for _ in ids]
                corpus = float(self._read(proc))
            except (OSError, ValueError) as err:
                reason = f"ran past {timeout:g} s" if expired.is_set() else f"failed ({err})"
                tail = self._stderr_tail()
                self._stop()
                raise CrabzooError(f"METEOR ({' '.join(self.command)}) {reason}{tail}") from err
            finally:
                timer.cancel()
        return corpus, np.array(per_item)

    @staticmethod
    def _send(proc: subprocess.Popen[bytes], line: str) -> None:
        assert proc.stdin is not None
        proc.stdin.write(f"{line}\n".encode())
        proc.stdin.flush()

    @staticmethod
    def _read(proc: subprocess.Popen[bytes]) -> str:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise OSError("the process ended before answering")
        return line.decode("utf-8").strip()

    def _ask(self, proc: subprocess.Popen[bytes], line: str) -> str:
        self._send(proc, line)
        return self._read(proc)


def meteor(gts: Refs, res: Refs, jar: str | Path | None = None, timeout: float = METEOR_TIMEOUT,
           scorer: MeteorScorer | None = None) -> tuple[float, np.ndarray]:
    """METEOR 1.5 as the COCO evaluation computes it: ``(corpus score, per-item scores)``.

    Uses ``scorer`` when given (left running), else starts a :class:`MeteorScorer` for this call and closes it.
    """
    if scorer is not None:
        return scorer.score(gts, res, timeout)
    with MeteorScorer(jar) as own:
        return own.score(gts, res, timeout)


class CaptionMetric(BenchmarkMetric):
    """CIDEr-D, BLEU-1..4 and ROUGE-L over the evaluated set (keys ``cider_d``, ``bleu_1`` .. ``bleu_4``,
    ``rouge_l``), plus ``meteor`` when ``meteor=True``.

    ``update(preds, targets)``: predictions are captions (``str``, dict with ``caption``) or ``None`` (scored
    as an empty caption); targets are a reference caption, a list of them, or a dict with ``captions`` /
    ``caption``. Captions are tokenised with :func:`ptb_tokenize` unless ``tokenize=False``. Every score,
    METEOR included, is computed in :meth:`compute` from the accumulated (caption, references) records, so the
    state syncs across processes like the other metrics'.

    Args:
        tokenize: Apply :func:`ptb_tokenize` to predictions and references.
        meteor: Also report METEOR 1.5 (needs Java and ``pip install "crabzoo[meteor]"``); each ``compute()``
            starts the jar (seconds: it loads a paraphrase table) and closes it afterwards.
        meteor_jar: Path of ``meteor-1.5.jar`` (default: the one in the installed ``pycocoevalcap``).
        meteor_timeout: Limit in seconds for METEOR in one ``compute()``, JVM start included.

    Raises:
        CrabzooError: ``meteor=True`` without a Java runtime or without the jar.
    """

    primary = "cider_d"
    directions: ClassVar[dict[str, bool]] = {
        "cider_d": True, "bleu_1": True, "bleu_2": True, "bleu_3": True, "bleu_4": True, "rouge_l": True,
    }  # fmt: skip
    """Directions of the keys always reported (``meteor`` joins them on instances that compute it)."""
    reference: ClassVar[str] = "tylin/coco-caption pycocoevalcap cider/, bleu/, rouge/ scorers and meteor/meteor.py"

    def __init__(self, tokenize: bool = True, meteor: bool = False, meteor_jar: str | Path | None = None,
                 meteor_timeout: float = METEOR_TIMEOUT, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tokenize = tokenize
        self.meteor = meteor
        self.meteor_jar = find_meteor_jar(meteor_jar) if meteor else None
        self.meteor_timeout = meteor_timeout
        if meteor:
            find_java()  # fail now, not after a whole evaluation

    @property
    def higher_is_better(self) -> dict[str, bool]:  # type: ignore[override]
        """Direction of every reported key, ``meteor`` included when it is computed."""
        return {**self.directions, "meteor": True} if self.meteor else dict(self.directions)

    def _text(self, value: str) -> str:
        return ptb_tokenize(value) if self.tokenize else str(value)

    def update(self, preds: Sequence[Any], targets: Sequence[Any]) -> None:
        """Add a batch of generated captions and their references."""
        check_lengths(preds, targets, "CaptionMetric")
        records = []
        for p, t in zip(preds, targets):
            hyp = "" if is_unparsed(p) else field(p, ("caption", "answer"), "CaptionMetric")
            hyp = "" if is_unparsed(hyp) else self._text(hyp)
            refs = field(t, ("captions", "caption", "answer"), "CaptionMetric")
            refs = [refs] if isinstance(refs, str) else list(refs)
            if not refs:
                raise CrabzooError("CaptionMetric: a target has no reference caption")
            records.append([hyp, [self._text(r) for r in refs]])
        self._count(preds)
        self._push_records(records)

    def compute(self) -> dict[str, Tensor]:
        """Corpus scores plus ``n_total`` / ``n_parsed`` (CIDEr-D on its x10 scale, the others in [0, 1]).

        Raises:
            CrabzooError: METEOR is on and the jar failed or ran past ``meteor_timeout``.
        """
        records = self._all_records()
        gts = {i: r[1] for i, r in enumerate(records)}
        res = {i: [r[0]] for i, r in enumerate(records)}
        keys = [k for k in self.higher_is_better if k != "meteor" or self.meteor]
        if not records:
            return {**{key: as_float(0.0) for key in keys}, **self._counts()}
        out: dict[str, Tensor] = {"cider_d": as_float(cider_d(gts, res)[0])}
        b = bleu(gts, res)[0]
        for k in range(4):
            out[f"bleu_{k + 1}"] = as_float(b[k])
        out["rouge_l"] = as_float(rouge_l(gts, res)[0])
        if self.meteor:
            out["meteor"] = as_float(meteor(gts, res, jar=self.meteor_jar, timeout=self.meteor_timeout)[0])
        return {**out, **self._counts()}

    def primary_terms(self) -> PrimaryTerms | None:
        """Per-caption CIDEr-D with the document frequencies of all captions held (not exact on a resample).

        The corpus CIDEr-D is the mean of these; a resample keeps the full set's document frequencies, where
        recomputing would take the resample's (duplicated captions count their n-grams again).
        """
        records = self._all_records()
        if not records:
            return None
        per_item = cider_d({i: r[1] for i, r in enumerate(records)}, {i: [r[0]] for i, r in enumerate(records)})[1]
        return PrimaryTerms.per_sample(per_item, exact=False)
