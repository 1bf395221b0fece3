"""Paired bootstrap confidence interval of a transfer Δ.

Both runs of a pair (single-task and multi-task) are scored on the same test samples. A resample draws ``n``
sample indices with replacement once and scores *both* runs on those same indices, so the sample-to-sample
difficulty cancels out of Δ and the interval reflects only how the two models differ. The metric is recomputed
on every resample (any metric works, not only means of per-sample scores), and the interval is the percentile
interval of the resampled Δ.

:func:`paired_bootstrap_terms` is the fast form for metrics whose primary score is a ratio of sums over units
(:class:`~crabzoo.metrics.base.PrimaryTerms`: accuracies, AVE's pooled segments, a mean over videos): a
resample is a vector of draw counts per unit, and its score is ``counts @ num / counts @ den``. It draws the
same indices as :func:`paired_bootstrap_seeds` with the same seed, so both give the same interval for the same
mean metric. Where units are videos (several frames each), whole videos are drawn: a cluster bootstrap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from crabzoo.errors import CrabzooError


def paired_bootstrap_seeds(
    pairs: Sequence[tuple[Sequence[Any], Sequence[Any]]],
    metric_fn: Callable[[list[Any]], float],
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    higher_is_better: bool = True,
) -> tuple[float, float, float]:
    """Δ averaged over seeds with its paired percentile bootstrap interval.

    Every pair is ``(single, multi)``: the per-sample records of the two runs of one seed, aligned (record ``i``
    of both is the same test sample). All pairs must share the same test set, so each resample draws one set of
    indices and applies it to every pair; the resampled Δ is the mean over pairs.

    Args:
        pairs: ``(single, multi)`` per seed, each a sequence of per-sample records of the same length ``n``.
        metric_fn: Scores a list of per-sample records (e.g. recomputes the task's metric on them).
        n_resamples: Number of bootstrap resamples.
        seed: Seed of the index generator (numpy ``default_rng``).
        alpha: ``1 - alpha`` is the coverage of the interval.
        higher_is_better: ``False`` flips the sign, so Δ > 0 always means the multi-task run is better.

    Returns:
        ``(delta, lo, hi)``: Δ on the full test set and the ``alpha/2`` and ``1 - alpha/2`` percentiles of the
        resampled Δ (numpy's linear interpolation).

    Raises:
        CrabzooError: No pairs, runs of different lengths, an empty test set, or a bad ``alpha``/``n_resamples``.
    """
    if not pairs:
        raise CrabzooError("paired_bootstrap: no (single, multi) pairs given; pass at least one")
    n = len(pairs[0][0])
    for single, multi in pairs:
        if len(single) != n or len(multi) != n:
            raise CrabzooError(
                f"paired_bootstrap: runs have {len(single)} and {len(multi)} samples, expected {n}; "
                "pair runs scored on the same test samples"
            )
    if n == 0:
        raise CrabzooError("paired_bootstrap: the test set is empty; nothing to resample")
    if not 0 < alpha < 1:
        raise CrabzooError(f"paired_bootstrap: alpha must be in (0, 1), not {alpha}")
    if n_resamples < 1:
        raise CrabzooError(f"paired_bootstrap: n_resamples must be at least 1, not {n_resamples}")
    sign = 1.0 if higher_is_better else -1.0

    def delta(index: np.ndarray | None) -> float:
        values = []
        for single, multi in pairs:
            if index is None:
                s, m = list(single), list(multi)
            else:
                s, m = [single[i] for i in index], [multi[i] for i in index]
            values.append(sign * (float(metric_fn(m)) - float(metric_fn(s))))
        return float(np.mean(values))

    rng = np.random.default_rng(seed)
    indices = rng.integers(0, n, size=(n_resamples, n))
    resampled = np.array([delta(index) for index in indices])
    lo, hi = np.quantile(resampled, [alpha / 2, 1 - alpha / 2])
    return delta(None), float(lo), float(hi)


def paired_bootstrap_terms(
    pairs: Sequence[tuple[Any, Any]],
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    higher_is_better: bool = True,
) -> tuple[float, float, float]:
    """Δ averaged over seeds with its paired percentile interval, from each run's :class:`PrimaryTerms`.

    Args:
        pairs: ``(single, multi)`` :class:`~crabzoo.metrics.base.PrimaryTerms` per seed, all over the same units
            (the same test samples, grouped the same way).
        n_resamples: Number of bootstrap resamples.
        seed: Seed of the index generator (numpy ``default_rng``).
        alpha: ``1 - alpha`` is the coverage of the interval.
        higher_is_better: ``False`` flips the sign, so Δ > 0 always means the multi-task run is better.

    Returns:
        ``(delta, lo, hi)`` as :func:`paired_bootstrap_seeds` returns them.

    Raises:
        CrabzooError: No pairs, runs over different units, no units, or a bad ``alpha``/``n_resamples``.
    """
    if not pairs:
        raise CrabzooError("paired_bootstrap: no (single, multi) pairs given; pass at least one")
    units = pairs[0][0].units
    for single, multi in pairs:
        if single.units != units or multi.units != units:
            raise CrabzooError(
                "paired_bootstrap: the runs' scoring units differ; pair runs scored on the same test samples"
            )
    if not units:
        raise CrabzooError("paired_bootstrap: the test set is empty; nothing to resample")
    if not 0 < alpha < 1:
        raise CrabzooError(f"paired_bootstrap: alpha must be in (0, 1), not {alpha}")
    if n_resamples < 1:
        raise CrabzooError(f"paired_bootstrap: n_resamples must be at least 1, not {n_resamples}")
    sign = 1.0 if higher_is_better else -1.0
    n = len(units)
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, n, size=(n_resamples, n))
    counts = np.zeros((n_resamples, n))
    np.add.at(counts, (np.arange(n_resamples)[:, None], indices), 1.0)

    def ratio(weights: np.ndarray, terms: Any) -> np.ndarray:
        num, den = weights @ terms.num, weights @ terms.den
        return np.divide(num, den, out=np.zeros_like(num), where=den != 0)

    full = np.ones((1, n))
    delta = np.mean([sign * (ratio(full, m) - ratio(full, s)) for s, m in pairs], axis=0)
    resampled = np.mean([sign * (ratio(counts, m) - ratio(counts, s)) for s, m in pairs], axis=0)
    lo, hi = np.quantile(resampled, [alpha / 2, 1 - alpha / 2])
    return float(delta[0]), float(lo), float(hi)


def paired_bootstrap(
    single: Sequence[Any],
    multi: Sequence[Any],
    metric_fn: Callable[[list[Any]], float],
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    higher_is_better: bool = True,
) -> tuple[float, float, float]:
    """``(Δ, lo, hi)`` of one (single, multi) pair; see :func:`paired_bootstrap_seeds`."""
    return paired_bootstrap_seeds([(single, multi)], metric_fn, n_resamples, seed, alpha, higher_is_better)


def mean_metric(records: list[Any]) -> float:
    """The mean of per-sample scores (e.g. 0/1 correctness gives accuracy)."""
    return float(np.mean(np.asarray(records, dtype=np.float64)))
