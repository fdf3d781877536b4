"""A process's place in a torchrun launch, shared by the evaluation runner and the regulariser sweep: rank,
world size, process group (nccl on CUDA, gloo on the CPU), barriers, and the rank's device."""

from __future__ import annotations

import dataclasses
import datetime
import os
from dataclasses import dataclass

import torch

from ficekit.eval.jobs import EvalError

BARRIER_TIMEOUT = datetime.timedelta(hours=24)  # ranks finishing early wait at the barrier for the slowest


@dataclass(frozen=True)
class World:
    """This process's place in a torchrun launch (rank 0 of 1 without one)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None  # set when this process started the process group

    @classmethod
    def from_env(cls) -> World:
        """RANK, WORLD_SIZE and LOCAL_RANK from torchrun's environment (0, 1, 0 without it)."""
        try:
            return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))
        except ValueError as e:
            raise EvalError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers ({e})") from e

    def start(self, device: torch.device) -> World:
        """Join the process group when WORLD_SIZE > 1: nccl on CUDA, gloo on the CPU."""
        import torch.distributed as dist

        if self.size <= 1 or dist.is_initialized():
            return self
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, timeout=BARRIER_TIMEOUT)
        return dataclasses.replace(self, backend=backend)

    def barrier(self) -> None:
        """Wait for every rank (a no-op in a single process)."""
        import torch.distributed as dist

        if self.size > 1 and dist.is_initialized():
            if dist.get_backend() == "nccl":
                dist.barrier(device_ids=[torch.cuda.current_device()])
            else:
                dist.barrier()

    def close(self) -> None:
        """Leave the process group this process started."""
        import torch.distributed as dist

        if self.backend is not None and dist.is_initialized():
            dist.destroy_process_group()


def rank_device(device: str | torch.device, world: World) -> torch.device:
    """The device of this rank: `device` resolved, and under torchrun CUDA's LOCAL_RANK device."""
    from ficekit.pipeline import resolve_device

    d = resolve_device(device)
    if d.type == "cuda" and d.index is None and world.size > 1:
        d = torch.device("cuda", world.local_rank)
    return d
