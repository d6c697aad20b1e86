"""Datasets shared by the search (``search/``), the training recipe and the tests.

* ``digits`` (default, embedded): scikit-learn's 8x8 handwritten digits (UCI ML hand-written digits,
  1797 real images, 10 classes), shipped as ``digits.npz``; upsampled to ``image_size`` (32 px).
  A fixed, seeded 80/20 split gives ``train`` (1438 images) and the held-out ``test`` split (359).
* ``cifar10`` / ``cifar100``: torchvision's format under ``root``; never downloaded silently.
* ``imagenet``: an ImageFolder tree ``root/{train,val}/<class>/*.JPEG``.
* ``folder``: the user's own images, ``root/train/<class>/*`` (and ``root/val/<class>/*`` when present, else a
  seeded held-out 20 %); classes, channels, size and normalisation are read from the data
  (:mod:`.folder`, :mod:`.folder_stats`).

:func:`dataset_info` gives classes, channels, resolution and normalisation; nothing downstream hard-codes
them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from ..errors import UserError
from .info import (DATASET_NAMES, DATASETS, DatasetInfo, DatasetMissingError, FolderDataError,
                   TooFewImagesError, check_enough_images)

__all__ = ['DatasetInfo', 'DATASETS', 'DATASET_NAMES', 'dataset_info', 'DigitsDataset', 'build_dataset',
           'split_half', 'DatasetMissingError', 'FolderDataError', 'TooFewImagesError', 'check_enough_images',
           'DIGITS_PATH', 'seeded_subset']

DIGITS_PATH = Path(__file__).resolve().parent / 'digits.npz'
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2


def dataset_info(name: str, root: Optional[str] = None, *, image_size: Optional[int] = None,
                 cache_dir: Optional['str | os.PathLike[str]'] = None) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``.

    ``folder`` reads it from the images under ``root`` (computed once, cached in ``cache_dir`` or next to the
    data, printed; ``image_size`` overrides the inferred size); the other datasets ignore the keywords.
    """
    if name == 'folder':
        if not root:
            raise DatasetMissingError('--dataset folder needs --data ROOT (ROOT/train/<class>/<image>)')
        from .folder_stats import folder_info
        return folder_info(root, image_size=image_size, cache_dir=cache_dir)
    try:
        return DATASETS[name]
    except KeyError:
        raise UserError(f'unknown dataset {name!r}; choose one of {", ".join(DATASET_NAMES)}') from None


def digits_arrays() -> Tuple[np.ndarray, np.ndarray]:
    """The embedded digits: images ``[1797, 8, 8]`` (intensities 0..16) and labels ``[1797]``."""
    with np.load(DIGITS_PATH) as data:
        return data['images'], data['labels']


def digits_split_indices(split: str) -> np.ndarray:
    """Indices of ``split`` ('train', 'test' or 'all') in the fixed, seeded digits split."""
    n = len(digits_arrays()[1])
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(n)
    n_test = int(round(n * DIGITS_TEST_FRACTION))
    if split == 'test':
        return np.sort(order[:n_test])
    if split == 'train':
        return np.sort(order[n_test:])
    if split == 'all':
        return np.arange(n)
    raise ValueError(f"digits split must be 'train', 'test' or 'all', got {split!r}")


class DigitsDataset(Dataset):
    """The embedded digits as float tensors ``(1, image_size, image_size)`` normalised with the split stats.

    Images are scaled from 0..16 to 0..1 and upsampled bilinearly once, at construction.
    ``transform`` (optional) runs on each tensor image (e.g. random crops for training).
    """

    def __init__(self, split: str = 'train', image_size: int = 32, normalize: bool = True,
                 transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> None:
        images, labels = digits_arrays()
        idx = digits_split_indices(split)
        x = torch.from_numpy(images[idx].astype(np.float32) / 16.0).unsqueeze(1)
        if image_size != x.shape[-1]:
            x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode='bilinear',
                                                align_corners=False).clamp_(0.0, 1.0)
        if normalize:
            info = DATASETS['digits']
            x = (x - info.mean[0]) / info.std[0]
        self.images = x.contiguous()
        self.labels = torch.from_numpy(labels[idx].astype(np.int64))
        self.transform = transform
        self.split = split

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int]:
        x = self.images[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i])


def _cifar(name: str, root: str, train: bool, transform):
    import torchvision
    cls = torchvision.datasets.CIFAR10 if name == 'cifar10' else torchvision.datasets.CIFAR100
    try:
        return cls(root=root, train=train, download=False, transform=transform)
    except RuntimeError as err:
        raise DatasetMissingError(
            f'{name} was not found under --data {root!r} ({err}). Download it once with '
            f'torchvision.datasets.{cls.__name__}(root={root!r}, download=True) on a machine with '
            f'network access; ddarts-zoo never downloads silently.') from None


def _imagenet(root: str, train: bool, transform):
    import torchvision
    folder = Path(root) / ('train' if train else 'val')
    if not folder.is_dir():
        raise DatasetMissingError(f'imagenet: expected an ImageFolder tree at {str(folder)!r} '
                                  f'(root/train/<class>/*.JPEG and root/val/<class>/*.JPEG)')
    return torchvision.datasets.ImageFolder(os.fspath(folder), transform=transform)


def _folder(root: Optional[str], split: str, transform, info: Optional[DatasetInfo],
            image_size: Optional[int]) -> Dataset:
    from .folder import FolderDataset, scan_folder
    from .folder_stats import folder_info
    if not root:
        raise DatasetMissingError('--dataset folder needs --data ROOT (ROOT/train/<class>/<image>)')
    info = info if info is not None else folder_info(root, image_size=image_size, verbose=False)
    tree = scan_folder(root)
    return FolderDataset(tree.split(split), info.in_chans, transform=transform, classes=tree.classes)


def build_dataset(name: str, split: str = 'train', root: Optional[str] = None, transform=None,
                  image_size: Optional[int] = None, subset: float = 1.0, seed: int = 0,
                  info: Optional[DatasetInfo] = None) -> Dataset:
    """Dataset ``name`` for ``split`` ('train' or 'test').

    ``transform`` applies to tensors for digits and to PIL images for the other datasets.
    ``subset`` < 1 keeps a seeded random fraction (PC-DARTS style sampled search on ImageNet).
    ``info``: the folder's :func:`dataset_info` (its channels); computed (from the cache) when omitted.
    """
    if name not in DATASET_NAMES:
        raise UserError(f'unknown dataset {name!r}; choose one of {", ".join(DATASET_NAMES)}')
    if split not in ('train', 'test'):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name == 'digits':
        ds: Dataset = DigitsDataset(split, image_size or DATASETS['digits'].image_size, transform=transform)
    elif name == 'folder':
        ds = _folder(root, split, transform, info, image_size)
    else:
        if not root:
            raise DatasetMissingError(f'{name} needs --data pointing at the dataset root')
        if name in ('cifar10', 'cifar100'):
            ds = _cifar(name, root, split == 'train', transform)
        else:
            ds = _imagenet(root, split == 'train', transform)
    if not 0.0 < subset <= 1.0:
        raise ValueError(f'subset must be in (0, 1], got {subset}')
    if subset < 1.0:
        ds = seeded_subset(ds, max(1, int(len(ds) * subset)), seed)
    return ds


def seeded_subset(ds: Dataset, keep: int, seed: int) -> Subset:
    """``keep`` images of ``ds`` drawn without replacement by ``seed`` (in their original order)."""
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    return Subset(ds, sorted(order[:keep].tolist()))


def split_half(ds: Dataset, seed: int = 0) -> Tuple[Subset, Subset]:
    """Seeded 50/50 split of a training set into (weight split, architecture split)."""
    n = len(ds)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    half = n // 2
    return Subset(ds, sorted(order[:half])), Subset(ds, sorted(order[half:]))
