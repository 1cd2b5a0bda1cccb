"""Multi-process training under `torchrun`: who am I, the process group, and the few collectives the loop needs.

`torchrun` sets WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in
every worker's environment. With WORLD_SIZE unset or 1 the trainer runs as a
single process and `SINGLE_PROCESS` makes every collective an identity, so
that path computes exactly what it computed before this module existed.

Importing this module does not import torch (the CLI parses settings first
and fails fast on bad ones).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import torch
    from torch.distributed import ProcessGroup

log = logging.getLogger(__name__)

ENV_DIST_TIMEOUT: Final = "KUBETUNE_DIST_TIMEOUT_SECONDS"
DEFAULT_DIST_TIMEOUT_SECONDS: Final = 300.0


@dataclass(frozen=True)
class WorldSettings:
    """This worker's place in a torchrun job (only built when WORLD_SIZE > 1)."""

    rank: int
    local_rank: int
    size: int
    timeout_seconds: float = DEFAULT_DIST_TIMEOUT_SECONDS


def world_from_env(env: Mapping[str, str]) -> WorldSettings | None:
    """The torchrun worker settings, or None for a single process (WORLD_SIZE unset, empty or 1).

    Raises ValueError naming the variable when one is missing or malformed.
    """

    def integer(name: str) -> int:
        text = env.get(name, "").strip()
        if not text:
            raise ValueError(f"{name} must be set when WORLD_SIZE > 1 (torchrun sets it)")
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{name} must be an integer, got {text!r}") from None

    if not env.get("WORLD_SIZE", "").strip():
        return None
    size = integer("WORLD_SIZE")
    if size < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1, got {size}")
    if size == 1:
        return None
    rank, local_rank = integer("RANK"), integer("LOCAL_RANK")
    if not 0 <= rank < size:
        raise ValueError(f"RANK must be in 0..{size - 1}, got {rank}")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not env.get(name, "").strip():
            raise ValueError(f"{name} must be set when WORLD_SIZE > 1 (torchrun sets it)")
    timeout_text = env.get(ENV_DIST_TIMEOUT, "").strip()
    try:
        timeout = float(timeout_text) if timeout_text else DEFAULT_DIST_TIMEOUT_SECONDS
    except ValueError:
        raise ValueError(f"{ENV_DIST_TIMEOUT} must be a number, got {timeout_text!r}") from None
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"{ENV_DIST_TIMEOUT} must be a finite number > 0, got {timeout_text!r}")
    return WorldSettings(rank=rank, local_rank=local_rank, size=size, timeout_seconds=timeout)


class Collectives:
    """What the training loop needs from its peers. With one process every method is an identity."""

    def __init__(self, rank: int = 0, size: int = 1, group: ProcessGroup | None = None, backend: str = "") -> None:
        self.rank = rank
        self.size = size
        self.group = group
        self.backend = backend

    def sum(self, *values: float) -> tuple[float, ...]:
        """Element-wise sums over all ranks (float64 on the CPU); every rank gets the same result."""
        if self.size == 1:
            return values
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor, group=self.group)
        return tuple(float(v) for v in tensor.tolist())

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on some rank: one rank's stop request stops all."""
        if self.size == 1:
            return flag
        return self.sum(1.0 if flag else 0.0)[0] > 0

    def bounds(self, n: int) -> tuple[int, int]:
        """This rank's contiguous slice [start, end) of n items; the slices of all ranks partition 0..n."""
        return n * self.rank // self.size, n * (self.rank + 1) // self.size


SINGLE_PROCESS: Final = Collectives()


def worker_device(device: torch.device, world: WorldSettings | None) -> torch.device:
    """Under torchrun an unindexed CUDA device means this worker's GPU, `cuda:LOCAL_RANK`."""
    import torch

    if world is None or device.type != "cuda":
        return device
    if device.index is None:
        device = torch.device("cuda", world.local_rank)
    torch.cuda.set_device(device)
    return device


@contextmanager
def process_group(world: WorldSettings | None, device: torch.device) -> Iterator[Collectives]:
    """Join the torchrun job (env:// rendezvous) for the duration of the block; SINGLE_PROCESS without one.

    The timeout bounds every collective, so a dead or stuck peer fails this
    worker after `timeout_seconds` instead of hanging it forever.
    """
    if world is None:
        yield SINGLE_PROCESS
        return
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = timedelta(seconds=world.timeout_seconds)
    dist.init_process_group(backend, timeout=timeout, rank=world.rank, world_size=world.size)
    try:
        # Stop flags and metric sums are a few CPU floats: a gloo group keeps them off the GPU stream.
        group = None
        if backend == "nccl":
            new = dist.new_group(backend="gloo", timeout=timeout)
            assert isinstance(new, dist.ProcessGroup)  # every rank is a member of this group
            group = new
        log.info(
            "joined the process group: rank %d of %d (local rank %d), backend %s, timeout %g s",
            world.rank,
            world.size,
            world.local_rank,
            backend,
            world.timeout_seconds,
        )
        yield Collectives(world.rank, world.size, group, backend)
    finally:
        dist.destroy_process_group()
