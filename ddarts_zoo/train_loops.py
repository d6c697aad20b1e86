"""The step, epoch and evaluation loops of final-network training (:mod:`ddarts_zoo.train`).

A step: forward (with the auxiliary head), backward through the AMP scaler, then the update sequence shared
with the search (:func:`~ddarts_zoo.utils.amp.unscale_and_clip_`).  A non-finite loss stops training with
:class:`TrainingDivergedError` before the update.  So does a non-finite gradient norm (DDP has averaged the
gradients, so every rank decides alike), except with the float16 scaler, where it is an overflow: the scaler
skips the update and lowers its scale, as ``GradScaler`` does.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .errors import UserError
from .train_config import TrainConfig
from .utils.amp import autocast, unscale_and_clip_
from .utils.dist import DistContext

__all__ = ['TrainForward', 'TrainingDivergedError', 'topk_correct', 'cosine_lr', 'train_step',
           'train_one_epoch', 'evaluate']


class TrainingDivergedError(UserError, FloatingPointError):
    """The loss or the gradients became NaN / inf (usually a too-high ``--lr``); no update was applied."""


class TrainForward(nn.Module):
    """``forward`` returns ``forward_train``'s ``(logits, aux_logits)``: DDP then wraps the auxiliary head."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        if hasattr(self.net, 'forward_train'):
            return self.net.forward_train(x)
        return self.net(x), None


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


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
               scaler: 'torch.amp.GradScaler', cfg: TrainConfig, where: str
               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """One SGD update on ``(x, y)``; returns the detached loss and logits (``where`` names the step)."""
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing or 0.0)
    with autocast(x.device, cfg.amp):
        logits, aux_logits = model(x)
        loss = criterion(logits, y)
        if aux_logits is not None and cfg.aux_weight > 0:
            loss = loss + cfg.aux_weight * criterion(aux_logits, y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    params = [p for group in optimizer.param_groups for p in group['params'] if p.grad is not None]
    norm = unscale_and_clip_(scaler, optimizer, params, cfg.grad_clip)
    if not torch.isfinite(loss.detach()) or (not scaler.is_enabled() and not torch.isfinite(norm)):
        optimizer.zero_grad(set_to_none=True)
        raise TrainingDivergedError(f'{where}: the loss is {loss.item():.4g} and the gradient norm '
                                    f'{norm.item():.4g}; no update was applied (lower --lr, or train without '
                                    f'--amp)')
    scaler.step(optimizer)   # with the float16 scaler: skipped after an overflow
    scaler.update()
    return loss.detach(), logits.detach()


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    scaler: 'torch.amp.GradScaler', cfg: TrainConfig, ctx: DistContext,
                    desc: str) -> Tuple[float, float]:
    """One pass over the training shard; returns (mean loss, top-1 %) over all ranks."""
    model.train()
    loss_sum = correct = seen = 0.0
    for step, (x, y) in enumerate(_progress(loader, ctx.is_writer and cfg.progress, desc=desc)):
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
        x, y = _to(x, ctx.device, cfg.channels_last), y.to(ctx.device, non_blocking=True)
        loss, logits = train_step(model, x, y, optimizer, scaler, cfg, f'{desc}, step {step}')
        loss_sum += float(loss) * len(y)
        correct += float((logits.argmax(1) == y).sum())
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
    n = max(seen, 1)
    return dict(loss=loss_sum / n, top1=100.0 * top1 / n, top5=100.0 * top5 / n, num_images=int(seen))
