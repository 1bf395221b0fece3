"""The data module's training loader uses the task-mixing sampler (weights, length grouping, resumable state)."""

from __future__ import annotations

from collections import Counter

from crabzoo.data.datamodule import AVUIEDataModule
from crabzoo.data.mixing import ResumableDataLoader, TaskMixingSampler
from crabzoo.data.schema import Sample


class TextOnly:
    """Item = the sample's id and task (the real Processor needs a backbone; the loader wiring does not)."""

    def __call__(self, sample: Sample) -> dict:
        return {"id": sample.id, "task": sample.task}

    @staticmethod
    def collate(items: list[dict]) -> dict:
        return {"ids": [it["id"] for it in items], "tasks": [it["task"] for it in items]}


def test_train_loader_mixes_by_weight_and_resumes(tmp_path):
    samples = [Sample(id=f"a{i}", task="ave", split="train", instruction="x" * (i % 7)) for i in range(60)]
    samples += [Sample(id=f"k{i}", task="ks", split="train", instruction="y" * i) for i in range(20)]
    dm = AVUIEDataModule(str(tmp_path), batch_size=4, mixing="weights", mixing_weights={"ave": 1, "ks": 1}, group_by_length=True)
    dm.processor, dm.splits["train"] = TextOnly(), samples
    loader = dm.train_dataloader()
    assert isinstance(loader, ResumableDataLoader) and isinstance(loader.batch_sampler, TaskMixingSampler)
    batches = list(loader)
    counts = Counter(b["tasks"][0] for b in batches)
    assert counts == {"ave": 10, "ks": 10} and all(len(set(b["tasks"])) == 1 for b in batches)
    it = iter(loader)
    first = [next(it) for _ in range(3)]
    state = loader.state_dict()
    assert state["skip"] == 3
    again = dm.train_dataloader()
    again.load_state_dict(state)
    assert [b["ids"] for b in again] == [b["ids"] for b in batches][3:]
    assert [b["ids"] for b in first] == [b["ids"] for b in batches][:3]
