"""The authors' cost structure of an architecture step, re-implemented without their defects.

Marginal contributions come from whole forward passes that keep their graphs, then every alpha group gets
its own ``backward(retain_graph=True)`` of ``L_g = L_CE + w01 L01_g + w_abl L_abl_g`` (paper Eq. 9), with all
gradients (weights included) computed and cleared in between.  Used by ``search/bench.py`` (to time it) and
by the equivalence tests (it must give the gradients of :meth:`search.losses.SearchLoss.gradients`).
:func:`build_agents` gives every alpha group its own Adam, as the authors do: the reference of the one
multi-tensor :class:`search.arch_optimizer.ArchOptimizer` the search uses.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .loss_terms import ablation_losses, upcast, zero_one_loss
from .losses import LOSSES, ArchGradients, group_ablation_loss
from .marginal import marginal_contributions_full, random_mixing_weights
from .supernet import SuperNet

__all__ = ['reference_architecture_gradients', 'ReferenceAgent', 'build_agents']


@dataclass
class ReferenceAgent:
    """One alpha group with its own Adam and cosine schedule."""

    group: int
    cells: Tuple[int, ...]
    alpha: nn.Parameter
    optimizer: torch.optim.Adam
    scheduler: torch.optim.lr_scheduler.CosineAnnealingLR


def build_agents(net: SuperNet, lr: float = 3e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 weight_decay: float = 1e-3, epochs: int = 50, lr_min: float = 1e-3) -> List[ReferenceAgent]:
    """One Adam + cosine schedule (``lr`` -> ``lr_min`` over ``epochs``) per alpha group."""
    agents = []
    for k, alpha in enumerate(net.alphas):
        opt = torch.optim.Adam([alpha], lr=lr, betas=tuple(betas), weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1), eta_min=lr_min)
        agents.append(ReferenceAgent(net.group_ids[k], net.cells_of_group(k), alpha, opt, sched))
    return agents


def reference_architecture_gradients(net: SuperNet, x: torch.Tensor, y: torch.Tensor, *, loss: str = 'ablation',
                                     w01: float = 7.0, w_abl: float = 0.5,
                                     random_weights: Optional[Sequence[torch.Tensor]] = None,
                                     generator: Optional[torch.Generator] = None,
                                     autocast: Optional[Callable[[], ContextManager]] = None,
                                     loss_scale: float = 1.0,
                                     mc_reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                                     retain_ablated_graphs: bool = True) -> ArchGradients:
    """``dL_g / d alpha_g`` for every alpha group with one backward pass per group (arguments as
    :meth:`search.losses.SearchLoss.gradients`).

    ``retain_ablated_graphs=False`` frees each ablated pass's graph right after it: the same work without the
    authors' memory peak (to time the reference where it does not fit).
    """
    if loss not in ('fair', 'ablation'):   # 'ablation-grad' has no counterpart in the authors' code
        raise ValueError(f"the authors' cost structure knows loss 'fair' or 'ablation', got {loss!r}")
    autocast = autocast or contextlib.nullcontext
    alphas = net.arch_parameters()
    need_mc = LOSSES[loss].needs_mc
    if need_mc and random_weights is None:
        random_weights = random_mixing_weights(net, generator)
    weights = net.mixing_weights()
    with autocast():
        logits = net(x, weights)
    ce = F.cross_entropy(upcast(logits), y)
    correct = (logits.detach().argmax(1) == y).sum()
    l01 = [zero_one_loss(a) for a in alphas]
    finite = bool(torch.isfinite(ce))
    mc = None
    grads: List[Optional[torch.Tensor]] = [None] * len(alphas)
    off_losses: List[torch.Tensor] = []
    if need_mc:
        if finite:
            with autocast():
                mc, off_losses = marginal_contributions_full(net, x, y, ce.detach(), random_weights,
                                                             weights=weights, keep_graph=True,
                                                             return_losses=retain_ablated_graphs)
        else:
            mc = torch.full((net.layers,), float('nan'), dtype=torch.float64, device=ce.device)
        if mc_reduce is not None:
            mc = mc_reduce(mc)
    if finite:
        abl_ref = ablation_losses(mc) if mc is not None else None
        params = list(net.parameters())
        for k, alpha in enumerate(alphas):
            for p in params:
                p.grad = None
            loss_k = ce + w01 * l01[k] + w_abl * group_ablation_loss(net, abl_ref, k).to(ce.dtype)
            (loss_k * loss_scale).backward(retain_graph=True)
            grads[k] = alpha.grad.detach().clone()
        for p in params:
            p.grad = None
    del off_losses
    abl = ablation_losses(mc) if mc is not None else None
    return ArchGradients(grads, ce.detach(), correct, int(y.numel()), torch.stack(l01).detach(), mc, abl)
