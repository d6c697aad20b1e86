"""MMDetection 3 integration (needs the ``det`` extra): ``DDartsBackbone`` and the digits-det dataset.

Importing this package registers ``DDartsBackbone`` in mmdet's ``MODELS``; configs reach it with
``custom_imports = dict(imports=['ddarts_zoo.mmdet'], allow_failed_imports=False)``.
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
from .digits_det import DIGITS_DET_CLASSES, ensure_digits_det, generate_digits_det

__all__ = ['DDartsBackbone', 'backbone_levels', 'ddarts_model_names', 'DIGITS_DET_CLASSES',
           'ensure_digits_det', 'generate_digits_det']
