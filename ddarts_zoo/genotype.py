"""Genotypes: the data that describes a D-DARTS network, cell by cell.

A genotype holds one *gene* per cell and the indices of the reduction cells.  A gene is a list of edges
``(op, to, src)``: node 0 is the output of cell k-2, node 1 the output of cell k-1, nodes 2, 3, ... are
intermediate nodes.  Several operations may share one ``(to, src)`` pair.

* :func:`parse_official` reads the authors' text files (``Genotype_nested(...)`` / ``Genotype_opt(...)``)
  with an AST walk, never ``eval``.
* :meth:`Genotype.to_json` / :meth:`Genotype.from_json` are the project's own format (versioned).
* :meth:`Genotype.expand` is the paper's Algorithm 1 (any number of cells).
* Every field is validated (:mod:`ddarts_zoo.genotype_checks`): a :class:`GenotypeError` names the cell, the
  edge and the field at fault.
* :meth:`Genotype.live_gene` drops dead nodes (no live input) with a warning.
* :func:`num_edges` / :func:`edge_index` / :func:`edge_pairs` (the row layout of a cell's alpha matrix) and
  :func:`live_nodes` come from :mod:`ddarts_zoo.edges` and are part of this module's API.
"""
from __future__ import annotations

import ast
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from .edges import Edge, Gene, edge_index, edge_pairs, live_nodes, num_edges
from .errors import describe_file
from .genotype_checks import (EMPTY_CELL_POLICIES, FORMAT_NAME, FORMAT_VERSION, MAX_NODE_INDEX, REPAIR_GENE,
                              GenotypeError, GenotypeWarning, check_genotype, coerce_genes, default_concat, int_list, is_int,
                              located, read_document)
from .ops import op_space_of
from .utils.io import atomic_write

__all__ = [
    'Edge', 'Gene', 'Genotype', 'GenotypeError', 'GenotypeWarning', 'DeadNodeWarning', 'parse_official', 'live_nodes',
    'num_edges', 'edge_index', 'edge_pairs', 'reduction_positions', 'FORMAT_NAME', 'FORMAT_VERSION',
    'MAX_NODE_INDEX', 'EMPTY_CELL_POLICIES',
]

_EDGE_RE = re.compile(r'\[\s+("[^"]+"),\s+(\d+),\s+(\d+)\s+\]')
_INT_LIST_RE = re.compile(r'\[\s*((?:-?\d+,?\s*)+)\]')


class DeadNodeWarning(UserWarning):
    """A node had no live input and was dropped together with the edges leaving it."""


def reduction_positions(layers: int) -> Tuple[int, ...]:
    """Reduction cells of a ``layers``-cell network: ``layers // 3`` and ``2 * layers // 3`` (DARTS's
    placement, deduplicated: cell 0 alone for one cell, cells 0 and 1 for two), as the search places them."""
    return tuple(sorted({layers // 3, 2 * layers // 3}))


@dataclass(frozen=True)
class Genotype:
    """An immutable, validated genotype (the rules: :mod:`ddarts_zoo.genotype_checks`).

    Args:
        genes: one sequence of edges per cell.
        reductions: indices of the reduction cells.
        concat: the authors' ``concat`` range: the searched cell's output nodes; its end fixes the cell's
            node indices ``2 .. max(concat)``.  Default: ``2..5`` (DARTS), extended to the largest node used.
            Networks concatenate the cell's live intermediate nodes instead, as the authors' networks do.
        name: optional short name (e.g. ``'dd1'``); like ``meta`` it does not take part in ``==``.
        meta: free-form JSON-serialisable provenance (source file, dataset, parsing ...).
        empty_cell: what a cell whose every node is dead becomes. ``'error'`` (default) rejects such a
            genotype; ``'skip_connect'`` is an explicit, recorded repair that turns the cell into a single
            ``skip_connect`` from the previous cell (strided in a reduction cell), with a warning. The
            shipped ``do2_xception_edge`` needs it: in the authors' file its cell 12 has no live node
            (node 3's only input is node 2, which has no input).

    Every field is checked; a :class:`GenotypeError` names the cell, the edge and the field at fault.
    """

    genes: Tuple[Gene, ...]
    reductions: Tuple[int, ...]
    concat: Optional[Tuple[int, ...]] = None
    name: Optional[str] = field(default=None, compare=False)
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)
    empty_cell: str = 'error'

    def __post_init__(self) -> None:
        genes = coerce_genes(self.genes)
        concat = default_concat(genes) if self.concat is None else int_list(self.concat, 'concat')
        if self.name is not None and not isinstance(self.name, str):
            raise located('name', f'must be a string, got {self.name!r}')
        if not isinstance(self.meta or {}, Mapping):
            raise located('meta', f'must be a mapping, got {type(self.meta).__name__}')
        object.__setattr__(self, 'genes', genes)
        object.__setattr__(self, 'reductions', int_list(self.reductions, 'reductions'))
        object.__setattr__(self, 'concat', concat)
        object.__setattr__(self, 'meta', dict(self.meta or {}))
        check_genotype(self.genes, self.reductions, self.concat, self.empty_cell)

    # ------------------------------------------------------------------ structure
    @property
    def num_cells(self) -> int:
        return len(self.genes)

    @property
    def op_space(self) -> str:
        """'darts' (7 ops), 'dartopti' (12 ops) or 'custom' (ops added with ``register_op``)."""
        return op_space_of(e.op for gene in self.genes for e in gene)

    def is_reduction(self, cell: int) -> bool:
        return cell in self.reductions

    def live_nodes(self, cell: int) -> Tuple[int, ...]:
        """Intermediate nodes of ``cell`` computed by the network, in increasing order."""
        return live_nodes(self.genes[cell]) or (2,)  # (2,): an empty cell's skip_connect node

    def live_gene(self, cell: int, warn: bool = True) -> Gene:
        """The edges of ``cell`` that are computed, sorted by target (stable: gene order within a node).

        Nodes without a live input are dropped with the edges leaving them, with a
        :class:`DeadNodeWarning` naming cell and node.
        """
        gene = self.genes[cell]
        live = set(live_nodes(gene)) | {0, 1}
        dead = sorted({e.to for e in gene} - live)
        label = self.name or 'genotype'
        if len(live) == 2:  # every node dead: only reachable with empty_cell='skip_connect'
            if warn:
                warnings.warn(f'{label}: cell {cell}: every node ({dead}) has no live input; the cell is '
                              f'replaced by a skip_connect from the previous cell '
                              f"(empty_cell='skip_connect')",
                              DeadNodeWarning, stacklevel=2)
            return REPAIR_GENE
        if dead and warn:
            warnings.warn(
                f'{label}: cell {cell}: node(s) {dead} have no live input and are '
                f'dropped with the edges leaving them', DeadNodeWarning, stacklevel=2)
        kept = [e for e in gene if e.to in live and e.src in live]
        return tuple(sorted(kept, key=lambda e: e.to))

    def multiplier(self, cell: int) -> int:
        """Output channels of ``cell`` in units of its width ``C`` (number of live intermediate nodes)."""
        return len(self.live_nodes(cell))

    def cell_groups(self) -> Tuple[int, ...]:
        """Index of the first identical gene for each cell (identical cells share alphas in DARTOpti)."""
        first: Dict[Gene, int] = {}
        return tuple(first.setdefault(g, i) for i, g in enumerate(self.genes))

    # ------------------------------------------------------------------ Algorithm 1
    def expand(self, layers: int) -> 'Genotype':
        """Derive a ``layers``-cell genotype (paper, Algorithm 1).

        Reduction cells move to :func:`reduction_positions` (``layers // 3`` and ``2 * layers // 3``) and take
        the searched reduction genes in order; each interval between them repeats, in order, the normal genes
        of the matching interval of the searched network (fewer cells keep the first ones).  An interval with
        no searched normal gene borrows the nearest interval's genes.  One or two cells are reduction cells
        only (as the search places them): the first reduction gene, or both.  Defined for genotypes with
        exactly two reduction cells (and any ``layers`` for the genotype's own cell count).
        """
        if not is_int(layers) or layers < 1:
            raise located('layers', f'expand(layers={layers!r}): need an integer >= 1')
        if layers == self.num_cells:
            return self
        label = self.name or 'this genotype'
        if len(self.reductions) != 2:
            raise located('reductions', f'expand(layers={layers}): Algorithm 1 is defined for genotypes with '
                                        f'exactly 2 reduction cells; {label} has {len(self.reductions)} '
                                        f'({list(self.reductions)})')
        r1, r2 = sorted(self.reductions)
        src_intervals = [list(range(0, r1)), list(range(r1 + 1, r2)), list(range(r2 + 1, self.num_cells))]
        new_reductions = reduction_positions(layers)
        genes: List[Gene] = [()] * layers
        for pos, searched in zip(new_reductions, (r1, r2)):
            genes[pos] = self.genes[searched]
        if len(new_reductions) == 2:
            new_r1, new_r2 = new_reductions
            dst_intervals = [range(0, new_r1), range(new_r1 + 1, new_r2), range(new_r2 + 1, layers)]
            if any(dst_intervals) and not any(src_intervals):
                raise located('layers', f'expand(layers={layers}): {label} has no normal cell whose gene '
                                        f'could be repeated')
            for k, (src, dst) in enumerate(zip(src_intervals, dst_intervals)):
                if not src and dst:  # borrow from the nearest interval that has normal cells
                    order = sorted(range(3), key=lambda j: (abs(j - k), j))
                    src = next(src_intervals[j] for j in order if src_intervals[j])
                for pos, cell in enumerate(dst):
                    genes[cell] = self.genes[src[pos % len(src)]]
        meta = dict(self.meta, expanded_from=self.num_cells)
        name = f'{self.name}_l{layers}' if self.name else None
        return Genotype(tuple(genes), new_reductions, self.concat, name, meta, self.empty_cell)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict; identical genes are stored once (``genes``) and referenced by ``seq``."""
        unique: List[Gene] = []
        seq = []
        for gene in self.genes:
            if gene not in unique:
                unique.append(gene)
            seq.append(unique.index(gene))
        out: Dict[str, Any] = {'format': FORMAT_NAME, 'version': FORMAT_VERSION}
        if self.name:
            out['name'] = self.name
        out.update({
            'op_space': self.op_space,
            'num_cells': self.num_cells,
            'reductions': list(self.reductions),
            'concat': list(self.concat),
            'genes': [[[e.op, e.to, e.src] for e in g] for g in unique],
            'seq': seq,
        })
        if self.empty_cell != 'error':
            out['empty_cell'] = self.empty_cell
        if self.meta:
            out['meta'] = dict(self.meta)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> 'Genotype':
        """The inverse of :meth:`to_dict`; every field is checked (see
        :func:`~ddarts_zoo.genotype_checks.read_document`)."""
        return cls(**read_document(data))

    def to_json(self) -> str:
        """Readable JSON: one edge per line, short integer lists inline."""
        text = json.dumps(self.to_dict(), indent=1)
        text = _EDGE_RE.sub(r'[\1, \2, \3]', text)
        return _INT_LIST_RE.sub(lambda m: '[' + ', '.join(m.group(1).split()).replace(',,', ',') + ']', text)

    @classmethod
    def from_json(cls, text: str) -> 'Genotype':
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise GenotypeError(f'not a JSON genotype: {err}') from None
        return cls.from_dict(data)

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write the JSON form atomically."""
        return atomic_write(path, self.to_json() + '\n')

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> 'Genotype':
        """Read a JSON genotype, or an authors' text file (``Genotype_nested`` / ``Genotype_opt``)."""
        path = Path(path)
        try:
            text = path.read_text(encoding='utf-8')
        except OSError as err:
            raise GenotypeError(f'cannot read genotype file {describe_file(path)}: {err.strerror}') from None
        except UnicodeDecodeError:
            raise GenotypeError(f'{describe_file(path)} is not a genotype file (expected JSON or the '
                                f"authors' Genotype_nested(...) text, found binary data)") from None
        stripped = text.lstrip()
        try:
            if stripped.startswith('{'):
                geno = cls.from_json(text)
            else:
                geno = parse_official(text)
        except GenotypeError as err:
            raise GenotypeError(f'{describe_file(path)}: {err}') from None
        if geno.name is None:
            geno = geno.renamed(path.stem)
        return geno

    def renamed(self, name: Optional[str], **meta: Any) -> 'Genotype':
        return Genotype(self.genes, self.reductions, self.concat, name, dict(self.meta, **meta),
                        self.empty_cell)

    def to_official(self) -> str:
        """The authors' ``Genotype_nested(...)`` text form (for their tools)."""
        genes = ', '.join('[' + ', '.join(f'({e.op!r}, {e.to}, {e.src})' for e in g) + ']'
                          for g in self.genes)
        lo, hi = (min(self.concat), max(self.concat) + 1) if self.concat else (2, 2)
        return (f'Genotype_nested(genes=[{genes}], reductions={list(self.reductions)}, '
                f'concat=range({lo}, {hi}))')

    def __repr__(self) -> str:
        return (f'Genotype(name={self.name!r}, cells={self.num_cells}, reductions={list(self.reductions)}, '
                f'op_space={self.op_space!r})')


# ---------------------------------------------------------------------- authors' text format
_OFFICIAL_CALLS = {'Genotype_nested', 'Genotype_opt', 'Genotype_multi', 'Genotype'}
_OFFICIAL_FIELDS = ('genes', 'seq', 'reductions', 'concat')


def _literal(node: ast.AST, where: str) -> Any:
    """Evaluate the few literal forms the authors' files use: lists, tuples, ints, strings, range(a, b)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, str)) \
            and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) \
            and isinstance(node.operand, ast.Constant):
        value = node.operand.value
        if is_int(value):
            return -value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(elt, f'{where}[{i}]') for i, elt in enumerate(node.elts)]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'range'
            and not node.keywords and 1 <= len(node.args) <= 3):
        args = [_literal(a, where) for a in node.args]
        if all(is_int(a) for a in args) and all(abs(a) <= 10_000 for a in args):
            return list(range(*args))
    text = ast.unparse(node) if hasattr(ast, 'unparse') else type(node).__name__
    raise GenotypeError(f'{where}: unsupported expression {text[:80]!r} (only lists, tuples, integers, '
                        f'strings and range() are read)')


def parse_official(text: str, name: Optional[str] = None, empty_cell: str = 'error') -> Genotype:
    """Parse one of the authors' genotype reprs without evaluating it.

    Accepts ``Genotype_nested(genes=[[...], ...], reductions=[...], concat=range(a, b))`` and
    ``Genotype_opt(genes=[unique genes], seq=[gene index per cell], concat=..., reductions=...)``.
    """
    if not isinstance(text, str):
        raise GenotypeError(f'parse_official expects text, got {type(text).__name__}')
    try:
        tree = ast.parse(text.strip(), mode='eval')
    except ValueError:  # null bytes (SyntaxError on newer Pythons)
        raise GenotypeError('not a genotype expression: the text holds null bytes') from None
    except SyntaxError as err:
        raise GenotypeError(f'not a genotype expression: {err.msg} at line {err.lineno}, '
                            f'column {err.offset}') from None
    call = tree.body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
            and call.func.id in _OFFICIAL_CALLS):
        raise GenotypeError(f'expected one of {sorted(_OFFICIAL_CALLS)}(...) at the top level')
    if call.args:
        raise GenotypeError(f'{call.func.id}: positional arguments are not supported, use keywords')
    fields = {kw.arg: _literal(kw.value, f'{call.func.id}.{kw.arg}') for kw in call.keywords}
    unknown = sorted(str(k) for k in fields if k not in _OFFICIAL_FIELDS)
    if unknown:
        raise GenotypeError(f'{call.func.id}: unknown field "{unknown[0]}" '
                            f'(known: {", ".join(_OFFICIAL_FIELDS)})')
    if 'genes' not in fields:
        raise GenotypeError(f'{call.func.id}: missing field "genes"')
    genes = fields['genes']
    if 'seq' in fields:
        seq = fields['seq']
        if not isinstance(seq, list) or not all(is_int(s) and 0 <= s < len(genes) for s in seq):
            raise GenotypeError(f'{call.func.id}.seq: every entry must index one of the {len(genes)} genes')
        genes = [genes[s] for s in seq]
    if 'reductions' not in fields:
        raise GenotypeError(f'{call.func.id}: missing field "reductions"')
    meta = {'source_format': call.func.id}
    return Genotype(genes, fields['reductions'], fields.get('concat'), name, meta, empty_cell)

