"""Published pretrained weights: one entry per ``model.tag`` whose files exist.

Each published tag has an export folder shipped with the package, ``ddarts_zoo/weights/<model>.<tag>/``
(``model.safetensors``, ``config.json``, ``README.md``: what ``ddarts-zoo export`` writes), mirrored on the
Hugging Face Hub as ``ddarts-zoo/<model>.<tag>``.  A tag is registered with timm only when its folder holds
``model.safetensors`` (checked at import time).

* :data:`PRETRAINED_TAGS` maps ``'model.tag'`` to the pretrained-cfg overlay timm registers (Hub id and
  filename, classes, input size, mean / std).
* :data:`TAG_MODEL_ARGS` maps ``'model.tag'`` to the *architecture* arguments the weights need (e.g. a
  narrower ``init_channels``).  timm's pretrained cfgs cannot carry model arguments, so the ``ddarts_*``
  register functions apply them (as defaults: explicit keyword arguments win) whenever the tag is named,
  e.g. ``timm.create_model('ddarts_dd1_cifar.digits', pretrained=True)``.  ``num_classes`` and ``in_chans``
  come from the cfg the way timm always does it.  The untagged name (``ddarts_dd1_cifar``) stays the paper's
  CIFAR configuration, so a tag is never picked implicitly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .data import dataset_info

__all__ = ['PRETRAINED_TAGS', 'TAG_MODEL_ARGS', 'PUBLISHED', 'WEIGHTS_DIR', 'HUB_ORG', 'published_tags',
           'tag_model_args', 'local_weights_dir']

WEIGHTS_DIR = Path(__file__).resolve().parent / 'weights'
HUB_ORG = 'ddarts-zoo'
WEIGHTS_FILE = 'model.safetensors'

# 'model.tag' -> (dataset, architecture arguments of the published weights)
PUBLISHED: Dict[str, Tuple[str, Dict[str, Any]]] = {
    'ddarts_dd1_cifar.digits': ('digits', dict(init_channels=8)),
    'ddarts_dd5_cifar.digits': ('digits', dict(init_channels=8)),
}


def local_weights_dir(name_tag: str) -> Path:
    """The shipped export folder of ``'model.tag'`` (use it with ``timm.create_model('local-dir:...')``)."""
    return WEIGHTS_DIR / name_tag


def _overlay(name_tag: str, dataset: str) -> Dict[str, Any]:
    info = dataset_info(dataset)
    return dict(
        hf_hub_id=f'{HUB_ORG}/{name_tag}', hf_hub_filename=WEIGHTS_FILE, num_classes=info.num_classes,
        input_size=(info.in_chans, info.image_size, info.image_size), mean=tuple(info.mean), std=tuple(info.std),
        crop_pct=1.0 if info.image_size <= 64 else 0.875,
        description=f'trained on {dataset} by ddarts-zoo (search/train.py); see the model card',
    )


PRETRAINED_TAGS: Dict[str, Dict[str, Any]] = {}
TAG_MODEL_ARGS: Dict[str, Dict[str, Any]] = {}
for _name_tag, (_dataset, _args) in PUBLISHED.items():
    if (local_weights_dir(_name_tag) / WEIGHTS_FILE).is_file():
        PRETRAINED_TAGS[_name_tag] = _overlay(_name_tag, _dataset)
        TAG_MODEL_ARGS[_name_tag] = dict(_args)


def published_tags(model_name: str) -> List[str]:
    """The published ``'model.tag'`` names of architecture ``model_name`` (empty when none are)."""
    base = model_name.split('.', 1)[0]
    return sorted(k for k in PRETRAINED_TAGS if k.split('.', 1)[0] == base)


def tag_model_args(variant: str, pretrained_cfg: Optional[Any]) -> Dict[str, Any]:
    """Architecture arguments implied by the pretrained tag a ``ddarts_*`` model is created with.

    ``pretrained_cfg`` is what timm hands the register function: a tag string for ``'model.tag'`` names, a
    dict / ``PretrainedCfg`` for ``hf-hub:`` / ``local-dir:`` names (whose ``model_args`` timm applies itself),
    or ``None``.
    """
    tag = pretrained_cfg if isinstance(pretrained_cfg, str) else None
    if tag is None and isinstance(pretrained_cfg, Mapping) and pretrained_cfg.get('source') not in (
            'hf-hub', 'local-dir'):
        tag = pretrained_cfg.get('tag')
    if not tag:
        return {}
    return dict(TAG_MODEL_ARGS.get(f'{variant}.{tag}', {}))
