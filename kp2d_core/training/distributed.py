"""Process placement for training: one process, or many under ``torchrun`` (DDP)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
import os

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler

from kp2d_core.model.checkpoint import resolve_device


@dataclass
class Context:
    """Process placement: rank, world size and device."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device('cpu'))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_agree(self, flag: bool) -> bool:
        """True only if ``flag`` is True on every rank (every rank takes the same decision)."""
        if self.world <= 1:
            return flag
        value = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item() > 0)

    def close(self) -> None:
        if self.world > 1:
            dist.destroy_process_group()


def setup_distributed(device: str) -> Context:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on CUDA, else gloo)."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    if world <= 1:
        return Context(device=resolve_device(device))
    use_cuda = torch.cuda.is_available() and device != 'cpu'
    dist.init_process_group('nccl' if use_cuda else 'gloo')
    local = int(os.environ.get('LOCAL_RANK', '0'))
    if use_cuda:
        torch.cuda.set_device(local)
    dev = torch.device(f'cuda:{local}' if use_cuda else 'cpu')
    return Context(dist.get_rank(), world, dev)


class SkipSampler(Sampler[int]):
    """Yield a sampler's indices after dropping the first ``skip`` (for mid-epoch resume)."""

    def __init__(self, sampler: DistributedSampler, skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        for position, index in enumerate(self.sampler):
            if position >= self.skip:
                yield index

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)
