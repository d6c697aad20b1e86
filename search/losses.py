"""Search losses of D-DARTS (paper Sec. 3, Eq. 4-5; Sec. 4.2, Eq. 7-9).

For cell ``i`` on an architecture batch (logits from the whole supernet)::

    L_i = L_CE + w01 * L01_i + w_abl * L_abl_i                         (Eq. 9)
    L01_i   = -mean((sigmoid(alpha_i) - 0.5) ** 2)                     (zero-one loss, Eq. 4)
    mc_i    = L_CE(full supernet) - L_CE(cell i mixing with fresh uniform(0, 1) weights)     (Eq. 7)
    L_abl_i = -(mc_i - mean(mc)) / mean(mc)                            (Eq. 8; 0 when mean(mc) == 0)

and cell ``i``'s optimizer steps on ``dL_i / d alpha_i`` only (a group of DARTOpti cells sharing one alpha
is one agent whose ablation term is the mean of its cells' ``L_abl_i``).  Two readings of the ablation term:

* ``--loss ablation`` (the authors' code, kept for reproduction): ``mc`` is a plain number computed under
  ``torch.no_grad()``, so ``L_abl`` shifts the value of ``L_i`` but adds **no gradient**; seeded, the alphas
  follow ``--loss fair`` exactly (the random mixing weights come from the search's own generator and BN
  statistics are frozen during the ablated passes).  Then one backward pass of
  ``L_CE + sum_i (w01 * L01_i + w_abl * L_abl_i)`` yields every ``dL_i / d alpha_i`` at once
  (:func:`architecture_objective`).  The full pass records every cell's inputs, and switching cell ``i``
  off only reruns cells ``i ..`` from them (:func:`marginal_contributions`).
* ``--loss ablation-grad``: ``mc`` keeps its graph and cell ``i`` also receives ``w_abl dL_abl_i / d alpha_i``
  (:func:`ablation_gradients`; ``L_abl_i`` depends on ``alpha_i`` through every ``mc_j``).
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, ContextManager, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    'LOSSES', 'MC_LOSSES', 'upcast', 'zero_one_loss', 'ablation_losses', 'random_mixing_weights',
    'frozen_bn_stats',
    'marginal_contributions', 'marginal_contributions_full', 'architecture_objective', 'alpha_entropy',
    'AblationGradients', 'ablation_gradients',
]

LOSSES = ('fair', 'ablation', 'ablation-grad')
MC_LOSSES = ('ablation', 'ablation-grad')
"""The losses that compute (and log) the marginal contributions."""
MC_BATCH_MAX_ELEMENTS = 2 ** 18
"""Largest stem activation (elements) for which the marginal-contribution reruns are batched by default."""


def zero_one_loss(alpha: torch.Tensor) -> torch.Tensor:
    """FairDARTS zero-one loss ``-mean((sigmoid(alpha) - 0.5)^2)``: pushes the mixing weights to 0 or 1."""
    return -torch.mean((torch.sigmoid(alpha) - 0.5) ** 2)


def ablation_losses(mc: torch.Tensor) -> torch.Tensor:
    """``L_abl_i = -(mc_i - mean(mc)) / mean(mc)`` for every cell (all zeros when ``mean(mc) == 0``)."""
    mean = mc.mean()
    zero = mean == 0   # a device flag, not a branch: no host sync (CUDA graphs can capture it)
    safe_mean = torch.where(zero, torch.ones_like(mean), mean)
    return torch.where(zero, torch.zeros_like(mc), -(mc - mean) / safe_mean)


def alpha_entropy(alpha: torch.Tensor) -> torch.Tensor:
    """Mean binary entropy (nats) of ``sigmoid(alpha)``: ``log 2`` undecided, 0 when every weight is 0 or 1.
    """
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
    changed = [m for m in module.modules()
               if isinstance(m, _BatchNorm) and m.track_running_stats and m.training]
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
            loss = _ce(net(x, ablated), target)
            if return_losses:
                losses.append(loss)
            mc[i] = full - loss.detach().double()
            del loss
    return mc, losses


def architecture_objective(ce: torch.Tensor, alphas: Sequence[torch.Tensor], w01: float,
                           abl: Optional[torch.Tensor] = None, w_abl: float = 0.0) -> torch.Tensor:
    """``L_CE + sum_g w01 * L01_g + w_abl * sum_i L_abl_i``: its gradient w.r.t. ``alpha_g`` is
    ``dL_g/d alpha_g``.

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


class AblationGradients(NamedTuple):
    """Result of :func:`ablation_gradients` (gradients are not applied)."""

    grads: List[Optional[torch.Tensor]]   # dL_g / d alpha_g per alpha group, scaled (None: CE not finite)
    ce: torch.Tensor                      # L_CE of the full pass (detached)
    logits: torch.Tensor                  # logits of the full pass (detached)
    mc: torch.Tensor                      # marginal contribution per cell (float64, after mc_reduce)


def _add(acc: Dict[int, torch.Tensor], key: int, grad: Optional[torch.Tensor]) -> None:
    if grad is not None:
        grad = grad.to(torch.promote_types(grad.dtype, torch.float32))
        acc[key] = grad if key not in acc else acc[key] + grad


def _push(states: Sequence[torch.Tensor], acc: Dict[int, torch.Tensor], inputs: Sequence[torch.Tensor],
          retain_graph: bool) -> List[torch.Tensor]:
    """Gradients w.r.t. ``inputs`` of ``sum_k <acc[k], states[k]>`` through the full pass's graph (zeros
    where unused)."""
    merged: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = {}
    for k, g in acc.items():   # the CIFAR stem feeds one tensor as states[0] and states[1]
        t = states[k]
        merged[id(t)] = (t, g if id(t) not in merged else merged[id(t)][1] + g)
    outs = [t for t, _ in merged.values()]
    if not outs:
        return [torch.zeros_like(a) for a in inputs]
    grads = torch.autograd.grad(outs, list(inputs), [g.to(t.dtype) for t, g in merged.values()],
                                retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(a) if g is None else g for a, g in zip(inputs, grads)]


def ablation_gradients(net: nn.Module, x: torch.Tensor, y: torch.Tensor,
                       random_weights: Sequence[torch.Tensor], *, w01: float, w_abl: float,
                       autocast: Optional[Callable[[], ContextManager]] = None,
                       scale: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                       mc_reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
                       ) -> AblationGradients:
    """``dL_g / d alpha_g`` of every alpha group, the ablation term differentiated (``--loss ablation-grad``).

    Exact, never more than one ablated graph alive: a no-grad full pass records the cell inputs; each rerun
    from them (cell ``j`` off, BN statistics frozen) starts from leaves and is backpropagated at once,
    unweighted, into per-alpha and per-state accumulators; once the (reduced) ``mc`` fixes the coefficients
    of ``L_abl``, a recomputed full pass carries ``L_CE`` and the accumulated state gradients back to the
    alphas of the earlier cells.  The agent-specific coefficients are applied to these sums per group.
    ``scale`` multiplies every backpropagated loss (a ``GradScaler``'s ``scale``); ``mc_reduce`` averages
    ``mc`` across ranks before the coefficients are taken (a collective: called on every rank).
    """
    autocast = autocast or contextlib.nullcontext
    scale = scale or (lambda t: t)
    alphas = list(net.arch_parameters())
    n, pos = net.layers, {id(a): k for k, a in enumerate(alphas)}
    group_of = [pos[id(net.alpha_of_cell(i))] for i in range(n)]
    states: List[torch.Tensor] = []
    with torch.no_grad(), autocast():
        logits = net(x, net.mixing_weights(), states=states)
    ce = _ce(logits, y).detach()
    mc = torch.full((n,), float('nan'), dtype=torch.float64, device=ce.device)
    finite = bool(torch.isfinite(ce))
    # E_j = L_CE(cell j off); we need, per group g: sum_j dE_j/d alpha_g and sum_{j in g} dE_j/d alpha_g
    direct_all = [torch.zeros_like(a) for a in alphas]
    direct_own = [torch.zeros_like(a) for a in alphas]
    acc_all: Dict[int, torch.Tensor] = {}                           # state index -> sum_j dE_j/d state
    acc_own: Dict[int, Dict[int, torch.Tensor]] = {k: {} for k in set(group_of)}   # reruns of group k only
    if finite:
        with frozen_bn_stats(net):
            for j in range(n):
                s0, s1 = states[j].detach().requires_grad_(), states[j + 1].detach().requires_grad_()
                weights = net.mixing_weights()
                weights[j] = random_weights[j]
                with autocast():
                    off = _ce(net.forward_from(j, s0, s1, weights), y)
                mc[j] = ce.double() - off.detach().double()
                g_s0, g_s1, *g_alpha = torch.autograd.grad(scale(off), [s0, s1, *alphas], allow_unused=True)
                own = group_of[j]
                for k, g in enumerate(g_alpha):
                    if g is not None:
                        direct_all[k] += g
                        if k == own:
                            direct_own[k] += g
                for idx, g in ((j, g_s0), (j + 1, g_s1)):
                    _add(acc_all, idx, g)
                    if group_of.index(own) < j:   # only then can these states depend on alpha_own
                        _add(acc_own[own], idx, g)
                del off, g_s0, g_s1, g_alpha, weights
    del states
    if mc_reduce is not None:   # a collective: every rank calls it, finite or not
        mc = mc_reduce(mc)
    if not finite:
        return AblationGradients([None] * len(alphas), ce, logits, mc)

    m = float(mc.mean())
    if not math.isfinite(m):   # an ablated pass diverged: no usable gradient (the caller skips the step)
        return AblationGradients([torch.full_like(a, float('nan')) for a in alphas], ce, logits, mc)
    full_states: List[torch.Tensor] = []
    with frozen_bn_stats(net), autocast():   # the same pass again, now with its graph
        ce_graph = _ce(net(x, net.mixing_weights(), states=full_states), y)
    active = bool(w_abl) and m != 0.0
    g_ce = torch.autograd.grad(scale(ce_graph), alphas, retain_graph=active)
    l01 = torch.autograd.grad(scale(w01 * sum(zero_one_loss(a) for a in alphas)), alphas) if w01 else None
    grads = [g_ce[k] + (l01[k] if l01 else 0) for k in range(len(alphas))]
    if not active:
        return AblationGradients(grads, ce, logits, mc)
    own_groups = [k for k in acc_own if acc_own[k]]
    p_all = _push(full_states, acc_all, alphas, retain_graph=bool(own_groups))
    for k in range(len(alphas)):
        cells = [i for i in range(n) if group_of[i] == k]
        mc_g = float(mc[cells].mean())
        c_total = w_abl * (mc_g - m) / m ** 2             # sum_j d(w_abl mean_{i in g} L_abl_i) / d mc_j
        c_all = w_abl * mc_g / (n * m ** 2)               # the part of that coefficient common to every j
        c_own = w_abl / (len(cells) * m)                  # ... minus this one for j in g
        p_own = direct_own[k]
        if k in own_groups:
            p_own = p_own + _push(full_states, acc_own[k], [alphas[k]], retain_graph=k != own_groups[-1])[0]
        # d mc_j = d L_CE(full) - d E_j
        grads[k] = grads[k] + c_total * g_ce[k] - c_all * (direct_all[k] + p_all[k]) + c_own * p_own
    return AblationGradients(grads, ce, logits, mc)
