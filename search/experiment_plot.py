"""The plot of ``search/experiment.py``: the random architectures' accuracies with every arm marked."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from ddarts_zoo.utils.io import atomic_write

__all__ = ['plot_random_distribution']


def plot_random_distribution(stats: Dict[str, Dict[str, Any]], labels: Dict[str, str], path: Path) -> Path:
    """Top: histogram of the random architectures' held-out top-1.  Bottom: one row per arm with its
    per-seed values (dots), mean (diamond) and 95 % interval (bar); dashed lines: the random median and
    central 95 % range, drawn across both panels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    rand = stats['random']
    arms = [a for a in stats if a != 'random'] + ['random']
    fig = Figure(figsize=(8.5, 2.4 + 0.42 * len(arms)), layout='constrained')
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[1.2, 0.42 * len(arms)])
    top.hist(rand['values'], bins=min(20, max(5, len(rand['values']) // 2)), color='0.6', edgecolor='0.3')
    top.set_ylabel('random\narchitectures')
    top.set_title(f'held-out top-1 of {rand["n"]} random architectures and of every arm', fontsize=10)
    for ax in (top, bottom):
        for q, style in (('p2_5', ':'), ('p50', '--'), ('p97_5', ':')):
            ax.axvline(rand[q], color='0.35', ls=style, lw=1)
    palette = [f'C{k}' for k in range(10) if k != 7]   # C7 is the grey of the random architectures
    colors = {arm: palette[k % len(palette)] for k, arm in enumerate(arms[:-1])}
    for row, arm in enumerate(reversed(arms)):
        s = stats[arm]
        color = colors.get(arm, '0.45')
        bottom.scatter(s['values'], [row] * len(s['values']), s=14, color=color, alpha=0.7, zorder=2)
        if s['ci_low'] is not None:
            bottom.plot([s['ci_low'], s['ci_high']], [row, row], color=color, lw=2.5, alpha=0.8, zorder=1)
        bottom.scatter([s['mean']], [row], marker='D', s=40, color=color, edgecolor='k', zorder=3)
    bottom.set_yticks(range(len(arms)), [labels.get(a, a) for a in reversed(arms)], fontsize=7.5)
    bottom.set_ylim(-0.6, len(arms) - 0.4)
    every = [v for s in stats.values() for v in s['values']]
    pad = max(1.0, 0.08 * (max(every) - min(every)))
    bottom.set_xlim(max(0.0, min(every) - pad), min(100.0, max(every) + pad))   # intervals may run past it
    bottom.set_xlabel('held-out top-1 (%)\ndots: seeds, diamond: mean, bar: 95 % CI of the mean; '
                      'dashed / dotted: median / central 95 % of the random ones', fontsize=7.5)
    bottom.grid(axis='x', alpha=0.3)
    atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=110))
    return path
