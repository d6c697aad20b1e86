"""Run-time shim for mmengine 0.10.7 on setuptools >= 82 (which no longer ships ``pkg_resources``).

mmengine resolves ``mmdet::`` config paths (``_base_ = ['mmdet::_base_/...']``) with
``mmengine.utils.is_installed`` / ``get_installed_path``, which import ``pkg_resources``. The recommended fix
is a pin (``setuptools>=77.0.3,<82``: torch 2.14 needs >= 77.0.3); when ``pkg_resources`` is missing anyway,
importing :mod:`ddarts_zoo.mmdet` replaces those two functions with ``importlib.metadata`` equivalents.
Nothing is changed when ``pkg_resources`` imports. Configs parsed before ``ddarts_zoo.mmdet`` is imported
(mmdet's own ``tools/train.py``) still need the pin.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os.path as osp
import warnings

__all__ = ['patch_mmengine_package_utils']


def _module_name(package: str) -> str:
    try:
        top = importlib.metadata.distribution(package).read_text('top_level.txt') or ''
    except importlib.metadata.PackageNotFoundError:
        return package.replace('-', '_')
    return top.split()[0] if top.split() else package.replace('-', '_')


def _is_installed(package: str) -> bool:
    try:
        importlib.metadata.distribution(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        spec = importlib.util.find_spec(package)
        return spec is not None and spec.origin is not None


def _get_installed_path(package: str) -> str:
    for name in (package, _module_name(package)):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin is not None:
            return osp.dirname(spec.origin)
    raise importlib.metadata.PackageNotFoundError(package)


def patch_mmengine_package_utils() -> bool:
    """Install the shim if ``pkg_resources`` is unavailable; returns whether it did."""
    try:
        with warnings.catch_warnings():  # setuptools 81 warns that pkg_resources is deprecated
            warnings.simplefilter('ignore')
            import pkg_resources  # noqa: F401
        return False
    except ImportError:
        pass
    import mmengine.config.config as config_module
    import mmengine.utils as utils
    import mmengine.utils.package_utils as package_utils
    for module in (package_utils, utils, config_module):
        module.is_installed = _is_installed
        module.get_installed_path = _get_installed_path
    return True
