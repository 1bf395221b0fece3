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


def test_per_sample_states_rebuild_the_task_metric() -> None:
    from crabzoo.metrics.classification import ClassificationMetric
    from crabzoo.transfer.samples import metric_samples, recompute

    metric = ClassificationMetric()
    metric.update(["dog", "cat", None, "dog"], ["dog", "dog", "cat", "dog"])
    samples = metric_samples(metric)
    assert samples is not None and len(samples) == 4
    assert float(metric.compute()["accuracy"]) == pytest.approx(0.5)
    fresh = ClassificationMetric()
    assert recompute(fresh, samples)["accuracy"] == pytest.approx(0.5)
    assert recompute(fresh, [samples[0], samples[0], samples[1]])["accuracy"] == pytest.approx(2 / 3)


def test_report_intervals_from_samples_files(tmp_path) -> None:
    import json
    from pathlib import Path

    from crabzoo.metrics.classification import ClassificationMetric
    from crabzoo.transfer.report import add_intervals, compute_deltas, shares
    from crabzoo.transfer.samples import metric_samples
    from crabzoo.transfer.study import Run

    truths = ["a", "b", "a", "b", "a", "b"]

    def run(regime: str, preds: list) -> Run:
        directory = Path(tmp_path) / regime
        metric = ClassificationMetric()
        metric.update(preds, truths)
        ids = [f"s{i}" for i in range(len(truths))]
        (directory / "version_0").mkdir(parents=True)
        payload = {"tasks": {"ks": {"ids": ids, "samples": metric_samples(metric)}}}
        (directory / "version_0" / "samples.json").write_text(json.dumps(payload))
        return Run("p", regime, ("ks",), 0, directory, ("crabzoo", "fit"))

    runs = [run("single", ["b", "a", "b", "a", "b", "a"]), run("lora", truths)]  # wrong everywhere vs right everywhere
    info = lambda task: ({"accuracy": True}, "accuracy")  # noqa: E731
    deltas = compute_deltas({("p", "ks", 0): {"accuracy": 0.0}}, {("p", "lora", "ks", 0): {"accuracy": 1.0}}, info)
    deltas = add_intervals(deltas, runs, "single", n_resamples=50)
    primary = next(d for d in deltas if d.primary)
    assert (primary.ci_lo, primary.ci_hi) == (1.0, 1.0)
    row = next(r for r in shares(deltas) if r["scope"] == "dataset")
    assert row["with_ci"] == 1 and row["positive_beyond_ci"] == 1 and row["negative_beyond_ci"] == 0
