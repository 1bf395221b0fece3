"""Tasks of the unified text-in / text-out interface: one :class:`Task` per folder of the AV-UIE v2 release.

``get_task("ave")`` returns the task that owns ave's prompt, media policy, target format, strict parser and
metric; ``TASKS`` maps every folder name to its class. Importing this package does not import torch: metric
classes are imported when ``make_metric()`` is called.
"""

from crabzoo.tasks.base import GROUPS, ParseFailure, Task
from crabzoo.tasks.registry import RELEASE_TASKS, TASKS, get_task

__all__ = ["GROUPS", "RELEASE_TASKS", "TASKS", "ParseFailure", "Task", "get_task"]
