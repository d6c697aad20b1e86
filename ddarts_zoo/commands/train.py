"""``ddarts-zoo train``: train a derived D-DARTS network from scratch (the paper's final-architecture recipe).

Examples::

    ddarts-zoo train --model ddarts_dd1_cifar --dataset cifar10 --data ~/data/cifar --out runs/dd1
    ddarts-zoo train --genotype my_search/genotype.json --dataset digits --model-args '{"init_channels": 16}'
    torchrun --nproc_per_node 8 -m ddarts_zoo train --model ddarts_dd4 --dataset imagenet --data /data/imagenet --amp

Recipe (paper Sec. 5.1, following DARTS): SGD lr 0.025, momentum 0.9, weight decay 3e-4, cosine schedule to
0, batch 128 (CIFAR) / 96 (ImageNet), auxiliary head weight 0.4, cutout 16, AutoAugment, drop-path 0.2
ramped linearly from 0, gradient clipping at norm 5, label smoothing 0.1 on ImageNet.  Dataset-specific
defaults (each overridable by its flag): ``digits`` (8x8 grey digits, not natural images) gets neither
AutoAugment nor flips, batch 16 and 8 epochs; ``imagenet`` gets ``--cutout 0``.  ``--batch-size`` is the
*global* batch: with ``torchrun`` each of the N processes takes ``batch/N``.

Outputs in ``--out``: ``checkpoint.pth`` (written atomically after every epoch; ``--resume`` continues from
it), ``log.csv``, ``tb/`` (TensorBoard), ``args.json`` and, at the end, ``metrics.json`` (top-1 / top-5 on the
held-out split: digits' fixed 20 % test split, the CIFAR test set, ImageNet val).  Export the result with
``ddarts-zoo export OUT/checkpoint.pth --out DIR``.
"""
from __future__ import annotations

import argparse
from typing import Any, Dict

from .export import parse_json_object

DATASET_DEFAULTS: Dict[str, Dict[str, Any]] = {
    'digits': dict(batch_size=16, epochs=8, cutout=16, autoaugment=False, label_smoothing=0.0, workers=0),
    'cifar10': dict(batch_size=128, epochs=600, cutout=16, autoaugment=True, label_smoothing=0.0, workers=4),
    'cifar100': dict(batch_size=128, epochs=600, cutout=16, autoaugment=True, label_smoothing=0.0, workers=4),
    'imagenet': dict(batch_size=96, epochs=250, cutout=0, autoaugment=True, label_smoothing=0.1, workers=8),
}
"""Dataset-dependent defaults of the recipe (``None`` on the command line takes these)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = __doc__.split('\n\n', 1)[1]
    g = p.add_argument_group('model')
    src = g.add_mutually_exclusive_group()
    src.add_argument('--model', default=None,
                     help='registered timm model name (default ddarts_dd1_cifar when --genotype is not given)')
    src.add_argument('--genotype', default=None,
                     help='genotype JSON / authors\' text file or shipped name, built with ddarts_genotype_cifar '
                          '(or ddarts_genotype for imagenet)')
    g.add_argument('--model-args', type=parse_json_object, default={},
                   help='extra model keyword arguments as JSON, e.g. \'{"init_channels": 16}\'')
    g.add_argument('--init-channels', type=int, default=None, help='width C of the first cells')
    g.add_argument('--layers', type=int, default=None, help='number of cells (Algorithm 1 when larger)')
    g = p.add_argument_group('data')
    g.add_argument('--dataset', default='digits', choices=tuple(DATASET_DEFAULTS))
    g.add_argument('--data', default=None, help='dataset root (not needed for digits)')
    g.add_argument('--workers', type=int, default=None, help='data-loader workers (digits: 0)')
    g.add_argument('--cutout', type=int, default=None, help='cutout length in px, 0 disables (16; imagenet 0)')
    g.add_argument('--autoaugment', action=argparse.BooleanOptionalAction, default=None,
                   help='torchvision AutoAugment (CIFAR10 / IMAGENET policy); default on except for digits')
    g = p.add_argument_group('recipe')
    g.add_argument('--epochs', type=int, default=None, help='CIFAR 600, ImageNet 250, digits 8')
    g.add_argument('--batch-size', type=int, default=None, help='global batch: 128 (imagenet 96, digits 16)')
    g.add_argument('--lr', type=float, default=0.025, help='SGD learning rate (0.025)')
    g.add_argument('--min-lr', type=float, default=0.0, help='cosine schedule floor (0)')
    g.add_argument('--momentum', type=float, default=0.9, help='SGD momentum (0.9)')
    g.add_argument('--weight-decay', type=float, default=3e-4, help='weight decay (3e-4)')
    g.add_argument('--aux-weight', type=float, default=0.4,
                   help='auxiliary head loss weight, 0 disables the head (0.4)')
    g.add_argument('--drop-path', type=float, default=0.2, help='final drop-path rate, ramped linearly from 0 (0.2)')
    g.add_argument('--grad-clip', type=float, default=5.0, help='gradient norm clip, 0 disables (5)')
    g.add_argument('--label-smoothing', type=float, default=None, help='0.1 on imagenet, else 0')
    g.add_argument('--amp', action='store_true', help='mixed precision (fp16 + GradScaler on CUDA, bf16 on CPU)')
    g.add_argument('--channels-last', action=argparse.BooleanOptionalAction, default=True,
                   help='NHWC memory format (faster depthwise-conv backward on CPU)')
    g = p.add_argument_group('run')
    g.add_argument('--out', default='runs/train', help='output folder: checkpoint, logs, metrics (runs/train)')
    g.add_argument('--resume', nargs='?', const='auto', default=None,
                   help='continue from a checkpoint (no value: OUT/checkpoint.pth)')
    g.add_argument('--seed', type=int, default=0, help='random seed (0)')
    g.add_argument('--device', default=None, help='cuda / cpu (default: cuda when available)')
    g.add_argument('--threads', type=int, default=None,
                   help='torch CPU threads (on a CPU shared with other jobs, 1 is often much faster)')
    g.add_argument('--max-steps', type=int, default=None, help='cap on train steps per epoch (smoke tests)')
    g.add_argument('--stop-after', type=int, default=None,
                   help='stop after this many epochs in total, resumable later (time-sliced jobs)')
    g.add_argument('--eval-interval', type=int, default=1, help='evaluate the held-out split every N epochs')
    g.add_argument('--no-progress', action='store_true', help='disable the tqdm bars')


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the dataset-dependent defaults and check the combination (``SystemExit`` naming the flag)."""
    for key, value in DATASET_DEFAULTS[args.dataset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.model is None and args.genotype is None:
        args.model = 'ddarts_dd1_cifar'
    for key in ('epochs', 'batch_size'):
        if getattr(args, key) < 1:
            raise SystemExit(f'--{key.replace("_", "-")} must be >= 1')
    if args.dataset != 'digits' and not args.data:
        raise SystemExit(f'--data is required for {args.dataset} (digits is the only embedded dataset)')
    return args


def run(args: argparse.Namespace) -> int:
    from ddarts_zoo.train import train
    return train(resolve_args(args))
