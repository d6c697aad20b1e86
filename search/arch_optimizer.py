"""Every alpha group's Adam as one multi-tensor step.

Each cell (or group of identical DARTOpti cells) has its own Adam and cosine schedule (paper Sec. 5.1:
learning rate 3e-3 -> 1e-3, betas (0.9, 0.999), weight decay 1e-3).  Updating them one optimizer at a time
launches a handful of tiny kernels per group; :class:`ArchOptimizer` holds them as the param groups of one
``torch.optim.Adam`` (fused on CUDA, ``foreach`` elsewhere), so one call updates every group with each
group's own learning rate.  ``search.reference.build_agents`` (one Adam per group) is its reference.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn as nn

__all__ = ['ArchOptimizer']


class ArchOptimizer:
    """One Adam with one param group per alpha group, and a cosine schedule (``lr`` -> ``lr_min`` over
    ``epochs``) that every group follows from its own base learning rate."""

    def __init__(self, alphas: Sequence[nn.Parameter], lr: float = 3e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), weight_decay: float = 1e-3, epochs: int = 50,
                 lr_min: float = 1e-3) -> None:
        if not alphas:
            raise ValueError('ArchOptimizer needs at least one alpha group')
        impl = {'fused': True} if alphas[0].device.type == 'cuda' else {'foreach': True}
        self.optimizer = torch.optim.Adam([{'params': [a]} for a in alphas], lr=lr, betas=tuple(betas),
                                          weight_decay=weight_decay, **impl)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(epochs, 1),
                                                                    eta_min=lr_min)

    @property
    def lrs(self) -> List[float]:
        """The current learning rate of every group."""
        return [g['lr'] for g in self.optimizer.param_groups]

    def step(self) -> None:
        self.optimizer.step()

    def state_dict(self) -> Dict[str, Any]:
        return {'optimizer': self.optimizer.state_dict(), 'scheduler': self.scheduler.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state['optimizer'])
        self.scheduler.load_state_dict(state['scheduler'])
