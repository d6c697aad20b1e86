"""Training-time augmentation of the final-network recipe (``ddarts-zoo train``).

CIFAR: random crop (padding 4), horizontal flip, AutoAugment (torchvision's CIFAR-10 policy), cutout 16.
ImageNet: random resized crop 224, flip, AutoAugment (ImageNet policy); test: resize 256, center crop 224.
Digits (in-memory tensors): random crop (padding 4) and cutout only.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .data import dataset_info

__all__ = ['Cutout', 'RandomCropTensor', 'build_transforms']


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


def build_transforms(dataset: str, cutout: int, autoaugment: bool) -> Tuple[Any, Optional[Any]]:
    """(train transform, test transform) of the recipe for ``dataset`` (``cutout`` px, 0 disables)."""
    info = dataset_info(dataset)
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
