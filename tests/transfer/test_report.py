"""Transfer deltas, noise bands and shares against hand-computed values."""

import json
import math

import pytest

from crabzoo.transfer.report import compute_deltas, markdown, shares

INFO = {
    "ks": ({"accuracy": True}, "accuracy"),
    "nulls": ({"S": False}, "S"),
    "ave": ({"accuracy": True, "f1": True}, "accuracy"),
}


def info(task):
    return INFO[task]


def test_delta_sign_mean_std_and_noise():
    single = {("p", "ks", 0): {"accuracy": 0.50}, ("p", "ks", 1): {"accuracy": 0.60}}
    multi = {("p", "ilora", "ks", 0): {"accuracy": 0.70, "n_total": 10}, ("p", "ilora", "ks", 1): {"accuracy": 0.60}}
    (d,) = compute_deltas(single, multi, info)
    # per-seed deltas +0.20 and 0.00 -> mean 0.10, sample std sqrt(((0.1)^2 + (0.1)^2) / 1) = 0.1414
    assert d.mean == pytest.approx(0.10)
    assert d.std == pytest.approx(math.sqrt(0.02))
    # spread = max(std(0.5, 0.6), std(0.7, 0.6)) = 0.0707 < 0.10 -> beyond noise
    assert d.spread == pytest.approx(math.sqrt(0.005))
    assert d.within_noise is False
    assert d.primary and d.seeds == 2


def test_lower_is_better_metric_is_sign_corrected():
    single = {("p", "nulls", 0): {"S": 0.30}}
    multi = {("p", "lora", "nulls", 0): {"S": 0.10}}
    (d,) = compute_deltas(single, multi, info)
    assert d.mean == pytest.approx(+0.20)  # a smaller S is better: positive transfer
    assert d.within_noise is None  # one seed: no spread


def test_within_noise_when_delta_below_spread():
    single = {("p", "ks", 0): {"accuracy": 0.2}, ("p", "ks", 1): {"accuracy": 0.8}}
    multi = {("p", "lora", "ks", 0): {"accuracy": 0.3}, ("p", "lora", "ks", 1): {"accuracy": 0.8}}
    (d,) = compute_deltas(single, multi, info)
    assert d.mean == pytest.approx(0.05) and d.within_noise is True


def test_shares_per_metric_and_per_dataset():
    single = {("p", "ks", 0): {"accuracy": 0.5}, ("p", "ave", 0): {"accuracy": 0.5, "f1": 0.5}, ("p", "nulls", 0): {"S": 0.2}}
    multi = {
        ("p", "ilora", "ks", 0): {"accuracy": 0.6},  # +
        ("p", "ilora", "ave", 0): {"accuracy": 0.4, "f1": 0.7},  # -, +
        ("p", "ilora", "nulls", 0): {"S": 0.1},  # + (lower is better)
    }
    rows = {r["scope"]: r for r in shares(compute_deltas(single, multi, info))}
    assert (rows["metric"]["n"], rows["metric"]["positive"], rows["metric"]["negative"]) == (4, 3, 1)
    assert (rows["dataset"]["n"], rows["dataset"]["positive"], rows["dataset"]["negative"]) == (3, 2, 1)
    assert rows["dataset"]["positive_share"] == pytest.approx(2 / 3)


def test_unpaired_seeds_and_parse_counts_are_ignored():
    single = {("p", "ks", 0): {"accuracy": 0.5, "n_total": 4, "n_parsed": 4}}
    multi = {("p", "ilora", "ks", 1): {"accuracy": 0.9}, ("p", "ilora", "ks", 0): {"accuracy": 0.4, "n_parsed": 2}}
    (d,) = compute_deltas(single, multi, info)
    assert d.seeds == 1 and d.mean == pytest.approx(-0.1) and d.metric == "accuracy"


def test_markdown_lists_failures():
    text = markdown([], [], ["p/ilora/all/seed0: see FAILED.json"])
    assert "## Failed runs" in text and "p/ilora/all/seed0" in text


def test_route_plots_skip_runs_without_a_router(tmp_path):
    from crabzoo.transfer.report import plot_routes
    from crabzoo.transfer.study import Run

    (tmp_path / "lora").mkdir()
    runs = [Run("p", "lora", ("ks", "ave"), 0, tmp_path / "lora", ("crabzoo", "fit")),
            Run("p", "single", ("ks",), 0, tmp_path / "missing", ("crabzoo", "fit"))]
    assert plot_routes(runs, "single", tmp_path / "out") == []


def test_scores_table_shows_chance_regimes_and_parse_rates():
    from crabzoo.transfer.report import compute_deltas, markdown, score_rows, shares

    info = lambda task: ({"accuracy": True}, "accuracy")  # noqa: E731
    single = {("p", "ks", s): {"accuracy": a, "n_total": 10, "n_parsed": 5} for s, a in ((0, 0.2), (1, 0.4))}
    multi = {("p", "ilora", "ks", s): {"accuracy": a, "n_total": 10, "n_parsed": 10} for s, a in ((0, 0.5), (1, 0.7))}
    deltas = compute_deltas(single, multi, info)
    rows = score_rows(deltas, single, multi, {("ks", "accuracy"): 1 / 6})
    assert len(rows) == 1
    row = rows[0]
    assert row["chance"] == 1 / 6 and abs(row["single"] - 0.3) < 1e-12 and abs(row["multi"]["ilora"] - 0.6) < 1e-12
    assert row["single_parsed"] == 0.5 and row["parsed"]["ilora"] == 1.0
    text = markdown(deltas, shares(deltas), [], rows)
    assert "| p | ks | accuracy | 0.167 | 0.3 | 0.6 | 50% / 100% |" in text


def _finished_run(tmp_path, paradigm, regime, tasks, seed, step, seen, params, seconds, cpu):
    from crabzoo.transfer.study import DONE, Run

    scope = tasks[0] if len(tasks) == 1 else "all"
    directory = tmp_path / paradigm / regime / scope / f"seed{seed}"
    (directory / "version_0").mkdir(parents=True)
    payload = {"global_step": step, "trainable_parameters": params, "seen": seen, "tasks": {}}
    (directory / "version_0" / "samples.json").write_text(json.dumps(payload))
    (directory / DONE).write_text(json.dumps({"seconds": seconds, "cpu_seconds": cpu}))
    return Run(paradigm, regime, tuple(tasks), seed, directory, ("crabzoo", "fit"))


def test_budget_rows_parameters_steps_and_samples_seen(tmp_path):
    from crabzoo.transfer.report import _budgets_markdown, budget_rows, run_times

    lora = {"llm": 2_000_000, "connector": 1_000_000, "total": 3_000_000}
    runs = [
        _finished_run(tmp_path, "p", "single", ["ks"], 0, 18, {"ks": 144}, lora, 60.0, 55.0),
        _finished_run(tmp_path, "p", "single", ["ave"], 0, 12, {"ave": 96}, lora, 40.0, 38.0),
        _finished_run(tmp_path, "p", "lora", ["ks", "ave"], 0, 30, {"ks": 144, "ave": 96}, lora, 90.0, 85.0),
        _finished_run(tmp_path, "p", "lora", ["ks", "ave"], 1, 30, {"ks": 140, "ave": 100}, lora, 90.0, 87.0),
    ]
    rows = {r["regime"]: r for r in budget_rows(runs)}
    # single-task: each task's count comes from its own run; the row's steps are per task
    assert rows["single"]["seen"] == {"ave": 96.0, "ks": 144.0}
    assert rows["single"]["steps"] == {"ks": 18.0, "ave": 12.0}
    # multi-task: means over the two seeds
    assert rows["lora"]["seen"] == {"ave": 98.0, "ks": 142.0}
    assert rows["lora"]["steps"] == {"all": 30.0}
    text = _budgets_markdown(list(rows.values()))
    assert "| p | single | 2.00 M | 1.00 M | 3.00 M | 15 (each task) | 96 | 144 |" in text
    assert "| p | lora | 2.00 M | 1.00 M | 3.00 M | 30 | 98 | 142 |" in text
    times = run_times(runs)
    assert times["seconds"] == 280.0 and times["cpu_seconds"] == 265.0
    assert times["seconds_per_regime"] == {"lora": 180.0, "single": 100.0}
