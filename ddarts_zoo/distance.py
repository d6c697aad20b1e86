"""Architecture distance of D-DARTS (paper Sec. 4.5, Algorithm 2, Eq. 11-13).

A cell is encoded as a matrix ``[edges x 12]`` over the DARTOpti ops (``10.0`` where the gene has
``(op, to, src)``, row :func:`~ddarts_zoo.genotype.edge_index`); edge distance = Hamming distance weighted by
the paper's op scores (Table 1); cell distance = symmetric Hausdorff distance between the sets of rows; the
architecture distance = mean cell distance over cells at the same position.  Where the paper is silent
(different cell counts, nodes beyond ``concat``, rows compared as a set) the rule is stated on the function.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib import resources
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .genotype import Edge, Genotype, GenotypeError, edge_index, num_edges
from .genotypes import load_genotype
from .ops import DARTOPTI_SPACE

__all__ = [
    'ENCODING_VALUE', 'GenotypeLike', 'WeightsLike', 'op_weights', 'genotype_steps',
    'encode_cell', 'encode_genotype', 'edge_distance', 'cell_distance', 'cell_distances',
    'architecture_distance', 'distance_matrix',
]

ENCODING_VALUE = 10.0
"""Value marking a present op in the encoding (the DARTOpti initial alpha)."""

_COLUMN = {op: k for k, op in enumerate(DARTOPTI_SPACE)}

GenotypeLike = Union[Genotype, str, 'os.PathLike[str]', Mapping[str, Any]]
WeightsLike = Union[None, Mapping[str, float], Sequence[float], np.ndarray]
CellLike = Union[np.ndarray, Sequence[Any]]


# ---------------------------------------------------------------------------- weights & layout
@lru_cache(maxsize=None)
def _paper_weights() -> Tuple[float, ...]:
    text = resources.files('ddarts_zoo').joinpath('data/op_scores.json').read_text(encoding='utf-8')
    scores = json.loads(text)
    missing = [op for op in DARTOPTI_SPACE if op not in scores]
    if missing:
        raise ValueError(f'data/op_scores.json lacks scores for {missing}')
    return tuple(float(scores[op]) for op in DARTOPTI_SPACE)


def op_weights(weights: WeightsLike = None) -> np.ndarray:
    """The 12 Hamming weights in :data:`DARTOPTI_SPACE` order (default: the paper's op scores).

    ``weights`` may be a mapping op -> weight (ops left out weigh 0) or a sequence of 12 numbers.
    Weights must be finite, non-negative and not all zero.
    """
    if weights is None:
        return np.asarray(_paper_weights(), dtype=np.float64)
    if isinstance(weights, Mapping):
        unknown = sorted(set(weights) - set(DARTOPTI_SPACE))
        if unknown:
            raise ValueError(f'weights: unknown operation(s) {unknown}; the metric covers '
                             f'{list(DARTOPTI_SPACE)}')
        w = np.array([float(weights.get(op, 0.0)) for op in DARTOPTI_SPACE])
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (len(DARTOPTI_SPACE),):
            raise ValueError(f'weights must hold {len(DARTOPTI_SPACE)} values (one per DARTOpti op), '
                             f'got shape {w.shape}')
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f'weights must be finite, >= 0 and not all zero, got {w.tolist()}')
    return w


def genotype_steps(genotype: Genotype) -> int:
    """Intermediate nodes per cell in the encoding: ``max(concat end - 2, largest target - 1)``.

    ``concat end - 2`` is the authors' rule.  A :class:`Genotype` keeps every node inside its ``concat`` range
    (a genotype built without ``concat`` gets one reaching its largest node), so the second term only
    guards the encoding.
    """
    from_concat = max(genotype.concat) + 1 - 2 if genotype.concat else 0
    from_nodes = max(e.to for gene in genotype.genes for e in gene) - 1
    return max(from_concat, from_nodes, 1)


# ---------------------------------------------------------------------------- encoding
def _encode_edges(edges: Sequence[Edge], steps: int, where: str) -> np.ndarray:
    rows = np.zeros((num_edges(steps), len(DARTOPTI_SPACE)), dtype=np.float64)
    if not edges:
        return rows
    cols = []
    for e in edges:
        col = _COLUMN.get(e.op)
        if col is None:
            raise GenotypeError(f'{where}: operation {e.op!r} of edge {e} is outside the 12 DARTOpti ops the '
                                f'distance is defined on')
        cols.append(col)
    top = max(e.to for e in edges)
    if top - 1 > steps:
        raise GenotypeError(f'{where}: node {top} does not fit a {steps}-step encoding')
    rows[[edge_index(e.to, e.src) for e in edges], cols] = ENCODING_VALUE
    return rows


def _as_edges(gene: Sequence[Any], where: str) -> Tuple[Edge, ...]:
    if isinstance(gene, (str, bytes)):
        raise GenotypeError(f'{where}: expected a gene (list of (op, to, src) edges), got {gene!r}')
    # Validate through Genotype so the messages match the rest of the package.
    try:
        return Genotype((gene,), (), empty_cell='skip_connect').genes[0]
    except GenotypeError as err:
        raise GenotypeError(f'{where}: {err}') from None


def encode_cell(gene: Sequence[Any], steps: Optional[int] = None) -> np.ndarray:
    """Encode one gene as the ``[num_edges(steps), 12]`` matrix of the metric.

    ``steps`` defaults to ``max(4, largest target - 1)`` (4 = the DARTS cell, ``concat = 2..5``).
    """
    edges = _as_edges(gene, 'encode_cell')
    need = max(e.to for e in edges) - 1
    if steps is None:
        steps = max(4, need)
    elif not isinstance(steps, int) or steps < need:
        raise GenotypeError(f'encode_cell: steps={steps!r} cannot hold node {need + 1} (need >= {need})')
    return _encode_edges(edges, steps, 'encode_cell')


def encode_genotype(genotype: GenotypeLike) -> List[np.ndarray]:
    """One ``[num_edges(steps), 12]`` matrix per cell (all cells share :func:`genotype_steps`).

    Every edge of the gene is encoded, dead ones included: the metric compares genotypes as written.
    """
    g = _load(genotype, 'genotype')
    steps = genotype_steps(g)
    label = g.name or 'genotype'
    return [_encode_edges(gene, steps, f'{label}, cell {i}') for i, gene in enumerate(g.genes)]


# ---------------------------------------------------------------------------- distances
_POW2 = 1 << np.arange(len(DARTOPTI_SPACE), dtype=np.int64)


@lru_cache(maxsize=8)
def _table_cached(w: Tuple[float, ...]) -> np.ndarray:
    bits = (np.arange(1 << len(w))[:, None] >> np.arange(len(w))) & 1
    table = bits @ np.asarray(w) / sum(w)
    table.setflags(write=False)
    return table


def _hamming_table(w: np.ndarray) -> np.ndarray:
    """Edge distance of every 12-bit mismatch mask (``table[0] == 0``).

    Looking the distance up by mask makes it a function of *which* ops differ only: exact zeros for equal
    rows, bit-identical ``d(a, b) == d(b, a)`` and the same number wherever the same rows meet.
    """
    return _table_cached(tuple(float(x) for x in w))


def _mismatch(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """12-bit mask of the ops where ``u`` and ``v`` differ (broadcast over leading dims)."""
    return (u != v) @ _POW2


def _row_codes(m: np.ndarray) -> np.ndarray:
    """Bit code of each row of an encoding (bit k set where op k is present)."""
    return (m != 0) @ _POW2


def edge_distance(u: Any, v: Any, weights: WeightsLike = None) -> Union[float, np.ndarray]:
    """Weighted Hamming distance ``sum_k w_k [u_k != v_k] / sum_k w_k`` (paper, Algorithm 2).

    ``u`` and ``v`` are op vectors of length 12 in :data:`DARTOPTI_SPACE` order (any leading dims,
    broadcast); returns a float for two vectors, else an array of the broadcast leading shape.
    """
    w = op_weights(weights)
    u, v = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
    if u.shape[-1:] != w.shape or v.shape[-1:] != w.shape:
        raise ValueError(f'edge vectors must end with a dimension of {w.size} (one entry per DARTOpti op), '
                         f'got shapes {u.shape} and {v.shape}')
    d = _hamming_table(w)[_mismatch(u, v)]
    return float(d) if np.ndim(d) == 0 else d


def _hausdorff(pair: np.ndarray) -> np.ndarray:
    """Symmetric Hausdorff distance from a pairwise row-distance tensor ``[..., Ra, Rb]`` -> ``[...]``."""
    directed_ab = pair.min(axis=-1).max(axis=-1)
    directed_ba = pair.min(axis=-2).max(axis=-1)
    return np.maximum(directed_ab, directed_ba)


def _as_cell_matrix(cell: CellLike, where: str) -> np.ndarray:
    if isinstance(cell, np.ndarray) and cell.dtype != object:
        m = np.asarray(cell, dtype=np.float64)
        if m.ndim != 2 or m.shape[1] != len(DARTOPTI_SPACE) or m.shape[0] == 0:
            raise ValueError(f'{where}: an encoded cell must be a non-empty [edges x {len(DARTOPTI_SPACE)}] '
                             f'matrix, got shape {m.shape}')
        return m
    return encode_cell(cell)


def cell_distance(a: CellLike, b: CellLike, weights: WeightsLike = None) -> float:
    """Symmetric Hausdorff distance between two cells (Eq. 11-12), edge distance = weighted Hamming.

    ``a``/``b`` are encoded matrices ``[edges x 12]`` (row counts may differ; any values, compared with
    ``!=``) or genes (lists of ``(op, to, src)``), encoded with :func:`encode_cell`'s default ``steps``.
    All rows count, empty ones included; rows form a *set*, so their positions do not matter: the same op
    on edge (2, 0) or on edge (2, 1) gives distance 0 (a pseudometric on genotypes, a metric on row sets).
    """
    ma, mb = _as_cell_matrix(a, 'cell a'), _as_cell_matrix(b, 'cell b')
    table = _hamming_table(op_weights(weights))
    return float(_hausdorff(table[_mismatch(ma[:, None, :], mb[None, :, :])]))


def _load(spec: GenotypeLike, label: str) -> Genotype:
    try:
        return load_genotype(spec)
    except GenotypeError as err:
        raise GenotypeError(f'{label} ({_describe(spec)}): {err}') from None


def _describe(spec: Any) -> str:
    if isinstance(spec, Genotype):
        return spec.name or 'unnamed Genotype'
    if isinstance(spec, (str, os.PathLike)):
        return repr(os.fspath(spec))
    return type(spec).__name__


def _codes(spec: GenotypeLike, label: str) -> np.ndarray:
    """Row codes ``[cells, rows]`` of a genotype's encoding (0/10 values, so XOR of codes = mismatch mask)."""
    return _row_codes(np.stack(encode_genotype(_load(spec, label))))


def _cell_distances_codes(a: np.ndarray, b: np.ndarray, table: np.ndarray) -> np.ndarray:
    n = min(a.shape[0], b.shape[0])
    return _hausdorff(table[a[:n, :, None] ^ b[:n, None, :]])


def cell_distances(a: GenotypeLike, b: GenotypeLike, weights: WeightsLike = None) -> np.ndarray:
    """Cell distance at every common position ``0 .. min(n_a, n_b) - 1`` (vector of that length).

    Genotypes may be :class:`Genotype` objects, shipped names, JSON dicts or file paths.
    """
    table = _hamming_table(op_weights(weights))
    return _cell_distances_codes(_codes(a, 'genotype a'), _codes(b, 'genotype b'), table)


def architecture_distance(a: GenotypeLike, b: GenotypeLike, weights: WeightsLike = None) -> float:
    """Architecture distance (Eq. 13): the mean cell distance over cells at the same position.

    When the cell counts differ, only the common leading cells are averaged (the authors' rule); the
    extra cells of the longer genotype do not count, so a genotype is at distance 0 from any extension
    of it, and the triangle inequality is only guaranteed between genotypes with equal cell counts.
    """
    return float(cell_distances(a, b, weights).mean())


def distance_matrix(genotypes: Sequence[GenotypeLike], weights: WeightsLike = None) -> np.ndarray:
    """Pairwise :func:`architecture_distance` matrix ``[n, n]`` (symmetric, zero diagonal).

    Each genotype is encoded once as one bit code per row; a pair's cells are compared in one batched
    table lookup.  An invalid entry raises :class:`GenotypeError` naming its position.
    """
    if isinstance(genotypes, (str, bytes, Genotype, Mapping)):
        raise TypeError('distance_matrix expects a list of genotypes')
    table = _hamming_table(op_weights(weights))
    codes = [_codes(g, f'genotype #{i}') for i, g in enumerate(genotypes)]
    n = len(codes)
    out = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = _cell_distances_codes(codes[i], codes[j], table).mean()
    return out
