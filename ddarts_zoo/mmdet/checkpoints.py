"""Let torch's weights-only loading read mmengine's checkpoints: the exact non-tensor globals they hold.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7 calls ``torch.load`` without
that argument (``tools/test.py``, ``--resume``, ``load_from``, ``init_detector``, ``DetInferencer``). Its
checkpoints hold, besides tensors and plain containers, the ``MessageHub`` state: mmengine's
``HistoryBuffer`` objects, whose logged values are numpy arrays. :func:`register_checkpoint_globals` (run when
``ddarts_zoo.mmdet`` is imported, e.g. through a config's ``custom_imports``) allows exactly those classes
with ``torch.serialization.add_safe_globals``; every other global still makes the load fail, so weights-only
loading stays on. The list is what ``torch.serialization.get_unsafe_globals_in_checkpoint`` reports for
checkpoints of the digits-det configs (tested).
"""
from __future__ import annotations

from typing import List

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

__all__ = ['MMENGINE_CHECKPOINT_GLOBALS', 'register_checkpoint_globals']


def _numpy_array_globals() -> List[object]:
    """What pickle needs to rebuild a float64 / int64 numpy array (numpy 1.x and 2.x spell them differently)."""
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.float64)), type(np.dtype(np.int64))]


MMENGINE_CHECKPOINT_GLOBALS: List[object] = [HistoryBuffer, *_numpy_array_globals()]


def register_checkpoint_globals() -> None:
    """Allow :data:`MMENGINE_CHECKPOINT_GLOBALS` in ``torch.load(weights_only=True)`` (idempotent)."""
    torch.serialization.add_safe_globals(MMENGINE_CHECKPOINT_GLOBALS)
