"""The D-DARTS bilevel search loop: steps, checkpoint/resume, data parallelism, logging.

One search step (SPEC section 5, first order):

1. **architecture update** on an architecture-split batch: one forward pass of the supernet (recording every
   cell's inputs), one backward pass of ``L_CE + sum_i (w01 L01_i + w_abl L_abl_i)`` restricted to the alphas,
   which gives every cell its own ``dL_i / d alpha_i``; with ``--loss ablation`` the marginal contributions
   are then computed without graphs, rerunning only cells ``i ..`` for each switched-off cell ``i``; every
   cell's (or cell group's) Adam steps on its own gradient;
2. **weight update** on a weight-split batch with cross entropy (SGD, gradient clipping).

:func:`architecture_gradients` also has a ``mode='reference'`` reproducing the authors' *cost structure*
(one backward pass per cell, marginal contributions from whole forward passes that keep their graphs) without
their defects; ``search/bench.py`` times both, ``tests/test_search_equivalence.py`` checks they agree.

Runs survive: a checkpoint is written atomically after every epoch (model, optimizers, schedulers, AMP
scalers, RNG states of every rank, history); ``--resume`` continues bit-exactly (data order is a function of
``(seed, epoch)``).  Data parallelism: launched by ``torchrun``, every rank owns a shard of each epoch;
gradients of weights *and* alphas are averaged with one bucketed ``all_reduce`` per update, so every rank
holds identical alphas after every step; rank 0 alone writes files.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from ddarts_zoo.genotype import Genotype, atomic_write_text

from .losses import LOSSES, upcast, ablation_losses, alpha_entropy, architecture_objective, marginal_contributions, \
    marginal_contributions_full, random_mixing_weights, zero_one_loss
from .supernet import PARSE_METHODS, STEM_TYPES, SuperNet, resolve_op_names

__all__ = [
    'SearchConfig', 'Searcher', 'SearchResult', 'NonFiniteLossError', 'DistContext', 'init_distributed',
    'architecture_gradients', 'ArchGradients', 'CellAgent', 'build_agents', 'build_supernet',
    'should_stop_early', 'CHECKPOINT_NAME', 'load_checkpoint',
]

CHECKPOINT_NAME = 'checkpoint.pt'
CHECKPOINT_FORMAT = 'ddarts-zoo/search-checkpoint'
CHECKPOINT_VERSION = 1
log = logging.getLogger('ddarts_search')


class NonFiniteLossError(FloatingPointError):
    """A loss or gradient became NaN/inf (and ``--nonfinite error`` or the skip budget was exhausted)."""


# ============================================================================ configuration
@dataclass
class SearchConfig:
    """Every knob of a search.  Defaults are the paper's hyperparameters (SPEC section 5); the quick digits
    run of ``python search/run.py`` is the ``quick`` preset (:mod:`search.presets`).

    With a ``baseline`` (DARTOpti) the supernet takes the baseline's cells, reductions and node count:
    ``layers`` and ``steps`` are not used.
    """

    # data
    dataset: str = 'digits'
    data: Optional[str] = None
    subset: float = 1.0
    image_size: Optional[int] = None
    workers: int = 0
    # search space / supernet (ops: 'darts', 'dartopti', a comma list; default dartopti with a baseline)
    ops: Optional[str] = None
    baseline: Optional[str] = None
    layers: int = 8
    channels: int = 16
    steps: int = 4
    multiplier: int = 4
    stem_multiplier: int = 3
    stem: Optional[str] = None
    # schedule
    epochs: int = 50
    pretrain_epochs: Optional[int] = None
    batch_size: int = 64
    max_steps_per_epoch: Optional[int] = None
    # losses
    loss: str = 'ablation'
    w01: float = 7.0
    w_abl: float = 0.5
    mc_batched: Optional[bool] = None
    # architecture optimizers (one per cell / cell group)
    arch_lr: float = 3e-3
    arch_lr_min: float = 1e-3
    arch_betas: Tuple[float, float] = (0.9, 0.999)
    arch_weight_decay: float = 1e-3
    # weight optimizer
    lr: float = 0.005
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    # parsing
    parse: str = 'sparse'
    threshold: float = 0.85
    derive_layers: Optional[int] = None
    # early stopping (DARTOpti, paper Sec. 5.4)
    early_stop: Optional[bool] = None
    early_stop_patience: int = 5
    early_stop_tol: float = 1e-3
    early_stop_from: int = 10
    # run
    seed: int = 0
    amp: bool = False
    device: str = 'auto'
    nonfinite: str = 'skip'
    max_nonfinite: int = 10
    eval: bool = True
    out: str = 'runs/search'
    name: Optional[str] = None
    preset: Optional[str] = None
    progress: bool = True
    tensorboard: bool = True
    plots: bool = True
    deterministic: bool = False
    threads: Optional[int] = None
    step_delay: float = 0.0

    def __post_init__(self) -> None:
        self.arch_betas = tuple(self.arch_betas)  # type: ignore[assignment]

    @property
    def op_set(self) -> str:
        return self.ops or ('dartopti' if self.baseline is not None else 'darts')

    @property
    def uses_baseline(self) -> bool:
        return self.baseline is not None

    @property
    def early_stop_enabled(self) -> bool:
        return self.uses_baseline if self.early_stop is None else bool(self.early_stop)

    @property
    def total_epochs(self) -> int:
        return self.pretrain + self.epochs

    @property
    def pretrain(self) -> int:
        """Weight-only epochs before the search (default: 5 with a DARTOpti baseline, paper Sec. 5.4; else 0)."""
        if self.pretrain_epochs is not None:
            return self.pretrain_epochs
        return 5 if self.baseline is not None else 0

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d['arch_betas'] = list(self.arch_betas)
        return d

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> 'SearchConfig':
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f'unknown search option(s): {", ".join(unknown)}')
        return cls(**data)

    def check(self) -> None:
        """Raise ``ValueError`` naming the offending option."""
        from ddarts_zoo.data import DATASETS
        if self.dataset not in DATASETS:
            raise ValueError(f'--dataset {self.dataset!r}: choose one of {", ".join(DATASETS)}')
        if self.loss not in LOSSES:
            raise ValueError(f'--loss {self.loss!r}: choose one of {", ".join(LOSSES)}')
        if self.parse not in PARSE_METHODS:
            raise ValueError(f'--parse {self.parse!r}: choose one of {", ".join(PARSE_METHODS)}')
        if self.stem is not None and self.stem not in STEM_TYPES:
            raise ValueError(f'--stem {self.stem!r}: choose one of {", ".join(STEM_TYPES)}')
        if self.nonfinite not in ('skip', 'error'):
            raise ValueError(f"--nonfinite {self.nonfinite!r}: choose 'skip' or 'error'")
        for name in ('layers', 'channels', 'steps', 'multiplier', 'stem_multiplier', 'batch_size'):
            if getattr(self, name) < 1:
                raise ValueError(f'--{name.replace("_", "-")} must be >= 1, got {getattr(self, name)}')
        if self.threads is not None and self.threads < 1:
            raise ValueError(f'--threads must be >= 1, got {self.threads}')
        for name in ('epochs', 'pretrain_epochs', 'workers', 'max_nonfinite'):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f'--{name.replace("_", "-")} must be >= 0, got {getattr(self, name)}')
        if not 0.0 < self.subset <= 1.0:
            raise ValueError(f'--subset must be in (0, 1], got {self.subset}')
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f'--threshold must be in [0, 1] (a sigmoid weight), got {self.threshold}')
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ValueError(f'--max-steps-per-epoch must be >= 1, got {self.max_steps_per_epoch}')
        if self.channels % 2 and (self.stem == 'imagenet' or (self.stem is None and self.dataset == 'imagenet')):
            raise ValueError(f'--channels must be even with the ImageNet stem (FactorizedReduce halves it), '
                             f'got {self.channels}')
        resolve_op_names(self.op_set)
        if self.baseline is not None:
            from ddarts_zoo import genotypes as shipped
            if self.baseline not in shipped.names() and not os.path.exists(self.baseline):
                raise ValueError(f'--baseline {self.baseline!r}: not a shipped genotype '
                                 f'(resnet18, resnet50, xception, ...) nor a file')


# ============================================================================ distributed
@dataclass
class DistContext:
    """Where this process sits in a (possibly single-process) data-parallel run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device('cpu'))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = 'auto') -> DistContext:
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE`` > 1), else a single process.

    Backend: NCCL when the device is CUDA, gloo on CPU.
    """
    world = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device.startswith('cuda'):
        if not torch.cuda.is_available():
            raise RuntimeError(f'--device {device}: CUDA is not available on this machine')
        dev = torch.device('cuda', local_rank if world > 1 or device == 'cuda' else torch.device(device).index)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group('nccl' if dev.type == 'cuda' else 'gloo', rank=rank, world_size=world)
    return DistContext(rank, world, local_rank, dev)


def _allreduce_mean_(tensors: Sequence[torch.Tensor], ctx: DistContext) -> None:
    """Average ``tensors`` in place across ranks with one flattened all_reduce."""
    if not ctx.enabled or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n


def _any_rank(flag: bool, ctx: DistContext) -> bool:
    if not ctx.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def _broadcast_module_(module: nn.Module, ctx: DistContext, buffers_only: bool = False) -> None:
    """Copy rank 0's parameters and buffers (or only buffers: BN running statistics) to every rank."""
    if not ctx.enabled:
        return
    with torch.no_grad():
        for t in ([] if buffers_only else list(module.parameters())) + list(module.buffers()):
            dist.broadcast(t.data, 0)


# ============================================================================ data
class EpochShardSampler(Sampler[int]):
    """Seeded permutation per epoch, sharded across ranks (equal shard sizes; the tail is dropped).

    The order is a pure function of ``(seed, epoch, rank, world_size)``: a resumed run sees the same data.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.size, generator=g)
        per = self.size // self.world_size
        return iter(perm[:per * self.world_size][self.rank::self.world_size].tolist())

    def __len__(self) -> int:
        return self.size // self.world_size


def _transforms(dataset: str, image_size: int, mean, std):
    if dataset == 'digits':
        return None  # tensors, already normalised; no augmentation
    import torchvision.transforms as T
    if dataset == 'imagenet':
        return T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor(),
                          T.Normalize(mean, std)])
    ops = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
    if image_size != 32:
        ops.append(T.Resize(image_size))
    return T.Compose(ops + [T.ToTensor(), T.Normalize(mean, std)])


def build_search_data(cfg: SearchConfig) -> Tuple[Dataset, Dataset, Any]:
    """(weight split, architecture split, dataset info) of the training set (50/50, seeded)."""
    from ddarts_zoo.data import build_dataset, dataset_info, split_half
    info = dataset_info(cfg.dataset)
    size = cfg.image_size or info.image_size
    ds = build_dataset(cfg.dataset, 'train', root=cfg.data, transform=_transforms(cfg.dataset, size, info.mean,
                       info.std), image_size=size, subset=cfg.subset, seed=cfg.seed)
    w, a = split_half(ds, seed=cfg.seed)
    return w, a, info


# ============================================================================ model and agents
def _load_baseline(spec: str) -> Genotype:
    from ddarts_zoo.genotype import load_genotype
    return load_genotype(spec)


def build_supernet(cfg: SearchConfig, num_classes: int, in_chans: int) -> SuperNet:
    """The supernet of ``cfg``: DARTS-style, or DARTOpti from ``cfg.baseline`` (12-op space by default)."""
    stem = cfg.stem or ('imagenet' if cfg.dataset == 'imagenet' else 'cifar')
    if cfg.baseline is not None:
        base = _load_baseline(cfg.baseline)
        return SuperNet.from_baseline(base, num_classes, in_chans, cfg.channels, op_names=cfg.op_set,
                                      multiplier=cfg.multiplier, stem=stem)
    return SuperNet(num_classes, in_chans, cfg.channels, cfg.layers, cfg.steps, cfg.multiplier,
                    cfg.stem_multiplier, cfg.op_set, stem=stem)


@dataclass
class CellAgent:
    """What each cell (or group of identical DARTOpti cells) owns: its alpha, Adam and cosine schedule."""

    group: int
    cells: Tuple[int, ...]
    alpha: nn.Parameter
    optimizer: torch.optim.Adam
    scheduler: torch.optim.lr_scheduler.CosineAnnealingLR


def build_agents(net: SuperNet, lr: float = 3e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 weight_decay: float = 1e-3, epochs: int = 50, lr_min: float = 1e-3) -> List[CellAgent]:
    """One Adam + cosine schedule (``lr`` -> ``lr_min`` over ``epochs``) per alpha group."""
    agents = []
    for k, alpha in enumerate(net.alphas):
        opt = torch.optim.Adam([alpha], lr=lr, betas=tuple(betas), weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1), eta_min=lr_min)
        agents.append(CellAgent(net.group_ids[k], net.cells_of_group(k), alpha, opt, sched))
    return agents


# ============================================================================ one architecture step
@dataclass
class ArchGradients:
    """Result of :func:`architecture_gradients` (gradients are *not* applied)."""

    grads: List[torch.Tensor]          # one per alpha group (None entries when the loss was non-finite)
    ce: float
    correct: int
    count: int
    l01: List[float]                   # per group
    mc: Optional[torch.Tensor]         # per cell (float64) or None
    abl: Optional[torch.Tensor]        # per cell or None
    finite: bool = True

    def cell_losses(self, net: SuperNet, w01: float, w_abl: float) -> List[float]:
        """``L_i = L_CE + w01 L01_i + w_abl L_abl_i`` per cell."""
        out = []
        for i in range(net.layers):
            g = net.group_ids.index(net.cell_groups[i])
            v = self.ce + w01 * self.l01[g]
            if self.abl is not None:
                v += w_abl * float(self.abl[i])
            out.append(v)
        return out


def _group_abl(net: SuperNet, abl: Optional[torch.Tensor], k: int) -> torch.Tensor:
    if abl is None:
        return torch.zeros((), dtype=torch.float64)
    return abl[list(net.cells_of_group(k))].mean()


def architecture_gradients(net: SuperNet, x: torch.Tensor, y: torch.Tensor, *, loss: str = 'ablation',
                           w01: float = 7.0, w_abl: float = 0.5,
                           random_weights: Optional[Sequence[torch.Tensor]] = None,
                           generator: Optional[torch.Generator] = None, mode: str = 'fast',
                           autocast: Optional[Callable[[], Any]] = None, loss_scale: float = 1.0,
                           mc_reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                           mc_batched: Optional[bool] = None, retain_ablated_graphs: bool = True) -> ArchGradients:
    """``dL_g / d alpha_g`` for every alpha group ``g`` on one architecture batch.

    ``mode='fast'``: one forward pass recording the cell inputs, one backward pass (alphas only) of
    ``L_CE + sum_g w01 L01_g`` (+ the constant ``w_abl * sum_i L_abl_i``), then marginal contributions by
    partial reruns under ``no_grad`` (after the backward pass, so the graph is already freed).

    ``mode='reference'``: the authors' cost structure, without their defects: marginal contributions from
    whole forward passes that keep their graphs, then one ``backward(retain_graph=True)`` per group with
    all gradients (weights included) computed and cleared in between.

    Gradients are returned multiplied by ``loss_scale`` (AMP) and not applied.  ``random_weights`` (or
    ``generator``) give the switched-off cells' mixing weights; ``mc_reduce`` averages the marginal
    contributions across ranks; ``mc_batched`` stacks the partial reruns (see :func:`marginal_contributions`).
    ``retain_ablated_graphs=False`` (reference mode only) frees each ablated pass's graph right after it: the
    same work, without the authors' memory peak (used to time the reference where it does not fit).
    """
    if loss not in LOSSES:
        raise ValueError(f'unknown loss {loss!r}; choose one of {LOSSES}')
    if mode not in ('fast', 'reference'):
        raise ValueError(f"mode must be 'fast' or 'reference', got {mode!r}")
    autocast = autocast or contextlib.nullcontext
    alphas = net.arch_parameters()
    need_mc = loss == 'ablation'
    if need_mc and random_weights is None:
        random_weights = random_mixing_weights(net, generator)
    weights = net.mixing_weights()
    states: Optional[List[torch.Tensor]] = [] if (need_mc and mode == 'fast') else None
    with autocast():
        logits = net(x, weights, states=states)
    ce = F.cross_entropy(upcast(logits), y)
    correct = int((logits.detach().argmax(1) == y).sum())
    l01 = [zero_one_loss(a) for a in alphas]
    finite = bool(torch.isfinite(ce))
    mc = abl = None
    grads: List[Optional[torch.Tensor]] = [None] * len(alphas)

    if mode == 'fast':
        if finite:
            objective = architecture_objective(ce, alphas, w01)
            grads = list(torch.autograd.grad(objective * loss_scale, alphas))
        if need_mc:
            if finite:
                with autocast():
                    mc = marginal_contributions(net, states, y, ce.detach(), random_weights,
                                                weights=[w.detach() for w in weights], batched=mc_batched)
            else:
                mc = torch.full((net.layers,), float('nan'), dtype=torch.float64, device=ce.device)
            if mc_reduce is not None:   # a collective: every rank calls it, finite or not
                mc = mc_reduce(mc)
        del states
    else:
        off_losses: List[torch.Tensor] = []
        if need_mc:
            if finite:
                with autocast():
                    mc, off_losses = marginal_contributions_full(net, x, y, ce.detach(), random_weights,
                                                                 weights=weights, keep_graph=True,
                                                                 return_losses=retain_ablated_graphs)
            else:
                mc = torch.full((net.layers,), float('nan'), dtype=torch.float64, device=ce.device)
            if mc_reduce is not None:
                mc = mc_reduce(mc)
        if finite:
            abl_ref = ablation_losses(mc) if mc is not None else None
            params = list(net.parameters())
            for k, alpha in enumerate(alphas):
                for p in params:
                    p.grad = None
                loss_k = ce + w01 * l01[k] + w_abl * _group_abl(net, abl_ref, k).to(ce.dtype)
                (loss_k * loss_scale).backward(retain_graph=True)
                grads[k] = alpha.grad.detach().clone()
            for p in params:
                p.grad = None
        del off_losses
    if mc is not None:
        abl = ablation_losses(mc)
    return ArchGradients(grads, float(ce.detach()), correct, int(y.numel()), [float(v.detach()) for v in l01],
                         mc, abl, finite and all(g is not None and bool(torch.isfinite(g).all()) for g in grads))


# ============================================================================ early stopping
def should_stop_early(distances: Sequence[float], epoch: int, patience: int = 5, tol: float = 1e-3,
                      start: int = 10) -> bool:
    """Paper Sec. 5.4 / SPEC section 6: stop once the distance to the baseline has changed by at most ``tol``
    for ``patience`` consecutive epochs, checked from (1-based) epoch ``start`` on, pre-training included.

    ``distances[e]`` is the distance after (0-based) epoch ``e``; ``epoch`` is the 0-based epoch just ended.
    """
    if epoch + 1 < start or len(distances) < patience + 1:
        return False
    recent = distances[-(patience + 1):]
    return all(abs(b - a) <= tol for a, b in zip(recent, recent[1:]))


# ============================================================================ checkpoint io
def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` into a temporary file beside ``path``, fsync, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    try:
        with open(tmp, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


def load_checkpoint(path: 'str | os.PathLike') -> Dict[str, Any]:
    """Read a search checkpoint (a run directory or the ``.pt`` file) and check its format."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f'no search checkpoint at {str(path)!r}')
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get('format') != CHECKPOINT_FORMAT:
        raise ValueError(f'{path} is not a ddarts-zoo search checkpoint')
    if ckpt.get('version') != CHECKPOINT_VERSION:
        raise ValueError(f'{path}: checkpoint version {ckpt.get("version")} is not supported '
                         f'(this code reads version {CHECKPOINT_VERSION})')
    return ckpt


def _rng_state(mc_gen: torch.Generator) -> Dict[str, Any]:
    np_state = np.random.get_state()
    return {
        'python': random.getstate(),
        'numpy': [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        'mc_generator': mc_gen.get_state(),
    }


def _set_rng_state(state: Dict[str, Any], mc_gen: torch.Generator) -> None:
    py = state['python']
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state['torch'])
    if state['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    mc_gen.set_state(state['mc_generator'])


# ============================================================================ the searcher
@dataclass
class SearchResult:
    run_dir: Optional[Path]
    genotypes: Dict[str, Genotype]
    history: List[Dict[str, Any]]
    stopped_early: bool
    epochs_completed: int


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def _fmt_gene(geno: Genotype) -> str:
    return geno.to_official()


class Searcher:
    """Runs (or resumes) one search.

    Args:
        cfg: the configuration (ignored when resuming: the checkpoint's own configuration is used).
        ctx: distributed context (default: :func:`init_distributed`).
        resume: a run directory or checkpoint to continue.
        distance_fn: ``f(genotype_a, genotype_b) -> float`` (default
            :func:`ddarts_zoo.distance.architecture_distance`, imported when first needed).
        step_callback: called as ``f(searcher, epoch, step)`` after every step (tests, tooling).
    """

    def __init__(self, cfg: Optional[SearchConfig] = None, *, ctx: Optional[DistContext] = None,
                 resume: Optional['str | os.PathLike'] = None,
                 distance_fn: Optional[Callable[[Genotype, Genotype], float]] = None,
                 step_callback: Optional[Callable[['Searcher', int, int], None]] = None) -> None:
        self.ckpt: Optional[Dict[str, Any]] = None
        if resume is not None:
            self.ckpt = load_checkpoint(resume)
            saved = SearchConfig.from_dict(self.ckpt['config'])
            if cfg is not None:
                changed = {k: v for k, v in cfg.to_dict().items()
                           if k in ('progress',) and v != saved.to_dict()[k]}
                for k, v in changed.items():  # cosmetic options may change on resume
                    setattr(saved, k, v)
            cfg = saved
            resume_dir = Path(resume)
            self.run_dir: Optional[Path] = resume_dir if resume_dir.is_dir() else resume_dir.parent
        else:
            cfg = cfg or SearchConfig()
            self.run_dir = None
        cfg.check()
        self.cfg = cfg
        self.ctx = ctx or init_distributed(cfg.device)
        self.distance_fn = distance_fn
        self.step_callback = step_callback
        self.written: List[str] = []
        self._tb = None
        self._setup()

    # ------------------------------------------------------------------ setup
    def _make_run_dir(self) -> Path:
        cfg = self.cfg
        if self.run_dir is not None:
            return self.run_dir
        name = cfg.name
        if name is None:
            stamp = time.strftime('%Y%m%d-%H%M%S')
            tag = cfg.preset or ('dartopti-' + Path(cfg.baseline).stem if cfg.baseline else 'search')
            name = f'{stamp}-{tag}-{cfg.dataset}-{cfg.loss}-s{cfg.seed}'
        path = Path(cfg.out) / name
        error = None
        if self.ctx.is_writer:
            if (path / CHECKPOINT_NAME).exists():
                error = (f'{path} already holds a search; continue it with --resume {path} or choose another '
                         f'--name')
            else:
                path.mkdir(parents=True, exist_ok=True)
        if self.ctx.enabled:   # every rank learns rank 0's directory (timestamps differ) or its error
            box = [str(path), error]
            dist.broadcast_object_list(box, 0)
            path, error = Path(box[0]), box[1]
        if error:
            raise FileExistsError(error)
        return path

    def _setup(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        if cfg.threads is not None or ctx.device.type == 'cpu':
            # The supernet runs thousands of tiny ops per step: intra-op threads gain little on CPU, and
            # OpenMP spin-waiting makes 2 threads 10-50x slower on a contended machine.  One per process.
            torch.set_num_threads(cfg.threads or 1)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
            if torch.backends.cudnn.is_available():
                torch.backends.cudnn.benchmark = False
        _seed_everything(cfg.seed)
        self.weight_ds, self.arch_ds, self.info = build_search_data(cfg)
        self.baseline = _load_baseline(cfg.baseline) if cfg.baseline else None
        self.net = build_supernet(cfg, self.info.num_classes, self.info.in_chans).to(ctx.device)
        _broadcast_module_(self.net, ctx)
        self.agents = build_agents(self.net, cfg.arch_lr, cfg.arch_betas, cfg.arch_weight_decay, cfg.epochs,
                                   cfg.arch_lr_min)
        self.w_params = self.net.weight_parameters()
        self.w_opt = torch.optim.SGD(self.w_params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self.w_sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_opt, T_max=max(cfg.total_epochs, 1),
                                                                  eta_min=cfg.lr_min)
        cuda_amp = cfg.amp and ctx.device.type == 'cuda'
        self.w_scaler = torch.amp.GradScaler('cuda', enabled=cuda_amp)
        self.a_scaler = torch.amp.GradScaler('cuda', enabled=cuda_amp)
        self.mc_gen = torch.Generator(device=ctx.device).manual_seed(cfg.seed + 7_919)
        # per-rank streams for data augmentation / workers; the model init above is identical on all ranks
        _seed_everything(cfg.seed + 1_000 * ctx.rank)
        self.w_sampler = EpochShardSampler(len(self.weight_ds), cfg.seed * 2 + 1, ctx.rank, ctx.world_size)
        self.a_sampler = EpochShardSampler(len(self.arch_ds), cfg.seed * 2 + 2, ctx.rank, ctx.world_size)
        for label, sampler in (('weight', self.w_sampler), ('architecture', self.a_sampler)):
            if len(sampler) < cfg.batch_size:
                raise ValueError(f'the {label} split has {len(sampler)} images per rank, fewer than --batch-size '
                                 f'{cfg.batch_size}')
        loader_kw = dict(batch_size=cfg.batch_size, drop_last=True, num_workers=cfg.workers,
                         pin_memory=ctx.device.type == 'cuda')
        self.w_loader = DataLoader(self.weight_ds, sampler=self.w_sampler, **loader_kw)
        self.a_loader = DataLoader(self.arch_ds, sampler=self.a_sampler, **loader_kw)
        self.eval_loader = DataLoader(self.arch_ds, sampler=EpochShardSampler(len(self.arch_ds), cfg.seed * 2 + 3,
                                      ctx.rank, ctx.world_size), **dict(loader_kw, drop_last=False))
        self.history: List[Dict[str, Any]] = []
        self.start_epoch = 0
        self.global_step = 0
        self.stopped_early = False
        self.nonfinite_skipped = 0
        self.consecutive_nonfinite = 0
        if self.ckpt is not None:
            self._load_state(self.ckpt)
        self.run_dir = self._make_run_dir()

    def _load_state(self, ckpt: Dict[str, Any]) -> None:
        self.net.load_state_dict(ckpt['model'])
        self.w_opt.load_state_dict(ckpt['weight_optimizer'])
        self.w_sched.load_state_dict(ckpt['weight_scheduler'])
        if len(ckpt['agents']) != len(self.agents):
            raise ValueError(f'checkpoint has {len(ckpt["agents"])} alpha groups, the supernet {len(self.agents)}')
        for agent, state in zip(self.agents, ckpt['agents']):
            agent.optimizer.load_state_dict(state['optimizer'])
            agent.scheduler.load_state_dict(state['scheduler'])
        self.w_scaler.load_state_dict(ckpt['scalers']['weight'])
        self.a_scaler.load_state_dict(ckpt['scalers']['arch'])
        self.history = list(ckpt['history'])
        self.start_epoch = int(ckpt['epoch'])
        self.global_step = int(ckpt['global_step'])
        self.stopped_early = bool(ckpt.get('stopped_early', False))
        self.nonfinite_skipped = int(ckpt.get('nonfinite_skipped', 0))
        rng = ckpt['rng']
        if len(rng) != self.ctx.world_size:
            raise ValueError(f'checkpoint was written by {len(rng)} rank(s); resume it with the same number '
                             f'(got {self.ctx.world_size}) to continue exactly')
        _set_rng_state(rng[self.ctx.rank], self.mc_gen)

    # ------------------------------------------------------------------ io helpers (rank 0 only)
    def _write_text(self, name: str, text: str) -> None:
        if not self.ctx.is_writer:
            return
        path = self.run_dir / name
        atomic_write_text(path, text)
        self.written.append(str(path))

    def _save_genotype(self, geno: Genotype, name: str) -> None:
        if not self.ctx.is_writer:
            return
        path = self.run_dir / name
        geno.save(path)
        self.written.append(str(path))

    def _setup_logging(self) -> None:
        if not self.ctx.is_writer:
            return
        log.setLevel(logging.INFO)
        path = str(self.run_dir / 'search.log')
        if not any(getattr(h, 'baseFilename', None) == os.path.abspath(path) for h in log.handlers):
            fh = logging.FileHandler(path, encoding='utf-8')
            fh.setFormatter(logging.Formatter('%(asctime)s %(message)s', '%Y-%m-%d %H:%M:%S'))
            log.addHandler(fh)
            self.written.append(path)
        if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
                   for h in log.handlers):
            sh = logging.StreamHandler(sys.stdout)
            sh.setFormatter(logging.Formatter('%(message)s'))
            log.addHandler(sh)
        log.propagate = False
        if self.cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(str(self.run_dir / 'tb'), purge_step=self.global_step or None)
            self.written.append(str(self.run_dir / 'tb'))

    def _close_logging(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        for h in list(log.handlers):
            if isinstance(h, logging.FileHandler):
                h.close()
                log.removeHandler(h)

    def _info(self, msg: str) -> None:
        if self.ctx.is_writer:
            log.info(msg)

    def _scalar(self, tag: str, value: float, step: int) -> None:
        if self._tb is not None:
            self._tb.add_scalar(tag, value, step)

    # ------------------------------------------------------------------ steps
    def _autocast(self):
        if not self.cfg.amp:
            return contextlib.nullcontext()
        if self.ctx.device.type == 'cuda':
            return torch.autocast('cuda', dtype=torch.float16)
        return torch.autocast('cpu', dtype=torch.bfloat16)

    def _handle_nonfinite(self, what: str, epoch: int, step: int) -> None:
        self.nonfinite_skipped += 1
        self.consecutive_nonfinite += 1
        msg = (f'non-finite {what} at epoch {epoch + 1}, step {step + 1} (global step {self.global_step}); '
               f'the update was skipped')
        hint = ('lower --lr / --arch-lr, check the data for NaNs' + (', or run without --amp' if self.cfg.amp else ''))
        if self.cfg.nonfinite == 'error':
            raise NonFiniteLossError(f'{msg.replace("; the update was skipped", "")}: {hint} '
                                     f'(--nonfinite skip skips such steps)')
        if self.consecutive_nonfinite > self.cfg.max_nonfinite:
            raise NonFiniteLossError(f'{msg}; {self.consecutive_nonfinite} consecutive non-finite steps exceed '
                                     f'--max-nonfinite {self.cfg.max_nonfinite}: {hint}')
        if self.ctx.is_writer:
            log.warning(f'WARNING: {msg}')

    def _mc_reduce(self, mc: torch.Tensor) -> torch.Tensor:
        if not self.ctx.enabled:
            return mc
        t = mc.clone()
        dist.all_reduce(t)
        return t / self.ctx.world_size

    def arch_step(self, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int, mode: str = 'fast'
                  ) -> Optional[ArchGradients]:
        """One architecture update of every cell; returns the statistics (None when skipped)."""
        cfg = self.cfg
        scaler = self.a_scaler
        scale = float(scaler.get_scale()) if scaler.is_enabled() else 1.0
        res = architecture_gradients(self.net, x, y, loss=cfg.loss, w01=cfg.w01, w_abl=cfg.w_abl,
                                     generator=self.mc_gen, mode=mode, autocast=self._autocast,
                                     loss_scale=scale, mc_reduce=self._mc_reduce, mc_batched=cfg.mc_batched)
        if _any_rank(not math.isfinite(res.ce), self.ctx):
            self._handle_nonfinite('architecture loss (cross entropy)', epoch, step)
            return None
        for agent, g in zip(self.agents, res.grads):
            agent.alpha.grad = g
        _allreduce_mean_([a.alpha.grad for a in self.agents], self.ctx)
        if scaler.is_enabled():
            for agent in self.agents:
                scaler.unscale_(agent.optimizer)
        bad = _any_rank(not all(bool(torch.isfinite(a.alpha.grad).all()) for a in self.agents), self.ctx)
        if bad:
            for agent in self.agents:
                agent.alpha.grad = None
            if scaler.is_enabled():
                scaler.update()  # overflow under fp16: lower the scale, as GradScaler does
                if self.ctx.is_writer:
                    log.warning(f'fp16 overflow in the alpha gradients at epoch {epoch + 1}, step {step + 1}: '
                                f'step skipped, loss scale lowered to {scaler.get_scale():g}')
                return None
            self._handle_nonfinite('alpha gradient', epoch, step)
            return None
        for agent in self.agents:
            if scaler.is_enabled():
                scaler.step(agent.optimizer)
            else:
                agent.optimizer.step()
            agent.alpha.grad = None
        if scaler.is_enabled():
            scaler.update()
        return res

    def weight_step(self, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int) -> Optional[Tuple[float, int]]:
        """One SGD update of the supernet weights with cross entropy; returns (loss, correct) or None."""
        cfg, scaler = self.cfg, self.w_scaler
        for p in self.w_params:
            p.grad = None
        with self._autocast():
            logits = self.net(x, self.net.mixing_weights(detach=True))
        loss = F.cross_entropy(upcast(logits), y)
        if _any_rank(not bool(torch.isfinite(loss)), self.ctx):
            self._handle_nonfinite('weight loss (cross entropy)', epoch, step)
            return None
        scaler.scale(loss).backward()
        grads = []
        for p in self.w_params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        _allreduce_mean_(grads, self.ctx)
        scaler.unscale_(self.w_opt)
        bad = _any_rank(not all(bool(torch.isfinite(g).all()) for g in grads), self.ctx)
        if bad and not scaler.is_enabled():
            for p in self.w_params:
                p.grad = None
            self._handle_nonfinite('weight gradient', epoch, step)
            return None
        if cfg.grad_clip and not bad:
            nn.utils.clip_grad_norm_(self.w_params, cfg.grad_clip)
        scaler.step(self.w_opt)   # skips the update on fp16 overflow
        scaler.update()
        return float(loss.detach()), int((logits.detach().argmax(1) == y).sum())

    # ------------------------------------------------------------------ evaluation / genotypes
    @torch.no_grad()
    def evaluate(self) -> Tuple[float, float]:
        """Cross entropy and accuracy of the supernet (eval mode) on the architecture split."""
        self.net.eval()
        tot = torch.zeros(3, dtype=torch.float64, device=self.ctx.device)
        for x, y in self.eval_loader:
            x, y = x.to(self.ctx.device, non_blocking=True), y.to(self.ctx.device, non_blocking=True)
            with self._autocast():
                logits = self.net(x, self.net.mixing_weights(detach=True))
            tot[0] += F.cross_entropy(upcast(logits), y, reduction='sum').double()
            tot[1] += (logits.argmax(1) == y).sum()
            tot[2] += y.numel()
        self.net.train()
        if self.ctx.enabled:
            dist.all_reduce(tot)
        n = max(float(tot[2]), 1.0)
        return float(tot[0]) / n, float(tot[1]) / n

    def _run_name(self) -> str:
        return self.run_dir.name if self.run_dir is not None else 'search'

    def genotypes(self, epochs_done: Optional[int] = None) -> Dict[str, Genotype]:
        """The current sparse and edge genotypes (and darts when ``--parse darts``)."""
        cfg = self.cfg
        meta = {
            'source': 'ddarts-zoo search/run.py', 'dataset': cfg.dataset, 'loss': cfg.loss,
            'w01': cfg.w01, 'w_abl': cfg.w_abl if cfg.loss == 'ablation' else None,
            'search_layers': self.net.layers, 'search_channels': cfg.channels,
            'search_reductions': list(self.net.reductions), 'op_names': list(self.net.op_names),
            'epochs': epochs_done, 'seed': cfg.seed, 'preset': cfg.preset, 'baseline': cfg.baseline,
        }
        methods = ['sparse', 'edge'] + (['darts'] if cfg.parse == 'darts' else [])
        import warnings
        out = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            for m in methods:
                out[m] = self.net.genotype(m, cfg.threshold, name=f'{self._run_name()}_{m}', meta=meta)
        self._empty_warnings = [str(w.message) for w in caught]
        return out

    def _distance(self, geno: Genotype) -> float:
        fn = self.distance_fn
        if fn is None:
            try:
                from ddarts_zoo.distance import architecture_distance as fn
            except ImportError as err:  # pragma: no cover - the module ships with ddarts_zoo
                raise RuntimeError(f'the distance to the baseline needs ddarts_zoo.distance ({err})') from None
            self.distance_fn = fn
        return float(fn(self.baseline, geno))

    # ------------------------------------------------------------------ checkpoint / logs
    def _gather_rng(self) -> List[Dict[str, Any]]:
        mine = _rng_state(self.mc_gen)
        if not self.ctx.enabled:
            return [mine]
        box: List[Any] = [None] * self.ctx.world_size
        dist.all_gather_object(box, mine)
        return box

    def save_checkpoint(self, epochs_done: int) -> None:
        rng = self._gather_rng()
        if not self.ctx.is_writer:
            return
        ckpt = {
            'format': CHECKPOINT_FORMAT, 'version': CHECKPOINT_VERSION, 'config': self.cfg.to_dict(),
            'supernet': self.net.config(), 'epoch': epochs_done, 'global_step': self.global_step,
            'model': self.net.state_dict(), 'weight_optimizer': self.w_opt.state_dict(),
            'weight_scheduler': self.w_sched.state_dict(),
            'agents': [{'optimizer': a.optimizer.state_dict(), 'scheduler': a.scheduler.state_dict()}
                       for a in self.agents],
            'scalers': {'weight': self.w_scaler.state_dict(), 'arch': self.a_scaler.state_dict()},
            'rng': rng, 'history': self.history, 'stopped_early': self.stopped_early,
            'nonfinite_skipped': self.nonfinite_skipped,
        }
        path = self.run_dir / CHECKPOINT_NAME
        atomic_torch_save(ckpt, path)
        self.written.append(str(path))

    def _write_logs(self) -> None:
        if not self.ctx.is_writer:
            return
        rows = [{k: v for k, v in h.items() if not isinstance(v, dict)} for h in self.history]
        flat = []
        for r in rows:
            f = {}
            for k, v in r.items():
                if v is None:
                    continue
                if isinstance(v, list):
                    for i, x in enumerate(v):
                        f[f'{k}_{i}'] = x
                else:
                    f[k] = v
            flat.append(f)
        cols: List[str] = []
        for f in flat:
            cols.extend(c for c in f if c not in cols)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols)
        w.writeheader()
        for f in flat:
            w.writerow({c: ('' if f.get(c) is None else f.get(c)) for c in cols})
        self._write_text('metrics.csv', buf.getvalue())
        self._write_text('epochs.jsonl', ''.join(json.dumps(h) + '\n' for h in self.history))

    # ------------------------------------------------------------------ main loop
    def _batches(self, epoch: int) -> Iterator[Tuple[Tuple[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]]:
        self.w_sampler.set_epoch(epoch)
        self.a_sampler.set_epoch(epoch)
        n = min(len(self.w_loader), len(self.a_loader))
        if self.cfg.max_steps_per_epoch:
            n = min(n, self.cfg.max_steps_per_epoch)
        for k, (wb, ab) in enumerate(zip(self.w_loader, self.a_loader)):
            if k >= n:
                break
            yield wb, ab

    def steps_per_epoch(self) -> int:
        n = min(len(self.w_loader), len(self.a_loader))
        return min(n, self.cfg.max_steps_per_epoch) if self.cfg.max_steps_per_epoch else n

    def train_epoch(self, epoch: int) -> Dict[str, Any]:
        cfg, dev = self.cfg, self.ctx.device
        searching = epoch >= cfg.pretrain
        self.net.train()
        n_cells, n_groups = self.net.layers, len(self.agents)
        acc = dict(w_loss=0.0, w_correct=0, w_count=0, a_ce=0.0, a_correct=0, a_count=0, a_steps=0,
                   cell_loss=np.zeros(n_cells), l01=np.zeros(n_groups), mc=np.zeros(n_cells), w_steps=0)
        steps = self.steps_per_epoch()
        bar = None
        if cfg.progress and self.ctx.is_writer:
            from tqdm import tqdm
            phase = 'search' if searching else 'pretrain'
            bar = tqdm(total=steps, desc=f'epoch {epoch + 1}/{cfg.total_epochs} ({phase})', leave=False,
                       dynamic_ncols=True, file=sys.stderr)
        t0 = time.time()
        for step, ((xw, yw), (xa, ya)) in enumerate(self._batches(epoch)):
            xw, yw = xw.to(dev, non_blocking=True), yw.to(dev, non_blocking=True)
            res = None
            if searching:
                xa, ya = xa.to(dev, non_blocking=True), ya.to(dev, non_blocking=True)
                res = self.arch_step(xa, ya, epoch, step)
                if res is not None:
                    acc['a_ce'] += res.ce
                    acc['a_correct'] += res.correct
                    acc['a_count'] += res.count
                    acc['a_steps'] += 1
                    acc['cell_loss'] += np.asarray(res.cell_losses(self.net, cfg.w01, cfg.w_abl))
                    acc['l01'] += np.asarray(res.l01)
                    if res.mc is not None:
                        acc['mc'] += res.mc.cpu().numpy()
                    self._scalar('arch/ce', res.ce, self.global_step)
                    self._scalar('arch/acc', res.correct / max(res.count, 1), self.global_step)
                    if res.mc is not None:
                        for i, v in enumerate(res.mc.tolist()):
                            self._scalar(f'mc/cell_{i}', v, self.global_step)
            wres = self.weight_step(xw, yw, epoch, step)
            if wres is not None:
                acc['w_loss'] += wres[0]
                acc['w_correct'] += wres[1]
                acc['w_count'] += int(yw.numel())
                acc['w_steps'] += 1
                self._scalar('weights/loss', wres[0], self.global_step)
                self._scalar('weights/acc', wres[1] / yw.numel(), self.global_step)
            if (res is not None or not searching) and wres is not None:
                self.consecutive_nonfinite = 0
            self.global_step += 1
            if bar is not None:
                bar.update(1)
                if acc['w_steps']:
                    bar.set_postfix(loss=f'{acc["w_loss"] / acc["w_steps"]:.3f}',
                                    acc=f'{acc["w_correct"] / max(acc["w_count"], 1):.3f}')
            if self.step_callback is not None:
                self.step_callback(self, epoch, step)
            if cfg.step_delay:
                time.sleep(cfg.step_delay)
        if bar is not None:
            bar.close()
        a_steps, w_steps = max(acc['a_steps'], 1), max(acc['w_steps'], 1)
        rec: Dict[str, Any] = {
            'epoch': epoch + 1, 'phase': 'search' if searching else 'pretrain', 'steps': steps,
            'lr': self.w_opt.param_groups[0]['lr'],
            'arch_lr': self.agents[0].optimizer.param_groups[0]['lr'] if searching else None,
            'train_loss': acc['w_loss'] / w_steps, 'train_acc': acc['w_correct'] / max(acc['w_count'], 1),
            'arch_ce': acc['a_ce'] / a_steps if searching else None,
            'arch_acc': acc['a_correct'] / max(acc['a_count'], 1) if searching else None,
            'cell_loss': (acc['cell_loss'] / a_steps).tolist() if searching else None,
            'l01': (acc['l01'] / a_steps).tolist() if searching else None,
            'mc': (acc['mc'] / a_steps).tolist() if searching and cfg.loss == 'ablation' else None,
            'time_s': time.time() - t0,
        }
        return rec

    def run(self) -> SearchResult:
        """Search until the last epoch (or an early stop); write genotypes, logs and plots."""
        self._setup_logging()
        try:
            return self._run()
        finally:
            self._close_logging()

    def _run(self) -> SearchResult:
        cfg = self.cfg
        if self.ckpt is None:
            self._write_text('config.json', json.dumps(self.cfg.to_dict(), indent=1) + '\n')
            self._info(f'search run {self.run_dir}: {self.net.layers} cells {list(self.net.cell_groups)}, '
                       f'reductions {list(self.net.reductions)}, C={cfg.channels}, {len(self.net.op_names)} ops, '
                       f'{sum(p.numel() for p in self.w_params) / 1e6:.3f}M weights, {len(self.agents)} alpha '
                       f'group(s), {self.steps_per_epoch()} steps/epoch x {cfg.total_epochs} epochs, '
                       f'world size {self.ctx.world_size}, device {self.ctx.device}')
        else:
            self._info(f'resuming {self.run_dir} after epoch {self.start_epoch} (global step {self.global_step})')
        distances = [h['distance'] for h in self.history if h.get('distance') is not None]
        epoch = self.start_epoch
        while epoch < cfg.total_epochs and not self.stopped_early:
            rec = self.train_epoch(epoch)
            # BN running statistics follow each rank's shard: take rank 0's (as DDP's broadcast_buffers does),
            # so that evaluation and the checkpoint (hence a resume) see one state
            _broadcast_module_(self.net, self.ctx, buffers_only=True)
            searching = epoch >= cfg.pretrain
            self.w_sched.step()
            if searching:
                for agent in self.agents:
                    agent.scheduler.step()
            if cfg.eval:
                rec['valid_loss'], rec['valid_acc'] = self.evaluate()
            rec['entropy'] = [float(alpha_entropy(self.net.alpha_of_cell(i))) for i in range(self.net.layers)]
            genos = self.genotypes(epoch + 1)
            rec['genotypes'] = {k: g.to_dict() for k, g in genos.items()}
            rec['empty_cells'] = {k: g.meta.get('empty_cells', []) for k, g in genos.items()}
            if self.baseline is not None:
                rec['distance'] = self._distance(genos['edge'])
                distances.append(rec['distance'])
                self._scalar('distance', rec['distance'], epoch + 1)
            rec['nonfinite_skipped'] = self.nonfinite_skipped
            self.history.append(rec)
            if (cfg.early_stop_enabled and self.baseline is not None
                    and should_stop_early(distances, epoch, cfg.early_stop_patience, cfg.early_stop_tol,
                                          cfg.early_stop_from)):
                self.stopped_early = True
                rec['early_stop'] = True
            self._log_epoch(rec, genos)
            self.save_checkpoint(epoch + 1)
            self._write_logs()
            epoch += 1
            if self.stopped_early:
                self._info(f'early stop after epoch {epoch}: the distance to the baseline changed by <= '
                           f'{cfg.early_stop_tol} for {cfg.early_stop_patience} consecutive epochs')
        return self._finish(epoch)

    def _log_epoch(self, rec: Dict[str, Any], genos: Dict[str, Genotype]) -> None:
        if not self.ctx.is_writer:
            return
        e = rec['epoch']
        parts = [f'epoch {e}/{self.cfg.total_epochs} [{rec["phase"]}] {rec["time_s"]:.1f}s',
                 f'train loss {rec["train_loss"]:.4f} acc {rec["train_acc"]:.3f}']
        if rec['arch_ce'] is not None:
            parts.append(f'arch ce {rec["arch_ce"]:.4f} acc {rec["arch_acc"]:.3f}')
        if rec.get('valid_acc') is not None:
            parts.append(f'valid loss {rec["valid_loss"]:.4f} acc {rec["valid_acc"]:.3f}')
        if rec.get('distance') is not None:
            parts.append(f'distance {rec["distance"]:.4f}')
        log.info(' | '.join(parts))
        if rec.get('mc') is not None:
            log.info('  marginal contributions: ' + ' '.join(f'{v:+.4f}' for v in rec['mc']))
        log.info('  alpha entropy: ' + ' '.join(f'{v:.3f}' for v in rec['entropy']))
        for k, g in genos.items():
            log.info(f'  genotype ({k}): {_fmt_gene(g)}')
        for msg in getattr(self, '_empty_warnings', []):
            log.info(f'  note: {msg}')
        self._scalar('train/loss', rec['train_loss'], e)
        self._scalar('train/acc', rec['train_acc'], e)
        if rec.get('valid_acc') is not None:
            self._scalar('valid/acc', rec['valid_acc'], e)
            self._scalar('valid/loss', rec['valid_loss'], e)
        for i, v in enumerate(rec['entropy']):
            self._scalar(f'entropy/cell_{i}', v, e)

    def _finish(self, epochs_done: int) -> SearchResult:
        genos = self.genotypes(epochs_done)
        if self.baseline is not None:
            for g in genos.values():
                g.meta['distance_to_baseline'] = self._distance(genos['edge'])
        for k, g in genos.items():
            self._save_genotype(g, f'genotype_{k}.json')
        primary = genos[self.cfg.parse]
        self._save_genotype(primary, 'genotype.json')
        if self.cfg.derive_layers and self.cfg.derive_layers > primary.num_cells:
            try:
                big = primary.expand(self.cfg.derive_layers)
                self._save_genotype(big, f'genotype_{self.cfg.parse}_l{self.cfg.derive_layers}.json')
                genos[f'{self.cfg.parse}_l{self.cfg.derive_layers}'] = big
            except Exception as err:  # Algorithm 1 refuses > 2 reductions: say so, keep the search result
                self._info(f'could not derive a {self.cfg.derive_layers}-cell genotype: {err}')
        if self.cfg.plots and self.ctx.is_writer:
            try:
                from .plots import plot_run
                self.written.extend(plot_run(self.run_dir, self.history, self.net))
            except Exception as err:  # plotting must never lose a finished search
                self._info(f'plotting failed: {err!r}')
        if self.ctx.enabled:
            dist.barrier()
        return SearchResult(self.run_dir, genos, self.history, self.stopped_early, epochs_done)
