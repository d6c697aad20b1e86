"""How a cell's alphas become the weights that mix the candidate ops of each edge.

* ``sigmoid`` (D-DARTS and FairDARTS, paper Sec. 3, Eq. 3): every op weighs ``sigmoid(alpha[edge, op])``
  on its own, so several ops of one edge can be kept; the zero-one loss (Eq. 4) pushes the weights to 0 or
  1, and the ``sparse`` / ``edge`` parsings keep the ops above a threshold.
* ``softmax`` (DARTS, Eq. 2): the ops of an edge compete, ``softmax(alpha[edge, :])``; the weights sum to
  1 over the ops, so no threshold or zero-one term applies, and the genotype keeps the top-2 edges of each
  node with their best op (``darts`` parsing).
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch

__all__ = ['Mixing', 'SigmoidMixing', 'SoftmaxMixing', 'MIXINGS', 'get_mixing']


class Mixing:
    """A mixing rule: ``weights(alpha)`` and what goes with it.

    Attributes:
        name: the ``--mixing`` value.
        label: how plots and logs name the weights.
        zero_one: whether the zero-one loss applies to these weights.
        thresholded: whether parsings keep the ops whose weight reaches ``--threshold``.
        parsings: the genotypes every search writes (the first is the default ``--parse``).
        parse_choices: the ``--parse`` values that make sense for these weights (written too when chosen).
    """

    name: str = ''
    label: str = ''
    zero_one: bool = False
    thresholded: bool = False
    parsings: Tuple[str, ...] = ()
    parse_choices: Tuple[str, ...] = ()

    def written_parsings(self, primary: str) -> Tuple[str, ...]:
        """The parsings a search writes when ``primary`` is its ``--parse``."""
        return self.parsings + (() if primary in self.parsings else (primary,))

    def weights(self, alpha: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def entropy(self, alpha: torch.Tensor) -> torch.Tensor:
        """How undecided the weights are (nats, float64; 0 when every edge made its choice)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'


class SigmoidMixing(Mixing):
    name, label, zero_one, thresholded = 'sigmoid', 'sigmoid(alpha)', True, True
    parsings, parse_choices = ('sparse', 'edge'), ('sparse', 'edge', 'darts')

    def weights(self, alpha: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(alpha)

    def entropy(self, alpha: torch.Tensor) -> torch.Tensor:
        """Mean binary entropy of ``sigmoid(alpha)``: ``log 2`` undecided, 0 when every weight is 0 or 1."""
        p = torch.sigmoid(alpha.detach().double())
        h = -(p * torch.log(p.clamp_min(1e-300)) + (1 - p) * torch.log((1 - p).clamp_min(1e-300)))
        return h.mean()


class SoftmaxMixing(Mixing):
    name, label, zero_one = 'softmax', 'softmax(alpha) over ops', False
    parsings = parse_choices = ('darts',)

    def weights(self, alpha: torch.Tensor) -> torch.Tensor:
        return torch.softmax(alpha, dim=-1)

    def entropy(self, alpha: torch.Tensor) -> torch.Tensor:
        """Mean entropy of each edge's op distribution: ``log(ops)`` uniform, 0 when one op has it all."""
        logp = torch.log_softmax(alpha.detach().double(), dim=-1)
        return -(logp.exp() * logp).sum(-1).mean()


MIXINGS: Dict[str, Mixing] = {m.name: m for m in (SigmoidMixing(), SoftmaxMixing())}


def get_mixing(name: 'str | Mixing') -> Mixing:
    """The mixing called ``name`` (a :class:`Mixing` passes through)."""
    if isinstance(name, Mixing):
        return name
    try:
        return MIXINGS[name]
    except KeyError:
        raise ValueError(f'unknown mixing {name!r}; choose one of {", ".join(MIXINGS)}') from None
