"""The search's data: the training set split 50/50 into a weight split and an architecture split (seeded).

The held-out split (digits / an image folder's ``val/`` or its seeded 20 %) is never part of it.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Tuple

from torch.utils.data import Dataset

from .config import SearchConfig

__all__ = ['build_search_data']


def _transforms(dataset: str, image_size: int, info: Any) -> Any:
    if dataset == 'digits':
        return None  # tensors, already normalised; no augmentation
    if dataset == 'folder':
        from ddarts_zoo.transforms import folder_transforms
        return folder_transforms(info)[0]   # resize + crop + flip; no AutoAugment / cutout during the search
    import torchvision.transforms as T
    if dataset == 'imagenet':
        return T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor(),
                          T.Normalize(info.mean, info.std)])
    ops = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
    if image_size != 32:
        ops.append(T.Resize(image_size))
    return T.Compose(ops + [T.ToTensor(), T.Normalize(info.mean, info.std)])


def build_search_data(cfg: SearchConfig, cache_dir: Optional['str | os.PathLike[str]'] = None
                      ) -> Tuple[Dataset, Dataset, Any]:
    """(weight split, architecture split, dataset info) of the training set.

    ``cache_dir``: where an image folder's statistics are cached (the run directory when it is known).
    """
    from ddarts_zoo.data import build_dataset, check_enough_images, dataset_info, split_half
    info = dataset_info(cfg.dataset, cfg.data, image_size=cfg.image_size, cache_dir=cache_dir)
    size = cfg.image_size or info.image_size
    ds = build_dataset(cfg.dataset, 'train', root=cfg.data, transform=_transforms(cfg.dataset, size, info),
                       image_size=size, subset=cfg.subset, seed=cfg.seed, info=info)
    weight_split, arch_split = split_half(ds, seed=cfg.seed)
    where = f'--data {cfg.data}' if cfg.data else f'--dataset {cfg.dataset}'
    check_enough_images(len(weight_split), cfg.batch_size, f'each half of the training split of {where} '
                        f'(weights / architecture{", after --subset" if cfg.subset < 1 else ""})')
    return weight_split, arch_split, info
