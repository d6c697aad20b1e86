"""Time the authors' own D-DARTS search step, unchanged, for side-by-side benchmarks.

``python -m search.authors_step AUTHORS_DIR [--device cpu|cuda] [--amp] [--loss fair|ablation] ...`` imports
the search code of a clone of https://github.com/aheuillet/D-DARTS (``git clone --depth 1
https://github.com/aheuillet/D-DARTS``) and times its step as their training loop runs it: the architecture
update of every cell (``Architect.step``: marginal-contribution passes for the ablation loss, then one
backward per cell) followed by one weight update. It prints one JSON line (seconds per step, peak memory).
On CPU their hard-coded ``.cuda()`` calls are redirected to the CPU; optional analysis packages their
modules import (plotting, pandas, scipy) are replaced by empty modules when missing.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import json
import os
import resource
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

__all__ = ['main']

_OPTIONAL_MODULES = ('plotly', 'plotly.express', 'thop', 'pandas', 'scipy', 'scipy.spatial',
                     'scipy.spatial.distance', 'scipy.stats', 'tqdm')


class _EmptyModule(types.ModuleType):
    """Stands in for an optional package the authors' modules import but the step never uses."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith('__'):
            raise AttributeError(name)
        return None


def _install_placeholders() -> None:
    for name in _OPTIONAL_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            module = _EmptyModule(name)
            module.__spec__ = importlib.machinery.ModuleSpec(name, None)
            sys.modules[name] = module
    # their `train` module starts data loading on import; the search step does not need it
    train = types.ModuleType('train')
    train.TrainArgs = train.TrainNetwork = None
    sys.modules['train'] = train


def _keep_on_cpu() -> None:
    """Make the authors' unconditional CUDA calls no-ops, so their step runs on a CPU-only machine."""
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    for factory_name in ('zeros', 'tensor'):
        factory = getattr(torch, factory_name)

        def on_cpu(*args: Any, _factory: Callable = factory, **kwargs: Any) -> torch.Tensor:
            if str(kwargs.get('device', '')).startswith('cuda'):
                kwargs['device'] = 'cpu'
            return _factory(*args, **kwargs)
        setattr(torch, factory_name, on_cpu)


def _import_authors(authors_dir: Path) -> types.SimpleNamespace:
    missing = [f for f in ('model_search.py', 'architect.py', 'separate_loss.py') if not (authors_dir / f).is_file()]
    if missing:
        raise SystemExit(f'error: {authors_dir} is not a clone of https://github.com/aheuillet/D-DARTS '
                         f'(missing {", ".join(missing)})')
    _install_placeholders()
    sys.path.insert(0, str(authors_dir))
    os.chdir(authors_dir)   # their modules read files relative to the repository
    model_search = importlib.import_module('model_search')
    architect = importlib.import_module('architect')
    losses = importlib.import_module('separate_loss')
    return types.SimpleNamespace(Network=model_search.NetworkCIFAR, Architect=architect.Architect,
                                 SeparateLoss=losses.ConvSeparateLoss, AblationLoss=losses.ConvAblationLoss)


def _build_step(authors: types.SimpleNamespace, args: argparse.Namespace, device: str) -> Callable[[], None]:
    """Their supernet, architect and weight optimizer at the paper's settings; a closure running one step."""
    cuda = device == 'cuda'
    network_loss = authors.SeparateLoss(weight=7.0)
    # their non-ablation path reads an undefined variable, so `fair` is their ablation loss with weight 0
    # and the marginal-contribution passes switched off
    cell_loss = authors.AblationLoss(weight=7.0, abl_weight=0.5 if args.loss == 'ablation' else 0.0)
    torch.manual_seed(0)
    model = authors.Network(args.C, args.classes, args.cells, network_loss, cell_loss, 3e-3, 1e-3, steps=4,
                            multiplier=4, stem_multiplier=3, epochs=50)
    model = model.cuda() if cuda else model
    settings = types.SimpleNamespace(momentum=0.9, weight_decay=3e-4, amp=args.amp, report_freq=50,
                                     cell_loss='ablation_loss')
    architect = authors.Architect(model, settings)
    if args.loss == 'fair':
        architect.compute_marginal_contributions = lambda *_: [0.0] * len(model.cells)
    weights_opt = torch.optim.SGD(model.parameters(), 0.005, momentum=0.9, weight_decay=3e-4)
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp and cuda)
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(args.batch, 3, 32, 32, generator=gen).to(device),
                torch.randint(0, args.classes, (args.batch,), generator=gen).to(device)) for _ in range(2)]
    (x_arch, y_arch), (x_weights, y_weights) = batches

    def step() -> None:
        architect.step(x_arch, y_arch, scaler)
        with torch.autocast(device, enabled=args.amp and cuda):
            logits = model(x_weights)
            loss = network_loss(logits, y_weights, torch.sigmoid(model.arch_parameters()), cell_mc=None,
                                mean_mc=None)[0]
        scaler.scale(loss).backward()
        scaler.unscale_(weights_opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        scaler.step(weights_opt)
        scaler.update()
        weights_opt.zero_grad(set_to_none=True)
    return step


def _time_steps(step: Callable[[], None], args: argparse.Namespace, device: str) -> Dict[str, float]:
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    for _ in range(args.warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    if device == 'cuda':
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        sync()
        peak = (torch.cuda.max_memory_allocated() - before) / 2 ** 20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {'s_per_step': round(seconds, 4), 'peak_mib': round(peak, 1)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='python -m search.authors_step', description=__doc__.split('\n\n')[0])
    p.add_argument('authors_dir', type=Path, help='a clone of https://github.com/aheuillet/D-DARTS')
    p.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    p.add_argument('--amp', action='store_true', help='their CUDA fp16 autocast (no effect on CPU)')
    p.add_argument('--loss', choices=['fair', 'ablation'], default='ablation')
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--C', type=int, default=16)
    p.add_argument('--cells', type=int, default=8)
    p.add_argument('--classes', type=int, default=10)
    p.add_argument('--steps', type=int, default=3, help='timed steps')
    p.add_argument('--warmup', type=int, default=2, help='untimed steps first')
    p.add_argument('--threads', type=int, default=1, help='intra-op CPU threads')
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('error: --device cuda: CUDA is not available on this machine')
    if args.device == 'cpu':
        torch.set_num_threads(args.threads)
        _keep_on_cpu()
    authors = _import_authors(args.authors_dir.resolve())
    result = _time_steps(_build_step(authors, args, args.device), args, args.device)
    print(json.dumps({'impl': 'authors', 'loss': args.loss, 'amp': args.amp, 'device': args.device,
                      'cells': args.cells, 'C': args.C, 'batch': args.batch, 'classes': args.classes, **result,
                      'peak_method': 'cuda max_memory_allocated' if args.device == 'cuda' else 'peak RSS'}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
