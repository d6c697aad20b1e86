"""Atomic file output: readers see the old file or the new one, never half of either.

Every writer in the project (genotypes, checkpoints, logs, exported folders, plots, generated datasets)
goes through :func:`atomic_write` or :func:`atomic_dir`.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Union

__all__ = ['atomic_write', 'atomic_dir']

PathLike = Union[str, 'os.PathLike[str]']


def _write_tensors(obj: Any, f: Any) -> None:
    import torch
    torch.save(obj, f)


def atomic_write(path: PathLike, data: Union[str, bytes, Callable[[Any], None], Any]) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync, then ``os.replace``.

    ``data`` is text (UTF-8), bytes, a callable that writes to the open binary file (e.g.
    ``lambda f: fig.savefig(f, format='png')``), or any other object, which is ``torch.save``-d.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            if isinstance(data, str):
                f.write(data.encode('utf-8'))
            elif isinstance(data, (bytes, bytearray, memoryview)):
                f.write(data)
            elif callable(data):
                data(f)
            else:
                _write_tensors(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a published file from other users
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


@contextlib.contextmanager
def atomic_dir(out: PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``out`` that replaces ``out`` when the block succeeds.

    On an exception the temporary folder is removed and ``out`` is left as it was.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{out.name}.', suffix='.tmp', dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.chmod(tmp, 0o755)
    for p in tmp.rglob('*'):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    old = None
    if out.exists():  # a folder cannot be replaced while non-empty: move the old one aside first
        old = out.with_name(f'.{out.name}.old-{os.getpid()}')
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
