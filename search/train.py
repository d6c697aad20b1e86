#!/usr/bin/env python
"""Train a derived D-DARTS network from scratch (the paper's final-architecture recipe).

Usage (from the repository root)::

    python search/train.py --model ddarts_dd1_cifar --dataset cifar10 --data ~/data/cifar --out runs/dd1
    python search/train.py --genotype my_search/genotype.json --dataset digits --model-args '{"init_channels": 16}'
    torchrun --nproc_per_node 8 search/train.py --model ddarts_dd4 --dataset imagenet --data /data/imagenet --amp

Recipe (D-DARTS / DARTS): SGD lr 0.025, momentum 0.9, weight decay 3e-4, cosine schedule to 0 over the
epochs, batch 128 (CIFAR) / 96 (ImageNet), auxiliary head weight 0.4, cutout 16, AutoAugment
(torchvision's CIFAR-10 policy on CIFAR, ImageNet policy on ImageNet), drop-path 0.2 ramped linearly from 0
over training, gradient clipping at norm 5, label smoothing 0.1 on ImageNet.

Dataset-specific choices (documented, each overridable by its flag):

* ``digits`` (the embedded default) gets neither AutoAugment nor horizontal flips: its 8x8 grey-level digits
  upsampled to 32 px are not natural images (AutoAugment's colour/posterize ops are meaningless there, and a
  flipped digit is another symbol).  It keeps random crops (padding 4) and cutout.  Its 1438 training images
  make 11 steps per epoch at batch 128, so digits defaults to batch 16 and 8 epochs (what the published
  ``*.digits`` weights used; about 13 minutes per model at ``init_channels=8`` on a busy 2-core CPU).
* ``imagenet`` defaults to ``--cutout 0`` (cutout 16 is a CIFAR-scale regulariser; DARTS does not use it on
  ImageNet) and label smoothing 0.1; batch 96.
* ``--batch-size`` is the *global* batch: with ``torchrun`` each of the N processes takes ``batch/N``, so the
  recipe (and its learning rate) does not depend on the number of GPUs.

Outputs in ``--out``: ``checkpoint.pth`` (written atomically after every epoch; ``--resume`` continues from
it), ``log.csv`` (one row per epoch), ``tb/`` (TensorBoard), ``args.json`` and, at the end, ``metrics.json``
with top-1 / top-5 on the held-out split (digits: the fixed 20 % test split; CIFAR: test set; ImageNet: val).
Export the result with ``ddarts-zoo export OUT/checkpoint.pth --out DIR``.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

if __package__ in (None, ''):  # `python search/train.py` from a checkout: make ddarts_zoo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

import ddarts_zoo  # noqa: F401  (registers the timm models)
from ddarts_zoo.data import build_dataset, dataset_info
from ddarts_zoo.genotype import atomic_write_text
from search.trainer import atomic_torch_save

CHECKPOINT_NAME = 'checkpoint.pth'
CHECKPOINT_FORMAT = 'ddarts-zoo/train-checkpoint'
CSV_FIELDS = ('epoch', 'lr', 'drop_path', 'train_loss', 'train_top1', 'test_loss', 'test_top1', 'test_top5',
              'epoch_time_s')

# Dataset-dependent defaults of the recipe (None on the command line = take these).
DATASET_DEFAULTS: Dict[str, Dict[str, Any]] = {
    'digits': dict(batch_size=16, epochs=8, cutout=16, autoaugment=False, label_smoothing=0.0, workers=0),
    'cifar10': dict(batch_size=128, epochs=600, cutout=16, autoaugment=True, label_smoothing=0.0, workers=4),
    'cifar100': dict(batch_size=128, epochs=600, cutout=16, autoaugment=True, label_smoothing=0.0, workers=4),
    'imagenet': dict(batch_size=96, epochs=250, cutout=0, autoaugment=True, label_smoothing=0.1, workers=8),
}


# ---------------------------------------------------------------------------------------------- arguments
def _json_dict(text: str) -> Dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f'not valid JSON: {err}') from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('expected a JSON object such as \'{"init_channels": 16}\'')
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    g = p.add_argument_group('model')
    src = g.add_mutually_exclusive_group()
    src.add_argument('--model', default=None,
                     help='registered timm model name (default ddarts_dd1_cifar when --genotype is not given)')
    src.add_argument('--genotype', default=None,
                     help='genotype JSON / authors\' text file or shipped name, built with ddarts_genotype_cifar '
                          '(or ddarts_genotype for imagenet)')
    g.add_argument('--model-args', type=_json_dict, default={},
                   help='extra model keyword arguments as JSON, e.g. \'{"init_channels": 16}\'')
    g.add_argument('--init-channels', type=int, default=None, help='width C of the first cells')
    g.add_argument('--layers', type=int, default=None, help='number of cells (Algorithm 1 when larger)')
    g = p.add_argument_group('data')
    g.add_argument('--dataset', default='digits', choices=('digits', 'cifar10', 'cifar100', 'imagenet'))
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
                   help='NHWC memory format (on CPU, depthwise-conv backward is ~25x faster in it)')
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
    return p


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the dataset-dependent defaults and check the combination."""
    defaults = DATASET_DEFAULTS[args.dataset]
    for key, value in defaults.items():
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


# ---------------------------------------------------------------------------------------------- model
def model_spec(args: argparse.Namespace) -> Tuple[str, Dict[str, Any]]:
    """(timm model name, JSON-serialisable model arguments) of the network to train."""
    info = dataset_info(args.dataset)
    model_args: Dict[str, Any] = dict(num_classes=info.num_classes, in_chans=info.in_chans)
    if args.genotype is not None:
        from ddarts_zoo.genotype import load_genotype
        name = 'ddarts_genotype' if args.dataset == 'imagenet' else 'ddarts_genotype_cifar'
        model_args['genotype'] = load_genotype(args.genotype).to_dict()
    else:
        name = args.model
    model_args.update(args.model_args)
    if args.init_channels is not None:  # the dedicated flags win over --model-args
        model_args['init_channels'] = args.init_channels
    if args.layers is not None:
        model_args['layers'] = args.layers
    return name, model_args


def create_model(name: str, model_args: Dict[str, Any], auxiliary: bool, drop_path: float) -> nn.Module:
    import timm
    return timm.create_model(name, pretrained=False, auxiliary=auxiliary, drop_path_rate=drop_path, **model_args)


class _TrainForward(nn.Module):
    """Makes ``forward`` return ``forward_train``'s tuple so that DDP wraps the auxiliary head too."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        if hasattr(self.net, 'forward_train'):
            return self.net.forward_train(x)
        return self.net(x), None


# ---------------------------------------------------------------------------------------------- data
class Cutout:
    """Zero one random ``length`` x ``length`` square (clipped at the borders) of a CHW tensor image."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        y0, y1 = max(0, cy - self.length // 2), min(h, cy + self.length // 2)
        x0, x1 = max(0, cx - self.length // 2), min(w, cx + self.length // 2)
        img = img.clone()
        img[..., y0:y1, x0:x1] = 0.0
        return img


class RandomCropTensor:
    """Random crop of a zero-padded CHW tensor (``padding`` px each side), for the in-memory digits."""

    def __init__(self, size: int, padding: int) -> None:
        self.size, self.padding = size, padding

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        img = F.pad(img, [self.padding] * 4)
        top = int(torch.randint(img.shape[-2] - self.size + 1, ()))
        left = int(torch.randint(img.shape[-1] - self.size + 1, ()))
        return img[..., top:top + self.size, left:left + self.size]


def build_transforms(args: argparse.Namespace) -> Tuple[Any, Any]:
    """(train transform, test transform) of the recipe for ``args.dataset``."""
    info = dataset_info(args.dataset)
    cutout = [Cutout(args.cutout)] if args.cutout > 0 else []
    if args.dataset == 'digits':  # tensors, already normalised by the dataset
        steps = [RandomCropTensor(info.image_size, 4), *cutout]
        return _compose(steps), None
    import torchvision.transforms as T
    normalize = T.Normalize(info.mean, info.std)
    if args.dataset in ('cifar10', 'cifar100'):
        aa = [T.AutoAugment(T.AutoAugmentPolicy.CIFAR10)] if args.autoaugment else []
        train = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), *aa, T.ToTensor(), normalize,
                           *cutout])
        return train, T.Compose([T.ToTensor(), normalize])
    aa = [T.AutoAugment(T.AutoAugmentPolicy.IMAGENET)] if args.autoaugment else []
    train = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), *aa, T.ToTensor(), normalize, *cutout])
    test = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), normalize])
    return train, test


def _compose(steps: Sequence[Any]) -> Any:
    def apply(x: torch.Tensor) -> torch.Tensor:
        for step in steps:
            x = step(x)
        return x
    return apply


class ShardSampler(Sampler[int]):
    """Sampler over this rank's shard of the dataset.

    ``shuffle=True``: a permutation seeded with ``seed + epoch`` (the same on every rank, so resuming at an
    epoch replays that epoch's order), cut to a multiple of the world size.  ``shuffle=False``: indices
    ``rank, rank + world, ...`` with no padding, so a sharded evaluation counts every image exactly once.
    """

    def __init__(self, n: int, rank: int, world: int, shuffle: bool, seed: int = 0) -> None:
        self.n, self.rank, self.world, self.shuffle, self.seed = n, rank, world, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> List[int]:
        if not self.shuffle:
            return list(range(self.rank, self.n, self.world))
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        usable = len(order) - len(order) % self.world if self.world > 1 else len(order)
        return order[self.rank:usable:self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())


# ---------------------------------------------------------------------------------------------- utils
class Dist:
    """Process-group facts: ``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK."""

    def __init__(self, device_arg: Optional[str]) -> None:
        self.world = int(os.environ.get('WORLD_SIZE', '1'))
        self.rank = int(os.environ.get('RANK', '0'))
        self.local_rank = int(os.environ.get('LOCAL_RANK', '0'))
        want_cuda = torch.cuda.is_available() if device_arg is None else device_arg.startswith('cuda')
        if want_cuda and not torch.cuda.is_available():
            raise SystemExit('--device cuda requested but CUDA is not available')
        if want_cuda:
            self.device = torch.device('cuda', self.local_rank if self.world > 1 else torch.cuda.current_device())
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device('cpu')
        if self.world > 1:
            dist.init_process_group('nccl' if want_cuda else 'gloo')

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: Sequence[float]) -> List[float]:
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        if self.world > 1:
            dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1, 5)) -> List[float]:
    """Number of samples whose target is in the top-k predictions, for each k (k capped at #classes)."""
    maxk = min(max(ks), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices
    hit = pred.eq(target[:, None])
    return [float(hit[:, :min(k, maxk)].any(dim=1).sum()) for k in ks]


def cosine_lr(base: float, floor: float, epoch: int, epochs: int) -> float:
    """Per-epoch cosine annealing (as torch's CosineAnnealingLR with T_max=epochs, eta_min=floor)."""
    return floor + (base - floor) * (1 + math.cos(math.pi * epoch / epochs)) / 2


def _progress(iterable: Any, enabled: bool, **kwargs: Any) -> Any:
    if not enabled:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, dynamic_ncols=True, leave=False, **kwargs)


class Logs:
    """CSV (rewritten atomically each epoch) and TensorBoard on the main process only."""

    def __init__(self, out: Path, enabled: bool, start_epoch: int) -> None:
        self.enabled = enabled
        self.csv_path = out / 'log.csv'
        self.rows: List[Dict[str, Any]] = []
        self.tb = None
        if not enabled:
            return
        if start_epoch > 0 and self.csv_path.exists():  # keep the rows of the epochs being resumed from
            with open(self.csv_path, newline='', encoding='utf-8') as f:
                self.rows = [r for r in csv.DictReader(f) if int(r['epoch']) < start_epoch]
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(log_dir=str(out / 'tb'), purge_step=start_epoch if start_epoch else None)
        except ImportError:  # tensorboard is a declared dependency, but training must not die for a logger
            print('warning: tensorboard is not installed; logging to log.csv only', file=sys.stderr)

    def epoch(self, row: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.rows.append(row)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator='\n')
        writer.writeheader()
        writer.writerows({k: r.get(k, '') for k in CSV_FIELDS} for r in self.rows)
        atomic_write_text(self.csv_path, buf.getvalue())
        if self.tb is not None:
            for key, value in row.items():
                if key != 'epoch' and isinstance(value, (int, float)):
                    self.tb.add_scalar(key.replace('_', '/', 1), value, int(row['epoch']))
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# ---------------------------------------------------------------------------------------------- loops
def _to(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _autocast(device: torch.device, enabled: bool) -> Any:
    dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=enabled)


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    scaler: 'torch.amp.GradScaler', args: argparse.Namespace, ctx: Dist,
                    desc: str) -> Tuple[float, float]:
    """One pass over the training shard; returns (mean loss, top-1 %) over all ranks."""
    model.train()
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    loss_sum = correct = seen = 0.0
    params = [p for p in model.parameters() if p.requires_grad]
    for step, (x, y) in enumerate(_progress(loader, ctx.main and not args.no_progress, desc=desc)):
        if args.max_steps is not None and step >= args.max_steps:
            break
        x, y = _to(x, ctx.device, args.channels_last), y.to(ctx.device, non_blocking=True)
        with _autocast(ctx.device, args.amp):
            logits, aux_logits = model(x)
            loss = criterion(logits, y)
            if aux_logits is not None and args.aux_weight > 0:
                loss = loss + args.aux_weight * criterion(aux_logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if args.grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(params, args.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if not torch.isfinite(loss.detach()):
            raise FloatingPointError(f'{desc}: loss is {loss.item()} at step {step}; lower --lr or disable --amp')
        loss_sum += float(loss.detach()) * len(y)
        correct += float((logits.detach().argmax(1) == y).sum())
        seen += len(y)
    loss_sum, correct, seen = ctx.all_sum([loss_sum, correct, seen])
    return loss_sum / max(seen, 1), 100.0 * correct / max(seen, 1)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, ctx: Dist, amp: bool = False, channels_last: bool = False,
             progress: bool = False) -> Dict[str, float]:
    """Top-1 / top-5 (%) and mean CE loss over the whole (sharded) held-out split."""
    model.eval()
    loss_sum = top1 = top5 = seen = 0.0
    for x, y in _progress(loader, progress, desc='eval'):
        x, y = _to(x, ctx.device, channels_last), y.to(ctx.device, non_blocking=True)
        with _autocast(ctx.device, amp):
            logits = model(x)
        logits = logits[0] if isinstance(logits, tuple) else logits
        loss_sum += float(F.cross_entropy(logits.float(), y, reduction='sum'))
        c1, c5 = topk_correct(logits.float(), y)
        top1 += c1
        top5 += c5
        seen += len(y)
    loss_sum, top1, top5, seen = ctx.all_sum([loss_sum, top1, top5, seen])
    return dict(loss=loss_sum / max(seen, 1), top1=100.0 * top1 / max(seen, 1), top5=100.0 * top5 / max(seen, 1),
                num_images=int(seen))


# ---------------------------------------------------------------------------------------------- main
def _checkpoint_path(args: argparse.Namespace) -> Optional[Path]:
    if args.resume is None:
        return None
    path = Path(args.out) / CHECKPOINT_NAME if args.resume == 'auto' else Path(args.resume)
    if not path.is_file():
        raise SystemExit(f'--resume: no checkpoint at {str(path)!r}')
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = resolve_args(build_parser().parse_args(argv))
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = Dist(args.device)
    try:
        return _run(args, ctx)
    finally:
        ctx.close()


def _run(args: argparse.Namespace, ctx: Dist) -> int:
    out = Path(args.out)
    if ctx.main:
        out.mkdir(parents=True, exist_ok=True)
    seed_everything(args.seed + ctx.rank)
    if args.batch_size % ctx.world:
        raise SystemExit(f'--batch-size {args.batch_size} is not divisible by the {ctx.world} processes')

    name, model_args = model_spec(args)
    use_aux = args.aux_weight > 0
    net = create_model(name, model_args, use_aux, args.drop_path).to(ctx.device)
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last)
    from ddarts_zoo.complexity import count_params
    params = count_params(net, include_aux=False)
    model: nn.Module = _TrainForward(net)
    if ctx.world > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == 'cuda' else None)

    train_tf, test_tf = build_transforms(args)
    train_set: Dataset = build_dataset(args.dataset, 'train', args.data, transform=train_tf)
    test_set: Dataset = build_dataset(args.dataset, 'test', args.data, transform=test_tf)
    train_sampler = ShardSampler(len(train_set), ctx.rank, ctx.world, shuffle=True, seed=args.seed)
    test_sampler = ShardSampler(len(test_set), ctx.rank, ctx.world, shuffle=False)
    per_rank = args.batch_size // ctx.world
    loader_kw = dict(num_workers=args.workers, pin_memory=ctx.device.type == 'cuda',
                     persistent_workers=args.workers > 0)
    train_loader = DataLoader(train_set, per_rank, sampler=train_sampler, drop_last=True, **loader_kw)
    test_loader = DataLoader(test_set, per_rank, sampler=test_sampler, **loader_kw)
    if len(train_loader) == 0:
        raise SystemExit(f'the training split ({len(train_set)} images) is smaller than one batch of {per_rank}')

    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=args.amp and ctx.device.type == 'cuda')
    start_epoch, train_time = 0, 0.0
    ckpt_path = _checkpoint_path(args)
    if ckpt_path is not None:
        ckpt = torch.load(ckpt_path, map_location='cpu', weights_only=False)
        if ckpt.get('format') != CHECKPOINT_FORMAT:
            raise SystemExit(f'{ckpt_path}: not a checkpoint written by search/train.py')
        if (ckpt['model_name'], ckpt['model_args']) != (name, model_args):
            raise SystemExit(f'{ckpt_path}: it holds {ckpt["model_name"]} {ckpt["model_args"]}, '
                             f'but this run builds {name} {model_args}')
        net.load_state_dict(ckpt['model'])
        optimizer.load_state_dict(ckpt['optimizer'])
        scaler.load_state_dict(ckpt['scaler'])
        start_epoch, train_time = int(ckpt['epoch']), float(ckpt.get('train_time_s', 0.0))
        if ctx.world == 1:  # bit-exact continuation; under DDP each rank reseeds from (seed, rank, epoch)
            torch.set_rng_state(ckpt['rng']['torch'])
        else:
            seed_everything(args.seed + ctx.rank + 1000 * start_epoch)
        if ctx.main:
            print(f'resumed {ckpt_path} at epoch {start_epoch}/{args.epochs}')
    if ctx.main:
        atomic_write_text(out / 'args.json', json.dumps(
            dict(vars(args), model_name=name, resolved_model_args=model_args, world_size=ctx.world), indent=2,
            default=str) + '\n')
        print(f'{name} {json.dumps(model_args)[:200]}: {params / 1e6:.3f}M params (without aux head), '
              f'{args.dataset}: {len(train_set)} train / {len(test_set)} held-out images, {ctx.world} process(es) '
              f'on {ctx.device}')

    logs = Logs(out, ctx.main, start_epoch)
    metrics: Dict[str, float] = {}
    end_epoch = args.epochs if args.stop_after is None else min(args.epochs, args.stop_after)
    try:
        for epoch in range(start_epoch, end_epoch):
            tic = time.perf_counter()
            lr = cosine_lr(args.lr, args.min_lr, epoch, args.epochs)
            for group in optimizer.param_groups:
                group['lr'] = lr
            drop_path = args.drop_path * epoch / args.epochs
            net.set_drop_path(drop_path)
            train_sampler.set_epoch(epoch)
            desc = f'epoch {epoch + 1}/{args.epochs}'
            train_loss, train_top1 = train_one_epoch(model, train_loader, optimizer, scaler, args, ctx, desc)
            last = epoch + 1 == args.epochs
            row: Dict[str, Any] = dict(epoch=epoch, lr=lr, drop_path=drop_path, train_loss=train_loss,
                                       train_top1=train_top1)
            if last or (args.eval_interval > 0 and (epoch + 1) % args.eval_interval == 0):
                metrics = evaluate(net, test_loader, ctx, args.amp, args.channels_last)
                row.update(test_loss=metrics['loss'], test_top1=metrics['top1'], test_top5=metrics['top5'])
            elapsed = time.perf_counter() - tic
            train_time += elapsed
            row['epoch_time_s'] = elapsed
            if ctx.main:
                atomic_torch_save(dict(
                    format=CHECKPOINT_FORMAT, epoch=epoch + 1, model_name=name, model_args=model_args,
                    dataset=args.dataset, model=net.state_dict(), optimizer=optimizer.state_dict(),
                    scaler=scaler.state_dict(), rng=dict(torch=torch.get_rng_state()), train_time_s=train_time,
                    args=vars(args), metrics=metrics or None), out / CHECKPOINT_NAME)
                logs.epoch(row)
                test = f', held-out top-1 {row["test_top1"]:.2f}%' if 'test_top1' in row else ''
                print(f'{desc}: lr {lr:.5f} loss {train_loss:.4f} train top-1 {train_top1:.2f}%{test} '
                      f'({elapsed:.1f}s)', flush=True)
            ctx.barrier()
    finally:
        logs.close()

    if end_epoch < args.epochs:
        if ctx.main:
            print(f'stopped after epoch {end_epoch}/{args.epochs}; continue with --resume')
        return 0
    if not metrics:  # resumed a finished run, or no epoch left: evaluate the checkpoint as it is
        metrics = evaluate(net, test_loader, ctx, args.amp, args.channels_last)
    if ctx.main:
        from ddarts_zoo.complexity import count_macs
        info = dataset_info(args.dataset)
        net.eval()
        result = dict(
            model=name, model_args=model_args, dataset=args.dataset,
            split='val' if args.dataset == 'imagenet' else 'test', top1=metrics['top1'], top5=metrics['top5'],
            loss=metrics['loss'], num_images=metrics['num_images'], epochs=args.epochs,
            params=params, macs=count_macs(net, (info.in_chans, info.image_size, info.image_size)),
            train_time_s=round(train_time, 1), world_size=ctx.world, device=str(ctx.device),
            cpu_threads=torch.get_num_threads(),
            recipe=dict(optimizer='SGD', lr=args.lr, min_lr=args.min_lr, momentum=args.momentum,
                        weight_decay=args.weight_decay, schedule='cosine', batch_size=args.batch_size,
                        epochs=args.epochs, aux_weight=args.aux_weight if use_aux else 0.0, cutout=args.cutout,
                        autoaugment=bool(args.autoaugment), drop_path=args.drop_path, grad_clip=args.grad_clip,
                        label_smoothing=args.label_smoothing, amp=args.amp, seed=args.seed),
            versions=dict(torch=torch.__version__, python=platform.python_version()),
            checkpoint=CHECKPOINT_NAME,
        )
        atomic_write_text(out / 'metrics.json', json.dumps(result, indent=2) + '\n')
        print(f'{name} on {args.dataset} {result["split"]}: top-1 {metrics["top1"]:.2f}%, '
              f'top-5 {metrics["top5"]:.2f}% ({metrics["num_images"]} images); {out / "metrics.json"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
