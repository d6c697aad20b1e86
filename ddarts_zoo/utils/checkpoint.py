"""Checkpoints of both training loops (search and final training): tagged, versioned, atomic, tensors only.

A checkpoint is a dict with ``format`` (which loop wrote it) and ``version`` (its layout) next to the loop's
own payload.  :func:`save_checkpoint` writes it atomically (a reader sees the previous checkpoint or the new
one); :func:`load_checkpoint` reads it with :func:`~ddarts_zoo.utils.io.safe_torch_load` (no code from the
file ever runs) and checks the tag and version.  :func:`gather_rng_states` / :func:`restore_rank_rng` carry
every rank's random state, so a resumed run continues exactly where the interrupted one was.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Collection, Dict, List, Mapping, Optional, Sequence, Union

import torch
import torch.distributed as dist

from ..errors import UnreadableFileError, UserError, describe_file
from .dist import DistContext
from .io import atomic_write, is_interrupted_write, safe_torch_load
from .seed import capture_rng_state, restore_rng_state

__all__ = ['save_checkpoint', 'load_checkpoint', 'gather_rng_states', 'restore_rank_rng',
           'remove_stale_temps', 'UNVERSIONED']

PathLike = Union[str, 'os.PathLike[str]']
UNVERSIONED = 1
"""The version of a checkpoint written before checkpoints carried a ``version`` field."""


def save_checkpoint(path: PathLike, payload: Mapping[str, Any], *, kind: str, version: int) -> Path:
    """Write ``payload`` tagged ``format=kind, version=version`` to ``path`` atomically; returns ``path``."""
    return atomic_write(path, {'format': kind, 'version': version, **payload})


def load_checkpoint(path: PathLike, *, kind: str, versions: Collection[int], what: str) -> Dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` with tag ``kind`` and one of ``versions``.

    ``what`` names the expected file in errors (e.g. ``'a checkpoint written by ddarts-zoo train'``).  A
    missing, corrupt or foreign file raises :class:`UnreadableFileError` naming the file and its size.
    """
    ckpt = safe_torch_load(path, expected=what)
    if not isinstance(ckpt, dict) or ckpt.get('format') != kind:
        found = ckpt.get('format') if isinstance(ckpt, dict) else type(ckpt).__name__
        raise UnreadableFileError(f'{describe_file(path)}: holds {found!r}, not {what} (format {kind!r})')
    version = ckpt.get('version', UNVERSIONED)
    if version not in versions:
        readable = ', '.join(str(v) for v in sorted(versions))
        raise UnreadableFileError(f'{describe_file(path)}: checkpoint version {version} is not supported '
                                  f'(this code reads version {readable})')
    return ckpt


def gather_rng_states(ctx: DistContext, generators: Optional[Mapping[str, torch.Generator]] = None
                      ) -> List[Dict[str, Any]]:
    """Every rank's RNG states (:func:`~ddarts_zoo.utils.seed.capture_rng_state`) in rank order.

    A collective under DDP: every rank must call it, although only the writer keeps the result.
    """
    mine = capture_rng_state(generators)
    if not ctx.enabled:
        return [mine]
    box: List[Any] = [None] * ctx.world_size
    dist.all_gather_object(box, mine)
    return box


def restore_rank_rng(states: Sequence[Mapping[str, Any]], ctx: DistContext,
                     generators: Optional[Mapping[str, torch.Generator]] = None) -> None:
    """Restore this rank's entry of ``states`` (from :func:`gather_rng_states`); the world size must match."""
    if len(states) != ctx.world_size:
        raise UserError(f'the checkpoint was written by {len(states)} process(es); resume it with the same '
                        f'number (got {ctx.world_size}) to continue exactly')
    restore_rng_state(states[ctx.rank], generators)


def remove_stale_temps(path: PathLike) -> List[Path]:
    """Delete the temporary files a killed :func:`atomic_write` of ``path`` left beside it; returns them.

    Call it only where no other process is writing ``path`` (e.g. on the writer rank, before resuming).
    """
    path = Path(path)
    stale = sorted(p for p in path.parent.glob(f'.{path.name}.*') if p.is_file() and is_interrupted_write(p))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale
