"""The report of ``search/experiment.py``: statistics per arm against the random architectures, the table
(``results.md``), the data (``results.json``) and the plot of the random distribution with every arm marked.

Per arm: mean ± sample std of the held-out top-1 over seeds, the 95 % t-interval of that mean, the
percentile of the mean within the random architectures' accuracies, the probability that one seed of the arm
beats one random architecture (ties count half: the Mann-Whitney AUC), and the two-sided Mann-Whitney test
of that AUC by permutation (exact when there are at most 200,000 splits, else 20,000 seeded draws).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import statistics
from itertools import combinations
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ddarts_zoo.utils.io import atomic_write

__all__ = ['summarize', 'percentile_of', 'beats', 'midranks', 'permutation_p', 'arm_statistics',
           'write_report']

_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)
"""Two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom (1.96 beyond)."""


def summarize(values: Sequence[float]) -> Dict[str, Optional[float]]:
    """n, mean, sample std and the 95 % t-interval of the mean (std and interval need 2 values)."""
    n = len(values)
    mean = statistics.fmean(values) if n else None
    std = statistics.stdev(values) if n > 1 else None
    half = (_T975[n - 2] if n - 1 <= len(_T975) else 1.96) * std / math.sqrt(n) if std is not None else None
    return dict(n=n, mean=mean, std=std, ci_low=None if half is None else mean - half,
                ci_high=None if half is None else mean + half)


def percentile_of(x: float, population: Sequence[float]) -> float:
    """Percent of ``population`` below ``x`` (ties count half)."""
    below = sum(v < x for v in population) + 0.5 * sum(v == x for v in population)
    return 100.0 * below / len(population)


def beats(values: Sequence[float], population: Sequence[float]) -> float:
    """Probability that one of ``values`` exceeds one of ``population`` (ties half): the Mann-Whitney AUC."""
    return statistics.fmean(percentile_of(v, population) for v in values) / 100.0


def midranks(values: Sequence[float]) -> List[float]:
    """Rank of each value among ``values`` (1-based; tied values share the mean of their ranks)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in order[i:j + 1]:
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def permutation_p(a: Sequence[float], b: Sequence[float], exact_limit: int = 200_000,
                  draws: int = 20_000) -> float:
    """Two-sided Mann-Whitney test by permutation: how often a random relabelling of the pooled values puts
    the rank sum of ``a`` at least as far from its expectation as observed (ties: midranks).

    Ranks, not means: a few very small random networks would otherwise dominate the difference of means.
    """
    ranks, n = midranks(list(a) + list(b)), len(a)
    expected = n * (len(ranks) + 1) / 2
    observed = abs(sum(ranks[:n]) - expected) - 1e-9
    if math.comb(len(ranks), n) <= exact_limit:
        splits = [sum(c) for c in combinations(ranks, n)]
        return sum(abs(s - expected) >= observed for s in splits) / len(splits)
    rng = random.Random(0)
    hits = sum(abs(sum(rng.sample(ranks, n)) - expected) >= observed for _ in range(draws))
    return (hits + 1) / (draws + 1)


def arm_statistics(records: List[Dict[str, Any]], arms: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """Per arm (and ``random``): the summary, per-seed values and the comparison with the random ones."""
    rand = [r['top1'] for r in records if r['arm'] == 'random']
    out: Dict[str, Dict[str, Any]] = {}
    for arm in list(arms) + ['random']:
        rows = sorted((r for r in records if r['arm'] == arm), key=lambda r: (r['seed'], r.get('index', 0)))
        if not rows:
            continue
        values = [r['top1'] for r in rows]
        stats: Dict[str, Any] = dict(summarize(values), values=values, seeds=[r['seed'] for r in rows],
                                     params=statistics.fmean(r['params'] for r in rows),
                                     search_s=_mean_of(rows, 'search_s'),
                                     s_per_step=_mean_of(rows, 's_per_step'),
                                     train_s=_mean_of(rows, 'train_s'))
        if arm == 'random':
            stats.update(min=min(values), max=max(values), p2_5=_quantile(values, 0.025),
                         p50=_quantile(values, 0.5), p97_5=_quantile(values, 0.975))
        elif rand:
            stats.update(percentile=percentile_of(stats['mean'], rand), beats_random=beats(values, rand),
                         p_value=permutation_p(values, rand))
        out[arm] = stats
    return out


def _mean_of(rows: List[Dict[str, Any]], key: str) -> Optional[float]:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.fmean(vals) if vals else None


def _quantile(values: Sequence[float], q: float) -> float:
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = math.floor(pos)
    return v[lo] + (v[min(lo + 1, len(v) - 1)] - v[lo]) * (pos - lo)


def _fmt(x: Optional[float], digits: int = 2) -> str:
    return '-' if x is None else f'{x:.{digits}f}'


def training_noise(records: List[Dict[str, Any]]) -> Optional[float]:
    """Pooled std over seeds of each published genotype retrained (the same genotype: training noise only)."""
    groups = [[r['top1'] for r in records if r['arm'] == a] for a in {r['arm'] for r in records
                                                                      if r['kind'] == 'published'}]
    groups = [g for g in groups if len(g) > 1]
    if not groups:
        return None
    ss = sum(statistics.variance(g) * (len(g) - 1) for g in groups)
    return math.sqrt(ss / sum(len(g) - 1 for g in groups))


def _clip(x: Optional[float]) -> Optional[float]:
    return None if x is None else min(100.0, max(0.0, x))


TABLE_LEGEND = (
    '95 % CI: t-interval of the mean over seeds (clipped to 0..100). Percentile in random: share of the '
    "random architectures below the arm's mean. P(beats random): probability that one seed of the arm beats "
    'one random architecture (Mann-Whitney AUC, ties half). p: two-sided Mann-Whitney test of the seeds '
    'of the arm against the random architectures (exact permutation). Params: the trained network without '
    'auxiliary head; search: mean seconds of the search epochs.')


def results_table(stats: Dict[str, Dict[str, Any]], labels: Dict[str, str]) -> List[str]:
    lines = ['| arm | n | held-out top-1 (%) mean ± std | 95 % CI | per seed | percentile in random | '
             'P(beats random) | p (perm.) | params (M) | search (s) |',
             '|---|---:|---:|---:|---|---:|---:|---:|---:|---:|']
    for arm, s in stats.items():
        per = ', '.join(_fmt(v) for v in s['values']) if arm != 'random' else \
            f'{_fmt(s["min"])} .. {_fmt(s["max"])}'
        lines.append(f'| {labels.get(arm, arm)} | {s["n"]} | {_fmt(s["mean"])} ± {_fmt(s["std"])} | '
                     f'{_fmt(_clip(s["ci_low"]))} .. {_fmt(_clip(s["ci_high"]))} | {per} | '
                     f'{_fmt(s.get("percentile"), 0)} | {_fmt(s.get("beats_random"))} | '
                     f'{_fmt(s.get("p_value"), 3)} | {s["params"] / 1e6:.3f} | {_fmt(s["search_s"], 0)} |')
    return lines


def verdicts(stats: Dict[str, Dict[str, Any]], labels: Dict[str, str], alpha: float = 0.05) -> List[str]:
    """One line per arm: whether its mean differs from the random architectures' (permutation test)."""
    out = []
    for arm, s in stats.items():
        if arm == 'random' or s.get('p_value') is None:
            continue
        side = 'above' if s['mean'] > stats['random']['mean'] else 'below'
        name, p = labels.get(arm, arm), s['p_value']
        if p < alpha:
            out.append(f'- {name}: separates from random, {side} it (p = {p:.3f}).')
        else:
            out.append(f'- {name}: does not separate from random (p = {p:.3f}; mean at the '
                       f'{s["percentile"]:.0f}th percentile of the random architectures).')
    return out


def write_report(args: argparse.Namespace, result: Dict[str, Any]) -> List[Path]:
    """``results.json``, ``results.md`` and ``random_distribution.png`` in ``args.out``."""
    from search.experiment import ARMS
    labels = {a.name: a.label for a in ARMS}
    labels['random'] = 'random architectures'
    records = result['records']
    order = [a.name for a in ARMS if any(r['arm'] == a.name for r in records)]
    stats = arm_statistics(records, order)
    noise = training_noise(records)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    doc = dict(settings=settings, statistics=stats, training_noise_std=noise, records=records,
               units=result['units'], units_ran=result['units_ran'], wall_s=result['wall_s'])
    out = Path(args.out)
    paths = [atomic_write(out / 'results.json', json.dumps(doc, indent=1) + '\n')]
    md = _markdown(args, stats, labels, noise, result)
    paths.append(atomic_write(out / 'results.md', md))
    if 'random' in stats:
        from search.experiment_plot import plot_random_distribution
        paths.append(plot_random_distribution(stats, labels, out / 'random_distribution.png'))
    print(md)
    return paths


def _settings_line(args: argparse.Namespace, records: List[Dict[str, Any]]) -> str:
    search = next((r for r in records if r['kind'] == 'search'), None)
    cfg = json.loads((Path(search['run_dir']) / 'config.json').read_text()) if search else {}
    held_out = next((r.get('num_images') for r in records if r.get('num_images')), '?')
    extra = f', {json.dumps(args.search_args)}' if args.search_args else ''
    return (f'Search: preset `{args.preset}`, {cfg.get("dataset")}, {cfg.get("layers")} cells, '
            f'C={cfg.get("channels")}, {cfg.get("epochs")} epochs, batch {cfg.get("batch_size")}{extra}; '
            f'training: `ddarts-zoo train`, C={args.train_channels}, {args.train_epochs} epochs, batch '
            f'{args.train_batch_size}, {args.train_subset} training images'
            + (f', `{args.train_args}`' if args.train_args else '')
            + f'; held-out split never seen by a search ({held_out} images); seeds '
            f'{" ".join(map(str, args.seeds))}; {args.random} random genotypes; device {args.device}.')


def _cost_line(stats: Dict[str, Dict[str, Any]], result: Dict[str, Any], jobs: int) -> str:
    """Unit costs as measured when each unit ran (search: its epochs' step loops; training: its epochs)."""
    records = result['records']
    searches = {r['run_dir']: r['search_s'] for r in records if r['kind'] == 'search'}
    trainings = {r['train_dir']: r['train_s'] for r in records}
    per_arm = ', '.join(f'{a} {s["search_s"]:.0f} s' for a, s in stats.items()
                        if s.get('search_s') is not None)
    return (f'Cost (unit times as measured when each ran): {len(searches)} searches, '
            f'{sum(searches.values()):.0f} s in all (mean per arm: {per_arm}); {len(trainings)} trainings, '
            f'{sum(trainings.values()):.0f} s in all ({statistics.fmean(trainings.values()):.0f} s each). '
            f'This invocation ran {result["units_ran"]} of {result["units"]} units in '
            f'{result["wall_s"]:.0f} s with {jobs} job(s).')


def _markdown(args: argparse.Namespace, stats: Dict[str, Dict[str, Any]], labels: Dict[str, str],
              noise: Optional[float], result: Dict[str, Any]) -> str:
    lines = [_settings_line(args, result['records']), ''] + results_table(stats, labels) + ['', TABLE_LEGEND]
    if 'random' in stats:
        r = stats['random']
        lines += ['', f'Random architectures: mean {_fmt(r["mean"])} %, std {_fmt(r["std"])}, range '
                      f'{_fmt(r["min"])} .. {_fmt(r["max"])}, central 95 % {_fmt(r["p2_5"])} .. '
                      f'{_fmt(r["p97_5"])}.'
                      + (f' One published genotype retrained with different seeds varies by a pooled std of '
                         f'{noise:.2f} (training noise alone).' if noise is not None else '')]
        lines += [''] + verdicts(stats, labels)
    lines += ['', _cost_line(stats, result, args.jobs)]
    return '\n'.join(lines) + '\n'
