"""Search checkpoints: written atomically after every epoch, read back for a bit-exact ``--resume``.

A checkpoint holds the configuration, the supernet, every optimizer / scheduler / AMP scaler, the history
and the RNG states of every rank (data order is a function of ``(seed, epoch)``, so nothing else is needed).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List

import torch
import torch.distributed as dist

from ddarts_zoo.errors import MissingFileError, UnreadableFileError, UserError, describe_file
from ddarts_zoo.utils.dist import DistContext
from ddarts_zoo.utils.io import atomic_write, safe_torch_load
from ddarts_zoo.utils.seed import capture_rng_state, restore_rng_state

__all__ = ['CHECKPOINT_NAME', 'CHECKPOINT_FORMAT', 'CHECKPOINT_VERSION', 'load_checkpoint', 'save_checkpoint',
           'restore_checkpoint']

CHECKPOINT_NAME = 'checkpoint.pt'
CHECKPOINT_FORMAT = 'ddarts-zoo/search-checkpoint'
CHECKPOINT_VERSION = 2   # 2: one multi-tensor Adam for the alphas ('arch_optimizer'), fused supernet


def _gather_rng(ctx: DistContext, mc_gen: torch.Generator) -> List[Dict[str, Any]]:
    """Every rank's RNG states (a collective under DDP), in rank order."""
    mine = capture_rng_state({'mc_generator': mc_gen})
    if not ctx.enabled:
        return [mine]
    box: List[Any] = [None] * ctx.world_size
    dist.all_gather_object(box, mine)
    return box


def save_checkpoint(searcher: Any, epochs_done: int) -> None:
    """Write ``searcher``'s state after ``epochs_done`` epochs to ``run_dir/checkpoint.pt`` (rank 0)."""
    rng = _gather_rng(searcher.ctx, searcher.updates.mc_gen)
    if not searcher.ctx.is_writer:
        return
    ckpt = {
        'format': CHECKPOINT_FORMAT, 'version': CHECKPOINT_VERSION, 'config': searcher.cfg.to_dict(),
        'supernet': searcher.net.config(), 'epoch': epochs_done, 'global_step': searcher.global_step,
        'model': searcher.net.state_dict(), **searcher.updates.state_dict(),
        'rng': rng, 'history': searcher.history, 'stopped_early': searcher.stopped_early,
    }
    path = atomic_write(searcher.run_dir / CHECKPOINT_NAME, ckpt)
    searcher.logs.written.append(str(path))


def restore_checkpoint(searcher: Any, ckpt: Dict[str, Any]) -> None:
    """Load ``ckpt`` (from :func:`load_checkpoint`) into a freshly set-up ``searcher``."""
    searcher.net.load_state_dict(ckpt['model'])
    searcher.updates.load_state_dict(ckpt)
    searcher.history = list(ckpt['history'])
    searcher.start_epoch = int(ckpt['epoch'])
    searcher.global_step = int(ckpt['global_step'])
    searcher.stopped_early = bool(ckpt.get('stopped_early', False))
    rng = ckpt['rng']
    if len(rng) != searcher.ctx.world_size:
        raise UserError(f'checkpoint was written by {len(rng)} rank(s); resume it with the same number '
                         f'(got {searcher.ctx.world_size}) to continue exactly')
    restore_rng_state(rng[searcher.ctx.rank], {'mc_generator': searcher.updates.mc_gen})


def load_checkpoint(path: 'str | os.PathLike') -> Dict[str, Any]:
    """Read a search checkpoint (a run directory or the ``.pt`` file) and check its format.

    Tensors only (no code in the file runs); a missing, empty, truncated, random or foreign file raises
    :class:`UnreadableFileError` naming the file, its size and what was expected.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    expected = f'a search checkpoint ({CHECKPOINT_NAME} written by search/run.py)'
    if not path.exists():
        raise MissingFileError(f'{describe_file(path)}: no search checkpoint there; expected {expected}')
    ckpt = safe_torch_load(path, expected=expected)
    if not isinstance(ckpt, dict) or ckpt.get('format') != CHECKPOINT_FORMAT:
        raise UnreadableFileError(f'{describe_file(path)}: not a ddarts-zoo search checkpoint; expected {expected}')
    if ckpt.get('version') != CHECKPOINT_VERSION:
        raise UnreadableFileError(f'{describe_file(path)}: checkpoint version {ckpt.get("version")} is not '
                                  f'supported (this code reads version {CHECKPOINT_VERSION})')
    return ckpt
