"""Does the ablation loss help once it has a gradient?  fair, ablation and ablation-grad, one command.

``python search/ablation_experiment.py [--device cuda] [--seeds 0 1 2] [--out runs/ablation]``

For every seed and loss: one search at identical settings (by default a small CPU search on the embedded
digits), then the found genotype is trained with the project's training recipe (``ddarts-zoo train``) and
evaluated on the held-out split, which the search never sees.  ``ablation`` (the authors' semantics) adds no
gradient, so seeded it finds ``fair``'s genotype; such a duplicate is not trained twice.  Writes
``OUT/results.md`` (the table), ``OUT/results.json`` and ``OUT/marginal_contributions.png`` (each cell's
marginal contribution per epoch under ``ablation`` and ``ablation-grad``, side by side).  Interrupted, the
same command continues: finished searches and trainings are reused.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
if __package__ in (None, ''):  # run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ddarts_zoo.utils.io import atomic_write  # noqa: E402
from search.losses import LOSSES  # noqa: E402

MC_LOSSES = ('ablation', 'ablation-grad')
SEARCH_DEFAULTS: Dict[str, Any] = dict(preset='quick', layers=4, channels=4, epochs=4, batch_size=32)
TRAIN_DEFAULTS: Dict[str, Any] = dict(init_channels=8, epochs=8)   # 8: the recipe's digits default


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='python search/ablation_experiment.py',
                                description=__doc__.split('\n\n')[0])
    p.add_argument('--out', type=Path, default=Path('runs/ablation'), help='output folder (runs/ablation)')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2],
                   help='search and training seeds (0 1 2)')
    p.add_argument('--losses', nargs='+', choices=list(LOSSES), default=['fair', 'ablation', 'ablation-grad'])
    p.add_argument('--device', default='cpu', help="'cpu' (default) or 'cuda'")
    p.add_argument('--threads', type=int, default=1, help='intra-op CPU threads (1)')
    g = p.add_argument_group('search (on top of the preset; any other search option via --search-args)')
    g.add_argument('--preset', default=SEARCH_DEFAULTS['preset'],
                   help='search preset (quick: digits at 8 px)')
    g.add_argument('--layers', type=int, default=SEARCH_DEFAULTS['layers'], help='cells (4)')
    g.add_argument('--channels', type=int, default=SEARCH_DEFAULTS['channels'], help='search width C (4)')
    g.add_argument('--epochs', type=int, default=SEARCH_DEFAULTS['epochs'], help='search epochs (4)')
    g.add_argument('--batch-size', type=int, default=SEARCH_DEFAULTS['batch_size'], help='search batch (32)')
    g.add_argument('--search-args', type=json.loads, default={}, help='JSON of further search options')
    g = p.add_argument_group('training of the found genotypes (ddarts-zoo train, digits defaults otherwise)')
    g.add_argument('--train-channels', type=int, default=TRAIN_DEFAULTS['init_channels'], help='width C (8)')
    g.add_argument('--train-epochs', type=int, default=TRAIN_DEFAULTS['epochs'],
                   help="epochs (8, the recipe's default on digits)")
    return p


# ---------------------------------------------------------------------------------------------- search
def search_config(args: argparse.Namespace, loss: str, seed: int) -> Any:
    from search.config import SearchConfig
    from search.presets import preset
    values = preset(args.preset)
    values.update(layers=args.layers, channels=args.channels, epochs=args.epochs, batch_size=args.batch_size)
    values.update(args.search_args)
    values.update(loss=loss, seed=seed, device=args.device, threads=args.threads, preset=args.preset,
                  out=str(args.out / 'search'), name=f'{loss}-seed{seed}', progress=False, tensorboard=False)
    cfg = SearchConfig(**values)
    cfg.check()
    return cfg


def run_search(args: argparse.Namespace, loss: str, seed: int) -> Dict[str, Any]:
    """One search (or the finished / interrupted one in its run directory); its genotype, cost and mc."""
    from search.searcher import Searcher
    cfg = search_config(args, loss, seed)
    run_dir = Path(cfg.out) / cfg.name
    if not (run_dir / 'genotype.json').exists():
        searcher = Searcher(resume=run_dir) if (run_dir / 'config.json').exists() else Searcher(cfg)
        searcher.run()
    lines = (run_dir / 'epochs.jsonl').read_text().splitlines()
    history = [json.loads(line) for line in lines if line.strip()]
    genotype = json.loads((run_dir / 'genotype.json').read_text())
    steps = sum(h['steps'] for h in history if h['phase'] == 'search')
    search_s = sum(h['time_s'] for h in history)
    return {'loss': loss, 'seed': seed, 'run_dir': str(run_dir), 'genotype': str(run_dir / 'genotype.json'),
            'genes': genotype['genes'], 'search_s': search_s, 'steps': steps,
            's_per_step': search_s / max(steps, 1),
            'mc': [h.get('mc') for h in history], 'epochs': [h['epoch'] for h in history]}


# ---------------------------------------------------------------------------------------------- training
def train_genotype(args: argparse.Namespace, record: Dict[str, Any]) -> Dict[str, Any]:
    """Train with the project's recipe (``ddarts_zoo.train``); the held-out metrics it writes."""
    out = args.out / 'train' / f'{record["loss"]}-seed{record["seed"]}'
    metrics = out / 'metrics.json'
    if not metrics.exists():
        from ddarts_zoo.cli import main as ddarts_zoo_main
        argv = ['train', '--genotype', record['genotype'], '--dataset', 'digits',
                '--init-channels', str(args.train_channels), '--epochs', str(args.train_epochs),
                '--seed', str(record['seed']), '--device', args.device, '--threads', str(args.threads),
                '--out', str(out), '--no-progress']
        code = ddarts_zoo_main(argv)   # `ddarts-zoo train ...`
        if code or not metrics.exists():
            raise SystemExit(f'training {record["genotype"]} failed (exit {code}); see {out}')
    return json.loads(metrics.read_text())


# ---------------------------------------------------------------------------------------------- report
def _mean_std(values: Sequence[float]) -> str:
    if len(values) < 2:
        return f'{values[0]:.2f}' if values else '-'
    return f'{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}'


def results_table(records: List[Dict[str, Any]], args: argparse.Namespace, device: str) -> str:
    """Markdown: held-out top-1 (mean ± sample std over seeds) and search cost per loss."""
    lines = [f'Search: preset `{args.preset}` (digits, 8 px), {args.layers} cells, C={args.channels}, '
             f'{args.epochs} epochs, batch {args.batch_size}'
             + (f', {json.dumps(args.search_args)}' if args.search_args else '')
             + f'; training: `ddarts-zoo train` recipe on digits, C={args.train_channels}, '
             f'{args.train_epochs} epochs; held-out = the digits test split (359 images); seeds '
             f'{" ".join(map(str, args.seeds))}; {device}, {args.threads} thread(s).', '',
             "Search (s): the epochs' step loops (evaluation excluded), mean over seeds; "
             'std: sample std over seeds.',
             '',
             '| loss | held-out top-1 (%) mean ± std | per seed | search (s) | s / search step |',
             '|---|---:|---|---:|---:|']
    for loss in args.losses:
        rows = [r for r in records if r['loss'] == loss]
        accs = [r['top1'] for r in rows]
        seeds = ', '.join(f'{r["top1"]:.2f}' + (f' (={r["same_as"]})' if r.get('same_as') else '')
                          for r in rows)
        search_s = statistics.mean(r['search_s'] for r in rows)
        per_step = statistics.mean(r['s_per_step'] for r in rows)
        lines.append(f'| {loss} | {_mean_std(accs)} | {seeds} | {search_s:.1f} | {per_step:.3f} |')
    same = [r for r in records if r.get('same_as')]
    if same:
        lines += ['', '(=fair): that search found exactly the genotype of the `fair` search with the same '
                      'seed (the ablation term adds no gradient), so its training was not repeated.']
    return '\n'.join(lines) + '\n'


def plot_marginal_contributions(records: List[Dict[str, Any]], path: Path) -> Optional[Path]:
    """Each cell's marginal contribution per epoch (mean over seeds), one panel per loss that logs it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    losses = [loss for loss in MC_LOSSES if any(r['loss'] == loss for r in records)]
    if not losses:
        return None
    fig = Figure(figsize=(5.5 * len(losses), 4), layout='constrained')
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(losses), sharey=True, squeeze=False)[0]
    for ax, loss in zip(axes, losses):
        rows = [r for r in records if r['loss'] == loss]
        epochs = rows[0]['epochs']
        per_seed = [[m for m in r['mc'] if m is not None] for r in rows]
        n_cells = len(per_seed[0][0])
        for i in range(n_cells):
            mean = [statistics.mean(s[e][i] for s in per_seed) for e in range(len(epochs))]
            lo = [min(s[e][i] for s in per_seed) for e in range(len(epochs))]
            hi = [max(s[e][i] for s in per_seed) for e in range(len(epochs))]
            line, = ax.plot(epochs, mean, marker='.', label=f'cell {i}')
            ax.fill_between(epochs, lo, hi, color=line.get_color(), alpha=0.15)
        ax.axhline(0.0, color='k', lw=0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f'--loss {loss}' + (' (no gradient)' if loss == 'ablation' else ' (differentiated)'))
        ax.set_xlabel('epoch')
        ax.grid(alpha=0.3)
    axes[0].set_ylabel('marginal contribution CE(full) - CE(cell off)')
    axes[-1].legend(fontsize=7)
    fig.suptitle(f'mean over seeds (band: min-max of {len(rows)} seeds)', fontsize=9)
    atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=110))
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    cuda = args.device.startswith('cuda')
    device = (torch.cuda.get_device_name(torch.device(args.device)) if cuda
              else f'CPU ({os.cpu_count()} cores)')
    t0 = time.time()
    records: List[Dict[str, Any]] = []
    for seed in args.seeds:
        for loss in args.losses:
            rec = run_search(args, loss, seed)
            twin = next((r for r in records if r['seed'] == seed and r['genes'] == rec['genes']), None)
            if twin is not None and loss != 'ablation-grad':
                rec.update(same_as=twin['loss'], top1=twin['top1'], train=twin['train'])
            else:
                metrics = train_genotype(args, rec)
                rec.update(top1=metrics['top1'], train=str(args.out / 'train' / f'{loss}-seed{seed}'))
            records.append(rec)
            twin_note = f' [= {rec["same_as"]} genotype]' if rec.get('same_as') else ''
            print(f'seed {seed} {loss:13s}: held-out top-1 {rec["top1"]:.2f} %, '
                  f'search {rec["search_s"]:.0f} s ({rec["s_per_step"]:.3f} s/step){twin_note}', flush=True)
    table = results_table(records, args, device)
    atomic_write(args.out / 'results.md', table)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    summary = {'settings': settings, 'device': device, 'records': records, 'wall_s': time.time() - t0}
    atomic_write(args.out / 'results.json', json.dumps(summary, indent=1) + '\n')
    plot_marginal_contributions(records, args.out / 'marginal_contributions.png')
    print(table + f'\nwritten to {args.out} in {time.time() - t0:.0f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
