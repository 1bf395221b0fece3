"""Per-task generation lengths (``task_max_new_tokens``) of the AV-LLM paradigms."""

from types import SimpleNamespace

from crabzoo.paradigms.base import AVLLM


def length(tasks, per_task, default=32):
    return AVLLM.generation_length(SimpleNamespace(task_max_new_tokens=per_task, max_new_tokens=default), tasks)


def test_batch_takes_the_longest_of_its_tasks_and_the_default_elsewhere():
    per_task = {"ks": 12, "s4": 72}
    assert length(["ks", "ks"], per_task) == 12
    assert length(["ks", "s4"], per_task) == 72
    assert length(["ave"], per_task) == 32  # not listed: max_new_tokens
    assert length(["ks", "ave"], per_task) == 32
    assert length([], per_task) == 32
    assert length(["ks"], {}) == 32
