"""Task names -> Task classes (the folder names of the AV-UIE v2 release plus AVSynth's ``emotion``)."""

from __future__ import annotations

from functools import lru_cache

from crabzoo.errors import CrabzooError
from crabzoo.tasks.base import Task
from crabzoo.tasks.captioning import AVCapTask
from crabzoo.tasks.classification import (
    AVSynthEmotionTask,
    CREMADTask,
    DFEWTask,
    KSTask,
    MAFWTask,
    MELDTask,
    MER24Task,
    UCFTask,
)
from crabzoo.tasks.grounding import ARIGTask
from crabzoo.tasks.localization import AVETask, UnAVTask
from crabzoo.tasks.matching import A2VTask, V2ATask
from crabzoo.tasks.parsing import AVVPTask
from crabzoo.tasks.qa import AVQATask, AVQAThuTask
from crabzoo.tasks.segmentation import MS3Task, RefAVSTask, S4Task

TASKS: dict[str, type[Task]] = {
    cls.name: cls
    for cls in (
        A2VTask, V2ATask, KSTask, UCFTask, MELDTask, MER24Task, CREMADTask, MAFWTask, DFEWTask, AVQATask,
        AVQAThuTask, AVETask, UnAVTask, AVVPTask, S4Task, MS3Task, RefAVSTask, ARIGTask, AVCapTask,
        AVSynthEmotionTask,
    )
}  # fmt: skip
"""Every task, by folder name, in the release's order (``emotion`` last: an AVSynth-only folder)."""

RELEASE_TASKS: tuple[str, ...] = tuple(name for name in TASKS if name != "emotion")
"""The 19 folders of the AV-UIE v2 release."""


@lru_cache(maxsize=None)
def _instance(name: str) -> Task:
    return TASKS[name]()


def get_task(name: str) -> Task:
    """The (shared, stateless) Task for a folder name.

    Raises:
        CrabzooError: unknown name (the message lists the known ones).
    """
    if not isinstance(name, str) or name not in TASKS:
        raise CrabzooError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return _instance(name)
