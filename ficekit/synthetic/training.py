"""What every demo-model trainer shares: its report, and a step/time budget that ends its loop.

Each trainer (train_gan, train_e4e, train_clip, train_densepose, train_parser) writes its model file into
an output folder and returns a TrainReport whose `spec` is the model's bundle.json record; the `python -m
ficekit.synthetic.train` command runs them in order and writes the bundle.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar

import torch

from ficekit.bundle import ModelSpec
from ficekit.checkpoint_io import CheckpointError, load_torch_file

T = TypeVar("T")


@dataclass
class TrainReport:
    """One trainer's outcome: where its model is, how long it trained, and its final metrics."""

    role: str  # bundle role: generator, encoder, clip, densepose, parser, segmenter
    spec: ModelSpec  # the bundle.json record (file relative to the output folder)
    steps: int  # optimisation steps taken
    seconds: float  # wall-clock training time
    metrics: dict[str, float] = field(default_factory=dict)  # final training/validation figures
    config: dict[str, Any] = field(default_factory=dict)  # the settings it ran with (seeds, sizes, lr, ...)
    # Other models the same run wrote (the GAN's co-trained encoder); the orchestrator records them too.
    companions: tuple[TrainReport, ...] = ()

    def provenance(self) -> dict[str, Any]:
        """The record bundle.json keeps under provenance.training[role]."""
        return {"steps": self.steps, "seconds": round(self.seconds, 1), "metrics": self.metrics, "config": self.config}


def trainer_of(path: str | os.PathLike) -> str | None:
    """The trainer named in a checkpoint's 'training' record (ficekit's trainers write one); None when the
    file is missing, unreadable, or has no such record. Decides which files a trainer may replace or reuse."""
    if not Path(path).exists():
        return None
    try:
        payload = load_torch_file(path, "checkpoint")
    except CheckpointError:
        return None
    record = payload.get("training") if isinstance(payload, dict) else None
    trainer = record.get("trainer") if isinstance(record, dict) else None
    return trainer if isinstance(trainer, str) else None


class Budget:
    """Ends a training loop after `steps` steps or `seconds` of wall-clock time, whichever comes first."""

    def __init__(
        self,
        steps: int,  # maximum number of steps
        seconds: float | None = None,  # wall-clock limit; None = no limit
    ) -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if seconds is not None and seconds <= 0:
            raise ValueError(f"seconds must be > 0 or None, got {seconds}")
        self.max_steps = steps
        self.max_seconds = seconds
        self.step = 0
        self.start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def progress(self) -> float:
        """How far along the run the current step is, in [0, 1]: the larger of its step and time fractions, so a
        schedule driven by it ends when whichever limit binds does."""
        done = (self.step - 1) / self.max_steps
        if self.max_seconds is not None:
            done = max(done, self.elapsed / self.max_seconds)
        return min(max(done, 0.0), 1.0)

    def next(self) -> bool:
        """True while another step may run; counts the step."""
        if self.step >= self.max_steps or (self.max_seconds is not None and self.elapsed >= self.max_seconds):
            return False
        self.step += 1
        return True


def loop_metrics(losses: list[float], steps: int, train_seconds: float, started: float) -> dict[str, float]:
    """The figures every trainer reports about its loop: mean loss over the first and the last few steps
    (a window of up to 10, a quarter of the run at most), steps per second, and total seconds since `started`."""
    window = max(1, min(10, len(losses) // 4))
    return {
        "loss_start": sum(losses[:window]) / window,
        "loss_end": sum(losses[-window:]) / window,
        "steps_per_s": steps / max(train_seconds, 1e-9),
        "total_seconds": time.perf_counter() - started,
    }


# ---------------------------------------------------------------------------------------------------
# Batches rendered ahead of the training step.


class Prefetcher(Generic[T]):
    """Pulls items from an iterator in a background thread, `depth` ahead, in the iterator's order.

    Rendering (numpy, one core) then overlaps the training step (torch, which releases the GIL). Use as a
    context manager, or call close(); an exception raised by the iterator is re-raised by next().
    """

    def __init__(
        self,
        items: Iterator[T],  # source; only the background thread touches it
        depth: int = 2,  # items held ready
    ) -> None:
        self._queue: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(items,), name="ficekit-prefetch", daemon=True)
        self._thread.start()

    def _run(self, items: Iterator[T]) -> None:
        try:
            for item in items:
                if not self._put((True, item)):
                    return
        except Exception as e:  # forwarded to the consumer, raised there
            self._put((False, e))
            return
        self._put((False, StopIteration()))

    def _put(self, entry: tuple[bool, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Prefetcher[T]:
        return self

    def __next__(self) -> T:
        ok, value = self._queue.get()
        if not ok:
            self._stop.set()
            raise value
        return value

    def close(self) -> None:
        """Stop the background thread and wait for it."""
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def forked_rng(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """torch.random.fork_rng for the CPU and, when `device` is a CUDA device, that device: the global RNG state
    is restored on exit, so seeding inside leaves the caller's RNG alone."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def cosine_factor(budget: Budget, floor: float = 0.05) -> float:
    """Learning-rate factor for the step `budget` is on: cosine from 1 to `floor` over the budget, whichever of
    steps or seconds is further along (so a time-limited run still ends at the low rate)."""
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * budget.progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def lr_factor(budget: Budget, warmup: float = 0.02, final: float = 0.1) -> float:
    """Linear warm-up over the first `warmup` of the run, then cosine decay to `final`; the run's progress
    is the larger of its step and time fractions, so the schedule ends when the binding budget does."""
    done = budget.progress
    if done < warmup:
        return (done + 1 / budget.max_steps) / (warmup + 1 / budget.max_steps)
    t = (done - warmup) / (1 - warmup)
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * t))
