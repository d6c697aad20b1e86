"""The strict loader and the authors' checkpoint conversion.

The authors' network is re-implemented here, independently of :mod:`ddarts_zoo.network` and
:mod:`ddarts_zoo.ops`, from a description of their modules, key names (``torch.save({'state_dict': ...})``,
``cells.i._ops.{to}.{from}.{k}.op.*``) and forward semantics (nodes in order of first appearance of their
target, edges whose source is not computed yet skipped, cell output = concat of the computed intermediate
nodes).  A randomly initialised instance (BN statistics
included) is converted and must give bit-identical outputs in our network.

Equality is checked with ``torch.equal`` in float64.  In float32 the outputs agree to about 1e-7 but not
always bit for bit: our FactorizedReduce pads its shifted branch (so that odd sizes work), hence its 1x1
convolution sees an HxW input where the authors' sees (H-1)x(W-1), and oneDNN picks a different kernel
(different summation order) for the two shapes.  float64 takes the reference path, where the order is the same.
"""
from __future__ import annotations

import logging
import warnings
from typing import Dict, List, Sequence, Tuple

import pytest
import timm
import torch
import torch.nn as nn

import ddarts_zoo  # noqa: F401
from ddarts_zoo import genotypes as shipped
from ddarts_zoo.convert import (CheckpointError, convert_official_state_dict, load_state_dict_strict,
                                official_key_map, unwrap_state_dict)
from ddarts_zoo.network import DDartsNet


# ------------------------------------------------------------------------------------ the authors' layout
class AReLUConvBN(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int) -> None:
        super().__init__()
        self.op = nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        return self.op(x)


class AFactorizedReduce(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


class AWrapped(nn.Module):
    """SepConv / DilConv / RectConv / bottleneck classes: their layers live in ``self.op``."""

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.op = nn.Sequential(*layers)

    def forward(self, x):
        return self.op(x)


def a_op(name: str, c: int, s: int) -> nn.Module:
    def conv(ci, co, k, st=1, pad=0, dil=1, groups=1):
        return nn.Conv2d(ci, co, k, st, pad, dilation=dil, groups=groups, bias=False)

    if name == 'max_pool_3x3':
        return nn.MaxPool2d(3, s, 1)
    if name == 'avg_pool_3x3':
        return nn.AvgPool2d(3, s, 1, count_include_pad=False)
    if name == 'skip_connect':
        return nn.Identity() if s == 1 else AFactorizedReduce(c, c)
    if name.startswith('sep_conv'):
        k = int(name[-1])
        return AWrapped([nn.ReLU(), conv(c, c, k, s, k // 2, groups=c), conv(c, c, 1), nn.BatchNorm2d(c),
                         nn.ReLU(), conv(c, c, k, 1, k // 2, groups=c), conv(c, c, 1), nn.BatchNorm2d(c)])
    if name.startswith('dil_conv'):
        k = int(name[-1])
        return AWrapped([nn.ReLU(), conv(c, c, k, s, k - 1, dil=2, groups=c), conv(c, c, 1), nn.BatchNorm2d(c)])
    if name.startswith('simple_conv'):
        return AReLUConvBN(c, c, int(name[-1]), s)
    if name == 'conv_3x1_1x3':
        return AWrapped([nn.ReLU(), nn.Conv2d(c, c, (1, 3), (1, s), (0, 1), bias=False),
                         nn.Conv2d(c, c, (3, 1), (s, 1), (1, 0), bias=False), nn.BatchNorm2d(c)])
    if name == 'conv_7x1_1x7':  # a bare Sequential in the authors' code
        return nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, (1, 7), (1, s), (0, 3), bias=False),
                             nn.Conv2d(c, c, (7, 1), (s, 1), (3, 0), bias=False), nn.BatchNorm2d(c))
    if name == 'bottleneck_1x3x1':
        return AWrapped([nn.ReLU(), conv(c, c, 1), nn.BatchNorm2d(c), conv(c, c, 3, s, 1), nn.BatchNorm2d(c),
                         conv(c, 4 * c, 1), nn.BatchNorm2d(4 * c), nn.ReLU(), conv(4 * c, c, 1), nn.BatchNorm2d(c)])
    raise KeyError(name)


class ACell(nn.Module):
    def __init__(self, gene, c_pp, c_p, c, reduction, reduction_prev) -> None:
        super().__init__()
        self.preprocess0 = AFactorizedReduce(c_pp, c) if reduction_prev else AReLUConvBN(c_pp, c, 1, 1)
        self.preprocess1 = AReLUConvBN(c_p, c, 1, 1)
        self.gene = [tuple(e) for e in gene]
        self._ops = nn.ModuleDict()
        for op, to, src in self.gene:
            if str(to) not in self._ops:
                self._ops[str(to)] = nn.ModuleDict()
            if str(src) not in self._ops[str(to)]:
                self._ops[str(to)][str(src)] = nn.ModuleList()
            self._ops[str(to)][str(src)].append(a_op(op, c, 2 if reduction and src < 2 else 1))
        self.order: List[int] = []
        for _, to, _ in self.gene:
            if to not in self.order:
                self.order.append(to)
        self.multiplier = len(self.order)

    def forward(self, s0, s1):
        states: Dict[int, torch.Tensor] = {0: self.preprocess0(s0), 1: self.preprocess1(s1)}
        for to in self.order:
            total = None
            seen: Dict[int, int] = {}
            for _, t, src in self.gene:
                if t != to:
                    continue
                k = seen.get(src, 0)
                seen[src] = k + 1
                if src not in states:  # the authors skip edges whose source is not computed yet
                    continue
                y = self._ops[str(to)][str(src)][k](states[src])
                total = y if total is None else total + y
            states[to] = total
        return torch.cat([states[t] for t in self.order], dim=1)


class AAuxHead(nn.Module):
    def __init__(self, c: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(), nn.AvgPool2d(5, 3, 0, count_include_pad=False), nn.Conv2d(c, 128, 1, bias=False),
            nn.BatchNorm2d(128), nn.ReLU(), nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU())
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class AuthorsNet(nn.Module):
    """The authors' CIFAR network (``stem='cifar'``) or ImageNet network (``stem='imagenet'``)."""

    def __init__(self, genes, reductions, c: int, num_classes: int, in_chans: int = 3, stem: str = 'cifar',
                 auxiliary: bool = False) -> None:
        super().__init__()
        self.stem_kind = stem
        if stem == 'cifar':
            self.stem = nn.Sequential(nn.Conv2d(in_chans, 3 * c, 3, 1, 1, bias=False), nn.BatchNorm2d(3 * c))
            c_pp = c_p = 3 * c
            reduction_prev = False
        else:
            self.stem0 = nn.Sequential(nn.Conv2d(in_chans, c // 2, 3, 2, 1, bias=False), nn.BatchNorm2d(c // 2),
                                       nn.ReLU(), nn.Conv2d(c // 2, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))
            self.stem1 = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c))
            c_pp = c_p = c
            reduction_prev = True
        self.cells = nn.ModuleList()
        self.aux_at = max(reductions)
        for i, gene in enumerate(genes):
            reduction = i in reductions
            if reduction:
                c *= 2
            cell = ACell(gene, c_pp, c_p, c, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.multiplier * c
            if i == self.aux_at:
                c_aux = c_p
        if auxiliary:
            self.auxiliary_head = AAuxHead(c_aux, num_classes)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)
        self.aux_input = None

    def forward(self, x):
        if self.stem_kind == 'cifar':
            s0 = s1 = self.stem(x)
        else:
            s0 = self.stem0(x)
            s1 = self.stem1(s0)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1)
            if i == self.aux_at:
                self.aux_input = s1
        return self.classifier(self.pool(s1).flatten(1))


def randomise(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith('running_var'):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith('num_batches_tracked'):
                t.fill_(7)
            elif t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g) * 0.3)


def authors_pair(geno_name: str, c: int = 4, num_classes: int = 10, stem: str = 'cifar', auxiliary: bool = False,
                 ) -> Tuple[AuthorsNet, DDartsNet]:
    geno = shipped.get(geno_name)
    genes = [[tuple(e) for e in gene] for gene in geno.genes]
    theirs = AuthorsNet(genes, list(geno.reductions), c, num_classes, stem=stem, auxiliary=auxiliary)
    randomise(theirs)
    ours = DDartsNet(geno, num_classes=num_classes, init_channels=c, auxiliary=auxiliary, stem_type=stem)
    return theirs.eval(), ours.eval()


# ------------------------------------------------------------------------------------ equivalence
@pytest.mark.parametrize('geno_name, aux', [('dd1', True), ('dd2', True), ('dd5', True), ('do1_resnet18', False),
                                             ('do1_resnet50_edge', False)])
def test_converted_outputs_are_identical(geno_name, aux):
    # DO-* models (3 reductions, 4x4 maps after the last one at 32 px) are trained without the auxiliary head
    theirs, ours = authors_pair(geno_name, auxiliary=aux)
    ckpt = {'state_dict': theirs.state_dict(), 'epoch': 600, 'best_acc_top1': 97.0}
    ours.load_state_dict(convert_official_state_dict(ckpt, ours), strict=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)  # float32: same to rounding
        theirs.double(), ours.double()
        x = x.double()
        assert torch.equal(ours(x), theirs(x))
        if aux:  # the auxiliary head maps too (compare on the same features)
            assert torch.equal(ours.aux_head(theirs.aux_input), theirs.auxiliary_head(theirs.aux_input))


def test_imagenet_stem_checkpoint():
    theirs, ours = authors_pair('do2_resnet18', c=8, num_classes=7, stem='imagenet')
    ours.load_state_dict(convert_official_state_dict(theirs.state_dict(), ours), strict=True)
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(ours.double()(x), theirs.double()(x))


def test_edge_parsed_pairs_use_per_pair_index():
    # dd2 is edge-parsed: cell 0 has ('dil_conv_3x3', 2, 1) then ('sep_conv_3x3', 2, 1), i.e. _ops.2.1.{0,1}
    geno = shipped.get('dd2')
    assert [e.op for e in geno.genes[0] if (e.to, e.src) == (2, 1)] == ['dil_conv_3x3', 'sep_conv_3x3']
    ours = DDartsNet(geno, init_channels=4)
    keys = set(official_key_map(ours).values())
    assert 'cells.0._ops.2.1.0.op.3.weight' in keys  # DilConv's BN
    assert 'cells.0._ops.2.1.1.op.7.weight' in keys  # SepConv's second BN
    assert 'cells.0._ops.2.1.0.op.7.weight' not in keys


def test_timm_pretrained_file_dispatches_to_converter(tmp_path):
    theirs, _ = authors_pair('dd1', c=4, auxiliary=True)
    path = tmp_path / 'weights.pt'
    torch.save({'state_dict': {'module.' + k: v for k, v in theirs.state_dict().items()}, 'epoch': 1}, path)
    model = timm.create_model('ddarts_dd1_cifar', pretrained=True, init_channels=4,
                              pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(model.double()(x), theirs.double()(x))


def test_convert_official_cli(tmp_path):
    from ddarts_zoo.cli import main
    theirs, _ = authors_pair('dd5', c=4, num_classes=100, auxiliary=True)
    ckpt = tmp_path / 'model_best.pth.tar'
    torch.save({'state_dict': theirs.state_dict(), 'epoch': 600}, ckpt)
    out = tmp_path / 'export'
    assert main(['convert-official', str(ckpt), '--model', 'ddarts_dd5_cifar', '--init-channels', '4',
                 '--num-classes', '100', '--out', str(out)]) == 0
    assert {p.name for p in out.iterdir()} >= {'model.safetensors', 'config.json', 'README.md'}
    model = timm.create_model(f'local-dir:{out}', pretrained=True).eval()
    assert model.num_classes == 100
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(model.double()(x), theirs.double()(x))
    card = (out / 'README.md').read_text()
    assert 'D-DARTS' in card and 'Apache-2.0' in card.replace('apache-2.0', 'Apache-2.0')


# ------------------------------------------------------------------------------------ strictness
def _converted_error(sd, ours) -> str:
    with pytest.raises(CheckpointError) as info:
        convert_official_state_dict(sd, ours)
    return str(info.value)


def test_missing_unexpected_and_misshaped_keys_are_all_named():
    theirs, ours = authors_pair('dd1')
    sd = dict(theirs.state_dict())
    gone = 'cells.3._ops.2.0.0.op.1.weight'
    assert gone in sd
    del sd[gone]
    sd['cells.3._ops.9.9.0.op.1.weight'] = torch.zeros(1)
    bad = 'cells.0.preprocess1.op.1.weight'
    sd[bad] = torch.zeros(5, 5, 1, 1)
    msg = _converted_error(sd, ours)
    assert gone in msg and 'cells.3.nodes.0.ops.' in msg  # both names of the missing tensor
    assert 'cells.3._ops.9.9.0.op.1.weight' in msg
    assert bad in msg and '(5, 5, 1, 1)' in msg
    assert '1 missing, 1 unexpected, 1 mis-shaped' in msg


def test_wrong_width_names_every_key():
    theirs, _ = authors_pair('dd1', c=4)
    ours = DDartsNet(shipped.get('dd1'), init_channels=6)
    msg = _converted_error(theirs.state_dict(), ours)
    assert 'stem.0.weight: checkpoint (12, 3, 3, 3) vs model (18, 3, 3, 3)' in msg
    assert 'init_channels' in msg


def test_aux_head_dropped_only_when_model_has_none():
    theirs, ours = authors_pair('dd1', auxiliary=True)
    convert_official_state_dict(theirs.state_dict(), ours)  # ours has no aux head: aux keys dropped
    theirs_no_aux, _ = authors_pair('dd1', auxiliary=False)
    ours_aux = DDartsNet(shipped.get('dd1'), init_channels=4, auxiliary=True)
    msg = _converted_error(theirs_no_aux.state_dict(), ours_aux)
    assert 'auxiliary_head.classifier.weight (for aux_head.classifier.weight)' in msg


def test_missing_num_batches_tracked_is_tolerated():
    theirs, ours = authors_pair('dd1')
    sd = {k: v for k, v in theirs.state_dict().items() if not k.endswith('num_batches_tracked')}
    ours.load_state_dict(convert_official_state_dict(sd, ours), strict=True)


def test_dead_edges_are_dropped_with_a_warning():
    from ddarts_zoo.genotype import Genotype
    gene = [('sep_conv_3x3', 2, 0), ('sep_conv_3x3', 2, 1), ('skip_connect', 4, 3), ('max_pool_3x3', 5, 2)]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        geno = Genotype([gene, gene, gene], [1])
        ours = DDartsNet(geno, init_channels=4)
    names = official_key_map(ours)
    sd = {names[k]: v for k, v in ours.state_dict().items()}
    sd['cells.0._ops.4.3.0.extra.weight'] = torch.zeros(1)  # a dead edge's tensor
    with pytest.warns(UserWarning, match='dead edges'):
        out = convert_official_state_dict(sd, ours)
    ours.load_state_dict(out, strict=True)


def test_not_a_ddarts_model():
    with pytest.raises(TypeError, match='DDartsNet'):
        convert_official_state_dict({}, nn.Linear(1, 1))


# ------------------------------------------------------------------------------------ the one strict loader
def _paper_and_pruned(geno_name: str = 'dd5', c: int = 4) -> Tuple[DDartsNet, DDartsNet]:
    """The paper configuration (every module kept) and the default one (modules without gradient pruned)."""
    geno = shipped.get(geno_name)
    paper = DDartsNet(geno, init_channels=c, prune_unused_inputs=False)
    pruned = DDartsNet(geno, init_channels=c, prune_unused_inputs=True)
    randomise(paper)
    assert paper.pruned_modules == () and pruned.pruned_modules  # dd5: unread inputs, an aux-only cell
    return paper.eval(), pruned.eval()


def test_unwrap_state_dict_strips_wrappers_and_module_prefix():
    sd = {'stem.0.weight': torch.zeros(1)}
    for wrapped in (sd, {'state_dict': sd, 'epoch': 3}, {'model': {'module.stem.0.weight': torch.zeros(1)}},
                    {'state_dict_ema': sd}):
        assert list(unwrap_state_dict(wrapped)) == ['stem.0.weight']
    with pytest.raises(CheckpointError, match='not a state dict'):
        unwrap_state_dict({1: torch.zeros(1)})


def test_authors_checkpoint_loads_into_a_pruned_model_with_a_note(caplog):
    theirs, _ = authors_pair('dd5')
    _, pruned = _paper_and_pruned('dd5')
    with caplog.at_level(logging.INFO, logger='ddarts_zoo.convert'):
        pruned.load_state_dict(convert_official_state_dict({'state_dict': theirs.state_dict()}, pruned), strict=True)
    notes = [r.getMessage() for r in caplog.records if 'prunes' in r.getMessage()]
    assert len(notes) == 1 and all(p in notes[0] for p in pruned.pruned_modules), caplog.text
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(pruned.double()(x), theirs.double()(x))


def test_paper_checkpoint_loads_into_a_pruned_model_but_not_back(caplog):
    paper, pruned = _paper_and_pruned('dd5')
    ckpt = {'state_dict': {'module.' + k: v for k, v in paper.state_dict().items()}, 'epoch': 2}
    with caplog.at_level(logging.INFO, logger='ddarts_zoo.convert'):
        report = load_state_dict_strict(pruned, ckpt, 'paper.pth')
    extra = set(paper.state_dict()) - set(pruned.state_dict())
    assert extra and set(report.pruned) == extra and all(k.startswith(pruned.pruned_modules) for k in extra)
    assert f'paper.pth: dropped {len(extra)} key(s)' in caplog.text
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(pruned.double()(x), paper.double()(x))
    # a pruned checkpoint lacks tensors the paper configuration needs: an error naming them and the file
    with pytest.raises(CheckpointError) as info:
        load_state_dict_strict(paper, pruned.state_dict(), 'pruned.pth')
    msg = str(info.value)
    needed = sorted(k for k in extra if not k.endswith('num_batches_tracked'))  # BN counters are tolerated
    assert msg.startswith('pruned.pth does not fit') and f': {len(needed)} missing' in msg
    assert info.value.missing == sorted(info.value.missing, key=list(paper.state_dict()).index)
    assert sorted(info.value.missing) == needed


def test_strict_loader_still_rejects_other_keys_of_a_pruned_model():
    paper, pruned = _paper_and_pruned('dd5')
    sd = dict(paper.state_dict())
    sd['cells.0.preprocess1.1.weight'] = torch.zeros(3, 3, 1, 1)  # mis-shaped, outside every pruned module
    sd['cells.2.extra.weight'] = torch.zeros(1)  # unexpected
    del sd['classifier.bias']  # missing
    with pytest.raises(CheckpointError) as info:
        load_state_dict_strict(pruned, sd, 'run/checkpoint.pth')
    err = info.value
    assert err.missing == ['classifier.bias'] and err.unexpected == ['cells.2.extra.weight']
    assert err.mis_shaped[0].startswith('cells.0.preprocess1.1.weight: checkpoint (3, 3, 1, 1) vs model')
    assert 'run/checkpoint.pth' in str(err) and '1 missing, 1 unexpected, 1 mis-shaped' in str(err)
    assert err.summary().startswith('missing 1: classifier.bias; unexpected 1: cells.2.extra.weight')
