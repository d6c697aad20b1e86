"""Random genotypes of the search space: parsing form, matched op counts, validity, uniformity, seeds."""
import random
from collections import Counter
from itertools import combinations, product

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddarts_zoo.genotype import Genotype
from ddarts_zoo.genotypes import load_genotype
from ddarts_zoo.ops import DARTOPTI_SPACE, DARTS_SPACE
from search.parsing import parse_cell
from search.random_genotypes import (RandomGenotypeError, SearchSpace, live_op_counts, main, sample_cell,
                                     sample_genotype, sample_genotypes, space_of)


@st.composite
def references(draw):
    """A reference genotype of a random cell space: parsing, nodes, op set, cells, reductions."""
    parsing = draw(st.sampled_from(['sparse', 'edge', 'darts']))
    steps = draw(st.integers(1, 4))
    ops = draw(st.sampled_from([DARTS_SPACE, DARTOPTI_SPACE, DARTS_SPACE[:2]]))
    cells = draw(st.integers(1, 5))
    reductions = sorted(draw(st.sets(st.integers(0, cells - 1), max_size=2)))
    space = SearchSpace(ops, steps, parsing)
    rng = random.Random(draw(st.integers(0, 2 ** 32)))
    genes = [sample_cell(space, None, rng) for _ in range(cells)]
    meta = dict(parsing=parsing, steps=steps, op_names=list(ops))
    return Genotype(genes, reductions, name='ref', meta=meta)


def assert_parsing_form(gene, parsing, steps):
    by_node = Counter(e.to for e in gene)
    assert all(2 <= e.to <= steps + 1 and 0 <= e.src < e.to for e in gene)
    if parsing == 'edge':   # at most 2 distinct ops per (to, src)
        per_edge = Counter((e.to, e.src) for e in gene)
        assert max(per_edge.values()) <= 2 and len(set(gene)) == len(gene)
    else:                   # at most (darts: exactly) 2 edges per node, from distinct sources
        assert max(by_node.values()) <= 2
        assert all(len({e.src for e in gene if e.to == n}) == k for n, k in by_node.items())
        if parsing == 'darts':
            assert sorted(by_node) == list(range(2, steps + 2)) and set(by_node.values()) == {2}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(references(), st.integers(0, 10 ** 6), st.integers(0, 50))
def test_samples_are_valid_genotypes_of_the_parsing_form_with_the_reference_op_counts(ref, seed, index):
    space = space_of(ref)
    geno = sample_genotype(ref, seed, index)
    assert Genotype.from_json(geno.to_json()) == geno      # passes validation, survives JSON
    assert live_op_counts(geno) == live_op_counts(ref)      # matched cell by cell (band 0)
    assert geno.reductions == ref.reductions and geno.num_cells == ref.num_cells
    for i, gene in enumerate(geno.genes):
        assert_parsing_form(gene, space.parsing, space.steps)
        assert set(gene) == set(geno.live_gene(i, warn=False))   # no dead edge
        assert {e.op for e in gene} <= set(space.op_names)
    assert sample_genotype(ref, seed, index) == geno        # seeded


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(references(), st.integers(0, 10 ** 6))
def test_samples_build_networks_that_train(ref, seed):
    import timm
    geno = sample_genotype(ref, seed)
    net = timm.create_model('ddarts_genotype_cifar', genotype=geno, init_channels=2, num_classes=3,
                            in_chans=1)
    logits = net(torch.randn(2, 1, 8, 8))
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


@pytest.mark.parametrize('parsing', ['sparse', 'edge', 'darts'])
def test_a_parsed_supernet_cell_is_a_cell_of_the_same_form(parsing):
    """The form sampled is the one search/parsing.py produces (checked on random weights)."""
    rng = torch.Generator().manual_seed(0)
    for _ in range(20):
        w = torch.rand(14, 7, generator=rng).numpy() ** 0.3
        gene = parse_cell(w, DARTS_SPACE, 4, parsing, threshold=0.85)
        if gene:
            assert_parsing_form(gene, parsing, 4)


def _all_cells(space, k):
    """Every cell of ``space`` with ``k`` ops, all live (brute force over the slots)."""
    out = set()
    per_slot = []
    for slot in space.slots:
        options = [()]
        for n in (1, 2):
            if space.parsing == 'edge':
                options += [tuple((op, *slot) for op in ops) for ops in combinations(space.op_names, n)]
            elif n == 2 or space.parsing == 'sparse':
                options += [tuple((op, slot[0], s) for op, s in zip(ops, srcs))
                            for srcs in combinations(range(slot[0]), n)
                            for ops in product(space.op_names, repeat=n)]
        if space.parsing == 'darts':
            options = [o for o in options if len(o) == 2]
        per_slot.append(options)
    for choice in product(*per_slot):
        gene = [e for part in choice for e in part]
        cell = Genotype([gene], [], empty_cell='skip_connect') if len(gene) == k else None
        if cell is not None and len(cell.live_gene(0, warn=False)) == k:
            out.add(tuple(sorted(gene)))
    return out


@pytest.mark.parametrize('parsing,k', [('sparse', 2), ('sparse', 3), ('edge', 2), ('darts', 4)])
def test_cells_are_uniform_over_the_cells_with_that_many_live_ops(parsing, k):
    space = SearchSpace(('skip_connect', 'max_pool_3x3'), 2, parsing)
    support = _all_cells(space, k)
    rng = random.Random(0)
    n = 200 * len(support)
    counts = Counter(tuple(sorted(tuple(e) for e in sample_cell(space, k, rng))) for _ in range(n))
    assert set(counts) == support   # every cell reachable, nothing else
    expected = n / len(support)
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    dof = len(support) - 1
    assert chi2 < dof + 5 * (2 * dof) ** 0.5 + 10, (chi2, dof)   # far inside the chi-square tail


def test_match_params_band_and_clear_errors():
    ref = load_genotype('dd1')
    geno = sample_genotype(ref, 3, match='params', band=0.25, width=8)
    target = geno.meta['reference_params']
    assert abs(geno.meta['cell_op_params'] - target) <= 0.25 * target
    with pytest.raises(RandomGenotypeError, match='within 0% .* widen the band'):
        sample_genotype(ref, 0, match='params', band=0.0, width=8, max_tries=20)
    with pytest.raises(RandomGenotypeError, match='cannot hold 3 operation'):
        sample_cell(SearchSpace(DARTS_SPACE, 2, 'darts'), 3, random.Random(0))
    with pytest.raises(RandomGenotypeError, match="parsing 'top2'"):
        SearchSpace(DARTS_SPACE, 2, 'top2')


def test_draws_differ_and_do_not_depend_on_how_many_are_drawn():
    ref = load_genotype('dd1')
    five = sample_genotypes(ref, 5, seed=1)
    assert len({g.genes for g in five}) == 5
    assert sample_genotypes(ref, 2, seed=1) == five[:2]
    assert sample_genotypes(ref, 2, seed=2) != five[:2]


def test_command_writes_loadable_genotypes(tmp_path, capsys):
    assert main(['dd2', '--n', '2', '--seed', '4', '--out', str(tmp_path)]) == 0
    files = sorted(tmp_path.glob('*.json'))
    assert len(files) == 2
    ref = load_genotype('dd2')
    for f in files:
        assert live_op_counts(Genotype.load(f)) == live_op_counts(ref)
    assert f'{sum(live_op_counts(ref))} ops' in capsys.readouterr().out
