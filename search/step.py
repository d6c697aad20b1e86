"""One search step (paper Sec. 4.2, first order): the architecture update of every cell, then the weight
update.

:class:`SearchUpdates` holds the search's :class:`~search.losses.SearchLoss` (which computes every alpha
group's gradient, :mod:`search.losses`), every alpha group's Adam step as one multi-tensor update
(:class:`search.arch_optimizer.ArchOptimizer`) and one SGD step of the weights on cross entropy; gradients
are averaged across ranks; AMP with a ``GradScaler`` for float16 (an overflow skips the update and lowers the
scale); optional CUDA graphs (:mod:`search.graphs`).  Each update reads its finite flags with one
device-to-host transfer; the statistics it returns stay on the device (:mod:`search.epoch_stats`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Callable, ContextManager, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn

from ddarts_zoo.utils.amp import amp_dtype, autocast, make_grad_scaler, parse_amp_dtype, unscale_and_clip_
from ddarts_zoo.utils.dist import DistContext, allreduce_mean_

from .arch_optimizer import ArchOptimizer
from .config import SearchConfig
from .graphs import GraphedCall
from .loss_terms import ablation_losses, cross_entropy
from .losses import ArchGradients, build_loss
from .marginal import random_mixing_weights
from .nonfinite import BufferSnapshot, all_finite
from .supernet import SuperNet

__all__ = ['NonFiniteLossError', 'CellAgent', 'cell_agents', 'WeightResult', 'SearchUpdates']

log = logging.getLogger('ddarts_search')


class NonFiniteLossError(FloatingPointError):
    """A loss or gradient became NaN/inf (and ``--nonfinite error`` or the skip budget was exhausted)."""


@dataclass
class CellAgent:
    """One alpha group: a cell, or a group of cells sharing one alpha (DARTOpti, ``--cells shared``)."""

    group: int
    cells: Tuple[int, ...]
    alpha: nn.Parameter


def cell_agents(net: SuperNet) -> List[CellAgent]:
    return [CellAgent(net.group_ids[k], net.cells_of_group(k), a) for k, a in enumerate(net.alphas)]


@dataclass
class WeightResult:
    """Cross entropy and correct predictions of one weight update (device tensors)."""

    loss: torch.Tensor
    correct: torch.Tensor
    count: int


class SearchUpdates:
    """The loss and optimizers of a search and its two updates; non-finite steps are skipped (or raised).

    Owns the :class:`~search.losses.SearchLoss` (``cfg.loss`` for the supernet's mixing), the alpha groups'
    :class:`~search.arch_optimizer.ArchOptimizer`, the weight SGD + cosine schedule,
    one AMP scaler per update (active for float16 only), the generator of the switched-off cells' random
    mixing weights and, with ``cfg.cuda_graphs`` on a CUDA device, one CUDA graph per update.
    """

    def __init__(self, net: SuperNet, cfg: SearchConfig, ctx: DistContext) -> None:
        self.net, self.cfg, self.ctx = net, cfg, ctx
        self.loss = build_loss(cfg.loss, net.mixing, cfg.w01, cfg.w_abl)
        self.agents = cell_agents(net)
        self.arch = ArchOptimizer(net.arch_parameters(), cfg.arch_lr, cfg.arch_betas, cfg.arch_weight_decay,
                                  cfg.epochs, cfg.arch_lr_min)
        self.w_params = net.weight_parameters()
        self.w_opt = torch.optim.SGD(self.w_params, lr=cfg.lr, momentum=cfg.momentum,
                                     weight_decay=cfg.weight_decay)
        self.w_sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_opt, T_max=max(cfg.total_epochs, 1),
                                                                  eta_min=cfg.lr_min)
        self.amp_dtype = amp_dtype(ctx.device, parse_amp_dtype(cfg.amp_dtype)) if cfg.amp else None
        self.w_scaler = make_grad_scaler(ctx.device, cfg.amp, self.amp_dtype)
        self.a_scaler = make_grad_scaler(ctx.device, cfg.amp, self.amp_dtype)
        self.mc_gen = torch.Generator(device=ctx.device).manual_seed(cfg.seed + 7_919)
        self.nonfinite_skipped = 0
        self.consecutive_nonfinite = 0
        self.bn_state = BufferSnapshot(net)   # a skipped step puts back the BN statistics its forward changed
        # graphs replay fixed kernels: only losses without host reads inside qualify
        self.graphs = bool(cfg.cuda_graphs) and ctx.device.type == 'cuda' and self.loss.graph_capture
        self._arch_call: Callable[..., ArchGradients] = self._arch_compute
        self._weight_call: Callable[..., Tuple[torch.Tensor, torch.Tensor]] = self._weight_compute
        if self.graphs:
            self._arch_call = GraphedCall(self._arch_compute, warmup=2)
            self._weight_call = GraphedCall(self._weight_compute, warmup=2,
                                            before_capture=self._drop_weight_grads)

    def autocast(self) -> ContextManager:
        # the autocast weight cache must be off while a CUDA graph is captured
        return autocast(self.ctx.device, self.amp_dtype is not None, self.amp_dtype, cache=not self.graphs)

    def end_epoch(self, searching: bool) -> None:
        """Advance the cosine schedules (the alphas' only in search epochs)."""
        self.w_sched.step()
        if searching:
            self.arch.scheduler.step()

    def state_dict(self) -> Dict[str, Any]:
        return {
            'weight_optimizer': self.w_opt.state_dict(), 'weight_scheduler': self.w_sched.state_dict(),
            'arch_optimizer': self.arch.state_dict(),
            'scalers': {'weight': self.w_scaler.state_dict(), 'arch': self.a_scaler.state_dict()},
            'nonfinite_skipped': self.nonfinite_skipped,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.w_opt.load_state_dict(state['weight_optimizer'])
        self.w_sched.load_state_dict(state['weight_scheduler'])
        self.arch.load_state_dict(state['arch_optimizer'])
        self.w_scaler.load_state_dict(state['scalers']['weight'])
        self.a_scaler.load_state_dict(state['scalers']['arch'])
        self.nonfinite_skipped = int(state.get('nonfinite_skipped', 0))

    def _handle_nonfinite(self, what: str, epoch: int, step: int, global_step: int) -> None:
        self.nonfinite_skipped += 1
        self.consecutive_nonfinite += 1
        msg = (f'non-finite {what} at epoch {epoch + 1}, step {step + 1} (global step {global_step}); '
               f'the update was skipped')
        hint = 'lower --lr / --arch-lr, check the data for NaNs' + (', or run without --amp' if self.cfg.amp else '')
        if self.cfg.nonfinite == 'error':
            raise NonFiniteLossError(f'{msg.replace("; the update was skipped", "")}: {hint} '
                                     f'(--nonfinite skip skips such steps)')
        if self.consecutive_nonfinite > self.cfg.max_nonfinite:
            raise NonFiniteLossError(f'{msg}; {self.consecutive_nonfinite} consecutive non-finite steps exceed '
                                     f'--max-nonfinite {self.cfg.max_nonfinite}: {hint}')
        if self.ctx.is_writer:
            log.warning(f'WARNING: {msg}')

    def _read_flags(self, *flags: torch.Tensor) -> List[bool]:
        """Boolean device flags, and-ed over the ranks, read with one device-to-host transfer."""
        t = torch.stack(flags).to(torch.float32)
        if self.ctx.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return [v > 0 for v in t.tolist()]

    def _skip(self, what: str, loss_ok: bool, scaler: Any, epoch: int, step: int, global_step: int,
              stats_ok: bool = True) -> None:
        """A skipped update (BN statistics already restored): an fp16 overflow lowers the loss scale,
        anything else (``stats_ok`` False: the forward pass made a BN running statistic NaN/inf) counts as
        non-finite."""
        if loss_ok and stats_ok and scaler.is_enabled():
            if self.ctx.is_writer:
                log.warning(f'fp16 overflow in the {what} gradients at epoch {epoch + 1}, step {step + 1}: '
                            f'step skipped, loss scale lowered to {scaler.get_scale():g}')
            return
        self._handle_nonfinite(f'{what} loss (cross entropy)' if not loss_ok else
                               f'{what} gradient' if stats_ok else f'BN running statistics ({what} pass)',
                               epoch, step, global_step)

    # ------------------------------------------------------------------ architecture
    def _arch_compute(self, x: torch.Tensor, y: torch.Tensor, *random_weights: torch.Tensor) -> ArchGradients:
        return self.loss.gradients(self.net, x, y, list(random_weights) or None, autocast=self.autocast,
                                   scale=self.a_scaler.scale if self.a_scaler.is_enabled() else None,
                                   mc_reduce=None if self.graphs else self._mc_reduce,
                                   mc_batched=self.cfg.mc_batched)

    def _mc_reduce(self, mc: torch.Tensor) -> torch.Tensor:
        """The marginal contributions averaged across ranks (a collective; identity in one process)."""
        if not self.ctx.enabled:
            return mc
        mc = mc.clone()
        allreduce_mean_([mc], self.ctx)
        return mc

    def arch_step(self, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int, global_step: int = 0
                  ) -> Optional[ArchGradients]:
        """One architecture update of every cell; returns the statistics (None when skipped)."""
        rand = random_mixing_weights(self.net, self.mc_gen) if self.loss.needs_mc else []
        self.bn_state.save()
        res = self._arch_call(x, y, *rand)
        if self.graphs and res.mc is not None and self.ctx.enabled:   # collectives run outside the graph
            mc = self._mc_reduce(res.mc)
            res = replace(res, mc=mc, abl=ablation_losses(mc))   # the graph's own outputs stay untouched
        allreduce_mean_(res.grads, self.ctx)
        for agent, g in zip(self.agents, res.grads):
            agent.alpha.grad = g
        self.a_scaler.unscale_(self.arch.optimizer)   # a no-op unless float16
        loss_ok, grads_ok, stats_ok = self._read_flags(torch.isfinite(res.ce), all_finite(res.grads),
                                                       self.bn_state.finite())
        if loss_ok and grads_ok and stats_ok:
            self.arch.step()
        for agent in self.agents:
            agent.alpha.grad = None
        self.a_scaler.update()   # float16: grows the scale, or lowers it after an overflow
        if not (loss_ok and grads_ok and stats_ok):
            self.bn_state.restore()
            what = 'architecture' if not loss_ok else 'alpha'
            self._skip(what, loss_ok, self.a_scaler, epoch, step, global_step, stats_ok)
            return None
        return res

    # ------------------------------------------------------------------ weights
    def _drop_weight_grads(self) -> None:
        for p in self.w_params:
            p.grad = None

    def _weight_compute(self, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        self._drop_weight_grads()   # under a graph this runs once, at the capture: replays refill the .grad
        with self.autocast():
            logits = self.net(x, self.net.mixing_weights(detach=True))
        loss = cross_entropy(logits, y)
        self.w_scaler.scale(loss).backward()
        for p in self.w_params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        return loss.detach(), (logits.detach().argmax(1) == y).sum()

    def weight_step(self, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int, global_step: int = 0
                    ) -> Optional[WeightResult]:
        """One SGD update of the supernet weights with cross entropy (None when skipped as non-finite; an
        fp16 overflow skips the update but returns the statistics)."""
        self.bn_state.save()
        loss, correct = self._weight_call(x, y)
        grads = [p.grad for p in self.w_params]
        allreduce_mean_(grads, self.ctx)
        norm = unscale_and_clip_(self.w_scaler, self.w_opt, self.w_params, self.cfg.grad_clip)
        loss_ok, grads_ok, stats_ok = self._read_flags(torch.isfinite(loss), torch.isfinite(norm),
                                                       self.bn_state.finite())
        if loss_ok and grads_ok and stats_ok:
            self.w_opt.step()
        elif not self.graphs:
            self._drop_weight_grads()
        self.w_scaler.update()
        result = WeightResult(loss, correct, int(y.numel()))
        if not (loss_ok and grads_ok and stats_ok):
            self.bn_state.restore()
            self._skip('weight', loss_ok, self.w_scaler, epoch, step, global_step, stats_ok)
            return result if loss_ok and stats_ok and self.w_scaler.is_enabled() else None
        return result
