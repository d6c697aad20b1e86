"""The ``ddarts-zoo`` sub-commands (one module each) and their shared argument checks."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError

__all__ = ['output_file']


def output_file(path: str, option: str = '--out') -> Path:
    """``path`` as a file to write; its folder must exist (nothing is created for a mistyped path)."""
    out = Path(path)
    folder = out.parent
    if not folder.is_dir():
        what = 'is not a directory' if folder.exists() else 'does not exist'
        raise UserError(f'{option} {path}: the directory {folder} {what} (create it first)')
    return out
