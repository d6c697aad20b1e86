"""Non-finite values in a search: what a skipped step puts back, and what an epoch reports or refuses.

* :class:`BufferSnapshot`: the forward pass of a step updates the BatchNorm running statistics before the
  step's finite flags are known; the snapshot taken before the step restores them when the step is skipped,
  so a skipped step leaves every tensor of the supernet as it was (device-side copies, no host read).
* :func:`warn_nonfinite_metrics`: an epoch whose evaluation or mean losses are NaN/inf raises a
  :class:`NonFiniteEvaluationWarning` naming the epoch and the metrics.
* :func:`nonfinite_tensors`: the names of the NaN/inf tensors of a state, checked (with one host read) before
  a checkpoint is written, so that no checkpoint ever holds one.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn

__all__ = ['NonFiniteEvaluationWarning', 'all_finite', 'BufferSnapshot', 'warn_nonfinite_metrics', 'nonfinite_tensors']

EPOCH_METRICS = ('valid_loss', 'valid_acc', 'train_loss', 'train_acc', 'arch_ce', 'arch_acc')


class NonFiniteEvaluationWarning(RuntimeWarning):
    """An epoch's evaluation or mean training loss is NaN/inf: the supernet is diverging."""


def all_finite(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Whether every element of ``tensors`` is finite: one fused check, a 0-d device flag (no host read)."""
    return torch.isfinite(torch.cat([t.reshape(-1) for t in tensors])).all()


class BufferSnapshot:
    """A copy of ``module``'s buffers (BN running statistics and batch counters), kept on their device.

    :meth:`save` before a step, :meth:`restore` when the step is skipped; :meth:`finite` is a 0-d device flag
    that the step reads together with its other flags.
    """

    def __init__(self, module: nn.Module) -> None:
        self.buffers = [b for b in module.buffers()]
        self.copies = [b.detach().clone() for b in self.buffers]
        self.floating = [b for b in self.buffers if b.is_floating_point()]

    def save(self) -> None:
        if self.buffers:
            torch._foreach_copy_(self.copies, self.buffers)

    def restore(self) -> None:
        if self.buffers:
            with torch.no_grad():
                torch._foreach_copy_(self.buffers, self.copies)

    def finite(self) -> torch.Tensor:
        """Whether every floating buffer is finite (a device tensor; True without buffers)."""
        if not self.floating:
            return torch.ones((), dtype=torch.bool)
        return all_finite(self.floating)


def warn_nonfinite_metrics(rec: Mapping[str, Any]) -> Optional[str]:
    """Warn (:class:`NonFiniteEvaluationWarning`) when a metric of the epoch record ``rec`` is NaN/inf.

    Returns the warning's message (``None`` when every metric is finite or absent).
    """
    bad = [k for k in EPOCH_METRICS if isinstance(rec.get(k), float) and not math.isfinite(rec[k])]
    if not bad:
        return None
    listed = ', '.join(f'{k} {rec[k]}' for k in bad)
    msg = (f'epoch {rec.get("epoch")}: non-finite {listed}; the supernet is diverging (lower --lr / --arch-lr, '
           f'or check the data for NaNs)')
    warnings.warn(NonFiniteEvaluationWarning(msg), stacklevel=2)
    return msg


def _floating_tensors(state: Any, prefix: str = '') -> Iterator[Tuple[str, torch.Tensor]]:
    """``(dotted name, tensor)`` for every floating tensor nested in dicts / lists / tuples of ``state``."""
    if isinstance(state, torch.Tensor):
        if state.is_floating_point():
            yield prefix, state
    elif isinstance(state, Mapping):
        for k, v in state.items():
            yield from _floating_tensors(v, f'{prefix}.{k}' if prefix else str(k))
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            yield from _floating_tensors(v, f'{prefix}.{i}' if prefix else str(i))


def nonfinite_tensors(state: Dict[str, Any]) -> List[str]:
    """The names of the floating tensors in ``state`` (nested) holding a NaN/inf; one host read in all."""
    named = list(_floating_tensors(state))
    if not named:
        return []
    flags = torch.stack([torch.isfinite(t).all().to(named[0][1].device) for _, t in named]).tolist()
    return [name for (name, _), ok in zip(named, flags) if not ok]
