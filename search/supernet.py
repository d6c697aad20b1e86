"""The D-DARTS search supernet: individual cells, each with its own architecture parameters.

Paper Sec. 4.1.  Every edge ``(to, src)`` of a search cell mixes all candidate ops as
``sum_k w[edge, k] * op_k(x)`` with ``w = sigmoid(alpha)`` (FairDARTS-style, the default) or the softmax of
DARTS over the ops (:mod:`search.mixing`; no ``none`` op, see :mod:`search.cell`).  Unlike DARTS, the alphas
are *not* shared by all normal (resp. reduction) cells: every cell owns an ``[edges x ops]`` matrix.  DARTOpti
(paper Sec. 4.4) starts from a handcrafted baseline genotype; identical cells of the baseline
(``Genotype.cell_groups()``) then share one matrix, so the supernet holds one alpha per *group* and
``cell_groups[i]`` names the group of cell ``i``.  The same mechanism gives DARTS' two shared cell types
(:func:`shared_cell_groups`).

Layout conventions (:mod:`ddarts_zoo.genotype`: ``edge_index`` / ``edge_pairs``, shared with the distance):
edge ``(to, src)`` is row ``sum_{n < to - 2} (n + 2) + src`` of a cell's alpha matrix; alpha columns follow
the op list; a cell's output is the channel concatenation of its last ``multiplier`` nodes.

The forward pass takes the mixing weights as an argument (``weights[i]`` is cell ``i``'s ``[edges x ops]``
tensor).  This is what lets the search switch a single cell "off" (random mixing weights) and rerun only
the cells after it, see :func:`search.marginal.marginal_contributions`.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from ddarts_zoo.genotype import Genotype, edge_index, edge_pairs, num_edges, reduction_positions
from ddarts_zoo.network import CellNetwork, CellStack, build_stem
from ddarts_zoo.ops import DARTOPTI_SPACE, DARTS_SPACE, OP_SPACES, OPS

from .cell import GhostBatchNorm2d, MixedOp, SearchCell, SourceOps
from .mixing import Mixing, get_mixing
from .parsing import PARSE_METHODS, EmptyCellWarning, parse_cell, parse_genotype

__all__ = [
    'PARSE_METHODS', 'EmptyCellWarning', 'num_edges', 'edge_index', 'edge_pairs', 'default_reductions',
    'resolve_op_names', 'GhostBatchNorm2d', 'MixedOp', 'SourceOps', 'SearchCell', 'SuperNet', 'parse_cell',
    'parse_genotype', 'baseline_alphas', 'shared_cell_groups', 'CELL_MODES',
]

SEARCH_STEMS = {'cifar': 'cifar', 'imagenet': 'imagenet_darts'}
"""The supernet's stem names -> :func:`ddarts_zoo.network.build_stem` types."""
STEM_TYPES = tuple(SEARCH_STEMS)


def default_reductions(layers: int) -> Tuple[int, ...]:
    """DARTS placement: reductions at ``layers // 3`` and ``2 * layers // 3`` (deduplicated), the placement
    derived networks use too (:func:`ddarts_zoo.genotype.reduction_positions`)."""
    return reduction_positions(layers)


CELL_MODES = ('individual', 'shared')
"""``--cells``: one alpha per cell (D-DARTS) or one per cell type (DARTS / FairDARTS)."""


def shared_cell_groups(layers: int, reductions: Sequence[int]) -> Tuple[int, ...]:
    """DARTS' sharing as alpha groups: every normal cell in the group of the first normal cell, every
    reduction cell in that of the first reduction cell."""
    first = {}
    return tuple(first.setdefault(i in reductions, i) for i in range(layers))


def resolve_op_names(ops: 'str | Sequence[str]') -> Tuple[str, ...]:
    """``'darts'`` / ``'dartopti'`` / a comma list / a sequence of registered op names -> tuple of names."""
    if isinstance(ops, str):
        if ops in OP_SPACES:
            return tuple(OP_SPACES[ops])
        ops = [o.strip() for o in ops.split(',') if o.strip()]
    names = tuple(ops)
    if not names:
        raise ValueError('the op set is empty')
    unknown = [o for o in names if o not in OPS]
    if unknown:
        raise ValueError(f'unknown operation(s) {unknown}; known: {", ".join(sorted(OPS))} '
                         f'(or the spaces {", ".join(OP_SPACES)})')
    if len(set(names)) != len(names):
        raise ValueError(f'the op set repeats an operation: {list(names)}')
    return names


class SuperNet(CellNetwork, nn.Module):
    """The D-DARTS supernet.

    Args:
        num_classes, in_chans: from the dataset (:func:`ddarts_zoo.data.dataset_info`).
        channels: initial width ``C`` (the stem outputs ``stem_multiplier * C``).
        layers: number of cells.
        steps: intermediate nodes per cell; ``multiplier``: how many of the last nodes form the output.
        op_names: op set (alpha columns), see :func:`resolve_op_names`.
        reductions: reduction cell indices (default ``layers // 3, 2 * layers // 3``).
        stem: ``'cifar'`` (conv3x3 + BN, stride 1) or ``'imagenet'`` (three stride-2 convs, PC-DARTS style:
            the cells see 1/8 of the input resolution).
        cell_groups: group index per cell; cells of one group share alphas (default: every cell its own).
            Group ids must be the index of the group's first cell (as ``Genotype.cell_groups()`` gives).
        alpha_init: optional initial alpha per group (``[edges x ops]`` each); zeros otherwise.
        mixing: ``'sigmoid'`` (default) or ``'softmax'`` (:mod:`search.mixing`).
        fused: compute each cell's edges per source state (:class:`~search.cell.SourceOps`, default) or one
            module per edge (the plain form, same numbers; :meth:`fuse_` converts it).
    """

    def __init__(self, num_classes: int, in_chans: int = 3, channels: int = 16, layers: int = 8,
                 steps: int = 4, multiplier: int = 4, stem_multiplier: int = 3,
                 op_names: 'str | Sequence[str]' = DARTS_SPACE, reductions: Optional[Sequence[int]] = None,
                 stem: str = 'cifar',
                 cell_groups: Optional[Sequence[int]] = None,
                 alpha_init: Optional[Sequence[torch.Tensor]] = None, fused: bool = True,
                 mixing: 'str | Mixing' = 'sigmoid') -> None:
        super().__init__()
        if layers < 1 or steps < 1 or channels < 1:
            raise ValueError(f'need layers, steps, channels >= 1 (got {layers}, {steps}, {channels})')
        if stem not in STEM_TYPES:
            raise ValueError(f'stem must be one of {STEM_TYPES}, got {stem!r}')
        self.op_names = resolve_op_names(op_names)
        self.num_classes, self.in_chans, self.channels = num_classes, in_chans, channels
        self.layers, self.steps = layers, steps
        self.multiplier = min(multiplier, steps)
        self.stem_type = stem
        self.mixing = get_mixing(mixing)
        reductions = default_reductions(layers) if reductions is None else tuple(sorted(set(reductions)))
        bad = [r for r in reductions if not 0 <= r < layers]
        if bad:
            raise ValueError(f'reduction indices {bad} are outside the {layers} cells')
        self.reductions = reductions
        groups = tuple(range(layers)) if cell_groups is None else tuple(cell_groups)
        if len(groups) != layers or any(not 0 <= g <= i or groups[g] != g for i, g in enumerate(groups)):
            raise ValueError(f'cell_groups must give, for each of the {layers} cells, the index of the first '
                             f'cell of its group; got {list(groups)}')
        self.cell_groups = groups
        self.group_ids = tuple(sorted(set(groups)))
        self.group_of_cell = tuple(self.group_ids.index(g) for g in groups)
        """Position (in ``alphas``) of each cell's alpha group."""

        stem_parts = build_stem(SEARCH_STEMS[stem], in_chans, channels, stem_multiplier)
        for name, module in stem_parts.modules.items():   # self.stem, or self.stem0 and self.stem1
            self.add_module(name, module)
        c_pp, c_p, reduction_prev = stem_parts.c_pp, stem_parts.c_p, stem_parts.reduction_prev
        c_cur = channels
        cells = []
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                c_cur *= 2
            cells.append(SearchCell(steps, self.multiplier, c_pp, c_p, c_cur, reduction, reduction_prev,
                                    self.op_names, fused=fused))
            reduction_prev = reduction
            c_pp, c_p = c_p, self.multiplier * c_cur
        self.cells = CellStack(cells)  # the one loop over cells, shared with the derived networks
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

        shape = (num_edges(steps), len(self.op_names))
        alphas = []
        for k, g in enumerate(self.group_ids):
            init = (torch.zeros(shape) if alpha_init is None
                    else torch.as_tensor(alpha_init[k], dtype=torch.float32))
            if tuple(init.shape) != shape:
                raise ValueError(f'alpha_init for group {g} has shape {tuple(init.shape)}, expected {shape}')
            alphas.append(nn.Parameter(init.clone()))
        self.alphas = nn.ParameterList(alphas)

    @property
    def fused(self) -> bool:
        return all(c.fused for c in self.cells)

    def fuse_(self) -> 'SuperNet':
        """Turn per-edge cells (``fused=False``) into fused ones in place, with the same parameters and
        statistics (e.g. to load a per-edge state dict, then fuse)."""
        for cell in self.cells:
            cell.fuse_()
        return self

    # ------------------------------------------------------------------ parameters
    def alpha_of_cell(self, cell: int) -> nn.Parameter:
        return self.alphas[self.group_of_cell[cell]]

    def cells_of_group(self, group_pos: int) -> Tuple[int, ...]:
        """The cells whose alpha is ``alphas[group_pos]``."""
        return tuple(i for i, k in enumerate(self.group_of_cell) if k == group_pos)

    def arch_parameters(self) -> List[nn.Parameter]:
        return list(self.alphas)

    def weight_parameters(self) -> List[nn.Parameter]:
        arch = {id(a) for a in self.alphas}
        return [p for p in self.parameters() if id(p) not in arch]

    def mixing_weights(self, detach: bool = False) -> List[torch.Tensor]:
        """The mixing weights (``sigmoid(alpha)`` by default) of every cell (one tensor per group, shared)."""
        per_group = [self.mixing.weights(a.detach() if detach else a) for a in self.alphas]
        return [per_group[k] for k in self.group_of_cell]

    def alpha_entropies(self) -> List[float]:
        """How undecided each cell's mixing weights are (:meth:`search.mixing.Mixing.entropy`, host floats)."""
        return [float(self.mixing.entropy(self.alpha_of_cell(i))) for i in range(self.layers)]

    # ------------------------------------------------------------------ forward
    def forward_from(self, start: int, s0: torch.Tensor, s1: torch.Tensor, weights: Sequence[torch.Tensor],
                     states: Optional[List[torch.Tensor]] = None) -> torch.Tensor:
        """Run cells ``start ..`` on inputs ``(s0, s1)`` and the classifier; optionally record the outputs."""
        taps = list(range(start, self.layers)) if states is not None else None
        last, outs = self.cells(s0, s1, list(weights), start, None, taps)
        if states is not None:
            states.extend(outs[i] for i in range(start, self.layers))
        return self.classifier(torch.flatten(self.global_pooling(last), 1))

    def forward(self, x: torch.Tensor, weights: Optional[Sequence[torch.Tensor]] = None,
                states: Optional[List[torch.Tensor]] = None) -> torch.Tensor:
        """Logits.  ``weights`` default to :meth:`mixing_weights`.

        If ``states`` is a list, it receives ``[s0, s1, out_0, out_1, ...]``: cell ``i`` reads
        ``states[i]`` and ``states[i + 1]``, the cache the marginal-contribution reruns start from.
        """
        if weights is None:
            weights = self.mixing_weights()
        if len(weights) != self.layers:
            raise ValueError(f'expected mixing weights for {self.layers} cells, got {len(weights)}')
        s0, s1 = self.stem_states(x)
        if states is not None:
            states.extend((s0, s1))
        return self.forward_from(0, s0, s1, weights, states)

    # ------------------------------------------------------------------ genotypes
    def config(self) -> Dict[str, object]:
        """Constructor arguments (without alpha values), JSON-ready."""
        return dict(num_classes=self.num_classes, in_chans=self.in_chans, channels=self.channels,
                    layers=self.layers, steps=self.steps, multiplier=self.multiplier,
                    op_names=list(self.op_names), reductions=list(self.reductions), stem=self.stem_type,
                    cell_groups=list(self.cell_groups), mixing=self.mixing.name)

    @torch.no_grad()
    def cell_weights(self) -> List[np.ndarray]:
        """The mixing weights of every cell as float64 arrays."""
        return [w.detach().double().cpu().numpy() for w in self.mixing_weights(detach=True)]

    def genotype(self, method: str = 'sparse', threshold: float = 0.85, name: Optional[str] = None,
                 meta: Optional[Dict[str, object]] = None) -> Genotype:
        """Parse the current alphas (see :func:`parse_genotype`); reductions are the ones this net uses."""
        return parse_genotype(self.cell_weights(), self.op_names, self.steps, self.multiplier,
                              self.reductions, method, threshold, name=name, meta=meta)

    @classmethod
    def from_baseline(cls, baseline: Genotype, num_classes: int, in_chans: int = 3, channels: int = 32,
                      op_names: 'str | Sequence[str]' = DARTOPTI_SPACE, init_value: float = 10.0,
                      steps: Optional[int] = None, multiplier: int = 4, stem: str = 'cifar',
                      fused: bool = True, mixing: 'str | Mixing' = 'sigmoid') -> 'SuperNet':
        """DARTOpti supernet: the baseline's cells and reductions, alpha = ``init_value`` on its ops.

        ``steps`` defaults to ``concat end - 2`` of the baseline (6 for ResNet50), enlarged if a gene uses a
        node beyond it.  Identical baseline cells share one alpha matrix.
        """
        names = resolve_op_names(op_names)
        if steps is None:
            top = max(e.to for g in baseline.genes for e in g)
            steps = max((max(baseline.concat) + 1 if baseline.concat else 2) - 2, top - 1)
        groups = baseline.cell_groups()
        inits = baseline_alphas(baseline, names, steps, init_value)
        init = [inits[g] for g in sorted(set(groups))]
        return cls(num_classes, in_chans, channels, baseline.num_cells, steps, multiplier, op_names=names,
                   reductions=baseline.reductions, stem=stem, cell_groups=groups, alpha_init=init,
                   fused=fused, mixing=mixing)


def baseline_alphas(baseline: Genotype, op_names: Sequence[str], steps: int,
                    value: float = 10.0) -> List[torch.Tensor]:
    """Per-cell alpha matrices with ``value`` where the baseline gene has the op, 0 elsewhere."""
    col = {o: k for k, o in enumerate(op_names)}
    out = []
    for ci, gene in enumerate(baseline.genes):
        a = torch.zeros(num_edges(steps), len(op_names))
        for e in gene:
            if e.op not in col:
                raise ValueError(f'baseline {baseline.name or ""} cell {ci}: op {e.op!r} is not in the '
                                 f'search space {list(op_names)}')
            if e.to - 2 >= steps:
                raise ValueError(f'baseline cell {ci}: edge {e} needs more than {steps} steps')
            a[edge_index(e.to, e.src), col[e.op]] = value
        out.append(a)
    return out
