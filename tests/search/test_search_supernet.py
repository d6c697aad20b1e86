"""Supernet structure, DARTOpti initialisation and alpha parsing (sparse / edge / darts)."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddarts_zoo import genotypes as shipped
from ddarts_zoo.ops import DARTOPTI_SPACE, DARTS_SPACE
from search.supernet import (EmptyCellWarning, GhostBatchNorm2d, SearchCell, SuperNet, edge_index,
                             edge_pairs, num_edges, parse_cell, parse_genotype, resolve_op_names)

OPS = list(DARTS_SPACE)  # max, avg, skip, sep3, sep5, dil3, dil5


def col(op):
    return OPS.index(op)


def test_layout_matches_darts_rows():
    assert num_edges(4) == 14 and num_edges(2) == 5
    assert [edge_index(to, src) for to, src in edge_pairs(4)] == list(range(14))
    assert edge_index(5, 3) == 2 + 3 + 4 + 3
    with pytest.raises(ValueError, match=r'edge \(2, 2\)'):
        edge_index(2, 2)


def test_supernet_defaults_and_forward():
    net = SuperNet(10, in_chans=1, channels=4, layers=8, steps=4)
    assert net.reductions == (2, 5)
    assert len(net.alphas) == 8 and all(a.shape == (14, 7) for a in net.alphas)
    assert all(float(a.detach().abs().sum()) == 0.0 for a in net.alphas)  # alpha init 0
    out = net(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 10)
    # affine-free BN everywhere inside the cells, pools followed by BN
    bns = [m for m in net.cells.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not m.affine and isinstance(m, GhostBatchNorm2d) for m in bns)
    pool = net.cells[0].sources[0].ops[0]      # max pool + BN, computed once per source state
    assert isinstance(pool[0], torch.nn.MaxPool2d) and isinstance(pool[1], torch.nn.BatchNorm2d)
    # the weight/alpha partition covers every parameter exactly once
    ids = {id(p) for p in net.weight_parameters()} | {id(p) for p in net.arch_parameters()}
    assert ids == {id(p) for p in net.parameters()}


def test_custom_op_set_and_errors():
    net = SuperNet(3, in_chans=3, channels=4, layers=3, steps=2, op_names='skip_connect,sep_conv_3x3')
    assert net.alphas[0].shape == (5, 2) and net.reductions == (1, 2)
    assert resolve_op_names('dartopti') == DARTOPTI_SPACE
    with pytest.raises(ValueError, match='not_an_op'):
        resolve_op_names('skip_connect,not_an_op')
    with pytest.raises(ValueError, match='cell_groups'):
        SuperNet(3, channels=4, layers=3, steps=2, cell_groups=[0, 2, 2])
    with pytest.raises(ValueError, match='outside the 3 cells'):
        SuperNet(3, channels=4, layers=3, steps=2, reductions=[1, 3])


def test_imagenet_stem_runs():
    net = SuperNet(5, in_chans=3, channels=4, layers=3, steps=2, stem='imagenet')
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_ghost_batch_norm_equals_separate_batches():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(3, affine=False)
    bn.__class__ = GhostBatchNorm2d
    x = torch.randn(12, 3, 4, 4, dtype=torch.float64)
    bn.ghost_groups = 3
    y = bn.double()(x)
    parts = [F.batch_norm(x[k * 4:(k + 1) * 4], None, None, training=True, eps=bn.eps) for k in range(3)]
    assert torch.allclose(y, torch.cat(parts), atol=1e-12)


def test_per_sample_mixing_weights_match_shared():
    torch.manual_seed(0)
    cell = SearchCell(2, 2, 6, 6, 4, reduction=False, reduction_prev=False, op_names=OPS).double()
    s0, s1 = torch.randn(3, 6, 8, 8, dtype=torch.float64), torch.randn(3, 6, 8, 8, dtype=torch.float64)
    w = torch.rand(5, 7, dtype=torch.float64)
    assert torch.allclose(cell(s0, s1, w), cell(s0, s1, w.expand(3, 5, 7)), atol=1e-12)


# ---------------------------------------------------------------------------- parsing on hand-made alphas
def hand_weights():
    w = np.full((5, 7), 0.1)
    w[edge_index(2, 0), col('max_pool_3x3')] = 0.90
    w[edge_index(2, 0), col('sep_conv_3x3')] = 0.95
    w[edge_index(2, 1), col('skip_connect')] = 0.86
    w[edge_index(2, 1), col('avg_pool_3x3')] = 0.50
    w[edge_index(3, 0), col('dil_conv_3x3')] = 0.80          # strongest op below the threshold
    w[edge_index(3, 1), col('sep_conv_5x5')] = 0.99
    w[edge_index(3, 1), col('dil_conv_5x5')] = 0.97
    w[edge_index(3, 1), col('max_pool_3x3')] = 0.90          # third op on an edge: edge parsing drops it
    w[edge_index(3, 2), col('avg_pool_3x3')] = 0.87
    return w


def test_parse_sparse():
    gene = parse_cell(hand_weights(), OPS, 2, 'sparse', 0.85)
    assert gene == [('sep_conv_3x3', 2, 0), ('skip_connect', 2, 1), ('sep_conv_5x5', 3, 1), ('avg_pool_3x3', 3, 2)]


def test_parse_edge():
    gene = parse_cell(hand_weights(), OPS, 2, 'edge', 0.85)
    assert gene == [('max_pool_3x3', 2, 0), ('sep_conv_3x3', 2, 0), ('skip_connect', 2, 1),
                    ('sep_conv_5x5', 3, 1), ('dil_conv_5x5', 3, 1), ('avg_pool_3x3', 3, 2)]


def test_parse_threshold_and_darts():
    w = hand_weights()
    w[edge_index(3, 2), col('avg_pool_3x3')] = 0.84          # now under the threshold
    assert parse_cell(w, OPS, 2, 'sparse', 0.85)[2:] == [('sep_conv_5x5', 3, 1)]
    # darts: top-2 edges by max weight, best op, no threshold (edge (3,2) at .84 beats (3,0) at .80)
    assert parse_cell(w, OPS, 2, 'darts')[2:] == [('sep_conv_5x5', 3, 1), ('avg_pool_3x3', 3, 2)]
    assert parse_cell(w, OPS, 2, 'sparse', 0.84) == parse_cell(w, OPS, 2, 'darts')   # >= threshold


def test_parse_ties_are_deterministic():
    w = np.full((5, 7), 0.5)
    assert parse_cell(w, OPS, 2, 'darts') == [('max_pool_3x3', 2, 0), ('max_pool_3x3', 2, 1),
                                                ('max_pool_3x3', 3, 0), ('max_pool_3x3', 3, 1)]
    assert parse_cell(w, OPS, 2, 'sparse') == [] and parse_cell(w, OPS, 2, 'edge') == []
    with pytest.raises(ValueError, match='unknown parsing method'):
        parse_cell(w, OPS, 2, 'fair')
    with pytest.raises(ValueError, match='shape'):
        parse_cell(np.zeros((14, 7)), OPS, 2)


def test_parse_genotype_empty_cell_becomes_skip():
    with pytest.warns(EmptyCellWarning, match=r'cell\(s\) \[1\]'):
        geno = parse_genotype([hand_weights(), np.full((5, 7), 0.5)], OPS, 2, 2, (1,), 'sparse', 0.85)
    assert geno.genes[1] == (('skip_connect', 2, 1),)
    assert geno.meta['empty_cells'] == [1] and geno.reductions == (1,) and geno.concat == (2, 3)


def test_supernet_genotype_records_its_reductions(tmp_path):
    from ddarts_zoo.genotype import Genotype
    net = SuperNet(10, in_chans=1, channels=4, layers=8, steps=4)
    with torch.no_grad():
        for a in net.alphas:
            a[:, col('sep_conv_3x3')] = 3.0
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        geno = net.genotype('sparse', 0.85, name='t')
    assert geno.reductions == (2, 5) and geno.num_cells == 8 and geno.concat == (2, 3, 4, 5)
    assert all(len(g) == 8 and all(e.op == 'sep_conv_3x3' for e in g) for g in geno.genes)
    back = Genotype.load(geno.save(tmp_path / 'g.json'))
    assert back.genes == geno.genes and back.reductions == geno.reductions


# ---------------------------------------------------------------------------- DARTOpti
@pytest.mark.parametrize('name,groups,steps,reductions', [
    ('resnet18', (0, 0, 0, 0), 4, (1, 2, 3)),
    ('resnet50', (0, 1, 2, 0), 6, (1, 2, 3)),
    ('xception', (0, 0, 0, 3, 3, 3, 3, 3, 3, 3, 3, 0, 12), 4, (1, 2, 11, 12)),
])
def test_dartopti_supernet_from_baseline(name, groups, steps, reductions):
    base = shipped.get(name)
    net = SuperNet.from_baseline(base, num_classes=10, in_chans=1, channels=4)
    assert net.cell_groups == groups and net.steps == steps and net.reductions == reductions
    assert len(net.alphas) == len(set(groups)) and net.op_names == DARTOPTI_SPACE
    for i, gene in enumerate(base.genes):
        a = net.alpha_of_cell(i).detach()
        expected = torch.zeros_like(a)
        for e in gene:
            expected[edge_index(e.to, e.src), DARTOPTI_SPACE.index(e.op)] = 10.0
        assert torch.equal(a, expected), f'cell {i}'
    # identical cells share one Parameter object
    assert net.alpha_of_cell(0) is net.alpha_of_cell(groups.index(0, 1) if groups.count(0) > 1 else 0)
    # the edge parsing of the initial alphas is the baseline itself
    edge = net.genotype('edge', 0.85)
    for i, gene in enumerate(base.genes):
        assert set(edge.genes[i]) == set(gene), f'cell {i}'
    assert edge.reductions == base.reductions
    try:
        from ddarts_zoo.distance import architecture_distance
    except ImportError:
        return
    assert architecture_distance(base, edge) == pytest.approx(0.0, abs=1e-12)
