"""timm's generic per-model contract, applied to every registered ``ddarts_*`` name.

The checks follow those of timm's own per-model tests (forward, backward, default cfgs, TorchScript, FX,
features, intermediates), written for this package. Narrow widths (``init_channels=8``) and small inputs keep
them fast where the check allows: cells, strides and pruning do not depend on the width.
"""
from __future__ import annotations

import math
import re
import warnings

import pytest
import timm
import torch

import ddarts_zoo  # noqa: F401  (registers the models)
from ddarts_zoo import genotypes as shipped
from ddarts_zoo.data import DATASETS
from ddarts_zoo.errors import UserError
from ddarts_zoo.genotype import DeadNodeWarning, GenotypeError, reduction_positions
from ddarts_zoo.zoo import PAPER_MODELS

NAMES = timm.list_models('ddarts_*')
NAMES_WITH_TAGS = timm.list_models('ddarts_*', include_tags=True)
NARROW = dict(init_channels=8)


def _create(name: str, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeadNodeWarning)
        return timm.create_model(name, **kwargs)


def _input(model, batch: int, size: int = 0) -> torch.Tensor:
    """A seeded batch at ``size`` px (default: 16 px for 32-px models, 32 px for 224-px ones)."""
    chans, height, _ = model.pretrained_cfg['input_size']
    size = size or (32 if height > 64 else 16)
    return torch.randn(batch, chans, size, size, generator=torch.Generator().manual_seed(0))


def test_every_registered_name_builds_without_arguments():
    """What timm's tools do (``for name in timm.list_models('ddarts_*'): timm.create_model(name)``), on the
    meta device so that no full-width tensor is allocated."""
    assert set(NAMES) == set(PAPER_MODELS) | {'ddarts_genotype', 'ddarts_genotype_cifar'}
    with torch.device('meta'):
        for name in NAMES:
            model = _create(name)
            assert model.num_classes == model.pretrained_cfg['num_classes'] and len(model.feature_info) >= 3


@pytest.mark.parametrize('name', NAMES)
def test_forward_backward_every_parameter_learns(name):
    """As created (the default configuration), the logits give every parameter a gradient."""
    model = _create(name, num_classes=42, **NARROW).train()
    out = model(_input(model, 2))
    assert out.shape == (2, 42) and torch.isfinite(out).all()
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f'{name}: no gradient for {missing}'
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize('name', NAMES)
def test_auxiliary_training_every_parameter_learns(name):
    """With ``auxiliary=True``, the logits and aux logits of ``forward_train`` reach every parameter."""
    model = _create(name, auxiliary=True, **NARROW).train()
    logits, aux = model.forward_train(_input(model, 2))
    assert aux is not None and aux.shape == logits.shape and torch.isfinite(aux).all()
    (logits.mean() + 0.4 * aux.mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f'{name}: no gradient for {missing}'


@pytest.mark.parametrize('width', [pytest.param({}, marks=pytest.mark.slow, id='paper-width'),
                                   pytest.param(NARROW, id='narrow')])
@pytest.mark.parametrize('name', NAMES_WITH_TAGS)
def test_pretrained_cfg_and_heads(name, width):
    """cfg fields name real tensors, ``pool_size`` is the unpooled feature size at the default input size,
    and classifier resets give pooled / unpooled features (at the paper's width, as timm tests, when slow)."""
    model = _create(name, **width).eval()
    cfg = model.pretrained_cfg
    for key in ('input_size', 'pool_size', 'num_classes', 'mean', 'std', 'crop_pct', 'interpolation',
                'first_conv', 'classifier', 'license', 'paper_name'):
        assert cfg.get(key) is not None, f'{name}: pretrained_cfg lacks {key}'
    state = model.state_dict()
    chans = cfg['input_size'][0]
    assert state[f"{cfg['first_conv']}.weight"].shape[1] == chans == model.in_chans
    assert state[f"{cfg['classifier']}.weight"].shape[0] == cfg['num_classes'] == model.num_classes
    assert len(cfg['mean']) == len(cfg['std']) == chans
    spec = PAPER_MODELS.get(name.split('.')[0])
    if spec is not None and '.' not in name:  # the paper's dataset (tags bring their own)
        if spec.dataset == 'imagenet':
            data = dict(mean=timm.data.IMAGENET_DEFAULT_MEAN, std=timm.data.IMAGENET_DEFAULT_STD, size=224)
        else:
            data = dict(mean=DATASETS[spec.dataset].mean, std=DATASETS[spec.dataset].std, size=32)
        assert (cfg['mean'], cfg['std'], cfg['input_size'][1]) == (data['mean'], data['std'], data['size'])
    x = torch.randn(1, *cfg['input_size'])
    with torch.no_grad():
        feats = model.forward_features(x)
        assert tuple(feats.shape[1:]) == (model.num_features, *cfg['pool_size'])
        pre_logits = model.forward_head(feats, pre_logits=True)
        assert pre_logits.shape == (1, model.head_hidden_size)
        model.reset_classifier(0)
        assert model.num_classes == 0 and model(x).shape == pre_logits.shape
        model.reset_classifier(0, '')
        assert tuple(model(x).shape[1:]) == (model.num_features, *cfg['pool_size'])
        headless = _create(name, num_classes=0, global_pool='', **NARROW).eval()
        assert tuple(headless(x).shape[2:]) == tuple(cfg['pool_size'])


@pytest.mark.parametrize('name', NAMES)
def test_features_only_agrees_with_forward_intermediates(name):
    features = _create(name, features_only=True, **NARROW).eval()
    reductions, channels = features.feature_info.reduction(), features.feature_info.channels()
    assert len(reductions) >= 3 and reductions == sorted(set(reductions))
    plain = _create(name, num_classes=0, **NARROW).eval()
    plain.load_state_dict(features.model.state_dict(), strict=True)  # same modules, same weights
    x = _input(plain, 1)
    size = x.shape[-1]
    with torch.no_grad():
        outs = features(x)
        final, inter = plain.forward_intermediates(x)
        assert torch.equal(final, plain.forward_features(x))
        assert reductions[-1] == size // final.shape[-1]
        assert len(outs) == len(inter) == len(reductions)
        for out, same, red, chs in zip(outs, inter, reductions, channels):
            assert torch.equal(out, same)
            assert tuple(out.shape[1:]) == (chs, math.ceil(size / red), math.ceil(size / red))
        last_two = plain.forward_intermediates(x, indices=2, intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(last_two, inter[-2:]))
        early_final, early = plain.forward_intermediates(x, indices=[0, 1], stop_early=True)
        assert torch.equal(early_final, inter[1]) and all(torch.equal(a, b) for a, b in zip(early, inter[:2]))
    with pytest.raises(ValueError, match='NCHW'):
        plain.forward_intermediates(x, output_fmt='NHWC')


@pytest.mark.parametrize('out_indices', [(), [], 0, 4, (3,), (0, -4)])
def test_features_only_without_a_valid_level_is_a_named_error(out_indices):
    """``out_indices`` selecting no level (empty, a count of 0, an index past the 3 levels) is refused with an
    error listing the levels, not timm's "max() arg is an empty sequence" or an assertion."""
    with pytest.raises(UserError, match=rf'feature indices {re.escape(repr(out_indices))} select no valid '
                                        r'level: give None \(all\), a count 1..3 or .* \(0: cells.1 \(stride 1\), 1: cells.5 '):
        _create('ddarts_dd1_cifar', features_only=True, out_indices=out_indices, **NARROW)
    model = _create('ddarts_dd1_cifar', features_only=True, out_indices=(0, -1), **NARROW)
    assert model.feature_info.module_name() == ['cells.1', 'cells.7']


@pytest.mark.parametrize('layers', [1, 2, 3, 5, 11])
def test_any_number_of_cells_builds(layers):
    """``layers`` below the genotype's cell count works as the search places reductions (1-2 cells: reduction
    cells only), so a searched 1- or 2-cell network and a shallow version of a published one both build."""
    model = _create('ddarts_genotype_cifar', genotype='dd1', layers=layers, **NARROW)
    assert len(model.cells) == layers and model.genotype.reductions == reduction_positions(layers)
    x = _input(model, 2, size=32)
    assert model(x).shape == (2, 10)
    assert model.feature_info[-1]['reduction'] == 2 ** len(model.genotype.reductions)
    with pytest.raises(GenotypeError, match=r'field "layers": expand\(layers=0\)'):
        _create('ddarts_genotype_cifar', genotype='dd1', layers=0, **NARROW)


def test_invalid_genotype_argument_names_cell_edge_and_field():
    doc = shipped.get('dd1').to_dict()
    doc['genes'][1].append(['sep_conv_3x3', 17, 2])
    with pytest.raises(GenotypeError, match=r"""cell 1 \(genes\[1\]\), edge 8 \('sep_conv_3x3', 17, 2\), field .to"""):
        _create('ddarts_genotype_cifar', genotype=doc, **NARROW)
    with pytest.raises(GenotypeError, match=r"genotype 'dd9' is neither a shipped name \(dd1, "):
        _create('ddarts_genotype_cifar', genotype='dd9', **NARROW)


@pytest.mark.parametrize('name', NAMES)
def test_prune_intermediate_layers_keeps_what_the_levels_read(name):
    model = _create(name, **NARROW).eval()
    num_levels = len(model.feature_info)
    take = [0, num_levels - 2]
    x = _input(model, 2)
    before = set(model.state_dict())
    with torch.no_grad():
        ref = model.forward_intermediates(x, indices=take, intermediates_only=True)
    assert model.prune_intermediate_layers(take) == take
    after = set(model.state_dict())
    assert model.num_classes == 0 and 'classifier.weight' not in after
    assert all(k.startswith(model.pruned_modules) for k in before - after)
    assert not any(k.startswith(model.pruned_modules) for k in after)
    with torch.no_grad():
        outs = model.forward_intermediates(x, indices=take, intermediates_only=True)
    assert all(torch.equal(a, b) for a, b in zip(outs, ref))
    model.train()
    sum(o.mean() for o in model.forward_intermediates(x, indices=take, intermediates_only=True)).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f'{name}: kept without gradient: {missing}'
    with pytest.raises(ValueError, match='removed by prune_intermediate_layers'):
        model.forward_intermediates(x, indices=[num_levels - 1])


@pytest.mark.slow
@pytest.mark.filterwarnings('ignore:`torch.jit.script` is deprecated:FutureWarning')
@pytest.mark.parametrize('name', NAMES)
def test_torchscript_matches_eager(name):
    with timm.layers.set_scriptable(True):
        model = _create(name, **NARROW).eval()
    x = _input(model, 1)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        out = scripted(x)
        assert out.shape == (1, model.num_classes) and torch.allclose(out, model(x), atol=1e-5)


def _fx_model(model, train: bool):
    """The model as a torch.fx graph (torchvision's feature extraction, timm's leaf modules / functions)."""
    fx = pytest.importorskip('torchvision.models.feature_extraction')
    from timm.models import get_notrace_functions, get_notrace_modules
    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions())
    train_nodes, eval_nodes = fx.get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    return fx.create_feature_extractor(model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[
        eval_nodes[-1]], tracer_kwargs=tracer_kwargs).train(train)


@pytest.mark.slow
@pytest.mark.filterwarnings('ignore:`torch.jit.script` is deprecated:FutureWarning')
@pytest.mark.parametrize('name', NAMES)
def test_fx_forward_backward_and_torchscript(name):
    model = _create(name, num_classes=42, **NARROW).eval()
    x = _input(model, 2)
    with torch.no_grad():
        graph = _fx_model(model, train=False)
        (out,) = graph(x).values()
        assert torch.equal(out, model(x))
        (scripted,) = torch.jit.script(graph)(x).values()
        assert torch.allclose(scripted, out, atol=1e-5)
    model.train()
    graph = _fx_model(model, train=True)
    (out,) = graph(x).values()
    assert out.shape == (2, 42)
    out.mean().backward()
    assert sum(p.grad.numel() for p in graph.parameters() if p.grad is not None) == sum(
        p.numel() for p in model.parameters())
