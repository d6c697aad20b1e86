"""Let torch's weights-only loading read mmengine's checkpoints: the exact non-tensor globals they hold.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7 calls ``torch.load`` without
that argument (``tools/test.py``, ``--resume``, ``load_from``, ``init_detector``, ``DetInferencer``). Besides
tensors and plain containers, its checkpoints hold the ``MessageHub`` state: mmengine's ``HistoryBuffer``
objects (logged values as float64 / int64 numpy arrays, plus the buffer's statistics methods, which pickle
writes as ``getattr(HistoryBuffer, 'mean')``) and numpy scalars (the ``eta`` estimate).

:func:`register_checkpoint_globals` (run when ``ddarts_zoo.mmdet`` is imported, e.g. through a config's
``custom_imports``) allows exactly those with ``torch.serialization.add_safe_globals``. ``getattr`` itself is
not allowed: a stand-in registered under its name returns only ``HistoryBuffer``'s registered statistics
methods and refuses everything else. Every other global still makes the load fail, so weights-only loading
stays on. The list is what ``torch.serialization.get_unsafe_globals_in_checkpoint`` reports for checkpoints
of the digits-det configs, plus the numpy dtype classes that rebuilding their arrays creates (tested).
"""
from __future__ import annotations

import pickle
from typing import Any, Callable, List, Tuple, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

__all__ = ['MMENGINE_CHECKPOINT_GLOBALS', 'register_checkpoint_globals', 'history_buffer_statistic']

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar


HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')  # HistoryBuffer's built-in statistics methods


def history_buffer_statistic(owner: Any, name: str) -> Callable:
    """Stands in for ``getattr`` while loading: ``HistoryBuffer.<name>`` for its built-in statistics only."""
    if owner is not HistoryBuffer or name not in HISTORY_BUFFER_STATISTICS:
        raise pickle.UnpicklingError(f'weights-only load: getattr({owner!r}, {name!r}) is not allowed; only '
                                     f'HistoryBuffer.{"/".join(HISTORY_BUFFER_STATISTICS)} are')
    return getattr(HistoryBuffer, name)


MMENGINE_CHECKPOINT_GLOBALS: List[Union[Any, Tuple[Any, str]]] = [
    HistoryBuffer, (history_buffer_statistic, 'builtins.getattr'),
    _reconstruct, scalar, np.ndarray, np.dtype, type(np.dtype(np.float64)), type(np.dtype(np.int64)),
]


def register_checkpoint_globals() -> None:
    """Allow :data:`MMENGINE_CHECKPOINT_GLOBALS` in ``torch.load(weights_only=True)`` (idempotent)."""
    torch.serialization.add_safe_globals(MMENGINE_CHECKPOINT_GLOBALS)
