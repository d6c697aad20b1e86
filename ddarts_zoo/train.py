"""Final-network training (``ddarts-zoo train``): a derived network trained from scratch, with resume.

:class:`~ddarts_zoo.train_config.TrainConfig` holds the recipe; :func:`train` runs it.  One process, or one
per GPU / CPU process under ``torchrun`` (DDP).  Rank 0 alone writes ``checkpoint.pth`` (atomically, after
every epoch, through :mod:`ddarts_zoo.utils.checkpoint`), ``log.csv``, ``tb/``, ``args.json`` and, at the end,
``metrics.json``.  The checkpoint carries every rank's RNG state, so a resumed run (``--resume``, or a worker
restarted by ``torchrun --max-restarts`` with ``--resume auto``) continues exactly as if never interrupted.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from .errors import UnreadableFileError, describe_file
from .train_config import CHECKPOINT_NAME, RESUME_AUTO, RESUME_LAST, TrainConfig, TrainConfigError
from .train_loops import TrainingDivergedError, cosine_lr, evaluate, train_one_epoch
from .train_setup import TrainRun, build_run, write_metrics
from .utils.checkpoint import (gather_rng_states, load_checkpoint, remove_stale_temps, restore_rank_rng,
                               save_checkpoint)
from .utils.dist import elastic_restart_count, init_distributed
from .utils.io import atomic_write
from .utils.logs import EpochLog
from .utils.seed import seed_everything

__all__ = ['CHECKPOINT_NAME', 'CHECKPOINT_FORMAT', 'CHECKPOINT_VERSION', 'TrainConfig',
           'TrainingDivergedError', 'TrainRun', 'train', 'load_train_checkpoint']

CHECKPOINT_FORMAT = 'ddarts-zoo/train-checkpoint'
CHECKPOINT_VERSION = 2   # 2: 'rng' lists every rank's state; 1 (no 'version' field): one process's state
CHECKPOINT_KEYS = ('epoch', 'model_name', 'model_args', 'model', 'optimizer', 'scaler', 'rng')
CSV_FIELDS = ('epoch', 'lr', 'drop_path', 'train_loss', 'train_top1', 'test_loss', 'test_top1', 'test_top5',
              'epoch_time_s')
WRITTEN_FILES = (CHECKPOINT_NAME, 'log.csv', 'args.json', 'metrics.json')


# ---------------------------------------------------------------------------------------------- checkpoint
def load_train_checkpoint(path: Path) -> Dict[str, Any]:
    """A checkpoint written by ``ddarts-zoo train`` (tensors only; version 1 and 2), ``rng`` as a list."""
    what = 'a checkpoint written by ddarts-zoo train'
    ckpt = load_checkpoint(path, kind=CHECKPOINT_FORMAT, versions=(1, CHECKPOINT_VERSION), what=what)
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise UnreadableFileError(f'{describe_file(path)}: no {", ".join(missing)} in it; expected {what}')
    if isinstance(ckpt['rng'], dict):   # version 1: the single process's state
        ckpt['rng'] = [ckpt['rng']]
    return ckpt


def _resume_path(cfg: TrainConfig) -> Optional[Path]:
    """The checkpoint to continue, None to start; refuses to start over an existing run's checkpoint."""
    if cfg.resume is None:
        if cfg.checkpoint_path.exists():
            raise TrainConfigError(f'--out {cfg.out} already holds a run ({cfg.checkpoint_path}); continue '
                                   f'it with --resume auto, or choose another --out')
        return None
    if cfg.resume == RESUME_AUTO:
        return cfg.checkpoint_path if cfg.checkpoint_path.exists() else None
    path = cfg.checkpoint_path if cfg.resume == RESUME_LAST else Path(cfg.resume)
    if not path.is_file():
        raise UnreadableFileError(f'--resume: no checkpoint at {describe_file(path)}')
    return path


def _restore(run: TrainRun, path: Path) -> None:
    """Load the network, optimizer, scaler, epoch and RNG states of ``path`` into ``run``."""
    ckpt = load_train_checkpoint(path)
    if (ckpt['model_name'], ckpt['model_args']) != (run.name, run.model_args):
        raise TrainConfigError(f'{path}: it holds {ckpt["model_name"]} {ckpt["model_args"]}, '
                               f'but this run builds {run.name} {run.model_args}')
    try:
        run.net.load_state_dict(ckpt['model'])
        run.optimizer.load_state_dict(ckpt['optimizer'])
        run.scaler.load_state_dict(ckpt['scaler'])
    except (KeyError, RuntimeError, ValueError) as err:
        raise UnreadableFileError(f'{describe_file(path)}: its state does not fit {run.name} ({err})'
                                  ) from None
    run.start_epoch, run.train_time = int(ckpt['epoch']), float(ckpt.get('train_time_s', 0.0))
    states, ctx = ckpt['rng'], run.ctx
    if len(states) == ctx.world_size:
        restore_rank_rng(states, ctx)
    else:  # another number of processes shards the data differently: no exact continuation anyway
        seed_everything(run.cfg.seed + ctx.rank + 1000 * run.start_epoch)
    if ctx.is_writer:
        note = '' if len(states) == ctx.world_size else f' (written by {len(states)} process(es): reseeded)'
        if elastic_restart_count():
            note += f' (torchrun restart {elastic_restart_count()})'
        print(f'resumed {path} at epoch {run.start_epoch}/{run.cfg.epochs}{note}')


def _save(run: TrainRun, epochs_done: int) -> None:
    """Every rank's RNG state (a collective), then rank 0 writes ``checkpoint.pth``."""
    rng = gather_rng_states(run.ctx)
    if not run.ctx.is_writer:
        return
    save_checkpoint(run.out / CHECKPOINT_NAME, dict(
        epoch=epochs_done, model_name=run.name, model_args=run.model_args, dataset=run.cfg.dataset,
        model=run.net.state_dict(), optimizer=run.optimizer.state_dict(), scaler=run.scaler.state_dict(),
        rng=rng, train_time_s=run.train_time, args=run.cfg.to_dict(), metrics=run.metrics or None),
        kind=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION)


# ---------------------------------------------------------------------------------------------- run
def train(cfg: TrainConfig) -> int:
    """Run the recipe of ``cfg`` (resolved and checked here); returns the exit code (0)."""
    cfg = cfg.resolved()
    cfg.check()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    resume = _resume_path(cfg)
    ctx = init_distributed(cfg.device, timeout_s=cfg.dist_timeout)
    cfg = cfg.for_device(ctx.device)
    try:
        run = build_run(cfg, ctx)
        if ctx.is_writer:
            for name in WRITTEN_FILES:   # temporary files of writes a kill interrupted
                remove_stale_temps(run.out / name)
        if resume is not None:
            _restore(run, resume)
        if ctx.is_writer:
            _announce(run)
        return _fit(run)
    finally:
        ctx.close()


def _announce(run: TrainRun) -> None:
    cfg = run.cfg
    atomic_write(run.out / 'args.json', json.dumps(
        dict(cfg.to_dict(), model_name=run.name, resolved_model_args=run.model_args,
             world_size=run.ctx.world_size), indent=2, default=str) + '\n')
    print(f'{run.name} {json.dumps(run.model_args)[:200]}: {run.params / 1e6:.3f}M params '
          f'(without aux head), '
          f'{cfg.dataset}: {run.train_images} train / {run.test_images} held-out images, '
          f'{run.ctx.world_size} process(es) on {run.ctx.device}')


def _fit(run: TrainRun) -> int:
    """The epochs from ``run.start_epoch``; then ``metrics.json`` (unless ``--stop-after`` stopped early)."""
    cfg, ctx = run.cfg, run.ctx
    logs = EpochLog(run.out / 'log.csv', CSV_FIELDS, ctx.is_writer, run.start_epoch, run.out / 'tb')
    end_epoch = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, cfg.stop_after)
    try:
        for epoch in range(run.start_epoch, end_epoch):
            _epoch(run, epoch, logs)
    finally:
        logs.close()
    if end_epoch < cfg.epochs:
        if ctx.is_writer:
            print(f'stopped after epoch {end_epoch}/{cfg.epochs}; continue with --resume')
        return 0
    if not run.metrics:  # resumed a finished run, or no epoch left: evaluate the checkpoint as it is
        run.metrics = evaluate(run.net, run.test_loader, ctx, cfg.amp, cfg.channels_last)
    if ctx.is_writer:
        write_metrics(run, run.metrics)
    return 0


def _epoch(run: TrainRun, epoch: int, logs: EpochLog) -> None:
    """Train one epoch, evaluate when due (into ``run.metrics``), save the checkpoint, log the epoch."""
    cfg, ctx = run.cfg, run.ctx
    tic = time.perf_counter()
    lr = cosine_lr(cfg.lr, cfg.min_lr, epoch, cfg.epochs)
    for group in run.optimizer.param_groups:
        group['lr'] = lr
    drop_path = cfg.drop_path * epoch / cfg.epochs
    run.net.set_drop_path(drop_path)
    run.train_loader.sampler.set_epoch(epoch)
    desc = f'epoch {epoch + 1}/{cfg.epochs}'
    train_loss, train_top1 = train_one_epoch(run.model, run.train_loader, run.optimizer, run.scaler, cfg, ctx,
                                             desc)
    row: Dict[str, Any] = dict(epoch=epoch, lr=lr, drop_path=drop_path, train_loss=train_loss,
                               train_top1=train_top1)
    if epoch + 1 == cfg.epochs or (cfg.eval_interval > 0 and (epoch + 1) % cfg.eval_interval == 0):
        run.metrics = evaluate(run.net, run.test_loader, ctx, cfg.amp, cfg.channels_last)
        m = run.metrics
        row.update(test_loss=m['loss'], test_top1=m['top1'], test_top5=m['top5'])
    elapsed = time.perf_counter() - tic
    run.train_time += elapsed
    row['epoch_time_s'] = elapsed
    _save(run, epoch + 1)
    if ctx.is_writer:
        logs.epoch(row)
        test = f', held-out top-1 {row["test_top1"]:.2f}%' if 'test_top1' in row else ''
        print(f'{desc}: lr {lr:.5f} loss {train_loss:.4f} train top-1 {train_top1:.2f}%{test} '
              f'({elapsed:.1f}s)', flush=True)
    ctx.barrier()
