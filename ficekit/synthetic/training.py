"""What every demo-model trainer shares: its report, and a step/time budget that ends its loop.

Each trainer (train_gan, train_e4e, train_clip, train_densepose, train_parser) writes its model file into
an output folder and returns a TrainReport whose `spec` is the model's bundle.json record; the `python -m
ficekit.synthetic.train` command runs them in order and writes the bundle.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ficekit.bundle import ModelSpec


@dataclass
class TrainReport:
    """One trainer's outcome: where its model is, how long it trained, and its final metrics."""

    role: str  # bundle role: generator, encoder, clip, densepose, parser, segmenter
    spec: ModelSpec  # the bundle.json record (file relative to the output folder)
    steps: int  # optimisation steps taken
    seconds: float  # wall-clock training time
    metrics: dict[str, float] = field(default_factory=dict)  # final training/validation figures
    config: dict[str, Any] = field(default_factory=dict)  # the settings it ran with (seeds, sizes, lr, ...)

    def provenance(self) -> dict[str, Any]:
        """The record bundle.json keeps under provenance.training[role]."""
        return {"steps": self.steps, "seconds": round(self.seconds, 1), "metrics": self.metrics, "config": self.config}


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
