r"""``--loss ablation-grad``: the gradient of the ablation loss through every marginal contribution.

Notation (paper Sec. 4.2, Eq. 7-9).  Cells ``j = 1 .. n``; alpha group ``g`` (a cell, or identical DARTOpti
cells sharing one alpha) with cells ``G_g``; ``CE`` the cross entropy of the full supernet; ``E_j`` the cross
entropy with cell ``j`` mixing with its fixed random weights ``r_j`` (BN statistics frozen)::

    mc_j  = CE - E_j                      m = mean_j mc_j                mc_g = mean_{i in G_g} mc_i
    L_abl_i = -(mc_i - m) / m             A_g = mean_{i in G_g} L_abl_i
    L_g   = CE + w01 L01_g + w_abl A_g                         (group g steps on dL_g / d alpha_g)

Chain rule through every ``mc_j``, with ``dA_g / d mc_j = -[j in G_g] / (|G_g| m) + mc_g / (n m^2)`` and
``d mc_j / d alpha_g = dCE / d alpha_g - dE_j / d alpha_g``, summed over ``j``::

    dL_g / d alpha_g = (1 + w_abl (mc_g - m) / m^2) dCE / d alpha_g + w01 dL01_g / d alpha_g
                       - w_abl mc_g / (n m^2) * S_all_g  +  w_abl / (|G_g| m) * S_own_g              (*)

    S_all_g = sum_j dE_j / d alpha_g          S_own_g = sum_{j in G_g} dE_j / d alpha_g

So two sums of rerun gradients suffice, whatever the coefficients, which need ``mc`` (averaged across ranks)
and are known only after every rerun.  ``E_j`` starts from cell ``j``'s cached inputs ``s_j, s_{j+1}`` (the
outputs of cells ``< j``), so ``dE_j / d alpha`` = the *direct* part (through cells ``>= j``, inputs held) +
``<dE_j / d s, d s / d alpha>`` (through the cells before ``j``).  The second part is linear in
``dE_j / d s``: summed over ``j`` first, it costs one backward pass through the full pass's graph.

The code follows these steps (:func:`ablation_gradients`):

1. the full pass without graph records every cell's inputs and ``CE``; a non-finite ``CE`` ends here;
2. every ``E_j`` is rerun from its inputs as leaves and backpropagated at once (one ablated graph alive at a
   time) into the direct parts and ``dE_j / d s`` of both sums (:class:`RerunSums`);
3. ``mc`` is averaged across ranks (``mc_reduce``) and fixes ``m`` and the coefficients;
4. the full pass again, with its graph (BN statistics frozen): ``dCE / d alpha`` and ``dL01 / d alpha``;
5. the state parts of ``S_all`` and of each ``S_own_g`` go through that graph;
6. (*) per group.

``tests/search/test_ablation_grad.py`` checks the result against plain autograd (float64) and finite
differences.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .loss_terms import cross_entropy, zero_one_loss
from .marginal import frozen_bn_stats

__all__ = ['AblationGradients', 'RerunSums', 'ablation_gradients']


class AblationGradients(NamedTuple):
    """Result of :func:`ablation_gradients` (gradients are not applied).

    ``grads`` is ``None`` per group when the full pass's cross entropy is not finite (nothing else was
    computed); any later non-finite value shows as non-finite gradients.
    """

    grads: List[Optional[torch.Tensor]]   # dL_g / d alpha_g per alpha group, times the loss scale
    ce: torch.Tensor                      # CE of the full pass (detached)
    logits: torch.Tensor                  # logits of the full pass (detached)
    mc: torch.Tensor                      # marginal contribution per cell (float64, after mc_reduce)


@dataclass
class RerunSums:
    """``sum_{j in J} dE_j / d alpha`` over a set ``J`` of reruns, in its two parts: the direct part per
    tracked alpha, and ``sum_{j in J} dE_j / d s_k`` per cached state ``k`` (``None``: no rerun read it)."""

    direct: List[torch.Tensor]
    states: List[Optional[torch.Tensor]] = field(default_factory=list)

    def add_states(self, j: int, d_s0: Optional[torch.Tensor], d_s1: Optional[torch.Tensor]) -> None:
        """Add rerun ``j``'s gradients w.r.t. its inputs ``s_j, s_{j+1}`` (kept in at least float32)."""
        for k, g in ((j, d_s0), (j + 1, d_s1)):
            if g is not None:
                g = g.to(torch.promote_types(g.dtype, torch.float32))
                self.states[k] = g if self.states[k] is None else self.states[k] + g

    def through(self, full_states: Sequence[torch.Tensor], alphas: Sequence[torch.Tensor],
                retain_graph: bool) -> List[torch.Tensor]:
        """The state part: ``sum_k <states[k], d full_states[k] / d alpha>`` for each of ``alphas``."""
        roots: List[torch.Tensor] = []
        grads: List[torch.Tensor] = []
        for t, g in zip(full_states, self.states):
            if g is None:
                continue
            if roots and roots[-1] is t:   # the CIFAR stem feeds one tensor as s_0 and s_1
                grads[-1] = grads[-1] + g
            else:
                roots.append(t)
                grads.append(g)
        if not roots:
            return [torch.zeros_like(a) for a in alphas]
        out = torch.autograd.grad(roots, list(alphas), [g.to(t.dtype) for t, g in zip(roots, grads)],
                                  retain_graph=retain_graph, allow_unused=True)
        return [torch.zeros_like(a) if g is None else g for a, g in zip(alphas, out)]


@dataclass
class _Passes:
    """What every pass of one computation shares."""

    net: nn.Module
    y: torch.Tensor
    autocast: Callable[[], ContextManager]
    scale: Callable[[torch.Tensor], torch.Tensor]

    @property
    def alphas(self) -> List[nn.Parameter]:
        return list(self.net.arch_parameters())


def _reruns(p: _Passes, states: Sequence[torch.Tensor], ce: torch.Tensor,
            random_weights: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, RerunSums, Dict[int, RerunSums]]:
    """Step 2: ``mc`` and the sums ``S_all`` (every rerun) and ``S_own_g`` (the reruns of group ``g``)."""
    net, alphas = p.net, p.alphas
    n, group_of = net.layers, net.group_of_cell
    mc = torch.full((n,), float('nan'), dtype=torch.float64, device=ce.device)
    every = RerunSums([torch.zeros_like(a) for a in alphas], [None] * len(states))
    own = {k: RerunSums([torch.zeros_like(alphas[k])], [None] * len(states)) for k in sorted(set(group_of))}
    with frozen_bn_stats(net):
        for j in range(n):
            s0, s1 = states[j].detach().requires_grad_(), states[j + 1].detach().requires_grad_()
            weights = net.mixing_weights()
            weights[j] = random_weights[j]
            with p.autocast():
                off = cross_entropy(net.forward_from(j, s0, s1, weights), p.y)
            mc[j] = ce.double() - off.detach().double()
            d_s0, d_s1, *d_alpha = torch.autograd.grad(p.scale(off), [s0, s1, *alphas], allow_unused=True)
            g = group_of[j]
            for k, d in enumerate(d_alpha):
                if d is not None:
                    every.direct[k] += d
                    if k == g:
                        own[g].direct[0] += d
            every.add_states(j, d_s0, d_s1)
            if group_of.index(g) < j:   # only then can s_j, s_{j+1} depend on alpha_g
                own[g].add_states(j, d_s0, d_s1)
            del off, d_s0, d_s1, d_alpha, weights
    return mc, every, own


def _combine(p: _Passes, x: torch.Tensor, mc: torch.Tensor, every: RerunSums, own: Dict[int, RerunSums],
             w01: float, w_abl: float) -> List[torch.Tensor]:
    """Steps 4-6: the full pass with its graph, the state parts through it, then (*) per group."""
    alphas, n, group_of = p.alphas, p.net.layers, p.net.group_of_cell
    m = float(mc.mean())
    full_states: List[torch.Tensor] = []
    with frozen_bn_stats(p.net), p.autocast():
        ce = cross_entropy(p.net(x, p.net.mixing_weights(), states=full_states), p.y)
    active = bool(w_abl) and m != 0.0
    d_ce = torch.autograd.grad(p.scale(ce), alphas, retain_graph=active)
    d_l01 = torch.autograd.grad(p.scale(w01 * sum(zero_one_loss(a) for a in alphas)), alphas) if w01 else None
    grads = [d_ce[k] + (d_l01[k] if d_l01 else 0) for k in range(len(alphas))]
    if not active:
        return grads
    reaching = [k for k in own if any(s is not None for s in own[k].states)]
    state_all = every.through(full_states, alphas, retain_graph=bool(reaching))
    for k in range(len(alphas)):
        cells = [i for i in range(n) if group_of[i] == k]
        mc_g = float(mc[cells].mean())
        s_own = own[k].direct[0]
        if k in reaching:
            s_own = s_own + own[k].through(full_states, [alphas[k]], retain_graph=k != reaching[-1])[0]
        c_ce = w_abl * (mc_g - m) / m ** 2
        c_all = w_abl * mc_g / (n * m ** 2)
        c_own = w_abl / (len(cells) * m)
        grads[k] = grads[k] + c_ce * d_ce[k] - c_all * (every.direct[k] + state_all[k]) + c_own * s_own
    return grads


def ablation_gradients(net: nn.Module, x: torch.Tensor, y: torch.Tensor,
                       random_weights: Sequence[torch.Tensor], *, w01: float, w_abl: float,
                       autocast: Optional[Callable[[], ContextManager]] = None,
                       scale: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                       mc_reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
                       ) -> AblationGradients:
    """``dL_g / d alpha_g`` of every alpha group, the ablation term differentiated (module docstring, (*)).

    ``random_weights``: the switched-off cells' mixing weights; ``autocast``: the AMP context of the passes;
    ``scale`` multiplies every backpropagated loss (a ``GradScaler``'s ``scale``); ``mc_reduce`` averages
    ``mc`` across ranks before the coefficients are taken (a collective: called on every rank, always).
    """
    p = _Passes(net, y, autocast or contextlib.nullcontext, scale or (lambda t: t))
    states: List[torch.Tensor] = []
    with torch.no_grad(), p.autocast():                                   # step 1
        logits = net(x, net.mixing_weights(), states=states)
    ce = cross_entropy(logits, y).detach()
    finite = bool(torch.isfinite(ce))
    if finite:
        mc, every, own = _reruns(p, states, ce, random_weights)            # step 2
    else:
        mc = torch.full((net.layers,), float('nan'), dtype=torch.float64, device=ce.device)
    del states
    if mc_reduce is not None:                                              # step 3
        mc = mc_reduce(mc)
    if not finite:
        return AblationGradients([None] * len(p.alphas), ce, logits, mc)
    return AblationGradients(_combine(p, x, mc, every, own, w01, w_abl), ce, logits, mc)
