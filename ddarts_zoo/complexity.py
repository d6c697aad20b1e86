"""Parameter and multiply-accumulate counts of a model at its default input size."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ['count_params', 'count_macs']


def count_params(model: nn.Module, include_aux: bool = True) -> int:
    """Number of parameters (optionally leaving out the auxiliary head, which only exists in training)."""
    return sum(p.numel() for n, p in model.named_parameters() if include_aux or not n.startswith('aux_head.'))


@torch.no_grad()
def count_macs(model: nn.Module, input_size: Sequence[int], batch_size: int = 1) -> int:
    """Multiply-accumulates of one inference pass (convolutions and matrix products, as papers count).

    Uses torch's FLOP counter (2 FLOPs per MAC); pooling, BN and additions are not counted.
    """
    was_training = model.training
    model.eval()
    x = torch.zeros(batch_size, *input_size)
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // (2 * batch_size)
