"""Genotypes: the data that describes a D-DARTS network, cell by cell.

A genotype holds one *gene* per cell and the indices of the reduction cells.  A gene is a list of edges
``(op, to, src)``: node 0 is the output of cell k-2, node 1 the output of cell k-1, nodes 2, 3, ... are
intermediate nodes.  Several operations may share one ``(to, src)`` pair.

* :func:`parse_official` reads the authors' text files (``Genotype_nested(...)`` / ``Genotype_opt(...)``)
  with an AST walk, never ``eval``.
* :meth:`Genotype.to_json` / :meth:`Genotype.from_json` are the project's own format (versioned).
* :meth:`Genotype.expand` is the paper's Algorithm 1.
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
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from .edges import Edge, Gene, edge_index, edge_pairs, live_nodes, num_edges
from .ops import OPS, op_space_of
from .utils.io import atomic_write

__all__ = [
    'Edge', 'Gene', 'Genotype', 'GenotypeError', 'DeadNodeWarning', 'parse_official', 'live_nodes',
    'num_edges', 'edge_index', 'edge_pairs', 'FORMAT_NAME', 'FORMAT_VERSION', 'MAX_NODE_INDEX',
]

FORMAT_NAME = 'ddarts-zoo/genotype'
FORMAT_VERSION = 1
MAX_NODE_INDEX = 64
"""Largest node index accepted (a cell with 62 intermediate nodes is already far beyond any search)."""
EMPTY_CELL_POLICIES = ('error', 'skip_connect')
"""What a cell whose every intermediate node is dead becomes (see :class:`Genotype`'s ``empty_cell``)."""


_EDGE_RE = re.compile(r'\[\s+("[^"]+"),\s+(\d+),\s+(\d+)\s+\]')
_INT_LIST_RE = re.compile(r'\[\s*((?:-?\d+,?\s*)+)\]')


class GenotypeError(ValueError):
    """A genotype is malformed; the message names the cell and edge at fault."""


class DeadNodeWarning(UserWarning):
    """A node had no live input and was dropped together with the edges leaving it."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _coerce_edge(raw: Any, where: str) -> Edge:
    if isinstance(raw, Mapping):
        raw = (raw.get('op'), raw.get('to'), raw.get('src', raw.get('from')))
    if not isinstance(raw, (tuple, list)) or len(raw) != 3:
        raise GenotypeError(f'{where}: an edge must be (op, to, src), got {raw!r}')
    op, to, src = raw
    if not isinstance(op, str):
        raise GenotypeError(f'{where}: operation name must be a string, got {op!r}')
    if not _is_int(to) or not _is_int(src):
        raise GenotypeError(f'{where} {tuple(raw)!r}: node indices must be integers')
    return Edge(op, to, src)


@dataclass(frozen=True)
class Genotype:
    """An immutable, validated genotype.

    Args:
        genes: one sequence of edges per cell.
        reductions: indices of the reduction cells.
        concat: the authors' ``concat`` range, kept for compatibility (networks concatenate the
            cell's live intermediate nodes instead, as the authors' networks do).
        name: optional short name (e.g. ``'dd1'``); like ``meta`` it does not take part in ``==``.
        meta: free-form JSON-serialisable provenance (source file, dataset, parsing ...).
        empty_cell: what a cell whose every node is dead becomes. ``'error'`` (default) rejects such a
            genotype; ``'skip_connect'`` is an explicit, recorded repair that turns the cell into a single
            ``skip_connect`` from the previous cell (strided in a reduction cell), with a warning. The
            shipped ``do2_xception_edge`` needs it: in the authors' file its cell 12 has no live node
            (node 3's only input is node 2, which has no input).
    """

    genes: Tuple[Gene, ...]
    reductions: Tuple[int, ...]
    concat: Tuple[int, ...] = (2, 3, 4, 5)
    name: Optional[str] = field(default=None, compare=False)
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)
    empty_cell: str = 'error'

    def __post_init__(self) -> None:
        if isinstance(self.genes, (str, bytes)) or not isinstance(self.genes, Iterable):
            raise GenotypeError(f'genes must be a list of cells, got {type(self.genes).__name__}')
        genes = []
        for ci, gene in enumerate(self.genes):
            if isinstance(gene, (str, bytes, Mapping)) or not isinstance(gene, Iterable):
                raise GenotypeError(f'cell {ci}: a gene must be a list of edges, got {gene!r}')
            genes.append(tuple(_coerce_edge(e, f'cell {ci}, edge {ei}') for ei, e in enumerate(gene)))
        if isinstance(self.reductions, (str, bytes)) or not isinstance(self.reductions, Iterable):
            raise GenotypeError(f'reductions must be a list of cell indices, got {self.reductions!r}')
        reductions = tuple(self.reductions)
        concat = tuple(self.concat)
        object.__setattr__(self, 'genes', tuple(genes))
        object.__setattr__(self, 'reductions', reductions)
        object.__setattr__(self, 'concat', concat)
        object.__setattr__(self, 'meta', dict(self.meta or {}))
        self._validate()

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        if not self.genes:
            raise GenotypeError('a genotype needs at least one cell')
        if self.empty_cell not in EMPTY_CELL_POLICIES:
            raise GenotypeError(f'empty_cell must be one of {EMPTY_CELL_POLICIES}, got {self.empty_cell!r}')
        n = len(self.genes)
        for r in self.reductions:
            if not _is_int(r):
                raise GenotypeError(f'reduction index {r!r} is not an integer')
            if not 0 <= r < n:
                raise GenotypeError(f'reduction index {r} is outside the {n} cells (0..{n - 1})')
        if len(set(self.reductions)) != len(self.reductions):
            raise GenotypeError(f'reduction indices repeat: {list(self.reductions)}')
        if not all(_is_int(c) for c in self.concat):
            raise GenotypeError(f'concat must hold integers, got {list(self.concat)}')
        for ci, gene in enumerate(self.genes):
            if not gene:
                raise GenotypeError(f'cell {ci}: empty gene (a cell needs at least one edge)')
            for ei, e in enumerate(gene):
                where = f'cell {ci}, edge {ei} {e}'
                if e.op not in OPS:
                    raise GenotypeError(f'{where}: unknown operation {e.op!r}')
                if e.src < 0 or e.to < 0:
                    raise GenotypeError(f'{where}: node indices must be >= 0')
                if e.to < 2:
                    raise GenotypeError(f'{where}: target {e.to} is a cell input (targets start at 2)')
                if e.to > MAX_NODE_INDEX or e.src > MAX_NODE_INDEX:
                    raise GenotypeError(f'{where}: node index above the limit {MAX_NODE_INDEX}')
                if e.src >= e.to:
                    raise GenotypeError(f'{where}: source {e.src} >= target {e.to} (edges must go forward)')
            if not live_nodes(gene) and self.empty_cell == 'error':
                raise GenotypeError(f'cell {ci}: no intermediate node has a live input (every node is dead); '
                                    f"pass empty_cell='skip_connect' to replace such a cell by a skip "
                                    f'connection explicitly')

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
                              f"replaced by a skip_connect from the previous cell (empty_cell='skip_connect')",
                              DeadNodeWarning, stacklevel=2)
            return (Edge('skip_connect', 2, 1),)
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

        Reduction cells move to ``layers // 3`` and ``2 * layers // 3`` and take the searched reduction
        genes; each interval between them repeats, in order, the normal genes of the matching interval
        of the searched network.  An interval with no searched normal gene borrows the nearest
        interval's genes.  Only defined for genotypes with exactly two reduction cells.
        """
        if not _is_int(layers) or layers < 3:
            raise GenotypeError(f'expand(layers={layers!r}): need an integer >= 3')
        if len(self.reductions) != 2:
            raise GenotypeError(
                f'expand(): Algorithm 1 is defined for genotypes with exactly 2 reduction cells; '
                f'{self.name or "this genotype"} has {len(self.reductions)} ({list(self.reductions)})')
        if layers < self.num_cells:
            raise GenotypeError(f'expand(layers={layers}): cannot shrink a {self.num_cells}-cell genotype')
        if layers == self.num_cells:
            return self
        if self.num_cells == 2:
            raise GenotypeError('expand(): the genotype has no normal cell whose gene could be repeated')
        r1, r2 = sorted(self.reductions)
        src_intervals = [list(range(0, r1)), list(range(r1 + 1, r2)), list(range(r2 + 1, self.num_cells))]
        new_r1, new_r2 = layers // 3, 2 * layers // 3
        dst_intervals = [range(0, new_r1), range(new_r1 + 1, new_r2), range(new_r2 + 1, layers)]
        genes: List[Gene] = [()] * layers
        genes[new_r1], genes[new_r2] = self.genes[r1], self.genes[r2]
        for k, (src, dst) in enumerate(zip(src_intervals, dst_intervals)):
            if not src:  # borrow from the nearest interval that has normal cells
                order = sorted(range(3), key=lambda j: (abs(j - k), j))
                src = next(src_intervals[j] for j in order if src_intervals[j])
            for pos, cell in enumerate(dst):
                genes[cell] = self.genes[src[pos % len(src)]]
        meta = dict(self.meta, expanded_from=self.num_cells)
        name = f'{self.name}_l{layers}' if self.name else None
        return Genotype(tuple(genes), (new_r1, new_r2), self.concat, name, meta, self.empty_cell)

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
        if not isinstance(data, Mapping):
            raise GenotypeError(f'a genotype document must be a JSON object, got {type(data).__name__}')
        if data.get('format', FORMAT_NAME) != FORMAT_NAME:
            raise GenotypeError(f'unknown genotype format {data.get("format")!r} (expected {FORMAT_NAME!r})')
        version = data.get('version', FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise GenotypeError(f'genotype format version {version!r} is not supported '
                                f'(this ddarts-zoo reads version {FORMAT_VERSION})')
        for key in ('genes', 'reductions'):
            if key not in data:
                raise GenotypeError(f'genotype document lacks the field {key!r}')
        genes = data['genes']
        seq = data.get('seq')
        if seq is not None:
            if not isinstance(seq, list) or not all(_is_int(s) for s in seq):
                raise GenotypeError(f'field "seq" must be a list of gene indices, got {seq!r}')
            bad = [s for s in seq if not 0 <= s < len(genes)]
            if bad:
                raise GenotypeError(f'field "seq" refers to gene {bad[0]}, but only {len(genes)} genes exist')
            genes = [genes[s] for s in seq]
        return cls(genes, data['reductions'], data.get('concat', (2, 3, 4, 5)), data.get('name'),
                   data.get('meta', {}), data.get('empty_cell', 'error'))

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
            raise GenotypeError(f'cannot read genotype file {str(path)!r}: {err.strerror}') from None
        stripped = text.lstrip()
        try:
            if stripped.startswith('{'):
                geno = cls.from_json(text)
            else:
                geno = parse_official(text)
        except GenotypeError as err:
            raise GenotypeError(f'{path}: {err}') from None
        if geno.name is None:
            geno = geno.renamed(path.stem)
        return geno

    def renamed(self, name: Optional[str], **meta: Any) -> 'Genotype':
        return Genotype(self.genes, self.reductions, self.concat, name, dict(self.meta, **meta), self.empty_cell)

    def to_official(self) -> str:
        """The authors' ``Genotype_nested(...)`` text form (for their tools)."""
        genes = ', '.join('[' + ', '.join(f'({e.op!r}, {e.to}, {e.src})' for e in g) + ']' for g in self.genes)
        lo, hi = (min(self.concat), max(self.concat) + 1) if self.concat else (2, 2)
        return (f'Genotype_nested(genes=[{genes}], reductions={list(self.reductions)}, '
                f'concat=range({lo}, {hi}))')

    def __repr__(self) -> str:
        return (f'Genotype(name={self.name!r}, cells={self.num_cells}, reductions={list(self.reductions)}, '
                f'op_space={self.op_space!r})')


# ---------------------------------------------------------------------- authors' text format
_OFFICIAL_CALLS = {'Genotype_nested', 'Genotype_opt', 'Genotype_multi', 'Genotype'}


def _literal(node: ast.AST, where: str) -> Any:
    """Evaluate the few literal forms the authors' files use: lists, tuples, ints, strings, range(a, b)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, str)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        value = node.operand.value
        if _is_int(value):
            return -value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(elt, f'{where}[{i}]') for i, elt in enumerate(node.elts)]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'range'
            and not node.keywords and 1 <= len(node.args) <= 3):
        args = [_literal(a, where) for a in node.args]
        if all(_is_int(a) for a in args) and all(abs(a) <= 10_000 for a in args):
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
    except SyntaxError as err:
        raise GenotypeError(f'not a genotype expression: {err.msg} at line {err.lineno}, column {err.offset}') \
            from None
    call = tree.body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in _OFFICIAL_CALLS):
        raise GenotypeError(f'expected one of {sorted(_OFFICIAL_CALLS)}(...) at the top level')
    if call.args:
        raise GenotypeError(f'{call.func.id}: positional arguments are not supported, use keywords')
    fields = {kw.arg: _literal(kw.value, f'{call.func.id}.{kw.arg}') for kw in call.keywords}
    if 'genes' not in fields:
        raise GenotypeError(f'{call.func.id}: missing field "genes"')
    genes = fields['genes']
    if 'seq' in fields:
        seq = fields['seq']
        if not isinstance(seq, list) or not all(_is_int(s) and 0 <= s < len(genes) for s in seq):
            raise GenotypeError(f'{call.func.id}.seq: every entry must index one of the {len(genes)} genes')
        genes = [genes[s] for s in seq]
    if 'reductions' not in fields:
        raise GenotypeError(f'{call.func.id}: missing field "reductions"')
    meta = {'source_format': call.func.id}
    return Genotype(genes, fields['reductions'], fields.get('concat', (2, 3, 4, 5)), name, meta, empty_cell)

