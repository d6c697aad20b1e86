"""Random architectures of the search space: the baseline every search method is placed against.

NAS practice (Li & Talwalkar 2019, *Random search and reproducibility for NAS*; Yang et al. 2020, *NAS
evaluation is frustratingly hard*) compares a method with architectures drawn at random from its own space
and trained with the same recipe.  A random genotype here has exactly the form the search's parsing gives
(:mod:`search.parsing`, paper Sec. 5.1), per intermediate node:

* ``sparse``: at most 2 incoming edges, from distinct source nodes, one operation each;
* ``edge``: on every incoming edge at most 2 distinct operations;
* ``darts``: exactly 2 incoming edges, from distinct source nodes, one operation each.

:func:`sample_cell` draws uniformly among the cells of that form with a given number of operations that
all lie on live nodes (no dead edge); :func:`sample_genotypes` draws whole genotypes matched cell by cell to
a reference (a searched genotype): every cell keeps the reference cell's number of live operations, so the
total operation count matches exactly; with ``match='params'`` the cell operations' parameters must also lie
within ``band`` (a fraction) of the reference's (rejection sampling, at most ``max_tries`` draws).  Draw
``i`` of seed ``s`` depends on ``(s, i)`` only.
"""
from __future__ import annotations

import argparse
import random
import sys
from math import comb
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ddarts_zoo.edges import Edge, edge_pairs, live_nodes
from ddarts_zoo.errors import UserError
from ddarts_zoo.genotype import Genotype
from ddarts_zoo.ops import OP_SPACES

__all__ = ['MATCH_MODES', 'RandomGenotypeError', 'SearchSpace', 'sample_cell', 'sample_genotype',
           'sample_genotypes', 'live_op_counts', 'space_of']

MATCH_MODES = ('ops', 'params', 'none')
PARSINGS = ('sparse', 'edge', 'darts')


class RandomGenotypeError(UserError):
    """No genotype of the requested form was found (impossible op count, or the band is too narrow)."""


class SearchSpace:
    """A cell space: its operations, intermediate nodes (``steps``) and the parsing that shapes a cell."""

    def __init__(self, op_names: Sequence[str], steps: int, parsing: str) -> None:
        if parsing not in PARSINGS:
            raise RandomGenotypeError(f'parsing {parsing!r}: choose one of {", ".join(PARSINGS)}')
        if steps < 1 or not op_names:
            raise RandomGenotypeError(f'a cell space needs >= 1 node and >= 1 op '
                                      f'(got {steps}, {list(op_names)})')
        self.op_names, self.steps, self.parsing = tuple(op_names), steps, parsing
        n_ops = len(self.op_names)
        if parsing == 'edge':   # a slot per edge (to, src): 0, 1 or 2 distinct ops
            self.slots: List[Tuple[int, ...]] = [(to, src) for to, src in edge_pairs(steps)]
            self.weights = [[comb(n_ops, n) for n in range(3)] for _ in self.slots]
        else:                   # a slot per node: 0..2 edges (darts: 2), distinct sources, any op each
            self.slots = [(to,) for to in range(2, steps + 2)]
            lo = 2 if parsing == 'darts' else 0
            self.weights = [[comb(to, n) * n_ops ** n if n >= lo else 0 for n in range(3)]
                            for (to,) in self.slots]
        self._ways = self._count_ways()

    def _count_ways(self) -> List[List[int]]:
        """``ways[i][k]``: number of ways slots ``i..`` hold ``k`` ops in total (exact integers)."""
        max_k = 2 * len(self.slots)
        ways = [[0] * (max_k + 1) for _ in range(len(self.slots) + 1)]
        ways[-1][0] = 1
        for i in range(len(self.slots) - 1, -1, -1):
            for k in range(max_k + 1):
                ways[i][k] = sum(w * ways[i + 1][k - n] for n, w in enumerate(self.weights[i]) if n <= k)
        return ways

    def feasible(self, num_ops: int) -> bool:
        return 0 < num_ops < len(self._ways[0]) and self._ways[0][num_ops] > 0

    def _fill_slot(self, slot: Tuple[int, ...], n: int, rng: random.Random) -> List[Edge]:
        if self.parsing == 'edge':
            to, src = slot
            return [Edge(op, to, src) for op in sorted(rng.sample(self.op_names, n), key=self.op_names.index)]
        to = slot[0]
        return [Edge(rng.choice(self.op_names), to, src) for src in sorted(rng.sample(range(to), n))]

    def draw(self, num_ops: Optional[int], rng: random.Random) -> List[Edge]:
        """One cell of the parsing's form, uniform given ``num_ops`` (or over every size when ``None``)."""
        gene: List[Edge] = []
        left = num_ops
        for i, slot in enumerate(self.slots):
            if left is None:
                n = rng.choices(range(3), weights=self.weights[i])[0]
            else:
                choices = [w * self._ways[i + 1][left - n] if n <= left else 0
                           for n, w in enumerate(self.weights[i])]
                n = rng.choices(range(3), weights=choices)[0]
                left -= n
            gene.extend(self._fill_slot(slot, n, rng))
        return gene


def _all_live(gene: Sequence[Edge]) -> bool:
    live = set(live_nodes(gene)) | {0, 1}
    return bool(gene) and all(e.src in live for e in gene)


def sample_cell(space: SearchSpace, num_ops: Optional[int], rng: random.Random,
                max_tries: int = 10_000) -> List[Edge]:
    """A cell of ``space`` with ``num_ops`` operations (any number when ``None``), every one on a live node.

    Uniform over such cells: uniform draws of the parsing's form, rejected until no edge is dead.
    """
    if num_ops is not None and not space.feasible(num_ops):
        raise RandomGenotypeError(f'{space.parsing} parsing with {space.steps} node(s) cannot hold {num_ops} '
                                  f'operation(s) in a cell')
    for _ in range(max_tries):
        gene = space.draw(num_ops, rng)
        if _all_live(gene):
            return gene
    raise RandomGenotypeError(f'no {space.parsing} cell with {num_ops} live operation(s) '
                              f'in {max_tries} draws')


def live_op_counts(genotype: Genotype) -> List[int]:
    """Operations each cell computes (its live edges; 1 for a cell repaired into a skip connection)."""
    return [len(genotype.live_gene(i, warn=False)) for i in range(genotype.num_cells)]


def space_of(reference: Genotype, parsing: Optional[str] = None,
             op_names: Optional[Sequence[str]] = None, steps: Optional[int] = None) -> SearchSpace:
    """The cell space a reference genotype was searched in (its ``meta`` first, else what it contains)."""
    meta = reference.meta
    parsing = parsing or meta.get('parsing') or 'sparse'
    ops = op_names or meta.get('op_names') or OP_SPACES.get(reference.op_space)
    if not ops:
        raise RandomGenotypeError(f'{reference.name or "reference genotype"}: custom operations; '
                                  f'pass op_names')
    steps = steps or meta.get('steps') or max(e.to for g in reference.genes for e in g) - 1
    return SearchSpace(ops, int(steps), parsing)


def _cell_op_params(genotype: Genotype, width: int) -> int:
    from ddarts_zoo.stats import genotype_stats
    return genotype_stats(genotype, width).total_params


def sample_genotype(reference: Genotype, seed: int, index: int = 0, *, match: str = 'ops', band: float = 0.2,
                    width: int = 16, space: Optional[SearchSpace] = None, max_tries: int = 2_000) -> Genotype:
    """Random genotype ``index`` of ``seed``, with ``reference``'s cells, reductions and cell space.

    ``match``: ``'ops'`` keeps each cell's number of live operations; ``'params'`` also keeps the cell
    operations' parameters at ``width`` within ``band`` of the reference's; ``'none'`` draws every cell
    uniformly from the whole space.
    """
    if match not in MATCH_MODES:
        raise RandomGenotypeError(f'match {match!r}: choose one of {", ".join(MATCH_MODES)}')
    space = space or space_of(reference)
    rng = random.Random(f'ddarts-zoo random genotype {seed}:{index}')
    counts = live_op_counts(reference) if match != 'none' else [None] * reference.num_cells
    target = _cell_op_params(reference, width) if match == 'params' else 0
    meta: Dict[str, object] = dict(source='search/random_genotypes.py', parsing=space.parsing,
                                   steps=space.steps, op_names=list(space.op_names), seed=seed,
                                   index=index, match=match, reference=reference.name,
                                   reference_ops=sum(live_op_counts(reference)))
    best = None
    for _ in range(max_tries if match == 'params' else 1):
        genes = [sample_cell(space, k, rng) for k in counts]
        geno = Genotype(genes, reference.reductions, reference.concat, f'random-s{seed}-{index}', meta)
        if match != 'params':
            return geno
        params = _cell_op_params(geno, width)
        if abs(params - target) <= band * target:
            return geno.renamed(geno.name, band=band, width=width, cell_op_params=params,
                                reference_params=target)
        best = params if best is None or abs(params - target) < abs(best - target) else best
    raise RandomGenotypeError(f'no random genotype within {band:.0%} of the {target} cell-op parameters of '
                              f'{reference.name or "the reference"} (width {width}) in {max_tries} draws; '
                              f'the closest had {best}: widen the band')


def sample_genotypes(reference: Genotype, n: int, seed: int = 0, **kwargs) -> List[Genotype]:
    """``n`` random genotypes matched to ``reference`` (see :func:`sample_genotype`), draws ``0..n-1``."""
    space = kwargs.pop('space', None) or space_of(reference)
    return [sample_genotype(reference, seed, i, space=space, **kwargs) for i in range(n)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog='python search/random_genotypes.py',
                                description=__doc__.split('\n\n')[0])
    p.add_argument('reference', help='searched genotype (JSON / authors\' text file or shipped name)')
    p.add_argument('--n', type=int, default=10, help='how many (10)')
    p.add_argument('--seed', type=int, default=0, help='seed (0)')
    p.add_argument('--match', choices=MATCH_MODES, default='ops',
                   help='what to match (ops: the live op count of every cell)')
    p.add_argument('--band', type=float, default=0.2,
                   help='with --match params: allowed relative difference (0.2)')
    p.add_argument('--width', type=int, default=16,
                   help='with --match params: network width C of the count (16)')
    p.add_argument('--parse', choices=PARSINGS, default=None, help="the cell form (default: the reference's)")
    p.add_argument('--out', type=Path, default=Path('runs/random'), help='output folder (runs/random)')
    args = p.parse_args(argv)
    from ddarts_zoo.genotypes import load_genotype
    ref = load_genotype(args.reference)
    space = space_of(ref, args.parse)
    for g in sample_genotypes(ref, args.n, args.seed, match=args.match, band=args.band, width=args.width,
                              space=space):
        path = g.save(args.out / f'{g.name}.json')
        print(f'{path}: {sum(live_op_counts(g))} ops, per cell {live_op_counts(g)}')
    return 0


if __name__ == '__main__':
    from ddarts_zoo.errors import run_cli
    sys.exit(run_cli(main))
