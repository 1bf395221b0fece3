"""``crabzoo data prepare``: the AV-UIE v2 media of each task folder, made from the raw source datasets.

The release ships only the annotations; :func:`prepare` reads a source dataset in its official layout and
writes the files the records name (links, 16 kHz audio, re-encoded or cut videos), a manifest and a report.
"""

from crabzoo.data.prepare.base import Catalogue, MediaJob, Preparer, RecordPlan
from crabzoo.data.prepare.engine import PrepareResult, Problem, prepare
from crabzoo.data.prepare.manifest import MANIFEST, REPORT, FileEntry, check_manifest, read_manifest
from crabzoo.data.prepare.registry import PREPARERS, get_preparer

__all__ = [
    "MANIFEST", "PREPARERS", "REPORT", "Catalogue", "FileEntry", "MediaJob", "PrepareResult", "Preparer", "Problem",
    "RecordPlan", "check_manifest", "get_preparer", "prepare", "read_manifest",
]
