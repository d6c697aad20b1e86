"""The terms of the search losses (paper Sec. 3, Eq. 4; Sec. 4.2, Eq. 7-9), as plain tensor functions.

:mod:`search.losses` assembles them into the losses the search steps on; :mod:`search.marginal` and
:mod:`search.ablation_grad` compute the marginal contributions they need.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ['upcast', 'cross_entropy', 'zero_one_loss', 'ablation_losses']


def upcast(logits: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 logits (AMP) to float32 before the loss; float32/float64 unchanged."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``L_CE`` of (possibly AMP) logits, computed in at least float32."""
    return F.cross_entropy(upcast(logits), target)


def zero_one_loss(alpha: torch.Tensor) -> torch.Tensor:
    """FairDARTS zero-one loss ``-mean((sigmoid(alpha) - 0.5)^2)``: pushes the mixing weights to 0 or 1."""
    return -torch.mean((torch.sigmoid(alpha) - 0.5) ** 2)


def ablation_losses(mc: torch.Tensor) -> torch.Tensor:
    """``L_abl_i = -(mc_i - mean(mc)) / mean(mc)`` for every cell (all zeros when ``mean(mc) == 0``)."""
    mean = mc.mean()
    zero = mean == 0   # a device flag, not a branch: no host sync (CUDA graphs can capture it)
    safe_mean = torch.where(zero, torch.ones_like(mean), mean)
    return torch.where(zero, torch.zeros_like(mc), -(mc - mean) / safe_mean)
