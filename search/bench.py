"""One search step of this project next to the authors' own step, at identical settings, in one run.

``python search/bench.py [--device cpu|cuda] [--amp] [--loss fair ablation]`` times a full search step
(architecture update of every cell + one weight update) of the same supernet (``--cells``, ``--C``, 3x32x32
inputs, ``--classes``, 7-op DARTS space, random data) for every requested implementation and loss:

* ``project`` -- this project's step (the one the searcher runs);
* ``authors`` -- the authors' own code, unchanged, timed by :mod:`search.authors_step` from a clone of
  https://github.com/aheuillet/D-DARTS (``--authors-dir`` or the ``DDARTS_AUTHORS_DIR`` environment variable);
  on CPU their hard-coded CUDA calls are redirected;
* ``reference`` -- optional: this project's re-implementation of the authors' cost structure.

Every measurement runs in a fresh subprocess with ``--threads`` intra-op threads.  Seconds per step are the
mean over ``--steps`` timed steps after warm-up.  Peak memory is measured the same way for every row:
on CUDA ``max_memory_allocated`` during one step (minus what was allocated before it), on CPU the process'
peak RSS.  The speed-up column divides the authors' time by the row's time (same loss, same precision).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ddarts_zoo.utils.dist import DistContext
from search.config import SearchConfig
from search.losses import LOSSES
from search.reference import build_agents, reference_architecture_gradients
from search.step import SearchUpdates
from search.supernet import SuperNet

IMPLS = ('project', 'authors', 'reference')
AUTHORS_LOSSES = ('fair', 'ablation')
"""Losses the authors' tool knows; a gradient-carrying ablation is compared with their ablation step, which
keeps the ablated passes' graphs as well."""


AUTHORS_DIR_ENV = 'DDARTS_AUTHORS_DIR'
"""Environment variable naming a clone of https://github.com/aheuillet/D-DARTS (``--authors-dir`` overrides it)."""
CLONE_HINT = ('git clone --depth 1 https://github.com/aheuillet/D-DARTS, then pass --authors-dir D-DARTS '
              f'(or set {AUTHORS_DIR_ENV}), or measure this project alone with --impl project')


# ---------------------------------------------------------------------------------------------- project
def _project_step(impl: str, loss: str, net: SuperNet, args: argparse.Namespace, dev: torch.device):
    """A closure running one search step (architecture update of every cell, one weight update): the
    searcher's own :class:`~search.step.SearchUpdates`, or its architecture update replaced by the authors'
    cost structure (``reference``: one backward pass and one Adam per cell)."""
    cfg = SearchConfig(loss=loss, amp=args.amp, amp_dtype=args.amp_dtype, device=args.device,
                       cuda_graphs=args.cuda_graphs and impl == 'project', layers=args.cells, channels=args.C,
                       mc_batched=args.mc_batched)
    updates = SearchUpdates(net, cfg, DistContext(device=dev))
    agents = build_agents(net) if impl == 'reference' else None
    counter = itertools.count()

    def step(xa, ya, xw, yw) -> None:
        k = next(counter)
        if agents is None:
            updates.arch_step(xa, ya, 0, k, k)
        else:
            res = reference_architecture_gradients(net, xa, ya, loss=loss, generator=updates.mc_gen,
                                                   autocast=updates.autocast)
            for agent, g in zip(agents, res.grads):
                agent.alpha.grad = g
                agent.optimizer.step()
                agent.alpha.grad = None
        updates.weight_step(xw, yw, 0, k, k)

    return step


def run_project(impl: str, loss: str, args: argparse.Namespace) -> Dict[str, Any]:
    """Time this project's step (or its reference cost structure) in this process."""
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    net = SuperNet(args.classes, in_chans=3, channels=args.C, layers=args.cells).to(dev)
    step = _project_step(impl, loss, net, args, dev)
    data = torch.Generator().manual_seed(1)
    batches = [tuple(t.to(dev) for t in (torch.randn(args.batch, 3, 32, 32, generator=data),
                                         torch.randint(0, args.classes, (args.batch,), generator=data)))
               for _ in range(2)]
    (xa, ya), (xw, yw) = batches

    def sync() -> None:
        if dev.type == 'cuda':
            torch.cuda.synchronize(dev)

    for _ in range(max(args.warmup, 3) if args.cuda_graphs else args.warmup):   # graphs: 2 eager calls, capture
        step(xa, ya, xw, yw)
    times, cpu_times = [], []
    for _ in range(args.steps):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        step(xa, ya, xw, yw)
        sync()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    extra: Dict[str, Any] = {}
    if dev.type == 'cuda':   # a graph's private pool is allocated before the step: see also the run's totals
        extra = {'run_peak_allocated_mib': torch.cuda.max_memory_allocated(dev) / 2 ** 20,
                 'reserved_mib': torch.cuda.memory_reserved(dev) / 2 ** 20}
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        step(xa, ya, xw, yw)
        sync()
        peak = (torch.cuda.max_memory_allocated(dev) - base) / 2 ** 20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {'impl': impl, 'loss': loss, 's_per_step': statistics.mean(times),
            's_per_step_median': statistics.median(times), 'cpu_s_per_step': statistics.mean(cpu_times),
            'times': times, 'peak_mib': peak, **extra}


# ---------------------------------------------------------------------------------------------- drivers
def _authors_cmd(loss: str, args: argparse.Namespace) -> List[str]:
    cmd = [sys.executable, '-m', 'search.authors_step', str(Path(args.authors_dir).resolve()), '--device', args.device,
           '--loss', loss if loss in AUTHORS_LOSSES else 'ablation', '--batch', str(args.batch), '--C', str(args.C),
           '--cells', str(args.cells), '--classes', str(args.classes), '--steps', str(args.steps),
           '--threads', str(args.threads)]
    return cmd + (['--amp'] if args.amp else [])


def _worker_cmd(impl: str, loss: str, args: argparse.Namespace) -> List[str]:
    cmd = [sys.executable, '-m', 'search.bench', '--worker', impl, loss]
    for k in ('device', 'amp_dtype', 'batch', 'C', 'cells', 'classes', 'steps', 'warmup', 'threads'):
        cmd += [f'--{k.replace("_", "-")}', str(getattr(args, k))]
    cmd += ['--amp'] if args.amp else []
    cmd += ['--cuda-graphs'] if args.cuda_graphs else []
    return cmd + ([] if args.mc_batched is None else ['--mc-batched' if args.mc_batched else '--no-mc-batched'])


def measure(impl: str, loss: str, args: argparse.Namespace) -> Dict[str, Any]:
    """Run one (implementation, loss) measurement in a fresh process; its JSON line, or an error record."""
    cmd = _authors_cmd(loss, args) if impl == 'authors' else _worker_cmd(impl, loss, args)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-1:] or ['no output']
        print(f'{impl} {loss}: failed (exit {proc.returncode}): {tail[0][:300]}', file=sys.stderr, flush=True)
        return {'impl': impl, 'loss': loss, 'error': proc.stderr[-2000:], 's_per_step': None, 'peak_mib': None}
    res = json.loads(lines[-1])
    res.update(impl=impl, loss=loss, worker_s=round(time.time() - t0, 1))
    if impl == 'authors':
        res['amp_applied'] = bool(args.amp and args.device.startswith('cuda'))  # their autocast is CUDA-only
    print(f'{impl:9s} {loss:13s} {res["s_per_step"]:8.3f} s/step  peak {res["peak_mib"]:9.1f} MiB  '
          f'({res["worker_s"]:.0f} s)', file=sys.stderr, flush=True)
    return res


def _fmt(v: Optional[float], spec: str) -> str:
    return '-' if v is None else format(v, spec)


def table(results: List[Dict[str, Any]], args: argparse.Namespace, device_name: str) -> str:
    """Markdown table: s/step, peak memory and the authors' time / the row's time, per loss."""
    authors = {r['loss']: r for r in results if r['impl'] == 'authors' and r.get('s_per_step')}
    mem = 'peak GPU memory (max_memory_allocated)' if args.device.startswith('cuda') else 'peak RSS'
    prec = f'AMP {args.amp_dtype}' if args.amp else 'fp32'
    prec += ' (this project: CUDA graphs)' if args.cuda_graphs else ''
    prec += '' if args.mc_batched is None else f', mc_batched={args.mc_batched}'
    lines = [f'Search step on {device_name}, {args.threads} thread(s): {args.cells} cells, C={args.C}, batch '
             f'{args.batch}, {args.classes} classes, 3x32x32, {prec}; mean of {args.steps} steps', '',
             f'| implementation | loss | s / step | {mem} (MiB) | authors / this (time) |',
             '|---|---|---:|---:|---:|']
    for r in results:
        ref = authors.get(r['loss'] if r['loss'] in AUTHORS_LOSSES else 'ablation')
        ratio = ref['s_per_step'] / r['s_per_step'] if ref and r.get('s_per_step') else None
        name = {'project': 'this project', 'authors': "authors' code", 'reference': "this project, authors' "
                'cost structure'}[r['impl']]
        if r['impl'] == 'authors' and args.amp and not r.get('amp_applied'):
            name += ' (fp32: their AMP is CUDA-only)'
        if r.get('error'):
            lines.append(f'| {name} | {r["loss"]} | failed | - | - |')
            continue
        lines.append(f'| {name} | {r["loss"]} | {r["s_per_step"]:.3f} | {_fmt(r["peak_mib"], ".0f")} | '
                     f'{_fmt(ratio, ".2f")}{"x" if ratio else ""} |')
    return '\n'.join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='python search/bench.py', description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', help="'cpu' or 'cuda'")
    p.add_argument('--amp', action='store_true', help='mixed precision (the authors: CUDA fp16 autocast only)')
    p.add_argument('--amp-dtype', choices=['float16', 'bfloat16'], default=None,
                   help='this project\'s AMP dtype (default: float16 on CUDA, bfloat16 on CPU)')
    p.add_argument('--cuda-graphs', action='store_true', help="this project's step replayed as CUDA graphs")
    p.add_argument('--mc-batched', action=argparse.BooleanOptionalAction, default=None,
                   help="this project's marginal-contribution reruns stacked into one batch (default: by size)")
    p.add_argument('--loss', nargs='+', choices=list(LOSSES), default=list(LOSSES))
    p.add_argument('--impl', nargs='+', choices=IMPLS, default=['project', 'authors'])
    p.add_argument('--batch', type=int, default=None, help='default: 72 on CUDA, 16 on CPU')
    p.add_argument('--C', type=int, default=16, help='initial width')
    p.add_argument('--cells', type=int, default=8)
    p.add_argument('--classes', type=int, default=None, help='default: 100 on CUDA, 10 on CPU')
    p.add_argument('--steps', type=int, default=3, help='timed steps per measurement')
    p.add_argument('--warmup', type=int, default=1, help="this project's warm-up steps (the authors' step: 2)")
    p.add_argument('--threads', type=int, default=1, help='intra-op CPU threads of every measurement')
    p.add_argument('--authors-dir', type=Path, default=os.environ.get(AUTHORS_DIR_ENV) or None,
                   help=f'a clone of https://github.com/aheuillet/D-DARTS (default: ${AUTHORS_DIR_ENV}); '
                        'needed for the authors\' rows')
    p.add_argument('--json', type=Path, help='also write the settings and measurements here')
    p.add_argument('--worker', nargs=2, metavar=('IMPL', 'LOSS'), help=argparse.SUPPRESS)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    cuda = args.device.startswith('cuda')
    if cuda and not torch.cuda.is_available():
        raise SystemExit(f'--device {args.device}: CUDA is not available on this machine')
    if args.cuda_graphs and not cuda:
        raise SystemExit('--cuda-graphs needs --device cuda')
    args.amp_dtype = args.amp_dtype or ('float16' if cuda else 'bfloat16')
    args.batch = args.batch or (72 if cuda else 16)
    args.classes = args.classes or (100 if cuda else 10)
    if 'authors' in args.impl and not args.worker:
        if args.authors_dir is None:
            raise SystemExit(f"error: the authors' rows need their code: {CLONE_HINT}")
        if not (Path(args.authors_dir) / 'model_search.py').is_file():
            raise SystemExit(f'error: --authors-dir {args.authors_dir}: not a clone of '
                             f'https://github.com/aheuillet/D-DARTS ({CLONE_HINT})')
    if args.worker:
        print(json.dumps(run_project(args.worker[0], args.worker[1], args)))
        return 0
    device_name = (torch.cuda.get_device_name(torch.device(args.device)) if cuda
                   else f'CPU ({os.cpu_count()} cores)')
    results = [measure(impl, loss, args) for loss in args.loss for impl in args.impl
               if impl == 'project' or loss in AUTHORS_LOSSES]   # ablation-grad: this project only
    print(table(results, args, device_name))
    if args.json:
        from ddarts_zoo.utils.io import atomic_write
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != 'worker'}
        record = {'device_name': device_name, 'torch': torch.__version__, 'settings': settings, 'results': results}
        atomic_write(args.json, json.dumps(record, indent=1) + '\n')
    return 0 if all(not r.get('error') for r in results) else 1


if __name__ == '__main__':
    sys.exit(main())
