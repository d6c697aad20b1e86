"""What a final-training run is built from: the dataset's description, the network (DDP-wrapped under
``torchrun``), the sharded data loaders (with the optional seeded ``--train-subset``), the optimizer and the
AMP scaler; and the final ``metrics.json``.  Used by :func:`ddarts_zoo.train.train`.
"""
from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from .data import DatasetInfo, build_dataset, check_enough_images, dataset_info, seeded_subset
from .train_config import CHECKPOINT_NAME, TrainConfig, TrainConfigError
from .train_loops import TrainForward
from .transforms import build_transforms
from .utils.amp import make_grad_scaler
from .utils.dist import DistContext, EpochShardSampler
from .utils.io import atomic_write
from .utils.seed import seed_everything

__all__ = ['TrainRun', 'build_run', 'data_info', 'build_network', 'check_input_size', 'build_loaders',
           'train_subset', 'write_metrics']


@dataclass
class TrainRun:
    """What the epochs of one training run work on (built by :func:`build_run`)."""

    cfg: TrainConfig
    ctx: DistContext
    info: DatasetInfo              # classes, channels, input size, normalisation
    name: str
    model_args: Dict[str, Any]
    net: nn.Module                 # the timm network (what is saved and evaluated)
    model: nn.Module               # TrainForward(net), DDP-wrapped under torchrun
    optimizer: torch.optim.Optimizer
    scaler: 'torch.amp.GradScaler'
    train_loader: DataLoader
    test_loader: DataLoader
    params: int
    train_images: int
    test_images: int
    start_epoch: int = 0
    train_time: float = 0.0
    metrics: Dict[str, float] = field(default_factory=dict)   # of the last evaluation on the held-out split

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)


def data_info(cfg: TrainConfig, ctx: DistContext) -> DatasetInfo:
    """The dataset of ``cfg`` at ``--image-size``; a folder's statistics are computed once, by rank 0."""
    if not ctx.is_writer:
        ctx.barrier()   # rank 0 first: it computes and caches a folder's statistics, the others read them
    info = dataset_info(cfg.dataset, cfg.data, image_size=cfg.image_size, cache_dir=cfg.out)
    if ctx.is_writer:
        ctx.barrier()
    if cfg.image_size is not None and info.image_size != cfg.image_size:   # digits: upsampled to any size
        info = replace(info, image_size=cfg.image_size)
    return info


def build_network(cfg: TrainConfig, ctx: DistContext, info: DatasetInfo
                  ) -> Tuple[str, Dict[str, Any], nn.Module]:
    """(model name, model arguments, network on ``ctx.device``) of ``cfg``; bad ``--model-args`` are named."""
    import timm
    name, model_args = cfg.model_spec(info)
    try:
        net = timm.create_model(name, pretrained=False, auxiliary=cfg.aux_weight > 0,
                                drop_path_rate=cfg.drop_path, **model_args)
    except TypeError as err:   # an unknown keyword: the user's --model-args
        raise TrainConfigError(f'--model-args {json.dumps(cfg.model_args)}: {name} does not accept them '
                               f'({err})') from None
    net = net.to(ctx.device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if cfg.dataset == 'folder' or cfg.image_size is not None:   # an input size the recipe was not made for
        check_input_size(net, name, info, ctx.device)
    return name, model_args, net


def check_input_size(net: nn.Module, name: str, info: DatasetInfo, device: torch.device) -> None:
    """Run two blank images through ``net`` in training mode (auxiliary head included) so that an input
    too small for its pooling fails here, naming ``--image-size``.  Weights, BN statistics, RNGs: restored."""
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.zeros(2, info.in_chans, info.image_size, info.image_size, device=device)
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == 'cuda' else []):
            net.train()
            net.forward_train(x) if hasattr(net, 'forward_train') else net(x)
    except RuntimeError as err:
        raise TrainConfigError(f'--image-size {info.image_size}: {info.image_size} px inputs are too small '
                               f'for {name} ({str(err).splitlines()[0]}); choose a larger size') from None
    finally:
        net.load_state_dict(state)


def train_subset(dataset: Dataset, size: float, seed: int) -> Dataset:
    """A seeded subset of ``dataset``: ``size`` images when ``size >= 1``, else that fraction of them."""
    n = len(dataset)
    keep = int(size) if size >= 1 else max(1, int(n * size))
    if keep > n:
        raise TrainConfigError(f'--train-subset {keep}: the training split has only {n} images')
    return seeded_subset(dataset, keep, seed)


def build_loaders(cfg: TrainConfig, ctx: DistContext, info: DatasetInfo) -> Tuple[DataLoader, DataLoader]:
    """Sharded (train, held-out) loaders; the training order is a function of ``(seed, epoch)``."""
    world = ctx.world_size
    if cfg.batch_size % world:
        raise TrainConfigError(f'--batch-size {cfg.batch_size} is not divisible by the {world} processes')
    train_tf, test_tf = build_transforms(cfg.dataset, cfg.cutout, cfg.autoaugment, info=info)
    size = info.image_size if cfg.dataset == 'digits' else None
    train_set: Dataset = build_dataset(cfg.dataset, 'train', cfg.data, transform=train_tf, image_size=size,
                                       info=info)
    test_set: Dataset = build_dataset(cfg.dataset, 'test', cfg.data, transform=test_tf, image_size=size,
                                      info=info)
    if cfg.train_subset is not None:
        train_set = train_subset(train_set, cfg.train_subset, cfg.seed)
    what = 'the training subset (--train-subset)' if cfg.train_subset is not None else 'the training split'
    check_enough_images(len(train_set), cfg.batch_size, what)   # per process: len // world >= batch // world
    per_rank = cfg.batch_size // world
    loader_kw: Dict[str, Any] = dict(num_workers=cfg.workers, pin_memory=ctx.device.type == 'cuda',
                                     persistent_workers=bool(cfg.workers))
    train_sampler = EpochShardSampler(len(train_set), ctx.rank, world, shuffle=True, seed=cfg.seed)
    test_sampler = EpochShardSampler(len(test_set), ctx.rank, world, shuffle=False)
    train_loader = DataLoader(train_set, per_rank, sampler=train_sampler, drop_last=True, **loader_kw)
    test_loader = DataLoader(test_set, per_rank, sampler=test_sampler, **loader_kw)
    return train_loader, test_loader


def build_run(cfg: TrainConfig, ctx: DistContext) -> TrainRun:
    """Seed, then build the network, the loaders, the optimizer and the scaler of a fresh run."""
    from .complexity import count_params
    info = data_info(cfg, ctx)
    seed_everything(cfg.seed + ctx.rank)
    name, model_args, net = build_network(cfg, ctx, info)
    model: nn.Module = TrainForward(net)
    if ctx.enabled:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == 'cuda' else None)
    train_loader, test_loader = build_loaders(cfg, ctx, info)
    optimizer = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    return TrainRun(cfg=cfg, ctx=ctx, info=info, name=name, model_args=model_args, net=net, model=model,
                    optimizer=optimizer, scaler=make_grad_scaler(ctx.device, cfg.amp),
                    train_loader=train_loader, test_loader=test_loader,
                    params=count_params(net, include_aux=False), train_images=len(train_loader.dataset), test_images=len(test_loader.dataset))


def write_metrics(run: TrainRun, metrics: Dict[str, float]) -> Path:
    """``metrics.json``: the held-out result, the network's size and the recipe (rank 0, at the end)."""
    from .complexity import count_macs
    cfg, net, info = run.cfg, run.net, run.info
    net.eval()
    has_val = cfg.dataset == 'imagenet' or (cfg.dataset == 'folder' and (Path(cfg.data) / 'val').is_dir())
    result = dict(
        model=run.name, model_args=run.model_args, dataset=cfg.dataset, image_size=info.image_size,
        split='val' if has_val else 'test', top1=metrics['top1'], top5=metrics['top5'],
        loss=metrics['loss'], num_images=metrics['num_images'], train_images=run.train_images,
        epochs=cfg.epochs,
        params=run.params, macs=count_macs(net, (info.in_chans, info.image_size, info.image_size)),
        train_time_s=round(run.train_time, 1), world_size=run.ctx.world_size, device=str(run.ctx.device),
        cpu_threads=torch.get_num_threads(),
        recipe=dict(optimizer='SGD', lr=cfg.lr, min_lr=cfg.min_lr, momentum=cfg.momentum,
                    weight_decay=cfg.weight_decay, schedule='cosine', batch_size=cfg.batch_size,
                    epochs=cfg.epochs, aux_weight=cfg.aux_weight, cutout=cfg.cutout,
                    autoaugment=bool(cfg.autoaugment), drop_path=cfg.drop_path, grad_clip=cfg.grad_clip,
                    label_smoothing=cfg.label_smoothing, amp=cfg.amp, seed=cfg.seed,
                    train_subset=cfg.train_subset),
        versions=dict(torch=torch.__version__, python=platform.python_version()),
        checkpoint=CHECKPOINT_NAME,
    )
    path = atomic_write(run.out / 'metrics.json', json.dumps(result, indent=2) + '\n')
    print(f'{run.name} on {cfg.dataset} {result["split"]}: top-1 {metrics["top1"]:.2f}%, '
          f'top-5 {metrics["top5"]:.2f}% ({metrics["num_images"]} images); {path}')
    return path
