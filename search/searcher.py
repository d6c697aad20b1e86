"""The search loop: epochs of architecture and weight steps, evaluation, parsing, early stop, resume.

Epochs ``1 .. pretrain`` update only the weights (DARTOpti, paper Sec. 5.4); every later epoch interleaves
one architecture step (:mod:`search.step`) and one weight step per batch pair.  After every epoch the
supernet is evaluated and parsed, and a checkpoint is written; ``--resume`` continues bit-exactly.  Under
``torchrun`` every rank owns a shard of each epoch and rank 0 alone writes files.
"""
from __future__ import annotations

import json
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ddarts_zoo.errors import UserError
from ddarts_zoo.genotype import Genotype
from ddarts_zoo.utils.dist import DistContext, EpochShardSampler, broadcast_module_, elastic_restart_count, \
    init_distributed
from ddarts_zoo.utils.seed import seed_everything

from .checkpoint import load_checkpoint, restore_checkpoint, save_checkpoint
from .config import SearchConfig, build_supernet
from .data import build_search_data
from .epoch_stats import EpochStats
from .logs import RunLog, end_of_search_text
from .loss_terms import upcast
from .nonfinite import nonfinite_tensors, warn_nonfinite_metrics
from .run_dir import AUTO, agree_on_run_dir, auto_resume_dir, check_resume_path, check_same_options, \
    remove_stale_temps
from .step import NonFiniteLossError, SearchUpdates

__all__ = ['Searcher', 'SearchResult', 'should_stop_early']


def should_stop_early(distances: Sequence[float], epoch: int, patience: int = 5, tol: float = 1e-3,
                      start: int = 10) -> bool:
    """Paper Sec. 5.4: stop once the distance to the baseline has changed by at most ``tol`` for ``patience``
    consecutive epochs, checked from (1-based) epoch ``start`` on, pre-training included.

    ``distances[e]`` is the distance after (0-based) epoch ``e``; ``epoch`` is the 0-based epoch just ended.
    """
    if epoch + 1 < start or len(distances) < patience + 1:
        return False
    recent = distances[-(patience + 1):]
    return all(abs(b - a) <= tol for a, b in zip(recent, recent[1:]))


@dataclass
class SearchResult:
    run_dir: Optional[Path]
    genotypes: Dict[str, Genotype]
    history: List[Dict[str, Any]]
    stopped_early: bool
    epochs_completed: int


class Searcher:
    """Runs (or resumes) one search.

    Args:
        cfg: the configuration (ignored when resuming: the checkpoint's own configuration is used).
        ctx: distributed context (default: :func:`ddarts_zoo.utils.dist.init_distributed`).
        resume: a run directory or checkpoint to continue; ``'auto'``: continue ``cfg.out / cfg.name`` when it
            holds a checkpoint written with the same options, else start it there (elastic restarts).
        distance_fn: ``f(genotype_a, genotype_b) -> float`` (default
            :func:`ddarts_zoo.distance.architecture_distance`).
        step_callback: called as ``f(searcher, epoch, step)`` after every step (tests, tooling).
    """

    def __init__(self, cfg: Optional[SearchConfig] = None, *, ctx: Optional[DistContext] = None,
                 resume: Optional['str | os.PathLike'] = None,
                 distance_fn: Optional[Callable[[Genotype, Genotype], float]] = None,
                 step_callback: Optional[Callable[['Searcher', int, int], None]] = None) -> None:
        self.ckpt: Optional[Dict[str, Any]] = None
        self.run_dir: Optional[Path] = None
        self.auto_resume = resume is not None and str(resume) == AUTO
        if self.auto_resume:
            if cfg is None:
                raise UserError('--resume auto needs the options of the run to continue or start (--name ...)')
            resume = auto_resume_dir(cfg.out, cfg.name)
        if resume is not None:
            check_resume_path(resume)
            self.ckpt = load_checkpoint(resume)
            saved = SearchConfig.from_dict(self.ckpt['config'])
            if self.auto_resume:
                check_same_options(saved.to_dict(), cfg.to_dict(), Path(resume))
            if cfg is not None:   # options that do not change the search may change on resume
                saved.progress, saved.dist_timeout = cfg.progress, cfg.dist_timeout
            cfg = saved
            self.run_dir = Path(resume) if Path(resume).is_dir() else Path(resume).parent
        cfg = cfg or SearchConfig()
        cfg.check()
        self.cfg = cfg
        self.ctx = ctx or init_distributed(cfg.device, timeout_s=cfg.dist_timeout)
        self.distance_fn = distance_fn
        self.step_callback = step_callback
        self._setup()

    @property
    def written(self) -> List[str]:
        """Every file this run wrote (empty on ranks other than 0)."""
        return self.logs.written

    # ------------------------------------------------------------------ setup
    def _make_run_dir(self) -> Path:
        """The resumed run's directory, or a new one (:func:`search.run_dir.agree_on_run_dir`)."""
        cfg, path = self.cfg, self.run_dir
        if path is None:
            name = cfg.name
            if name is None:
                tag = cfg.preset or ('dartopti-' + Path(cfg.baseline).stem if cfg.baseline else 'search')
                mode = ''.join(f'-{v}' for v in (cfg.cells, cfg.mixing) if v not in ('individual', 'sigmoid'))
                name = f'{time.strftime("%Y%m%d-%H%M%S")}-{tag}-{cfg.dataset}-{cfg.loss}{mode}-s{cfg.seed}'
            path = Path(cfg.out) / name
        return agree_on_run_dir(self.ctx, path, cfg.to_dict(), new=self.run_dir is None, auto=self.auto_resume,
                                start_epoch=self.start_epoch)

    def _setup(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        if cfg.threads is not None or ctx.device.type == 'cpu':
            # thousands of tiny ops per step: intra-op threads gain little on CPU, and OpenMP spin-waiting
            # is very slow on a contended machine.  One per process unless --threads says otherwise.
            torch.set_num_threads(cfg.threads or 1)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
            if torch.backends.cudnn.is_available():
                torch.backends.cudnn.benchmark = False
        seed_everything(cfg.seed)
        self.weight_ds, self.arch_ds, self.info = build_search_data(cfg, cache_dir=self.run_dir)
        if cfg.baseline:
            from ddarts_zoo.genotypes import load_genotype
            self.baseline: Optional[Genotype] = load_genotype(cfg.baseline)
        else:
            self.baseline = None
        self.net = build_supernet(cfg, self.info.num_classes, self.info.in_chans).to(ctx.device)
        broadcast_module_(self.net, ctx)
        self.updates = SearchUpdates(self.net, cfg, ctx)
        # per-rank streams for data augmentation / workers; the model init above is identical on all ranks
        seed_everything(cfg.seed + 1_000 * ctx.rank)

        def sampler(size: int, stream: int) -> EpochShardSampler:   # epoch e of stream k: seed (2s+k)*1000003+e
            return EpochShardSampler(size, ctx.rank, ctx.world_size, seed=(cfg.seed * 2 + stream) * 1_000_003)

        self.w_sampler, self.a_sampler = sampler(len(self.weight_ds), 1), sampler(len(self.arch_ds), 2)
        for label, s in (('weight', self.w_sampler), ('architecture', self.a_sampler)):
            if len(s) < cfg.batch_size:
                raise ValueError(f'the {label} split has {len(s)} images per rank, fewer than --batch-size '
                                 f'{cfg.batch_size}')
        loader_kw: Dict[str, Any] = dict(batch_size=cfg.batch_size, drop_last=True, num_workers=cfg.workers,
                                         pin_memory=ctx.device.type == 'cuda')
        self.w_loader = DataLoader(self.weight_ds, sampler=self.w_sampler, **loader_kw)
        self.a_loader = DataLoader(self.arch_ds, sampler=self.a_sampler, **loader_kw)
        self.eval_loader = DataLoader(self.arch_ds, sampler=sampler(len(self.arch_ds), 3),
                                      **dict(loader_kw, drop_last=False))
        self.history: List[Dict[str, Any]] = []
        self.start_epoch = self.global_step = 0
        self.stopped_early = False
        if self.ckpt is not None:
            restore_checkpoint(self, self.ckpt)
        self.run_dir = self._make_run_dir()
        # what writes a kill interrupted left behind (rank 0 alone writes, and nothing is being written yet)
        self.stale_removed = remove_stale_temps(self.run_dir) if ctx.is_writer else []
        self.logs = RunLog(self.run_dir, ctx, cfg.tensorboard)

    # ------------------------------------------------------------------ evaluation / genotypes
    @torch.no_grad()
    def evaluate(self) -> Tuple[float, float]:
        """Cross entropy and accuracy of the supernet (eval mode) on the architecture split."""
        self.net.eval()
        tot = torch.zeros(3, dtype=torch.float64, device=self.ctx.device)
        for x, y in self.eval_loader:
            x, y = x.to(self.ctx.device, non_blocking=True), y.to(self.ctx.device, non_blocking=True)
            with self.updates.autocast():
                logits = self.net(x, self.net.mixing_weights(detach=True))
            tot[0] += F.cross_entropy(upcast(logits), y, reduction='sum').double()
            tot[1] += (logits.argmax(1) == y).sum()
            tot[2] += y.numel()
        self.net.train()
        if self.ctx.enabled:
            dist.all_reduce(tot)
        n = max(float(tot[2]), 1.0)
        return float(tot[0]) / n, float(tot[1]) / n

    def genotypes(self, epochs_done: Optional[int] = None) -> Dict[str, Genotype]:
        """The current genotypes: sparse and edge (and darts with ``--parse darts``); darts alone with softmax
        mixing (:meth:`search.mixing.Mixing.written_parsings`)."""
        cfg = self.cfg
        meta = {
            'source': 'ddarts-zoo search/run.py', 'dataset': cfg.dataset, **self.updates.loss.meta(),
            'cells': cfg.cells,
            'search_layers': self.net.layers, 'search_channels': cfg.channels,
            'search_reductions': list(self.net.reductions), 'op_names': list(self.net.op_names),
            'epochs': epochs_done, 'seed': cfg.seed, 'preset': cfg.preset, 'baseline': cfg.baseline,
        }
        run_name = self.run_dir.name if self.run_dir is not None else 'search'
        out = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            for m in self.net.mixing.written_parsings(cfg.parse):
                out[m] = self.net.genotype(m, cfg.threshold, name=f'{run_name}_{m}', meta=meta)
        self.parse_notes = [str(w.message) for w in caught]
        return out

    def _distance(self, geno: Genotype) -> float:
        if self.distance_fn is None:
            from ddarts_zoo.distance import architecture_distance
            self.distance_fn = architecture_distance
        return float(self.distance_fn(self.baseline, geno))

    # ------------------------------------------------------------------ the loop
    def steps_per_epoch(self) -> int:
        n = min(len(self.w_loader), len(self.a_loader))
        return min(n, self.cfg.max_steps_per_epoch) if self.cfg.max_steps_per_epoch else n

    def _batches(self, epoch: int) -> Iterator[Tuple[Any, Any]]:
        self.w_sampler.set_epoch(epoch)
        self.a_sampler.set_epoch(epoch)
        n = self.steps_per_epoch()
        for k, (wb, ab) in enumerate(zip(self.w_loader, self.a_loader)):
            if k >= n:
                break
            yield wb, ab

    def train_epoch(self, epoch: int) -> Dict[str, Any]:
        """One epoch of steps; returns its record (mean losses and accuracies, per-cell statistics).

        The step statistics stay on the device (:class:`~search.epoch_stats.EpochStats`) and are read once
        per progress-bar refresh and once at the end of the epoch.
        """
        cfg, dev, updates = self.cfg, self.ctx.device, self.updates
        searching = epoch >= cfg.pretrain
        phase = 'search' if searching else 'pretrain'
        self.net.train()
        stats = EpochStats(self.net, updates.loss)
        n_steps = self.steps_per_epoch()
        refresh = max(1, n_steps // 20)   # progress-bar lines per epoch: about 20, one host read each
        bar = None
        if cfg.progress and self.ctx.is_writer:
            from tqdm import tqdm
            bar = tqdm(total=n_steps, desc=f'epoch {epoch + 1}/{cfg.total_epochs} ({phase})', leave=False,
                       dynamic_ncols=True, file=sys.stderr)
        t0 = time.time()
        for step, ((xw, yw), (xa, ya)) in enumerate(self._batches(epoch)):
            xw, yw = xw.to(dev, non_blocking=True), yw.to(dev, non_blocking=True)
            res = None
            if searching:
                xa, ya = xa.to(dev, non_blocking=True), ya.to(dev, non_blocking=True)
                res = updates.arch_step(xa, ya, epoch, step, self.global_step)
                if res is not None:
                    stats.add_arch(res, self.global_step)
            wres = updates.weight_step(xw, yw, epoch, step, self.global_step)
            if wres is not None:
                stats.add_weight(wres, self.global_step)
            if (res is not None or not searching) and wres is not None:
                updates.consecutive_nonfinite = 0
            self.global_step += 1
            if bar is not None:
                bar.update(1)
                if (step + 1) % refresh == 0:
                    bar.set_postfix(**stats.progress())
            if self.step_callback is not None:
                self.step_callback(self, epoch, step)
        if bar is not None:
            bar.close()
        rec = {'epoch': epoch + 1, 'phase': phase, 'steps': n_steps,
               'lr': updates.w_opt.param_groups[0]['lr'], 'arch_lr': updates.arch.lrs[0] if searching else None}
        rec.update(stats.record(searching, logs=self.logs))
        rec['time_s'] = time.time() - t0
        return rec

    def run(self) -> SearchResult:
        """Search until the last epoch (or an early stop); write genotypes, logs and plots."""
        self.logs.open(self.global_step)
        try:
            return self._run()
        finally:
            self.logs.close()

    def _run(self) -> SearchResult:
        cfg, net = self.cfg, self.net
        if self.ckpt is None:
            self.logs.write_text('config.json', json.dumps(cfg.to_dict(), indent=1) + '\n')
            if self.info.stats_file:   # an image folder's statistics, reused from here on --resume
                stats = Path(self.info.stats_file).read_text(encoding='utf-8')
                self.logs.write_text('data_stats.json', stats)
            n_weights = sum(p.numel() for p in self.updates.w_params) / 1e6
            self.logs.info(f'search run {self.run_dir}: {net.layers} cells {list(net.cell_groups)}, reductions '
                           f'{list(net.reductions)}, C={cfg.channels}, {len(net.op_names)} ops, {n_weights:.3f}M '
                           f'weights, {len(self.updates.agents)} alpha group(s), {self.steps_per_epoch()} steps/epoch '
                           f'x {cfg.total_epochs} epochs, world size {self.ctx.world_size}, device {self.ctx.device}')
        else:
            restart = elastic_restart_count()
            self.logs.info(f'resuming {self.run_dir} after epoch {self.start_epoch} (global step {self.global_step})'
                           + (f'; torchrun restart {restart}' if restart else ''))
        if self.stale_removed:
            self.logs.info(f'removed {len(self.stale_removed)} temporary file(s) of interrupted writes: '
                           + ', '.join(str(p.relative_to(self.run_dir)) for p in self.stale_removed))
        distances = [h['distance'] for h in self.history if h.get('distance') is not None]
        epoch = self.start_epoch
        while epoch < cfg.total_epochs and not self.stopped_early:
            rec = self.train_epoch(epoch)
            # BN running statistics follow each rank's shard: take rank 0's (as DDP's broadcast_buffers does),
            # so that evaluation and the checkpoint (hence a resume) see one state
            broadcast_module_(net, self.ctx, buffers_only=True)
            self.updates.end_epoch(searching=epoch >= cfg.pretrain)
            if cfg.eval:
                rec['valid_loss'], rec['valid_acc'] = self.evaluate()
            rec['entropy'] = net.alpha_entropies()
            genos = self.genotypes(epoch + 1)
            rec['genotypes'] = {k: g.to_dict() for k, g in genos.items()}
            rec['empty_cells'] = {k: g.meta.get('empty_cells', []) for k, g in genos.items()}
            if self.baseline is not None:
                rec['distance'] = self._distance(genos.get('edge', genos[cfg.parse]))
                distances.append(rec['distance'])
                self.logs.scalar('distance', rec['distance'], epoch + 1)
            rec['nonfinite_skipped'] = self.updates.nonfinite_skipped
            self.history.append(rec)
            if (cfg.early_stop_enabled and self.baseline is not None
                    and should_stop_early(distances, epoch, cfg.early_stop_patience, cfg.early_stop_tol,
                                          cfg.early_stop_from)):
                self.stopped_early = True
                rec['early_stop'] = True
            self.logs.epoch(rec, cfg.total_epochs, genos, cfg.parse, self.parse_notes)
            self._check_finite(rec)
            save_checkpoint(self, epoch + 1)
            self.logs.write_history(self.history)
            epoch += 1
            if self.stopped_early:
                self.logs.info(f'early stop after epoch {epoch}: the distance to the baseline changed by <= '
                               f'{cfg.early_stop_tol} for {cfg.early_stop_patience} consecutive epochs')
        return self._finish(epoch)

    def _check_finite(self, rec: Dict[str, Any]) -> None:
        """Warn about a non-finite metric of the epoch; refuse to checkpoint a state holding a NaN/inf."""
        if self.ctx.is_writer:
            msg = warn_nonfinite_metrics(rec)
            if msg:
                self.logs.detail(f'WARNING: {msg}')
        bad = nonfinite_tensors({'model': self.net.state_dict(), **self.updates.state_dict()})
        if bad:   # identical on every rank: the weights and optimizer states agree, BN statistics are rank 0's
            raise NonFiniteLossError(
                f'epoch {rec["epoch"]}: {len(bad)} tensor(s) of the search state hold NaN/inf ({", ".join(bad[:3])}'
                f'{", ..." if len(bad) > 3 else ""}); its checkpoint was not written (the previous one is intact): '
                f'lower --lr / --arch-lr')

    def _finish(self, epochs_done: int) -> SearchResult:
        cfg = self.cfg
        genos = self.genotypes(epochs_done)
        if self.baseline is not None:
            for g in genos.values():
                g.meta['distance_to_baseline'] = self._distance(genos.get('edge', genos[cfg.parse]))
        for k, g in genos.items():
            self.logs.save_genotype(g, f'genotype_{k}.json')
        primary = genos[cfg.parse]
        self.logs.save_genotype(primary, 'genotype.json')
        if cfg.derive_layers and cfg.derive_layers > primary.num_cells:
            try:
                big = primary.expand(cfg.derive_layers)
                self.logs.save_genotype(big, f'genotype_{cfg.parse}_l{cfg.derive_layers}.json')
                genos[f'{cfg.parse}_l{cfg.derive_layers}'] = big
            except Exception as err:  # Algorithm 1 refuses > 2 reductions: say so, keep the search result
                self.logs.info(f'could not derive a {cfg.derive_layers}-cell genotype: {err}')
        if cfg.plots:
            self.logs.plots(self.history, self.net, cfg.threshold)
        stop = ' (early stop)' if self.stopped_early else ''
        self.logs.info(f'\nsearch finished after {epochs_done} epoch(s){stop}; run directory {self.run_dir}')
        self.logs.info(end_of_search_text(self.run_dir, genos, cfg.parse, self.logs.written, cfg.dataset,
                                          cfg.data))
        self.ctx.barrier()
        return SearchResult(self.run_dir, genos, self.history, self.stopped_early, epochs_done)
