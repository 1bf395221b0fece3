"""Paired bootstrap CI of a transfer Δ: exact cases and an independent numpy computation."""

from __future__ import annotations

import numpy as np
import pytest

from crabzoo.errors import CrabzooError
from crabzoo.transfer.bootstrap import mean_metric, paired_bootstrap, paired_bootstrap_seeds


def test_identical_runs_give_zero_delta_and_zero_interval() -> None:
    run = [1, 0, 1, 1, 0, 0, 1]
    assert paired_bootstrap(run, list(run), mean_metric, n_resamples=200) == (0.0, 0.0, 0.0)


def test_right_everywhere_versus_wrong_everywhere_is_exactly_one() -> None:
    single, multi = [0] * 5, [1] * 5
    assert paired_bootstrap(single, multi, mean_metric, n_resamples=200) == (1.0, 1.0, 1.0)
    # lower-is-better flips the sign
    assert paired_bootstrap(single, multi, mean_metric, n_resamples=50, higher_is_better=False) == (-1.0, -1.0, -1.0)


def test_small_case_matches_an_independent_numpy_computation() -> None:
    single = np.array([1, 0, 0, 1, 0, 1, 0, 0])
    multi = np.array([1, 1, 0, 1, 1, 1, 0, 1])
    delta, lo, hi = paired_bootstrap(list(single), list(multi), mean_metric, n_resamples=500, seed=3, alpha=0.1)
    assert delta == pytest.approx(6 / 8 - 3 / 8)
    idx = np.random.default_rng(3).integers(0, 8, size=(500, 8))
    d = multi[idx].mean(axis=1) - single[idx].mean(axis=1)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(d, [0.05, 0.95])))
    # paired: multi is never worse on a sample, so no resample can have Δ < 0
    assert 0.0 <= lo < delta < hi <= 1.0


def test_seeds_share_one_set_of_indices_and_average() -> None:
    s0, m0 = [0, 0, 1, 1], [1, 0, 1, 1]
    s1, m1 = [0, 1, 1, 0], [0, 1, 1, 1]
    delta, lo, hi = paired_bootstrap_seeds([(s0, m0), (s1, m1)], mean_metric, n_resamples=300, seed=1)
    assert delta == pytest.approx(0.25)
    idx = np.random.default_rng(1).integers(0, 4, size=(300, 4))
    a = lambda x: np.asarray(x)[idx].mean(axis=1)  # noqa: E731
    d = ((a(m0) - a(s0)) + (a(m1) - a(s1))) / 2
    assert (lo, hi) == pytest.approx(tuple(np.quantile(d, [0.025, 0.975])))


def test_any_metric_is_recomputed_on_resamples() -> None:
    # a non-mean metric (max) on records: the interval is made of recomputed values
    single, multi = [0.1, 0.2, 0.3], [0.1, 0.2, 0.9]
    delta, lo, hi = paired_bootstrap(single, multi, lambda r: max(r), n_resamples=400, seed=0)
    assert delta == pytest.approx(0.6)
    assert lo == pytest.approx(0.0) and hi == pytest.approx(0.6)


def test_mistakes_raise_crabzoo_error() -> None:
    with pytest.raises(CrabzooError, match="same test samples"):
        paired_bootstrap([1, 0], [1], mean_metric)
    with pytest.raises(CrabzooError, match="empty"):
        paired_bootstrap([], [], mean_metric)
    with pytest.raises(CrabzooError, match="alpha"):
        paired_bootstrap([1], [1], mean_metric, alpha=1.5)
