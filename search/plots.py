"""End-of-run plots of a search (matplotlib ``Figure`` objects rendered by Agg; pyplot's global state and
backend are left alone).

* ``alphas.png``: heatmap of every cell's mixing weights (``sigmoid(alpha)``, or the softmax over the ops with
  ``--mixing softmax``; rows: edges ``to<-src``, columns: ops);
* ``marginal_contributions.png``: each cell's mean marginal contribution per epoch (``--loss ablation`` and
  ``ablation-grad``);
* ``distance.png``: distance to the DARTOpti baseline per epoch (runs with ``--baseline``);
* ``accuracy.png``: training / architecture / validation accuracy per epoch.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ddarts_zoo.genotype import edge_pairs
from ddarts_zoo.utils.io import atomic_write

__all__ = ['plot_run', 'plot_alphas', 'plot_series']


def _figure(figsize: Tuple[float, float], **kw: Any) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize, **kw)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> str:
    atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=110, bbox_inches='tight'))
    return str(path)


def plot_alphas(cell_weights: Sequence[np.ndarray], op_names: Sequence[str], steps: int,
                reductions: Sequence[int], path: Path, threshold: Optional[float] = 0.85,
                label: str = 'sigmoid(alpha)') -> str:
    """One heatmap of the mixing weights (``label``) per cell, with red dots where a weight reaches
    ``threshold`` (none when ``None``); cells of a shared group show the same matrix."""
    n = len(cell_weights)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    labels = [f'{to}<-{src}' for to, src in edge_pairs(steps)]
    fig = _figure((3.2 * cols + 1, 0.28 * len(labels) * rows + 2.2 * rows), layout='constrained')
    axes = fig.subplots(rows, cols, squeeze=False)
    im = None
    for i in range(rows * cols):
        ax = axes[i // cols][i % cols]
        if i >= n:
            ax.axis('off')
            continue
        im = ax.imshow(cell_weights[i], vmin=0.0, vmax=1.0, cmap='viridis', aspect='auto')
        if threshold is not None:
            kept = np.argwhere(cell_weights[i] >= threshold)
            ax.scatter(kept[:, 1], kept[:, 0], marker='.', s=8, c='red')
        ax.set_title(f'cell {i}' + (' (reduction)' if i in reductions else ''), fontsize=8)
        ax.set_xticks(range(len(op_names)))
        ax.set_xticklabels(op_names, rotation=90, fontsize=5)
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels, fontsize=5)
    if im is not None:
        note = f'  (red: >= {threshold})' if threshold is not None else ''
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label=label + note)
    return _save(fig, path)


def plot_series(epochs: Sequence[int], series: Dict[str, Sequence[float]], ylabel: str, title: str,
                path: Path) -> str:
    """One line per series against the epochs (``None`` values are gaps)."""
    fig = _figure((6.5, 4))
    ax = fig.subplots()
    for label, ys in series.items():
        pts = [(e, y) for e, y in zip(epochs, ys) if y is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='.', label=label)
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel('epoch')
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_run(run_dir: 'str | os.PathLike', history: List[Dict[str, Any]], net: Any,
             threshold: float = 0.85) -> List[str]:
    """Write every plot of a run under ``run_dir/plots``; returns the paths written."""
    out_dir = Path(run_dir) / 'plots'
    written = [plot_alphas(net.cell_weights(), net.op_names, net.steps, net.reductions,
                           out_dir / 'alphas.png', threshold if net.mixing.thresholded else None,
                           net.mixing.label)]
    if not history:
        return written
    epochs = [h['epoch'] for h in history]
    mcs = [h.get('mc') for h in history]
    if any(m is not None for m in mcs):
        n = len(next(m for m in mcs if m is not None))
        series = {f'cell {i}': [m[i] if m is not None else None for m in mcs] for i in range(n)}
        written.append(plot_series(epochs, series, 'marginal contribution (CE_full - CE_off)',
                                   'marginal contribution per cell', out_dir / 'marginal_contributions.png'))
    if any(h.get('distance') is not None for h in history):
        written.append(plot_series(epochs, {'distance': [h.get('distance') for h in history]},
                                   'architecture distance', 'distance to the baseline (edge parsing)',
                                   out_dir / 'distance.png'))
    acc = {'train (weight split)': [h.get('train_acc') for h in history],
           'architecture split (train mode)': [h.get('arch_acc') for h in history],
           'architecture split (eval mode)': [h.get('valid_acc') for h in history]}
    written.append(plot_series(epochs, acc, 'accuracy', 'supernet accuracy', out_dir / 'accuracy.png'))
    return written
