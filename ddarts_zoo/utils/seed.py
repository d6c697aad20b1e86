"""Seeding and RNG state capture / restore (bit-exact resume of the search and the training loop)."""
from __future__ import annotations

import random
from typing import Any, Dict, Mapping, Optional

import numpy as np
import torch

__all__ = ['seed_everything', 'capture_rng_state', 'restore_rng_state']


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def capture_rng_state(generators: Optional[Mapping[str, torch.Generator]] = None) -> Dict[str, Any]:
    """The global RNG states (Python, NumPy, torch CPU, CUDA) plus those of the named ``generators``.

    Everything is stored as tensors / numbers / tuples, so a checkpoint holding it loads with
    ``torch.load(..., weights_only=True)``.
    """
    np_state = np.random.get_state()
    state: Dict[str, Any] = {
        'python': random.getstate(),
        'numpy': [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    for name, gen in (generators or {}).items():
        state[name] = gen.get_state()
    return state


def restore_rng_state(state: Mapping[str, Any], generators: Optional[Mapping[str, torch.Generator]] = None
                      ) -> None:
    """Restore what :func:`capture_rng_state` captured; keys absent from ``state`` are left as they are."""
    if 'python' in state:
        py = state['python']
        random.setstate((py[0], tuple(py[1]), py[2]))
    if 'numpy' in state:
        name, keys, pos, has_gauss, cached = state['numpy']
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if 'torch' in state:
        torch.set_rng_state(state['torch'])
    if state.get('cuda') and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    for name, gen in (generators or {}).items():
        if name not in state:
            raise KeyError(f'the saved RNG state has no generator {name!r}')
        gen.set_state(state[name])
