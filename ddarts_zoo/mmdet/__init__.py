"""MMDetection 3 integration (needs the ``det`` extra): ``DDartsBackbone`` and the digits-det dataset.

Importing this package (configs do it with ``custom_imports = dict(imports=['ddarts_zoo.mmdet'],
allow_failed_imports=False)``, so mmdet's own tools do it too) registers ``DDartsBackbone`` in mmdet's
``MODELS``, ``DigitsDetDataset`` in ``DATASETS``, ``CPUDistributedDataParallel`` in ``MODEL_WRAPPERS``, and
the globals of mmengine's checkpoints for torch's weights-only loading (:mod:`.checkpoints`).
``import ddarts_zoo`` alone never imports mmdet.
"""
from __future__ import annotations

try:
    import mmcv  # noqa: F401
    import mmdet  # noqa: F401
    import mmengine  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        f'ddarts_zoo.mmdet needs the `det` extra (mmengine==0.10.7, mmcv==2.1.0 built with ops, '
        f'mmdet==3.3.0, pycocotools): pip install "ddarts-zoo[det]". mmcv 2.1.0 has no wheel for recent '
        f'torch; build one with .ci/build_mmcv.sh. Import failed with: {err}') from err

from ._compat import patch_mmengine_package_utils

patch_mmengine_package_utils()  # mmdet:: config paths without pkg_resources (setuptools >= 82)

from .backbone import DDartsBackbone, backbone_levels, ddarts_model_names
from .checkpoints import register_checkpoint_globals
from .cpu_dist import CPUDistributedDataParallel
from .dataset import DigitsDetDataset
from .digits_det import DIGITS_DET_CLASSES, check_digits_det, ensure_digits_det, generate_digits_det

register_checkpoint_globals()

__all__ = ['DDartsBackbone', 'backbone_levels', 'ddarts_model_names', 'DIGITS_DET_CLASSES',
           'DigitsDetDataset', 'CPUDistributedDataParallel', 'check_digits_det', 'ensure_digits_det',
           'generate_digits_det']
