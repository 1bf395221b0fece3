"""Task mixing: weighted, distributed, resumable batch sampling with optional length grouping.

:class:`TaskMixingSampler` yields batches of one task each (tasks differ in media shapes). How often each task
comes up is set by ``mixing``:

* ``"concat"``: every sample once per epoch (a task's share is its size);
* ``"temperature"``: task ``t`` gets a share ``∝ n_t^(1/T)`` (T = 1 is ``concat``-like, large T tends to uniform);
* ``"weights"``: explicit shares ``{task: weight}``.

With shares, the epoch keeps the ``concat`` number of batches and each task gets ``round(share · batches)`` of
them (largest remainder), drawn from a reshuffled stream of its samples (small tasks repeat, large ones are
subsampled). With ``lengths`` the samples of each task are sorted by length inside windows of
``group_window`` batches before being cut into batches (less padding), and the batches are shuffled again.

Every rank computes the same epoch and keeps every ``world_size``-th batch, so ranks get disjoint batches and
the same composition; the state (``epoch``, batches already consumed) makes a mid-epoch resume exact.
:class:`ResumableDataLoader` counts the batches handed to the training loop so Lightning can checkpoint it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from crabzoo.errors import CrabzooError

MIXINGS = ("concat", "temperature", "weights")


def task_shares(
    sizes: Mapping[str, int], mixing: str = "concat", temperature: float = 1.0, weights: Mapping[str, float] | None = None
) -> dict[str, float]:
    """The fraction of batches each task gets.

    Args:
        sizes: Samples per task.
        mixing: ``concat``, ``temperature`` or ``weights``.
        temperature: ``T`` of temperature mixing (``> 0``).
        weights: Task -> weight for ``weights`` mixing (tasks left out get 0).

    Returns:
        Task -> share, summing to 1.
    """
    if mixing not in MIXINGS:
        raise CrabzooError(f"unknown task mixing {mixing!r}; choose one of {list(MIXINGS)}")
    if mixing == "weights":
        if not weights:
            raise CrabzooError("task mixing 'weights' needs weights: {task: weight, ...}")
        unknown = sorted(set(weights) - set(sizes))
        if unknown:
            raise CrabzooError(f"mixing weights name unknown task(s) {unknown}; tasks are {sorted(sizes)}")
        raw = {t: float(weights.get(t, 0.0)) for t in sizes}
        if any(w < 0 for w in raw.values()) or sum(raw.values()) <= 0:
            raise CrabzooError(f"mixing weights must be >= 0 with a positive sum, got {dict(weights)}")
    elif mixing == "temperature":
        if temperature <= 0:
            raise CrabzooError(f"mixing temperature must be > 0, got {temperature}")
        raw = {t: float(n) ** (1.0 / temperature) if n else 0.0 for t, n in sizes.items()}
    else:
        raw = {t: float(n) for t, n in sizes.items()}
    total = sum(raw.values())
    return {t: w / total for t, w in raw.items()}


def allocate(shares: Mapping[str, float], total: int) -> dict[str, int]:
    """Split ``total`` batches by ``shares`` with the largest-remainder method (the counts sum to ``total``)."""
    exact = {t: s * total for t, s in shares.items()}
    counts = {t: int(math.floor(v)) for t, v in exact.items()}
    left = total - sum(counts.values())
    for t in sorted(exact, key=lambda t: (counts[t] - exact[t], t))[:left]:
        counts[t] += 1
    return counts


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class TaskMixingSampler(Sampler[list[int]]):
    """Task-homogeneous batches mixed across tasks; distributed, stateful and optionally length-grouped.

    Under Lightning, keep ``trainer.use_distributed_sampler: false`` (the crabzoo CLI's default: this sampler
    splits the batches across ranks itself). Lightning calls ``set_epoch`` through the ``sampler`` attribute, which is the sampler itself.

    Args:
        task_of: Task name of every dataset index.
        batch_size: Samples per batch (per rank).
        mixing: ``concat``, ``temperature`` or ``weights`` (see :func:`task_shares`).
        temperature: ``T`` of temperature mixing.
        weights: Task -> weight for ``weights`` mixing.
        lengths: Token length of every dataset index; enables length grouping.
        group_window: Batches per length-sorting window.
        shuffle: Shuffle samples and batches (``False``: dataset order, for evaluation).
        seed: Base seed; the order depends only on it and the epoch.
        drop_last: Drop each task's last incomplete batch (``concat``) and the batches that do not split evenly
            across ranks (otherwise the first batches are repeated to even them out).
        epoch_batches: Batches per epoch over all ranks (default: the ``concat`` count).
        rank: This process's rank (default: from ``torch.distributed``).
        world_size: Number of ranks (default: from ``torch.distributed``).
    """

    def __init__(
        self,
        task_of: Sequence[str],
        batch_size: int,
        mixing: str = "concat",
        temperature: float = 1.0,
        weights: Mapping[str, float] | None = None,
        lengths: Sequence[int] | None = None,
        group_window: int = 32,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        epoch_batches: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if isinstance(task_of, Sampler) or not all(isinstance(t, str) for t in task_of):
            raise CrabzooError(
                "TaskMixingSampler takes the task name of every sample; if Lightning rebuilt it with a "
                "DistributedSampler, keep `trainer.use_distributed_sampler: false` (the crabzoo CLI's default)"
            )
        if batch_size < 1:
            raise CrabzooError(f"batch_size must be >= 1, got {batch_size}")
        if lengths is not None and len(lengths) != len(task_of):
            raise CrabzooError(f"lengths has {len(lengths)} entries for {len(task_of)} samples")
        self.task_of = list(task_of)
        self.batch_size = batch_size
        self.mixing, self.temperature, self.weights = mixing, temperature, dict(weights or {})
        self.lengths = list(lengths) if lengths is not None else None
        self.group_window = max(1, group_window)
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.epoch_batches = epoch_batches
        self._rank, self._world = rank, world_size
        self.by_task: dict[str, list[int]] = {}
        for i, task in enumerate(self.task_of):
            self.by_task.setdefault(task, []).append(i)
        self.shares = task_shares({t: len(v) for t, v in self.by_task.items()}, mixing, temperature, self.weights)
        self.epoch = 0
        self.skip = 0

    @property
    def sampler(self) -> TaskMixingSampler:
        """The sampler itself (Lightning calls ``batch_sampler.sampler.set_epoch``)."""
        return self

    def rank_world(self) -> tuple[int, int]:
        """``(rank, world_size)`` used to split the batches."""
        rank, world = _rank_world()
        return (rank if self._rank is None else self._rank), (world if self._world is None else self._world)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to iterate (a change of epoch forgets a pending resume offset)."""
        if epoch != self.epoch:
            self.skip = 0
        self.epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        """``epoch`` and ``skip`` (batches of this rank already consumed in that epoch)."""
        return {"epoch": self.epoch, "skip": self.skip, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume: the next iteration of ``state["epoch"]`` starts after ``state["skip"]`` batches."""
        if int(state.get("seed", self.seed)) != self.seed:
            raise CrabzooError(f"sampler state was saved with seed {state['seed']}, this run uses seed {self.seed}")
        self.epoch = int(state["epoch"])
        self.skip = int(state["skip"])

    def _concat_counts(self) -> dict[str, int]:
        bs = self.batch_size
        if self.drop_last:
            return {t: len(v) // bs for t, v in self.by_task.items()}
        return {t: math.ceil(len(v) / bs) for t, v in self.by_task.items()}

    def _task_batches(self, task: str, n_batches: int, rng: random.Random, exact: bool) -> list[list[int]]:
        pool = self.by_task[task]
        if exact:
            stream = list(pool)
            if self.shuffle:
                rng.shuffle(stream)
        else:
            stream = []
            while len(stream) < n_batches * self.batch_size:
                chunk = list(pool)
                if self.shuffle:
                    rng.shuffle(chunk)
                stream.extend(chunk)
            stream = stream[: n_batches * self.batch_size]
        if self.lengths is not None:
            window = self.group_window * self.batch_size
            grouped: list[int] = []
            for start in range(0, len(stream), window):
                grouped.extend(sorted(stream[start : start + window], key=lambda i: self.lengths[i]))
            stream = grouped
        batches = [stream[s : s + self.batch_size] for s in range(0, len(stream), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        return batches[:n_batches]

    def global_batches(self, epoch: int | None = None) -> list[list[int]]:
        """All ranks' batches of an epoch, in order (rank ``r`` takes positions ``r, r + world, ...``)."""
        rng = random.Random(f"{self.seed}/{self.epoch if epoch is None else epoch}")
        concat = self._concat_counts()
        if self.mixing == "concat" and self.epoch_batches is None:
            counts, exact = concat, True
        else:
            counts, exact = allocate(self.shares, self.epoch_batches or sum(concat.values())), False
        batches: list[list[int]] = []
        for task in sorted(self.by_task):
            if counts.get(task, 0) > 0:
                batches.extend(self._task_batches(task, counts[task], rng, exact))
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def rank_batches(self, epoch: int | None = None) -> list[list[int]]:
        """This rank's batches of an epoch (equal counts on every rank)."""
        rank, world = self.rank_world()
        batches = self.global_batches(epoch)
        if world > 1:
            if self.drop_last:
                batches = batches[: len(batches) - len(batches) % world]
            elif len(batches) % world:
                batches = batches + batches[: world - len(batches) % world]
        return batches[rank::world]

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.skip = self.skip, 0
        yield from self.rank_batches()[skip:]

    def __len__(self) -> int:
        return len(self.rank_batches())


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` that Lightning can checkpoint mid-epoch (``state_dict``/``load_state_dict``).

    It counts the batches it has handed out in the current epoch (in the main process, so prefetching workers
    do not skew the count) and stores them with its batch sampler's state. On resume the sampler skips those
    batches by index, without loading them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._consumed = 0

    def __iter__(self) -> Iterator[Any]:
        sampler = self.batch_sampler
        self._consumed = int(getattr(sampler, "skip", 0) or 0)
        for batch in super().__iter__():
            self._consumed += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        sampler = self.batch_sampler
        state = dict(sampler.state_dict()) if hasattr(sampler, "state_dict") else {}
        state["skip"] = self._consumed
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        sampler = self.batch_sampler
        if not hasattr(sampler, "load_state_dict"):
            raise CrabzooError("ResumableDataLoader needs a batch sampler with load_state_dict (TaskMixingSampler)")
        sampler.load_state_dict(state)
        self._consumed = int(state.get("skip", 0))


def padding_tokens(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> tuple[int, int]:
    """``(padding tokens, real tokens)`` when each batch is padded to its longest sample."""
    pad = real = 0
    for batch in batches:
        if not batch:
            continue
        ls = [lengths[i] for i in batch]
        pad += max(ls) * len(ls) - sum(ls)
        real += sum(ls)
    return pad, real
