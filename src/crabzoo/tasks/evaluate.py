"""``crabzoo evaluate``: score a predictions JSONL against a task's annotation file.

Usage::

    crabzoo evaluate --task ave --predictions preds.jsonl --annotations AVUIE_2/ave/test.json [--out result.json]

Each JSONL line is an object holding the generated text in ``predict`` (the field the official Crab+ inference
writes, next to its test metadata), ``prediction``, ``text``, ``generation``, ``response`` or, failing those,
``output``. Lines are matched to annotation records by ``id`` (crabzoo's ``<task>/<split>/<index>`` or the record
index), by ``index``, by the Crab+ metadata that identifies a record (``qid`` for avqa; ``uid`` + ``idx`` for
ref_avs; the image path for s4 / ms3 / arig; the video path for ucf), or else by position. Lines of another task
(a ``task`` field) are skipped. A record without a prediction, or with text the parser cannot read, counts as
wrong: ``n_total`` is always the number of annotation records.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from crabzoo.data.schema import Sample
from crabzoo.errors import CrabzooError
from crabzoo.tasks.base import ParseFailure, Task
from crabzoo.tasks.registry import TASKS, get_task

TEXT_FIELDS = ("predict", "prediction", "text", "generation", "response", "output")
"""Fields read for the generated text, in order of preference."""

MISSING = "no prediction for this record"


def read_annotations(task: Task, path: Path, split: str | None = None) -> list[Sample]:
    """Samples of an annotation file (``split`` defaults to the file stem)."""
    if not path.is_file():
        raise CrabzooError(f"annotation file {path} not found; pass --annotations DIR/{task.name}/test.json")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CrabzooError(f"{path} is not valid JSON ({err}); expected one JSON array of records") from err
    if not isinstance(records, list):
        raise CrabzooError(f"{path} holds a {type(records).__name__}; expected one JSON array of records")
    split = split or (path.stem if path.stem in ("train", "test") else "test")
    return [task.sample_from_record(r, i, split, path.parent) for i, r in enumerate(records)]


def read_predictions(path: Path, task: str) -> list[dict[str, Any]]:
    """Prediction lines of ``task`` (each a dict with ``text`` plus its other fields)."""
    if not path.is_file():
        raise CrabzooError(f"predictions file {path} not found; pass --predictions PREDS.jsonl")
    lines = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise CrabzooError(f"{path}:{number} is not a JSON object ({err}); write one object per line") from err
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict):
            raise CrabzooError(f"{path}:{number} is a {type(item).__name__}; write one JSON object per line")
        if isinstance(item.get("task"), str) and item["task"] != task and item["task"] in TASKS:
            continue
        field = next((k for k in TEXT_FIELDS if k in item), None)
        if field is None:
            raise CrabzooError(f"{path}:{number} has none of the fields {list(TEXT_FIELDS)} holding the generated text")
        lines.append({**item, "text": item[field], "_line": number})
    return lines


def _tail(value: Any, parts: int) -> str:
    return "/".join(Path(str(value)).parts[-parts:])


def record_key(task: str, sample: Sample) -> str | None:
    """Key identifying a record in the official Crab+ test metadata, or ``None`` for this task."""
    m = sample.meta
    if task == "avqa":
        return str(m.get("qid"))
    if task == "ref_avs":
        return f"{m.get('uid')}|{m.get('idx')}"
    if task in ("s4", "ms3", "arig"):
        return _tail(sample.video[0], 4)
    if task == "ucf":
        return _tail(sample.video[0], 2)
    return None


def line_key(task: str, line: dict[str, Any]) -> str | None:
    """The same key from a Crab+ metadata line, or ``None`` when the line lacks the fields."""
    if task == "avqa" and "qid" in line:
        return str(line["qid"])
    if task == "ref_avs" and "uid" in line and "idx" in line:
        return f"{line['uid']}|{line['idx']}"
    if task in ("s4", "ms3") and "image_path" in line:
        return _tail(line["image_path"], 4)
    if task == "arig" and "frame_path" in line:
        return _tail(line["frame_path"], 4)
    if task == "ucf" and "video_path" in line:
        return _tail(line["video_path"], 2)
    return None


def match(task: str, samples: list[Sample], lines: list[dict[str, Any]]) -> tuple[list[Any], str]:
    """Generated text per sample (``None`` where no line matches) and the matching rule used."""
    n = len(samples)
    if lines and all("id" in x for x in lines):
        by_id = {s.id: i for i, s in enumerate(samples)}
        out: list[Any] = [None] * n
        for x in lines:
            key = x["id"]
            i = by_id.get(str(key))
            if i is None and (isinstance(key, int) or (isinstance(key, str) and key.isdigit())):
                i = int(key) if 0 <= int(key) < n else None
            if i is None:
                raise CrabzooError(f"prediction line {x['_line']}: id {key!r} matches no record of the annotations")
            out[i] = x["text"]
        return out, "id"
    if lines and all(isinstance(x.get("index"), int) for x in lines):
        out = [None] * n
        for x in lines:
            if not 0 <= x["index"] < n:
                raise CrabzooError(f"prediction line {x['_line']}: index {x['index']} outside the {n} records")
            out[x["index"]] = x["text"]
        return out, "index"
    keys = [line_key(task, x) for x in lines]
    if lines and all(k is not None for k in keys):
        by_key = {record_key(task, s): i for i, s in enumerate(samples)}
        if len(by_key) == n:
            out = [None] * n
            for x, k in zip(lines, keys):
                if k not in by_key:
                    raise CrabzooError(f"prediction line {x['_line']}: {k!r} matches no record of the annotations")
                out[by_key[k]] = x["text"]
            return out, "metadata"
    if len(lines) > n:
        raise CrabzooError(
            f"{len(lines)} prediction lines but only {n} records; add an 'id' or 'index' field to match them"
        )
    return [x["text"] for x in lines] + [None] * (n - len(lines)), "position"


def score(task: Task, samples: list[Sample], texts: list[Any], metric: Any = None) -> dict[str, Any]:
    """Parse every text, update the metric, and return values, counts and failure reasons."""
    preds = [ParseFailure(MISSING) if t is None else task.parse(t) for t in texts]
    metric = metric if metric is not None else task.make_metric()
    truths = [s.truth for s in samples]
    if samples:
        metric.update(preds, truths)
    values = {k: float(v) for k, v in metric.compute().items()} if samples else {"n_total": 0.0, "n_parsed": 0.0}
    failures = Counter(p.reason for p in preds if isinstance(p, ParseFailure))
    return {
        "metrics": {k: v for k, v in values.items() if k not in ("n_total", "n_parsed")},
        "n_total": int(values.get("n_total", len(samples))),
        "n_parsed": int(values.get("n_parsed", 0)),
        "primary": getattr(metric, "primary", None),
        "higher_is_better": dict(getattr(metric, "higher_is_better", {})),
        "failures": dict(failures.most_common()),
        "chance": task.chance(truths),
    }


def table(task: str, result: dict[str, Any]) -> str:
    """A plain-text table of the result."""
    protocol = f", mask protocol {result['mask_protocol']}" if result.get("mask_protocol") else ""
    rows = [f"{task}: {result['n_parsed']}/{result['n_total']} parsed (matched by {result.get('matched_by', '-')}"
            f"{protocol})", f"{'metric':<20} {'value':>10} {'chance':>10}  better"]
    for key, value in result["metrics"].items():
        chance = result["chance"].get(key)
        better = "higher" if result["higher_is_better"].get(key, True) else "lower"
        star = " *" if key == result.get("primary") else ""
        rows.append(f"{key:<20} {value:>10.4f} {'' if chance is None else f'{chance:.4f}':>10}  {better}{star}")
    for reason, count in list(result["failures"].items())[:5]:
        rows.append(f"  unparsed x{count}: {reason}")
    return "\n".join(rows)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (temporary file in the same folder, then ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_prompter(name: str, config: str | None, checkpoint: str | None) -> Any:
    """The segmentation prompt stage named on the command line."""
    from crabzoo.heads.sam2_prompt import BoxFillPrompter, Sam2Prompter

    if name == "boxfill":
        return BoxFillPrompter()
    kwargs = {k: v for k, v in (("config", config), ("checkpoint", checkpoint)) if v}
    return Sam2Prompter(**kwargs)


def evaluate(task_name: str, predictions: Path, annotations: Path, split: str | None = None,
             prompter: Any = None, meteor: bool = False, mask_protocol: str = "avsbench") -> dict[str, Any]:
    """Score ``predictions`` against ``annotations``; the result dict that ``--out`` writes.

    ``meteor=True`` adds METEOR to a captioning task's scores (Java and ``crabzoo[meteor]`` needed);
    ``mask_protocol`` (``avsbench`` or ``crab_plus``) chooses how s4 / ms3 / ref_avs masks are scored and is
    named in the result.
    """
    task = get_task(task_name)
    if meteor and task.group != "captioning":
        raise CrabzooError(f"--meteor scores captions; task {task.name!r} is not a captioning task (use avcap)")
    metric = None
    if meteor:
        from crabzoo.metrics.captioning import CaptionMetric

        metric = CaptionMetric(meteor=True)  # no Java or no jar: said here, before the files are read
    samples = read_annotations(task, annotations, split)
    lines = read_predictions(predictions, task.name)
    texts, rule = match(task.name, samples, lines)
    protocol = {}
    if task.name in ("s4", "ms3", "ref_avs"):
        metric = task.make_metric(prompter=prompter, protocol=mask_protocol)
        protocol = {"mask_protocol": mask_protocol}
    result = score(task, samples, texts, metric)
    return {"task": task.name, "predictions": str(predictions), "annotations": str(annotations),
            "matched_by": rule, **protocol, **result}


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``crabzoo evaluate``."""
    parser = argparse.ArgumentParser(
        prog="crabzoo evaluate", description="Score a predictions JSONL against a task's annotations."
    )
    parser.add_argument("--task", required=True, help=f"task folder name: {', '.join(TASKS)}")
    parser.add_argument("--predictions", required=True, type=Path, help="JSONL, one object per generation")
    parser.add_argument("--annotations", required=True, type=Path,
                        help="the task's annotation file, e.g. DIR/ave/test.json")
    parser.add_argument("--out", type=Path, help="write the result as JSON (atomically)")
    parser.add_argument("--split", choices=("train", "test"), help="split of the annotations (default: the file stem)")
    parser.add_argument("--prompter", choices=("boxfill", "sam2"), default="boxfill",
                        help="segmentation prompt stage (s4, ms3, ref_avs)")
    parser.add_argument("--sam2-config", help="SAM2 model config (with --prompter sam2)")
    parser.add_argument("--sam2-checkpoint", help="SAM2 checkpoint file (with --prompter sam2)")
    parser.add_argument("--mask-protocol", choices=("avsbench", "crab_plus"), default="avsbench",
                        help="how s4 / ms3 / ref_avs masks are scored: the AVSBench reference or Crab+'s own rule")
    parser.add_argument("--meteor", action="store_true",
                        help='also score METEOR 1.5 (avcap; needs Java and pip install "crabzoo[meteor]")')
    args = parser.parse_args(argv)
    prompter = make_prompter(args.prompter, args.sam2_config, args.sam2_checkpoint) if args.prompter == "sam2" else None
    result = evaluate(args.task, args.predictions, args.annotations, args.split, prompter, meteor=args.meteor,
                      mask_protocol=args.mask_protocol)
    print(table(result["task"], result))
    if args.out is not None:
        write_json(args.out, result)
        print(f"wrote {args.out}")
