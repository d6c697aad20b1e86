"""Pictures of genotypes: one DAG per cell on a grid, and distance heatmaps (paper Fig. 9).

Drawn with networkx on matplotlib :class:`~matplotlib.figure.Figure` objects rendered by the Agg
(PNG), SVG or PDF canvas chosen from the file extension; pyplot's global state is never touched and no
graphviz binary is needed.  Only live edges are drawn (what the network computes, see
:meth:`~ddarts_zoo.genotype.Genotype.live_gene`); the number of hidden dead edges is noted per cell.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from .genotype import Genotype
from .genotypes import load_genotype
from .ops import DARTOPTI_SPACE
from .utils.io import atomic_write

__all__ = ['FORMATS', 'OP_LABELS', 'op_color', 'grid_shape', 'cell_graph', 'draw_cell', 'used_ops',
           'plot_genotype', 'plot_distance_matrix']

FORMATS = ('.png', '.svg', '.pdf')
"""File types :func:`plot_genotype` and :func:`plot_distance_matrix` write (chosen by extension)."""

OP_LABELS: Dict[str, str] = {
    'conv_3x1_1x3': 'conv 3x1/1x3', 'conv_7x1_1x7': 'conv 7x1/1x7', 'max_pool_3x3': 'max pool',
    'avg_pool_3x3': 'avg pool', 'skip_connect': 'skip', 'simple_conv_1x1': 'conv 1x1',
    'simple_conv_3x3': 'conv 3x3', 'sep_conv_3x3': 'sep 3x3', 'sep_conv_5x5': 'sep 5x5',
    'dil_conv_3x3': 'dil 3x3', 'dil_conv_5x5': 'dil 5x5', 'bottleneck_1x3x1': 'bottleneck',
}
"""Short edge labels; the figure legend maps colours back to the full op names."""

_PALETTE = ('#1f77b4', '#17becf', '#2ca02c', '#98df8a', '#7f7f7f', '#ff7f0e', '#d62728', '#9467bd',
            '#8c564b', '#e377c2', '#bcbd22', '#393b79')
_INPUT_LABELS = {0: '$c_{k-2}$', 1: '$c_{k-1}$'}
_OUTPUT = 'out'
_REDUCTION_COLOR = '#c0392b'
_INCH_PER_UNIT = 0.75  # drawing scale: inches per layout unit (node columns are 1.6 units apart)

PathLike = Union[str, 'os.PathLike[str]']


def op_color(op: str) -> str:
    """Fixed colour of an op (DARTOpti order; unknown, user-registered ops are black)."""
    try:
        return _PALETTE[DARTOPTI_SPACE.index(op)]
    except ValueError:
        return '#000000'


def grid_shape(num_cells: int) -> Tuple[int, int]:
    """(rows, cols) of the cell grid: about square, at most 4 columns (4 cells: 2x2, 8: 3x3, 14: 4x4)."""
    if num_cells < 1:
        raise ValueError(f'need at least one cell, got {num_cells}')
    cols = min(4, math.ceil(math.sqrt(num_cells)))
    return math.ceil(num_cells / cols), cols


def _check_format(out: PathLike) -> Path:
    path = Path(out)
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f'{path}: unsupported image type {path.suffix or "(no extension)"!r}; '
                         f'use one of {", ".join(FORMATS)}')
    return path


def cell_graph(genotype: Genotype, cell: int):
    """The live part of ``cell`` as a ``networkx.MultiDiGraph``.

    Nodes: 0 and 1 (cell inputs), the live intermediate nodes, and ``'out'`` (channel concat of the live
    nodes, drawn with dashed edges).  Op edges carry ``op``; parallel ops on one pair get keys 0, 1, ...
    """
    import networkx as nx

    graph = nx.MultiDiGraph()
    live = genotype.live_nodes(cell)
    graph.add_nodes_from([0, 1, *live, _OUTPUT])
    for e in genotype.live_gene(cell, warn=False):
        graph.add_edge(e.src, e.to, op=e.op)
    for node in live:
        graph.add_edge(node, _OUTPUT, op=None)
    return graph


def _layout(live: Sequence[int]) -> Dict[object, Tuple[float, float]]:
    """Inputs on the left, intermediate nodes left to right in a zigzag, the output on the right."""
    pos: Dict[object, Tuple[float, float]] = {0: (0.0, -1.7), 1: (0.0, 1.7)}
    for j, node in enumerate(live):
        pos[node] = (1.6 * (1 + j), 0.6 if j % 2 else -0.6)
    pos[_OUTPUT] = (1.6 * (1 + len(live)), 0.0)
    return pos


def _bend(src: int, dst: int, key: int, parallel: int) -> float:
    """``arc3`` radius of an op edge (positive bends a left-to-right edge downwards).

    Edges from ``c_{k-2}`` (bottom) bend down and edges from ``c_{k-1}`` (top) bend up, more the
    further they reach, so they pass outside the chain of intermediate nodes; edges between
    intermediate nodes bend slightly, alternating sides.  Parallel ops of one pair fan out around it.
    """
    if src < 2:
        base = (1.0 if src == 0 else -1.0) * (0.1 if dst == 2 else min(0.25 + 0.05 * (dst - 3), 0.4))
    else:
        base = 0.0 if dst - src == 1 else (0.15 if src % 2 else -0.15)
    if parallel > 1:
        base += (key - (parallel - 1) / 2) * 0.24
    return base


def _arc_points(p0: Tuple[float, float], p1: Tuple[float, float], rad: float, num: int = 17):
    """Points of matplotlib's ``arc3`` quadratic Bezier curve (exact in data units at equal aspect)."""
    (x0, y0), (x1, y1) = p0, p1
    cx, cy = (x0 + x1) / 2 + rad * (y1 - y0), (y0 + y1) / 2 - rad * (x1 - x0)
    ts = [k / (num - 1) for k in range(num)]
    return [((1 - t) ** 2 * x0 + 2 * t * (1 - t) * cx + t * t * x1,
             (1 - t) ** 2 * y0 + 2 * t * (1 - t) * cy + t * t * y1) for t in ts]


@dataclass(frozen=True)
class _CellDrawing:
    """What :func:`draw_cell` needs: graph, node positions, per-edge bend, and the data bounds."""

    graph: object
    pos: Dict[object, Tuple[float, float]]
    bends: Dict[Tuple[object, object, int], float]
    bounds: Tuple[float, float, float, float]


def _plan_cell(genotype: Genotype, cell: int) -> _CellDrawing:
    graph = cell_graph(genotype, cell)
    pos = _layout(genotype.live_nodes(cell))
    bends = {}
    xs = [x for x, _ in pos.values()]
    ys = [y for _, y in pos.values()]
    for u, v, key, data in graph.edges(keys=True, data=True):
        rad = 0.0 if data['op'] is None else round(_bend(u, v, key, graph.number_of_edges(u, v)), 3)
        bends[(u, v, key)] = rad
        pts = _arc_points(pos[u], pos[v], rad)
        xs += [x for x, _ in pts]
        ys += [y for _, y in pts]
    pad = 0.6  # node radius + label room
    return _CellDrawing(graph, pos, bends, (min(xs) - pad, max(xs) + pad, min(ys) - pad, max(ys) + pad))


def draw_cell(ax, genotype: Genotype, cell: int, *, font_size: float = 7.0,
              plan: Optional[_CellDrawing] = None) -> Tuple[float, float, float, float]:
    """Draw ``cell`` of ``genotype`` on the matplotlib axes ``ax`` (equal aspect).

    Nodes are drawn with networkx; op edges are ``arc3`` arrows labelled at their midpoint.  Returns the
    drawing's data bounds ``(xmin, xmax, ymin, ymax)``, also set as the axes limits.
    """
    import networkx as nx
    from matplotlib.patches import FancyArrowPatch

    plan = plan or _plan_cell(genotype, cell)
    graph, pos = plan.graph, plan.pos
    live = genotype.live_nodes(cell)
    reduction = genotype.is_reduction(cell)
    node_size = 620  # points^2
    shrink = 0.5 * node_size ** 0.5 + 1.0  # node radius in points

    for nodes, shape, color in (([0, 1], 's', '#aed6f1'), (list(live), 'o', '#fdebd0'),
                                ([_OUTPUT], 's', '#d5f5e3')):
        nx.draw_networkx_nodes(graph, pos, nodelist=nodes, node_shape=shape, node_color=color,
                               edgecolors='#333333', linewidths=0.8, node_size=node_size, ax=ax)
    labels = {n: _INPUT_LABELS.get(n, str(n)) for n in [0, 1, *live]}
    labels[_OUTPUT] = '$c_{k}$'
    nx.draw_networkx_labels(graph, pos, labels=labels, font_size=font_size + 1, ax=ax)

    for u, v, key, data in graph.edges(keys=True, data=True):
        rad = plan.bends[(u, v, key)]
        op = data['op']
        color = '#999999' if op is None else op_color(op)
        ax.add_patch(FancyArrowPatch(
            pos[u], pos[v], connectionstyle=f'arc3,rad={rad}', arrowstyle='-|>',
            mutation_scale=7 if op is None else 9, lw=0.7 if op is None else 1.3,
            linestyle='--' if op is None else '-', color=color, shrinkA=shrink, shrinkB=shrink, zorder=1))
        if op is not None:
            x, y = _arc_points(pos[u], pos[v], rad, num=3)[1]
            ax.text(x, y, OP_LABELS.get(op, op), fontsize=font_size, color=color, ha='center', va='center',
                    zorder=3, bbox=dict(boxstyle='round,pad=0.12', fc='white', ec='none', alpha=0.85))

    live_edges = set(genotype.live_gene(cell, warn=False))
    dead = sum(1 for e in genotype.genes[cell] if e not in live_edges)
    title = f'cell {cell}' + (' (reduction)' if reduction else '')
    if dead > 0:
        title += f', {dead} dead edge{"s" if dead > 1 else ""} hidden'
    ax.set_title(title, fontsize=font_size + 2, color=_REDUCTION_COLOR if reduction else 'black',
                 fontweight='bold' if reduction else 'normal')
    xmin, xmax, ymin, ymax = plan.bounds
    ax.set_xlim(xmin, xmax)
    ax.set_ylim(ymin, ymax)
    ax.set_aspect('equal')
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(reduction)
        spine.set_color(_REDUCTION_COLOR)
        spine.set_linewidth(1.5)
    if reduction:
        ax.set_facecolor('#fdf2f1')
    return plan.bounds


def _new_figure(figsize: Tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)  # PNG through Agg; savefig switches to the SVG/PDF canvas by extension
    return fig


def _save(fig, path: Path, dpi: int) -> Path:
    return atomic_write(path, lambda f: fig.savefig(f, dpi=dpi, format=path.suffix.lower()[1:]))


def plot_genotype(genotype: Union[Genotype, PathLike, dict], out: PathLike, *, dpi: int = 150,
                  title: Optional[str] = None) -> Path:
    """Draw every cell of ``genotype`` as a DAG on a grid and write ``out`` (.png, .svg or .pdf).

    All cells share one scale; reduction cells have a red title and frame; a legend maps edge colours
    to op names.  Returns the written path.
    """
    from matplotlib.lines import Line2D

    g = load_genotype(genotype)
    path = _check_format(out)
    rows, cols = grid_shape(g.num_cells)
    plans = [_plan_cell(g, i) for i in range(g.num_cells)]
    width = max(b[1] - b[0] for b in (p.bounds for p in plans))
    height = max(b[3] - b[2] for b in (p.bounds for p in plans))
    handles = [Line2D([], [], color=op_color(op), lw=2, label=op) for op in used_ops(g)]
    legend_rows = math.ceil(len(handles) / 6)

    # Layout in inches, then as figure fractions (no tight_layout: it would render the figure twice).
    cell_w, cell_h = _INCH_PER_UNIT * width, _INCH_PER_UNIT * height
    gap, cell_title, margin = 0.25, 0.35, 0.2
    top, bottom = 0.6, 0.25 * legend_rows + 0.2
    fig_w = cols * cell_w + (cols - 1) * gap + 2 * margin
    fig_h = rows * (cell_h + cell_title) + (rows - 1) * gap + top + bottom
    fig = _new_figure((fig_w, fig_h))
    axes = fig.subplots(rows, cols, squeeze=False, gridspec_kw=dict(
        left=margin / fig_w, right=1 - margin / fig_w, bottom=bottom / fig_h,
        top=1 - (top + cell_title) / fig_h, wspace=gap / cell_w, hspace=(gap + cell_title) / cell_h))
    for i, ax in enumerate(axes.flat):
        if i >= g.num_cells:
            ax.set_axis_off()
            continue
        x0, x1, y0, y1 = draw_cell(ax, g, i, plan=plans[i])
        # pad every cell to the common extent so that all share one scale
        ax.set_xlim(x0, x0 + width)
        ax.set_ylim((y0 + y1 - height) / 2, (y0 + y1 + height) / 2)
    fig.legend(handles=handles, loc='lower center', ncol=min(len(handles), 6), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.05 / fig_h))
    heading = title or (f'{g.name or "genotype"}: {g.num_cells} cells, {g.op_space} space, '
                        f'reductions {list(g.reductions)}')
    fig.suptitle(heading, fontsize=12, y=1 - 0.15 / fig_h, va='top')
    return _save(fig, path, dpi)


def plot_distance_matrix(matrix, labels: Sequence[str], out: PathLike, *, dpi: int = 150,
                         title: str = 'Architecture distance') -> Path:
    """Heatmap of a pairwise distance matrix with the values written in the cells (like paper Fig. 9)."""
    import numpy as np

    m = np.asarray(matrix, dtype=float)
    n = len(labels)
    if m.shape != (n, n):
        raise ValueError(f'matrix of shape {m.shape} does not match {n} labels')
    path = _check_format(out)
    side = max(4.0, 0.55 * n + 2.0)
    fig = _new_figure((side + 1.0, side))
    ax = fig.subplots()
    image = ax.imshow(m, cmap='viridis', vmin=0.0, vmax=max(float(m.max()), 1e-12))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label='distance')
    ax.set_xticks(range(n), labels, rotation=60, ha='right', fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    if n <= 25:
        threshold = 0.6 * m.max()
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f'{m[i, j]:.{3 if n <= 8 else 2}f}', ha='center', va='center',
                        fontsize=6 if n > 10 else 8,
                        color='black' if m[i, j] > threshold else 'white')
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path, dpi)


def used_ops(genotype: Genotype) -> List[str]:
    """Ops on live edges, in DARTOpti order (custom ops last)."""
    ops = {e.op for i in range(genotype.num_cells) for e in genotype.live_gene(i, warn=False)}
    return sorted(ops, key=lambda op: (DARTOPTI_SPACE.index(op) if op in DARTOPTI_SPACE else 99, op))
