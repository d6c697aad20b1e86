"""Published pretrained weights: one entry per ``model.tag`` whose files exist.

A tag is registered with timm only when its export folder ships with the package (see
:mod:`ddarts_zoo.hub`). The dict maps ``'model_name.tag'`` to the pretrained-cfg overlay.
"""
from __future__ import annotations

from typing import Any, Dict

__all__ = ['PRETRAINED_TAGS']

PRETRAINED_TAGS: Dict[str, Dict[str, Any]] = {}
