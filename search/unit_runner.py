"""Units of work that each write their result once: run in-process or in a pool, reused when finished.

An experiment is a list of units (a search, a training); a unit's folder name carries :func:`unit_hash` of
everything that defines it, so a finished unit is reused and a changed setting never is.  :class:`Runner`
runs units one after the other or in a pool of fresh processes and prints one line per finished unit;
:func:`console_to` sends a unit's own output to a file next to its folder; :func:`exclusive` lets one
process at a time work in an output folder.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

from ddarts_zoo.errors import UserError

__all__ = ['unit_hash', 'console_to', 'exclusive', 'Runner']


def unit_hash(spec: Any) -> str:
    """Short hash of a unit's defining values (in its folder name: changed settings never reuse a unit)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:10]


@contextlib.contextmanager
def console_to(path: Path) -> Iterator[None]:
    """A unit's console output goes to ``path`` (appended, next to its folder): one line per unit here."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'a', encoding='utf-8') as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        yield


@contextlib.contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """One experiment per output folder at a time (an OS lock, released when the process ends)."""
    import fcntl
    out.mkdir(parents=True, exist_ok=True)
    with open(out / 'experiment.lock', 'a+') as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            raise UserError(f'another experiment is running in {out} (pid {f.read().strip() or "?"}); '
                            f'wait for it or choose another --out') from None
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
        yield


class Runner:
    """Runs units in-process (``jobs=1``) or in a pool of fresh processes; prints a line per finished unit."""

    def __init__(self, jobs: int) -> None:
        self.jobs, self.done, self.ran = jobs, 0, 0
        self.t0 = time.time()
        self.pool = None
        if jobs > 1:
            import multiprocessing
            self.pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context('spawn'))

    def map(self, fn: Callable[[Dict[str, Any]], Dict[str, Any]], specs: Sequence[Dict[str, Any]],
            label: Callable[[Dict[str, Any], Dict[str, Any]], str]) -> List[Dict[str, Any]]:
        results: List[Optional[Dict[str, Any]]] = [None] * len(specs)
        if self.pool is None:
            finished: Iterable = ((i, fn(s)) for i, s in enumerate(specs))
        else:
            futures = {self.pool.submit(fn, s): i for i, s in enumerate(specs)}
            finished = ((futures[f], f.result()) for f in as_completed(futures))
        for i, res in finished:
            results[i] = res
            self.done += 1
            self.ran += bool(res['ran'])
            state = 'ran' if res['ran'] else 'reused'
            print(f'[{time.time() - self.t0:6.0f} s] {label(specs[i], res)} ({state})', flush=True)
        return results  # type: ignore[return-value]

    def close(self) -> None:
        if self.pool is not None:   # after an error: drop the queued units, wait for the running ones
            self.pool.shutdown(cancel_futures=True)
