"""The D-DARTS search supernet: individual cells, each with its own architecture parameters.

Paper Sec. 4.1 / SPEC section 5.  Every edge ``(to, src)`` of a search cell is a :class:`MixedOp` whose
output is ``sum_k sigmoid(alpha[edge, k]) * op_k(x)`` (FairDARTS-style sigmoid mixing, no softmax, no
``none`` op).  Unlike DARTS, the alphas are *not* shared by all normal (resp. reduction) cells: every cell
owns an ``[edges x ops]`` matrix.  DARTOpti (paper Sec. 4.4) starts from a handcrafted baseline genotype;
identical cells of the baseline (``Genotype.cell_groups()``) then share one matrix, so the supernet holds one
alpha per *group* and ``cell_groups[i]`` names the group of cell ``i``.

Layout conventions (shared with :mod:`ddarts_zoo.distance` and the authors' supernet):

* edge ``(to, src)`` is row ``sum_{n < to - 2} (n + 2) + src`` of a cell's alpha matrix;
* alpha columns follow the op list (``DARTS_SPACE``: 7 ops, ``DARTOPTI_SPACE``: 12 ops, or any names
  registered in :data:`ddarts_zoo.ops.OPS`);
* a cell's output is the channel concatenation of its last ``multiplier`` nodes.

The forward pass takes the mixing weights as an argument (``weights[i]`` is cell ``i``'s ``[edges x ops]``
tensor).  This is what lets the search switch a single cell "off" (random mixing weights) and rerun only
the cells after it, see :func:`search.losses.marginal_contributions`.
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from ddarts_zoo.genotype import Edge, Genotype
from ddarts_zoo.ops import DARTOPTI_SPACE, DARTS_SPACE, OP_SPACES, OPS, POOLING_OPS, FactorizedReduce, \
    ReLUConvBN, build_op

__all__ = [
    'PARSE_METHODS', 'EmptyCellWarning', 'num_edges', 'edge_index', 'edge_pairs', 'default_reductions',
    'resolve_op_names', 'GhostBatchNorm2d', 'MixedOp', 'SearchCell', 'SuperNet', 'parse_cell', 'parse_genotype',
    'baseline_alphas',
]

PARSE_METHODS = ('sparse', 'edge', 'darts')
STEM_TYPES = ('cifar', 'imagenet')


class EmptyCellWarning(UserWarning):
    """A parsed cell kept no operation (every weight under the threshold); it became a skip connection."""


# ---------------------------------------------------------------------------- layout helpers
def num_edges(steps: int) -> int:
    """Number of edges of a cell with ``steps`` intermediate nodes (14 for 4 steps)."""
    return sum(2 + i for i in range(steps))


def edge_index(to: int, src: int) -> int:
    """Row of edge ``(to, src)`` in a cell's alpha matrix."""
    if not 0 <= src < to or to < 2:
        raise ValueError(f'edge ({to}, {src}) does not exist (need 0 <= src < to and to >= 2)')
    return sum(n + 2 for n in range(to - 2)) + src


def edge_pairs(steps: int) -> List[Tuple[int, int]]:
    """``(to, src)`` of every row, in row order."""
    return [(to, src) for to in range(2, steps + 2) for src in range(to)]


def default_reductions(layers: int) -> Tuple[int, ...]:
    """DARTS placement: reductions at ``layers // 3`` and ``2 * layers // 3`` (deduplicated)."""
    return tuple(sorted({layers // 3, 2 * layers // 3}))


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


# ---------------------------------------------------------------------------- modules
class GhostBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` that can normalise ``ghost_groups`` stacked sub-batches independently.

    The search cells' BN layers are switched to this class (same state, same behaviour while
    ``ghost_groups == 1``).  The batched marginal-contribution pass stacks the reruns of several
    switched-off cells along the batch dimension; with ``ghost_groups = R`` each of the ``R`` sub-batches gets
    its own batch statistics, exactly as if it ran alone (running statistics are not touched then).
    """

    ghost_groups: int = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.ghost_groups
        if r == 1:
            return super().forward(x)
        if not self.training:
            raise RuntimeError('ghost batch normalisation is only defined in training mode')
        n, c, h, w = x.shape
        xv = x.view(r, n // r, c, h * w)
        var, mean = torch.var_mean(xv, dim=(1, 3), keepdim=True, unbiased=False)
        y = (xv - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight.view(1, 1, c, 1) + self.bias.view(1, 1, c, 1)
        return y.view(n, c, h, w)


class MixedOp(nn.Module):
    """All candidate ops of one edge, built affine-free; pools are followed by an affine-free BN.

    ``weights`` is ``[ops]`` (one mixing vector for the batch) or ``[batch, ops]`` (one per sample).
    """

    def __init__(self, channels: int, stride: int, op_names: Sequence[str]) -> None:
        super().__init__()
        ops = []
        for name in op_names:
            op = build_op(name, channels, stride, affine=False)
            if name in POOLING_OPS:
                op = nn.Sequential(op, nn.BatchNorm2d(channels, affine=False))
            ops.append(op)
        self.ops = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        per_sample = weights.dim() == 2
        out = None
        for k, op in enumerate(self.ops):
            w = weights[:, k].view(-1, 1, 1, 1) if per_sample else weights[k]
            y = w * op(x)
            out = y if out is None else out + y
        return out


class SearchCell(nn.Module):
    """A search cell: two preprocessed inputs, ``steps`` nodes, every edge a :class:`MixedOp`."""

    def __init__(self, steps: int, multiplier: int, c_pp: int, c_p: int, channels: int, reduction: bool,
                 reduction_prev: bool, op_names: Sequence[str]) -> None:
        super().__init__()
        self.steps, self.multiplier, self.reduction = steps, multiplier, reduction
        self.preprocess0 = (FactorizedReduce(c_pp, channels, affine=False) if reduction_prev
                            else ReLUConvBN(c_pp, channels, affine=False))
        self.preprocess1 = ReLUConvBN(c_p, channels, affine=False)
        self.edges = nn.ModuleList(
            MixedOp(channels, 2 if reduction and src < 2 else 1, op_names) for _, src in edge_pairs(steps))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``weights``: ``[edges x ops]``, or ``[batch x edges x ops]`` for per-sample mixing."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        per_sample = weights.dim() == 3
        row = 0
        for _ in range(self.steps):
            node = None
            for h in states:
                y = self.edges[row](h, weights[:, row] if per_sample else weights[row])
                node = y if node is None else node + y
                row += 1
            states.append(node)
        return torch.cat(states[-self.multiplier:], dim=1)


class SuperNet(nn.Module):
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
    """

    def __init__(self, num_classes: int, in_chans: int = 3, channels: int = 16, layers: int = 8, steps: int = 4,
                 multiplier: int = 4, stem_multiplier: int = 3, op_names: 'str | Sequence[str]' = DARTS_SPACE,
                 reductions: Optional[Sequence[int]] = None, stem: str = 'cifar',
                 cell_groups: Optional[Sequence[int]] = None,
                 alpha_init: Optional[Sequence[torch.Tensor]] = None) -> None:
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
        self._group_pos = {g: k for k, g in enumerate(self.group_ids)}

        if stem == 'cifar':
            c_stem = stem_multiplier * channels
            self.stem = nn.Sequential(nn.Conv2d(in_chans, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem))
            c_pp, c_p, reduction_prev = c_stem, c_stem, False
        else:
            half = max(channels // 2, 1)
            self.stem0 = nn.Sequential(
                nn.Conv2d(in_chans, half, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(half),
                nn.ReLU(inplace=True),
                nn.Conv2d(half, channels, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(channels))
            self.stem1 = nn.Sequential(
                nn.ReLU(inplace=False), nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(channels))
            c_pp, c_p, reduction_prev = channels, channels, True
        c_cur = channels
        cells = []
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                c_cur *= 2
            cells.append(SearchCell(steps, self.multiplier, c_pp, c_p, c_cur, reduction, reduction_prev,
                                    self.op_names))
            reduction_prev = reduction
            c_pp, c_p = c_p, self.multiplier * c_cur
        self.cells = nn.ModuleList(cells)
        for m in self.cells.modules():
            if type(m) is nn.BatchNorm2d:
                m.__class__ = GhostBatchNorm2d
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

        shape = (num_edges(steps), len(self.op_names))
        alphas = []
        for k, g in enumerate(self.group_ids):
            init = torch.zeros(shape) if alpha_init is None else torch.as_tensor(alpha_init[k], dtype=torch.float32)
            if tuple(init.shape) != shape:
                raise ValueError(f'alpha_init for group {g} has shape {tuple(init.shape)}, expected {shape}')
            alphas.append(nn.Parameter(init.clone()))
        self.alphas = nn.ParameterList(alphas)

    # ------------------------------------------------------------------ parameters
    def alpha_of_cell(self, cell: int) -> nn.Parameter:
        return self.alphas[self._group_pos[self.cell_groups[cell]]]

    def cells_of_group(self, group_pos: int) -> Tuple[int, ...]:
        g = self.group_ids[group_pos]
        return tuple(i for i, c in enumerate(self.cell_groups) if c == g)

    def arch_parameters(self) -> List[nn.Parameter]:
        return list(self.alphas)

    def weight_parameters(self) -> List[nn.Parameter]:
        arch = {id(a) for a in self.alphas}
        return [p for p in self.parameters() if id(p) not in arch]

    def mixing_weights(self, detach: bool = False) -> List[torch.Tensor]:
        """``sigmoid(alpha)`` for every cell (cells of one group get the same tensor)."""
        per_group = [torch.sigmoid(a.detach() if detach else a) for a in self.alphas]
        return [per_group[self._group_pos[g]] for g in self.cell_groups]

    # ------------------------------------------------------------------ forward
    def stem_states(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.stem_type == 'cifar':
            s = self.stem(x)
            return s, s
        s0 = self.stem0(x)
        return s0, self.stem1(s0)

    def forward_from(self, start: int, s0: torch.Tensor, s1: torch.Tensor, weights: Sequence[torch.Tensor],
                     states: Optional[List[torch.Tensor]] = None) -> torch.Tensor:
        """Run cells ``start ..`` on inputs ``(s0, s1)`` and the classifier; optionally record cell outputs."""
        for i in range(start, self.layers):
            s0, s1 = s1, self.cells[i](s0, s1, weights[i])
            if states is not None:
                states.append(s1)
        return self.classifier(torch.flatten(self.global_pooling(s1), 1))

    def forward(self, x: torch.Tensor, weights: Optional[Sequence[torch.Tensor]] = None,
                states: Optional[List[torch.Tensor]] = None) -> torch.Tensor:
        """Logits.  ``weights`` default to ``sigmoid(alpha)``.

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
                    cell_groups=list(self.cell_groups))

    @torch.no_grad()
    def cell_weights(self) -> List[np.ndarray]:
        """``sigmoid(alpha)`` per cell as float64 arrays."""
        return [w.detach().double().cpu().numpy() for w in self.mixing_weights(detach=True)]

    def genotype(self, method: str = 'sparse', threshold: float = 0.85, name: Optional[str] = None,
                 meta: Optional[Dict[str, object]] = None) -> Genotype:
        """Parse the current alphas (see :func:`parse_genotype`); reductions are the ones this net uses."""
        return parse_genotype(self.cell_weights(), self.op_names, self.steps, self.multiplier, self.reductions,
                              method, threshold, name=name, meta=meta)

    @classmethod
    def from_baseline(cls, baseline: Genotype, num_classes: int, in_chans: int = 3, channels: int = 32,
                      op_names: 'str | Sequence[str]' = DARTOPTI_SPACE, init_value: float = 10.0,
                      steps: Optional[int] = None, multiplier: int = 4, stem: str = 'cifar') -> 'SuperNet':
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
                   reductions=baseline.reductions, stem=stem, cell_groups=groups, alpha_init=init)


def baseline_alphas(baseline: Genotype, op_names: Sequence[str], steps: int,
                    value: float = 10.0) -> List[torch.Tensor]:
    """Per-cell alpha matrices with ``value`` where the baseline gene has the op, 0 elsewhere."""
    col = {o: k for k, o in enumerate(op_names)}
    out = []
    for ci, gene in enumerate(baseline.genes):
        a = torch.zeros(num_edges(steps), len(op_names))
        for e in gene:
            if e.op not in col:
                raise ValueError(f'baseline {baseline.name or ""} cell {ci}: op {e.op!r} is not in the search '
                                 f'space {list(op_names)}')
            if e.to - 2 >= steps:
                raise ValueError(f'baseline cell {ci}: edge {e} needs more than {steps} steps')
            a[edge_index(e.to, e.src), col[e.op]] = value
        out.append(a)
    return out


# ---------------------------------------------------------------------------- parsing
def _order_desc(values: Sequence[float]) -> List[int]:
    """Indices by decreasing value; ties keep the lower index first (deterministic)."""
    return sorted(range(len(values)), key=lambda k: (-values[k], k))


def parse_cell(weights: np.ndarray, op_names: Sequence[str], steps: int, method: str = 'sparse',
               threshold: float = 0.85) -> List[Edge]:
    """Discretise one cell's mixing weights ``[edges x ops]`` (values of ``sigmoid(alpha)``).

    Per intermediate node:

    * ``sparse``: the 2 incoming edges with the highest max weight; on each, the best op if ``>= threshold``.
    * ``edge``: every incoming edge; on each, the (up to) 2 best ops whose weight is ``>= threshold``.
    * ``darts``: the 2 incoming edges with the highest max weight, the best op on each, no threshold.

    Ties are broken towards the lower source node / lower op column.  ``sparse``/``darts`` list a node's
    edges strongest first; ``edge`` lists them by source, ops by column.
    """
    if method not in PARSE_METHODS:
        raise ValueError(f'unknown parsing method {method!r}; choose one of {PARSE_METHODS}')
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (num_edges(steps), len(op_names)):
        raise ValueError(f'weights have shape {w.shape}, expected {(num_edges(steps), len(op_names))}')
    gene: List[Edge] = []
    for to in range(2, steps + 2):
        rows = [edge_index(to, src) for src in range(to)]
        if method == 'edge':
            for src, r in enumerate(rows):
                best = [k for k in _order_desc(list(w[r]))[:2] if w[r, k] >= threshold]
                gene.extend(Edge(op_names[k], to, src) for k in sorted(best))
            continue
        strength = [float(w[r].max()) for r in rows]
        for src in _order_desc(strength)[:2]:
            r = rows[src]
            k = _order_desc(list(w[r]))[0]
            if method == 'darts' or w[r, k] >= threshold:
                gene.append(Edge(op_names[k], to, src))
    return gene


def parse_genotype(cell_weights: Sequence[np.ndarray], op_names: Sequence[str], steps: int, multiplier: int,
                   reductions: Sequence[int], method: str = 'sparse', threshold: float = 0.85,
                   name: Optional[str] = None, meta: Optional[Dict[str, object]] = None) -> Genotype:
    """A :class:`Genotype` from every cell's mixing weights.

    A cell left without a live node (nothing reached the threshold) becomes a single ``skip_connect`` from
    the previous cell (the network strides it in a reduction cell), with an :class:`EmptyCellWarning`; the
    cells concerned are recorded in ``meta['empty_cells']``.
    """
    genes, empty = [], []
    for ci, w in enumerate(cell_weights):
        gene = parse_cell(w, op_names, steps, method, threshold)
        if not Genotype._live_nodes(gene):
            empty.append(ci)
            gene = [Edge('skip_connect', 2, 1)]
        genes.append(gene)
    info = dict(meta or {})
    info.update(parsing=method, threshold=threshold if method != 'darts' else None, steps=steps)
    if empty:
        info['empty_cells'] = empty
        warnings.warn(f'{method} parsing (threshold {threshold}): cell(s) {empty} kept no operation and became '
                      f'a skip_connect from the previous cell', EmptyCellWarning, stacklevel=2)
    concat = tuple(range(2 + steps - multiplier, 2 + steps))
    return Genotype(genes, tuple(reductions), concat, name, info)
