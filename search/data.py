"""The search's data: the training set split 50/50 into a weight split and an architecture split (seeded)."""
from __future__ import annotations

from typing import Any, Tuple

from torch.utils.data import Dataset

from .config import SearchConfig

__all__ = ['build_search_data']


def _transforms(dataset: str, image_size: int, mean: Any, std: Any) -> Any:
    if dataset == 'digits':
        return None  # tensors, already normalised; no augmentation
    import torchvision.transforms as T
    if dataset == 'imagenet':
        return T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor(),
                          T.Normalize(mean, std)])
    ops = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
    if image_size != 32:
        ops.append(T.Resize(image_size))
    return T.Compose(ops + [T.ToTensor(), T.Normalize(mean, std)])


def build_search_data(cfg: SearchConfig) -> Tuple[Dataset, Dataset, Any]:
    """(weight split, architecture split, dataset info) of the training set."""
    from ddarts_zoo.data import build_dataset, dataset_info, split_half
    info = dataset_info(cfg.dataset)
    size = cfg.image_size or info.image_size
    ds = build_dataset(cfg.dataset, 'train', root=cfg.data, transform=_transforms(cfg.dataset, size, info.mean,
                       info.std), image_size=size, subset=cfg.subset, seed=cfg.seed)
    weight_split, arch_split = split_half(ds, seed=cfg.seed)
    return weight_split, arch_split, info
