"""Derived (final) D-DARTS networks: cells built from a genotype, CIFAR and ImageNet stems, aux head.

:class:`DDartsNet` follows timm's model API (``forward_features`` / ``forward_head`` / ``reset_classifier``
/ ``feature_info`` ...) and is scriptable, FX-traceable and ONNX-exportable.  Registered timm models live
in :mod:`ddarts_zoo.zoo`.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import DropPath, create_classifier
from torch.utils.checkpoint import checkpoint

from .genotype import Genotype, load_genotype
from .ops import FactorizedReduce, ReLUConvBN, build_op

__all__ = ['Node', 'Cell', 'AuxHead', 'DDartsNet', 'STEM_TYPES']

STEM_TYPES = ('cifar', 'imagenet', 'imagenet_darts')
"""``cifar``: conv3x3 to 3C (stride 1). ``imagenet``: the authors' ImageNet stem (stride 4, used by the
DO models). ``imagenet_darts``: the DARTS ImageNet stem (stride 8) so that 2-reduction genotypes reach
stride 32."""


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
    """A derived cell: preprocess both inputs, compute live nodes in increasing order, concat them."""

    def __init__(self, genotype: Genotype, index: int, c_pp: int, c_p: int, c: int, reduction: bool,
                 reduction_prev: bool, drop_path: float = 0.0, prune_unused_inputs: bool = False) -> None:
        super().__init__()
        self.reduction = reduction
        gene = genotype.live_gene(index)
        used = {e.src for e in gene}
        self.unused_inputs: List[int] = [k for k in (0, 1) if k not in used]
        # An input no edge reads keeps its preprocessing by default (as in the authors' networks and their
        # parameter counts); prune_unused_inputs=True drops it (no parameter without a gradient, e.g. for DDP).
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


def _conv_bn(in_chs: int, out_chs: int, stride: int) -> List[nn.Module]:
    return [nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(out_chs)]


class DDartsNet(nn.Module):
    """A network derived from a D-DARTS / DARTOpti genotype.

    Args:
        genotype: a :class:`Genotype`, a shipped genotype name, a JSON/official-text path or a JSON dict.
        num_classes: classifier outputs (0 removes the classifier).
        in_chans: input image channels.
        init_channels: width ``C`` of the first cells.
        layers: number of cells; larger than the genotype's cell count applies Algorithm 1.
        stem_type: 'cifar', 'imagenet' (authors' stride-4 stem) or 'imagenet_darts' (stride-8 stem).
        auxiliary: build the auxiliary head (used by :meth:`forward_train` in training mode only).
        drop_rate: dropout before the classifier.
        drop_path_rate: per-sample drop-path probability on each node's sum (training only).
        global_pool: timm pooling type ('avg', 'max', ..., '' for none).
        stem_multiplier: CIFAR stem width in units of ``C`` (3 in DARTS).
        prune_unused_inputs: drop the preprocessing of cell inputs that no edge reads (some published
            genotypes have such inputs; the paper's parameter counts include them, so they are kept by
            default, but they never receive a gradient).
    """

    def __init__(
            self,
            genotype: Union[Genotype, str, Dict[str, Any]],
            num_classes: int = 10,
            in_chans: int = 3,
            init_channels: int = 36,
            layers: Optional[int] = None,
            stem_type: str = 'cifar',
            auxiliary: bool = False,
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
            global_pool: str = 'avg',
            stem_multiplier: int = 3,
            prune_unused_inputs: bool = False,
    ) -> None:
        super().__init__()
        geno = load_genotype(genotype)
        if layers is not None and layers != geno.num_cells:
            geno = geno.expand(layers)
        if stem_type not in STEM_TYPES:
            raise ValueError(f'stem_type must be one of {STEM_TYPES}, got {stem_type!r}')
        if init_channels < 2 or init_channels % 2:
            raise ValueError(f'init_channels must be an even integer >= 2, got {init_channels}')
        self.genotype = geno
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.stem_type = stem_type
        self.grad_checkpointing = False
        c = init_channels

        self.feature_info: List[Dict[str, Any]] = []
        if stem_type == 'cifar':
            c_stem = stem_multiplier * c
            self.stem = nn.Sequential(*_conv_bn(in_chans, c_stem, 1))
            c_pp = c_p = c_stem
            stride, reduction_prev = 1, False
            stem_out = [('stem', c_stem, 1)]
        else:
            second_stride = 1 if stem_type == 'imagenet' else 2
            self.stem0 = nn.Sequential(
                *_conv_bn(in_chans, c // 2, 2), nn.ReLU(inplace=True), *_conv_bn(c // 2, c, second_stride))
            self.stem1 = nn.Sequential(nn.ReLU(inplace=False), *_conv_bn(c, c, 2))
            c_pp = c_p = c
            stride, reduction_prev = 2 * second_stride * 2, True
            stem_out = [('stem0', c, 2 * second_stride), ('stem1', c, stride)]

        cells = []
        level_last: Dict[int, Tuple[str, int]] = {s: (m, ch) for m, ch, s in stem_out}
        aux_chs = 0
        last_reduction = max(geno.reductions) if geno.reductions else -1
        for i in range(geno.num_cells):
            reduction = geno.is_reduction(i)
            if reduction:
                c *= 2
                stride *= 2
            cell = Cell(geno, i, c_pp, c_p, c, reduction, reduction_prev, drop_path_rate, prune_unused_inputs)
            cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.out_chs
            level_last[stride] = (f'cells.{i}', cell.out_chs)
            if i == last_reduction:
                aux_chs = cell.out_chs
        self.cells = nn.ModuleList(cells)
        for s in sorted(level_last):
            module, chs = level_last[s]
            self.feature_info.append(dict(num_chs=chs, reduction=s, module=module))
        self.aux_index = last_reduction if auxiliary else -1
        self._aux_cfg = (aux_chs, 3 if stem_type == 'cifar' else 2)  # (input channels, pool stride)
        self.aux_head = AuxHead(aux_chs, num_classes, self._aux_cfg[1]) \
            if auxiliary and num_classes > 0 and last_reduction >= 0 else None

        self.num_features = self.head_hidden_size = c_p
        self.global_pool, self.classifier = create_classifier(c_p, num_classes, pool_type=global_pool)
        self.head_drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm2d) and m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ timm API
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^stem', blocks=r'^cells\.(\d+)' if coarse else [
            (r'^cells\.(\d+)\.preprocess', None), (r'^cells\.(\d+)\.nodes\.(\d+)', None),
            (r'^aux_head', (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return set()

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str = 'avg') -> None:
        self.num_classes = num_classes
        self.global_pool, self.classifier = create_classifier(
            self.num_features, num_classes, pool_type=global_pool)
        if self.aux_head is not None:
            self.aux_head = AuxHead(self._aux_cfg[0], num_classes, self._aux_cfg[1]) if num_classes > 0 else None
            if self.aux_head is None:
                self.aux_index = -1

    def set_drop_path(self, rate: float) -> None:
        """Change the drop-path probability of every node (training recipes ramp it over epochs)."""
        for cell in self.cells:
            cell.set_drop_path(rate)

    # ------------------------------------------------------------------ forward
    def _stem(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if hasattr(self, 'stem'):  # resolved at compile time under TorchScript
            s = self.stem(x)
            return s, s
        s0 = self.stem0(x)
        return s0, self.stem1(s0)

    def _forward_cells(self, x: torch.Tensor, with_aux: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        s0, s1 = self._stem(x)
        aux_input: Optional[torch.Tensor] = None
        for i, cell in enumerate(self.cells):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                out = checkpoint(cell, s0, s1, use_reentrant=False)
            else:
                out = cell(s0, s1)
            s0, s1 = s1, out
            if with_aux and i == self.aux_index:
                aux_input = s1
        return s1, aux_input

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_cells(x, False)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        x = self.head_drop(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.jit.unused
    def forward_train(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Logits and, in training mode with ``auxiliary=True``, the auxiliary logits (else ``None``)."""
        want_aux = self.training and self.aux_head is not None
        feats, aux_input = self._forward_cells(x, want_aux)
        logits = self.forward_head(feats)
        aux_logits = self.aux_head(aux_input) if want_aux and aux_input is not None \
            and self.aux_head is not None else None
        return logits, aux_logits

