"""What a dataset is (:class:`DatasetInfo`), the table of the built-in ones, and the errors a user meets."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from ..errors import UserError

__all__ = ['DatasetInfo', 'DATASETS', 'DATASET_NAMES', 'DatasetMissingError', 'FolderDataError',
           'TooFewImagesError', 'check_enough_images']


@dataclass(frozen=True)
class DatasetInfo:
    """Classes, channels, square input resolution and per-channel normalisation of a dataset.

    ``classes`` names the classes of an image folder (empty for the built-in datasets); ``stats_file`` is the
    JSON file where a folder's statistics are cached (None when they could not be cached).
    """

    name: str
    num_classes: int
    in_chans: int
    image_size: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    classes: Tuple[str, ...] = ()
    stats_file: Optional[str] = None


DATASETS = {
    'digits': DatasetInfo('digits', 10, 1, 32, (0.3049,), (0.3235,)),  # train split at 32 px
    'cifar10': DatasetInfo('cifar10', 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    'cifar100': DatasetInfo('cifar100', 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    'imagenet': DatasetInfo('imagenet', 1000, 3, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

#: every ``--dataset`` value: the fixed table above plus ``folder`` (the user's own images, ``--data ROOT``)
DATASET_NAMES: Tuple[str, ...] = (*DATASETS, 'folder')


class DatasetMissingError(UserError, FileNotFoundError):
    """A dataset that needs files on disk was not found under ``--data``."""


class FolderDataError(UserError):
    """An image folder that does not have the expected layout; the message names the folder or file."""


class TooFewImagesError(FolderDataError):
    """A split with fewer images than one batch."""


def check_enough_images(num_images: int, batch_size: int, what: str) -> None:
    """Raise :class:`TooFewImagesError` when ``what`` (e.g. 'the training split') cannot fill a batch."""
    if num_images < batch_size:
        raise TooFewImagesError(f'{what} has {num_images} image(s), fewer than one batch (--batch-size '
                                f'{batch_size}): add images or lower --batch-size')
