"""Test records without a reference text: no target tokens, no teacher-forced loss, still generated and scored."""

from types import SimpleNamespace

import pytest
import torch

from crabzoo.backbones.loss import IGNORE_INDEX
from crabzoo.data.collate import Processor
from crabzoo.errors import CrabzooError
from crabzoo.paradigms.base import AVLLM
from crabzoo.tasks import get_task


def sample(split, target="", truth=None):
    return SimpleNamespace(split=split, target=target, truth=truth or {"category": "bell", "mask_path": "m.png"})


def reference(s, task="s4"):
    fake = SimpleNamespace(target_ids=lambda text: [len(text), 2])  # stands in for the tokenizer only
    return Processor.reference_ids(fake, s, get_task(task))


def test_target_text_then_formatted_truth_then_none_at_test():
    assert reference(sample("test", target="abc")) == [3, 2]
    box = {"category": "bell", "box": [1, 2, 30, 40], "points": [[5, 6], [7, 8], [9, 10]]}
    formatted = get_task("s4").format_target(box)
    assert reference(sample("test", truth=box)) == [len(formatted), 2]
    # the release's s4 test record: a mask path, no box -> no target tokens
    assert reference(sample("test")) == []


def test_a_training_sample_needs_a_target():
    with pytest.raises(CrabzooError, match="needs truth"):
        reference(sample("train"))


def test_rows_without_target_tokens_are_not_supervised():
    labels = [torch.tensor([IGNORE_INDEX, 5, 6]), torch.tensor([IGNORE_INDEX, IGNORE_INDEX])]
    assert AVLLM._has_target({"tasks": ["s4", "s4"], "labels": labels}) == [True, False]
    omni = {"tasks": ["s4"], "inputs": {"labels": torch.full((1, 4), IGNORE_INDEX)}}
    assert AVLLM._has_target(omni) == [False]
