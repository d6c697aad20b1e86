"""Mixed precision for both loops: one autocast context and one GradScaler rule per device.

Default dtypes: float16 on CUDA (with a GradScaler), bfloat16 elsewhere (no scaler: bfloat16 has float32's
exponent range, so gradients do not underflow).  float16 can be asked for on the CPU too: it then takes the
CUDA path (CPU autocast in float16 and ``torch.amp.GradScaler('cpu')``), which lets a CPU test exercise it.
"""
from __future__ import annotations

import contextlib
from typing import ContextManager, Optional, Sequence

import torch
import torch.nn as nn

__all__ = ['AMP_DTYPES', 'parse_amp_dtype', 'amp_dtype', 'autocast', 'make_grad_scaler', 'unscale_and_clip_']

AMP_DTYPES = {'float16': torch.float16, 'bfloat16': torch.bfloat16}


def parse_amp_dtype(name: Optional[str]) -> Optional[torch.dtype]:
    """``'float16'`` / ``'bfloat16'`` -> the torch dtype; ``None`` stays ``None`` (the device's default)."""
    if name is None:
        return None
    if name not in AMP_DTYPES:
        raise ValueError(f'--amp-dtype {name!r}: choose one of {", ".join(AMP_DTYPES)}')
    return AMP_DTYPES[name]


def amp_dtype(device: torch.device, dtype: Optional[torch.dtype] = None) -> torch.dtype:
    """``dtype`` if given, else float16 on CUDA and bfloat16 on other devices."""
    if dtype is not None:
        return dtype
    return torch.float16 if device.type == 'cuda' else torch.bfloat16


def autocast(device: torch.device, enabled: bool, dtype: Optional[torch.dtype] = None,
             cache: bool = True) -> ContextManager:
    """``torch.autocast`` on ``device`` in :func:`amp_dtype`, or a no-op context when not ``enabled``.

    ``cache=False`` turns off autocast's cache of cast weights, as capturing a CUDA graph requires.
    """
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype(device, dtype), cache_enabled=cache)


def make_grad_scaler(device: torch.device, enabled: bool, dtype: Optional[torch.dtype] = None
                     ) -> 'torch.amp.GradScaler':
    """A ``GradScaler`` for ``device``, active only for float16 autocast (a pass-through otherwise)."""
    active = enabled and amp_dtype(device, dtype) == torch.float16
    return torch.amp.GradScaler(device.type, enabled=active)


def unscale_and_clip_(scaler: 'torch.amp.GradScaler', optimizer: torch.optim.Optimizer,
                      params: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
    """The gradient step's first half, as both loops run it: unscale, then clip; returns the total grad norm.

    Unscales the gradients of ``optimizer`` in place (a no-op for a disabled ``scaler``) and, when
    ``max_norm > 0``, clips the total 2-norm of ``params``' gradients to it.  The returned norm (before
    clipping) is non-finite when a gradient is: the caller decides whether to step.
    """
    scaler.unscale_(optimizer)
    if max_norm > 0:
        return nn.utils.clip_grad_norm_(params, max_norm)
    return nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
