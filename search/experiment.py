"""Evidence at equal budget: individual cells (D-DARTS) against shared cells, DARTS, the published genotypes
and random architectures of the same space, every genotype trained with one recipe.

``python search/experiment.py [--seeds 0 1 2 3 4] [--random 20] [--jobs 2] [--device cuda] [--out DIR]``

Per seed, one search per search arm at identical settings (only the arm's options differ): D-DARTS with
``fair``, ``ablation`` and ``ablation-grad`` (individual cells, sigmoid mixing), shared cells with ``fair``
(FairDARTS-like) and DARTS (shared cells, softmax mixing, ``darts`` parsing).  Then every genotype, the
searched ones, the published DD-1 and DD-2 (once per seed) and ``--random`` genotypes drawn by
:mod:`search.random_genotypes` (genotype ``i`` matched cell by cell to the live op counts of searched
genotype ``i mod N``), is trained by ``ddarts-zoo train`` with the same recipe and budget and evaluated on
the held-out split no search saw (digits: the fixed test split).  Each search and each training is a unit
whose folder name holds a hash of everything that defines it and that writes its result atomically; a rerun
reuses every finished unit (a genotype found twice is trained once).  Writes ``OUT/results.json``,
``OUT/results.md`` and ``OUT/random_distribution.png`` (:mod:`search.experiment_report`).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

# `search` first: importing it sets OMP_WAIT_POLICY before torch loads (the worker processes inherit it)
from search.unit_runner import Runner, console_to, exclusive, unit_hash
from ddarts_zoo.errors import UserError


@dataclass(frozen=True)
class Arm:
    """One method: search options on top of the common settings, or a fixed (published) genotype."""

    name: str
    label: str
    search: Optional[Dict[str, Any]] = None
    genotype: Optional[str] = None


ARMS = (
    Arm('fair', 'D-DARTS, L_fair', dict(loss='fair')),
    Arm('ablation', 'D-DARTS, L_abl (no gradient)', dict(loss='ablation')),
    Arm('ablation-grad', 'D-DARTS, L_abl with gradient', dict(loss='ablation-grad')),
    Arm('shared', 'shared cells, L_fair (FairDARTS-like)', dict(cells='shared', loss='fair')),
    Arm('darts', 'DARTS (shared cells, softmax)',
        dict(cells='shared', mixing='softmax', loss='fair', parse='darts')),
    Arm('dd1', 'DD-1 (published)', genotype='dd1'),
    Arm('dd2', 'DD-2 (published)', genotype='dd2'),
)
ARM_NAMES = tuple(a.name for a in ARMS)
TRAIN_DEFAULTS: Dict[str, Any] = dict(channels=4, epochs=5, subset='640', batch_size=32,
                                      args='--lr 0.1 --aux-weight 0 --drop-path 0 --cutout 0')
"""A short budget (100 steps on digits) at which networks learn (83 % for DD-1) but stay apart: a higher
learning rate and none of the long-schedule regularisers (with them, 100 steps left DD-1 near chance)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='python search/experiment.py', description=__doc__.split('\n\n')[0])
    p.add_argument('--out', type=Path, default=Path('runs/experiment'),
                   help='output folder (runs/experiment)')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2, 3, 4], help='seeds (0 1 2 3 4)')
    p.add_argument('--arms', nargs='+', choices=ARM_NAMES, default=list(ARM_NAMES), help='arms (all)')
    p.add_argument('--random', type=int, default=20, help='random genotypes (20)')
    p.add_argument('--random-seed', type=int, default=0, help='seed of the random genotypes (0)')
    p.add_argument('--dataset', default=None, help="search and training data (default: the preset's, digits)")
    p.add_argument('--data', default=None, help='dataset root (not needed for digits)')
    p.add_argument('--device', default='cpu', help="'cpu' (default) or 'cuda'")
    p.add_argument('--threads', type=int, default=1, help='CPU threads per unit (1)')
    p.add_argument('--jobs', type=int, default=None, help='units run at once (CPU: 2 when 2+ cores, CUDA: 1)')
    g = p.add_argument_group('search (on top of the preset; any other search option via --search-args)')
    g.add_argument('--preset', default='quick',
                   help='search preset (quick: digits at 8 px, 8 cells, C=4, 3 epochs)')
    g.add_argument('--layers', type=int, default=None, help="cells (the preset's)")
    g.add_argument('--channels', type=int, default=None, help="search width C (the preset's)")
    g.add_argument('--epochs', type=int, default=None, help="search epochs (the preset's)")
    g.add_argument('--batch-size', type=int, default=None, help="search batch (the preset's)")
    g.add_argument('--search-args', type=json.loads, default={}, help='JSON object of further search options')
    g = p.add_argument_group('training of every genotype (`ddarts-zoo train`, its defaults otherwise)')
    g.add_argument('--train-channels', type=int, default=TRAIN_DEFAULTS['channels'], help='width C (4)')
    g.add_argument('--train-epochs', type=int, default=TRAIN_DEFAULTS['epochs'], help='epochs (5)')
    g.add_argument('--train-subset', default=TRAIN_DEFAULTS['subset'],
                   help="training images: a count or a fraction like 0.5; 'all' for the whole split (640)")
    g.add_argument('--train-batch-size', type=int, default=TRAIN_DEFAULTS['batch_size'], help='batch (32)')
    g.add_argument('--train-args', default=TRAIN_DEFAULTS['args'],
                   help="further `ddarts-zoo train` flags, written --train-args='...' "
                        f"('{TRAIN_DEFAULTS['args']}'; '' keeps the recipe's)")
    return p


# ----------------------------------------------------------------------------------------------- search units
def search_values(args: argparse.Namespace, arm: Arm, seed: int) -> Dict[str, Any]:
    """The search options of ``arm`` at ``seed``: preset, the common flags, ``--search-args``, the arm's."""
    from search.config import SearchConfig
    from search.presets import preset
    values = preset(args.preset)
    values.update({k: getattr(args, k) for k in ('layers', 'channels', 'epochs', 'batch_size')
                   if getattr(args, k) is not None})
    if args.dataset and args.dataset != values.get('dataset'):   # the data decides the input size
        values.update(dataset=args.dataset, image_size=None)
    if args.data:
        values.update(data=args.data)
    values.update(args.search_args)
    values.update(arm.search or {})
    values.update(seed=seed, device=args.device, threads=args.threads, preset=args.preset)
    known = {f.name for f in fields(SearchConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f'search option(s) {", ".join(unknown)} unknown to this search (arm {arm.name})')
    defining = {k: v for k, v in values.items() if k not in ('threads', 'device')}
    name = f'{arm.name}-s{seed}-{unit_hash(defining)}'
    values.update(out=str(args.out / 'search'), name=name, progress=False, tensorboard=False)
    return values


def run_search_unit(values: Dict[str, Any]) -> Dict[str, Any]:
    """One search, or the finished / interrupted one in its folder; its genotype file and cost."""
    from search.checkpoint import CHECKPOINT_NAME
    from search.config import SearchConfig
    from search.searcher import Searcher
    run_dir = Path(values['out']) / values['name']
    ran = not (run_dir / 'genotype.json').exists()
    if ran:
        cfg = SearchConfig(**values)
        resume = run_dir if (run_dir / CHECKPOINT_NAME).exists() else None
        if resume is None and run_dir.exists():   # stopped before its first checkpoint: nothing to keep
            shutil.rmtree(run_dir)
        with console_to(run_dir.with_name(run_dir.name + '.log')):
            Searcher(cfg, resume=resume).run()
    lines = (run_dir / 'epochs.jsonl').read_text().splitlines()
    history = [json.loads(line) for line in lines if line.strip()]
    steps = sum(h['steps'] for h in history if h['phase'] == 'search')
    search_s = sum(h['time_s'] for h in history)
    return dict(run_dir=str(run_dir), genotype=str(run_dir / 'genotype.json'), search_s=search_s, steps=steps,
                s_per_step=search_s / max(steps, 1), ran=ran)


# ------------------------------------------------------------------------------------------- training units
def train_argv(args: argparse.Namespace, seed: int) -> List[str]:
    """``ddarts-zoo train`` flags shared by every genotype (without ``--genotype`` / ``--out``)."""
    argv = ['--init-channels', str(args.train_channels), '--epochs', str(args.train_epochs),
            '--batch-size', str(args.train_batch_size), '--seed', str(seed), '--eval-interval', '0']
    if args.train_subset not in (None, 'all'):
        argv += ['--train-subset', str(args.train_subset)]
    from search.presets import preset
    dataset = args.dataset or preset(args.preset)['dataset']   # the data the searches saw
    if dataset != 'digits':   # digits: the default of `ddarts-zoo train`
        argv += ['--dataset', dataset] + (['--data', args.data] if args.data else [])
    return argv + shlex.split(args.train_args)


def train_spec(args: argparse.Namespace, tag: str, genotype_file: str, seed: int) -> Dict[str, Any]:
    """A training unit: its folder is named by the genotype, the recipe and the seed."""
    from ddarts_zoo.genotypes import load_genotype
    geno = load_genotype(genotype_file)
    argv = train_argv(args, seed)
    key = unit_hash(dict(genes=[list(map(list, g)) for g in geno.genes], reductions=list(geno.reductions),
                         empty_cell=geno.empty_cell, argv=argv))
    out = args.out / 'train' / key
    run = ['train', '--genotype', genotype_file, *argv, '--out', str(out), '--device', args.device,
           '--threads', str(args.threads), '--no-progress', '--resume', 'auto']
    return dict(tag=tag, out=str(out), argv=run, seed=seed, genotype=genotype_file)


def run_train_unit(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Train a genotype with ``ddarts-zoo train`` (unless ``metrics.json`` exists); its held-out result."""
    metrics = Path(spec['out']) / 'metrics.json'
    ran = not metrics.exists()
    if ran:
        from ddarts_zoo.cli import main as ddarts_zoo_main
        with console_to(Path(spec['out'] + '.log')):
            try:
                code = ddarts_zoo_main(spec['argv'])
            except SystemExit as err:   # argparse: a flag of --train-args it does not know
                code = err.code
        if code or not metrics.exists():
            lines = Path(spec['out'] + '.log').read_text().strip().splitlines() or ['']
            raise UserError(f'training {spec["genotype"]} failed (exit {code}): {lines[-1]} '
                            f'(whole output: {spec["out"]}.log)')
    m = json.loads(metrics.read_text())
    return dict(top1=m['top1'], params=m['params'], train_s=m['train_time_s'], num_images=m.get('num_images'),
                train_images=m.get('train_images'), ran=ran)


def search_arms(args: argparse.Namespace) -> List[Arm]:
    """The chosen arms that search."""
    return [arm for arm in ARMS if arm.name in args.arms and arm.search is not None]


def _search_records(args: argparse.Namespace, runner: Runner) -> List[Dict[str, Any]]:
    """Every search of every (seed, search arm), seed by seed."""
    pairs = [(seed, arm) for seed in args.seeds for arm in search_arms(args)]
    done = runner.map(run_search_unit, [search_values(args, arm, seed) for seed, arm in pairs],
                      lambda s, r: f'search {s["name"]}: {r["search_s"]:.0f} s, {r["s_per_step"]:.3f} s/step')
    return [dict(arm=arm.name, seed=seed, kind='search', search_ran=res.pop('ran'), **res)
            for (seed, arm), res in zip(pairs, done)]


def _fixed_records(args: argparse.Namespace, searched: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The published genotypes (once per seed) and the random ones (``i`` matches searched ``i mod N``)."""
    from ddarts_zoo.genotypes import load_genotype
    from search.random_genotypes import sample_genotype
    records = []
    for arm in ARMS:
        if arm.name in args.arms and arm.genotype is not None:
            path = str(load_genotype(arm.genotype).save(args.out / 'genotypes' / f'{arm.name}.json'))
            records += [dict(arm=arm.name, seed=seed, kind='published', genotype=path) for seed in args.seeds]
    if args.random and not searched:
        raise UserError('--random needs at least one search arm (the random genotypes match searched ones)')
    for i in range(args.random):
        ref = searched[i % len(searched)]
        geno = sample_genotype(load_genotype(ref['genotype']), args.random_seed, i)
        path = str(geno.save(args.out / 'genotypes' / f'random-{i:03d}.json'))
        # training seed i: a random genotype keeps its unit when --seeds or --random change
        records.append(dict(arm='random', seed=i, kind='random', genotype=path, index=i,
                            reference=ref['run_dir']))
    return records


def _train_records(args: argparse.Namespace, runner: Runner, records: List[Dict[str, Any]]) -> None:
    """Train every genotype of ``records`` (a genotype found twice once) and add the results to them."""
    tags = [f'random-{r["index"]:03d}' if r['kind'] == 'random' else f'{r["arm"]}-s{r["seed"]}'
            for r in records]
    specs = [train_spec(args, tag, r['genotype'], r['seed']) for tag, r in zip(tags, records)]
    # first the units of the first seeds (random genotypes spread over them): an interrupted run restarted
    # with fewer --seeds / --random finds most of its units finished
    step = len(args.seeds) / max(args.random, 1)
    rank = {s: i for i, s in enumerate(args.seeds)}
    order = sorted(range(len(records)), key=lambda i: records[i]['index'] * step
                   if records[i]['kind'] == 'random' else rank[records[i]['seed']])
    unique = list({specs[i]['out']: specs[i] for i in order}.values())
    trained = runner.map(run_train_unit, unique,
                         lambda s, r: f'train {s["tag"]}: top-1 {r["top1"]:.2f} %, {r["train_s"]:.0f} s')
    by_dir = {s['out']: res for s, res in zip(unique, trained)}
    for rec, spec in zip(records, specs):
        res = dict(by_dir[spec['out']])
        rec.update(train_dir=spec['out'], train_ran=res.pop('ran'), **res)


def run_experiment(args: argparse.Namespace) -> Dict[str, Any]:
    """Every unit of the experiment; the records the report is made of."""
    with exclusive(args.out):
        return _run_units(args)


def _run_units(args: argparse.Namespace) -> Dict[str, Any]:
    runner = Runner(args.jobs)
    try:
        records = _search_records(args, runner)
        records += _fixed_records(args, records)
        _train_records(args, runner, records)
        return dict(records=records, units_ran=runner.ran, units=runner.done, wall_s=time.time() - runner.t0)
    finally:
        runner.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    for flag, value, low in (('--random', args.random, 0), ('--jobs', args.jobs, 1),
                             ('--threads', args.threads, 1)):
        if value is not None and value < low:
            raise UserError(f'{flag} must be >= {low}, got {value}')
    if args.jobs is None:
        args.jobs = 1 if args.device.startswith('cuda') else min(2, os.cpu_count() or 1)
    from search.experiment_report import write_report
    result = run_experiment(args)
    paths = write_report(args, result)
    ran, units = result['units_ran'], result['units']
    print(f'{units} units ({ran} ran, {units - ran} reused) in {result["wall_s"]:.0f} s; '
          f'wrote {", ".join(str(p) for p in paths)}')
    return 0


if __name__ == '__main__':
    from ddarts_zoo.errors import run_cli
    sys.exit(run_cli(main))
