"""The architecture losses of the search as objects (paper Sec. 3, Eq. 4; Sec. 4.2, Eq. 7-9).

For cell ``i`` of alpha group ``g(i)``, on an architecture batch (logits from the whole supernet)::

    L_i = L_CE + w01 * L01_g(i) + w_abl * L_abl_i                                 (Eq. 9)
    L01_g   = -mean((sigmoid(alpha_g) - 0.5) ** 2)                                (zero-one loss, Eq. 4)
    mc_i    = L_CE(full supernet) - L_CE(cell i mixing with fresh uniform(0, 1) weights)      (Eq. 7)
    L_abl_i = -(mc_i - mean(mc)) / mean(mc)                                (Eq. 8; 0 when mean(mc) == 0)

and group ``g`` (a cell, or cells sharing one alpha: DARTOpti's identical cells, DARTS' cell types) steps on
``dL_g / d alpha_g`` of its own loss ``L_g = L_CE + w01 L01_g + w_abl mean_{i in g} L_abl_i``.  The zero-one
term belongs to sigmoid mixing: with softmax mixing (DARTS) it is absent.  One class per ``--loss``:

* :class:`FairLoss` (``fair``): ``L_CE + w01 L01``; one forward and one backward pass
  (of ``L_CE + sum_g w01 L01_g``, whose gradient w.r.t. ``alpha_g`` is ``dL_g / d alpha_g``).
* :class:`AblationLoss` (``ablation``, the authors' semantics, kept for reproduction): also ``L_abl``, with
  ``mc`` plain numbers from graph-free partial reruns (:mod:`search.marginal`): the term shifts the value of
  ``L_i`` but adds **no gradient**; seeded, the alphas follow ``fair`` exactly.
* :class:`AblationGradLoss` (``ablation-grad``): ``mc`` keeps its graph and group ``g`` also receives
  ``w_abl dL_abl / d alpha_g`` through every ``mc_j`` (:mod:`search.ablation_grad`).

Each says what it needs (:attr:`SearchLoss.needs_mc`, :attr:`SearchLoss.graph_capture`) and computes every
group's gradient in :meth:`SearchLoss.gradients`.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, ContextManager, Dict, List, Optional, Sequence, Type

import torch
import torch.nn as nn

from .ablation_grad import AblationGradients, ablation_gradients
from .loss_terms import ablation_losses, cross_entropy, upcast, zero_one_loss
from .marginal import frozen_bn_stats, marginal_contributions, marginal_contributions_full, \
    random_mixing_weights
from .mixing import Mixing, get_mixing

__all__ = [
    'LOSSES', 'ArchGradients', 'SearchLoss', 'FairLoss', 'AblationLoss', 'AblationGradLoss', 'build_loss',
    'group_ablation_loss',
    # the terms and marginal contributions the losses are made of (defined in their own modules)
    'upcast', 'cross_entropy', 'zero_one_loss', 'ablation_losses', 'random_mixing_weights', 'frozen_bn_stats',
    'marginal_contributions', 'marginal_contributions_full', 'AblationGradients', 'ablation_gradients',
]

Autocast = Optional[Callable[[], ContextManager]]
Scale = Optional[Callable[[torch.Tensor], torch.Tensor]]
Reduce = Optional[Callable[[torch.Tensor], torch.Tensor]]


@dataclass
class ArchGradients:
    """Result of :meth:`SearchLoss.gradients` (gradients not applied); its numbers are device tensors.

    A failed computation shows as non-finite values (``ce`` or ``grads``), never as missing ones.
    """

    grads: List[torch.Tensor]            # dL_g / d alpha_g per alpha group, times the loss scale
    ce: torch.Tensor                     # L_CE of the full pass (0-d, detached)
    correct: torch.Tensor                # correct predictions (0-d)
    count: int
    l01: torch.Tensor                    # zero-one loss per group (zeros without the term)
    mc: Optional[torch.Tensor]           # per cell (float64), for the losses that need it
    abl: Optional[torch.Tensor]          # per cell, likewise


class SearchLoss:
    """An architecture loss: what it needs, its per-cell values and every alpha group's gradient.

    Args:
        mixing: the supernet's mixing (:mod:`search.mixing`); without a zero-one term ``w01`` is ignored.
        w01, w_abl: the weights of the zero-one and ablation terms (paper: 7 and 0.5).
    """

    name: ClassVar[str] = ''
    needs_mc: ClassVar[bool] = False
    """Computes the marginal contributions: the step draws the switched-off cells' random weights, the
    history logs ``mc`` per cell."""
    graph_capture: ClassVar[bool] = True
    """Its computation reads no value on the host, so a CUDA graph can capture it."""

    def __init__(self, mixing: 'str | Mixing' = 'sigmoid', w01: float = 7.0, w_abl: float = 0.5) -> None:
        self.mixing = get_mixing(mixing)
        self.w01 = float(w01) if self.mixing.zero_one else 0.0
        self.w_abl = float(w_abl) if self.needs_mc else 0.0

    def __repr__(self) -> str:
        return f'{type(self).__name__}(mixing={self.mixing.name!r}, w01={self.w01}, w_abl={self.w_abl})'

    def meta(self) -> Dict[str, Any]:
        """What a genotype records about the loss it was searched with."""
        return {'loss': self.name, 'mixing': self.mixing.name,
                'w01': self.w01 if self.mixing.zero_one else None, 'w_abl': self.w_abl if self.needs_mc else None}

    def zero_one_losses(self, alphas: Sequence[torch.Tensor]) -> torch.Tensor:
        """``L01_g`` per alpha group (detached; zeros when the mixing has no zero-one term)."""
        with torch.no_grad():
            if not self.mixing.zero_one:
                return torch.zeros(len(alphas), device=alphas[0].device)
            return torch.stack([zero_one_loss(a) for a in alphas])

    def cell_losses(self, res: ArchGradients, group_of_cell: torch.Tensor) -> torch.Tensor:
        """``L_i = L_CE + w01 L01_g(i) + w_abl L_abl_i`` per cell (float64, on the device, Eq. 9).

        ``group_of_cell``: the alpha group of each cell (:attr:`search.supernet.SuperNet.group_of_cell`).
        """
        out = res.ce.double().reshape(1) + self.w01 * res.l01.detach().double()[group_of_cell]
        return out if res.abl is None else out + self.w_abl * res.abl.detach().double()

    def gradients(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  random_weights: Optional[Sequence[torch.Tensor]] = None, *, autocast: Autocast = None,
                  scale: Scale = None, mc_reduce: Reduce = None, mc_batched: Optional[bool] = None
                  ) -> ArchGradients:
        """``dL_g / d alpha_g`` for every alpha group of ``net`` on the batch ``(x, y)``.

        ``random_weights``: the switched-off cells' mixing weights (losses with :attr:`needs_mc`; default:
        drawn from the global generator); ``autocast``: the AMP context; ``scale`` multiplies the
        backpropagated loss (a ``GradScaler``'s ``scale``); ``mc_reduce`` averages ``mc`` across ranks (a
        collective); ``mc_batched``: see :func:`search.marginal.marginal_contributions`.
        """
        raise NotImplementedError


class FairLoss(SearchLoss):
    """``fair``: ``L_CE + w01 L01`` (FairDARTS' loss, per cell)."""

    name = 'fair'

    def gradients(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  random_weights: Optional[Sequence[torch.Tensor]] = None, *, autocast: Autocast = None,
                  scale: Scale = None, mc_reduce: Reduce = None, mc_batched: Optional[bool] = None
                  ) -> ArchGradients:
        """One forward pass (recording the cell inputs when ``mc`` is needed), one backward pass of
        ``L_CE + sum_g w01 L01_g`` restricted to the alphas, then the graph-free marginal contributions."""
        autocast = autocast or contextlib.nullcontext
        alphas = net.arch_parameters()
        if self.needs_mc and random_weights is None:
            random_weights = random_mixing_weights(net)
        weights = net.mixing_weights()
        states: Optional[List[torch.Tensor]] = [] if self.needs_mc else None
        with autocast():
            logits = net(x, weights, states=states)
        ce = cross_entropy(logits, y)
        objective = ce + self.w01 * sum(zero_one_loss(a) for a in alphas) if self.w01 else ce
        grads = list(torch.autograd.grad(scale(objective) if scale is not None else objective, alphas))
        mc = abl = None
        if self.needs_mc:
            with autocast():
                mc = marginal_contributions(net, states, y, ce.detach(), random_weights,
                                            weights=[w.detach() for w in weights], batched=mc_batched)
            if mc_reduce is not None:   # a collective: every rank calls it
                mc = mc_reduce(mc)
            abl = ablation_losses(mc)
        del states
        correct = (logits.detach().argmax(1) == y).sum()
        l01 = self.zero_one_losses(alphas)
        return ArchGradients(grads, ce.detach(), correct, int(y.numel()), l01, mc, abl)


class AblationLoss(FairLoss):
    """``ablation``: ``fair`` + ``w_abl L_abl`` with ``mc`` as plain numbers (no gradient; the authors')."""

    name = 'ablation'
    needs_mc = True


class AblationGradLoss(SearchLoss):
    """``ablation-grad``: ``fair`` + ``w_abl L_abl`` differentiated through every ``mc_j``."""

    name = 'ablation-grad'
    needs_mc = True
    graph_capture = False   # reads mean(mc) on the host to set its coefficients

    def gradients(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  random_weights: Optional[Sequence[torch.Tensor]] = None, *, autocast: Autocast = None,
                  scale: Scale = None, mc_reduce: Reduce = None, mc_batched: Optional[bool] = None
                  ) -> ArchGradients:
        """:func:`search.ablation_grad.ablation_gradients` (``mc_batched`` does not apply: every rerun keeps
        its graph)."""
        alphas = net.arch_parameters()
        if random_weights is None:
            random_weights = random_mixing_weights(net)
        res = ablation_gradients(net, x, y, random_weights, w01=self.w01, w_abl=self.w_abl, autocast=autocast,
                                 scale=scale, mc_reduce=mc_reduce)
        grads = [torch.full_like(a, float('nan')) if g is None else g for a, g in zip(alphas, res.grads)]
        correct = (res.logits.argmax(1) == y).sum()
        return ArchGradients(grads, res.ce, correct, int(y.numel()), self.zero_one_losses(alphas), res.mc,
                             ablation_losses(res.mc))


LOSSES: Dict[str, Type[SearchLoss]] = {c.name: c for c in (FairLoss, AblationLoss, AblationGradLoss)}
"""``--loss`` name -> loss class."""


def build_loss(name: str, mixing: 'str | Mixing' = 'sigmoid', w01: float = 7.0,
               w_abl: float = 0.5) -> SearchLoss:
    """The loss ``name`` (``fair``, ``ablation``, ``ablation-grad``) for ``mixing``'s weights."""
    try:
        cls = LOSSES[name]
    except KeyError:
        raise ValueError(f'unknown loss {name!r}; choose one of {", ".join(LOSSES)}') from None
    return cls(mixing, w01, w_abl)


def group_ablation_loss(net: nn.Module, abl: Optional[torch.Tensor], k: int) -> torch.Tensor:
    """Mean ablation loss of the cells of alpha group ``k`` (0 without ablation losses)."""
    if abl is None:
        return torch.zeros((), dtype=torch.float64)
    return abl[list(net.cells_of_group(k))].mean()
