"""Pictures of genotypes: one DAG per cell on a grid, and distance heatmaps (paper Fig. 9).

Drawn with networkx on matplotlib :class:`~matplotlib.figure.Figure` objects rendered by the Agg
(PNG), SVG or PDF canvas chosen from the file extension; pyplot's global state is never touched and no
graphviz binary is needed.  Only live edges are drawn (what the network computes, see
:meth:`~ddarts_zoo.genotype.Genotype.live_gene`); the number of hidden dead edges is noted per cell.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from .genotype import Genotype, load_genotype
from .ops import DARTOPTI_SPACE

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
    pos: Dict[object, Tuple[float, float]] = {0: (0.0, -1.0), 1: (0.0, 1.0)}
    for j, node in enumerate(live):
        pos[node] = (1.0 + j, 0.55 if j % 2 else -0.55)
    pos[_OUTPUT] = (1.0 + len(live), 0.0)
    return pos


def draw_cell(ax, genotype: Genotype, cell: int, *, font_size: float = 7.0) -> None:
    """Draw ``cell`` of ``genotype`` on the matplotlib axes ``ax``."""
    import networkx as nx

    graph = cell_graph(genotype, cell)
    live = genotype.live_nodes(cell)
    pos = _layout(live)
    reduction = genotype.is_reduction(cell)
    node_size = 620

    for nodes, shape, color in (([0, 1], 's', '#aed6f1'), (list(live), 'o', '#fdebd0'),
                                ([_OUTPUT], 's', '#d5f5e3')):
        nx.draw_networkx_nodes(graph, pos, nodelist=nodes, node_shape=shape, node_color=color,
                               edgecolors='#333333', linewidths=0.8, node_size=node_size, ax=ax)
    labels = {n: _INPUT_LABELS.get(n, str(n)) for n in [0, 1, *live]}
    labels[_OUTPUT] = '$c_{k}$'
    nx.draw_networkx_labels(graph, pos, labels=labels, font_size=font_size + 1, ax=ax)

    for u, v, key, data in graph.edges(keys=True, data=True):
        if data['op'] is None:  # concat into the cell output
            nx.draw_networkx_edges(graph, pos, edgelist=[(u, v, key)], edge_color='#999999', style='dashed',
                                   width=0.7, arrowsize=7, node_size=node_size, ax=ax,
                                   connectionstyle='arc3,rad=0.0')
            continue
        # Bend every op edge (alternating sides by span so that long edges clear the nodes they pass),
        # parallel ops of one pair further out on the same side.
        side = 1.0 if (v - u) % 2 else -1.0
        style = f'arc3,rad={side * (0.22 + 0.22 * key):.2f}'
        color = op_color(data['op'])
        nx.draw_networkx_edges(graph, pos, edgelist=[(u, v, key)], edge_color=color, width=1.3,
                               arrowsize=9, node_size=node_size, ax=ax, connectionstyle=style)
        nx.draw_networkx_edge_labels(
            graph, pos, edge_labels={(u, v, key): OP_LABELS.get(data['op'], data['op'])},
            font_size=font_size, font_color=color, connectionstyle=style, rotate=False, ax=ax,
            node_size=node_size, bbox=dict(boxstyle='round,pad=0.12', fc='white', ec='none', alpha=0.85))

    dead = len(genotype.genes[cell]) - sum(1 for e in genotype.live_gene(cell, warn=False))
    title = f'cell {cell}' + (' (reduction)' if reduction else '')
    if dead > 0:
        title += f'\n{dead} dead edge{"s" if dead > 1 else ""} hidden'
    ax.set_title(title, fontsize=font_size + 2, color=_REDUCTION_COLOR if reduction else 'black',
                 fontweight='bold' if reduction else 'normal')
    xs = [p[0] for p in pos.values()]
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(-1.75, 1.75)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(reduction)
        spine.set_color(_REDUCTION_COLOR)
        spine.set_linewidth(1.5)
    if reduction:
        ax.set_facecolor('#fdf2f1')


def _new_figure(figsize: Tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)  # PNG through Agg; savefig switches to the SVG/PDF canvas by extension
    return fig


def _save(fig, path: Path, dpi: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format=path.suffix.lower()[1:])
    return path


def plot_genotype(genotype: Union[Genotype, PathLike, dict], out: PathLike, *, dpi: int = 150,
                  title: Optional[str] = None) -> Path:
    """Draw every cell of ``genotype`` as a DAG on a grid and write ``out`` (.png, .svg or .pdf).

    Reduction cells have a red title and frame.  Returns the written path.
    """
    g = load_genotype(genotype)
    path = _check_format(out)
    rows, cols = grid_shape(g.num_cells)
    width = max(2 + len(g.live_nodes(i)) for i in range(g.num_cells))  # widest cell, in node columns
    cell_w = 1.0 + 0.85 * width
    fig = _new_figure((cell_w * cols, 3.2 * rows + 0.9))
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < g.num_cells:
            draw_cell(ax, g, i)
        else:
            ax.set_axis_off()

    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=op_color(op), lw=2, label=op) for op in used_ops(g)]
    fig.legend(handles=handles, loc='lower center', ncol=min(len(handles), 6), fontsize=8, frameon=False)
    heading = title or (f'{g.name or "genotype"}: {g.num_cells} cells, {g.op_space} space, '
                        f'reductions {list(g.reductions)}')
    fig.suptitle(heading, fontsize=12)
    legend_rows = math.ceil(len(handles) / 6)
    fig.tight_layout(rect=(0, 0.035 * legend_rows / max(rows, 1) + 0.02, 1, 0.97))
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
                ax.text(j, i, f'{m[i, j]:.2f}', ha='center', va='center', fontsize=6 if n > 10 else 8,
                        color='black' if m[i, j] > threshold else 'white')
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path, dpi)


def used_ops(genotype: Genotype) -> List[str]:
    """Ops on live edges, in DARTOpti order (custom ops last)."""
    ops = {e.op for i in range(genotype.num_cells) for e in genotype.live_gene(i, warn=False)}
    return sorted(ops, key=lambda op: (DARTOPTI_SPACE.index(op) if op in DARTOPTI_SPACE else 99, op))
