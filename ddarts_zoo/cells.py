"""The pieces of a derived D-DARTS network: nodes, cells (built from one gene), pruned cells, auxiliary head,
and :class:`CellStack`, the one owner of how cells are wired, run and pruned.

Layers are ``nn.Sequential`` / ``nn.ModuleList`` children in a fixed order because that order fixes the
state-dict layout (and so checkpoint conversion, see :mod:`ddarts_zoo.convert`).
"""
# No `from __future__ import annotations`: TorchScript compiles CellStack.forward and reads its annotations.
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from timm.layers import DropPath
from torch.utils.checkpoint import checkpoint

from .genotype import Genotype
from .ops import FactorizedReduce, ReLUConvBN, build_op

__all__ = ['Node', 'Cell', 'PrunedCell', 'AuxHead', 'CellStack', 'CellPlan', 'plan_cells', 'cells_reaching']


class Node(nn.Module):
    """One intermediate node: the sum of its incoming operations (then drop-path)."""

    def __init__(self, ops: Sequence[nn.Module], srcs: Sequence[int], drop_path: float = 0.0) -> None:
        super().__init__()
        self.ops = nn.ModuleList(ops)
        self.srcs: List[int] = list(srcs)  # positions in the cell's list of states
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, states: List[torch.Tensor]) -> torch.Tensor:
        out: List[torch.Tensor] = []
        for i, op in enumerate(self.ops):
            out.append(op(states[self.srcs[i]]))
        total = out[0]
        for t in out[1:]:
            total = total + t
        return self.drop_path(total)


class Cell(nn.Module):
    """A derived cell: preprocess both inputs, compute live nodes in increasing order, concat them.

    ``prune_unused_inputs`` replaces the preprocessing of an input no edge reads by ``nn.Identity`` (the
    paper's networks keep it: it counts in their parameter totals but never receives a gradient).
    ``forward``'s ``weights`` (a search cell's mixing weights) is ignored: it lets :class:`CellStack` run
    derived and search cells with one loop.
    """

    def __init__(self, genotype: Genotype, index: int, c_pp: int, c_p: int, c: int, reduction: bool,
                 reduction_prev: bool, drop_path: float = 0.0, prune_unused_inputs: bool = False) -> None:
        super().__init__()
        self.reduction = reduction
        gene = genotype.live_gene(index)
        used = {e.src for e in gene}
        self.unused_inputs: List[int] = [k for k in (0, 1) if k not in used]
        self.preprocess0 = nn.Identity() if prune_unused_inputs and 0 not in used else (
            FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c))
        self.preprocess1 = nn.Identity() if prune_unused_inputs and 1 not in used else ReLUConvBN(c_p, c)
        node_ids = sorted({e.to for e in gene})
        slot = {0: 0, 1: 1}
        nodes = []
        for node in node_ids:
            edges = [e for e in gene if e.to == node]
            ops = [build_op(e.op, c, 2 if reduction and e.src < 2 else 1) for e in edges]
            nodes.append(Node(ops, [slot[e.src] for e in edges], drop_path))
            slot[node] = len(slot)
        self.nodes = nn.ModuleList(nodes)
        self.node_ids: List[int] = node_ids
        self.multiplier = len(node_ids)
        self.out_chs = self.multiplier * c

    def forward(self, s0: torch.Tensor, s1: torch.Tensor,
                weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        states: List[torch.Tensor] = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in self.nodes:
            states.append(node(states))
        return torch.cat(states[2:], dim=1)

    def set_drop_path(self, rate: float) -> None:
        for node in self.nodes:
            if isinstance(node.drop_path, DropPath):
                node.drop_path.drop_prob = rate
            elif rate > 0:
                node.drop_path = DropPath(rate)


class PrunedCell(nn.Module):
    """Stands for a cell whose output nothing reads: no parameters, no computation (passes ``s1`` on)."""

    def __init__(self, out_chs: int, reduction: bool) -> None:
        super().__init__()
        self.out_chs, self.reduction = out_chs, reduction
        self.nodes = nn.ModuleList()
        self.node_ids: List[int] = []

    def forward(self, s0: torch.Tensor, s1: torch.Tensor,
                weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        return s1

    def set_drop_path(self, rate: float) -> None:
        pass


class AuxHead(nn.Module):
    """Auxiliary classifier after the last reduction cell (training only, loss weight 0.4 in the paper).

    ReLU, AvgPool 5 (stride 3 CIFAR / 2 ImageNet), 1x1 conv to 128, BN, ReLU, 2x2 conv to 768, BN, ReLU,
    linear. Maps smaller than the 5x5 pooling window (e.g. DARTOpti genotypes with 3-4 reductions at 32 px)
    are average-pooled to 2x2 instead, so the head works at any depth.
    """

    def __init__(self, in_chs: int, num_classes: int, pool_stride: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=pool_stride, padding=0, count_include_pad=False),
            nn.Conv2d(in_chs, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=False),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)  # 1x1 already at the design resolution
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < 5:
            x = nn.functional.adaptive_avg_pool2d(self.features[0](x), 2)
            for layer in self.features[2:]:
                x = layer(x)
        else:
            x = self.features(x)
        return self.classifier(self.pool(x).flatten(1))


def cells_reaching(reads: Sequence[Sequence[int]], targets: Iterable[int]) -> List[bool]:
    """Which cells' outputs reach a target cell. Cell ``i`` reads cell ``i - 1`` as input 1 and cell ``i - 2``
    as input 0 (``reads[i]``: the inputs its edges read)."""
    n = len(reads)
    needed = [False] * n
    for t in targets:
        needed[t] = True
    for j in range(n - 1, -1, -1):
        needed[j] = needed[j] or (j + 1 < n and needed[j + 1] and 1 in reads[j + 1]) or (
            j + 2 < n and needed[j + 2] and 0 in reads[j + 2])
    return needed


class CellPlan(NamedTuple):
    """Which cells a network computes: ``computed`` on the way to its outputs (classifier, feature levels),
    ``built`` as well as those only the auxiliary head reads; the others are :class:`PrunedCell`."""
    computed: List[bool]
    built: List[bool]

    @property
    def aux_only(self) -> List[bool]:
        return [b and not c for b, c in zip(self.built, self.computed)]


def plan_cells(reads: Sequence[Sequence[int]], targets: Sequence[int], aux_target: int = -1,
               prune: bool = True) -> CellPlan:
    """The :class:`CellPlan` for output cells ``targets`` and the auxiliary head's cell ``aux_target`` (-1:
    none); ``prune=False`` (the paper's networks) builds and computes every cell."""
    if not prune:
        return CellPlan([True] * len(reads), [True] * len(reads))
    aux = [aux_target] if aux_target >= 0 else []
    return CellPlan(cells_reaching(reads, targets), cells_reaching(reads, list(targets) + aux))


class CellStack(nn.ModuleList):
    """The cells of a D-DARTS network and the one loop that runs them: cell ``i`` reads the outputs of cells
    ``i - 2`` and ``i - 1`` (the stem's ``s0`` / ``s1`` for the first two).

    It owns what is pruned: ``reads[i]`` (the inputs cell ``i``'s edges read) decides, through
    :func:`plan_cells`, which cells are :class:`PrunedCell` and which only the auxiliary head reads
    (``aux_only``: skipped, passing ``s1`` on, unless the head is computed).  Derived cells and the search's
    cells (which take mixing ``weights``) run through the same :meth:`forward`.
    """
    reads: List[List[int]]
    aux_only: List[bool]

    def __init__(self, cells: Iterable[nn.Module] = (), reads: Optional[Sequence[Sequence[int]]] = None,
                 aux_only: Optional[Sequence[bool]] = None) -> None:
        super().__init__(cells)
        self.reads = [list(r) for r in reads] if reads is not None else [[0, 1] for _ in range(len(self))]
        self.aux_only = list(aux_only) if aux_only is not None else [False] * len(self)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: Optional[List[torch.Tensor]] = None,
                start: int = 0, end: Optional[int] = None, taps: Optional[List[int]] = None,
                with_aux: bool = False,
                checkpointing: bool = False) -> Tuple[torch.Tensor, Dict[int, torch.Tensor]]:
        """Run cells ``start .. end - 1`` (to the last when ``end`` is None) on inputs ``(s0, s1)``; return
        the last output and the outputs of the cells in ``taps``.  ``weights[i]`` goes to cell ``i``; aux-only
        cells run if ``with_aux``; ``checkpointing`` recomputes each cell in the backward pass (not under
        TorchScript)."""
        tapped: Dict[int, torch.Tensor] = {}
        for i, cell in enumerate(self):
            if i >= start and (end is None or i < end):
                w: Optional[torch.Tensor] = None
                if weights is not None:
                    w = weights[i]
                if self.aux_only[i] and not with_aux:
                    out = s1  # only the auxiliary head reads this cell
                elif checkpointing and not torch.jit.is_scripting():
                    out = checkpoint(cell, s0, s1, w, use_reentrant=False)
                else:
                    out = cell(s0, s1, w)
                s0, s1 = s1, out
                if taps is not None and i in taps:
                    tapped[i] = out
        return s1, tapped

    @torch.jit.unused
    def head(self, n: int) -> 'CellStack':
        """The first ``n`` cells, with their flags (what feature levels up to cell ``n - 1`` need)."""
        return CellStack(list(self)[:n], self.reads[:n], self.aux_only[:n])

    @torch.jit.unused
    def pruned_for(self, last: int, targets: List[int], aux_target: int = -1,
                   prune: bool = True) -> 'CellStack':
        """Cells ``0 .. last`` as :func:`plan_cells` keeps them for ``targets`` (and ``aux_target``)."""
        plan = plan_cells(self.reads[:last + 1], targets, aux_target, prune)
        kept = list(self)[:last + 1]
        cells = [cell if plan.built[i] or isinstance(cell, PrunedCell)
                 else PrunedCell(cell.out_chs, cell.reduction) for i, cell in enumerate(kept)]
        return CellStack(cells, self.reads[:last + 1], plan.aux_only)

    @torch.jit.unused
    def pruned_prefixes(self, num_cells: int, prefix: str = 'cells.') -> Tuple[str, ...]:
        """State-dict prefixes of the ``num_cells`` cells of the unpruned network that this stack omits: whole
        cells (pruned or cut off) and the preprocessing of inputs no edge reads."""
        out: List[str] = []
        for i in range(num_cells):
            cell = self[i] if i < len(self) else None
            if cell is None or isinstance(cell, PrunedCell):
                out.append(f'{prefix}{i}.')
            else:
                out += [f'{prefix}{i}.preprocess{k}.' for k in (0, 1)
                        if isinstance(getattr(cell, f'preprocess{k}'), nn.Identity)]
        return tuple(out)

    @torch.jit.unused
    def set_drop_path(self, rate: float) -> None:
        """Change the drop-path probability of every node of every cell."""
        for cell in self:
            cell.set_drop_path(rate)
