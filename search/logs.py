"""What a search run writes besides its checkpoint: ``search.log``, ``metrics.csv``, ``epochs.jsonl``,
TensorBoard events, genotypes and end-of-run plots; and what it prints: one compact line per epoch, and at
the end what a user acts on (:func:`end_of_search_text`).

Full genotypes, marginal contributions and alpha entropies of every epoch go to ``search.log`` and
``epochs.jsonl`` only.  Rank 0 alone writes; on other ranks every method is a no-op.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ddarts_zoo.genotype import Genotype
from ddarts_zoo.stats import DEFAULT_WIDTH, format_cells, genotype_stats
from ddarts_zoo.utils.dist import DistContext
from ddarts_zoo.utils.io import atomic_write
from ddarts_zoo.utils.logs import csv_text, open_tensorboard

__all__ = ['RunLog', 'epoch_line', 'train_command', 'end_of_search_text']

DIGITS_WIDTH = 8
"""Initial width of the suggested training on digits (the width of the project's digits weights)."""

log = logging.getLogger('ddarts_search')


class _ConsoleFilter(logging.Filter):
    """Keeps records logged with ``extra={'file_only': True}`` off the terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, 'file_only', False)


def epoch_line(rec: Dict[str, Any], total_epochs: int, primary: Optional[Genotype] = None) -> str:
    """The one console line of an epoch: phase, time, losses / accuracies, distance, live edges."""
    parts = [f'epoch {rec["epoch"]}/{total_epochs} [{rec["phase"]}] {rec["time_s"]:.1f}s',
             f'train loss {rec["train_loss"]:.4f} acc {rec["train_acc"]:.3f}']
    if rec.get('arch_ce') is not None:
        parts.append(f'arch ce {rec["arch_ce"]:.4f} acc {rec["arch_acc"]:.3f}')
    if rec.get('valid_acc') is not None:
        parts.append(f'valid loss {rec["valid_loss"]:.4f} acc {rec["valid_acc"]:.3f}')
    if rec.get('distance') is not None:
        parts.append(f'distance {rec["distance"]:.4f}')
    if primary is not None:
        empty = primary.meta.get('empty_cells') or []
        parts.append(f'{sum(len(g) for g in primary.genes)} edges' + (f', empty cells {empty}' if empty else ''))
    return ' | '.join(parts)


def train_command(genotype: Path, dataset: str, data: Optional[str], out: Path) -> str:
    """The ``ddarts-zoo train`` command line that trains ``genotype`` on the searched dataset."""
    args = ['ddarts-zoo', 'train', '--genotype', str(genotype), '--dataset', dataset]
    if data:
        args += ['--data', str(data)]
    if dataset == 'digits':
        args += ['--init-channels', str(DIGITS_WIDTH)]
    return shlex.join(args + ['--out', str(out)])


def _genotype_line(label: str, path: Path, geno: Genotype) -> str:
    edges = sum(len(geno.live_gene(i, warn=False)) for i in range(geno.num_cells))
    empty = geno.meta.get('empty_cells')
    note = f'; cells {empty} kept no op (skip_connect)' if empty else ''
    return f'  {label:<8} {path}  ({geno.num_cells} cells, {edges} live edges{note})'


def end_of_search_text(run_dir: Path, genos: Dict[str, Genotype], primary: str, written: Sequence[str],
                       dataset: str, data: Optional[str]) -> str:
    """What the end of a search prints: the genotype files, the plots, the primary genotype per cell (op
    counts, live edges) and the command that trains it; the full genotypes stay in the files."""
    lines = ['genotypes (every edge in the files; `ddarts-zoo stats FILE` and `ddarts-zoo plot FILE` show '
             'them):']
    lines += [_genotype_line(kind, run_dir / f'genotype_{kind}.json', g) for kind, g in genos.items()]
    lines.append(_genotype_line('primary', run_dir / 'genotype.json', genos[primary]) + f' = {primary}')
    plots = [Path(p) for p in written if p.endswith('.png')]
    if plots:
        lines.append(f'plots in {plots[0].parent}/: ' + ', '.join(p.name for p in plots))
    width = DIGITS_WIDTH if dataset == 'digits' else DEFAULT_WIDTH
    lines += ['', f'{primary} genotype per cell (live edges and ops; params of the cell ops at C={width}):',
              format_cells(genotype_stats(genos[primary], width))]
    cmd = train_command(run_dir / 'genotype.json', dataset, data, Path('runs/train') / run_dir.name)
    lines += ['', 'train it:', f'  {cmd}']
    return '\n'.join(lines)


class RunLog:
    """The run directory's log files and TensorBoard writer; ``written`` lists every path written."""

    def __init__(self, run_dir: Path, ctx: DistContext, tensorboard: bool = True) -> None:
        self.run_dir, self.ctx, self.tensorboard = run_dir, ctx, tensorboard
        self.written: List[str] = []
        self._tb: Any = None

    def open(self, global_step: int = 0) -> None:
        """Attach ``search.log`` (appended on resume) and the console to the logger; start TensorBoard."""
        if not self.ctx.is_writer:
            return
        log.setLevel(logging.INFO)
        log.propagate = False
        path = str(self.run_dir / 'search.log')
        if not any(getattr(h, 'baseFilename', None) == os.path.abspath(path) for h in log.handlers):
            fh = logging.FileHandler(path, encoding='utf-8')
            fh.setFormatter(logging.Formatter('%(asctime)s %(message)s', '%Y-%m-%d %H:%M:%S'))
            log.addHandler(fh)
            self.written.append(path)
        if not any(type(h) is logging.StreamHandler for h in log.handlers):
            sh = logging.StreamHandler(sys.stdout)
            sh.setFormatter(logging.Formatter('%(message)s'))
            sh.addFilter(_ConsoleFilter())
            log.addHandler(sh)
        if self.tensorboard:
            self._tb = open_tensorboard(str(self.run_dir / 'tb'), purge_step=global_step)
            if self._tb is not None:
                self.written.append(str(self.run_dir / 'tb'))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        for h in list(log.handlers):
            if isinstance(h, logging.FileHandler):
                h.close()
                log.removeHandler(h)

    def info(self, msg: str) -> None:
        if self.ctx.is_writer:
            log.info(msg)

    def detail(self, msg: str) -> None:
        """A line for ``search.log`` only."""
        if self.ctx.is_writer:
            log.info(msg, extra={'file_only': True})

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self._tb is not None:
            self._tb.add_scalar(tag, value, step)

    def write_text(self, name: str, text: str) -> None:
        if self.ctx.is_writer:
            self.written.append(str(atomic_write(self.run_dir / name, text)))

    def save_genotype(self, geno: Genotype, name: str) -> None:
        if self.ctx.is_writer:
            path = self.run_dir / name
            geno.save(path)
            self.written.append(str(path))

    def write_history(self, history: Sequence[Dict[str, Any]]) -> None:
        """``metrics.csv`` (lists flattened to ``key_i`` columns) and ``epochs.jsonl`` (everything)."""
        self.write_text('metrics.csv', csv_text(history))
        self.write_text('epochs.jsonl', ''.join(json.dumps(h) + '\n' for h in history))

    def epoch(self, rec: Dict[str, Any], total_epochs: int, genos: Dict[str, Genotype], primary: str,
              notes: Sequence[str] = ()) -> None:
        """The compact console line, the full detail in ``search.log``, the epoch's TensorBoard scalars."""
        if not self.ctx.is_writer:
            return
        self.info(epoch_line(rec, total_epochs, genos.get(primary)))
        if rec.get('mc') is not None:
            self.detail('  marginal contributions: ' + ' '.join(f'{v:+.4f}' for v in rec['mc']))
        self.detail('  alpha entropy: ' + ' '.join(f'{v:.3f}' for v in rec['entropy']))
        for kind, geno in genos.items():
            self.detail(f'  genotype ({kind}): {geno.to_official()}')
        for msg in notes:
            self.detail(f'  note: {msg}')
        e = rec['epoch']
        self.scalar('train/loss', rec['train_loss'], e)
        self.scalar('train/acc', rec['train_acc'], e)
        if rec.get('valid_acc') is not None:
            self.scalar('valid/acc', rec['valid_acc'], e)
            self.scalar('valid/loss', rec['valid_loss'], e)
        for i, v in enumerate(rec['entropy']):
            self.scalar(f'entropy/cell_{i}', v, e)

    def plots(self, history: List[Dict[str, Any]], net: Any, threshold: float = 0.85) -> None:
        """End-of-run plots under ``plots/``; a plotting failure is logged, never raised."""
        if not self.ctx.is_writer:
            return
        try:
            from .plots import plot_run
            self.written.extend(plot_run(self.run_dir, history, net, threshold))
        except Exception as err:  # plotting must never lose a finished search
            self.info(f'plotting failed: {err!r}')
