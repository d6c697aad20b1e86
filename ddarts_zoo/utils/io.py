"""Atomic file output: readers see the old file or the new one, never half of either.

Every writer in the project (genotypes, checkpoints, logs, exported folders, plots, generated datasets)
goes through :func:`atomic_write` or :func:`atomic_dir`; a full disk raises
:class:`~ddarts_zoo.errors.DiskFullError` with the previous file intact.  Every ``torch.load`` of a file a
user may have received goes through :func:`safe_torch_load`: tensors only, never code.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

from ..errors import DiskFullError, MissingFileError, UnreadableFileError, describe_file

__all__ = ['atomic_write', 'atomic_dir', 'safe_torch_load', 'is_interrupted_write']

PathLike = Union[str, 'os.PathLike[str]']


def _write_tensors(obj: Any, f: Any) -> None:
    import torch
    torch.save(obj, f)


def _disk_full(err: BaseException) -> bool:
    """True when ``err`` or an exception it was raised from is ENOSPC / EDQUOT (torch wraps it in RuntimeError)."""
    seen = set()
    e: Optional[BaseException] = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        e = e.__cause__ or e.__context__
    return False


def _disk_full_error(target: Path, existed: bool) -> DiskFullError:
    previous = (f'the previous {target.name} is intact' if existed and target.exists()
                else 'nothing was written')
    return DiskFullError(f'no space left on the device while writing {target}; {previous} '
                         f'(free some space and run again)')


def is_interrupted_write(path: PathLike) -> bool:
    """Whether ``path`` is what a killed :func:`atomic_write` / :func:`atomic_dir` left behind: its temporary
    file or folder (``.NAME.<random>.tmp``) or a replaced folder it had not yet removed (``.NAME.old-<pid>``)."""
    name = Path(path).name
    return name.startswith('.') and (name.endswith('.tmp') or '.old-' in name)


def atomic_write(path: PathLike, data: Union[str, bytes, Callable[[Any], None], Any]) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync, then ``os.replace``.

    ``data`` is text (UTF-8), bytes, a callable that writes to the open binary file (e.g.
    ``lambda f: fig.savefig(f, format='png')``), or any other object, which is ``torch.save``-d.
    A full disk raises :class:`DiskFullError` (temporary file removed, previous ``path`` untouched).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.exists()
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
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if _disk_full(err):
            raise _disk_full_error(path, existed) from None
        raise
    return path


@contextlib.contextmanager
def atomic_dir(out: PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``out`` that replaces ``out`` when the block succeeds.

    On an exception the temporary folder is removed and ``out`` is left as it was.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    existed = out.exists()
    tmp = Path(tempfile.mkdtemp(prefix=f'.{out.name}.', suffix='.tmp', dir=out.parent))
    try:
        yield tmp
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if _disk_full(err) and not isinstance(err, DiskFullError):
            raise _disk_full_error(out, existed) from None
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


_REFUSED_GLOBAL = re.compile(r'GLOBAL ([\w.]+)')


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with open(path, 'rb') as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False


def _load_failure(path: Path, expected: str, err: BaseException) -> UnreadableFileError:
    """The one-line error for a failed ``torch.load``; torch's own text (which advises unsafe loading) is dropped."""
    where = describe_file(path)
    if isinstance(err, FileNotFoundError) or not path.exists():
        return MissingFileError(f'{where}: no such file; expected {expected}')
    if path.is_dir():
        return UnreadableFileError(f'{where}: expected {expected} (a file), got a directory')
    if isinstance(err, PermissionError):
        return UnreadableFileError(f'{where}: permission denied; expected {expected}')
    if path.stat().st_size == 0:
        return UnreadableFileError(f'{where}: the file is empty; expected {expected}')
    text = str(err)
    refused = _REFUSED_GLOBAL.search(text)
    if refused:
        why = f'it holds Python objects other than tensors ({refused.group(1)}), which are never loaded'
    elif _starts_with(path, b'PK\x03\x04') or 'zip archive' in text:  # torch's zip format, cut or damaged
        why = 'truncated or corrupt archive'
    else:
        why = 'not a PyTorch tensor file'
    return UnreadableFileError(f'{where}: {why}; expected {expected}')


def safe_torch_load(path: Union[str, 'os.PathLike[str]'], *, expected: str, map_location: Any = 'cpu',
                    allowed: Sequence[Any] = ()) -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain containers only, no code ever runs.

    ``expected`` says what the file should be (e.g. ``'a checkpoint written by ddarts-zoo train'``) for the
    error message; ``allowed`` lists the extra classes / functions the project's own format needs.  A missing,
    empty, truncated or random file, or a pickle referring to anything else, raises
    :class:`UnreadableFileError` naming the file, its size and ``expected``.
    """
    import torch
    path = Path(path)
    try:
        with torch.serialization.safe_globals(list(allowed)), warnings.catch_warnings():
            warnings.filterwarnings('ignore', message='.*pickle protocol.*')
            return torch.load(path, map_location=map_location, weights_only=True)
    except MemoryError:
        raise
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, OSError, ValueError ...
        raise _load_failure(path, expected, err) from None
