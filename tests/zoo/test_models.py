"""Registered timm models: paper counts, pruning, heads, genotypes, drop-path, export paths (the generic timm
contract for every name is in test_timm_contract.py)."""
from __future__ import annotations

import warnings

import pytest
import timm
import torch

import ddarts_zoo  # noqa: F401  (registers the models)
from ddarts_zoo import genotypes as shipped
from ddarts_zoo.complexity import count_params
from ddarts_zoo.genotype import DeadNodeWarning, Genotype
from ddarts_zoo.network import DDartsNet

CIFAR_MODELS = [f'ddarts_dd{i}_cifar' for i in (1, 2, 4, 5)] + [
    f'ddarts_do{i}_{b}_cifar' for i in (1, 2) for b in ('resnet18', 'resnet50', 'xception')]
IMAGENET_MODELS = ['ddarts_dd4', 'ddarts_do2_resnet18', 'ddarts_do2_resnet50']
ALL_MODELS = CIFAR_MODELS + IMAGENET_MODELS


def _input(model, size=None, batch=2):
    c, h, w = model.pretrained_cfg['input_size']
    if size is not None:
        h = w = size
    return torch.randn(batch, c, h, w, generator=torch.Generator().manual_seed(0))


def test_registered_names():
    names = set(timm.list_models('ddarts_*'))
    assert names == set(ALL_MODELS) | {'ddarts_genotype_cifar', 'ddarts_genotype'}


PAPER_COUNTS = [
    ('ddarts_dd1_cifar', 1.7, True),            # paper Table 3: DD-1, C=36, aux head counted
    ('ddarts_do1_resnet18_cifar', 36.32, False),  # paper Table 3: DO-1-ResNet18, C=64
    ('ddarts_do2_resnet18', 53.4, False),        # paper Table 5: DO-2-ResNet18 ImageNet
    ('ddarts_do2_resnet50', 73.23, False),       # paper Table 5: DO-2-ResNet50 ImageNet
]


@pytest.mark.parametrize('name, expected_m, aux', PAPER_COUNTS)
def test_parameter_counts_match_paper(name, expected_m, aux):
    """The paper configuration (prune_unused_inputs=False) reproduces the published parameter counts."""
    model = timm.create_model(name, auxiliary=aux, prune_unused_inputs=False)
    assert model.pruned_modules == ()
    got = count_params(model, include_aux=aux) / 1e6
    decimals = len(str(expected_m).split('.')[1])
    assert round(got, decimals) == expected_m, f'{name}: {got:.4f}M'


def _trained_count(model, x, aux):
    """Parameters of ``model`` that receive a gradient from the logits (and the aux logits with ``aux``)."""
    model.train()
    logits, aux_logits = model.forward_train(x)
    (logits.sum() + (aux_logits.sum() if aux else 0)).backward()
    return sum(p.numel() for n, p in model.named_parameters() if p.grad is not None
               and (aux or not n.startswith('aux_head.')))


@pytest.mark.slow  # full width; test_paper_configuration_lacks_gradients_... checks the same at C=8, quickly
@pytest.mark.parametrize('name, expected_m, aux', PAPER_COUNTS)
def test_default_parameter_counts_are_those_that_train(name, expected_m, aux):
    """The default model holds exactly the paper model's parameters that receive a gradient (counted by
    running a backward pass through the paper model, at a small input)."""
    paper = timm.create_model(name, auxiliary=aux, prune_unused_inputs=False)
    trained = _trained_count(paper, torch.randn(2, 3, 32, 32), aux)
    model = timm.create_model(name, auxiliary=aux)
    assert count_params(model, include_aux=aux) == trained
    untrained = sum(p.numel() for n, p in paper.named_parameters() if n.startswith(model.pruned_modules))
    assert count_params(paper, include_aux=aux) - trained == untrained
    # of the models the paper counts, only DO-2-ResNet50 has a module without gradient (cell 1's input 1)
    assert (untrained > 0) == (name == 'ddarts_do2_resnet50')


def _reads(model, cell, k):
    return k in {e.src for e in model.genotype.live_gene(cell, warn=False)}


def _unused_input_params(model):
    """Parameters of preprocessing layers whose cell input no edge of the genotype reads."""
    out = set()
    for i in range(len(model.cells)):
        for k in (0, 1):
            if not _reads(model, i, k):
                out |= {f'cells.{i}.preprocess{k}.{n}' for n, _ in
                        getattr(model.cells[i], f'preprocess{k}', torch.nn.Identity()).named_parameters()}
    return out


def _params_without_gradient(model):
    """Expected parameters without gradient for a classification loss: unread inputs' preprocessing and
    every cell whose output no later cell reads (worked out backwards from the last cell and aux head)."""
    n = len(model.cells)
    used = [False] * n
    used[-1] = True
    if model.aux_head is not None:
        used[model.aux_index] = True
    for j in range(n - 2, -1, -1):
        used[j] = used[j] or (used[j + 1] and _reads(model, j + 1, 1)) or (
            j + 2 < n and used[j + 2] and _reads(model, j + 2, 0))
    out = {f'cells.{i}.{p}' for i in range(n) if not used[i] for p, _ in model.cells[i].named_parameters()}
    return out | {p for p in _unused_input_params(model) if used[int(p.split('.')[1])]}


@pytest.mark.parametrize('name', ALL_MODELS)
def test_paper_configuration_lacks_gradients_exactly_where_the_default_prunes(name):
    """Narrow (C=8) versions of every model: identical structure, CPU-friendly. The paper configuration leaves
    without gradient exactly the parameters the genotype never reads (worked out here from the genotype) and
    the default model's ``pruned_modules`` names exactly those."""
    imagenet = name in IMAGENET_MODELS
    # the ImageNet aux head needs >= 5x5 maps after the last reduction (224 px): only DD-4 runs it here
    aux_head = not imagenet or name == 'ddarts_dd4'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeadNodeWarning)
        model = timm.create_model(name, auxiliary=aux_head, init_channels=8, prune_unused_inputs=False)
        default = timm.create_model(name, auxiliary=aux_head, init_channels=8)
    model.train()
    x = _input(model, size=224 if name == 'ddarts_dd4' else (64 if imagenet else None), batch=2)
    logits, aux = model.forward_train(x)
    assert logits.shape == (2, model.num_classes)
    loss = logits.logsumexp(1).mean()
    if model.aux_head is not None:
        assert aux is not None and aux.shape == logits.shape
        loss = loss + 0.4 * aux.logsumexp(1).mean()
    loss.backward()
    without = {n for n, p in model.named_parameters() if p.grad is None}
    assert without == _params_without_gradient(model), name
    assert without == {n for n, _ in model.named_parameters() if n.startswith(default.pruned_modules)}
    assert set(default.state_dict()) == {
        k for k in model.state_dict() if not k.startswith(default.pruned_modules)}
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x[:1]), model.forward_train(x[:1])[0])
        assert model.forward_train(x[:1])[1] is None  # aux logits only in training


@pytest.mark.parametrize('name, aux, pruned', [
    # DD-5: reduction cell 6 feeds only the unread input 1 of cell 7 and the auxiliary head
    ('ddarts_dd5_cifar', False, ('cells.6.', 'cells.7.preprocess1.')),
    ('ddarts_dd5_cifar', True, ('cells.7.preprocess1.',)),
    ('ddarts_do2_resnet50_cifar', False, ('cells.1.preprocess1.',)),
    # Xception: reduction cell 11 feeds only the unread input 1 of cell 12 and the auxiliary head
    ('ddarts_do1_xception_cifar', False, ('cells.11.', 'cells.12.preprocess1.')),
    ('ddarts_dd1_cifar', True, ()),
])
def test_default_prunes_what_no_output_reads_and_computes_the_same(name, aux, pruned):
    paper = timm.create_model(name, init_channels=8, auxiliary=aux, prune_unused_inputs=False)
    model = timm.create_model(name, init_channels=8, auxiliary=aux)
    assert model.pruned_modules == pruned
    assert bool(_unused_input_params(paper)) == any('preprocess' in p for p in pruned)
    assert not _unused_input_params(model) and not _params_without_gradient(model)
    dropped = {k for k in paper.state_dict() if k.startswith(pruned)}
    assert set(model.state_dict()) == set(paper.state_dict()) - dropped
    assert count_params(model) == count_params(paper) - sum(
        p.numel() for n, p in paper.named_parameters() if n in dropped)
    # the paper model's weights, less the pruned ones, give the same outputs (what they drop was never read)
    model.load_state_dict({k: v for k, v in paper.state_dict().items() if k not in dropped}, strict=True)
    paper.eval(), model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), paper(x))
    model.train()
    logits, aux_logits = model.forward_train(x)
    (logits.sum() + (aux_logits.sum() if aux else 0)).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_unread_cells_leave_feature_info_and_outputs_unchanged():
    """The ResNet18 baseline genotype reads only input 0 in every cell (a chain 1 <- 3 that skips cells 0, 2):
    the default model drops cells 0 and 2, and feature_info lists what it still computes."""
    paper = timm.create_model('ddarts_genotype_cifar', genotype='resnet18', init_channels=8,
                              prune_unused_inputs=False).eval()
    model = timm.create_model('ddarts_genotype_cifar', genotype='resnet18', init_channels=8).eval()
    assert model.pruned_modules == ('cells.0.', 'cells.1.preprocess1.', 'cells.2.', 'cells.3.preprocess1.')
    assert [f['module'] for f in paper.feature_info] == ['cells.0', 'cells.1', 'cells.2', 'cells.3']
    assert [(f['module'], f['reduction']) for f in model.feature_info] == [
        ('stem', 1), ('cells.1', 2), ('cells.3', 8)]
    model.load_state_dict({k: v for k, v in paper.state_dict().items()
                           if not k.startswith(model.pruned_modules)})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), paper(x))
        feats = model.forward_intermediates(x, intermediates_only=True)
    assert torch.equal(feats[0], model.stem(x)) and [f.shape[-1] for f in feats] == [32, 16, 4]


@pytest.mark.parametrize('stem_type, in_chans, channels', [('cifar', 3, 8), ('imagenet', 1, 8),
                                                           ('imagenet_darts', 3, 6)])
def test_build_stem_strides_and_channels(stem_type, in_chans, channels):
    from ddarts_zoo.network import STEM_STRIDES, build_stem
    stem = build_stem(stem_type, in_chans, channels, stem_multiplier=3)
    x = torch.randn(2, in_chans, 64, 64)
    s0 = s1 = None
    for name, module in stem.modules.items():
        s1 = module(x if s1 is None else s1)
        s0 = s1 if s0 is None else s0
        assert s1.shape[-1] == 64 // stem.strides[name]
    assert 64 // s1.shape[-1] == STEM_STRIDES[stem_type]
    assert (s0.shape[1], s1.shape[1]) == (stem.c_pp, stem.c_p)
    assert stem.reduction_prev == (s0.shape[-1] == 2 * s1.shape[-1])
    assert stem.c_p == (3 * channels if stem_type == 'cifar' else channels)
    with pytest.raises(ValueError, match='stem_type'):
        build_stem('huge', 3, 8)


def test_info_shows_paper_and_trained_counts():
    from ddarts_zoo.commands.info import format_rows, model_rows
    rows = {r['model']: r for r in model_rows(['ddarts_dd1_cifar', 'ddarts_dd5_cifar'], with_macs=False)}
    for name, row in rows.items():
        paper = timm.create_model(name, prune_unused_inputs=False)
        model = timm.create_model(name)
        assert row['paper_params_m'] == count_params(paper, include_aux=False) / 1e6
        assert row['params_m'] == count_params(model, include_aux=False) / 1e6
    assert rows['ddarts_dd1_cifar']['params_m'] == rows['ddarts_dd1_cifar']['paper_params_m']
    assert rows['ddarts_dd5_cifar']['params_m'] < rows['ddarts_dd5_cifar']['paper_params_m']
    table = format_rows(list(rows.values()))
    assert 'paper params (M)' in table.splitlines()[0]


@pytest.mark.parametrize('name', ['ddarts_dd1_cifar', 'ddarts_do1_xception_cifar', 'ddarts_dd4',
                                  'ddarts_do2_resnet18'])
def test_num_classes_in_chans_reset_classifier_and_unpooled(name):
    model = timm.create_model(name, num_classes=7, in_chans=1, init_channels=8).eval()
    x = _input(model, size=64 if name in IMAGENET_MODELS else 32)[:, :1]
    with torch.no_grad():
        assert model(x).shape == (2, 7)
        model.reset_classifier(0)
        pooled = model(x)
        assert pooled.shape == (2, model.num_features)
        model.reset_classifier(0, global_pool='')
        unpooled = model(x)
        assert unpooled.ndim == 4 and unpooled.shape[1] == model.num_features
        assert torch.allclose(unpooled.mean((2, 3)), pooled, atol=1e-5)
        model.reset_classifier(5)
        assert model(x).shape == (2, 5)
        assert model.get_classifier().out_features == 5
        assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, model.num_features)
    unpooled_model = timm.create_model(name, num_classes=0, global_pool='', init_channels=8).eval()
    assert unpooled_model(_input(unpooled_model, size=64 if name in IMAGENET_MODELS else 32)).ndim == 4


def test_features_only_out_indices():
    model = timm.create_model('ddarts_do2_resnet18', features_only=True, out_indices=(1, 2, 3, 4),
                              init_channels=8).eval()
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 128, 128))
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4]


@pytest.mark.parametrize('genotype', sorted(shipped.names()))
def test_every_shipped_genotype_builds_and_runs(genotype):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always', DeadNodeWarning)
        model = timm.create_model('ddarts_genotype_cifar', genotype=genotype, init_channels=8).eval()
    if genotype == 'do2_xception_edge':
        assert any('cell 12' in str(w.message) for w in caught)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_genotype_model_from_path_dict_and_object(tmp_path):
    geno = shipped.get('dd5')
    path = geno.save(tmp_path / 'g.json')
    for spec in (path, str(path), geno.to_dict(), geno, 'dd5'):
        model = timm.create_model('ddarts_genotype_cifar', genotype=spec, init_channels=8)
        assert model.genotype == geno
    # without genotype=: the documented default (DD-1), so that timm's tools can build every registered name
    for name in ('ddarts_genotype_cifar', 'ddarts_genotype'):
        model = timm.create_model(name, init_channels=8)
        assert model.genotype == shipped.get(ddarts_zoo.zoo.DEFAULT_GENOTYPE)
    assert ddarts_zoo.zoo.DEFAULT_GENOTYPE == 'dd1'


def test_imagenet_genotype_model_picks_stride_32_stem():
    for geno in ('dd1', 'do1_resnet18'):
        model = timm.create_model('ddarts_genotype', genotype=geno, init_channels=8)
        assert model.feature_info[-1]['reduction'] == 32


def test_layers_applies_algorithm_1():
    model = timm.create_model('ddarts_dd1_cifar', layers=14, init_channels=8)
    assert len(model.cells) == 14 and model.genotype.reductions == (4, 9)
    assert model.genotype == shipped.get('dd1').expand(14)
    assert timm.create_model('ddarts_dd4').genotype.num_cells == 14


def test_cell_structure_matches_genotype():
    """Independent check of one cell against the genotype: op types, strides and channel multiplier."""
    geno = shipped.get('dd1')
    model = DDartsNet(geno, init_channels=16)
    cell = model.cells[2]  # reduction cell
    assert cell.reduction and cell.multiplier == len({e.to for e in geno.genes[2]})
    expected = [(e.op, e.src) for e in sorted(geno.genes[2], key=lambda e: e.to)]
    got = []
    for node in cell.nodes:
        for op, src in zip(node.ops, node.srcs):
            got.append((op, src))
    assert len(got) == len(expected)
    for (op_name, src), (module, slot) in zip(expected, got):
        strides = [m.stride for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
        if op_name.startswith('sep_conv'):
            assert strides[0] == ((2, 2) if src < 2 else (1, 1))
        if op_name == 'max_pool_3x3':
            assert isinstance(module, torch.nn.MaxPool2d) and module.stride == (2 if src < 2 else 1)
    x = torch.randn(1, 3, 32, 32)
    assert model.forward_features(x).shape[1] == model.cells[-1].out_chs


def test_drop_path_only_in_training():
    model = timm.create_model('ddarts_dd1_cifar', init_channels=8, drop_path_rate=0.5)
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(0)
    a = model.forward_features(x)
    torch.manual_seed(1)
    b = model.forward_features(x)
    assert not torch.allclose(a, b)
    model.set_drop_path(0.0)
    torch.manual_seed(0)
    c = model.forward_features(x)
    torch.manual_seed(1)
    assert torch.allclose(c, model.forward_features(x))


def test_grad_checkpointing_same_gradients():
    torch.manual_seed(0)
    model = timm.create_model('ddarts_dd1_cifar', init_channels=8).eval()
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for r, p in zip(ref, model.parameters()):
        assert torch.allclose(r, p.grad, atol=1e-5)


def test_group_matcher_and_no_weight_decay():
    from timm.models import group_parameters
    model = timm.create_model('ddarts_dd1_cifar', init_channels=8)
    groups = group_parameters(model, model.group_matcher(coarse=True))
    assert len(groups) == 1 + len(model.cells) + 1  # stem, cells, head
    assert isinstance(model.no_weight_decay(), set)


def test_onnx_export_runs_in_onnxruntime(tmp_path):
    onnx = pytest.importorskip('onnx')
    ort = pytest.importorskip('onnxruntime')
    model = timm.create_model('ddarts_dd1_cifar', init_channels=8).eval()
    x = torch.randn(2, 3, 32, 32)
    path = tmp_path / 'dd1.onnx'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(model, (x,), str(path), input_names=['image'], output_names=['logits'],
                          dynamic_axes={'image': {0: 'batch'}}, opset_version=17, dynamo=False)
    onnx.checker.check_model(onnx.load(str(path)))
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    x3 = torch.randn(3, 3, 32, 32)
    (out,) = session.run(None, {'image': x3.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(out), model(x3), atol=1e-4)


def test_bad_arguments_give_clear_errors():
    with pytest.raises(ValueError, match='stem_type'):
        DDartsNet('dd1', stem_type='huge')
    with pytest.raises(ValueError, match='init_channels'):
        DDartsNet('dd1', init_channels=7)
    with pytest.raises(Exception, match="'nope' is neither a shipped name"):
        timm.create_model('ddarts_genotype_cifar', genotype='nope')


def test_genotype_equality_ignores_name():
    g = shipped.get('dd1')
    assert Genotype(g.genes, g.reductions, g.concat, name='other') == g
