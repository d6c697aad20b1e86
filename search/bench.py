"""Side-by-side cost of one search step: this implementation vs the authors' cost structure.

``python search/bench.py`` times one full search step (architecture update of every cell + weight update)
of the same supernet (8 cells, C = 16, batch 32, 32 px, 10 classes, 7-op DARTS space) in four configurations:

* ``fast`` -- this implementation: one backward pass for all cells (alphas only); marginal contributions
  under ``no_grad``, rerunning only the cells after the switched-off one from cached inputs, batched;
* ``reference`` -- the authors' cost structure (without their defects): one ``backward(retain_graph=True)``
  per cell computing every gradient, marginal contributions from whole forward passes that keep graphs;

each with ``--loss fair`` and ``--loss ablation``.  Every configuration runs in a fresh subprocess, with one
intra-op thread by default.  Wall time and process CPU time are both reported; on CPU the ratios use CPU
time, which other processes on a shared machine disturb much less than wall time.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` minus the memory held before the step; on CPU the
same quantity from the allocator's allocation/free events recorded by ``torch.profiler`` (profile_memory),
i.e. the peak of live tensor bytes allocated during one step.  The process' peak RSS growth over the
warm-up and timed steps (before any profiling) is shown for reference; it includes allocator caching.
On CPU each worker's address space is capped (``--mem-limit-gb``, default 85 % of the available memory) so
that a configuration that does not fit fails alone, reported as out of memory, instead of waking the
system's OOM killer.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
if __package__ in (None, ''):
    _ROOT = Path(__file__).resolve().parent.parent
    if str(_ROOT) not in sys.path:
        sys.path.insert(0, str(_ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from search.supernet import SuperNet  # noqa: E402
from search.trainer import architecture_gradients, build_agents  # noqa: E402

CONFIGS = [('fast', 'fair'), ('fast', 'ablation'), ('reference', 'fair'), ('reference', 'ablation')]
LABEL = {'fast': '(a) this implementation', 'reference': "(b) authors' cost structure"}


def _rss_mb() -> float:
    """Current resident set size (Linux /proc), in MiB."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20
    except OSError:
        return float('nan')


def _profiled_peak_bytes(fn) -> Optional[int]:
    """Peak of live bytes allocated (and not yet freed) while ``fn`` runs, from profiler memory events."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:
        events = [(e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                  if e.name() == '[memory]' and str(e.device_type()).endswith('CPU')]
    except AttributeError:  # private profiler API changed: fall back to RSS only
        return None
    events.sort(key=lambda t: t[0])
    live = peak = 0
    for _, n in events:
        live += n
        peak = max(peak, live)
    return peak


def _limit_memory(gib: float) -> None:
    """Cap this worker's address space ``gib`` GiB above its current size: an allocation beyond fails with an
    error instead of waking the system OOM killer (which might pick another process)."""
    try:
        with open('/proc/self/statm') as f:
            vsz = int(f.read().split()[0]) * os.sysconf('SC_PAGE_SIZE')
    except OSError:
        return
    limit = vsz + int(gib * 2 ** 30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _mem_available_gib() -> float:
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) / 2 ** 20
    except OSError:
        pass
    return float('inf')


def run_one(mode: str, loss: str, channels: int, layers: int, batch: int, size: int, steps: int, warmup: int,
            device: str, threads: int, seed: int = 0, release_ablated_graphs: bool = False) -> Dict[str, Any]:
    """Time ``steps`` search steps after ``warmup`` ones; measure one more step's peak memory."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(seed)
    net = SuperNet(10, in_chans=3, channels=channels, layers=layers).to(dev)
    agents = build_agents(net)
    w_params = net.weight_parameters()
    w_opt = torch.optim.SGD(w_params, lr=0.005, momentum=0.9, weight_decay=3e-4)
    gen = torch.Generator(device=dev).manual_seed(seed)
    data = torch.Generator().manual_seed(seed + 1)

    def batch_pair():
        x = torch.randn(batch, 3, size, size, generator=data).to(dev)
        y = torch.randint(0, 10, (batch,), generator=data).to(dev)
        return x, y

    def step() -> None:
        xa, ya = batch_pair()
        xw, yw = batch_pair()
        res = architecture_gradients(net, xa, ya, loss=loss, generator=gen, mode=mode,
                                     retain_ablated_graphs=not release_ablated_graphs)
        for agent, g in zip(agents, res.grads):
            agent.alpha.grad = g
            agent.optimizer.step()
            agent.alpha.grad = None
        for p in w_params:
            p.grad = None
        F.cross_entropy(net(xw, net.mixing_weights(detach=True)), yw).backward()
        torch.nn.utils.clip_grad_norm_(w_params, 5.0)
        w_opt.step()

    def sync() -> None:
        if dev.type == 'cuda':
            torch.cuda.synchronize(dev)

    rss0 = _rss_mb()
    for _ in range(warmup):
        step()
    times, cpu_times = [], []
    for _ in range(steps):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        sync()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    out: Dict[str, Any] = {'mode': mode, 'loss': loss, 'released_graphs': release_ablated_graphs,
                           'seconds_per_step': statistics.median(times),
                           'cpu_seconds_per_step': statistics.median(cpu_times), 'times': times,
                           'cpu_times': cpu_times, 'device': str(dev), 'threads': threads,
                           'rss_growth_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0}
    if dev.type == 'cuda':
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        step()
        sync()
        out['peak_mb'] = (torch.cuda.max_memory_allocated(dev) - base) / 2 ** 20
        out['peak_method'] = 'torch.cuda.max_memory_allocated'
    else:
        peak = _profiled_peak_bytes(step)
        out['peak_mb'] = None if peak is None else peak / 2 ** 20
        out['peak_method'] = 'torch.profiler memory events'
    return out


def _fmt(v: Optional[float], spec: str = '.1f') -> str:
    return '-' if v is None else format(v, spec)


def table(results: List[Dict[str, Any]], args: argparse.Namespace) -> str:
    by = {(r['mode'], r['loss']): r for r in results}
    lines = [f'Search step, {args.layers} cells, C={args.channels}, batch {args.batch}, {args.size} px, '
             f'device {results[0]["device"]}, {results[0]["threads"]} thread(s), median of {args.steps} steps',
             '', '| implementation | loss | s / step (wall) | CPU s / step | peak tensor memory (MiB) | '
                 'peak RSS growth (MiB) |',
             '|---|---|---:|---:|---:|---:|']
    for mode, loss in CONFIGS:
        r = by.get((mode, loss))
        if r and r.get('oom'):
            lines.append(f'| {LABEL[mode]} | {loss} | out of memory | - | > {args.mem_limit_gb:g} GiB | - |')
        elif r:
            note = ' (ablated graphs released: peak not representative)' if r.get('released_graphs') and \
                mode == 'reference' and loss == 'ablation' else ''
            lines.append(f'| {LABEL[mode]}{note} | {loss} | {r["seconds_per_step"]:.2f} | '
                         f'{_fmt(r.get("cpu_seconds_per_step"), ".2f")} | {_fmt(r["peak_mb"])} | '
                         f'{_fmt(r["rss_growth_mb"])} |')
    lines.append('')
    ok = {k: v for k, v in by.items() if not v.get('oom')}
    fa, aa = ok.get(('fast', 'ablation')), ok.get(('fast', 'fair'))
    ra, rf = ok.get(('reference', 'ablation')), ok.get(('reference', 'fair'))
    key = 'cpu_seconds_per_step' if results[0]['device'] == 'cpu' else 'seconds_per_step'
    what = 'CPU time (robust to other load on the machine)' if key.startswith('cpu') else 'wall time'
    if fa and ra:
        lines.append(f'- speed-up, ablation: (b) / (a) = {ra[key] / fa[key]:.2f}x in {what} '
                     f'(wall: {ra["seconds_per_step"] / fa["seconds_per_step"]:.2f}x; target >= 3x)')
    if aa and rf:
        lines.append(f'- speed-up, fair: (b) / (a) = {rf[key] / aa[key]:.2f}x in {what} '
                     f'(wall: {rf["seconds_per_step"] / aa["seconds_per_step"]:.2f}x)')
    if fa and aa and fa['peak_mb'] and aa['peak_mb']:
        lines.append(f'- memory, (a) ablation / (a) fair = {fa["peak_mb"] / aa["peak_mb"]:.3f}x (target <= 1.15x)')
    if fa and ra and fa['peak_mb'] and ra['peak_mb'] and not ra.get('released_graphs'):
        lines.append(f'- memory, (b) ablation / (a) ablation = {ra["peak_mb"] / fa["peak_mb"]:.2f}x')
    lines.append(f'- peak memory method: {results[0]["peak_method"]}')
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog='python search/bench.py', description=__doc__.split('\n\n')[0])
    p.add_argument('--channels', type=int, default=16)
    p.add_argument('--layers', type=int, default=8)
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--size', type=int, default=32)
    p.add_argument('--steps', type=int, default=3, help='timed steps per configuration (median reported)')
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--threads', type=int, default=1, help='intra-op CPU threads')
    p.add_argument('--only', choices=[f'{m}-{l}' for m, l in CONFIGS], action='append',
                   help='run only these configurations')
    p.add_argument('--json', help='also write the raw measurements here')
    p.add_argument('--mem-limit-gb', type=float, default=None,
                   help='CPU: address-space cap per worker above its start size (default: 85%% of MemAvailable)')
    p.add_argument('--release-ablated-graphs', action='store_true',
                   help="reference mode: free each ablated pass's graph at once (same work, lower peak: times "
                        "(b) where its memory does not fit; its peak memory is then not the authors')")
    p.add_argument('--worker', nargs=2, metavar=('MODE', 'LOSS'), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    common = dict(channels=args.channels, layers=args.layers, batch=args.batch, size=args.size, steps=args.steps,
                  warmup=args.warmup, device=args.device, threads=args.threads)
    if args.worker:
        if args.mem_limit_gb and args.device == 'cpu':
            _limit_memory(args.mem_limit_gb)
        try:
            res = run_one(args.worker[0], args.worker[1], release_ablated_graphs=args.release_ablated_graphs,
                          **common)
        except (MemoryError, RuntimeError) as err:
            if not isinstance(err, MemoryError) and 'memory' not in str(err).lower():
                raise
            res = {'mode': args.worker[0], 'loss': args.worker[1], 'oom': True, 'error': str(err)[:200],
                   'device': args.device, 'threads': args.threads, 'seconds_per_step': None, 'peak_mb': None,
                   'rss_growth_mb': None, 'peak_method': 'torch.profiler memory events'}
        print(json.dumps(res))
        return 0
    if args.mem_limit_gb is None:
        args.mem_limit_gb = round(0.85 * _mem_available_gib(), 1)
    results = []
    selected = [tuple(s.split('-', 1)) for s in args.only] if args.only else CONFIGS
    for mode, loss in selected:
        cmd = [sys.executable, str(Path(__file__).resolve()), '--worker', mode, loss]
        for k in ('channels', 'layers', 'batch', 'size', 'steps', 'warmup', 'device', 'threads', 'mem_limit_gb'):
            cmd += [f'--{k.replace("_", "-")}', str(getattr(args, k))]
        if args.release_ablated_graphs:
            cmd.append('--release-ablated-graphs')
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f'benchmark worker {mode}/{loss} failed (exit {proc.returncode})')
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(res)
        if res.get('oom'):
            print(f'{mode:9s} {loss:8s} out of memory under the {args.mem_limit_gb} GiB cap '
                  f'(worker {time.time() - t0:.0f} s)', file=sys.stderr, flush=True)
            continue
        print(f'{mode:9s} {loss:8s} {res["seconds_per_step"]:7.2f} s/step  peak {_fmt(res["peak_mb"])} MiB  '
              f'(worker {time.time() - t0:.0f} s)', file=sys.stderr, flush=True)
    text = table(results, args)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
