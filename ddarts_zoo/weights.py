"""Published pretrained weights: one ``model.tag`` entry per shipped export folder holding ``model.safetensors``.

Each folder ``ddarts_zoo/weights/<model>.<tag>/`` is what ``ddarts-zoo export`` writes, mirrored on the Hub as
``ddarts-zoo/<model>.<tag>``.  :data:`PRETRAINED_TAGS` holds the pretrained-cfg overlays timm registers;
:data:`TAG_MODEL_ARGS` the architecture arguments the weights need (e.g. a narrower ``init_channels``), which
the ``ddarts_*`` register functions apply when the tag is named (explicit keyword arguments win), since timm's
pretrained cfgs cannot carry them.  The untagged name stays the paper configuration.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .data import dataset_info

__all__ = ['PRETRAINED_TAGS', 'TAG_MODEL_ARGS', 'PUBLISHED', 'WEIGHTS_DIR', 'WEIGHTS_FILE', 'HUB_ORG',
           'published_tags', 'tag_model_args', 'local_weights_dir']

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
        description=f'trained on {dataset} by ddarts-zoo (`ddarts-zoo train`); see the model card',
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
