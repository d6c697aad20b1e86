"""``ddarts-zoo train``: train a derived D-DARTS network from scratch (the paper's final-architecture recipe).

Examples::

    ddarts-zoo train --model ddarts_dd1_cifar --dataset cifar10 --data ~/data/cifar --out runs/dd1
    ddarts-zoo train --genotype my_search/genotype.json --dataset digits --model-args '{"init_channels": 16}'
    torchrun --nproc_per_node 8 -m ddarts_zoo train --model ddarts_dd4 --dataset imagenet --data /in1k --amp
    torchrun --max-restarts 3 --nproc_per_node 8 -m ddarts_zoo train ... --resume auto   # restarts continue
    ddarts-zoo train --genotype dd1 --dataset folder --data my_images --train-subset 500 --out runs/mine

Recipe (paper Sec. 5.1, following DARTS): SGD lr 0.025, momentum 0.9, weight decay 3e-4, cosine schedule to
0, batch 128 (CIFAR) / 96 (ImageNet), auxiliary head weight 0.4, cutout 16, AutoAugment, drop-path 0.2
ramped linearly from 0, gradient clipping at norm 5, label smoothing 0.1 on ImageNet.  Dataset-specific
defaults (each overridable by its flag): ``digits`` (8x8 grey digits, not natural images) gets neither
AutoAugment nor flips, batch 16 and 8 epochs; ``imagenet`` gets ``--cutout 0``; ``folder`` (your images)
gets batch 64, 100 epochs, neither cutout nor AutoAugment.  ``--batch-size`` is the
*global* batch: with ``torchrun`` each of the N processes takes ``batch/N``.

Outputs in ``--out``: ``checkpoint.pth`` (written atomically after every epoch; ``--resume`` continues from
it), ``log.csv``, ``tb/`` (TensorBoard), ``args.json`` and, at the end, ``metrics.json`` (top-1 / top-5 on the
held-out split: digits' fixed 20 % test split, the CIFAR test set, ImageNet val).  Export the result with
``ddarts-zoo export OUT/checkpoint.pth --out DIR``.
"""
from __future__ import annotations

import argparse
from typing import Any, Dict

from ..data.info import DATASET_NAMES
from ..errors import UserError
from ..train_config import RESUME_AUTO, RESUME_LAST, TrainConfig
from .export import parse_json_object

__all__ = ['add_arguments', 'config_from_args', 'run']


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = __doc__.split('\n\n', 1)[1]
    _model_arguments(p.add_argument_group('model'))
    _data_arguments(p.add_argument_group('data'))
    _recipe_arguments(p.add_argument_group('recipe'))
    _run_arguments(p.add_argument_group('run'))


def _model_arguments(g: argparse._ArgumentGroup) -> None:
    g.add_argument('--model', default=None,
                   help='registered timm model name (default ddarts_dd1_cifar when --genotype is not given)')
    g.add_argument('--genotype', default=None,
                   help="genotype JSON / authors' text file or shipped name, built with "
                        'ddarts_genotype_cifar (or ddarts_genotype above 64 px)')
    g.add_argument('--model-args', '--model-kwargs', dest='model_args', default='{}', metavar='JSON',
                   help='extra model keyword arguments as a JSON object, e.g. \'{"init_channels": 16}\'')
    g.add_argument('--init-channels', type=int, default=None, help='width C of the first cells')
    g.add_argument('--layers', type=int, default=None, help='number of cells (Algorithm 1 when larger)')


def _data_arguments(g: argparse._ArgumentGroup) -> None:
    g.add_argument('--dataset', default='digits', choices=DATASET_NAMES,
                   help='digits (embedded), cifar10, cifar100, imagenet, or folder: your images in '
                        'ROOT/train/<class>/* (and ROOT/val/<class>/*, else a seeded 20%% is held out)')
    g.add_argument('--data', default=None, metavar='ROOT', help='dataset root (not needed for digits)')
    g.add_argument('--image-size', type=int, default=None,
                   help='input size for digits (default 32) and folder (default: inferred from the images); '
                        'the auxiliary head of a CIFAR-stem network needs >= 29 px (--aux-weight 0 drops it)')
    g.add_argument('--workers', type=int, default=None, help='data-loader workers (digits: 0)')
    g.add_argument('--cutout', type=int, default=None,
                   help='cutout length in px, 0 disables (16; imagenet and folder 0)')
    g.add_argument('--autoaugment', action=argparse.BooleanOptionalAction, default=None,
                   help='torchvision AutoAugment (CIFAR10 / IMAGENET policy); default on for cifar and '
                        'imagenet')
    g.add_argument('--train-subset', type=float, default=None, metavar='N|F',
                   help='train on a seeded subset (by --seed) of the training split: N images (a whole '
                        'number) or a fraction F in (0, 1); the held-out split is always evaluated whole')


def _recipe_arguments(g: argparse._ArgumentGroup) -> None:
    g.add_argument('--epochs', type=int, default=None, help='CIFAR 600, ImageNet 250, digits 8, folder 100')
    g.add_argument('--batch-size', type=int, default=None,
                   help='global batch: 128 (imagenet 96, folder 64, digits 16)')
    g.add_argument('--lr', type=float, default=0.025, help='SGD learning rate (0.025)')
    g.add_argument('--min-lr', type=float, default=0.0, help='cosine schedule floor (0)')
    g.add_argument('--momentum', type=float, default=0.9, help='SGD momentum (0.9)')
    g.add_argument('--weight-decay', type=float, default=3e-4, help='weight decay (3e-4)')
    g.add_argument('--aux-weight', type=float, default=0.4,
                   help='auxiliary head loss weight, 0 disables the head (0.4)')
    g.add_argument('--drop-path', type=float, default=0.2,
                   help='final drop-path rate, ramped linearly from 0 (0.2)')
    g.add_argument('--grad-clip', type=float, default=5.0, help='gradient norm clip, 0 disables (5)')
    g.add_argument('--label-smoothing', type=float, default=None, help='0.1 on imagenet, else 0')
    g.add_argument('--amp', action='store_true',
                   help='mixed precision (fp16 + GradScaler on CUDA, bf16 on CPU)')
    g.add_argument('--channels-last', action=argparse.BooleanOptionalAction, default=None,
                   help='NHWC memory format (faster depthwise-conv backward on CPU); default on, except with '
                        '--amp on a CPU, where its bfloat16 dilated-conv backward gives NaN gradients')


def _run_arguments(g: argparse._ArgumentGroup) -> None:
    g.add_argument('--out', default='runs/train',
                   help='output folder: checkpoint, logs, metrics (runs/train)')
    g.add_argument('--resume', nargs='?', const=RESUME_LAST, default=None, metavar='auto|last|PATH',
                   help=f'continue a run: `{RESUME_AUTO}` = OUT/checkpoint.pth when it exists, else start '
                        f'(for torchrun --max-restarts); no value or `{RESUME_LAST}` = OUT/checkpoint.pth, '
                        f'which must exist; PATH = that checkpoint')
    g.add_argument('--seed', type=int, default=0, help='random seed (0)')
    g.add_argument('--device', default=None, help='cuda / cuda:N / cpu (default: cuda when available)')
    g.add_argument('--threads', type=int, default=None,
                   help='torch CPU threads (on a CPU shared with other jobs, 1 is often much faster)')
    g.add_argument('--max-steps', type=int, default=None, help='cap on train steps per epoch (smoke tests)')
    g.add_argument('--stop-after', type=int, default=None,
                   help='stop after this many epochs in total, resumable later (time-sliced jobs)')
    g.add_argument('--eval-interval', type=int, default=1,
                   help='evaluate the held-out split every N epochs (0: after the last epoch only)')
    g.add_argument('--dist-timeout', type=float, default=600.0, metavar='SECONDS',
                   help='under torchrun: a collective that waits longer fails instead of hanging (600)')
    g.add_argument('--no-progress', dest='progress', action='store_false', help='disable the tqdm bars')


def _json_object(flag: str, text: str) -> Dict[str, Any]:
    """``text`` parsed as a JSON object; anything else is a :class:`UserError` naming ``flag``."""
    try:
        return parse_json_object(text)
    except argparse.ArgumentTypeError as err:
        raise UserError(f'{flag} {text!r}: {err}') from None


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`~ddarts_zoo.train_config.TrainConfig` of a parsed command line (resolved and checked)."""
    model_args = args.model_args
    if isinstance(model_args, str):
        model_args = _json_object('--model-args', model_args)
    cfg = TrainConfig.from_args(argparse.Namespace(**{**vars(args), 'model_args': model_args})).resolved()
    cfg.check()
    return cfg


def run(args: argparse.Namespace) -> int:
    from ddarts_zoo.train import train
    return train(config_from_args(args))
