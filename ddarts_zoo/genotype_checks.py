"""Validation of genotypes: every field is checked, and every error names the cell, the edge and the field.

A cell's intermediate nodes are numbered ``2 .. max(concat)`` (the searched cell: ``concat`` is the range of
its last ``multiplier`` nodes, so its end fixes the node count).  The rules, checked in this order:

* ``genes``: a non-empty list of cells; each cell a non-empty list of distinct edges ``(op, to, src)``
  (a list of three or an object ``{"op", "to", "src"}``); ``op`` a registered operation; ``to`` and ``src``
  integers with ``0 <= src < to``, ``2 <= to <= max(concat)``; at least one node reachable from the cell
  inputs, unless ``empty_cell='skip_connect'`` repairs the cell.
* ``reductions``: distinct cell indices; ``concat``: consecutive node indices from 2 on.  A ``concat`` that
  names no node of any cell (e.g. ``[5, 6]`` for cells with nodes 2..3) only warns
  (:class:`GenotypeWarning`): the search writes exactly that when it runs with ``multiplier < steps`` and
  no output node survives parsing (cells that are only the empty-cell repair are not counted).
* Documents (:func:`read_document`) also: ``format`` and ``version`` present and known, no unknown field,
  ``num_cells`` equal to the cells listed, ``op_space`` a known space holding every op, ``seq`` indices
  into ``genes``, ``name`` a string, ``meta`` an object.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .edges import Edge, Gene, live_nodes
from .errors import UserError
from .ops import OPS, OP_SPACES

__all__ = ['GenotypeError', 'GenotypeWarning', 'FORMAT_NAME', 'FORMAT_VERSION', 'MAX_NODE_INDEX', 'EMPTY_CELL_POLICIES',
           'REPAIR_GENE', 'is_int', 'located', 'coerce_genes', 'default_concat', 'check_genotype',
           'read_document']

FORMAT_NAME = 'ddarts-zoo/genotype'
FORMAT_VERSION = 1
MAX_NODE_INDEX = 64
"""Largest node index accepted (a cell with 62 intermediate nodes is already far beyond any search)."""
EMPTY_CELL_POLICIES = ('error', 'skip_connect')
"""What a cell whose every intermediate node is dead becomes (see :class:`~ddarts_zoo.genotype.Genotype`)."""
REPAIR_GENE: Gene = (Edge('skip_connect', 2, 1),)
"""The gene an empty cell is replaced by (here and in the search's parsing): the previous cell's output."""
DOCUMENT_FIELDS = ('format', 'version', 'name', 'op_space', 'num_cells', 'reductions', 'concat', 'genes',
                   'seq', 'empty_cell', 'meta')
EDGE_KEYS = ('op', 'to', 'src')

CellLabel = Callable[[int], str]


class GenotypeError(UserError):
    """A genotype is malformed; the message names the cell, the edge and the field at fault."""


class GenotypeWarning(UserWarning):
    """A genotype is consistent but probably not what was meant (the message names the field)."""


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def located(field: str, message: str, cell: Optional[str] = None, edge: Optional[int] = None,
            raw_edge: Any = None) -> GenotypeError:
    """``GenotypeError('cell 3, edge 1 ('op', 4, 2), field "to": <message>')`` (the parts that apply)."""
    parts = [cell] if cell else []
    if edge is not None:
        parts.append(f'edge {edge}' + (f' {raw_edge}' if raw_edge is not None else ''))
    parts.append(f'field "{field}"')
    return GenotypeError(f'{", ".join(parts)}: {message}')


def _cell(ci: int) -> str:
    return f'cell {ci}'


def _is_list(value: Any) -> bool:
    return isinstance(value, Iterable) and not isinstance(value, (str, bytes, Mapping))


def _coerce_edge(raw: Any, cell: str, ei: int) -> Edge:
    if isinstance(raw, Mapping):
        extra = sorted(set(map(str, raw)) - set(EDGE_KEYS) - {'from'})
        if extra:
            raise located(extra[0], f'unknown edge field (an edge has {list(EDGE_KEYS)})', cell, ei,
                          dict(raw))
        raw = (raw.get('op'), raw.get('to'), raw.get('src', raw.get('from')))
    if not isinstance(raw, (tuple, list)) or len(raw) != 3:
        raise located('genes', f'an edge must be (op, to, src), got {raw!r}', cell, ei)
    op, to, src = raw
    shown = tuple(raw)
    if not isinstance(op, str):
        raise located('op', f'the operation name must be a string, got {op!r}', cell, ei, shown)
    for field, value in (('to', to), ('src', src)):
        if not is_int(value):
            raise located(field, f'node indices must be integers, got {value!r}', cell, ei, shown)
    return Edge(op, to, src)


def coerce_genes(genes: Any, label: CellLabel = _cell) -> Tuple[Gene, ...]:
    """``genes`` as a tuple of tuples of :class:`Edge` (types checked, values not yet)."""
    if not _is_list(genes):
        raise located('genes', f'must be a list of cells, got {type(genes).__name__}')
    out = []
    for ci, gene in enumerate(genes):
        if not _is_list(gene):
            raise located('genes', f'a gene must be a list of edges, got {gene!r}', label(ci))
        out.append(tuple(_coerce_edge(e, label(ci), ei) for ei, e in enumerate(gene)))
    return tuple(out)


def default_concat(genes: Sequence[Gene]) -> Tuple[int, ...]:
    """``concat`` when none is given: the DARTS cell's ``2..5``, extended to the largest node of ``genes``."""
    top = max((max(e.to, e.src) for gene in genes for e in gene), default=5)
    return tuple(range(2, max(6, min(top, MAX_NODE_INDEX) + 1)))


def int_list(value: Any, field: str) -> Tuple[int, ...]:
    """``value`` as a tuple of integers, or an error naming ``field``."""
    if not _is_list(value):
        raise located(field, f'must be a list of integers, got {value!r}')
    items = tuple(value)
    bad = [v for v in items if not is_int(v)]
    if bad:
        raise located(field, f'{bad[0]!r} is not an integer (in {list(items)})')
    return items


def _check_edge(e: Edge, top: int, cell: str, ei: int) -> None:
    if e.op not in OPS:
        raise located('op', f'unknown operation {e.op!r}; registered: {", ".join(sorted(OPS))}', cell, ei, e)
    if e.src < 0:
        raise located('src', f'node indices must be >= 0, got {e.src}', cell, ei, e)
    if e.to < 2:
        raise located('to', f'target {e.to} is a cell input (targets start at 2)', cell, ei, e)
    if e.src >= e.to:
        raise located('src', f'source {e.src} >= target {e.to} (edges must go forward)', cell, ei, e)
    if e.to > top:
        raise located('to', f'node {e.to} is not a node of the cell: its nodes are 2..{top} (the end of '
                            f'field "concat")', cell, ei, e)


def _check_gene(gene: Gene, top: int, cell: str, empty_cell: str) -> None:
    if not gene:
        raise located('genes', 'empty gene (a cell needs at least one edge)', cell)
    first: Dict[Edge, int] = {}
    for ei, e in enumerate(gene):
        _check_edge(e, top, cell, ei)
        if e in first:
            raise located('genes', f'duplicate of edge {first[e]} (each (op, to, src) appears once)',
                          cell, ei, e)
        first[e] = ei
    if not live_nodes(gene) and empty_cell == 'error':
        raise located('genes', "no intermediate node has a live input (every node is dead); pass "
                               "empty_cell='skip_connect' to replace such a cell by a skip connection "
                               "explicitly", cell)


def _check_concat_form(concat: Tuple[int, ...]) -> None:
    if not concat:
        raise located('concat', 'must name at least one node')
    lo = concat[0]
    if lo < 2 or concat[-1] > MAX_NODE_INDEX or list(concat) != list(range(lo, lo + len(concat))):
        raise located('concat', f'must be consecutive node indices in 2..{MAX_NODE_INDEX}, '
                                f'got {list(concat)}')


def _check_concat_names_nodes(concat: Tuple[int, ...], genes: Sequence[Gene]) -> None:
    nodes = {e.to for gene in genes if gene != REPAIR_GENE for e in gene}
    if nodes and not nodes & set(concat):
        warnings.warn(f'field "concat": {list(concat)} names no node of any cell (the cells have nodes '
                      f'{sorted(nodes)}); networks concatenate the live nodes of each cell', GenotypeWarning,
                      stacklevel=4)


def _check_reductions(reductions: Tuple[int, ...], n: int) -> None:
    for r in reductions:
        if not 0 <= r < n:
            raise located('reductions', f'reduction index {r} is outside the {n} cells (0..{n - 1})')
    if len(set(reductions)) != len(reductions):
        raise located('reductions', f'reduction indices repeat: {list(reductions)}')


def check_genotype(genes: Tuple[Gene, ...], reductions: Tuple[int, ...], concat: Tuple[int, ...],
                   empty_cell: str, label: CellLabel = _cell) -> None:
    """Raise :class:`GenotypeError` on the first rule (module docstring) that the genotype breaks."""
    if not genes:
        raise located('genes', 'a genotype needs at least one cell')
    if empty_cell not in EMPTY_CELL_POLICIES:
        raise located('empty_cell', f'must be one of {EMPTY_CELL_POLICIES}, got {empty_cell!r}')
    _check_reductions(reductions, len(genes))
    _check_concat_form(concat)
    for ci, gene in enumerate(genes):
        _check_gene(gene, concat[-1], label(ci), empty_cell)
    _check_concat_names_nodes(concat, genes)


def _require(data: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in data:
        raise located(key, f'missing: a genotype document needs {what}')
    return data[key]


def _expand_seq(data: Mapping[str, Any]) -> Tuple[List[Any], Optional[List[int]]]:
    genes = _require(data, 'genes', 'the list of genes')
    if not _is_list(genes):
        raise located('genes', f'must be a list of genes, got {type(genes).__name__}')
    genes = list(genes)
    if data.get('seq') is None:
        return genes, None
    seq = list(int_list(data['seq'], 'seq'))
    bad = [s for s in seq if not 0 <= s < len(genes)]
    if bad:
        raise located('seq', f'refers to gene {bad[0]}, but only {len(genes)} genes exist')
    return [genes[s] for s in seq], seq


def _check_op_space(space: Any, genes: Sequence[Gene], label: CellLabel) -> None:
    known = tuple(OP_SPACES) + ('custom',)
    if space not in known:
        raise located('op_space', f'unknown op space {space!r}; known: {", ".join(known)}')
    allowed = set(OP_SPACES.get(space, OPS))
    for ci, gene in enumerate(genes):
        for ei, e in enumerate(gene):
            if e.op not in allowed:
                raise located('op', f'{e.op!r} is not in the declared op space {space!r} (field "op_space")',
                              label(ci), ei, e)


def read_document(data: Any) -> Dict[str, Any]:
    """Check a JSON genotype document; return the ``Genotype`` arguments (genes expanded through ``seq``)."""
    if not isinstance(data, Mapping):
        raise GenotypeError(f'a genotype document must be a JSON object, got {type(data).__name__}')
    unknown = sorted(str(k) for k in data if k not in DOCUMENT_FIELDS)
    if unknown:
        raise located(unknown[0], f'unknown field (a genotype document has {", ".join(DOCUMENT_FIELDS)})')
    if _require(data, 'format', f'"format": {FORMAT_NAME!r}') != FORMAT_NAME:
        raise located('format', f'unknown genotype format {data["format"]!r} (expected {FORMAT_NAME!r})')
    version = _require(data, 'version', f'"version": {FORMAT_VERSION}')
    if version != FORMAT_VERSION or not is_int(version):
        raise located('version', f'genotype format version {version!r} is not supported (this ddarts-zoo '
                                 f'reads version {FORMAT_VERSION})')
    raw_genes, seq = _expand_seq(data)
    label: CellLabel = _cell if seq is None else (lambda ci: f'cell {ci} (genes[{seq[ci]}])')
    genes = coerce_genes(raw_genes, label)
    if 'num_cells' in data and (not is_int(data['num_cells']) or data['num_cells'] != len(genes)):
        raise located('num_cells', f'{data["num_cells"]!r} does not match the {len(genes)} cells listed')
    for key in ('name', 'empty_cell'):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise located(key, f'must be a string, got {data[key]!r}')
    if data.get('meta') is not None and not isinstance(data['meta'], Mapping):
        raise located('meta', f'must be an object, got {type(data["meta"]).__name__}')
    concat = int_list(data['concat'], 'concat') if data.get('concat') is not None else default_concat(genes)
    args = dict(genes=genes, reductions=int_list(_require(data, 'reductions', 'the reduction cell indices'),
                                                 'reductions'),
                concat=concat, name=data.get('name'), meta=data.get('meta') or {},
                empty_cell=data.get('empty_cell') or 'error')
    check_genotype(genes, args['reductions'], concat, args['empty_cell'], label)
    if 'op_space' in data:
        _check_op_space(data['op_space'], genes, label)
    return args
