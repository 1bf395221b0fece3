"""Captioning scorers against hand-computed values."""

from __future__ import annotations

import math

import pytest

from crabzoo.errors import CrabzooError
from crabzoo.metrics import CaptionMetric, bleu, cider_d, ptb_tokenize, rouge_l


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


def test_meteor_flag_raises():
    with pytest.raises(CrabzooError):
        CaptionMetric(meteor=True)
