"""``TrainConfig``: every knob of final-network training (``ddarts-zoo train``), its checks and its network.

Defaults are the paper's final-architecture recipe (Sec. 5.1, following DARTS): SGD lr 0.025, momentum 0.9,
weight decay 3e-4, cosine schedule to 0, auxiliary head weight 0.4, cutout 16, AutoAugment, drop-path 0.2
ramped linearly from 0, gradient clipping at norm 5; ImageNet adds label smoothing 0.1.  Options left at
``None`` take the dataset's value from :data:`DATASET_DEFAULTS` in :meth:`TrainConfig.resolved`.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from .errors import UserError

if TYPE_CHECKING:
    import torch

    from .data import DatasetInfo

__all__ = ['TrainConfig', 'TrainConfigError', 'DATASET_DEFAULTS', 'RESUME_AUTO', 'RESUME_LAST',
           'CHECKPOINT_NAME']

CHECKPOINT_NAME = 'checkpoint.pth'
RESUME_AUTO = 'auto'
"""``--resume auto``: continue ``OUT/checkpoint.pth`` when it exists, else start."""
RESUME_LAST = 'last'
"""``--resume`` / ``--resume last``: continue ``OUT/checkpoint.pth``, which must exist."""

DATASET_DEFAULTS: Dict[str, Dict[str, Any]] = {
    'digits': dict(batch_size=16, epochs=8, cutout=16, autoaugment=False, label_smoothing=0.0, workers=0),
    'cifar10': dict(batch_size=128, epochs=600, cutout=16, autoaugment=True, label_smoothing=0.0, workers=4),
    'cifar100': dict(batch_size=128, epochs=600, cutout=16, autoaugment=True, label_smoothing=0.0, workers=4),
    'imagenet': dict(batch_size=96, epochs=250, cutout=0, autoaugment=True, label_smoothing=0.1, workers=8),
    'folder': dict(batch_size=64, epochs=100, cutout=0, autoaugment=False, label_smoothing=0.0, workers=2),
}
"""Dataset-dependent defaults of the recipe (digits: 8x8 grey digits, so no AutoAugment; ImageNet: no cutout;
an image folder: unknown images, so neither cutout nor AutoAugment unless asked for)."""


class TrainConfigError(UserError):
    """An option of ``ddarts-zoo train`` out of range or inconsistent; the message names the flag."""


def _flag(name: str) -> str:
    return '--' + name.replace('_', '-')


@dataclass
class TrainConfig:
    """Every option of ``ddarts-zoo train`` (field names are the flags' names with ``_`` for ``-``)."""

    # model: a registered timm model, or a genotype built with ddarts_genotype(_cifar)
    model: Optional[str] = None
    genotype: Optional[str] = None
    model_args: Dict[str, Any] = field(default_factory=dict)
    init_channels: Optional[int] = None
    layers: Optional[int] = None
    # data
    dataset: str = 'digits'
    data: Optional[str] = None
    workers: Optional[int] = None
    cutout: Optional[int] = None
    autoaugment: Optional[bool] = None
    train_subset: Optional[float] = None   # >= 1: that many training images; in (0, 1): that fraction
    image_size: Optional[int] = None       # digits / folder only (default: the dataset's)
    # recipe
    epochs: Optional[int] = None
    batch_size: Optional[int] = None       # global: each of N processes takes batch_size / N
    lr: float = 0.025
    min_lr: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    aux_weight: float = 0.4
    drop_path: float = 0.2
    grad_clip: float = 5.0
    label_smoothing: Optional[float] = None
    amp: bool = False
    channels_last: Optional[bool] = None   # None: on, except for AMP on a CPU (see for_device)
    # run
    out: str = 'runs/train'
    resume: Optional[str] = None           # None, RESUME_AUTO, RESUME_LAST or a checkpoint path
    seed: int = 0
    device: Optional[str] = None
    threads: Optional[int] = None
    max_steps: Optional[int] = None
    stop_after: Optional[int] = None
    eval_interval: int = 1
    progress: bool = True
    dist_timeout: float = 600.0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> 'TrainConfig':
        """The configuration of a parsed command line (other attributes are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in vars(args).items() if k in known})

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> 'TrainConfig':
        """The inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise TrainConfigError(f'unknown training option(s): {", ".join(unknown)}')
        return cls(**data)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def resolved(self) -> 'TrainConfig':
        """A copy with the dataset's defaults filled in (``--model`` defaults to ``ddarts_dd1_cifar``)."""
        if self.dataset not in DATASET_DEFAULTS:
            raise TrainConfigError(f'--dataset {self.dataset!r}: choose one of {", ".join(DATASET_DEFAULTS)}')
        filled = {k: v for k, v in DATASET_DEFAULTS[self.dataset].items() if getattr(self, k) is None}
        if self.model is None and self.genotype is None:
            filled['model'] = 'ddarts_dd1_cifar'
        return replace(self, **filled)

    def for_device(self, device: torch.device) -> 'TrainConfig':
        """A copy with ``channels_last`` decided for ``device`` when None: on, except for AMP on a CPU.

        There the bfloat16 channels-last backward of a dilated depthwise convolution (dil_conv_3x3 / 5x5)
        returns non-finite weight gradients in most steps (measured with torch 2.14, 32 px inputs).
        """
        if self.channels_last is not None:
            return self
        return replace(self, channels_last=not (self.amp and device.type == 'cpu'))

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.out) / CHECKPOINT_NAME

    def check(self) -> None:
        """Raise :class:`TrainConfigError` naming the first offending option (call it on :meth:`resolved`)."""
        if self.model is not None and self.genotype is not None:
            raise TrainConfigError('--model and --genotype exclude each other: give one')
        if not isinstance(self.model_args, dict):
            raise TrainConfigError(f'--model-args must be a JSON object, got {self.model_args!r}')
        if self.dataset != 'digits' and not self.data:
            raise TrainConfigError(f'--data is required for {self.dataset} (digits is the only embedded '
                                   f'dataset)')
        if self.image_size is not None and self.dataset not in ('digits', 'folder'):
            raise TrainConfigError(f'--image-size applies to digits and folder; {self.dataset} has its '
                                   f"recipe's fixed input size")
        self._check_ranges()
        from .utils.dist import check_device
        check_device(self.device)
        if self.model is not None:
            import timm
            if not timm.is_model(self.model):
                raise TrainConfigError(f'--model {self.model!r}: not a registered timm model '
                                       f'(`ddarts-zoo info` lists the D-DARTS ones)')

    def _check_ranges(self) -> None:
        at_least = dict(epochs=1, batch_size=1, init_channels=1, layers=1, threads=1, max_steps=1,
                        stop_after=1, workers=0, cutout=0, eval_interval=0, image_size=1)
        for name, low in at_least.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise TrainConfigError(f'{_flag(name)} must be >= {low}, got {value}')
        below_one = dict(momentum=self.momentum, drop_path=self.drop_path,
                         label_smoothing=self.label_smoothing or 0.0)
        for name, value in below_one.items():
            if not 0.0 <= value < 1.0:
                raise TrainConfigError(f'{_flag(name)} must be in [0, 1), got {value}')
        for name in ('lr', 'dist_timeout'):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise TrainConfigError(f'{_flag(name)} must be a positive number, got {getattr(self, name)}')
        for name in ('min_lr', 'weight_decay', 'aux_weight', 'grad_clip'):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise TrainConfigError(f'{_flag(name)} must be >= 0, got {getattr(self, name)}')
        if self.min_lr > self.lr:
            raise TrainConfigError(f'--min-lr {self.min_lr} is above --lr {self.lr}')
        subset = self.train_subset
        if subset is not None and not (0 < subset < 1 or (subset >= 1 and float(subset).is_integer())):
            raise TrainConfigError(f'--train-subset must be a fraction in (0, 1) or a whole number of '
                                   f'images, got {subset}')

    def model_spec(self, info: 'DatasetInfo') -> Tuple[str, Dict[str, Any]]:
        """(timm model name, JSON-serialisable model arguments) of the network to train on ``info``'s data.

        A genotype is built with the CIFAR stem up to 64 px inputs, with the ImageNet stem above.
        """
        model_args: Dict[str, Any] = dict(num_classes=info.num_classes, in_chans=info.in_chans)
        if self.genotype is not None:
            from .genotypes import load_genotype
            name = 'ddarts_genotype' if info.image_size > 64 else 'ddarts_genotype_cifar'
            model_args['genotype'] = load_genotype(self.genotype).to_dict()
        else:
            assert self.model is not None, 'call model_spec() on a resolved() configuration'
            name = self.model
        model_args.update(self.model_args)
        if self.init_channels is not None:  # the dedicated flags win over --model-args
            model_args['init_channels'] = self.init_channels
        if self.layers is not None:
            model_args['layers'] = self.layers
        return name, model_args
