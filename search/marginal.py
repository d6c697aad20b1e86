"""Marginal contributions of the cells (paper Sec. 4.2, Eq. 7), without graphs.

``mc_i = L_CE(full supernet) - L_CE(cell i mixing with fresh uniform(0, 1) weights)``.  The full pass records
every cell's inputs (``net(x, states=...)``), and switching cell ``i`` off only reruns cells ``i ..`` from
them (:func:`marginal_contributions`); :func:`marginal_contributions_full` is the plain reference, one whole
forward pass per switched-off cell.  The ablated passes normalise with batch statistics but leave the BN
running statistics alone (:func:`frozen_bn_stats`).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from .loss_terms import cross_entropy, upcast

__all__ = ['MC_BATCH_MAX_ELEMENTS', 'random_mixing_weights', 'frozen_bn_stats', 'marginal_contributions',
           'marginal_contributions_full']

MC_BATCH_MAX_ELEMENTS = 2 ** 18
"""Largest stem activation (elements) for which the marginal-contribution reruns are batched by default."""


def random_mixing_weights(net: nn.Module, generator: Optional[torch.Generator] = None) -> List[torch.Tensor]:
    """One fresh ``uniform(0, 1)`` ``[edges x ops]`` matrix per cell, drawn from ``generator``."""
    shape = tuple(net.alphas[0].shape)
    device = net.alphas[0].device
    gen_device = generator.device if generator is not None else device
    out = [torch.rand(shape, generator=generator, device=gen_device) for _ in range(net.layers)]
    return [w.to(device) for w in out]


@contextlib.contextmanager
def frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """BN layers keep normalising with batch statistics (training mode) but leave their running stats alone.

    Used for the ablated passes, whose random mixing weights would otherwise leak into the running
    statistics the supernet is evaluated with.
    """
    changed = [m for m in module.modules()
               if isinstance(m, _BatchNorm) and m.track_running_stats and m.training]
    for m in changed:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in changed:
            m.track_running_stats = True


@contextlib.contextmanager
def _ghost_groups(module: nn.Module, groups: int) -> Iterator[None]:
    bns = [m for m in module.modules() if hasattr(m, 'ghost_groups')]
    for m in bns:
        m.ghost_groups = groups
    try:
        yield
    finally:
        for m in bns:
            m.ghost_groups = 1


@torch.no_grad()
def marginal_contributions(net: nn.Module, states: Sequence[torch.Tensor], target: torch.Tensor,
                           full_loss: torch.Tensor, random_weights: Sequence[torch.Tensor],
                           weights: Optional[Sequence[torch.Tensor]] = None,
                           batched: Optional[bool] = None) -> torch.Tensor:
    """``mc_i = L_CE(full) - L_CE(cell i off)`` for every cell, without graphs and without recomputing the
    cells before ``i``.

    Args:
        net: the :class:`~search.supernet.SuperNet` (in the mode of the full pass, normally ``train()``).
        states: ``[s0, s1, out_0, out_1, ...]`` recorded by the full pass (``net(x, states=...)``); the rerun
            that switches cell ``i`` off starts from ``states[i], states[i + 1]``.
        full_loss: ``L_CE`` of the full pass.
        random_weights: the replacement mixing weights of every cell (``random_mixing_weights``).
        weights: the mixing weights of the full pass (default ``sigmoid(alpha)``).
        batched: stack the reruns along the batch dimension (cell ``k`` runs once, on the reruns that
            switched off a cell ``<= k``, with per-sample mixing weights and per-rerun BN statistics) instead
            of looping over them.  Same values and FLOPs, ``n`` cell calls instead of ``n (n + 1) / 2``; the
            stacked batch grows to ``n`` times the architecture batch in the last cell (no graph is kept).
            It pays off where per-op overhead dominates (small activations); ``None`` (default) batches
            when the stem output has at most :data:`MC_BATCH_MAX_ELEMENTS` elements (measured on CPU:
            1.6x faster at C=4, batch 32, 8 px; 1.3x slower at C=16, batch 32, 32 px).
    """
    if weights is None:
        weights = net.mixing_weights(detach=True)
    weights = [w.detach() for w in weights]
    n = net.layers
    if len(states) != n + 2:
        raise ValueError(f'expected {n + 2} cached states (stem outputs + {n} cells), got {len(states)}')
    full = full_loss.detach().double()
    if batched is None:
        batched = states[0].numel() <= MC_BATCH_MAX_ELEMENTS
    if not batched:
        mc = torch.zeros(n, dtype=torch.float64, device=full_loss.device)
        with frozen_bn_stats(net):
            for i in range(n):
                ablated = list(weights)
                ablated[i] = random_weights[i]
                logits = net.forward_from(i, states[i].detach(), states[i + 1].detach(), ablated)
                mc[i] = full - cross_entropy(logits, target).double()
        return mc
    b = target.shape[0]
    s0 = s1 = None
    with frozen_bn_stats(net):
        for k in range(n):
            a0, a1 = states[k].detach(), states[k + 1].detach()
            s0 = a0 if s0 is None else torch.cat([s0, a0])
            s1 = a1 if s1 is None else torch.cat([s1, a1])
            w = weights[k].to(random_weights[k].dtype)
            mix = torch.cat([w.expand(k * b, *w.shape), random_weights[k].expand(b, *w.shape)])
            with _ghost_groups(net.cells[k], k + 1):
                out = net.cells[k](s0, s1, mix)
            s0, s1 = s1, out
        logits = upcast(net.classifier(torch.flatten(net.global_pooling(s1), 1)))
    losses = F.cross_entropy(logits, target.repeat(n), reduction='none').view(n, b).mean(1)
    return full - losses.double()


def marginal_contributions_full(net: nn.Module, x: torch.Tensor, target: torch.Tensor,
                                full_loss: torch.Tensor,
                                random_weights: Sequence[torch.Tensor],
                                weights: Optional[Sequence[torch.Tensor]] = None, keep_graph: bool = False,
                                return_losses: bool = True) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """Reference marginal contributions: one *whole* forward pass per switched-off cell.

    With ``keep_graph=True`` the passes build (and, with ``return_losses``, return) their autograd graphs,
    reproducing the authors' cost structure; otherwise they run under ``no_grad``.  Returns
    ``(mc, ablated_losses)`` (an empty list without ``return_losses``: each graph is freed after its pass).
    """
    if weights is None:
        weights = net.mixing_weights(detach=not keep_graph)
    full = full_loss.detach().double()
    mc = torch.zeros(net.layers, dtype=torch.float64, device=full_loss.device)
    losses = []
    grad_ctx = contextlib.nullcontext() if keep_graph else torch.no_grad()
    with grad_ctx, frozen_bn_stats(net):
        for i in range(net.layers):
            ablated = list(weights)
            ablated[i] = random_weights[i]
            loss = cross_entropy(net(x, ablated), target)
            if return_losses:
                losses.append(loss)
            mc[i] = full - loss.detach().double()
            del loss
    return mc, losses
