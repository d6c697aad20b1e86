"""timm registrations of the published D-DARTS / DARTOpti models.

Paper: Heuillet et al., "D-DARTS: Distributed Differentiable Architecture Search".
Genotypes: the authors' release (Apache-2.0), shipped in :mod:`ddarts_zoo.genotypes`.

* CIFAR models (32 px, CIFAR stem, 8 searched cells or the baseline's cell count):
  ``ddarts_dd{1,2,4,5}_cifar`` (``init_channels=36``) and
  ``ddarts_do{1,2}_{resnet18,resnet50,xception}_cifar`` (``init_channels=64``).
* ImageNet models (224 px): ``ddarts_dd4`` (14 cells by Algorithm 1, ``init_channels=48``, DARTS stem) and
  ``ddarts_do2_resnet18`` / ``ddarts_do2_resnet50`` (authors' ImageNet stem, ``init_channels=64``).
* Any genotype: ``ddarts_genotype_cifar(genotype=...)`` / ``ddarts_genotype(genotype=...)`` (default: DD-1).

Every model builds only what its outputs read (``DDartsNet(prune_unused_inputs=True)``); pass
``prune_unused_inputs=False`` for the paper's networks and parameter counts (paper Tables 3-5).
"""
from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from . import genotypes as shipped
from .convert import to_model_layout
from .data import DATASETS
from .genotype import Genotype, reduction_positions
from .genotypes import load_genotype
from .network import STEM_STRIDES, DDartsNet
from .weights import PRETRAINED_TAGS, tag_model_args

__all__ = ['ModelSpec', 'PAPER_MODELS', 'DEFAULT_GENOTYPE', 'default_cfgs', 'checkpoint_filter_fn']

CIFAR10_MEAN, CIFAR10_STD = DATASETS['cifar10'].mean, DATASETS['cifar10'].std
CIFAR100_MEAN, CIFAR100_STD = DATASETS['cifar100'].mean, DATASETS['cifar100'].std
PAPER_NAME = 'D-DARTS: Distributed Differentiable Architecture Search'

DEFAULT_GENOTYPE = 'dd1'
"""Genotype of ``ddarts_genotype_cifar`` / ``ddarts_genotype`` when no ``genotype=`` is given (DD-1)."""


class ModelSpec(NamedTuple):
    """The paper configuration of a registered model."""
    genotype: str  # shipped genotype name
    model_args: Dict[str, Any]  # DDartsNet keyword arguments
    dataset: str  # dataset the paper trains it on


PAPER_MODELS: Dict[str, ModelSpec] = {}
for _name in ('dd1', 'dd2', 'dd4', 'dd5'):
    PAPER_MODELS[f'ddarts_{_name}_cifar'] = ModelSpec(_name, dict(init_channels=36, stem_type='cifar'),
                                                     shipped.get(_name).meta['search_dataset'])
for _tag, _dataset in (('do1', 'cifar10'), ('do2', 'cifar100')):
    for _base in ('resnet18', 'resnet50', 'xception'):
        PAPER_MODELS[f'ddarts_{_tag}_{_base}_cifar'] = ModelSpec(
            f'{_tag}_{_base}', dict(init_channels=64, stem_type='cifar'), _dataset)
PAPER_MODELS['ddarts_dd4'] = ModelSpec('dd4', dict(init_channels=48, layers=14, stem_type='imagenet_darts'),
                                      'imagenet')
PAPER_MODELS['ddarts_do2_resnet18'] = ModelSpec('do2_resnet18', dict(init_channels=64, stem_type='imagenet'),
                                               'imagenet')
PAPER_MODELS['ddarts_do2_resnet50'] = ModelSpec('do2_resnet50', dict(init_channels=64, stem_type='imagenet'),
                                               'imagenet')


def _imagenet_stem(geno: Genotype) -> str:
    """The stem that brings ``geno`` to output stride 32 (or as close as its reductions allow)."""
    return 'imagenet_darts' if len(geno.reductions) <= 2 else 'imagenet'


def _final_stride(geno: Genotype, stem_type: str, layers: Optional[int] = None) -> int:
    """Output stride of ``geno`` built with ``layers`` cells (Algorithm 1 places the reductions otherwise)."""
    same = layers is None or layers == geno.num_cells
    return STEM_STRIDES[stem_type] * 2 ** len(geno.reductions if same else reduction_positions(layers))


def _cfg(url: str = '', **kwargs: Any) -> Dict[str, Any]:
    return {
        'url': url, 'num_classes': 10, 'input_size': (3, 32, 32), 'pool_size': (8, 8), 'crop_pct': 1.0,
        'interpolation': 'bicubic', 'mean': CIFAR10_MEAN, 'std': CIFAR10_STD, 'first_conv': 'stem.0',
        'classifier': 'classifier', 'license': 'apache-2.0', 'paper_name': PAPER_NAME, **kwargs,
    }


def _spec_cfg(model_name: str) -> Dict[str, Any]:
    spec = PAPER_MODELS[model_name]
    stem_type = spec.model_args['stem_type']
    size = 224 if stem_type != 'cifar' else 32
    pool = size // _final_stride(shipped.get(spec.genotype), stem_type, spec.model_args.get('layers'))
    if spec.dataset == 'imagenet':
        return _cfg(num_classes=1000, input_size=(3, 224, 224), pool_size=(pool, pool), crop_pct=0.875,
                    mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, first_conv='stem0.0')
    info = DATASETS[spec.dataset]
    return _cfg(num_classes=info.num_classes, pool_size=(pool, pool), mean=info.mean, std=info.std)


def _all_cfgs() -> Dict[str, Dict[str, Any]]:
    cfgs: Dict[str, Dict[str, Any]] = {}
    for name in PAPER_MODELS:
        # Published weights (tags) are added only where their files exist (see ddarts_zoo.weights). timm makes
        # the first tag with weights the default; the trailing '*' keeps the untagged paper configuration the
        # default instead, so that `ddarts_dd1_cifar` never silently becomes a narrow digits model.
        base = _spec_cfg(name)
        tags = {k: v for k, v in PRETRAINED_TAGS.items() if k.split('.', 1)[0] == name}
        for name_tag, overlay in tags.items():
            cfgs[name_tag] = dict(base, **overlay)
        cfgs[f'{name}.*' if tags else name] = base
    # pool_size holds for the default genotype (DEFAULT_GENOTYPE); other genotypes may end at another stride
    default = shipped.get(DEFAULT_GENOTYPE)
    pool = 32 // _final_stride(default, 'cifar')
    cfgs['ddarts_genotype_cifar'] = _cfg(pool_size=(pool, pool))
    pool = 224 // _final_stride(default, _imagenet_stem(default))
    cfgs['ddarts_genotype'] = _cfg(num_classes=1000, input_size=(3, 224, 224), pool_size=(pool, pool),
                                   crop_pct=0.875, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                                   first_conv='stem0.0')
    return cfgs


default_cfgs = generate_default_cfgs(_all_cfgs())


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: DDartsNet) -> Dict[str, Any]:
    """Accept timm/ddarts-zoo state dicts, ``{'state_dict': ...}`` wrappers and the authors' checkpoints."""
    return to_model_layout(state_dict, model, source='the pretrained weights')


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> DDartsNet:
    geno = load_genotype(kwargs.get('genotype', DEFAULT_GENOTYPE))
    kwargs['genotype'] = geno
    if variant == 'ddarts_genotype' and 'stem_type' not in kwargs:
        kwargs['stem_type'] = _imagenet_stem(geno)
    # features_only: timm's getter wrapper over forward_intermediates; every feature_info level by default
    feature_cfg: Dict[str, Any] = dict(feature_cls='getter', out_indices=None)
    source = None
    if pretrained:  # fail fast and clearly (Hub unreachable, corrupt file) before building anything
        from .pretrained import prepare_pretrained
        source = prepare_pretrained(variant, kwargs)
    from .pretrained import pretrained_errors
    with pretrained_errors(variant, source):
        return build_model_with_cfg(
            DDartsNet, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
            feature_cfg=feature_cfg, **kwargs)


def _create_spec(variant: str, pretrained: bool = False, **kwargs: Any) -> DDartsNet:
    spec = PAPER_MODELS[variant]
    # a published tag (e.g. 'ddarts_dd1_cifar.digits') brings the architecture arguments of its weights;
    # precedence: explicit keyword arguments > the tag's arguments > the paper configuration
    tag_args = {k: v for k, v in tag_model_args(variant, kwargs.get('pretrained_cfg')).items()
                if k not in kwargs}
    model = _create(variant, pretrained,
                    **dict(spec.model_args, genotype=spec.genotype, **tag_args, **kwargs))
    if tag_args:  # recorded so that save_for_hf / export write the arguments that rebuild these weights
        model._model_args = dict(getattr(model, '_model_args', {}), **tag_args)
    return model


@register_model
def ddarts_dd1_cifar(pretrained: bool = False, **kwargs: Any) -> DDartsNet:
    """DD-1: sparse, searched on CIFAR-10, 8 cells, C=36 (paper Table 3: 1.7M params with aux head)."""
    return _create_spec('ddarts_dd1_cifar', pretrained, **kwargs)


@register_model
def ddarts_dd2_cifar(pretrained: bool = False, **kwargs: Any) -> DDartsNet:
    """DD-2: edge, searched on CIFAR-10, 8 cells, C=36."""
    return _create_spec('ddarts_dd2_cifar', pretrained, **kwargs)


@register_model
def ddarts_dd4_cifar(pretrained: bool = False, **kwargs: Any) -> DDartsNet:
    """DD-4: edge, searched on CIFAR-100 with the ablation loss, 8 cells, C=36."""
    return _create_spec('ddarts_dd4_cifar', pretrained, **kwargs)


@register_model
def ddarts_dd5_cifar(pretrained: bool = False, **kwargs: Any) -> DDartsNet:
    """DD-5: sparse, searched on CIFAR-100 with the ablation loss, 8 cells, C=36."""
    return _create_spec('ddarts_dd5_cifar', pretrained, **kwargs)


@register_model
def ddarts_do1_resnet18_cifar(pretrained: bool = False, **kwargs: Any) -> DDartsNet:
    """DO-1-ResNet18: DARTOpti from ResNet18 on CIFAR-10, sparse, C=64 (paper Table 3: 36.32M params)."""
    return _create_spec('ddarts_do1_resnet18_cifar', pretrained, **kwargs)


@register_model
def ddarts_do1_resnet50_cifar(pretrained: bool = False, **kwargs: Any) -> DDartsNet:
    """DO-1-ResNet50: DARTOpti from ResNet50 on CIFAR-10, sparse, C=64."""
    return _create_spec('ddarts_do1_resnet50_cifar', pretrained, **kwargs)


@register_model
def ddarts_do1_xception_cifar(pretrained: bool = False, **kwargs: Any) -> DDartsNet:
    """DO-1-Xception: DARTOpti from Xception on CIFAR-10, sparse, 13 cells, C=64."""
    return _create_spec('ddarts_do1_xception_cifar', pretrained, **kwargs)


@register_model
def ddarts_do2_resnet18_cifar(pretrained: bool = False, **kwargs: Any) -> DDartsNet:
    """DO-2-ResNet18: DARTOpti from ResNet18 on CIFAR-100, sparse, C=64."""
    return _create_spec('ddarts_do2_resnet18_cifar', pretrained, **kwargs)


@register_model
def ddarts_do2_resnet50_cifar(pretrained: bool = False, **kwargs: Any) -> DDartsNet:
    """DO-2-ResNet50: DARTOpti from ResNet50 on CIFAR-100, sparse, C=64."""
    return _create_spec('ddarts_do2_resnet50_cifar', pretrained, **kwargs)


@register_model
def ddarts_do2_xception_cifar(pretrained: bool = False, **kwargs: Any) -> DDartsNet:
    """DO-2-Xception: DARTOpti from Xception on CIFAR-100, sparse, 13 cells, C=64."""
    return _create_spec('ddarts_do2_xception_cifar', pretrained, **kwargs)


@register_model
def ddarts_dd4(pretrained: bool = False, **kwargs: Any) -> DDartsNet:
    """DD-4 on ImageNet: 14 cells by Algorithm 1, C=48, DARTS stem (paper Table 5: 7.6M params, 617M MACs)."""
    return _create_spec('ddarts_dd4', pretrained, **kwargs)


@register_model
def ddarts_do2_resnet18(pretrained: bool = False, **kwargs: Any) -> DDartsNet:
    """DO-2-ResNet18 on ImageNet: authors' stem, C=64 (paper Table 5: 53.4M params)."""
    return _create_spec('ddarts_do2_resnet18', pretrained, **kwargs)


@register_model
def ddarts_do2_resnet50(pretrained: bool = False, **kwargs: Any) -> DDartsNet:
    """DO-2-ResNet50 on ImageNet: authors' stem, C=64 (paper Table 5: 73.23M params)."""
    return _create_spec('ddarts_do2_resnet50', pretrained, **kwargs)


@register_model
def ddarts_genotype_cifar(pretrained: bool = False, **kwargs: Any) -> DDartsNet:
    """Any genotype as a CIFAR-style network: ``genotype=`` a name, a JSON path, a dict or a Genotype
    (default: :data:`DEFAULT_GENOTYPE`)."""
    kwargs.setdefault('stem_type', 'cifar')
    return _create('ddarts_genotype_cifar', pretrained, **kwargs)


@register_model
def ddarts_genotype(pretrained: bool = False, **kwargs: Any) -> DDartsNet:
    """Any genotype as an ImageNet-style network (stem chosen so that the output stride is 32; default
    genotype: :data:`DEFAULT_GENOTYPE`)."""
    return _create('ddarts_genotype', pretrained, **kwargs)
