"""Generated image folders for the ``--dataset folder`` tests: ``root/{train,val}/<class>/*.png``."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image

CLASSES = ('cat', 'dog', 'emu')


def make_tree(root: Path, mode: str = 'L', per_class: int = 10, val: int = 0, seed: int = 0,
              constant: bool = False) -> Dict[str, List[int]]:
    """3 classes of PNGs of odd sizes (13..37 px a side); returns the gray level drawn for each file.

    ``mode``: 'L' (grayscale) or 'RGB'.  Class ``c`` is brighter by ``80 c`` (learnable); ``constant``:
    every image is one flat gray level, so resizing leaves it exact.
    """
    rng = np.random.default_rng(seed)
    levels: Dict[str, List[int]] = {'train': [], 'val': []}
    for split, count in (('train', per_class), ('val', val)):
        for c, name in enumerate(CLASSES if count else ()):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                w, h = (int(v) for v in rng.integers(13, 38, size=2))
                level = int(rng.integers(0, 256))
                pixels = (np.full((h, w), level) if constant else
                          rng.integers(0, 90, size=(h, w)) + 80 * c).astype(np.uint8)
                img = Image.fromarray(pixels, mode='L')
                img.convert(mode).save(folder / f'{i}.png')
                levels[split].append(level)
    return levels
