"""Per-epoch metric files shared by the search and the training loop: CSV text and TensorBoard writers."""
from __future__ import annotations

import csv
import io
import sys
from typing import Any, Dict, Mapping, Optional, Sequence

__all__ = ['flatten_row', 'csv_text', 'open_tensorboard']


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


