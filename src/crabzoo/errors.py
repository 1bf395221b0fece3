"""User-facing errors.

A :class:`CrabzooError` is a mistake the user can fix (a bad key, a missing file, an unknown component, a
malformed record). The CLI prints its message on one line and exits with status 2, without a traceback.
"""

from __future__ import annotations


class CrabzooError(Exception):
    """A user mistake: the message names the thing that is wrong and how to fix it."""

    exit_code: int = 2


class MalformedRecordError(CrabzooError):
    """An annotation record that does not follow the AV-UIE v2 layout of its task.

    Args:
        path: The annotation file.
        index: Position of the record in the file's JSON array.
        reason: What is wrong, e.g. ``missing field 'audio_path'``.
    """

    def __init__(self, path: str, index: int, reason: str) -> None:
        self.path, self.index, self.reason = str(path), index, reason
        super().__init__(f"{path}[{index}]: {reason}")
