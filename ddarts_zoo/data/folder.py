"""The user's own images: an ImageFolder-style tree ``ROOT/train/<class>/*`` (and ``ROOT/val/<class>/*``).

:func:`scan_folder` lists the tree (file discovery through timm's folder reader) and checks its layout;
without ``val/`` a fixed, seeded, per-class 20 % of ``train/`` is held out (split ``'test'``), the same for
every run, so that a search never sees it.  :class:`FolderDataset` decodes the images lazily; a file that
cannot be decoded raises :class:`~ddarts_zoo.errors.UnreadableFileError` naming it (timm's ``ImageDataset``
would skip it silently).  Classes, channels, size and normalisation come from :mod:`.folder_stats`.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ..errors import UnreadableFileError, describe_file
from .info import FolderDataError

__all__ = ['FolderTree', 'FolderDataset', 'scan_folder', 'load_image', 'read_header', 'IMAGE_EXTENSIONS',
           'HELDOUT_FRACTION', 'HELDOUT_SEED', 'FolderDataError']

HELDOUT_FRACTION = 0.2
HELDOUT_SEED = 0
_EXTRA_EXTENSIONS = ('.bmp', '.tif', '.tiff', '.webp')
GRAY_MODES = frozenset({'1', 'L', 'LA', 'La', 'I', 'F', 'I;16', 'I;16B', 'I;16L', 'I;16N'})
_HIGH_DEPTH_MODES = frozenset({'I', 'I;16', 'I;16B', 'I;16L', 'I;16N'})
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)

Sample = Tuple[str, int]


def _image_extensions() -> Tuple[str, ...]:
    from timm.data import get_img_extensions
    return tuple(sorted(set(get_img_extensions(as_set=True)) | set(_EXTRA_EXTENSIONS)))


IMAGE_EXTENSIONS = _image_extensions()


@dataclass(frozen=True)
class FolderTree:
    """The listing of an image folder: class names and the (path, label) samples of each split."""

    root: Path
    classes: Tuple[str, ...]
    train: Tuple[Sample, ...]
    test: Tuple[Sample, ...]
    heldout: str            # 'val/' or a description of the seeded split of train/
    fingerprint: str        # changes when a file is added, removed, resized on disk or touched

    def split(self, name: str) -> Tuple[Sample, ...]:
        if name not in ('train', 'test'):
            raise ValueError(f"split must be 'train' or 'test', got {name!r}")
        return self.train if name == 'train' else self.test


def _class_folders(split_dir: Path) -> List[Path]:
    from timm.utils.misc import natural_key
    return sorted((p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith('.')),
                  key=lambda p: natural_key(p.name))


def _images_in(folder: Path) -> List[str]:
    """Image files anywhere below ``folder`` in natural order (timm's folder reader does the walk)."""
    from timm.data.readers.reader_image_folder import find_images_and_targets
    found, _ = find_images_and_targets(os.fspath(folder), types=IMAGE_EXTENSIONS, leaf_name_only=False)
    return [path for path, _ in found]


def _list_split(split_dir: Path, known: Optional[Sequence[str]] = None) -> Tuple[List[str], List[Sample]]:
    """(class names, samples) of ``split_dir``; ``known`` fixes the class order (a val/ folder)."""
    stray = sorted(p.name for p in split_dir.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if stray:
        raise FolderDataError(f'{split_dir}: images must be inside class folders ({split_dir}/<class>/...), '
                              f'found {len(stray)} directly in it (e.g. {stray[0]})')
    folders = _class_folders(split_dir)
    if not folders:
        raise FolderDataError(f'{split_dir}: no class folders; expected {split_dir}/<class>/<image>')
    names = [p.name for p in folders]
    if known is not None:
        unknown = [n for n in names if n not in known]
        if unknown:
            raise FolderDataError(f'{split_dir}: class folder(s) {", ".join(unknown)} are not in '
                                  f'{split_dir.parent / "train"}')
    index = {name: i for i, name in enumerate(known if known is not None else names)}
    samples: List[Sample] = []
    for folder in folders:
        files = _images_in(folder)
        if not files:
            raise FolderDataError(f'empty class folder {folder}: no images ({", ".join(IMAGE_EXTENSIONS)})')
        samples.extend((path, index[folder.name]) for path in files)
    return names, samples


def _hold_out(samples: Sequence[Sample], num_classes: int) -> Tuple[List[Sample], List[Sample]]:
    """Seeded per-class split: round(20 %) of each class (at least one when it has two images) held out."""
    rng = np.random.default_rng(HELDOUT_SEED)
    train: List[Sample] = []
    test: List[Sample] = []
    for label in range(num_classes):
        members = [s for s in samples if s[1] == label]
        n_test = max(1, int(round(len(members) * HELDOUT_FRACTION))) if len(members) >= 2 else 0
        chosen = set(rng.permutation(len(members))[:n_test].tolist())
        for i, s in enumerate(members):
            (test if i in chosen else train).append(s)
    return sorted(train), sorted(test)


def _fingerprint(root: Path, samples: Sequence[Sample]) -> str:
    digest = hashlib.sha256()
    for path, label in samples:
        st = os.stat(path)
        digest.update(f'{os.path.relpath(path, root)}\t{label}\t{st.st_size}\t{st.st_mtime_ns}\n'.encode())
    return digest.hexdigest()


def scan_folder(root: 'str | os.PathLike[str]') -> FolderTree:
    """List ``root`` and check its layout; raises :class:`FolderDataError` naming what is wrong."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FolderDataError(f'--data {root}: no such folder (expected ROOT/train/<class>/<image>)')
    train_dir, val_dir = root / 'train', root / 'val'
    if not train_dir.is_dir():
        found = ', '.join(sorted(p.name for p in root.iterdir() if p.is_dir())[:5]) or 'no folders'
        raise FolderDataError(f'--data {root}: no train/ folder (found {found}); expected '
                              f'{root}/train/<class>/<image> and optionally {root}/val/<class>/<image>')
    classes, train = _list_split(train_dir)
    if len(classes) < 2:
        raise FolderDataError(f'{train_dir}: a classifier needs at least 2 class folders, '
                              f'found {classes[0]!r}')
    if val_dir.is_dir():
        _, test = _list_split(val_dir, known=classes)
        heldout = f'{val_dir}'
    else:
        train, test = _hold_out(train, len(classes))
        heldout = f'a seeded {HELDOUT_FRACTION:.0%} of each class of {train_dir}'
    fingerprint = _fingerprint(root, train + test)
    return FolderTree(root, tuple(classes), tuple(train), tuple(test), heldout, fingerprint)


def _unreadable(path: str, err: BaseException) -> UnreadableFileError:
    return UnreadableFileError(f'{describe_file(path)}: cannot decode this image '
                               f'({type(err).__name__}: {err}); expected an image file '
                               f'({", ".join(IMAGE_EXTENSIONS)}); fix or remove it')


def read_header(path: str) -> Tuple[Tuple[int, int], str]:
    """((width, height), PIL mode) of an image, checking its structure without decoding it all."""
    try:
        with Image.open(path) as im:
            size, mode = im.size, im.mode
            im.verify()
        return size, mode
    except _DECODE_ERRORS as err:
        raise _unreadable(path, err) from None


def _convert(im: Image.Image, in_chans: int) -> Image.Image:
    if im.mode in _HIGH_DEPTH_MODES:   # 16-bit grayscale (medical, microscopy): scaled to 8 bits
        scaled = np.clip(np.asarray(im, dtype=np.float64) / 257.0, 0, 255).round().astype(np.uint8)
        im = Image.fromarray(scaled, mode='L')
    return im.convert('L' if in_chans == 1 else 'RGB')


def load_image(path: str, in_chans: int) -> Image.Image:
    """Decode ``path`` as an 8-bit grayscale (``in_chans`` 1) or RGB (3) image; alpha is dropped."""
    try:
        with Image.open(path) as im:
            im.load()
            return _convert(im, in_chans)
    except _DECODE_ERRORS as err:
        raise _unreadable(path, err) from None


class FolderDataset(Dataset):
    """One split of an image folder: ``(transform(image), label)``; a PIL image when ``transform`` is None."""

    def __init__(self, samples: Sequence[Sample], in_chans: int, transform: Optional[Callable] = None,
                 classes: Sequence[str] = ()) -> None:
        if in_chans not in (1, 3):
            raise ValueError(f'in_chans must be 1 or 3, got {in_chans}')
        self.samples = list(samples)
        self.targets = [label for _, label in self.samples]
        self.in_chans, self.transform, self.classes = in_chans, transform, tuple(classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        img = load_image(path, self.in_chans)
        if self.transform is not None:
            img = self.transform(img)
        return img, label
