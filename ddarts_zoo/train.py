"""Final-network training (``ddarts-zoo train``): a derived network trained from scratch, with resume.

The recipe and its flags are documented in :mod:`ddarts_zoo.commands.train`; :func:`train` runs it on
resolved arguments.  One process, or one per GPU under ``torchrun`` (DDP); rank 0 alone writes
``checkpoint.pth`` (atomically, after every epoch), ``log.csv``, ``tb/``, ``args.json`` and ``metrics.json``.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .data import build_dataset, dataset_info
from .transforms import build_transforms
from .utils.amp import autocast, make_grad_scaler
from .utils.dist import DistContext, EpochShardSampler, init_distributed
from .utils.io import atomic_write
from .utils.logs import csv_text, open_tensorboard
from .utils.seed import capture_rng_state, restore_rng_state, seed_everything

__all__ = ['CHECKPOINT_NAME', 'CHECKPOINT_FORMAT', 'train', 'model_spec', 'train_one_epoch', 'evaluate',
           'topk_correct', 'cosine_lr']

CHECKPOINT_NAME = 'checkpoint.pth'
CHECKPOINT_FORMAT = 'ddarts-zoo/train-checkpoint'
CSV_FIELDS = ('epoch', 'lr', 'drop_path', 'train_loss', 'train_top1', 'test_loss', 'test_top1', 'test_top5',
              'epoch_time_s')


# ---------------------------------------------------------------------------------------------- model
def model_spec(args: argparse.Namespace) -> Tuple[str, Dict[str, Any]]:
    """(timm model name, JSON-serialisable model arguments) of the network to train."""
    info = dataset_info(args.dataset)
    model_args: Dict[str, Any] = dict(num_classes=info.num_classes, in_chans=info.in_chans)
    if args.genotype is not None:
        from .genotypes import load_genotype
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


class _TrainForward(nn.Module):
    """Makes ``forward`` return ``forward_train``'s tuple so that DDP wraps the auxiliary head too."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        if hasattr(self.net, 'forward_train'):
            return self.net.forward_train(x)
        return self.net(x), None


# ---------------------------------------------------------------------------------------------- loops
def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1, 5)) -> List[float]:
    """Number of samples whose target is in the top-k predictions, for each k (k capped at #classes)."""
    maxk = min(max(ks), logits.shape[1])
    hit = logits.topk(maxk, dim=1).indices.eq(target[:, None])
    return [float(hit[:, :min(k, maxk)].any(dim=1).sum()) for k in ks]


def cosine_lr(base: float, floor: float, epoch: int, epochs: int) -> float:
    """Per-epoch cosine annealing (as torch's CosineAnnealingLR with T_max=epochs, eta_min=floor)."""
    return floor + (base - floor) * (1 + math.cos(math.pi * epoch / epochs)) / 2


def _progress(iterable: Any, enabled: bool, **kwargs: Any) -> Any:
    if not enabled:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, dynamic_ncols=True, leave=False, **kwargs)


def _to(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    scaler: 'torch.amp.GradScaler', args: argparse.Namespace, ctx: DistContext,
                    desc: str) -> Tuple[float, float]:
    """One pass over the training shard; returns (mean loss, top-1 %) over all ranks."""
    model.train()
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    loss_sum = correct = seen = 0.0
    params = [p for p in model.parameters() if p.requires_grad]
    for step, (x, y) in enumerate(_progress(loader, ctx.is_writer and not args.no_progress, desc=desc)):
        if args.max_steps is not None and step >= args.max_steps:
            break
        x, y = _to(x, ctx.device, args.channels_last), y.to(ctx.device, non_blocking=True)
        with autocast(ctx.device, args.amp):
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
def evaluate(model: nn.Module, loader: DataLoader, ctx: DistContext, amp: bool = False,
             channels_last: bool = False, progress: bool = False) -> Dict[str, float]:
    """Top-1 / top-5 (%) and mean CE loss over the whole (sharded) held-out split."""
    model.eval()
    loss_sum = top1 = top5 = seen = 0.0
    for x, y in _progress(loader, progress, desc='eval'):
        x, y = _to(x, ctx.device, channels_last), y.to(ctx.device, non_blocking=True)
        with autocast(ctx.device, amp):
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


# ---------------------------------------------------------------------------------------------- run
class _EpochLog:
    """``log.csv`` (rewritten atomically each epoch; a resume keeps the earlier rows) and TensorBoard."""

    def __init__(self, out: Path, enabled: bool, start_epoch: int) -> None:
        self.enabled, self.csv_path = enabled, out / 'log.csv'
        self.rows: List[Dict[str, Any]] = []
        self.tb = None
        if not enabled:
            return
        if start_epoch > 0 and self.csv_path.exists():
            with open(self.csv_path, newline='', encoding='utf-8') as f:
                self.rows = [r for r in csv.DictReader(f) if int(r['epoch']) < start_epoch]
        self.tb = open_tensorboard(str(out / 'tb'), purge_step=start_epoch)

    def epoch(self, row: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.rows.append(row)
        atomic_write(self.csv_path, csv_text(self.rows, CSV_FIELDS))
        if self.tb is not None:
            for key, value in row.items():
                if key != 'epoch' and isinstance(value, (int, float)):
                    self.tb.add_scalar(key.replace('_', '/', 1), value, int(row['epoch']))
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _checkpoint_path(args: argparse.Namespace) -> Optional[Path]:
    if args.resume is None:
        return None
    path = Path(args.out) / CHECKPOINT_NAME if args.resume == 'auto' else Path(args.resume)
    if not path.is_file():
        raise SystemExit(f'--resume: no checkpoint at {str(path)!r}')
    return path


def train(args: argparse.Namespace) -> int:
    """Run the recipe on ``args`` (resolved by :func:`ddarts_zoo.commands.train.resolve_args`)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        ctx = init_distributed(args.device)
    except RuntimeError as err:
        raise SystemExit(str(err)) from None
    try:
        return _run(args, ctx)
    finally:
        ctx.close()


def _run(args: argparse.Namespace, ctx: DistContext) -> int:
    options = {k: v for k, v in vars(args).items() if k != 'command' and not k.startswith('_')}
    out = Path(args.out)
    if ctx.is_writer:
        out.mkdir(parents=True, exist_ok=True)
    seed_everything(args.seed + ctx.rank)
    world = ctx.world_size
    if args.batch_size % world:
        raise SystemExit(f'--batch-size {args.batch_size} is not divisible by the {world} processes')

    import timm
    from .complexity import count_params
    name, model_args = model_spec(args)
    use_aux = args.aux_weight > 0
    net = timm.create_model(name, pretrained=False, auxiliary=use_aux, drop_path_rate=args.drop_path,
                            **model_args).to(ctx.device)
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last)
    params = count_params(net, include_aux=False)
    model: nn.Module = _TrainForward(net)
    if ctx.enabled:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == 'cuda' else None)

    train_tf, test_tf = build_transforms(args.dataset, args.cutout, args.autoaugment)
    train_set: Dataset = build_dataset(args.dataset, 'train', args.data, transform=train_tf)
    test_set: Dataset = build_dataset(args.dataset, 'test', args.data, transform=test_tf)
    train_sampler = EpochShardSampler(len(train_set), ctx.rank, world, shuffle=True, seed=args.seed)
    test_sampler = EpochShardSampler(len(test_set), ctx.rank, world, shuffle=False)
    per_rank = args.batch_size // world
    loader_kw: Dict[str, Any] = dict(num_workers=args.workers, pin_memory=ctx.device.type == 'cuda',
                                     persistent_workers=args.workers > 0)
    train_loader = DataLoader(train_set, per_rank, sampler=train_sampler, drop_last=True, **loader_kw)
    test_loader = DataLoader(test_set, per_rank, sampler=test_sampler, **loader_kw)
    if len(train_loader) == 0:
        raise SystemExit(f'the training split ({len(train_set)} images) is smaller than one batch of {per_rank}')

    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    scaler = make_grad_scaler(ctx.device, args.amp)
    start_epoch, train_time = 0, 0.0
    ckpt_path = _checkpoint_path(args)
    if ckpt_path is not None:
        ckpt = torch.load(ckpt_path, map_location='cpu', weights_only=False)
        if ckpt.get('format') != CHECKPOINT_FORMAT:
            raise SystemExit(f'{ckpt_path}: not a checkpoint written by ddarts-zoo train')
        if (ckpt['model_name'], ckpt['model_args']) != (name, model_args):
            raise SystemExit(f'{ckpt_path}: it holds {ckpt["model_name"]} {ckpt["model_args"]}, '
                             f'but this run builds {name} {model_args}')
        net.load_state_dict(ckpt['model'])
        optimizer.load_state_dict(ckpt['optimizer'])
        scaler.load_state_dict(ckpt['scaler'])
        start_epoch, train_time = int(ckpt['epoch']), float(ckpt.get('train_time_s', 0.0))
        if world == 1:  # bit-exact continuation; under DDP each rank reseeds from (seed, rank, epoch)
            restore_rng_state(ckpt['rng'])
        else:
            seed_everything(args.seed + ctx.rank + 1000 * start_epoch)
        if ctx.is_writer:
            print(f'resumed {ckpt_path} at epoch {start_epoch}/{args.epochs}')
    if ctx.is_writer:
        atomic_write(out / 'args.json', json.dumps(
            dict(options, model_name=name, resolved_model_args=model_args, world_size=world), indent=2,
            default=str) + '\n')
        print(f'{name} {json.dumps(model_args)[:200]}: {params / 1e6:.3f}M params (without aux head), '
              f'{args.dataset}: {len(train_set)} train / {len(test_set)} held-out images, {world} process(es) '
              f'on {ctx.device}')

    logs = _EpochLog(out, ctx.is_writer, start_epoch)
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
            row: Dict[str, Any] = dict(epoch=epoch, lr=lr, drop_path=drop_path, train_loss=train_loss,
                                       train_top1=train_top1)
            if epoch + 1 == args.epochs or (args.eval_interval > 0 and (epoch + 1) % args.eval_interval == 0):
                metrics = evaluate(net, test_loader, ctx, args.amp, args.channels_last)
                row.update(test_loss=metrics['loss'], test_top1=metrics['top1'], test_top5=metrics['top5'])
            elapsed = time.perf_counter() - tic
            train_time += elapsed
            row['epoch_time_s'] = elapsed
            if ctx.is_writer:
                atomic_write(out / CHECKPOINT_NAME, dict(
                    format=CHECKPOINT_FORMAT, epoch=epoch + 1, model_name=name, model_args=model_args,
                    dataset=args.dataset, model=net.state_dict(), optimizer=optimizer.state_dict(),
                    scaler=scaler.state_dict(), rng=capture_rng_state(), train_time_s=train_time, args=options,
                    metrics=metrics or None))
                logs.epoch(row)
                test = f', held-out top-1 {row["test_top1"]:.2f}%' if 'test_top1' in row else ''
                print(f'{desc}: lr {lr:.5f} loss {train_loss:.4f} train top-1 {train_top1:.2f}%{test} '
                      f'({elapsed:.1f}s)', flush=True)
            ctx.barrier()
    finally:
        logs.close()

    if end_epoch < args.epochs:
        if ctx.is_writer:
            print(f'stopped after epoch {end_epoch}/{args.epochs}; continue with --resume')
        return 0
    if not metrics:  # resumed a finished run, or no epoch left: evaluate the checkpoint as it is
        metrics = evaluate(net, test_loader, ctx, args.amp, args.channels_last)
    if ctx.is_writer:
        _write_metrics(out, args, net, name, model_args, metrics, params, train_time, ctx)
    return 0


def _write_metrics(out: Path, args: argparse.Namespace, net: nn.Module, name: str, model_args: Dict[str, Any],
                   metrics: Dict[str, float], params: int, train_time: float, ctx: DistContext) -> None:
    from .complexity import count_macs
    info = dataset_info(args.dataset)
    net.eval()
    result = dict(
        model=name, model_args=model_args, dataset=args.dataset,
        split='val' if args.dataset == 'imagenet' else 'test', top1=metrics['top1'], top5=metrics['top5'],
        loss=metrics['loss'], num_images=metrics['num_images'], epochs=args.epochs,
        params=params, macs=count_macs(net, (info.in_chans, info.image_size, info.image_size)),
        train_time_s=round(train_time, 1), world_size=ctx.world_size, device=str(ctx.device),
        cpu_threads=torch.get_num_threads(),
        recipe=dict(optimizer='SGD', lr=args.lr, min_lr=args.min_lr, momentum=args.momentum,
                    weight_decay=args.weight_decay, schedule='cosine', batch_size=args.batch_size,
                    epochs=args.epochs, aux_weight=args.aux_weight if args.aux_weight > 0 else 0.0,
                    cutout=args.cutout, autoaugment=bool(args.autoaugment), drop_path=args.drop_path,
                    grad_clip=args.grad_clip, label_smoothing=args.label_smoothing, amp=args.amp, seed=args.seed),
        versions=dict(torch=torch.__version__, python=platform.python_version()),
        checkpoint=CHECKPOINT_NAME,
    )
    atomic_write(out / 'metrics.json', json.dumps(result, indent=2) + '\n')
    print(f'{name} on {args.dataset} {result["split"]}: top-1 {metrics["top1"]:.2f}%, '
          f'top-5 {metrics["top5"]:.2f}% ({metrics["num_images"]} images); {out / "metrics.json"}')
