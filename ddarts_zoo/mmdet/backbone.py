"""``DDartsBackbone``: a registered ddarts-zoo model as an MMDetection 3 backbone.

Feature levels are the model's timm ``feature_info`` entries, finest first (ImageNet models: ``stem0`` at
stride 2, then strides 4-32; CIFAR models: the last cell at stride 1, then one level per reduction).  Stage 0
(for ``frozen_stages``) is the stem, stage ``k`` ends with the module of level ``k``, as in mmdet's ResNet.
Weights are loaded strictly by :meth:`DDartsBackbone.init_weights`; classifier and auxiliary-head keys are
ignored, and named weights (tag, ``hf-hub:``, ``local-dir:``) also bring their architecture arguments.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import timm
import torch
import torch.nn as nn
from mmengine.model import BaseModule
from mmengine.model.weight_init import initialize, update_init_info
from timm.models import split_model_name_tag
from torch.nn.modules.batchnorm import _BatchNorm

from mmdet.registry import MODELS

from ..convert import (CheckpointError, is_official_state_dict, load_state_dict_strict, read_weights_file,
                       to_model_layout, unwrap_state_dict)
from ..network import CellNetwork, DDartsNet, level_source

__all__ = ['DDartsBackbone', 'ddarts_model_names', 'backbone_levels']

_TIMM_SOURCES = ('hf-hub:', 'local-dir:')
_CHECKPOINT_SUFFIXES = ('.pth', '.pt', '.bin', '.ckpt', '.safetensors', '.tar')
# Keys of the classification model that a backbone does not have.
_HEAD_PREFIXES = ('classifier.', 'aux_head.', 'global_pool.', 'head_drop.')
# model_args the backbone owns (or that make no sense without a head).
_RESERVED_ARGS = {
    'num_classes': 'a backbone has no classifier',
    'auxiliary': 'a backbone has no auxiliary head',
    'features_only': 'the backbone selects levels itself (use out_indices)',
    'out_indices': 'use the backbone argument out_indices',
    'drop_path_rate': 'use the backbone argument drop_path_rate',
    'pretrained': 'use the backbone argument pretrained',
}
StateDict = Dict[str, torch.Tensor]


def ddarts_model_names() -> List[str]:
    """Names of the registered ddarts-zoo timm models (valid ``model_name`` values, without tags)."""
    return sorted(timm.list_models('ddarts_*'))


def backbone_levels(model_name: str, **model_args: Any) -> List[Dict[str, Any]]:
    """``feature_info`` of ``model_name`` (list of dicts ``num_chs``/``reduction``/``module``)."""
    arch = _check_model_name(model_name)
    return [dict(f) for f in timm.create_model(arch, num_classes=0, **model_args).feature_info]


def _check_model_name(model_name: Any) -> str:
    if not isinstance(model_name, str) or not model_name:
        raise ValueError(f'DDartsBackbone: model_name must be a registered ddarts-zoo model name, '
                         f'got {model_name!r}')
    arch, _ = split_model_name_tag(model_name)
    names = ddarts_model_names()
    if arch not in names:
        raise ValueError(f'DDartsBackbone: model_name={model_name!r} is not a registered ddarts-zoo model; '
                         f'choose one of: {", ".join(names)}')
    return arch


def _describe_levels(levels: Sequence[Dict[str, Any]]) -> str:
    return ', '.join(f'{i}: {f["module"]} (stride {f["reduction"]}, {f["num_chs"]} ch)'
                     for i, f in enumerate(levels))


def _pretrained_checkpoint(init_cfg: Any) -> Any:
    cfgs = [init_cfg] if isinstance(init_cfg, dict) else list(init_cfg or [])
    found = [c.get('checkpoint') for c in cfgs if c.get('type') == 'Pretrained']
    return found[-1] if found else None


def _cell_index(module: str) -> int:
    """Index of the cell producing a feature level (-1 for a stem output)."""
    return max(level_source(module), -1)


def _weights_init_cfg(pretrained: Optional[Union[bool, str]], init_cfg: Any) -> Any:
    """The ``init_cfg`` that loads ``pretrained`` (mmdet's ``Pretrained`` initializer), or ``init_cfg`` itself."""
    if pretrained and init_cfg:
        raise ValueError('DDartsBackbone: set either pretrained or init_cfg, not both')
    if pretrained:
        return dict(type='Pretrained', checkpoint=pretrained)
    if pretrained not in (None, False):
        raise ValueError(f'DDartsBackbone: pretrained must be None, a bool or a string, got {pretrained!r}')
    return init_cfg


def _check_model_args(model_args: Optional[Dict[str, Any]], drop_path_rate: float) -> Dict[str, Any]:
    """A copy of ``model_args`` without the keys the backbone sets itself; ``drop_path_rate`` in [0, 1)."""
    model_args = dict(model_args or {})
    for key, why in _RESERVED_ARGS.items():
        if key in model_args:
            raise ValueError(f'DDartsBackbone: model_args may not contain {key!r} ({why})')
    if not 0.0 <= float(drop_path_rate) < 1.0:
        raise ValueError(f'DDartsBackbone: drop_path_rate must be in [0, 1), got {drop_path_rate}')
    return model_args


@MODELS.register_module()
class DDartsBackbone(CellNetwork, BaseModule):
    """A D-DARTS / DARTOpti network (any registered ``ddarts_*`` timm model) as a detection backbone.

    Args:
        model_name: registered ddarts-zoo model, e.g. ``'ddarts_do2_resnet18'`` (a ``.tag`` is allowed and
            is what ``pretrained=True`` loads).
        out_indices: feature levels to return (timm ``feature_info`` indices, strictly increasing).
            ``None`` returns every level. Cells after the last requested level are not built.
        frozen_stages: freeze stages ``0..frozen_stages`` (-1: nothing). Stage 0 is the stem, stage
            ``k >= 1`` the cells up to feature level ``k``. Frozen modules get ``requires_grad=False`` and
            stay in eval mode (BN statistics included).
        norm_eval: keep every BatchNorm in eval mode while training (frozen statistics).
        drop_path_rate: drop-path probability on each node of each cell (training only).
        with_cp: gradient checkpointing of each cell (saves memory, costs a second forward).
        pretrained: weights to load in :meth:`init_weights`: ``True`` (the default weights of
            ``model_name``), a tag (``'digits'``), a timm name (``'ddarts_dd1_cifar.digits'``),
            ``'hf-hub:...'``, ``'local-dir:...'`` (the architecture must be ``model_name``) or a checkpoint
            path / URL (timm state dicts, ``{'state_dict': ...}`` wrappers, the authors' checkpoints, a
            detector checkpoint with ``prefix='backbone.'``). Exclusive with ``init_cfg``.
        model_args: extra keyword arguments of ``timm.create_model`` (``init_channels``, ``in_chans``,
            ``layers``, ``genotype`` for ``ddarts_genotype*`` ...); they win over the arguments named
            weights bring (e.g. ``in_chans=3`` for RGB detection from 1-channel weights).
        init_cfg: mmengine init config; ``dict(type='Pretrained', checkpoint=..., prefix=None)`` accepts
            everything ``pretrained`` does.

    Attributes:
        out_channels: channels of each returned level (the neck's ``in_channels``).
        out_strides: stride of each returned level.
        feature_info: ``feature_info`` dicts of the returned levels.
    """

    def __init__(
            self,
            model_name: str,
            out_indices: Optional[Sequence[int]] = None,
            frozen_stages: int = -1,
            norm_eval: bool = False,
            drop_path_rate: float = 0.0,
            with_cp: bool = False,
            pretrained: Optional[Union[bool, str]] = None,
            model_args: Optional[Dict[str, Any]] = None,
            init_cfg: Optional[Union[Dict[str, Any], List[Dict[str, Any]]]] = None,
    ) -> None:
        init_cfg = _weights_init_cfg(pretrained, init_cfg)
        super().__init__(init_cfg=init_cfg)
        self.model_name = model_name
        self.arch = _check_model_name(model_name)
        self.model_args = model_args = _check_model_args(model_args, drop_path_rate)

        # Named weights (a tag, hf-hub:, local-dir:) fix architecture arguments (e.g. init_channels): build
        # through that name without loading, so that they apply (explicit model_args still win).
        weights = pretrained if pretrained else _pretrained_checkpoint(init_cfg)
        build_name = (self._timm_name(weights) if weights else None) or model_name
        net = timm.create_model(build_name, pretrained=False, num_classes=0, drop_path_rate=drop_path_rate,
                                **model_args)
        built = split_model_name_tag(net.pretrained_cfg.get('architecture') or self.arch)[0]
        if built != self.arch:
            raise ValueError(f'DDartsBackbone: pretrained={weights!r} holds {built} weights, but model_name '
                             f'is {model_name!r}')
        if not isinstance(net, DDartsNet):  # pragma: no cover - every ddarts_* model is a DDartsNet
            raise TypeError(f'DDartsBackbone: {self.arch} did not build a DDartsNet')
        self.in_chans = net.in_chans
        levels = [dict(f) for f in net.feature_info]
        self.out_indices = self._check_out_indices(out_indices, levels)
        if not isinstance(frozen_stages, int) or not -1 <= frozen_stages < len(levels):
            raise ValueError(f'DDartsBackbone: frozen_stages must be an int in [-1, {len(levels) - 1}] for '
                             f'{self.arch} (stage 0 = stem, stage k = cells up to level k; levels: '
                             f'{_describe_levels(levels)}), got {frozen_stages!r}')
        self.levels = levels
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.drop_path_rate = float(drop_path_rate)
        self.feature_info = [levels[i] for i in self.out_indices]
        self.out_channels: List[int] = [f['num_chs'] for f in self.feature_info]
        self.out_strides: List[int] = [f['reduction'] for f in self.feature_info]
        self._out_modules: List[str] = [f['module'] for f in self.feature_info]
        self._out_sources: List[int] = [level_source(m) for m in self._out_modules]

        # Same module names as the timm model, so timm / ddarts-zoo state dicts load without renaming.
        self.stem_type = net.stem_type
        self._stem_names: Tuple[str, ...] = ('stem',) if self.stem_type == 'cifar' else ('stem0', 'stem1')
        for name in self._stem_names:
            self.add_module(name, getattr(net, name))
        last_cell = max(_cell_index(m) for m in self._out_modules)
        self.cells = net.cells.head(last_cell + 1)
        self.num_cells_total = len(net.cells)
        # prefixes of modules the paper configuration has but this network omits (see DDartsNet.pruned_modules)
        self.pruned_modules: Tuple[str, ...] = net.pruned_modules
        del net
        self._freeze_stages()

    # ------------------------------------------------------------------ configuration checks
    @staticmethod
    def _check_out_indices(out_indices: Optional[Sequence[int]],
                           levels: List[Dict[str, Any]]) -> Tuple[int, ...]:
        n = len(levels)
        if out_indices is None:
            return tuple(range(n))
        if isinstance(out_indices, int) or not isinstance(out_indices, Iterable):
            raise ValueError(f'DDartsBackbone: out_indices must be a sequence of level indices, got '
                             f'{out_indices!r}; levels: {_describe_levels(levels)}')
        idx = list(out_indices)
        bad = [i for i in idx if not isinstance(i, int) or isinstance(i, bool) or not -n <= i < n]
        if not idx or bad:
            raise ValueError(f'DDartsBackbone: out_indices={tuple(idx)} is invalid (each must be an int in '
                             f'[0, {n - 1}]); levels: {_describe_levels(levels)}')
        norm = [i % n for i in idx]
        if any(b <= a for a, b in zip(norm, norm[1:])):
            raise ValueError(f'DDartsBackbone: out_indices={tuple(idx)} must be strictly increasing '
                             f'(finest level first); levels: {_describe_levels(levels)}')
        return tuple(norm)

    # ------------------------------------------------------------------ stages
    def _stage_modules(self, stage: int) -> List[nn.Module]:
        """Modules of stages ``0..stage``: the stem, then cells up to feature level ``stage``."""
        if stage < 0:
            return []
        modules: List[nn.Module] = [getattr(self, name) for name in self._stem_names]
        if stage >= 1:
            last = _cell_index(self.levels[stage]['module'])
            modules.extend(self.cells[:last + 1])
        return modules

    def _freeze_stages(self) -> None:
        for m in self._stage_modules(self.frozen_stages):
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> 'DDartsBackbone':
        """Set training mode, keeping frozen stages (and every BN when ``norm_eval``) in eval mode."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def set_drop_path(self, rate: float) -> None:
        """Change the drop-path probability of every cell (e.g. from a hook ramping it over epochs)."""
        self.drop_path_rate = float(rate)
        self.cells.set_drop_path(rate)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Feature maps of ``out_indices``, finest first."""
        use_cp = self.with_cp and self.training and torch.is_grad_enabled()
        return tuple(self.run_cells(x, self._out_sources, checkpointing=use_cp)[1])

    # ------------------------------------------------------------------ weights
    def init_weights(self) -> None:
        """Apply ``init_cfg``; a ``Pretrained`` entry is loaded with :meth:`load_pretrained` (strict)."""
        cfgs = [self.init_cfg] if isinstance(self.init_cfg, dict) else list(self.init_cfg or [])
        pretrained = [c for c in cfgs if c.get('type') == 'Pretrained']
        if not pretrained:
            super().init_weights()
            return
        if self._is_init:
            return
        others = [c for c in cfgs if c.get('type') != 'Pretrained']
        if others:
            initialize(self, others)
        cfg = pretrained[-1]
        self.load_pretrained(cfg['checkpoint'], prefix=cfg.get('prefix'))
        if hasattr(self, '_params_init_info'):
            update_init_info(self, init_info=f'DDartsBackbone: loaded {cfg["checkpoint"]}')
        self._is_init = True

    def load_pretrained(self, checkpoint: Union[bool, str], prefix: Optional[str] = None) -> None:
        """Load backbone weights from ``checkpoint`` (see the module docstring for the accepted forms)."""
        state_dict = self._read_weights(checkpoint, prefix)
        self._load_backbone_state(state_dict, str(checkpoint))

    def _timm_name(self, checkpoint: Union[bool, str]) -> Optional[str]:
        """The ``timm.create_model`` name for ``checkpoint`` or ``None`` for a file / URL."""
        if checkpoint is True:
            return self.model_name
        if not isinstance(checkpoint, str):
            raise ValueError(f'DDartsBackbone: pretrained checkpoint must be True or a string, '
                             f'got {checkpoint!r}')
        if checkpoint.startswith(_TIMM_SOURCES):
            return checkpoint
        if ('://' in checkpoint or os.sep in checkpoint or checkpoint.endswith(_CHECKPOINT_SUFFIXES)
                or os.path.exists(checkpoint)):
            return None
        arch, tag = split_model_name_tag(checkpoint)
        if tag and arch in ddarts_model_names():
            if arch != self.arch:
                raise ValueError(f'DDartsBackbone: pretrained={checkpoint!r} is for {arch}, but model_name '
                                 f'is {self.model_name!r}')
            return checkpoint
        return f'{self.arch}.{checkpoint}'  # a bare tag

    def _read_weights(self, checkpoint: Union[bool, str], prefix: Optional[str]) -> StateDict:
        name = self._timm_name(checkpoint)
        if name is not None:
            try:
                net = timm.create_model(name, pretrained=True, **self.model_args)
            except RuntimeError as err:  # e.g. size mismatch: weights made with other model_args
                raise RuntimeError(f'DDartsBackbone({self.model_name}, model_args={self.model_args}): could '
                                   f'not load pretrained={checkpoint!r}: {err}') from err
            arch = split_model_name_tag(net.pretrained_cfg.get('architecture') or self.arch)[0]
            if arch != self.arch:
                raise ValueError(f'DDartsBackbone: pretrained={checkpoint!r} holds {arch} weights, but '
                                 f'model_name is {self.model_name!r}')
            return net.state_dict()
        path = str(checkpoint)
        if '://' not in path:  # a local file: tensors only, a bad file raises UnreadableFileError naming it
            raw: Any = read_weights_file(path, 'DDartsBackbone pretrained weights (.pth / .safetensors)')
        else:
            from mmengine.runner.checkpoint import CheckpointLoader
            raw = CheckpointLoader.load_checkpoint(path, map_location='cpu')
        state = unwrap_state_dict(raw)
        detector_keys = any(k.startswith('backbone.') for k in state)
        if prefix is None and detector_keys and not any(k in self.state_dict() for k in state):
            prefix = 'backbone.'  # a whole-detector checkpoint
        if prefix:
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if not state:
                raise ValueError(f'DDartsBackbone: no key of {path!r} starts with prefix {prefix!r}')
        if is_official_state_dict(state):
            state = to_model_layout(state, timm.create_model(self.arch, **self.model_args), path)
        return state

    def _load_backbone_state(self, state: StateDict, source: str) -> None:
        unused = _HEAD_PREFIXES + tuple(f'cells.{i}.' for i in range(len(self.cells), self.num_cells_total))
        try:
            load_state_dict_strict(self, state, source, ignore=unused, target='the backbone')
        except CheckpointError as err:
            raise RuntimeError(f'DDartsBackbone({self.model_name}, model_args={self.model_args}): weights from '
                               f'{source} do not fit the backbone; {err.summary()}') from err
