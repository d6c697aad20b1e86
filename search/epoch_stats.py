"""An epoch's step statistics, kept on the device and read with one transfer per log line.

Reading a CUDA tensor's value (``float()``, ``.item()``) waits for every queued kernel; doing it for every
statistic of every step would stall the GPU several times per step.  :class:`EpochStats` keeps one small
row per step on the device and reads them all at once: for a progress-bar line, for the epoch's record and
for the per-step TensorBoard scalars.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

__all__ = ['EpochStats']


class EpochStats:
    """Per-step rows of one epoch: architecture steps ``[ce, correct, L_i per cell, L01 per group, mc per
    cell]`` and weight steps ``[loss, correct]`` (float64, on the device), with their global steps.

    Args:
        net: the supernet (its cells and alpha groups).
        loss: the search's :class:`~search.losses.SearchLoss` (its per-cell loss ``L_i``, whether it has
            marginal contributions).
    """

    def __init__(self, net: Any, loss: Any) -> None:
        self.n_cells, self.n_groups = net.layers, len(net.alphas)
        self.loss = loss
        device = net.alphas[0].device
        self._group_of_cell = torch.tensor(net.group_of_cell, device=device)
        self._no_mc = torch.zeros(self.n_cells, dtype=torch.float64, device=device)
        self.arch_rows: List[torch.Tensor] = []
        self.weight_rows: List[torch.Tensor] = []
        self.arch_steps: List[int] = []
        self.weight_steps: List[int] = []
        self.arch_counts: List[int] = []
        self.weight_counts: List[int] = []

    def add_arch(self, res: Any, global_step: int) -> None:
        """Record an applied architecture step (an :class:`search.step.ArchGradients`)."""
        cells = self.loss.cell_losses(res, self._group_of_cell)
        mc = self._no_mc if res.mc is None else res.mc.detach().double()
        self.arch_rows.append(torch.cat([res.ce.double().reshape(1), res.correct.double().reshape(1), cells,
                                         res.l01.detach().double(), mc]))
        self.arch_steps.append(global_step)
        self.arch_counts.append(res.count)

    def add_weight(self, res: Any, global_step: int) -> None:
        """Record a weight step (a :class:`search.step.WeightResult`)."""
        self.weight_rows.append(torch.stack([res.loss.double(), res.correct.double()]))
        self.weight_steps.append(global_step)
        self.weight_counts.append(res.count)

    def _read(self) -> Tuple[np.ndarray, np.ndarray]:
        """(architecture rows, weight rows) as arrays, with one device-to-host transfer."""
        width = 2 + 2 * self.n_cells + self.n_groups
        parts = [torch.stack(self.arch_rows).reshape(-1)] if self.arch_rows else []
        parts += [torch.stack(self.weight_rows).reshape(-1)] if self.weight_rows else []
        flat = torch.cat(parts).cpu().numpy() if parts else np.zeros(0)
        n_arch = len(self.arch_rows) * width
        return flat[:n_arch].reshape(-1, width), flat[n_arch:].reshape(-1, 2)

    def progress(self) -> Dict[str, str]:
        """Mean weight loss and accuracy so far (one transfer), for a progress-bar line."""
        if not self.weight_rows:
            return {}
        loss, correct = torch.stack(self.weight_rows).sum(0).tolist()
        count = max(sum(self.weight_counts), 1)
        return {'loss': f'{loss / len(self.weight_rows):.3f}', 'acc': f'{correct / count:.3f}'}

    def record(self, searching: bool, logs: Optional[Any] = None) -> Dict[str, Any]:
        """The epoch's means (keys of the run's history); also writes the per-step scalars to ``logs``."""
        with_mc = self.loss.needs_mc
        arch, weight = self._read()
        n, g = self.n_cells, self.n_groups
        a_steps, w_steps = max(len(arch), 1), max(len(weight), 1)
        if logs is not None:
            for step, count, row in zip(self.weight_steps, self.weight_counts, weight):
                logs.scalar('weights/loss', float(row[0]), step)
                logs.scalar('weights/acc', float(row[1]) / max(count, 1), step)
            for step, count, row in zip(self.arch_steps, self.arch_counts, arch):
                logs.scalar('arch/ce', float(row[0]), step)
                logs.scalar('arch/acc', float(row[1]) / max(count, 1), step)
                if with_mc:
                    for i, v in enumerate(row[2 + n + g:]):
                        logs.scalar(f'mc/cell_{i}', float(v), step)
        sums = arch.sum(0) if len(arch) else np.zeros(2 + 2 * n + g)
        return {
            'train_loss': float(weight[:, 0].sum()) / w_steps if len(weight) else 0.0,
            'train_acc': float(weight[:, 1].sum()) / max(sum(self.weight_counts), 1) if len(weight) else 0.0,
            'arch_ce': float(sums[0]) / a_steps if searching else None,
            'arch_acc': float(sums[1]) / max(sum(self.arch_counts), 1) if searching else None,
            'cell_loss': (sums[2:2 + n] / a_steps).tolist() if searching else None,
            'l01': (sums[2 + n:2 + n + g] / a_steps).tolist() if searching else None,
            'mc': (sums[2 + n + g:] / a_steps).tolist() if searching and with_mc else None,
        }
