"""A cell's edges: the ``Edge`` type, the row layout of a cell's alpha matrix, and node liveness.

Node 0 is the output of cell k-2, node 1 the output of cell k-1, nodes 2, 3, ... are intermediate nodes;
an edge ``(op, to, src)`` applies ``op`` to node ``src`` and sums it into node ``to``.  The supernet's
alphas and the distance's encoding share the row layout.  :mod:`ddarts_zoo.genotype` exports these names.
"""
from __future__ import annotations

from typing import List, NamedTuple, Sequence, Tuple

__all__ = ['Edge', 'Gene', 'num_edges', 'edge_index', 'edge_pairs', 'live_nodes']


class Edge(NamedTuple):
    """One operation ``op`` applied to node ``src`` and summed into node ``to``."""

    op: str
    to: int
    src: int

    def __str__(self) -> str:
        return f'({self.op!r}, {self.to}, {self.src})'


Gene = Tuple[Edge, ...]


def num_edges(steps: int) -> int:
    """Edges ``(to, src)`` of a cell with ``steps`` intermediate nodes: ``sum_{n < steps} (n + 2)`` (14 for 4)."""
    return steps * (steps + 3) // 2


def edge_index(to: int, src: int) -> int:
    """Row of edge ``(to, src)`` in a cell's alpha matrix and encoding: ``sum_{n < to-2} (n + 2) + src``.

    Rows are ordered by target node, then source, as in the DARTS supernet.
    """
    if not 0 <= src < to or to < 2:
        raise ValueError(f'edge ({to}, {src}) does not exist (need 0 <= src < to and to >= 2)')
    return (to - 2) * (to + 1) // 2 + src


def edge_pairs(steps: int) -> List[Tuple[int, int]]:
    """``(to, src)`` of every row of a ``steps``-node cell, in row order (inverse of :func:`edge_index`)."""
    return [(to, src) for to in range(2, steps + 2) for src in range(to)]


def live_nodes(gene: Sequence[Edge]) -> Tuple[int, ...]:
    """Intermediate nodes of ``gene`` reachable from the cell inputs 0 and 1, in increasing order.

    A node is live when at least one of its input edges starts at a live node; the others are dead.
    """
    live = {0, 1}
    for node in sorted({e.to for e in gene}):
        if any(e.to == node and e.src in live for e in gene):
            live.add(node)
    return tuple(sorted(live - {0, 1}))
