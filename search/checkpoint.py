"""Search checkpoints: written atomically after every epoch, read back for a bit-exact ``--resume``.

A checkpoint holds the configuration, the supernet, every optimizer / scheduler / AMP scaler, the history
and the RNG states of every rank (data order is a function of ``(seed, epoch)``, so nothing else is needed).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict

from ddarts_zoo.errors import MissingFileError, describe_file
from ddarts_zoo.utils import checkpoint as tagged

__all__ = ['CHECKPOINT_NAME', 'CHECKPOINT_FORMAT', 'CHECKPOINT_VERSION', 'load_checkpoint', 'save_checkpoint',
           'restore_checkpoint']

CHECKPOINT_NAME = 'checkpoint.pt'
CHECKPOINT_FORMAT = 'ddarts-zoo/search-checkpoint'
CHECKPOINT_VERSION = 2   # 2: one multi-tensor Adam for the alphas ('arch_optimizer'), fused supernet


def save_checkpoint(searcher: Any, epochs_done: int) -> None:
    """Write ``searcher``'s state after ``epochs_done`` epochs to ``run_dir/checkpoint.pt`` (rank 0)."""
    rng = tagged.gather_rng_states(searcher.ctx, {'mc_generator': searcher.updates.mc_gen})
    if not searcher.ctx.is_writer:
        return
    ckpt = {
        'config': searcher.cfg.to_dict(), 'supernet': searcher.net.config(), 'epoch': epochs_done,
        'global_step': searcher.global_step,
        'model': searcher.net.state_dict(), **searcher.updates.state_dict(),
        'rng': rng, 'history': searcher.history, 'stopped_early': searcher.stopped_early,
    }
    path = tagged.save_checkpoint(searcher.run_dir / CHECKPOINT_NAME, ckpt, kind=CHECKPOINT_FORMAT,
                                  version=CHECKPOINT_VERSION)
    searcher.logs.written.append(str(path))


def restore_checkpoint(searcher: Any, ckpt: Dict[str, Any]) -> None:
    """Load ``ckpt`` (from :func:`load_checkpoint`) into a freshly set-up ``searcher``."""
    searcher.net.load_state_dict(ckpt['model'])
    searcher.updates.load_state_dict(ckpt)
    searcher.history = list(ckpt['history'])
    searcher.start_epoch = int(ckpt['epoch'])
    searcher.global_step = int(ckpt['global_step'])
    searcher.stopped_early = bool(ckpt.get('stopped_early', False))
    tagged.restore_rank_rng(ckpt['rng'], searcher.ctx, {'mc_generator': searcher.updates.mc_gen})


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
    return tagged.load_checkpoint(path, kind=CHECKPOINT_FORMAT, versions=(CHECKPOINT_VERSION,), what=expected)
