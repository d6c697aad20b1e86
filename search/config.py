"""``SearchConfig``: every knob of a search, its checks, and the supernet it describes.

Defaults are the paper's search hyperparameters (Sec. 5.1: SGD 0.005 -> 0.001, momentum 0.9, weight decay
3e-4, clip 5; per-cell Adam 3e-3, betas (0.9, 0.999), weight decay 1e-3, cosine to 1e-3; Sec. 5.2.1:
``w01 = 7``, ``w_abl = 0.5``; threshold 0.85; 8 cells of 4 nodes, 50 epochs).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Optional, Tuple

from ddarts_zoo.errors import UserError

from .losses import LOSSES
from .mixing import MIXINGS
from .supernet import CELL_MODES, PARSE_METHODS, STEM_TYPES, SuperNet, default_reductions, resolve_op_names, \
    shared_cell_groups

__all__ = ['SearchConfig', 'build_supernet']


@dataclass
class SearchConfig:
    """Every option of ``python search/run.py`` (the ``quick`` preset of :mod:`search.presets` is its default).

    With a ``baseline`` (DARTOpti) the supernet takes the baseline's cells, reductions and node count:
    ``layers`` and ``steps`` are not used, and ``multiplier`` is capped at the baseline's node count.
    ``multiplier=None`` concatenates the last 4 nodes, or all of them when a cell has fewer (paper: 4 of 4).
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
    multiplier: Optional[int] = None
    stem_multiplier: int = 3
    stem: Optional[str] = None
    cells: str = 'individual'   # 'individual': an alpha per cell (D-DARTS); 'shared': per cell type (DARTS)
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
    mixing: str = 'sigmoid'     # 'sigmoid' (D-DARTS, FairDARTS) or 'softmax' over the ops (DARTS)
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
    dist_timeout: float = 600.0   # seconds a collective may wait for the other ranks (torchrun)

    def __post_init__(self) -> None:
        self.arch_betas = tuple(self.arch_betas)  # type: ignore[assignment]

    @property
    def op_set(self) -> str:
        return self.ops or ('dartopti' if self.baseline is not None else 'darts')

    @property
    def uses_baseline(self) -> bool:
        return self.baseline is not None

    @property
    def cell_multiplier(self) -> int:
        """The nodes concatenated as a cell's output (``multiplier``, default 4, at most ``steps``)."""
        return self.multiplier if self.multiplier is not None else min(4, self.steps)

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
            raise UserError(f'unknown search option(s): {", ".join(unknown)}')
        data = dict(data)
        if data.get('multiplier') == 4 and data.get('steps', 4) < 4:  # saved before multiplier=None: same net
            data['multiplier'] = None
        return cls(**data)

    def check(self) -> None:
        """Raise :class:`UserError` naming the offending option."""
        from ddarts_zoo.data import DATASET_NAMES
        if self.dataset not in DATASET_NAMES:
            raise UserError(f'--dataset {self.dataset!r}: choose one of {", ".join(DATASET_NAMES)}')
        if self.dataset == 'folder' and not self.data:
            raise UserError('--dataset folder needs --data ROOT (ROOT/train/<class>/<image>)')
        self._check_method()
        if self.stem is not None and self.stem not in STEM_TYPES:
            raise UserError(f'--stem {self.stem!r}: choose one of {", ".join(STEM_TYPES)}')
        if self.amp_dtype is not None and self.amp_dtype not in ('float16', 'bfloat16'):
            raise UserError(f"--amp-dtype {self.amp_dtype!r}: choose 'float16' or 'bfloat16'")
        if self.nonfinite not in ('skip', 'error'):
            raise UserError(f"--nonfinite {self.nonfinite!r}: choose 'skip' or 'error'")
        for name in ('layers', 'channels', 'steps', 'multiplier', 'stem_multiplier', 'batch_size', 'image_size'):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f'--{name.replace("_", "-")} must be >= 1, got {getattr(self, name)}')
        if self.multiplier is not None and self.baseline is None and self.multiplier > self.steps:
            raise UserError(f'--multiplier {self.multiplier}: a cell concatenates its last MULTIPLIER nodes, '
                            f'so it must be <= --steps ({self.steps})')
        self._check_device()
        if self.threads is not None and self.threads < 1:
            raise UserError(f'--threads must be >= 1, got {self.threads}')
        if not self.dist_timeout > 0:
            raise UserError(f'--dist-timeout must be > 0 seconds, got {self.dist_timeout}')
        for name in ('epochs', 'pretrain_epochs', 'workers', 'max_nonfinite'):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise UserError(f'--{name.replace("_", "-")} must be >= 0, got {getattr(self, name)}')
        if not 0.0 < self.subset <= 1.0:
            raise UserError(f'--subset must be in (0, 1], got {self.subset}')
        if not 0.0 <= self.threshold <= 1.0:
            raise UserError(f'--threshold must be in [0, 1] (a sigmoid weight), got {self.threshold}')
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise UserError(f'--max-steps-per-epoch must be >= 1, got {self.max_steps_per_epoch}')
        if self.channels % 2 and (self.stem == 'imagenet' or (self.stem is None and self.dataset == 'imagenet')):
            raise UserError(f'--channels must be even with the ImageNet stem (FactorizedReduce halves it), '
                            f'got {self.channels}')
        resolve_op_names(self.op_set)
        if self.baseline is not None:
            from ddarts_zoo import genotypes as shipped
            if self.baseline not in shipped.names() and not os.path.exists(self.baseline):
                raise UserError(f'--baseline {self.baseline!r}: not a shipped genotype '
                                f'(resnet18, resnet50, xception, ...) nor a file')

    def _check_method(self) -> None:
        """The search method: loss, mixing, cell sharing, parsing, and what CUDA graphs allow."""
        for flag, value, choices in (('--loss', self.loss, LOSSES), ('--mixing', self.mixing, MIXINGS),
                                     ('--cells', self.cells, CELL_MODES),
                                     ('--parse', self.parse, PARSE_METHODS)):
            if value not in choices:
                raise UserError(f'{flag} {value!r}: choose one of {", ".join(choices)}')
        mixing = MIXINGS[self.mixing]
        if self.parse not in mixing.parse_choices:
            raise UserError(f'--parse {self.parse} does not fit --mixing {self.mixing} (its weights sum to 1 '
                            f'over the ops, no threshold applies): use --parse '
                            f'{" or ".join(mixing.parse_choices)}')
        if self.cells == 'shared' and self.baseline is not None:
            raise UserError('--cells shared cannot be combined with --baseline: the baseline\'s identical '
                            'cells already share their alphas')
        graph_losses = [name for name, loss in LOSSES.items() if loss.graph_capture]
        if self.cuda_graphs and (self.device.startswith('cpu') or self.loss not in graph_losses):
            raise UserError(f'--cuda-graphs needs a CUDA device and --loss {" or ".join(graph_losses)} (got '
                            f'--device {self.device}, --loss {self.loss})')

    def _check_device(self) -> None:
        from ddarts_zoo.utils.dist import check_device
        check_device(self.device)


def build_supernet(cfg: SearchConfig, num_classes: int, in_chans: int) -> SuperNet:
    """The supernet of ``cfg``: DARTS-style, or DARTOpti from ``cfg.baseline`` (12-op space by default)."""
    stem = cfg.stem or ('imagenet' if cfg.dataset == 'imagenet' else 'cifar')
    if cfg.baseline is not None:
        from ddarts_zoo.genotypes import load_genotype
        return SuperNet.from_baseline(load_genotype(cfg.baseline), num_classes, in_chans, cfg.channels,
                                      op_names=cfg.op_set, multiplier=cfg.multiplier or 4, stem=stem,
                                      mixing=cfg.mixing)
    groups = shared_cell_groups(cfg.layers, default_reductions(cfg.layers)) if cfg.cells == 'shared' else None
    return SuperNet(num_classes, in_chans, cfg.channels, cfg.layers, cfg.steps, cfg.cell_multiplier,
                    cfg.stem_multiplier, cfg.op_set, stem=stem, cell_groups=groups, mixing=cfg.mixing)
