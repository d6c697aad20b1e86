"""Training-time augmentation of the final-network recipe (``ddarts-zoo train``).

CIFAR: random crop (padding 4), horizontal flip, AutoAugment (torchvision's CIFAR-10 policy), cutout 16.
ImageNet: random resized crop 224, flip, AutoAugment (ImageNet policy); test: resize 256, center crop 224.
Digits (in-memory tensors): random crop (padding 4) and cutout only.
Image folders (:func:`folder_transforms`): every image is resized (shorter side) and center-cropped to the
folder's size; then the CIFAR recipe up to :data:`SMALL_IMAGE_MAX` px, the ImageNet one (timm) above.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .data import DatasetInfo, dataset_info

__all__ = ['Cutout', 'RandomCropTensor', 'build_transforms', 'folder_transforms', 'SMALL_IMAGE_MAX']

SMALL_IMAGE_MAX = 64


class Cutout:
    """Zero one random ``length`` x ``length`` square (clipped at the borders) of a CHW tensor image."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        y0, y1 = max(0, cy - self.length // 2), min(h, cy + self.length // 2)
        x0, x1 = max(0, cx - self.length // 2), min(w, cx + self.length // 2)
        img = img.clone()
        img[..., y0:y1, x0:x1] = 0.0
        return img


class RandomCropTensor:
    """Random crop of a zero-padded CHW tensor (``padding`` px each side), for the in-memory digits."""

    def __init__(self, size: int, padding: int) -> None:
        self.size, self.padding = size, padding

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        img = F.pad(img, [self.padding] * 4)
        top = int(torch.randint(img.shape[-2] - self.size + 1, ()))
        left = int(torch.randint(img.shape[-1] - self.size + 1, ()))
        return img[..., top:top + self.size, left:left + self.size]


def _compose(steps: Sequence[Callable[[torch.Tensor], torch.Tensor]]) -> Callable[[torch.Tensor], torch.Tensor]:
    def apply(x: torch.Tensor) -> torch.Tensor:
        for step in steps:
            x = step(x)
        return x
    return apply


def folder_transforms(info: DatasetInfo, cutout: int = 0, autoaugment: bool = False) -> Tuple[Any, Any]:
    """(train transform, test transform) of an image folder (PIL images of any size -> normalised tensors).

    Test: resize the shorter side to ``info.image_size`` and center-crop (timm ``create_transform``).
    Train: up to :data:`SMALL_IMAGE_MAX` px the same, then random crop (padding size/8) and flip (CIFAR
    recipe, AutoAugment's CIFAR-10 policy); above, timm's random resized crop and flip (ImageNet recipe,
    AutoAugment's ImageNet policy).  ``cutout`` px (0 disables) comes last.
    """
    import torchvision.transforms as T
    from timm.data import create_transform
    size, shape = info.image_size, (info.in_chans, info.image_size, info.image_size)
    common = dict(input_size=shape, interpolation='bilinear', mean=info.mean, std=info.std)
    test = create_transform(is_training=False, crop_pct=1.0, **common)
    cut = [Cutout(cutout)] if cutout > 0 else []
    if size <= SMALL_IMAGE_MAX:
        aa = [T.AutoAugment(T.AutoAugmentPolicy.CIFAR10)] if autoaugment else []
        train = T.Compose([T.Resize(size), T.CenterCrop(size), T.RandomCrop(size, padding=max(1, size // 8)),
                           T.RandomHorizontalFlip(), *aa, T.ToTensor(), T.Normalize(info.mean, info.std),
                           *cut])
    else:
        train = create_transform(is_training=True, color_jitter=None,
                                 auto_augment='original' if autoaugment else None, **common)
        train = T.Compose([train, *cut]) if cut else train
    return train, test


def build_transforms(dataset: str, cutout: int, autoaugment: bool,
                     info: Optional[DatasetInfo] = None) -> Tuple[Any, Optional[Any]]:
    """(train transform, test transform) of the recipe for ``dataset`` (``cutout`` px, 0 disables).

    ``info``: the folder's :func:`~ddarts_zoo.data.dataset_info` (required for ``folder``); for digits, its
    ``image_size`` sets the random crop (default: the dataset's table).
    """
    if dataset == 'folder':
        if info is None:
            raise ValueError("build_transforms('folder', ...) needs info=dataset_info('folder', root)")
        return folder_transforms(info, cutout, autoaugment)
    info = info if info is not None else dataset_info(dataset)
    cut = [Cutout(cutout)] if cutout > 0 else []
    if dataset == 'digits':  # tensors, already normalised by the dataset
        return _compose([RandomCropTensor(info.image_size, 4), *cut]), None
    import torchvision.transforms as T
    normalize = T.Normalize(info.mean, info.std)
    if dataset in ('cifar10', 'cifar100'):
        aa = [T.AutoAugment(T.AutoAugmentPolicy.CIFAR10)] if autoaugment else []
        train = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), *aa, T.ToTensor(), normalize, *cut])
        return train, T.Compose([T.ToTensor(), normalize])
    aa = [T.AutoAugment(T.AutoAugmentPolicy.IMAGENET)] if autoaugment else []
    train = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), *aa, T.ToTensor(), normalize, *cut])
    return train, T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), normalize])
