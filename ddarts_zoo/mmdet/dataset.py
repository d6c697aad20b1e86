"""``DigitsDetDataset``: mmdet's ``CocoDataset`` for the generated digits-det folder.

It reads the COCO files exactly as ``CocoDataset`` does; before that it checks that ``data_root`` holds a
complete digits-det set, so a missing set fails with one message that names the folder and the command that
prepares it (``ddarts-zoo digits-det``), whichever tool builds the dataset (mmdet's ``tools/train.py`` /
``tools/test.py`` or ``python -m ddarts_zoo.mmdet.train``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS

from .digits_det import DIGITS_DET_CLASSES, check_digits_det

__all__ = ['DigitsDetDataset']


@DATASETS.register_module()
class DigitsDetDataset(CocoDataset):
    """COCO-format digits-det split (classes ``'0'`` .. ``'9'``); fails clearly when the folder is missing."""

    METAINFO: Dict[str, Any] = {
        'classes': DIGITS_DET_CLASSES,
        # one colour per digit for mmdet's visualizer (tab10)
        'palette': [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)],
    }

    def load_data_list(self) -> List[dict]:
        root = self.data_root or str(Path(self.ann_file).parent.parent)
        check_digits_det(root)
        return super().load_data_list()
