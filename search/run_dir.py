"""The run directory of a search: where a new run may write, what ``--resume auto`` continues, and the
leftovers of writes a kill interrupted.

* A new run never writes into a directory that holds anything but its own earlier try: an existing
  directory with files and no checkpoint is an error naming them (nothing is overwritten).
* ``--resume auto`` (with ``--name``): continue ``OUT/NAME`` when it holds a checkpoint, else start it
  there.  Every worker that ``torchrun --max-restarts`` starts again runs the same command line, so it
  continues the run from its last checkpoint by itself.
* Temporary files of interrupted atomic writes (``.checkpoint.pt.<random>.tmp``) are removed on a resume.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch.distributed as dist

from ddarts_zoo.errors import UserError
from ddarts_zoo.utils.dist import DistContext
from ddarts_zoo.utils.io import is_interrupted_write

from .checkpoint import CHECKPOINT_NAME

__all__ = ['AUTO', 'RESUME_MAY_CHANGE', 'auto_resume_dir', 'check_resume_path', 'check_same_options',
           'new_run_dir_error', 'agree_on_run_dir', 'remove_stale_temps']

AUTO = 'auto'
# options that do not change the search, which a resume may set anew
RESUME_MAY_CHANGE = ('progress', 'dist_timeout')
# what a search writes before its first checkpoint: a directory holding only these is a first try of a run
_FIRST_TRY_FILES = ('config.json', 'search.log', 'tb', 'data_stats.json')


def auto_resume_dir(out: str, name: Optional[str]) -> Optional[Path]:
    """``--resume auto``: the run directory ``out/name`` when it holds a checkpoint, else ``None``."""
    if not name:
        raise UserError('--resume auto needs --name: the run directory to continue (or to start) is '
                        '--out/--name')
    path = Path(out) / name
    return path if (path / CHECKPOINT_NAME).is_file() else None


def check_resume_path(resume: 'str | Path') -> None:
    """Refuse a temporary file of an interrupted write given as the checkpoint to resume."""
    path = Path(resume)
    if is_interrupted_write(path):
        raise UserError(f'{path} is the temporary file of an interrupted write, not a checkpoint; '
                        f'resume the run directory {path.parent}')


def _differences(saved: Dict[str, Any], given: Dict[str, Any]) -> List[str]:
    return [k for k in sorted(set(saved) | set(given))
            if k not in RESUME_MAY_CHANGE and saved.get(k) != given.get(k)]


def check_same_options(saved: Dict[str, Any], given: Dict[str, Any], path: Path) -> None:
    """``--resume auto`` continues only the run its options describe: the saved options must be the same."""
    diff = _differences(saved, given)
    if diff:
        shown = ', '.join(f'--{k.replace("_", "-")} {saved.get(k)!r} there, {given.get(k)!r} here' for k in diff[:4])
        raise UserError(f'--resume auto: {path} holds a search with other options ({shown}); continue it with '
                        f'--resume {path}, or choose another --name')


def _first_try_of(path: Path, options: Dict[str, Any]) -> bool:
    """Whether ``path`` holds only what an earlier try of the same run wrote before its first checkpoint."""
    names = {p.name for p in path.iterdir() if not is_interrupted_write(p)}
    if not names <= set(_FIRST_TRY_FILES):
        return False
    if 'config.json' not in names:
        return True
    try:
        saved = json.loads((path / 'config.json').read_text(encoding='utf-8'))
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and not _differences(saved, options)


def new_run_dir_error(path: Path, options: Dict[str, Any], auto: bool = False) -> Optional[str]:
    """Why a new search may not write into ``path`` (``None``: it may; the directory is not touched here).

    Allowed: a missing or empty directory, or (``auto``) the leftovers of an earlier try of the same run.
    """
    if (path / CHECKPOINT_NAME).exists():
        return (f'{path} already holds a search; continue it with --resume {path} (or --resume auto), or '
                f'choose another --name')
    if not path.exists():
        return None
    if not path.is_dir():
        return f'{path} exists and is not a directory; choose another --name'
    entries = sorted(p.name for p in path.iterdir() if not is_interrupted_write(p))
    if not entries or (auto and _first_try_of(path, options)):
        return None
    shown = ', '.join(entries[:5]) + (f' and {len(entries) - 5} more' if len(entries) > 5 else '')
    return (f'{path} already exists and holds no search checkpoint ({shown}); nothing was written there: '
            f'choose another --name, or remove the directory')


def agree_on_run_dir(ctx: DistContext, path: Path, options: Dict[str, Any], *, new: bool, auto: bool,
                     start_epoch: int) -> Path:
    """The run directory every rank uses: rank 0 checks (:func:`new_run_dir_error`) and creates a ``new``
    one; every rank learns rank 0's path (default names hold a timestamp) or its refusal, and that every
    rank resumed from the same epoch (they must share the file system).  Raises :class:`UserError`.
    """
    error = None
    if new and ctx.is_writer:
        error = new_run_dir_error(path, options, auto)
        if error is None:
            path.mkdir(parents=True, exist_ok=True)
    if ctx.enabled:
        box: List[Any] = [str(path), error]
        dist.broadcast_object_list(box, 0)
        path, error = Path(box[0]), box[1]
        epochs: List[Any] = [None] * ctx.world_size
        dist.all_gather_object(epochs, start_epoch)
        if error is None and len(set(epochs)) > 1:
            error = (f'the ranks resumed {path} after different epochs ({epochs}, in rank order): every rank '
                     f'must see the same run directory (a shared file system)')
    if error:
        raise UserError(error)
    return path


def remove_stale_temps(run_dir: Path) -> List[Path]:
    """Remove what interrupted atomic writes left in ``run_dir`` (and its sub-folders); returns the paths.

    Only the run's own writer calls this, before it writes anything, so no write is in progress.
    """
    if not run_dir.is_dir():
        return []
    stale = sorted((p for p in run_dir.rglob('.*') if is_interrupted_write(p)), key=lambda p: len(p.parts),
                   reverse=True)
    removed = []
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists() or p.is_symlink():
            p.unlink()
        removed.append(p)
    return removed
