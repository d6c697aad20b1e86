"""``digits-det``: a small detection + instance-segmentation dataset in COCO format, generated locally.

The embedded 8x8 digits (:mod:`ddarts_zoo.data`) are upsampled by a random factor (2-4x, bilinear) and pasted,
1-3 per image and without overlap, on 64x64 noisy colour canvases. Each digit gives one instance: its mask is
the set of pixels where the upsampled digit's intensity exceeds ``MASK_THRESHOLD``, its box the tight box of
that mask (COCO ``[x, y, w, h]``), its segmentation the mask as compressed RLE (exact, holes included).
The ``train`` split uses the digits' train indices (``train_repeats`` passes, each a new random
placement); the ``val`` split uses the held-out test indices only, so validation digits are never seen.

Everything is deterministic given ``seed`` and the parameters. Layout written (atomically) under ``root``::

    root/meta.json                      parameters, counts (written last: its presence marks a complete set)
    root/annotations/{train,val}.json   COCO instances (categories '0'..'9', ids 1..10)
    root/{train,val}/000001.png ...     RGB images
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data import digits_arrays, digits_split_indices
from ..errors import UserError
from ..utils.io import atomic_dir

__all__ = ['DIGITS_DET_CLASSES', 'DEFAULT_PARAMS', 'MASK_THRESHOLD', 'PREPARE_COMMAND',
           'DigitsDetMissingError', 'generate_digits_det', 'ensure_digits_det', 'read_digits_det_meta',
           'check_digits_det']

FORMAT_VERSION = 1
DIGITS_DET_CLASSES: Tuple[str, ...] = tuple(str(d) for d in range(10))
MASK_THRESHOLD = 0.3  # fraction of full intensity (digits are 0..16)
DEFAULT_PARAMS: Dict[str, Any] = dict(seed=0, image_size=64, min_digits=1, max_digits=3, min_scale=2.0,
                                      max_scale=4.0, train_repeats=2)
_SPLITS = {'train': ('train', 1), 'val': ('test', 2)}  # our split -> (digits split, rng stream)
_PLACEMENT_TRIES = 50
PREPARE_COMMAND = 'ddarts-zoo digits-det --out {root}'


class DigitsDetMissingError(UserError, FileNotFoundError):
    """The digits-det folder a config reads is missing or incomplete (the message names the command)."""


def _check_params(p: Dict[str, Any]) -> None:
    unknown = set(p) - set(DEFAULT_PARAMS)
    if unknown:
        raise UserError(f'digits-det: unknown parameter(s) {sorted(unknown)}; '
                        f'known: {sorted(DEFAULT_PARAMS)}')
    if not 1 <= p['min_digits'] <= p['max_digits']:
        raise UserError(f'digits-det: need 1 <= min_digits <= max_digits, '
                         f'got {p["min_digits"]}, {p["max_digits"]}')
    if not 1.0 <= p['min_scale'] <= p['max_scale']:
        raise UserError(f'digits-det: need 1 <= min_scale <= max_scale, '
                         f'got {p["min_scale"]}, {p["max_scale"]}')
    if p['image_size'] < round(8 * p['max_scale']):
        raise UserError(f'digits-det: image_size {p["image_size"]} is smaller than the largest digit '
                         f'({round(8 * p["max_scale"])} px)')
    if p['train_repeats'] < 1:
        raise UserError(f'digits-det: train_repeats must be >= 1, got {p["train_repeats"]}')


def _upsample(digit: np.ndarray, size: int) -> np.ndarray:
    x = torch.from_numpy(digit.astype(np.float32) / 16.0)[None, None]
    return F.interpolate(x, size=(size, size), mode='bilinear', align_corners=False)[0, 0].clamp(0, 1).numpy()


def _rle(mask: np.ndarray) -> Dict[str, Any]:
    from pycocotools import mask as mask_utils
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {'size': [int(s) for s in rle['size']], 'counts': rle['counts'].decode('ascii')}


def _render_split(split: str, p: Dict[str, Any], out_dir: Path) -> Dict[str, Any]:
    """Render one split's images into ``out_dir`` and return its COCO dict."""
    digits_split, stream = _SPLITS[split]
    images, labels = digits_arrays()
    rng = np.random.default_rng([int(p['seed']), stream])
    repeats = p['train_repeats'] if split == 'train' else 1
    idx = digits_split_indices(digits_split)
    queue = [int(i) for _ in range(repeats) for i in rng.permutation(idx)]
    size = int(p['image_size'])
    coco_images: List[Dict[str, Any]] = []
    annotations: List[Dict[str, Any]] = []
    pos = 0
    while pos < len(queue):
        image_id = len(coco_images) + 1
        canvas = rng.uniform(0, 60, size=3)[None, None, :] + rng.normal(0, 8, size=(size, size, 3))
        wanted = int(rng.integers(p['min_digits'], p['max_digits'] + 1))
        taken: List[Tuple[int, int, int]] = []  # (x, y, side) of pasted patches
        while len(taken) < wanted and pos < len(queue):
            k = queue[pos]
            side = int(round(8 * rng.uniform(p['min_scale'], p['max_scale'])))
            spot: Optional[Tuple[int, int]] = None
            for _ in range(_PLACEMENT_TRIES):
                x, y = (int(v) for v in rng.integers(0, size - side + 1, size=2))
                if all(x + side <= tx or tx + ts <= x or y + side <= ty or ty + ts <= y
                       for tx, ty, ts in taken):
                    spot = (x, y)
                    break
            if spot is None:  # no room left: this digit opens the next image
                break
            x, y = spot
            alpha = _upsample(images[k], side)
            colour = rng.uniform(150, 255, size=3)
            region = canvas[y:y + side, x:x + side]
            canvas[y:y + side, x:x + side] = region * (1 - alpha[..., None]) + colour * alpha[..., None]
            mask = np.zeros((size, size), dtype=bool)
            mask[y:y + side, x:x + side] = alpha > MASK_THRESHOLD
            pos += 1
            taken.append((x, y, side))
            if not mask.any():  # pragma: no cover - every embedded digit has bright pixels
                continue
            rows, cols = np.nonzero(mask)
            x0, y0 = int(cols.min()), int(rows.min())
            annotations.append({
                'id': len(annotations) + 1, 'image_id': image_id, 'category_id': int(labels[k]) + 1,
                'bbox': [float(x0), float(y0), float(cols.max() - x0 + 1), float(rows.max() - y0 + 1)],
                'area': float(mask.sum()), 'segmentation': _rle(mask), 'iscrowd': 0,
                'digit_index': k,
            })
        file_name = f'{image_id:06d}.png'
        Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8), 'RGB').save(out_dir / file_name)
        coco_images.append({'id': image_id, 'file_name': file_name, 'width': size, 'height': size})
    return {
        'info': {'description': f'digits-det {split} split (ddarts-zoo, generated)',
                 'version': str(FORMAT_VERSION)},
        'licenses': [],
        'images': coco_images,
        'annotations': annotations,
        'categories': [{'id': d + 1, 'name': name, 'supercategory': 'digit'}
                       for d, name in enumerate(DIGITS_DET_CLASSES)],
    }


def read_digits_det_meta(root: Union[str, os.PathLike]) -> Optional[Dict[str, Any]]:
    """The ``meta.json`` of a complete digits-det folder (``None``: missing, incomplete, not digits-det)."""
    try:
        meta = json.loads((Path(root) / 'meta.json').read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return meta if isinstance(meta, dict) and meta.get('name') == 'digits-det' else None


def check_digits_det(root: Union[str, os.PathLike]) -> Path:
    """Return ``root`` if it holds a complete digits-det set, else raise :class:`DigitsDetMissingError`.

    The message names the folder (as given and resolved) and the command that prepares it.
    """
    if read_digits_det_meta(root) is None:
        shown = str(root).rstrip('/') or '.'
        state = 'is incomplete (no meta.json)' if Path(root).is_dir() else 'does not exist'
        raise DigitsDetMissingError(
            f'digits-det: {shown} ({Path(root).resolve()}) {state}; prepare it from this directory with '
            f'`{PREPARE_COMMAND.format(root=shown)}` (data_root is relative to the current directory)')
    return Path(root)


def generate_digits_det(root: Union[str, os.PathLike], overwrite: bool = False, **params: Any) -> Path:
    """Generate digits-det under ``root`` (atomically: built in a sibling temp folder, then renamed).

    ``params`` override :data:`DEFAULT_PARAMS` (``seed``, ``image_size``, ``min_digits``, ``max_digits``,
    ``min_scale``, ``max_scale``, ``train_repeats``). An existing ``root`` is an error unless ``overwrite``.
    """
    p = dict(DEFAULT_PARAMS, **params)
    _check_params(p)
    root = Path(root).expanduser().resolve()
    if root.exists() and not overwrite:
        raise FileExistsError(f'digits-det: {root} exists (pass overwrite=True to replace it)')
    meta = {'name': 'digits-det', 'format': FORMAT_VERSION, 'params': p, 'splits': {},
            'classes': list(DIGITS_DET_CLASSES), 'mask_threshold': MASK_THRESHOLD}
    try:
        with atomic_dir(root) as tmp:
            (tmp / 'annotations').mkdir()
            for split in _SPLITS:
                (tmp / split).mkdir()
                coco = _render_split(split, p, tmp / split)
                (tmp / 'annotations' / f'{split}.json').write_text(json.dumps(coco, sort_keys=True))
                meta['splits'][split] = {'images': len(coco['images']), 'instances': len(coco['annotations'])}
            (tmp / 'meta.json').write_text(json.dumps(meta, indent=1, sort_keys=True))
            if root.exists() and not overwrite:  # another process published it meanwhile: keep theirs
                raise FileExistsError(f'digits-det: {root} was created while generating it')
    except FileExistsError:
        if read_digits_det_meta(root) == meta:  # the concurrent process published the same data set
            return root
        raise
    return root


def ensure_digits_det(root: Union[str, os.PathLike], **params: Any) -> Path:
    """Return ``root`` after generating digits-det there if it is missing (parameters must match)."""
    p = dict(DEFAULT_PARAMS, **params)
    _check_params(p)
    path = Path(root).expanduser().resolve()
    meta = read_digits_det_meta(path)
    if meta is not None:
        if meta.get('format') != FORMAT_VERSION or meta.get('params') != p:
            raise UserError(f'digits-det: {path} holds a data set generated with {meta.get("params")} '
                             f'(format {meta.get("format")}), not {p} (format {FORMAT_VERSION}); '
                             f'remove it, choose another folder or regenerate it '
                            f'(`ddarts-zoo digits-det --overwrite`)')
        return path
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f'digits-det: {path} exists but is not a complete digits-det folder '
                              f'(no meta.json); remove it')
    if path.exists():
        path.rmdir()
    try:
        return generate_digits_det(path, **p)
    except FileExistsError:  # generated concurrently
        if read_digits_det_meta(path) is not None:
            return ensure_digits_det(path, **p)
        raise

