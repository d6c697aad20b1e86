"""Search losses of D-DARTS (paper Sec. 3-4.2, SPEC section 5).

For cell ``i`` on an architecture batch (logits from the whole supernet)::

    L_i = L_CE + w01 * L01_i + w_abl * L_abl_i
    L01_i   = -mean((sigmoid(alpha_i) - 0.5) ** 2)                     (zero-one loss, FairDARTS)
    mc_i    = L_CE(full supernet) - L_CE(cell i mixing with fresh uniform(0, 1) weights)
    L_abl_i = -(mc_i - mean(mc)) / mean(mc)                            (0 when mean(mc) == 0)

and cell ``i``'s optimizer steps on ``dL_i / d alpha_i`` only.  Because ``L01_j`` does not depend on
``alpha_i`` (j != i), one backward pass of ``L_CE + sum_i (w01 * L01_i + w_abl * L_abl_i)`` yields every
``dL_i / d alpha_i`` at once (:func:`architecture_objective`); ``search/trainer.py`` uses that and
``tests/test_search_equivalence.py`` checks it against per-cell backward passes.

**The marginal contributions are numbers, not graphs** (as in the authors' code): ``mc`` is computed under
``torch.no_grad()``, so ``L_abl`` shifts the value of ``L_i`` but contributes *no gradient*.  With the
default ``--loss ablation`` the alpha trajectory is therefore the same as with ``--loss fair`` (the search
draws the random mixing weights from its own generator and freezes BN statistics during the ablated passes,
so not even a side effect differs); what the ablation loss adds is the per-cell marginal contribution,
logged every step.  (A gradient-carrying variant would have to keep the graph of every ablated pass,
which is exactly the memory cost the paper reports in Sec. 5.3; it is not provided.)

Marginal contributions are cheap here: the full pass records every cell's inputs ``(s0, s1)``, and
switching cell ``i`` off only reruns cells ``i ..`` from those cached inputs (:func:`marginal_contributions`).
:func:`marginal_contributions_full` recomputes whole passes instead (the reference it is tested against).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    'LOSSES', 'upcast', 'zero_one_loss', 'ablation_losses', 'random_mixing_weights', 'frozen_bn_stats',
    'marginal_contributions', 'marginal_contributions_full', 'architecture_objective', 'alpha_entropy',
]

LOSSES = ('fair', 'ablation')
MC_BATCH_MAX_ELEMENTS = 2 ** 18
"""Largest stem activation (elements) for which the marginal-contribution reruns are batched by default."""


def zero_one_loss(alpha: torch.Tensor) -> torch.Tensor:
    """FairDARTS zero-one loss ``-mean((sigmoid(alpha) - 0.5)^2)``: pushes the mixing weights to 0 or 1."""
    return -torch.mean((torch.sigmoid(alpha) - 0.5) ** 2)


def ablation_losses(mc: torch.Tensor) -> torch.Tensor:
    """``L_abl_i = -(mc_i - mean(mc)) / mean(mc)`` for every cell (all zeros when ``mean(mc) == 0``)."""
    mean = mc.mean()
    if mean == 0:
        return torch.zeros_like(mc)
    return -(mc - mean) / mean


def alpha_entropy(alpha: torch.Tensor) -> torch.Tensor:
    """Mean binary entropy (nats) of ``sigmoid(alpha)``: ``log 2`` undecided, 0 when every weight is 0 or 1."""
    p = torch.sigmoid(alpha.detach().double())
    h = -(p * torch.log(p.clamp_min(1e-300)) + (1 - p) * torch.log((1 - p).clamp_min(1e-300)))
    return h.mean()


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
    changed = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats and m.training]
    for m in changed:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in changed:
            m.track_running_stats = True


def upcast(logits: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 logits (AMP) to float32 before the loss; float32/float64 unchanged."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def _ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(upcast(logits), target)


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
                mc[i] = full - _ce(logits, target).double()
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


def marginal_contributions_full(net: nn.Module, x: torch.Tensor, target: torch.Tensor, full_loss: torch.Tensor,
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
            loss = _ce(net(x, ablated), target)
            if return_losses:
                losses.append(loss)
            mc[i] = full - loss.detach().double()
            del loss
    return mc, losses


def architecture_objective(ce: torch.Tensor, alphas: Sequence[torch.Tensor], w01: float,
                           abl: Optional[torch.Tensor] = None, w_abl: float = 0.0) -> torch.Tensor:
    """``L_CE + sum_g w01 * L01_g + w_abl * sum_i L_abl_i``: its gradient w.r.t. ``alpha_g`` is ``dL_g/d alpha_g``.

    ``alphas`` are the alpha groups (one per cell, or one per group of identical DARTOpti cells: a group is
    one agent, with one loss ``L_g = L_CE + w01 * L01_g + w_abl * mean_{i in g} L_abl_i``).  ``abl`` holds the
    (detached) per-cell ablation losses; it only shifts the value.
    """
    total = ce
    if w01:
        total = total + w01 * sum(zero_one_loss(a) for a in alphas)
    if abl is not None and w_abl:
        total = total + w_abl * abl.detach().to(ce.dtype).sum()
    return total

