"""Genotype parsing, validation, JSON round trips and Algorithm 1."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddarts_zoo import genotypes as shipped
from ddarts_zoo.genotype import (DeadNodeWarning, Edge, Genotype, GenotypeError, GenotypeWarning, parse_official,
                                 reduction_positions)
from ddarts_zoo.genotypes import load_genotype
from ddarts_zoo.genotypes.build import EMPTY_CELL_REPAIRS, SOURCES, build_all
from ddarts_zoo.ops import DARTOPTI_SPACE, DARTS_SPACE

OFFICIAL = Path(shipped.__file__).parent / 'official'
EXPECTED_NAMES = {'dd1', 'dd2', 'dd4', 'dd5', 'resnet18', 'resnet50', 'xception'} | {
    f'do{i}_{b}{s}' for i in (1, 2) for b in ('resnet18', 'resnet50', 'xception') for s in ('', '_edge')}


def test_shipped_names():
    assert set(shipped.names()) == EXPECTED_NAMES


def test_shipped_json_matches_official_text():
    """The committed JSON is exactly what parsing the authors' files gives (no stale data)."""
    for name, geno in build_all().items():
        assert shipped.get(name) == geno, name
        assert shipped.get(name).meta == geno.meta


@pytest.mark.parametrize('name', sorted(SOURCES))
def test_official_text_json_round_trip(name, tmp_path):
    text = (OFFICIAL / f'{SOURCES[name][0]}.txt').read_text()
    geno = parse_official(text, name, empty_cell='skip_connect' if name in EMPTY_CELL_REPAIRS else 'error')
    path = geno.save(tmp_path / f'{name}.json')
    again = Genotype.load(path)
    assert again == geno
    assert Genotype.from_json(again.to_json()) == geno
    assert parse_official(geno.to_official(), name, empty_cell=geno.empty_cell) == geno
    # independent check of the parse: every edge tuple of the text appears in order
    import re
    tuples = [(op, int(to), int(src)) for op, to, src in re.findall(r"\('(\w+)', (\d+), (\d+)\)", text)]
    assert [tuple(e) for gene in geno.genes for e in gene] == tuples


def test_paper_table_facts():
    dd1 = shipped.get('dd1')
    assert dd1.num_cells == 8 and dd1.reductions == (2, 6) and dd1.op_space == 'darts'
    for gene in dd1.genes:  # sparse: at most 2 incoming edges per node, one op each
        for node in {e.to for e in gene}:
            srcs = [e.src for e in gene if e.to == node]
            assert len(srcs) <= 2 and len(set(srcs)) == len(srcs)
    r50 = shipped.get('resnet50')
    assert r50.reductions == (1, 2, 3) and r50.cell_groups() == (0, 1, 2, 0)
    assert [r50.multiplier(i) for i in range(4)] == [3, 4, 6, 3]
    xc = shipped.get('xception')
    assert xc.num_cells == 13 and xc.reductions == (1, 2, 11, 12)
    assert xc.cell_groups() == (0, 0, 0, 3, 3, 3, 3, 3, 3, 3, 3, 0, 12)
    assert shipped.get('do1_resnet18').op_space == 'dartopti'


def test_genotype_opt_form_expands_seq():
    text = ("Genotype_opt(genes=[[('skip_connect', 2, 0)], [('sep_conv_3x3', 2, 1), ('max_pool_3x3', 3, 2)]], "
            "seq=[1, 0, 1], concat=range(2, 4), reductions=[1])")
    geno = parse_official(text)
    assert geno.genes[0] == geno.genes[2] == (Edge('sep_conv_3x3', 2, 1), Edge('max_pool_3x3', 3, 2))
    assert geno.genes[1] == (Edge('skip_connect', 2, 0),)
    assert geno.concat == (2, 3)


@pytest.mark.parametrize('text, fragment', [
    ("__import__('os').system('true')", 'expected one of'),
    ("Genotype_nested(genes=[[('sep_conv_3x3', 2, 0)]], reductions=[0], concat=open('x'))", 'unsupported'),
    ("Genotype_nested(genes=[[('sep_conv_3x3', 2, 0)]]", 'not a genotype expression'),
    ("Genotype_nested(genes=[[('sep_conv_3x3', 2, 0)]])", 'missing field "reductions"'),
    ("Genotype_opt(genes=[[('sep_conv_3x3', 2, 0)]], seq=[0, 3], reductions=[])", 'seq'),
    ("Genotype_nested([[('sep_conv_3x3', 2, 0)]], [0])", 'positional'),
])
def test_parse_official_rejects_code_and_garbage(text, fragment):
    with pytest.raises(GenotypeError, match=fragment):
        parse_official(text)


GOOD = [[('sep_conv_3x3', 2, 0), ('skip_connect', 2, 1), ('max_pool_3x3', 3, 2)]]


@pytest.mark.parametrize('genes, reductions, fragment', [
    ([[('conv_9x9', 2, 0)]], [], r"""cell 0, edge 0 \('conv_9x9', 2, 0\), field "op": unknown operation"""),
    ([[('sep_conv_3x3', 2, 0)], [('sep_conv_3x3', 3, 3)]], [], r'cell 1, edge 0 .*field "src": source 3 >= target 3'),
    ([[('sep_conv_3x3', 2, 0), ('skip_connect', 2, 4)]], [], r'cell 0, edge 1 .*source 4 >= target 2'),
    ([[('sep_conv_3x3', 2, -1)]], [], r'cell 0, edge 0 .*field "src": node indices must be >= 0'),
    ([[('sep_conv_3x3', 10**6, 0)]], [], r'field "to": node 1000000 is not a node of the cell: its nodes are 2..64'),
    ([[('sep_conv_3x3', 1, 0)]], [], r'field "to": target 1 is a cell input'),
    (GOOD, [1], r'field "reductions": reduction index 1 is outside the 1 cells'),
    (GOOD, [-1], r'reduction index -1'),
    (GOOD + GOOD, [0, 0], r'field "reductions": reduction indices repeat'),
    (GOOD, ['0'], r"""field "reductions": '0' is not an integer"""),
    (GOOD, '01', r'field "reductions": must be a list of integers'),
    ([[]], [], r'cell 0, field "genes": empty gene'),
    ([], [], r'field "genes": a genotype needs at least one cell'),
    ([GOOD[0], [('sep_conv_3x3', 3, 2), ('skip_connect', 4, 3)]], [], r'cell 1, field "genes": no intermediate node'),
    ([[('sep_conv_3x3', 2.0, 0)]], [], r'cell 0, edge 0.*field "to": node indices must be integers'),
    ([[('sep_conv_3x3', 2, True)]], [], r'cell 0, edge 0.*field "src": node indices must be integers'),
    ([[('sep_conv_3x3', 2)]], [], r'cell 0, edge 0, field "genes": an edge must be'),
    ([[(3, 2, 0)]], [], r'cell 0, edge 0 .*field "op": the operation name must be a string'),
    ([[{'op': 'sep_conv_3x3', 'to': 2, 'src': 0, 'size': 3}]], [], r'cell 0, edge 0 .*field "size": unknown edge'),
    ([GOOD[0] + [GOOD[0][1]]], [], r'cell 0, edge 3 .*field "genes": duplicate of edge 1'),
    (['abc'], [], r'cell 0, field "genes": a gene must be a list'),
    ('abc', [], r'field "genes": must be a list of cells'),
])
def test_validation_errors_name_the_item(genes, reductions, fragment):
    with pytest.raises(GenotypeError, match=fragment):
        Genotype(genes, reductions)


@pytest.mark.parametrize('concat, fragment', [
    ((2, 3), r"""cell 0, edge 2 \('max_pool_3x3', 17, 2\), field "to": node 17 is not a node of the cell: its nodes """
             r'are 2..3'),
    ((5, 6), None),  # valid for this gene: nodes 2..6, node 17 still outside
    ((), r'field "concat": must name at least one node'),
    ((2, 4), r'field "concat": must be consecutive'),
    ((1, 2, 3), r'field "concat": must be consecutive node indices in 2..64'),
])
def test_node_outside_the_cell_is_an_error_not_a_new_node(concat, fragment):
    """An edge into node 17 of a cell whose nodes are 2..3 must not add a third node."""
    gene = [('sep_conv_3x3', 2, 0), ('skip_connect', 3, 2), ('max_pool_3x3', 17, 2)]
    with pytest.raises(GenotypeError, match=fragment or r'field "to": node 17 is not a node of the cell'):
        Genotype([gene], [], concat)


def test_concat_naming_no_node_warns():
    """``[5, 6]`` for cells with nodes 2..3 is what a search with ``multiplier=2 < steps=5`` writes when only
    nodes 2 and 3 survive: consistent (nodes 2..6), so loadable, but named in a warning."""
    gene = [('sep_conv_3x3', 2, 0), ('skip_connect', 3, 2)]
    assert Genotype([gene], [], (2, 3)).concat == (2, 3)
    assert Genotype([gene], []).concat == (2, 3, 4, 5)  # default: the DARTS cell
    assert Genotype([gene + [('skip_connect', 7, 3)]], []).concat == tuple(range(2, 8))  # grows to the nodes
    with pytest.warns(GenotypeWarning, match=r'field "concat": \[5, 6\] names no node of any cell .*\[2, 3\]'):
        assert Genotype([gene], [], (5, 6)).concat == (5, 6)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        # the empty-cell repair (a lone skip_connect from input 1) is no searched node: no warning for it
        assert Genotype([[('skip_connect', 2, 1)]], [0], (4, 5)).concat == (4, 5)
        for name in shipped.names():
            shipped.get.__wrapped__(name)


def test_dead_nodes_are_pruned_with_warning():
    # node 3's only input is node 5? impossible (cycle); build: node 4 fed only by dead node 3, node 3 fed by
    # nothing live (its input is node 2 which has no input) -> nodes 3 and 4 dead, node 5 alive.
    gene = [('sep_conv_3x3', 3, 2), ('skip_connect', 4, 3), ('max_pool_3x3', 5, 0), ('avg_pool_3x3', 5, 4)]
    geno = Genotype([gene], [], name='toy')
    assert geno.live_nodes(0) == (5,)
    with pytest.warns(DeadNodeWarning, match=r'toy: cell 0: node\(s\) \[3, 4\]'):
        live = geno.live_gene(0)
    assert live == (Edge('max_pool_3x3', 5, 0),)


def test_empty_cell_repair_is_explicit_and_recorded():
    geno = shipped.get('do2_xception_edge')
    assert geno.empty_cell == 'skip_connect'
    assert geno.to_dict()['empty_cell'] == 'skip_connect'
    with pytest.warns(DeadNodeWarning, match='cell 12: every node'):
        assert geno.live_gene(12) == (Edge('skip_connect', 2, 1),)
    with pytest.raises(GenotypeError, match='cell 12, field "genes": no intermediate node'):
        Genotype(geno.genes, geno.reductions, geno.concat)


def test_live_gene_sorts_by_target_and_keeps_gene_order_within_node():
    geno = Genotype([[('max_pool_3x3', 3, 0), ('sep_conv_3x3', 2, 1), ('skip_connect', 3, 2),
                      ('avg_pool_3x3', 2, 0)]], [])
    assert [tuple(e) for e in geno.live_gene(0)] == [
        ('sep_conv_3x3', 2, 1), ('avg_pool_3x3', 2, 0), ('max_pool_3x3', 3, 0), ('skip_connect', 3, 2)]


def test_expand_14_layout():
    dd1 = shipped.get('dd1')  # reductions [2, 6] in 8 cells
    g = dd1.expand(14)
    assert g.num_cells == 14 and g.reductions == (4, 9)
    assert g.genes[4] == dd1.genes[2] and g.genes[9] == dd1.genes[6]
    assert list(g.genes[0:4]) == [dd1.genes[0], dd1.genes[1], dd1.genes[0], dd1.genes[1]]
    assert list(g.genes[5:9]) == [dd1.genes[3], dd1.genes[4], dd1.genes[5], dd1.genes[3]]
    assert list(g.genes[10:14]) == [dd1.genes[7]] * 4
    assert dd1.expand(8) is dd1


@pytest.mark.parametrize('layers, reductions, genes', [
    (1, (0,), [2]),  # one cell: the first reduction gene (the search's 1-cell supernet reduces at cell 0)
    (2, (0, 1), [2, 6]),  # two cells: both reduction genes, as the search's 2-cell supernet places them
    (3, (1, 2), [0, 2, 6]),
    (5, (1, 3), [0, 2, 3, 6, 7]),  # fewer cells keep the first genes of each interval
])
def test_expand_to_fewer_cells_places_reductions_as_the_search(layers, reductions, genes):
    dd1 = shipped.get('dd1')
    g = dd1.expand(layers)
    assert g.reductions == reductions == reduction_positions(layers)
    assert list(g.genes) == [dd1.genes[i] for i in genes]
    assert g.name == f'dd1_l{layers}' and g.meta['expanded_from'] == 8
    with pytest.raises(GenotypeError, match=r'field "layers".*integer >= 1'):
        dd1.expand(0)


def test_expand_needs_a_normal_cell():
    with pytest.raises(GenotypeError, match='no normal cell'):
        Genotype([GOOD[0], GOOD[0]], [0, 1]).expand(6)


def test_expand_refuses_more_than_two_reductions():
    with pytest.raises(GenotypeError, match='exactly 2 reduction cells; do1_resnet18 has 3'):
        shipped.get('do1_resnet18').expand(14)


def test_from_dict_errors():
    good = shipped.get('dd1').to_dict()
    with pytest.raises(GenotypeError, match='field "version": genotype format version 2 is not supported'):
        Genotype.from_dict(dict(good, version=2))
    with pytest.raises(GenotypeError, match='field "reductions": missing'):
        Genotype.from_dict({k: v for k, v in good.items() if k != 'reductions'})
    with pytest.raises(GenotypeError, match='field "format": missing'):
        Genotype.from_dict({k: v for k, v in good.items() if k != 'format'})
    with pytest.raises(GenotypeError, match='field "seq": refers to gene 99'):
        Genotype.from_dict(dict(good, seq=[99]))
    xc = shipped.get('xception').to_dict()  # genes stored once, cells refer to them through seq
    xc['genes'][2][1] = ['sep_conv_3x3', 9, 2]
    with pytest.raises(GenotypeError, match=r'cell 12 \(genes\[2\]\), edge 1 .*field "to": node 9'):
        Genotype.from_dict(xc)
    with pytest.raises(GenotypeError, match='not a JSON genotype'):
        Genotype.from_json('{nope')


def test_load_genotype_resolves_names_paths_dicts(tmp_path):
    dd1 = shipped.get('dd1')
    assert load_genotype('dd1') == dd1
    assert load_genotype(dd1.to_dict()) == dd1
    official = tmp_path / 'x.txt'
    official.write_text((OFFICIAL / f"{SOURCES['dd1'][0]}.txt").read_text())
    assert load_genotype(official) == dd1
    with pytest.raises(GenotypeError, match="'nope' is neither a shipped name"):
        load_genotype('nope')


def test_save_is_atomic(tmp_path, monkeypatch):
    """A failing write leaves the previous file intact and no temporary file behind."""
    path = shipped.get('dd1').save(tmp_path / 'g.json')
    before = path.read_text()

    def boom(*a, **k):
        raise OSError('disk full')
    monkeypatch.setattr('os.replace', boom)
    with pytest.raises(OSError):
        shipped.get('dd2').save(path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ['g.json']


# ---------------------------------------------------------------------------------------------- property tests
@st.composite
def valid_genotypes(draw):
    space = draw(st.sampled_from([DARTS_SPACE, DARTOPTI_SPACE]))
    num_cells = draw(st.integers(1, 6))
    genes = []
    for _ in range(num_cells):
        steps = draw(st.integers(1, 5))
        edges = [(draw(st.sampled_from(space)), 2, draw(st.integers(0, 1)))]
        for node in range(2, 2 + steps):
            for _ in range(draw(st.integers(0, 3))):
                edges.append((draw(st.sampled_from(space)), node, draw(st.integers(0, node - 1))))
        genes.append(list(dict.fromkeys(edges)))  # distinct edges, first occurrence kept
    reductions = draw(st.lists(st.integers(0, num_cells - 1), unique=True, max_size=num_cells))
    return Genotype(genes, sorted(reductions))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_genotypes())
def test_random_valid_genotypes_round_trip(geno):
    assert Genotype.from_json(geno.to_json()) == geno
    assert parse_official(geno.to_official()) == geno
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeadNodeWarning)
        for i in range(geno.num_cells):
            live = geno.live_gene(i)
            nodes = geno.live_nodes(i)
            assert {e.to for e in live} == set(nodes)
            assert all(e.src in (0, 1) or e.src in nodes for e in live)
            assert [e.to for e in live] == sorted(e.to for e in live)
    if len(geno.reductions) == 2 and geno.num_cells > 2:
        big = geno.expand(geno.num_cells + 5)
        assert big.num_cells == geno.num_cells + 5
        assert set(big.genes) <= set(geno.genes)


def _set_edge(doc, cell, edge, value):
    doc['genes'][doc['seq'][cell]][edge] = value


def _corrupt(doc, kind, cell, edge, data):
    """Apply one kind of invalid change to a genotype document; return (field named, cell/edge named?)."""
    op, to, src = doc['genes'][doc['seq'][cell]][edge]
    top = doc['concat'][-1]
    edits = {
        'op': lambda: _set_edge(doc, cell, edge, [data.draw(st.text(min_size=1, max_size=8).filter(
            lambda s: s not in DARTOPTI_SPACE)), to, src]),
        'src': lambda: _set_edge(doc, cell, edge, [op, to, data.draw(st.integers(to, to + 10))]),
        'to': lambda: _set_edge(doc, cell, edge, [op, data.draw(st.integers(top + 1, top + 30)), src]),
        'type': lambda: _set_edge(doc, cell, edge, [op, str(to), src]),
        'duplicate': lambda: doc['genes'][doc['seq'][cell]].append([op, to, src]),
        'concat': lambda: doc.update(concat=data.draw(st.sampled_from([[top + 1, top + 3], [1, 2], [], [3, 2]]))),
        'num_cells': lambda: doc.update(num_cells=len(doc['seq']) + data.draw(st.integers(1, 99))),
        'op_space': lambda: doc.update(op_space=data.draw(st.sampled_from(['nosuch', 'DARTS', '', 7]))),
        'format': lambda: doc.pop('format'),
        'version': lambda: doc.update(version=data.draw(st.sampled_from([0, 2, '1', None]))),
        'reductions': lambda: doc.update(reductions=[len(doc['seq']) + data.draw(st.integers(0, 5))]),
        'seq': lambda: doc.update(seq=doc['seq'] + [len(doc['genes'])]),
        'meta': lambda: doc.update(meta=['not', 'an', 'object']),
        'reduction': lambda: doc.update(reduction=[0]),  # misspelt field
    }
    edits[kind]()
    field = {'duplicate': 'genes', 'type': 'to'}.get(kind, kind)
    return field, kind in ('op', 'src', 'to', 'type', 'duplicate')


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_genotypes(), st.data())
def test_random_corruptions_are_rejected_naming_cell_edge_and_field(geno, data):
    """Each kind of invalid genotype, made from a valid one, is refused with the field (and the cell and edge)."""
    doc = json.loads(json.dumps(geno.to_dict()))
    cell = data.draw(st.integers(0, len(doc['seq']) - 1))
    edge = data.draw(st.integers(0, len(doc['genes'][doc['seq'][cell]]) - 1))
    kind = data.draw(st.sampled_from(['op', 'src', 'to', 'type', 'duplicate', 'concat', 'num_cells', 'op_space',
                                      'format', 'version', 'reductions', 'seq', 'meta', 'reduction']))
    field, located_in_cell = _corrupt(doc, kind, cell, edge, data)
    with pytest.raises(GenotypeError) as info:
        Genotype.from_dict(doc)
    message = str(info.value)
    assert f'field "{field}"' in message, (kind, message)
    if located_in_cell:  # the first cell using the corrupted gene, and the edge
        first = doc['seq'].index(doc['seq'][cell])
        where = len(doc['genes'][doc['seq'][cell]]) - 1 if kind == 'duplicate' else edge
        assert message.startswith(f'cell {first} (genes[{doc["seq"][cell]}]), edge {where} '), (kind, message)
    with pytest.raises(GenotypeError, match=f'field "{field}"'):  # through the public loaders too
        load_genotype(doc)


def test_search_genotypes_of_any_size_load_and_build(tmp_path):
    """Genotypes as the search writes them (1, 2 and 3 cells, repaired empty cells) load and build."""
    import numpy as np
    import timm
    from search.parsing import parse_genotype
    from ddarts_zoo.genotype import num_edges
    rng = np.random.default_rng(0)
    for layers in (1, 2, 3):
        weights = [rng.uniform(0.3, 1.0, (num_edges(2), len(DARTS_SPACE))) for _ in range(layers)]
        weights[0][:] = 0.1  # nothing reaches the threshold: an empty cell, repaired
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            geno = parse_genotype(weights, DARTS_SPACE, 2, 2, reduction_positions(layers), name=f'l{layers}')
        path = geno.save(tmp_path / f'l{layers}.json')
        assert Genotype.load(path) == geno
        model = timm.create_model('ddarts_genotype_cifar', genotype=str(path), init_channels=4, in_chans=1)
        assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
        again = timm.create_model('ddarts_genotype_cifar', genotype=str(path), init_channels=4, layers=layers)
        assert again.genotype == geno


def test_json_file_format_is_versioned():
    data = json.loads((Path(shipped.__file__).parent / 'dd1.json').read_text())
    assert data['format'] == 'ddarts-zoo/genotype' and data['version'] == 1
    assert data['meta']['credit'].startswith('Heuillet')
