"""Data parallelism shared by the search and the training loop: the process context, collectives, sampler.

``torchrun`` describes the run through ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK``; without it the run is a
single process and every collective below is a no-op.  Every collective fails after a finite timeout
(``--dist-timeout``, default 600 s) instead of waiting forever for a rank that died, and the workers that
``torchrun --max-restarts`` starts again join a fresh process group (:func:`init_distributed`).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Iterator, List, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import Sampler

from ..errors import UserError

__all__ = ['DEFAULT_DIST_TIMEOUT_S', 'DistContext', 'check_device', 'init_distributed',
           'elastic_restart_count', 'allreduce_mean_', 'broadcast_module_', 'EpochShardSampler']

DEFAULT_DIST_TIMEOUT_S = 600.0


@dataclass
class DistContext:
    """Where this process sits in a (possibly single-process) data-parallel run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device('cpu'))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        """Rank 0 alone writes files and prints."""
        return self.rank == 0

    def all_sum(self, values: Sequence[float]) -> List[float]:
        """``values`` summed over every rank (float64)."""
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        if self.enabled:
            dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group (if this run joined one)."""
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def elastic_restart_count() -> int:
    """How many times ``torchrun --max-restarts`` has restarted this job's workers (0: the first try)."""
    return int(os.environ.get('TORCHELASTIC_RESTART_COUNT') or 0)


def _attempt_store(world: int, timeout: timedelta) -> Optional[dist.Store]:
    """The store of torchrun's elastic agent, under a key prefix of its own for each restart attempt.

    The agent serves one TCP store for the whole job and every attempt's process group registers its keys
    there (gloo: each rank's listening address).  Without a prefix, the workers of a restarted attempt read
    the keys of the attempt that died and connect to its closed ports: "Connection refused" in gloo's
    ``connectFullMesh``, or a hang there.  ``None`` when no agent serves a store (the default ``env://``
    set-up then creates a fresh one).
    """
    if os.environ.get('TORCHELASTIC_USE_AGENT_STORE') != 'True':
        return None
    store = dist.TCPStore(os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT']), world, is_master=False,
                          timeout=timeout)
    run_id = os.environ.get('TORCHELASTIC_RUN_ID', 'job')
    return dist.PrefixStore(f'ddarts-zoo/{run_id}/attempt-{elastic_restart_count()}', store)


def check_device(device: Optional[str]) -> None:
    """Raise :class:`UserError` unless ``device`` is ``'auto'`` / None, ``'cpu'``, ``'cuda'`` or ``'cuda:N'``
    of this machine (the ``--device`` option of the search and of final training)."""
    match = re.fullmatch(r'(auto|cpu|cuda)(?::(\d+))?', device or 'auto')
    if match is None or (match.group(2) is not None and match.group(1) != 'cuda'):
        raise UserError(f"--device {device!r}: choose 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if match.group(1) == 'cuda':
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f'--device {device}: CUDA is not available on this machine '
                            f"(use --device cpu or 'auto')")
        if match.group(2) is not None and int(match.group(2)) >= count:
            raise UserError(f'--device {device}: this machine has {count} CUDA device(s)')


def init_distributed(device: Optional[str] = 'auto', timeout_s: Optional[float] = None) -> DistContext:
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE`` > 1), else a single process.

    ``device``: ``'auto'`` / ``None`` (CUDA when available), ``'cpu'``, ``'cuda'`` (under torchrun: the
    local rank's GPU) or ``'cuda:N'``.  Backend: NCCL on CUDA, gloo on CPU.  ``timeout_s`` (default
    :data:`DEFAULT_DIST_TIMEOUT_S`): how long the set-up and every collective may wait for the other
    ranks before failing.
    """
    timeout_s = DEFAULT_DIST_TIMEOUT_S if timeout_s is None else float(timeout_s)
    if not timeout_s > 0:
        raise UserError(f'--dist-timeout must be > 0 seconds, got {timeout_s:g}')
    world = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    if device is None or device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device.startswith('cuda'):
        if not torch.cuda.is_available():
            raise UserError(f'--device {device}: CUDA is not available on this machine')
        index = local_rank if world > 1 or device == 'cuda' else torch.device(device).index
        dev = torch.device('cuda', index)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device(device)
    if world > 1 and not dist.is_initialized():
        timeout = timedelta(seconds=timeout_s)
        store = _attempt_store(world, timeout)
        dist.init_process_group('nccl' if dev.type == 'cuda' else 'gloo', rank=rank, world_size=world,
                                timeout=timeout, **({} if store is None else {'store': store}))
    return DistContext(rank, world, local_rank, dev)


def allreduce_mean_(tensors: Sequence[torch.Tensor], ctx: DistContext) -> None:
    """Average ``tensors`` in place across ranks with one flattened ``all_reduce``."""
    if not ctx.enabled or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n


def broadcast_module_(module: nn.Module, ctx: DistContext, buffers_only: bool = False) -> None:
    """Copy rank 0's parameters and buffers (or only buffers: BN running statistics) to every rank."""
    if not ctx.enabled:
        return
    with torch.no_grad():
        for t in ([] if buffers_only else list(module.parameters())) + list(module.buffers()):
            dist.broadcast(t.data, 0)


class EpochShardSampler(Sampler[int]):
    """This rank's shard of a dataset of ``size`` items, epoch by epoch.

    ``shuffle=True``: a permutation seeded with ``seed + epoch`` (the same on every rank, so the order is a
    function of ``(seed, epoch)`` and a resumed run sees the same data), cut to a multiple of the world
    size, then dealt round-robin.  ``shuffle=False``: indices ``rank, rank + world, ...`` with no cut, so a
    sharded evaluation counts every item exactly once.
    """

    def __init__(self, size: int, rank: int = 0, world_size: int = 1, shuffle: bool = True,
                 seed: int = 0) -> None:
        if size < 0 or not 0 <= rank < world_size:
            raise ValueError(f'EpochShardSampler: size {size}, rank {rank}, world size {world_size}')
        self.size, self.rank, self.world_size, self.shuffle, self.seed = size, rank, world_size, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> List[int]:
        if not self.shuffle:
            return list(range(self.rank, self.size, self.world_size))
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        usable = self.size - self.size % self.world_size
        return order[:usable][self.rank::self.world_size].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        if not self.shuffle:
            return len(range(self.rank, self.size, self.world_size))
        return self.size // self.world_size
