"""Discretising the supernet's mixing weights into a genotype (D-DARTS paper Sec. 5.1: FairDARTS
``sparse`` / ``edge`` parsing with a threshold on ``sigmoid(alpha)``, or DARTS' top-2 ``darts`` parsing).

``parse_cell`` turns one cell's ``[edges x ops]`` matrix of mixing weights into genes, ``parse_genotype`` a
whole supernet's matrices into a :class:`~ddarts_zoo.genotype.Genotype`.  ``darts`` parsing uses no
threshold, so it also fits DARTS' softmax weights (``--mixing softmax``); the others need sigmoid weights.
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Optional, Sequence

import numpy as np

from ddarts_zoo.genotype import Edge, Genotype, edge_index, live_nodes, num_edges

__all__ = ['PARSE_METHODS', 'EmptyCellWarning', 'parse_cell', 'parse_genotype']

PARSE_METHODS = ('sparse', 'edge', 'darts')


class EmptyCellWarning(UserWarning):
    """A parsed cell kept no operation (every weight under the threshold); it became a skip connection."""


def _order_desc(values: Sequence[float]) -> List[int]:
    """Indices by decreasing value; ties keep the lower index first (deterministic)."""
    return sorted(range(len(values)), key=lambda k: (-values[k], k))


def parse_cell(weights: np.ndarray, op_names: Sequence[str], steps: int, method: str = 'sparse',
               threshold: float = 0.85) -> List[Edge]:
    """Discretise one cell's mixing weights ``[edges x ops]`` (``sigmoid(alpha)``, or softmax for ``darts``).

    Per intermediate node:

    * ``sparse``: the 2 incoming edges with the highest max weight; on each, the best op if ``>= threshold``.
    * ``edge``: every incoming edge; on each, the (up to) 2 best ops whose weight is ``>= threshold``.
    * ``darts``: the 2 incoming edges with the highest max weight, the best op on each, no threshold.

    Ties are broken towards the lower source node / lower op column.  ``sparse``/``darts`` list a node's
    edges strongest first; ``edge`` lists them by source, ops by column.
    """
    if method not in PARSE_METHODS:
        raise ValueError(f'unknown parsing method {method!r}; choose one of {PARSE_METHODS}')
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (num_edges(steps), len(op_names)):
        raise ValueError(f'weights have shape {w.shape}, expected {(num_edges(steps), len(op_names))}')
    gene: List[Edge] = []
    for to in range(2, steps + 2):
        rows = [edge_index(to, src) for src in range(to)]
        if method == 'edge':
            for src, r in enumerate(rows):
                best = [k for k in _order_desc(list(w[r]))[:2] if w[r, k] >= threshold]
                gene.extend(Edge(op_names[k], to, src) for k in sorted(best))
            continue
        strength = [float(w[r].max()) for r in rows]
        for src in _order_desc(strength)[:2]:
            r = rows[src]
            k = _order_desc(list(w[r]))[0]
            if method == 'darts' or w[r, k] >= threshold:
                gene.append(Edge(op_names[k], to, src))
    return gene


def parse_genotype(cell_weights: Sequence[np.ndarray], op_names: Sequence[str], steps: int, multiplier: int,
                   reductions: Sequence[int], method: str = 'sparse', threshold: float = 0.85,
                   name: Optional[str] = None, meta: Optional[Dict[str, object]] = None) -> Genotype:
    """A :class:`Genotype` from every cell's mixing weights.

    A cell left without a live node (nothing reached the threshold) becomes a single ``skip_connect`` from
    the previous cell (the network strides it in a reduction cell), with an :class:`EmptyCellWarning`; the
    cells concerned are recorded in ``meta['empty_cells']``.
    """
    genes, empty = [], []
    for ci, w in enumerate(cell_weights):
        gene = parse_cell(w, op_names, steps, method, threshold)
        if not live_nodes(gene):
            empty.append(ci)
            gene = [Edge('skip_connect', 2, 1)]
        genes.append(gene)
    info = dict(meta or {})
    info.update(parsing=method, threshold=threshold if method != 'darts' else None, steps=steps)
    if empty:
        info['empty_cells'] = empty
        warnings.warn(f'{method} parsing (threshold {threshold}): cell(s) {empty} kept no operation and '
                      f'became a skip_connect from the previous cell', EmptyCellWarning, stacklevel=2)
    concat = tuple(range(2 + steps - multiplier, 2 + steps))
    return Genotype(genes, tuple(reductions), concat, name, info)
