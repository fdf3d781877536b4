"""Batches of rendered people for the demo-model trainers, from disjoint training and held-out seed ranges.

Training draws seeds from [0, HELD_OUT_SEED_START); evaluation (ficekit.eval.synthetic) uses seeds from
HELD_OUT_SEED_START on, so no held-out person is ever seen in training.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ficekit.synthetic.render import render
from ficekit.synthetic.world import DEFAULT_WORLD, check_world

HELD_OUT_SEED_START = 1_000_000_000


@dataclass
class SyntheticBatch:
    """Rendered samples stacked as tensors.

    images [B,3,S,S] float in [0,1]; parsing [B,S,S] long (PARSING_LABELS values); parts [B,S,S] long
    (DensePose I, 0 = background); u, v [B,S,S] float in [0,1]; captions: one list of phrasings per sample;
    seeds: the render seeds.
    """

    images: torch.Tensor
    parsing: torch.Tensor
    parts: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    captions: list[list[str]]
    seeds: list[int]

    def to(self, device: torch.device | str) -> SyntheticBatch:
        """The tensors moved to `device` (captions and seeds unchanged)."""
        move = {k: getattr(self, k).to(device) for k in ("images", "parsing", "parts", "u", "v")}
        return SyntheticBatch(**move, captions=self.captions, seeds=self.seeds)


def render_batch(seeds: Sequence[int], size: int, world: str = DEFAULT_WORLD) -> SyntheticBatch:
    """Render the people of `seeds` in `world` at `size` x `size` pixels and stack them."""
    samples = [render(int(s), size=size, world=world) for s in seeds]
    return SyntheticBatch(
        images=torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float().div(255),
        parsing=torch.from_numpy(np.stack([s.parsing for s in samples]).astype(np.int64)),
        parts=torch.from_numpy(np.stack([s.densepose.I for s in samples]).astype(np.int64)),
        u=torch.from_numpy(np.stack([s.densepose.U for s in samples]).astype(np.float32)),
        v=torch.from_numpy(np.stack([s.densepose.V for s in samples]).astype(np.float32)),
        captions=[list(s.captions) for s in samples],
        seeds=[int(s) for s in seeds],
    )


def training_batches(batch_size: int, size: int, seed: int = 0, world: str = DEFAULT_WORLD) -> Iterator[SyntheticBatch]:
    """An endless stream of training batches of `world`; seeded, so a run is repeatable."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_world(world)
    rng = np.random.default_rng(seed)
    while True:
        yield render_batch(rng.integers(0, HELD_OUT_SEED_START, size=batch_size).tolist(), size, world)


def held_out_seeds(n: int, seed: int = 0) -> list[int]:
    """`n` evaluation seeds, all outside the training range."""
    return [HELD_OUT_SEED_START + seed * 100_000 + i for i in range(n)]
