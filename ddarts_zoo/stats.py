"""Operation statistics of a genotype: op counts per cell and the parameter share of each op type.

Counts and parameters cover the *live* edges, the ones the network computes
(:meth:`~ddarts_zoo.genotype.Genotype.live_gene`).  Parameters are those of the cell operations only,
in a CIFAR network of initial width ``C``: the width doubles at each reduction cell, and edges leaving
the two cell inputs of a reduction cell have stride 2 (stem, preprocessing, auxiliary head and
classifier are not counted).  Ops are instantiated with :func:`~ddarts_zoo.ops.build_op` on PyTorch's
``meta`` device, so no weight memory is allocated.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from .genotype import Genotype
from .genotypes import load_genotype
from .ops import DARTOPTI_SPACE

__all__ = ['CellStats', 'GenotypeStats', 'op_params', 'cell_widths', 'genotype_stats', 'format_stats',
           'format_cells', 'format_comparison', 'DEFAULT_WIDTH']

DEFAULT_WIDTH = 36
"""Initial width C of the paper's CIFAR networks (D-DARTS; the paper trains DARTOpti results at 64)."""


@lru_cache(maxsize=None)
def op_params(op: str, channels: int, stride: int = 1) -> int:
    """Learnable parameters of ``build_op(op, channels, stride)`` (BN affine weights included)."""
    import torch

    from .ops import build_op

    with torch.device('meta'):
        module = build_op(op, channels, stride)
    return sum(p.numel() for p in module.parameters())


def cell_widths(genotype: Genotype, width: int) -> Tuple[int, ...]:
    """Channel width ``C`` of each cell in a CIFAR network of initial width ``width``."""
    widths, c = [], width
    for i in range(genotype.num_cells):
        if genotype.is_reduction(i):
            c *= 2
        widths.append(c)
    return tuple(widths)


def _op_order(ops) -> List[str]:
    return sorted(ops, key=lambda op: (DARTOPTI_SPACE.index(op) if op in DARTOPTI_SPACE else 99, op))


@dataclass(frozen=True)
class CellStats:
    """Live op counts and op parameters of one cell."""

    index: int
    reduction: bool
    channels: int
    counts: Mapping[str, int]
    params: Mapping[str, int]
    dead_edges: int = 0

    @property
    def num_edges(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class GenotypeStats:
    """Per-cell and overall op statistics of a genotype at width ``width``."""

    name: str
    width: int
    cells: Tuple[CellStats, ...]
    counts: Mapping[str, int] = field(init=False)
    params: Mapping[str, int] = field(init=False)

    def __post_init__(self) -> None:
        counts: Counter = Counter()
        params: Counter = Counter()
        for c in self.cells:
            counts.update(c.counts)
            params.update(c.params)
        order = _op_order(counts)
        object.__setattr__(self, 'counts', {op: counts[op] for op in order})
        object.__setattr__(self, 'params', {op: params[op] for op in order})

    @property
    def total_params(self) -> int:
        return sum(self.params.values())

    @property
    def num_edges(self) -> int:
        return sum(self.counts.values())

    def share(self) -> Dict[str, float]:
        """Fraction of the op parameters held by each op type (parameter-free ops get 0)."""
        total = self.total_params
        return {op: (p / total if total else 0.0) for op, p in self.params.items()}


def genotype_stats(genotype, width: int = DEFAULT_WIDTH) -> GenotypeStats:
    """Op counts and op parameters of ``genotype`` (Genotype, shipped name, dict or path) at ``width``."""
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ValueError(f'width must be a positive integer, got {width!r}')
    g = load_genotype(genotype)
    cells = []
    for i, c in enumerate(cell_widths(g, width)):
        live = g.live_gene(i, warn=False)
        reduction = g.is_reduction(i)
        counts: Counter = Counter()
        params: Counter = Counter()
        for e in live:
            stride = 2 if reduction and e.src < 2 else 1
            counts[e.op] += 1
            params[e.op] += op_params(e.op, c, stride)
        order = _op_order(counts)
        dead = sum(1 for e in g.genes[i] if e not in live)
        cells.append(CellStats(i, reduction, c, {op: counts[op] for op in order},
                               {op: params[op] for op in order}, dead))
    return GenotypeStats(g.name or 'genotype', width, tuple(cells))


# ---------------------------------------------------------------------------- text tables
_SHORT = {
    'conv_3x1_1x3': 'c3x1', 'conv_7x1_1x7': 'c7x1', 'max_pool_3x3': 'max', 'avg_pool_3x3': 'avg',
    'skip_connect': 'skip', 'simple_conv_1x1': 'c1x1', 'simple_conv_3x3': 'c3x3', 'sep_conv_3x3': 'sep3',
    'sep_conv_5x5': 'sep5', 'dil_conv_3x3': 'dil3', 'dil_conv_5x5': 'dil5', 'bottleneck_1x3x1': 'bneck',
}


def _short(op: str) -> str:
    return _SHORT.get(op, op)


def _fmt_params(n: int) -> str:
    return f'{n / 1e6:.3f}M' if n >= 1e5 else f'{n / 1e3:.1f}K' if n >= 1e3 else str(n)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    widths = [max(len(str(r[k])) for r in [header, *rows]) for k in range(len(header))]
    fmt = ['{:<%d}' % w if k < left else '{:>%d}' % w for k, w in enumerate(widths)]
    lines = ['  '.join(f.format(v) for f, v in zip(fmt, r)).rstrip() for r in [header, *rows]]
    lines.insert(1, '  '.join('-' * w for w in widths))
    return '\n'.join(lines)


def format_cells(stats: GenotypeStats) -> str:
    """One row per cell: type, width, live edges, count of each op, op parameters; then the op legend."""
    ops = list(stats.counts)
    header = ['cell', 'type', 'C', 'edges', *(_short(op) for op in ops), 'params']
    rows = []
    for c in stats.cells:
        kind = 'reduce' if c.reduction else 'normal'
        rows.append([str(c.index), kind, str(c.channels), str(c.num_edges),
                     *(str(c.counts.get(op, 0) or '.') for op in ops), _fmt_params(sum(c.params.values()))])
    legend = ', '.join(f'{_short(op)}={op}' for op in ops)
    return _table(header, rows, left=2) + f'\n({legend})'


def format_stats(stats: GenotypeStats) -> str:
    """Per-cell op counts, then overall counts and the parameter share per op type."""
    dead = sum(c.dead_edges for c in stats.cells)
    head = (f'{stats.name}: {len(stats.cells)} cells, {stats.num_edges} live edges'
            + (f' ({dead} dead edges not counted)' if dead else '')
            + f', width C={stats.width} (CIFAR network, cell ops only)')
    share = stats.share()
    rows = [[op, str(n), f'{100 * n / stats.num_edges:.1f}%', _fmt_params(stats.params[op]),
             f'{100 * share[op]:.1f}%'] for op, n in stats.counts.items()]
    rows.append(['total', str(stats.num_edges), '100.0%', _fmt_params(stats.total_params), '100.0%'])
    overall = _table(['op', 'edges', 'edge %', 'params', 'param share'], rows)
    return f'{head}\n\nper cell:\n{format_cells(stats)}\n\noverall:\n{overall}'


def format_comparison(stats: GenotypeStats, baseline: GenotypeStats, distance: Optional[float] = None) -> str:
    """Side-by-side overall statistics of ``stats`` and a ``baseline`` (e.g. DARTOpti result vs. start)."""
    a, b = stats.name, baseline.name
    ops = _op_order(set(stats.counts) | set(baseline.counts))
    sa, sb = stats.share(), baseline.share()
    rows = []
    for op in ops:
        na, nb = stats.counts.get(op, 0), baseline.counts.get(op, 0)
        rows.append([op, str(na), str(nb), f'{na - nb:+d}', f'{100 * sa.get(op, 0.0):.1f}%',
                     f'{100 * sb.get(op, 0.0):.1f}%'])
    rows.append(['total', str(stats.num_edges), str(baseline.num_edges),
                 f'{stats.num_edges - baseline.num_edges:+d}',
                 _fmt_params(stats.total_params), _fmt_params(baseline.total_params)])
    head = f'{a} vs. baseline {b} (width C={stats.width})'
    if len(stats.cells) != len(baseline.cells):
        head += f'; cell counts differ ({len(stats.cells)} vs. {len(baseline.cells)})'
    if distance is not None:
        head += f'\narchitecture distance: {distance:.4f}'
    table = _table(['op', f'edges {a}', f'edges {b}', 'diff', f'share {a}', f'share {b}'], rows)
    return f'{head}\n{table}'
