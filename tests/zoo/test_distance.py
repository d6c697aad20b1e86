"""Architecture distance (paper Sec. 4.5): reference values, hand-computed cases, metric axioms, and an
independent loop implementation of the authors' definition checked against the vectorised one."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import ddarts_zoo
from ddarts_zoo import genotypes
from ddarts_zoo.distance import (
    architecture_distance, cell_distance, cell_distances, distance_matrix, edge_distance, encode_cell,
    encode_genotype, genotype_steps, op_weights,
)
from ddarts_zoo.genotype import Genotype, GenotypeError, edge_index, num_edges

# The 12 DARTOpti ops (paper Sec. 4.4, Table 1) in the encoding's column order, written out here on purpose
# (independent of ddarts_zoo.ops).
OPS12 = ['conv_3x1_1x3', 'conv_7x1_1x7', 'max_pool_3x3', 'avg_pool_3x3', 'skip_connect',
         'simple_conv_1x1', 'simple_conv_3x3', 'sep_conv_3x3', 'sep_conv_5x5', 'dil_conv_3x3',
         'dil_conv_5x5', 'bottleneck_1x3x1']
SCORES = json.loads((Path(ddarts_zoo.__file__).parent / 'data' / 'op_scores.json').read_text())
W = [SCORES[op] for op in OPS12]
W_SUM = sum(W)


def w(op: str) -> float:
    return SCORES[op] / W_SUM


# ---------------------------------------------------------------------------- loop reference
def ref_encode(genotype: Genotype):
    """The authors' encoding, written naively: list of 12-lists, steps from the concat range."""
    steps = max(genotype.concat) + 1 - 2
    n_rows = 0
    for n in range(steps):
        n_rows += n + 2
    cells = []
    for gene in genotype.genes:
        rows = [[0.0] * 12 for _ in range(n_rows)]
        for op, to, src in gene:
            row = 0
            for n in range(to - 2):
                row += n + 2
            row += src
            rows[row][OPS12.index(op)] = 10.0
        cells.append(rows)
    return cells


def ref_hamming(u, v) -> float:
    """Algorithm 2: weighted Hamming distance, normalised by the sum of the weights."""
    total = 0.0
    for k in range(12):
        if u[k] != v[k]:
            total += W[k]
    return total / W_SUM


def ref_hausdorff(a, b) -> float:
    def directed(x, y):
        worst = 0.0
        for p in x:
            best = None
            for q in y:
                d = ref_hamming(p, q)
                if best is None or d < best:
                    best = d
            worst = max(worst, best)
        return worst

    return max(directed(a, b), directed(b, a))


def ref_architecture(ea, eb) -> float:
    n = min(len(ea), len(eb))
    return sum(ref_hausdorff(ea[i], eb[i]) for i in range(n)) / n


def _unique_rows(cell):
    """A set has no duplicates: dedupe rows first (same Hausdorff value, much faster loops)."""
    return [list(r) for r in dict.fromkeys(tuple(r) for r in cell)]


# ---------------------------------------------------------------------------- reference values
def test_resnet18_vs_resnet50_is_the_paper_value():
    d = architecture_distance('resnet18', 'resnet50')
    assert round(d, 3) == 0.084  # paper Sec. 5.4: 0.084 (0.0836 before rounding)
    assert abs(d - 0.0836) < 5e-5
    # Closed form: every cell pair leaves {bottleneck + skip} rows whose nearest ResNet18 row is
    # {skip}: the bottleneck weight alone (larger than simple_conv_3x3's, the other candidate).
    assert d == pytest.approx(w('bottleneck_1x3x1'), abs=1e-15)
    np.testing.assert_allclose(cell_distances('resnet18', 'resnet50'), [d] * 4, rtol=0, atol=1e-15)


def test_op_weights_follow_the_dartopti_order():
    np.testing.assert_array_equal(op_weights(), W)
    np.testing.assert_array_equal(op_weights({op: 1.0 for op in OPS12}), np.ones(12))


def test_edge_index_layout():
    # rows (2,0) (2,1) | (3,0) (3,1) (3,2) | (4,0) ... : sum_{n<to-2}(n+2) + from
    assert [edge_index(2, 0), edge_index(2, 1), edge_index(3, 0), edge_index(3, 2), edge_index(4, 0), edge_index(5, 4)] \
        == [0, 1, 2, 4, 5, 13]
    assert [num_edges(s) for s in (1, 2, 4, 6)] == [2, 5, 14, 27]
    g = genotypes.get('resnet50')
    assert genotype_steps(g) == 6 and all(m.shape == (27, 12) for m in encode_genotype(g))
    assert genotype_steps(genotypes.get('do1_resnet50')) == 6  # concat (4..7): end 8 - 2


# ---------------------------------------------------------------------------- hand-computed cases
def test_edge_distance_by_hand():
    zero, e = np.zeros(12), 10.0 * np.eye(12)
    assert edge_distance(zero, zero) == 0.0
    assert edge_distance(e[7], zero) == pytest.approx(w('sep_conv_3x3'))
    assert edge_distance(e[7], e[4]) == pytest.approx(w('sep_conv_3x3') + w('skip_connect'))
    assert edge_distance(zero, np.full(12, 10.0)) == pytest.approx(1.0)
    # batched, broadcast over leading dims
    np.testing.assert_allclose(edge_distance(e, zero), np.array(W) / W_SUM)
    # custom weights: plain normalised Hamming
    assert edge_distance(e[0] + e[1], zero, weights=np.ones(12)) == pytest.approx(2 / 12)


def test_cell_distance_by_hand():
    sep = [('sep_conv_3x3', 2, 0)]
    skip = [('skip_connect', 2, 0)]
    # rows {sep, 0} vs {skip, 0}: each non-empty row is nearest to the empty row of the other cell
    assert cell_distance(sep, skip) == pytest.approx(max(w('sep_conv_3x3'), w('skip_connect')))
    assert cell_distance(sep, sep) == 0.0
    # A one-step cell with both rows filled has no empty row: {skip} vs {max_pool, skip}
    full_a = encode_cell([('skip_connect', 2, 0), ('skip_connect', 2, 1)], steps=1)
    full_b = encode_cell([('max_pool_3x3', 2, 0), ('skip_connect', 2, 0), ('skip_connect', 2, 1)], steps=1)
    assert full_a.shape == (2, 12)
    assert cell_distance(full_a, full_b) == pytest.approx(w('max_pool_3x3'))
    # {skip} vs {max_pool}: all rows differ in two ops
    full_c = encode_cell([('max_pool_3x3', 2, 0), ('max_pool_3x3', 2, 1)], steps=1)
    assert cell_distance(full_a, full_c) == pytest.approx(w('max_pool_3x3') + w('skip_connect'))
    # different row counts: the 4-step encoding adds empty rows
    assert cell_distance(full_a, encode_cell([('skip_connect', 2, 0), ('skip_connect', 2, 1)])) \
        == pytest.approx(w('skip_connect'))


def test_row_positions_do_not_count_pseudometric():
    """Hausdorff compares row *sets*: the same op on another edge is at distance 0 (documented)."""
    a = Genotype([[('sep_conv_3x3', 2, 0)]], [])
    b = Genotype([[('sep_conv_3x3', 2, 1)]], [])
    assert a != b and architecture_distance(a, b) == 0.0


def test_architecture_distance_is_the_mean_over_cells():
    a = Genotype([[('sep_conv_3x3', 2, 0)], [('skip_connect', 2, 1)]], [1])
    b = Genotype([[('sep_conv_3x3', 2, 0)], [('max_pool_3x3', 2, 1)]], [1])
    expected = max(w('skip_connect'), w('max_pool_3x3')) / 2
    assert architecture_distance(a, b) == pytest.approx(expected)
    np.testing.assert_allclose(cell_distances(a, b), [0.0, 2 * expected])


def test_different_cell_counts_average_the_common_leading_cells():
    r18 = genotypes.get('resnet18')
    longer = Genotype(r18.genes + (((('max_pool_3x3', 2, 0),),)), r18.reductions, r18.concat)
    assert len(cell_distances(r18, longer)) == 4
    assert architecture_distance(r18, longer) == 0.0
    assert architecture_distance('resnet18', 'xception') == architecture_distance(
        'resnet18', Genotype(genotypes.get('xception').genes[:4], (1, 2), (2, 3, 4, 5)))


def test_darts_space_genotypes_embed_in_the_12_columns():
    cells = encode_genotype('dd1')
    darts_cols = [OPS12.index(op) for op in ddarts_zoo.DARTS_SPACE]
    other = [k for k in range(12) if k not in darts_cols]
    assert all(not m[:, other].any() for m in cells)
    assert all(m[:, darts_cols].any() for m in cells)
    assert 0 < architecture_distance('dd1', 'do1_resnet18') < 1


def test_nodes_beyond_the_darts_cell_enlarge_the_encoding():
    # node 6 without concat: the default concat reaches node 6, so steps grow from 4 to 5 for the whole genotype
    genes = [[('sep_conv_3x3', 2, 0), ('skip_connect', 6, 2)], [('sep_conv_3x3', 2, 0)]]
    g = Genotype(genes, [])
    assert g.concat == (2, 3, 4, 5, 6) and genotype_steps(g) == 5
    with pytest.raises(GenotypeError, match='node 6 is not a node of the cell'):  # beyond an explicit concat
        Genotype(genes, [], concat=(2, 3, 4, 5))
    cells = encode_genotype(g)
    assert [m.shape for m in cells] == [(20, 12), (20, 12)]
    assert cells[0][edge_index(6, 2), OPS12.index('skip_connect')] == 10.0
    same_with_room = Genotype(g.genes, [], concat=(2, 3, 4, 5, 6))
    assert architecture_distance(g, same_with_room) == 0.0
    assert architecture_distance(g, 'dd1') == architecture_distance(same_with_room, 'dd1')


def test_errors_name_the_offending_item():
    with pytest.raises(GenotypeError, match=r"genotype #1 \('nope'\)"):
        distance_matrix(['resnet18', 'nope'])
    with pytest.raises(GenotypeError, match='genotype b'):
        architecture_distance('resnet18', {'genes': [[['sep_conv_3x3', 2, 3]]], 'reductions': []})
    with pytest.raises(ValueError, match='12'):
        edge_distance(np.zeros(7), np.zeros(7))
    with pytest.raises(ValueError, match='weights'):
        op_weights([1.0] * 11)
    with pytest.raises(ValueError, match='weights'):
        op_weights({'conv_9x9': 1.0})
    with pytest.raises(ValueError, match='>= 0'):
        op_weights([-1.0] + [1.0] * 11)
    with pytest.raises(ValueError, match='cell a'):
        cell_distance(np.zeros((3, 5)), np.zeros((3, 12)))
    with pytest.raises(GenotypeError, match='encode_cell'):
        cell_distance([('sep_conv_3x3', 1, 0)], [('sep_conv_3x3', 2, 0)])
    with pytest.raises(TypeError):
        distance_matrix('resnet18')


def test_custom_op_outside_the_metric_is_rejected(monkeypatch):
    from ddarts_zoo import ops
    monkeypatch.setitem(ops.OPS, 'my_op', ops.OPS['skip_connect'])
    g = Genotype([[('my_op', 2, 0)]], [], name='custom')
    with pytest.raises(GenotypeError, match=r"custom, cell 0: operation 'my_op'"):
        architecture_distance(g, g)


# ---------------------------------------------------------------------------- loop reference vs vectorised
def test_matches_loop_reference_on_all_shipped_pairs():
    names = genotypes.names()
    genos = [genotypes.get(n) for n in names]
    fast = distance_matrix(genos)
    encoded = [[_unique_rows(c) for c in ref_encode(g)] for g in genos]
    for i in range(len(genos)):
        for j in range(i, len(genos)):
            ref = ref_architecture(encoded[i], encoded[j])
            assert fast[i, j] == pytest.approx(ref, abs=1e-12), (names[i], names[j])
            assert architecture_distance(genos[i], genos[j]) == pytest.approx(ref, abs=1e-12)
    # the vectorised encoding equals the naive one, rows included (not only as sets)
    for g in genos:
        for m, ref in zip(encode_genotype(g), ref_encode(g)):
            np.testing.assert_array_equal(m, np.array(ref))


def test_matrix_is_fast_symmetric_and_zero_on_the_diagonal():
    genos = [genotypes.get(n) for n in genotypes.names()]
    distance_matrix(genos[:2])  # warm-up (op-score file, lookup table)
    start = time.perf_counter()
    m = distance_matrix(genos)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f'distance matrix over 19 genotypes took {elapsed:.3f} s'
    assert m.shape == (19, 19)
    np.testing.assert_array_equal(m, m.T)
    np.testing.assert_array_equal(np.diag(m), 0.0)
    assert ((m >= 0) & (m <= 1)).all()


# ---------------------------------------------------------------------------- metric axioms (hypothesis)
@st.composite
def genes(draw, steps: int, ops):
    pairs = [(to, src) for to in range(2, steps + 2) for src in range(to)]
    # an edge from a cell input keeps at least one node live, so the gene is always valid
    first = (draw(st.sampled_from(ops)), draw(st.integers(2, steps + 1)), draw(st.integers(0, 1)))
    extra = draw(st.lists(st.tuples(st.sampled_from(ops), st.sampled_from(pairs)), max_size=7))
    return list(dict.fromkeys([first] + [(op, to, src) for op, (to, src) in extra]))  # no duplicate edge


@st.composite
def random_genotypes(draw, num_cells: int):
    steps = draw(st.integers(1, 4))
    # a small op pool makes coinciding row sets (distance 0 between different genotypes) likely
    ops = draw(st.sampled_from([OPS12, ['skip_connect', 'sep_conv_3x3'], list(ddarts_zoo.DARTS_SPACE)]))
    cells = [draw(genes(steps, ops)) for _ in range(num_cells)]
    reductions = draw(st.lists(st.integers(0, num_cells - 1), unique=True, max_size=2))
    return Genotype(cells, reductions, tuple(range(2, 2 + steps)))


def row_sets(g: Genotype):
    return [frozenset(map(tuple, m)) for m in encode_genotype(g)]


AXIOMS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@AXIOMS
@given(st.integers(1, 3).flatmap(lambda n: st.tuples(random_genotypes(n), random_genotypes(n))))
def test_identity_of_indiscernibles(pair):
    a, b = pair
    assert architecture_distance(a, a) == 0.0
    d = architecture_distance(a, b)
    # zero exactly when every cell has the same *set* of encoded rows (the metric's quotient)
    assert (d == 0.0) == (row_sets(a) == row_sets(b))
    assert 0.0 <= d <= 1.0


@AXIOMS
@given(st.integers(1, 4).flatmap(lambda n: st.tuples(random_genotypes(n), random_genotypes(n))))
def test_symmetry(pair):
    a, b = pair
    assert architecture_distance(a, b) == architecture_distance(b, a)
    np.testing.assert_array_equal(cell_distances(a, b), cell_distances(b, a))


@AXIOMS
@given(st.integers(1, 3).flatmap(
    lambda n: st.tuples(random_genotypes(n), random_genotypes(n), random_genotypes(n))))
def test_triangle_inequality(triple):
    a, b, c = triple
    ab, bc, ac = (architecture_distance(x, y) for x, y in ((a, b), (b, c), (a, c)))
    assert ac <= ab + bc + 1e-12
    # and per cell (Hausdorff over a metric is a metric)
    assert (cell_distances(a, c) <= cell_distances(a, b) + cell_distances(b, c) + 1e-12).all()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 3).flatmap(random_genotypes), min_size=2, max_size=4))
def test_matrix_agrees_with_pairwise_and_reference(genos):
    m = distance_matrix(genos)
    for i, a in enumerate(genos):
        for j, b in enumerate(genos):
            ref = ref_architecture(ref_encode(a), ref_encode(b))
            assert m[i, j] == pytest.approx(ref, abs=1e-12)
            assert m[i, j] == pytest.approx(architecture_distance(a, b), abs=0)
