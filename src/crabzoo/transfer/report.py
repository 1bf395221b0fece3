"""The transfer report: per task and metric, multi-task minus single-task, over seeds, with noise bands.

For a metric ``m`` of task ``t`` and seed ``s``: ``Δ_s = sign(m) · (M_multi(t, s) − M_single(t, s))`` with
``sign = −1`` for lower-is-better metrics, so a positive Δ always means positive transfer. Δ is reported as
mean ± sample standard deviation over seeds and marked *within noise* when ``|mean Δ|`` does not exceed the
seed spread (the larger standard deviation of the single- and multi-task scores over seeds). The share of
tasks with positive and negative transfer is counted both per metric entry and per dataset (each task's
primary metric), as the method's headline numbers can be read either way.

Where the runs wrote per-sample records (``samples.json``), each primary-metric Δ also gets a paired bootstrap
percentile interval over the test samples (:mod:`crabzoo.transfer.bootstrap`), and the shares count the tasks
whose interval lies entirely above (or below) zero.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

PARSE_KEYS = ("n_total", "n_parsed")


@dataclass(frozen=True)
class Delta:
    """Transfer of one (paradigm, regime, task, metric) over seeds."""

    paradigm: str
    regime: str
    task: str
    metric: str
    primary: bool
    single: float
    multi: float
    mean: float
    std: float
    spread: float
    seeds: int
    ci_lo: float | None = None
    ci_hi: float | None = None

    @property
    def within_noise(self) -> bool | None:
        """``|mean Δ| <= seed spread``; ``None`` with a single seed (no spread to compare with)."""
        if self.seeds < 2:
            return None
        return abs(self.mean) <= self.spread


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _std(xs: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def metric_info(task: str) -> tuple[dict[str, bool], str | None]:
    """``(higher_is_better per metric key, primary key)`` from the task's metric, with safe defaults."""
    try:
        from crabzoo.tasks import get_task

        metric = get_task(task).make_metric()
    except Exception:
        return {}, None
    directions = getattr(metric, "higher_is_better", None)
    if not isinstance(directions, dict):
        directions = getattr(metric, "directions", {}) or {}
    primary = getattr(metric, "primary", None) or getattr(metric, "primary_key", None)
    return dict(directions), primary


def compute_deltas(
    single: dict[tuple[str, str, int], dict[str, float]],
    multi: dict[tuple[str, str, str, int], dict[str, float]],
    info: Any = metric_info,
) -> list[Delta]:
    """Pair single- and multi-task scores by (paradigm, task, seed) and summarise over seeds.

    Args:
        single: ``(paradigm, task, seed) -> {metric: value}`` from the single-task runs.
        multi: ``(paradigm, regime, task, seed) -> {metric: value}`` from the multi-task runs.
        info: ``task -> (higher_is_better per metric, primary metric)``.

    Returns:
        One :class:`Delta` per (paradigm, multi regime, task, metric) with at least one paired seed.
    """
    grouped: dict[tuple[str, str, str, str], list[tuple[float, float]]] = defaultdict(list)
    for (paradigm, regime, task, seed), scores in multi.items():
        reference = single.get((paradigm, task, seed))
        if reference is None:
            continue
        for metric, value in scores.items():
            if metric in PARSE_KEYS or metric not in reference:
                continue
            grouped[(paradigm, regime, task, metric)].append((reference[metric], value))
    deltas = []
    cache: dict[str, tuple[dict[str, bool], str | None]] = {}
    for (paradigm, regime, task, metric), pairs in sorted(grouped.items()):
        if task not in cache:
            cache[task] = info(task)
        directions, primary = cache[task]
        sign = 1.0 if directions.get(metric, True) else -1.0
        d = [sign * (m - s) for s, m in pairs]
        singles, multis = [s for s, _ in pairs], [m for _, m in pairs]
        deltas.append(
            Delta(
                paradigm, regime, task, metric,
                primary=(metric == primary) if primary else False,
                single=_mean(singles), multi=_mean(multis), mean=_mean(d), std=_std(d),
                spread=max(_std(singles), _std(multis)), seeds=len(pairs),
            )
        )
    # a task without a declared primary metric uses its first metric
    declared = {(d.paradigm, d.regime, d.task) for d in deltas if d.primary}
    seen: set[tuple[str, str, str]] = set()
    result = []
    for d in deltas:
        key = (d.paradigm, d.regime, d.task)
        if key not in declared and key not in seen:
            d = replace(d, primary=True)
        seen.add(key)
        result.append(d)
    return result

def shares(deltas: list[Delta]) -> list[dict[str, Any]]:
    """Per (paradigm, regime): the share of positive / negative transfer per metric entry and per dataset."""
    rows = []
    keys = sorted({(d.paradigm, d.regime) for d in deltas})
    for paradigm, regime in keys:
        own = [d for d in deltas if d.paradigm == paradigm and d.regime == regime]
        for scope, items in (("metric", own), ("dataset", [d for d in own if d.primary])):
            n = len(items)
            pos = sum(d.mean > 0 for d in items)
            neg = sum(d.mean < 0 for d in items)
            beyond_pos = sum(d.mean > 0 and d.within_noise is False for d in items)
            beyond_neg = sum(d.mean < 0 and d.within_noise is False for d in items)
            with_ci = [d for d in items if d.ci_lo is not None and d.ci_hi is not None]
            rows.append(
                {
                    "paradigm": paradigm, "regime": regime, "scope": scope, "n": n,
                    "positive": pos, "negative": neg,
                    "positive_share": pos / n if n else float("nan"),
                    "negative_share": neg / n if n else float("nan"),
                    "positive_beyond_noise": beyond_pos, "negative_beyond_noise": beyond_neg,
                    "with_ci": len(with_ci),
                    "positive_beyond_ci": sum(d.ci_lo > 0 for d in with_ci),  # type: ignore[operator]
                    "negative_beyond_ci": sum(d.ci_hi < 0 for d in with_ci),  # type: ignore[operator]
                }
            )
    return rows


def score_rows(
    deltas: list[Delta],
    single: dict[tuple[str, str, int], dict[str, float]],
    multi: dict[tuple[str, str, str, int], dict[str, float]],
    chance: dict[tuple[str, str], float],
) -> list[dict[str, Any]]:
    """Per (paradigm, task): the primary metric's chance level and mean score per regime, and parse rates.

    The absolute scores say whether a Δ compares models that learned the task at all (near chance, a Δ means
    little).
    """

    def parsed(tables: list[dict[str, float]]) -> float | None:
        rates = [t["n_parsed"] / t["n_total"] for t in tables if t.get("n_total")]
        return _mean(rates) if rates else None

    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for d in deltas:
        if not d.primary:
            continue
        row = rows.setdefault((d.paradigm, d.task), {
            "paradigm": d.paradigm, "task": d.task, "metric": d.metric, "chance": chance.get((d.task, d.metric)),
            "single": d.single, "multi": {}, "parsed": {},
            "single_parsed": parsed([v for (p, t, _), v in single.items() if (p, t) == (d.paradigm, d.task)]),
        })
        row["multi"][d.regime] = d.multi
        row["parsed"][d.regime] = parsed([v for (p, r, t, _), v in multi.items() if (p, r, t) == (d.paradigm, d.regime, d.task)])
    return [rows[k] for k in sorted(rows)]


def _scores_markdown(rows: list[dict[str, Any]]) -> list[str]:
    regimes = sorted({r for row in rows for r in row["multi"]})
    fmt = lambda v: "–" if v is None else f"{v:.3g}"  # noqa: E731
    pct = lambda v: "–" if v is None else f"{v:.0%}"  # noqa: E731
    out = ["## Scores (primary metric, mean over seeds)", ""]
    out += ["| paradigm | task | metric | chance | single | " + " | ".join(regimes) + " | parsed: single / " + " / ".join(regimes) + " |"]
    out += ["|---|---|---|---:|---:|" + "---:|" * len(regimes) + "---|"]
    for row in rows:
        parsed = " / ".join([pct(row["single_parsed"])] + [pct(row["parsed"].get(r)) for r in regimes])
        out.append(
            f"| {row['paradigm']} | {row['task']} | {row['metric']} | {fmt(row['chance'])} | {fmt(row['single'])} | "
            + " | ".join(fmt(row["multi"].get(r)) for r in regimes) + f" | {parsed} |"
        )
    return out + [""]


def markdown(
    deltas: list[Delta], share_rows: list[dict[str, Any]], failures: list[str], scores: list[dict[str, Any]] | None = None
) -> str:
    """The report as Markdown: the shares first, then the absolute scores, then every Δ."""
    out = ["# Transfer report", "", "## Share of tasks with positive transfer", ""]
    out += [
        "| paradigm | regime | counted per | n | positive | negative | positive beyond noise | negative beyond noise "
        "| positive beyond CI | negative beyond CI |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in share_rows:
        with_ci = r.get("with_ci", 0)
        ci = lambda k: f"{r[k]} of {with_ci}" if with_ci else "–"  # noqa: E731
        out.append(
            f"| {r['paradigm']} | {r['regime']} | {r['scope']} | {r['n']} | {r['positive']} ({r['positive_share']:.0%}) | "
            f"{r['negative']} ({r['negative_share']:.0%}) | {r['positive_beyond_noise']} | {r['negative_beyond_noise']} | "
            f"{ci('positive_beyond_ci')} | {ci('negative_beyond_ci')} |"
        )
    out += [""]
    if scores:
        out += _scores_markdown(scores)
    out += ["## Δ = multi − single (sign-corrected; mean ± std over seeds)", ""]
    out += ["| paradigm | regime | task | metric | single | multi | Δ | within noise | 95% CI of Δ (paired bootstrap) |", "|---|---|---|---|---:|---:|---:|---|---|"]
    for d in deltas:
        noise = {None: "n/a (1 seed)", True: "yes", False: "no"}[d.within_noise]
        star = " *" if d.primary else ""
        out.append(
            f"| {d.paradigm} | {d.regime} | {d.task} | {d.metric}{star} | {d.single:.4g} | {d.multi:.4g} | "
            f"{d.mean:+.4g} ± {d.std:.2g} | {noise} | {'–' if d.ci_lo is None else f'[{d.ci_lo:+.3g}, {d.ci_hi:+.3g}]'} |"
        )
    out += ["", "`*` marks each task's primary metric (the per-dataset count uses it)."]
    if failures:
        out += ["", "## Failed runs", ""] + [f"- {f}" for f in failures]
    return "\n".join(out) + "\n"


def plot(deltas: list[Delta], out_dir: Path) -> list[Path]:
    """Δ bars per task (one group per multi-task regime) per paradigm, and a paradigm x task heat-map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    primary = [d for d in deltas if d.primary]
    for paradigm in sorted({d.paradigm for d in primary}):
        own = [d for d in primary if d.paradigm == paradigm]
        tasks = sorted({d.task for d in own})
        regimes = sorted({d.regime for d in own})
        width = 0.8 / max(1, len(regimes))
        fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(tasks) + 2), 3.6))
        for i, regime in enumerate(regimes):
            vals = {d.task: d for d in own if d.regime == regime}
            xs = [j + (i - (len(regimes) - 1) / 2) * width for j in range(len(tasks))]
            ax.bar(xs, [vals[t].mean if t in vals else 0 for t in tasks], width, yerr=[vals[t].std if t in vals else 0 for t in tasks], label=regime, capsize=2)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right")
        ax.set_ylabel("Δ primary metric (multi − single)")
        ax.set_title(f"Transfer per task — {paradigm}")
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"delta_{paradigm}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    if primary:
        rows = sorted({(d.paradigm, d.regime) for d in primary})
        tasks = sorted({d.task for d in primary})
        grid = [[next((d.mean for d in primary if (d.paradigm, d.regime) == r and d.task == t), float("nan")) for t in tasks] for r in rows]
        bound = max((abs(v) for row in grid for v in row if not math.isnan(v)), default=1.0) or 1.0
        fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(tasks) + 2), 0.5 * len(rows) + 1.6))
        im = ax.imshow(grid, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
        ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right")
        ax.set_yticks(range(len(rows)), [f"{p} / {r}" for p, r in rows])
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if not math.isnan(v):
                    ax.text(j, i, f"{v:+.2f}", ha="center", va="center", fontsize=7)
        fig.colorbar(im, ax=ax, label="Δ primary metric")
        ax.set_title("Transfer: paradigm × task")
        fig.tight_layout()
        path = out_dir / "heatmap.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def collect(runs: list[Any], reference: str, chance: dict[tuple[str, str], float] | None = None) -> tuple[dict, dict, list[str]]:
    """Read every finished run's ``results.json`` into the single/multi score tables.

    Args:
        runs: The study's runs.
        reference: Name of the single-task regime.
        chance: Filled with ``(task, metric) -> chance level`` from the runs' result rows, when given.
    """
    from crabzoo.transfer.study import FAILED, latest_results

    single: dict[tuple[str, str, int], dict[str, float]] = {}
    multi: dict[tuple[str, str, str, int], dict[str, float]] = {}
    failures = []
    for run in runs:
        if (run.directory / FAILED).is_file():
            failures.append(f"{run.label}: see {run.directory / FAILED}")
            continue
        path = latest_results(run.directory)
        if path is None:
            continue
        payload = json.loads(path.read_text())
        results = payload["results"]
        if chance is not None:
            for row in payload.get("rows", []):
                if row.get("chance") is not None:
                    chance[(row["task"], row["metric"])] = row["chance"]
        for task, scores in results.items():
            if run.regime == reference:
                single[(run.paradigm, task, run.seed)] = scores
            else:
                multi[(run.paradigm, run.regime, task, run.seed)] = scores
    return single, multi, failures


def write_report(runs: list[Any], reference: str, out_dir: Path) -> dict[str, Any]:
    """Compute and write ``report.json``, ``report.md`` and the plots into ``out_dir``."""
    from crabzoo.report import atomic_write_text

    chance: dict[tuple[str, str], float] = {}
    single, multi, failures = collect(runs, reference, chance)
    deltas = add_intervals(compute_deltas(single, multi), runs, reference)
    share_rows = shares(deltas)
    scores = score_rows(deltas, single, multi, chance)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "deltas": [{**asdict(d), "within_noise": d.within_noise} for d in deltas],
        "shares": share_rows,
        "scores": scores,
        "runs": run_times(runs),
        "budgets": budget_rows(runs),
        "failures": failures,
    }
    atomic_write_text(out_dir / "report.json", json.dumps(payload, indent=2))
    text = markdown(deltas, share_rows, failures, scores) + _budgets_markdown(payload["budgets"]) + _times_markdown(payload["runs"])
    atomic_write_text(out_dir / "report.md", text)
    payload["plots"] = [str(p) for p in plot(deltas, out_dir)] + [str(p) for p in plot_routes(runs, reference, out_dir)]
    return payload


def run_times(runs: list[Any]) -> dict[str, Any]:
    """Runs finished and their ``crabzoo fit`` wall and CPU seconds (from ``DONE.json``), in total and per regime."""
    from crabzoo.transfer.study import DONE

    per_regime: dict[str, float] = defaultdict(float)
    cpu = 0.0
    done = 0
    for run in runs:
        marker = run.directory / DONE
        if marker.is_file():
            done += 1
            record = json.loads(marker.read_text())
            per_regime[run.regime] += float(record.get("seconds", 0.0))
            cpu += float(record.get("cpu_seconds", 0.0))
    return {
        "total": len(runs), "done": done, "seconds": round(sum(per_regime.values()), 1), "cpu_seconds": round(cpu, 1),
        "seconds_per_regime": {k: round(v, 1) for k, v in sorted(per_regime.items())},
    }


def _times_markdown(times: dict[str, Any]) -> str:
    per = ", ".join(f"{k} {v / 60:.1f} min" for k, v in times["seconds_per_regime"].items())
    return (
        f"\n{times['done']} of {times['total']} runs finished; their `crabzoo fit` processes took "
        f"{times['seconds'] / 60:.1f} min in all ({per}; parallel runs overlap) and "
        f"{times.get('cpu_seconds', 0.0) / 60:.1f} min of CPU time.\n"
    )


def budget_rows(runs: list[Any]) -> list[dict[str, Any]]:
    """Per (paradigm, regime): trainable parameters, optimizer steps and training samples seen per task.

    Read from each finished run's ``samples.json`` (:class:`crabzoo.transfer.samples.SampleRecorder`); a
    single-task regime's row gathers its per-task runs (each task's count from its own run). Counts are means
    over seeds.
    """
    from crabzoo.transfer.study import FAILED, latest_samples

    grouped: dict[tuple[str, str], dict[str, Any]] = {}
    for run in runs:
        path = latest_samples(run.directory) if not (run.directory / FAILED).is_file() else None
        if path is None:
            continue
        payload = json.loads(path.read_text())
        row = grouped.setdefault((run.paradigm, run.regime), {"params": {}, "steps": defaultdict(list), "seen": defaultdict(list)})
        if payload.get("trainable_parameters"):
            row["params"] = payload["trainable_parameters"]
        scope = run.tasks[0] if len(run.tasks) == 1 else "all"
        row["steps"][scope].append(int(payload.get("global_step", 0)))
        for task, n in payload.get("seen", {}).items():
            row["seen"][task].append(int(n))
    out = []
    for (paradigm, regime), row in grouped.items():
        steps = {k: _mean([float(v) for v in vs]) for k, vs in row["steps"].items()}
        out.append({
            "paradigm": paradigm, "regime": regime, "trainable_parameters": row["params"],
            "steps": steps, "seen": {t: _mean([float(v) for v in vs]) for t, vs in sorted(row["seen"].items())},
        })
    return out


def _millions(n: int | None) -> str:
    return f"{n / 1e6:.2f} M" if n is not None else "–"


def _budgets_markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    tasks = sorted({t for r in rows for t in r["seen"]})
    out = ["## Budget: trainable parameters, steps and samples seen per task", ""]
    out += ["| paradigm | regime | LLM adapter | connectors | trainable total | steps per run | " + " | ".join(tasks) + " |"]
    out += ["|---|---|---:|---:|---:|---:|" + "---:|" * len(tasks)]
    for r in rows:
        p = r["trainable_parameters"]
        steps = r["steps"]
        per_run = f"{steps['all']:.0f}" if "all" in steps else (f"{_mean(list(steps.values())):.0f} (each task)" if steps else "–")
        out.append(
            f"| {r['paradigm']} | {r['regime']} | {_millions(p.get('llm'))} | {_millions(p.get('connector'))} | {_millions(p.get('total'))} | {per_run} | "
            + " | ".join(f"{r['seen'].get(t, 0):.0f}" for t in tasks) + " |"
        )
    return "\n".join(["", *out, ""]) + "\n"


def plot_routes(runs: list[Any], reference: str, out_dir: Path) -> list[Path]:
    """Router heat-maps (mean gate per task x layer x head) of every multi-task run that recorded them."""
    from crabzoo.adapters.plot import find_telemetry, plot_summary
    from crabzoo.errors import CrabzooError

    written: list[Path] = []
    for run in runs:
        if run.regime == reference or not run.directory.is_dir():
            continue
        try:
            found = find_telemetry(run.directory)
        except CrabzooError:  # e.g. a LoRA run: no router
            continue
        newest = max(found, key=lambda p: p.stat().st_mtime)
        (out_dir / "routes").mkdir(parents=True, exist_ok=True)
        stem = out_dir / "routes" / f"{run.paradigm}_{run.regime}_seed{run.seed}"
        written += plot_summary(json.loads(newest.read_text()), stem)
    return written


def load_samples(runs: list[Any], reference: str) -> dict[tuple[str, str, str, int], dict[str, Any]]:
    """``(paradigm, regime, task, seed) -> {sample id: per-sample state}`` from each run's ``samples.json``."""
    from crabzoo.transfer.study import FAILED, latest_samples

    table: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    for run in runs:
        if (run.directory / FAILED).is_file():
            continue
        path = latest_samples(run.directory)
        if path is None:
            continue
        for task, entry in json.loads(path.read_text()).get("tasks", {}).items():
            table[(run.paradigm, run.regime, task, run.seed)] = dict(zip(entry["ids"], entry["samples"]))
    return table


def add_intervals(
    deltas: list[Delta], runs: list[Any], reference: str, n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05
) -> list[Delta]:
    """Each primary-metric Δ with its paired bootstrap interval, where both runs of its seeds wrote samples.

    The test samples are the ids present in every paired run (the same set for all seeds, so one resample of
    indices serves every seed). Where the task's metric gives its primary score as a ratio of sums over units
    (:meth:`~crabzoo.metrics.base.BenchmarkMetric.primary_terms`) the resamples are weighted sums
    (:func:`~crabzoo.transfer.bootstrap.paired_bootstrap_terms`); otherwise the metric is recomputed on each.
    """
    from crabzoo.tasks import get_task
    from crabzoo.transfer.bootstrap import paired_bootstrap_seeds, paired_bootstrap_terms
    from crabzoo.transfer.samples import recompute

    samples = load_samples(runs, reference)
    if not samples:
        return deltas
    result = []
    for d in deltas:
        seeds = sorted({s for (p, r, t, s) in samples if (p, r, t) == (d.paradigm, d.regime, d.task)})
        pairs = [(samples.get((d.paradigm, reference, d.task, s)), samples[(d.paradigm, d.regime, d.task, s)]) for s in seeds]
        pairs = [(a, b) for a, b in pairs if a is not None]
        if not d.primary or not pairs:
            result.append(d)
            continue
        common = [i for i in pairs[0][0] if all(i in a and i in b for a, b in pairs)]
        if not common:
            result.append(d)
            continue
        try:
            directions, _ = metric_info(d.task)
            better = directions.get(d.metric, True)
            aligned = [([a[i] for i in common], [b[i] for i in common]) for a, b in pairs]
            terms = _primary_terms(d.task, d.metric, aligned)
            if terms is not None:
                _, lo, hi = paired_bootstrap_terms(terms, n_resamples, seed, alpha, better)
            else:
                metric = get_task(d.task).make_metric()
                fn = lambda recs, m=metric, key=d.metric: recompute(m, recs)[key]  # noqa: E731
                _, lo, hi = paired_bootstrap_seeds(aligned, fn, n_resamples, seed, alpha, better)
        except Exception:  # a metric whose state cannot be rebuilt: no interval, the rest of the report stands
            result.append(d)
            continue
        result.append(replace(d, ci_lo=lo, ci_hi=hi))
    return result


def _primary_terms(task: str, key: str, aligned: list[tuple[list[Any], list[Any]]]) -> list[tuple[Any, Any]] | None:
    """Each run's :class:`~crabzoo.metrics.base.PrimaryTerms` of ``key``, or ``None`` if any run has none."""
    from crabzoo.tasks import get_task

    out = []
    for single, multi in aligned:
        pair = []
        for states in (single, multi):
            metric = get_task(task).make_metric()
            if getattr(metric, "primary", None) != key or not hasattr(metric, "primary_terms"):
                return None
            metric.load_sample_states(states)
            terms = metric.primary_terms()
            if terms is None:
                return None
            pair.append(terms)
        out.append((pair[0], pair[1]))
    return out
