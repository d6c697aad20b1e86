"""The pieces of a derived D-DARTS network: nodes, cells (built from one gene), pruned cells, auxiliary head.

Layers are ``nn.Sequential`` / ``nn.ModuleList`` children in a fixed order because that order fixes the
state-dict layout (and so checkpoint conversion, see :mod:`ddarts_zoo.convert`).
"""
from typing import List, Sequence

import torch
import torch.nn as nn
from timm.layers import DropPath

from .genotype import Genotype
from .ops import FactorizedReduce, ReLUConvBN, build_op

__all__ = ['Node', 'Cell', 'PrunedCell', 'AuxHead']


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
    """

    def __init__(self, genotype: Genotype, index: int, c_pp: int, c_p: int, c: int, reduction: bool,
                 reduction_prev: bool, drop_path: float = 0.0, prune_unused_inputs: bool = False) -> None:
        super().__init__()
        self.reduction = reduction
        self.aux_only = False  # set by DDartsNet: only the auxiliary head reads this cell
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

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
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
        self.out_chs, self.reduction, self.aux_only = out_chs, reduction, False
        self.nodes = nn.ModuleList()
        self.node_ids: List[int] = []

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
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
