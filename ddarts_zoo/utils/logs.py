"""Per-epoch metric files shared by the search and the training loop: CSV text and TensorBoard writers."""
from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .io import atomic_write

__all__ = ['flatten_row', 'csv_text', 'open_tensorboard', 'EpochLog']


def flatten_row(row: Mapping[str, Any]) -> Dict[str, Any]:
    """One CSV row: lists become ``key_0, key_1, ...``; ``None`` values and nested dicts are left out."""
    flat: Dict[str, Any] = {}
    for key, value in row.items():
        if value is None or isinstance(value, dict):
            continue
        if isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                flat[f'{key}_{i}'] = v
        else:
            flat[key] = value
    return flat


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None) -> str:
    """CSV of ``rows`` (flattened by :func:`flatten_row`), with a header.

    ``columns``: the columns in order; default: every key seen, in order of first appearance.  Missing values
    are empty cells.
    """
    flat = [flatten_row(r) for r in rows]
    if columns is None:
        seen: Dict[str, None] = {}
        for f in flat:
            seen.update(dict.fromkeys(f))
        columns = list(seen)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator='\n', extrasaction='ignore')
    writer.writeheader()
    for f in flat:
        writer.writerow({c: f.get(c, '') for c in columns})
    return buf.getvalue()


def open_tensorboard(log_dir: str, purge_step: Optional[int] = None) -> Any:
    """A TensorBoard ``SummaryWriter`` on ``log_dir``, or None (with a warning) if tensorboard is missing.

    ``purge_step``: on resume, events at or after this step (left by the interrupted run) are discarded.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # a declared dependency, but a run must not die for a logger
        print('warning: tensorboard is not installed; no TensorBoard events are written', file=sys.stderr)
        return None
    return SummaryWriter(log_dir=log_dir, purge_step=purge_step or None)


class EpochLog:
    """One CSV row per epoch (``epoch`` column first) plus its numbers as TensorBoard scalars.

    The CSV is rewritten atomically after every epoch; a run resumed at ``start_epoch`` keeps the earlier rows
    and TensorBoard drops the events the interrupted run wrote from there on.  A scalar's tag is its column
    with the first ``_`` turned into ``/`` (``train_loss`` -> ``train/loss``).  Disabled: calls are no-ops.
    """

    def __init__(self, csv_path: Path, columns: Sequence[str], enabled: bool = True, start_epoch: int = 0,
                 tensorboard_dir: Optional[Path] = None) -> None:
        self.csv_path, self.columns, self.enabled = Path(csv_path), list(columns), enabled
        self.rows: List[Dict[str, Any]] = []
        self.tb: Any = None
        if not enabled:
            return
        if start_epoch > 0 and self.csv_path.exists():
            with open(self.csv_path, newline='', encoding='utf-8') as f:
                self.rows = [r for r in csv.DictReader(f) if int(r['epoch']) < start_epoch]
        if tensorboard_dir is not None:
            self.tb = open_tensorboard(str(tensorboard_dir), purge_step=start_epoch)

    def epoch(self, row: Mapping[str, Any]) -> None:
        """Append ``row`` (its ``epoch`` is the TensorBoard step) and rewrite the CSV."""
        if not self.enabled:
            return
        self.rows.append(dict(row))
        atomic_write(self.csv_path, csv_text(self.rows, self.columns))
        if self.tb is not None:
            for key, value in row.items():
                if key != 'epoch' and isinstance(value, (int, float)):
                    self.tb.add_scalar(key.replace('_', '/', 1), value, int(row['epoch']))
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
