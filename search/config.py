"""``SearchConfig``: every knob of a search, its checks, and the supernet it describes.

Defaults are the paper's search hyperparameters (Sec. 5.1: SGD 0.005 -> 0.001, momentum 0.9, weight decay
3e-4, clip 5; per-cell Adam 3e-3, betas (0.9, 0.999), weight decay 1e-3, cosine to 1e-3; Sec. 5.2.1:
``w01 = 7``, ``w_abl = 0.5``; threshold 0.85; 8 cells of 4 nodes, 50 epochs).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Optional, Tuple

from .losses import LOSSES
from .supernet import PARSE_METHODS, STEM_TYPES, SuperNet, resolve_op_names

__all__ = ['SearchConfig', 'build_supernet']


@dataclass
class SearchConfig:
    """Every option of ``python search/run.py`` (the ``quick`` preset of :mod:`search.presets` is its default).

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
    amp_dtype: Optional[str] = None   # 'float16' | 'bfloat16'; default: float16 on CUDA, bfloat16 on CPU
    cuda_graphs: bool = False
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
        """The inverse of :meth:`to_dict`; unknown keys are an error naming them."""
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
        if self.amp_dtype is not None and self.amp_dtype not in ('float16', 'bfloat16'):
            raise ValueError(f"--amp-dtype {self.amp_dtype!r}: choose 'float16' or 'bfloat16'")
        if self.cuda_graphs and (self.device.startswith('cpu') or self.loss not in ('fair', 'ablation')):
            raise ValueError(f'--cuda-graphs needs a CUDA device and --loss fair or ablation (got --device '
                             f'{self.device}, --loss {self.loss})')
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


def build_supernet(cfg: SearchConfig, num_classes: int, in_chans: int) -> SuperNet:
    """The supernet of ``cfg``: DARTS-style, or DARTOpti from ``cfg.baseline`` (12-op space by default)."""
    stem = cfg.stem or ('imagenet' if cfg.dataset == 'imagenet' else 'cifar')
    if cfg.baseline is not None:
        from ddarts_zoo.genotypes import load_genotype
        return SuperNet.from_baseline(load_genotype(cfg.baseline), num_classes, in_chans, cfg.channels,
                                      op_names=cfg.op_set, multiplier=cfg.multiplier, stem=stem)
    return SuperNet(num_classes, in_chans, cfg.channels, cfg.layers, cfg.steps, cfg.multiplier,
                    cfg.stem_multiplier, cfg.op_set, stem=stem)
