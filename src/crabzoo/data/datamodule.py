"""The Lightning data module: AV-UIE v2 annotations (or AVSynth) -> task-homogeneous batches.

Batches hold samples of one task each: tasks differ in media shapes (10 frames vs one image, 1-s vs 2-s audio
windows), and one task per batch keeps every tensor rectangular. Tasks are mixed across batches.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from crabzoo.data.schema import Sample
from crabzoo.errors import CrabzooError


@contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """An inter-process lock held while the block runs (an advisory ``flock`` on ``lock``)."""
    import fcntl

    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class SampleDataset(Dataset):
    """Samples of several tasks, processed lazily; corrupt media yields a skipped item (see :mod:`crabzoo.data.skips`).

    Args:
        samples: The samples, in a fixed order.
        processor: Sample -> item callable (:class:`crabzoo.data.collate.Processor`).
        strict: Raise on the first corrupt medium instead of skipping it.
    """

    def __init__(self, samples: Sequence[Sample], processor: Any, strict: bool = False) -> None:
        self.samples = list(samples)
        self.processor = processor
        self.strict = strict

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from crabzoo.data.media import MediaError

        from crabzoo.data.skips import CorruptMediaError, skipped_item

        sample = self.samples[index]
        try:
            return self.processor(sample)
        except MediaError as err:
            if self.strict:
                raise CorruptMediaError(
                    f"corrupt media in sample {sample.id} ({sample.task}): {err.path}: {err.reason} "
                    "(fix or remove the file, or set data.init_args.strict: false to skip such samples)"
                ) from None
            return skipped_item(sample, err.path, err.reason)


class TaskBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches drawn from one task at a time, all tasks' batches shuffled together.

    Each rank of a distributed run takes every ``world_size``-th batch of the same epoch order, so ranks see
    disjoint batches. The order depends only on ``seed`` and the epoch (call :meth:`set_epoch`).

    Args:
        task_of: Task name of every dataset index.
        batch_size: Samples per batch.
        shuffle: Shuffle samples within tasks and batches across tasks.
        seed: Base seed of the order.
        drop_last: Drop each task's last incomplete batch.
    """

    def __init__(self, task_of: Sequence[str], batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        if isinstance(task_of, torch.utils.data.Sampler):  # Lightning re-instantiating us around its own sampler
            raise CrabzooError(
                "crabzoo's task batch samplers shard batches by rank themselves; keep "
                "`trainer.use_distributed_sampler: false` (the crabzoo CLI's default; a config sets it to true)"
            )
        self.task_of = list(task_of)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order :meth:`__iter__` yields."""
        self.epoch = epoch

    @staticmethod
    def _rank_world() -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 100003 + self.epoch)
        by_task: dict[str, list[int]] = {}
        for i, task in enumerate(self.task_of):
            by_task.setdefault(task, []).append(i)
        batches: list[list[int]] = []
        for task in sorted(by_task):
            idx = by_task[task]
            if self.shuffle:
                rng.shuffle(idx)
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start : start + self.batch_size]
                if len(chunk) == self.batch_size or not self.drop_last:
                    batches.append(chunk)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = self._rank_world()
        batches = self._batches()
        usable = len(batches) - len(batches) % world if world > 1 else len(batches)
        yield from batches[rank:usable:world]

    def __len__(self) -> int:
        _, world = self._rank_world()
        return len(self._batches()) // world


class PredictBatches(torch.utils.data.Sampler[list[int]]):
    """Every batch of a :class:`TaskBatchSampler`, dealt to the ranks in turn: none dropped, none repeated.

    Rank ``r`` of ``W`` takes batches ``r, r + W, ...``, so ranks may get one batch more than others (prediction
    has no per-step collective). Lightning rebuilds a prediction batch sampler that exposes ``batch_size`` and
    ``drop_last`` around its own sampler; this one has neither, so Lightning only wraps it to track indices.

    Args:
        batches: The batch order (one task per batch, a fixed order without shuffling).
    """

    def __init__(self, batches: TaskBatchSampler) -> None:
        self.source = batches

    def _mine(self) -> list[list[int]]:
        rank, world = TaskBatchSampler._rank_world()
        return self.source._batches()[rank::world]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._mine()

    def __len__(self) -> int:
        return len(self._mine())


# PredictBatches hands out every batch by design; Lightning warns that it cannot check a custom sampler
warnings.filterwarnings("ignore", message=r"You are using a custom batch sampler `PredictBatches` for prediction")


class AVUIEDataModule(L.LightningDataModule):
    """AV-UIE v2 data (the release or AVSynth) for training, validation and testing.

    Args:
        root: Folder holding the task folders (or a parent holding ``AVUIE_2/``).
        tasks: Task folders to use; ``None`` takes every task folder found under ``root``.
        train_split: Annotation file stem used for training.
        val_split: Annotation file stem used for validation/testing.
        batch_size: Samples per batch (all of one task).
        num_workers: Data-loading worker processes.
        max_train_per_task: Cap on training samples per task (``None``: all).
        max_val_per_task: Cap on validation samples per task (``None``: all).
        strict: Fail on malformed records or corrupt media instead of skipping and counting them.
        synth: If set and ``root`` holds no data yet, generate AVSynth there first with these options
            (e.g. ``{"clips": 400, "seed": 0}``); see ``crabzoo data synth``. Its ``tasks`` key names the tasks
            to generate (default: ``tasks``): give the full list when runs that train on different task subsets
            share one data folder (a transfer study), so that they all read the same data.
        seed: Seed of the batch order.
        mixing: Training task mixing: ``concat`` (every sample once per epoch), ``temperature`` or ``weights``
            (see :class:`crabzoo.data.mixing.TaskMixingSampler`).
        mixing_temperature: ``T`` of ``temperature`` mixing (task share ``∝ n^(1/T)``).
        mixing_weights: Task -> weight for ``weights`` mixing.
        group_by_length: Batch training samples of similar text length together (less padding).
        packing: Pack each training batch's samples into shared rows after media splicing
            (:mod:`crabzoo.data.packing`): position ids restart per sample, a block-diagonal causal mask keeps
            samples apart, per-sample losses and task ids are kept. Validation, testing and generation stay
            unpacked.
        pack_length: Row capacity of packing, in LLM positions after splicing (``None``: each batch's longest
            sample, so no row is longer than the unpacked batch).
    """

    def __init__(
        self,
        root: str,
        tasks: list[str] | None = None,
        train_split: str = "train",
        val_split: str = "test",
        batch_size: int = 8,
        num_workers: int = 0,
        max_train_per_task: int | None = None,
        max_val_per_task: int | None = None,
        strict: bool = False,
        synth: dict[str, Any] | None = None,
        seed: int = 0,
        mixing: str = "concat",
        mixing_temperature: float = 1.0,
        mixing_weights: dict[str, float] | None = None,
        group_by_length: bool = False,
        packing: bool = False,
        pack_length: int | None = None,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.tasks = list(tasks) if tasks else None
        self.train_split, self.val_split = train_split, val_split
        self.batch_size, self.num_workers = batch_size, num_workers
        self.max_train_per_task, self.max_val_per_task = max_train_per_task, max_val_per_task
        self.strict = strict
        self.synth = synth
        self.seed = seed
        self.mixing, self.mixing_temperature, self.mixing_weights = mixing, mixing_temperature, mixing_weights
        self.group_by_length = group_by_length
        if pack_length is not None and pack_length < 1:
            raise CrabzooError(
                f"data.init_args.pack_length must be >= 1 (or null for each batch's longest sample), got {pack_length}"
            )
        self.packing, self.pack_length = packing, pack_length
        self.processor: Any = None
        self.splits: dict[str, list[Sample]] = {}
        self.skipped: dict[str, list] = {}

    @property
    def task_names(self) -> list[str]:
        """Tasks in use (resolved from ``root`` when ``tasks`` is not given)."""
        if self.tasks is None:
            self.tasks = self._discover()
        return self.tasks

    def _discover(self) -> list[str]:
        from crabzoo.tasks import TASKS

        base = self.root / "AVUIE_2" if (self.root / "AVUIE_2").is_dir() else self.root
        found = sorted(p.name for p in base.iterdir() if p.is_dir() and p.name in TASKS) if base.is_dir() else []
        if not found:
            raise CrabzooError(f"no task folders found under {self.root}; generate data with `crabzoo data synth --out {self.root}`")
        return found

    def prepare_data(self) -> None:
        if self.synth is not None:
            from crabzoo.data.avsynth import ensure_avsynth

            options = dict(self.synth)
            tasks = options.pop("tasks", self.tasks)
            with _exclusive(self.root.parent / f".{self.root.name}.lock"):  # runs started together generate once
                ensure_avsynth(self.root, tasks=tasks, **options)
        if not self.root.exists():
            raise CrabzooError(
                f"data directory {self.root} does not exist; create it with `crabzoo data synth --out {self.root}` "
                "or point data.init_args.root at an AV-UIE v2 release"
            )

    def _read(self, split: str, cap: int | None) -> list[Sample]:
        from crabzoo.data.avuie import read_split

        samples: list[Sample] = []
        for task in self.task_names:
            result = read_split(self.root, task, split, strict=self.strict)
            self.skipped[f"{task}/{split}"] = result.skipped
            samples.extend(result.samples[:cap] if cap is not None else result.samples)
        return samples

    def setup(self, stage: str | None = None) -> None:
        if self.processor is None:
            module = self.trainer.lightning_module if self.trainer is not None else None
            if module is None or not hasattr(module, "make_processor"):
                raise CrabzooError("AVUIEDataModule needs a crabzoo paradigm model (one with make_processor())")
            self.processor = module.make_processor()
            if self.packing and not getattr(module, "supports_packing", False):
                raise CrabzooError(
                    f"data.init_args.packing: {type(module).__name__} with {type(module.backbone).__name__} does not "
                    "support sequence packing (the modular and interleaved paradigms with an HFCausalLM backbone do); "
                    "set data.init_args.packing: false"
                )
        if stage in (None, "fit") and "train" not in self.splits:
            self.splits["train"] = self._read(self.train_split, self.max_train_per_task)
        if "val" not in self.splits:
            self.splits["val"] = self._read(self.val_split, self.max_val_per_task)

    def _loader(self, samples: list[Sample], shuffle: bool) -> DataLoader:
        sampler = TaskBatchSampler([s.task for s in samples], self.batch_size, shuffle=shuffle, seed=self.seed)
        return self._batches(DataLoader, samples, sampler)

    def _batches(
        self, loader_cls: type[DataLoader], samples: list[Sample], sampler: Any, packed: bool = False
    ) -> DataLoader:
        """A ``loader_cls`` over ``samples`` processed by this module's processor, batched by ``sampler``.

        The loader draws its per-epoch worker seed from its own generator, not the global one: otherwise each
        epoch start would advance the global generator (dropout), and a run resumed from an epoch-end
        checkpoint would draw differently from the uninterrupted run. With ``packed`` the batches are marked
        for sequence packing (:class:`~crabzoo.data.packing.PackingCollate`).
        """
        from crabzoo.data.packing import PackingCollate

        collate = PackingCollate(self.processor.collate, self.pack_length) if packed else self.processor.collate
        return loader_cls(
            SampleDataset(samples, self.processor, strict=self.strict),
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),
        )

    # --- scale hook (crabzoo.data.mixing): weighted, distributed, resumable task mixing for training --------
    def train_dataloader(self) -> DataLoader:
        """Training batches from :class:`~crabzoo.data.mixing.TaskMixingSampler` in a resumable loader.

        The loader's state (epoch, batches consumed) goes into Lightning checkpoints, so a resumed run continues
        the same epoch order. Length grouping uses the text length (instruction + target) as the proxy: batches
        hold one task, whose media tokens are the same for every sample. With ``packing`` each batch's samples
        are packed into shared rows by the paradigm, after media splicing.
        """
        from crabzoo.data.mixing import ResumableDataLoader, TaskMixingSampler

        samples = self.splits["train"]
        lengths = [len(s.instruction) + len(s.target or "") for s in samples] if self.group_by_length else None
        sampler = TaskMixingSampler(
            [s.task for s in samples], self.batch_size, mixing=self.mixing, temperature=self.mixing_temperature,
            weights=self.mixing_weights, lengths=lengths, seed=self.seed,
        )
        return self._batches(ResumableDataLoader, samples, sampler, packed=self.packing)
    # --- end of scale hook ----------------------------------------------------------------------------------

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.splits["val"], shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.splits["val"], shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """Every ``val_split`` sample once over all ranks (:class:`PredictBatches`), one task per batch."""
        samples = self.splits["val"]
        order = TaskBatchSampler([s.task for s in samples], self.batch_size, shuffle=False, seed=self.seed)
        return self._batches(DataLoader, samples, PredictBatches(order))
