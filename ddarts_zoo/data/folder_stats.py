"""What an image folder is, read from the data: classes, channels, input size, mean and std.

* channels: 1 when every image is grayscale (8- or 16-bit), else 3 (grayscale images are then repeated);
* input size: the median shorter side of the training images, at most :data:`MAX_INFERRED_SIZE`
  (``image_size`` overrides it); every image is resized (shorter side) and center-cropped to it;
* mean / std: per channel, over (up to :data:`STATS_SAMPLE` seeded) training images at that size.

They are computed once and cached as JSON (``data_stats.json`` in the run directory, else
``ROOT/.ddarts-zoo-stats.json``, else the user cache folder), keyed by a fingerprint of the file listing,
and printed as one line.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from ..utils.io import atomic_write
from .folder import GRAY_MODES, FolderTree, load_image, read_header, scan_folder
from .info import DatasetInfo

__all__ = ['folder_info', 'stats_cache_path', 'MAX_INFERRED_SIZE', 'STATS_SAMPLE', 'STATS_FILE_NAME']

MAX_INFERRED_SIZE = 224
STATS_SAMPLE = 5000
STATS_SEED = 0
STATS_FILE_NAME = 'data_stats.json'
_FORMAT = 'ddarts-zoo folder statistics'
_VERSION = 1


def stats_cache_path(root: Path, cache_dir: Optional['str | os.PathLike[str]'] = None) -> Path:
    """Where the statistics of ``root`` are cached (see the module docstring)."""
    if cache_dir is not None:
        return Path(cache_dir) / STATS_FILE_NAME
    if os.access(root, os.W_OK):
        return root / '.ddarts-zoo-stats.json'
    import hashlib
    base = Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'ddarts-zoo' / 'folder-stats'
    return base / f'{hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]}.json'


def _load_cache(path: Path, fingerprint: str) -> Dict[str, Any]:
    """The cached record when it describes the same files, else an empty record (the cache is only data)."""
    try:
        record = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError):
        return {}
    ok = (isinstance(record, dict) and record.get('format') == _FORMAT and record.get('version') == _VERSION
          and record.get('fingerprint') == fingerprint and isinstance(record.get('stats'), dict))
    return record if ok else {}


def _scan_images(tree: FolderTree) -> Dict[str, Any]:
    """Header of every image (structure checked, sizes, modes): the part of the record that has no size."""
    sizes, modes = [], set()
    for path, _ in tree.train + tree.test:
        size, mode = read_header(path)
        modes.add(mode)
        sizes.append(size)
    train_short = sorted(min(w, h) for (w, h) in sizes[:len(tree.train)])
    return {
        'format': _FORMAT, 'version': _VERSION, 'fingerprint': tree.fingerprint, 'root': str(tree.root),
        'classes': list(tree.classes), 'train_images': len(tree.train), 'test_images': len(tree.test),
        'heldout': tree.heldout, 'modes': sorted(modes), 'in_chans': 1 if modes <= GRAY_MODES else 3,
        'min_size': [min(w for w, _ in sizes), min(h for _, h in sizes)],
        'max_size': [max(w for w, _ in sizes), max(h for _, h in sizes)],
        'median_short_side': int(train_short[len(train_short) // 2]), 'stats': {},
    }


def _channel_stats(samples: Sequence[Tuple[str, int]], in_chans: int, size: int) -> Dict[str, Any]:
    """Per-channel mean / std of the resized, center-cropped images in [0, 1] (seeded sample)."""
    from timm.data import create_transform
    to_tensor = create_transform(input_size=(in_chans, size, size), is_training=False, crop_pct=1.0,
                                 interpolation='bilinear', mean=(0.0,) * in_chans, std=(1.0,) * in_chans)
    order = np.random.default_rng(STATS_SEED).permutation(len(samples))[:STATS_SAMPLE]
    total = torch.zeros(2, in_chans, dtype=torch.float64)
    for i in sorted(order.tolist()):
        x = to_tensor(load_image(samples[i][0], in_chans)).double().flatten(1)
        total[0] += x.sum(1)
        total[1] += (x * x).sum(1)
    count = len(order) * size * size
    mean = total[0] / count
    std = (total[1] / count - mean ** 2).clamp_min(0).sqrt()
    std = torch.where(std < 1e-6, torch.ones_like(std), std)   # constant images: no scaling
    return {'mean': [round(float(v), 4) for v in mean], 'std': [round(float(v), 4) for v in std],
            'images': len(order)}


def _is_main_process() -> bool:
    return int(os.environ.get('RANK', '0')) == 0


def _describe(info: DatasetInfo, record: Dict[str, Any], size_note: str, cache_note: str) -> str:
    names = ', '.join(info.classes[:6]) + (', ...' if len(info.classes) > 6 else '')
    chans = '1 channel (grayscale)' if info.in_chans == 1 else '3 channels (RGB)'
    fmt = lambda v: '(' + ', '.join(f'{x:.4f}' for x in v) + ')'  # noqa: E731
    return (f'folder {record["root"]}: {info.num_classes} classes ({names}), '
            f'{record["train_images"]} training + {record["test_images"]} held-out images '
            f'(held out: {record["heldout"]}), {chans}, '
            f'{info.image_size} px {size_note}, mean {fmt(info.mean)} std {fmt(info.std)} [{cache_note}]')


def folder_info(root: 'str | os.PathLike[str]', image_size: Optional[int] = None,
                cache_dir: Optional['str | os.PathLike[str]'] = None, verbose: bool = True) -> DatasetInfo:
    """Scan ``root``, infer or load its :class:`DatasetInfo` (see the module docstring) and print one line.

    Bad trees raise :class:`~ddarts_zoo.data.info.FolderDataError`; an image that cannot be read raises
    :class:`~ddarts_zoo.errors.UnreadableFileError` naming it.
    """
    if image_size is not None and image_size < 1:
        raise ValueError(f'--image-size must be >= 1, got {image_size}')
    tree = scan_folder(root)
    path = stats_cache_path(tree.root, cache_dir)
    record = _load_cache(path, tree.fingerprint)
    changed = not record
    if changed:
        record = _scan_images(tree)
    inferred = min(record['median_short_side'], MAX_INFERRED_SIZE)
    size = image_size or inferred
    key = str(size)
    if key not in record['stats']:
        record['stats'][key] = _channel_stats(tree.train, record['in_chans'], size)
        changed = True
    cache_note = f'cached in {path}'
    if changed:
        try:
            atomic_write(path, json.dumps(record, indent=1) + '\n')
            cache_note = f'computed, {cache_note}'
        except OSError as err:   # a read-only place: the statistics are recomputed next time
            cache_note, path = f'computed, not cached ({err})', None
    stats = record['stats'][key]
    info = DatasetInfo('folder', len(tree.classes), record['in_chans'], size, tuple(stats['mean']),
                       tuple(stats['std']), classes=tree.classes, stats_file=str(path) if path else None)
    if verbose and _is_main_process():
        median = record['median_short_side']
        capped = f', capped at {MAX_INFERRED_SIZE}' if inferred < median else ''
        size_note = (f'(--image-size; median shorter side {median})' if image_size
                     else f'(median shorter side {median}{capped})')
        print(_describe(info, record, size_note, cache_note), file=sys.stdout, flush=True)
    return info

