"""Training batches made ahead of the loop by worker processes (``train.workers``), in step order.

A batch is a pure function of its step (``TrainBatches``), so workers change when a batch is made,
never what it holds: a run with workers trains on exactly the batches of one without, and resumes the
same. Why: synthesising degradations (rain streaks, haze, JPEG) takes ~18 ms a batch of 4 x 192² on
one core, longer than a GPU step of the EFM; on a CPU-only machine the cores are better spent on the
model (the default, 0 workers). Workers are spawned, not forked: a fork after torch has run its
OpenMP thread pool hung here in the first batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import torch
from torch.utils.data import DataLoader, Dataset

from qdr_train.data.datasets import Batch, TrainBatches

PREFETCH = 4  # batches each worker keeps ready


class _StepBatches(Dataset):
    """Step -> that step's batch, on the CPU: ``TrainBatches`` as a dataset that ``DataLoader`` workers index."""

    def __init__(self, batches: TrainBatches) -> None:
        self.batches = batches

    def __getitem__(self, step: int) -> Batch:
        return self.batches(step, torch.device("cpu"))


def _one_thread(worker_id: int) -> None:
    """Each worker on one core: many single-threaded workers beat a few that fight over the cores."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def step_batches(batches: TrainBatches, start: int, stop: int, workers: int = 0,
                 pin_memory: bool = False) -> Iterator[Batch]:
    """Yield the batches of steps ``start`` .. ``stop - 1`` in order, on the CPU: made here or by ``workers``."""
    if workers == 0:
        for step in range(start, stop):
            yield batches(step, torch.device("cpu"))
        return
    loader = DataLoader(_StepBatches(batches), batch_size=None, sampler=range(start, stop), num_workers=workers,
                        pin_memory=pin_memory, worker_init_fn=_one_thread, prefetch_factor=PREFETCH,
                        multiprocessing_context="spawn")
    yield from loader
