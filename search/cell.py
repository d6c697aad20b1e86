"""Search cells of the D-DARTS supernet (paper Sec. 4.1): every edge mixes all candidate operations.

Edge ``(to, src)`` outputs ``sum_k w[edge, k] * op_k(h_src)`` with the cell's mixing weights ``w``
(``sigmoid(alpha)``, FairDARTS, paper Sec. 3, Eq. 3, or DARTS' softmax, Eq. 2: :mod:`search.mixing`).
:class:`MixedOp` computes one edge.  Every state ``h`` of a cell feeds
one edge to each later node, all with the same stride, so :class:`SourceOps` computes the edges leaving
``h`` together (and those leaving the two cell inputs, ready at the same time, together too): one ReLU, one
grouped convolution holding the filters of every edge, one BN over every edge's channels (BN is per
channel: the same numbers as separate BNs, running statistics included), each parameter-free op (pools,
identity) once.  The per-edge BNs after a pool all normalise the same tensor, so they always hold the same
running statistics: one BN per state keeps them.  :meth:`SearchCell.fuse_` turns the per-edge form into the
fused one with the same parameters and statistics.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ddarts_zoo.genotype import edge_index
from ddarts_zoo.ops import POOLING_OPS, FactorizedReduce, ReLUConvBN, build_op

__all__ = ['GhostBatchNorm2d', 'MixedOp', 'SourceOps', 'SearchCell']


class GhostBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` that can normalise ``ghost_groups`` stacked sub-batches independently.

    The search cells' BN layers are of this class (same state, same behaviour while ``ghost_groups == 1``).
    The batched marginal-contribution pass stacks the reruns of several switched-off cells along the batch
    dimension; with ``ghost_groups = R`` each of the ``R`` sub-batches gets its own batch statistics, exactly
    as if it ran alone (running statistics are not touched then).
    """

    ghost_groups: int = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.ghost_groups
        if r == 1:
            return super().forward(x)
        if not self.training:
            raise RuntimeError('ghost batch normalisation is only defined in training mode')
        n, c, h, w = x.shape
        xv = x.reshape(r, n // r, c, h * w)
        var, mean = torch.var_mean(xv, dim=(1, 3), keepdim=True, unbiased=False)
        y = (xv - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight.view(1, 1, c, 1) + self.bias.view(1, 1, c, 1)
        return y.view(n, c, h, w)


class MixedOp(nn.Module):
    """All candidate ops of one edge, built affine-free; pools are followed by an affine-free BN.

    ``weights`` is ``[ops]`` (one mixing vector for the batch) or ``[batch, ops]`` (one per sample).
    """

    def __init__(self, channels: int, stride: int, op_names: Sequence[str]) -> None:
        super().__init__()
        ops = []
        for name in op_names:
            op = build_op(name, channels, stride, affine=False)
            if name in POOLING_OPS:
                op = nn.Sequential(op, nn.BatchNorm2d(channels, affine=False))
            ops.append(op)
        self.ops = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        per_sample = weights.dim() == 2
        out = None
        for k, op in enumerate(self.ops):
            w = weights[:, k].view(-1, 1, 1, 1) if per_sample else weights[k]
            y = w * op(x)
            out = y if out is None else out + y
        return out


# ---------------------------------------------------------------------------- stacking per-edge layers
# Stacked layers are built on the meta device (no random initialisation: the global RNG stream stays the one
# of the per-edge construction) and then receive the concatenated tensors of the per-edge layers.  Channels of
# a stacked layer are ordered (source, target, channel).
def _param(tensors: Sequence[torch.Tensor]) -> nn.Parameter:
    return nn.Parameter(torch.cat([t.detach() for t in tensors]), requires_grad=tensors[0].requires_grad)


def _stack_conv(convs: Sequence[nn.Conv2d], inputs: int) -> nn.Conv2d:
    """One conv doing ``convs`` on ``inputs`` inputs stacked along channels (each conv reads one of them)."""
    c = convs[0]
    with torch.device('meta'):
        conv = nn.Conv2d(inputs * c.in_channels, len(convs) * c.out_channels, c.kernel_size, c.stride,
                         c.padding, c.dilation, inputs * c.groups, bias=c.bias is not None,
                         padding_mode=c.padding_mode)
    conv.weight = _param([m.weight for m in convs])
    if c.bias is not None:
        conv.bias = _param([m.bias for m in convs])
    return conv


def _load_stacked_bn(bn: nn.BatchNorm2d, bns: Sequence[nn.BatchNorm2d], perm: Optional[torch.Tensor]) -> None:
    """Fill ``bn`` (meta) with the channels of ``bns`` side by side, reordered by ``perm`` if given."""
    counts = {int(b.num_batches_tracked) for b in bns if b.num_batches_tracked is not None}
    if len(counts) > 1:
        raise ValueError(f'cannot stack BN layers that saw different numbers of batches: {sorted(counts)}')

    def cat(name: str) -> torch.Tensor:
        x = torch.cat([getattr(b, name).detach() for b in bns])
        return (x if perm is None else x[perm.to(x.device)]).clone()

    for name in ('running_mean', 'running_var'):
        if getattr(bns[0], name) is not None:
            setattr(bn, name, cat(name))
    if bns[0].num_batches_tracked is not None:
        bn.num_batches_tracked = bns[0].num_batches_tracked.detach().clone()
    if bns[0].affine:
        bn.weight = nn.Parameter(cat('weight'), requires_grad=bns[0].weight.requires_grad)
        bn.bias = nn.Parameter(cat('bias'), requires_grad=bns[0].bias.requires_grad)


def _stack_bn(bns: Sequence[nn.BatchNorm2d], perm: Optional[torch.Tensor] = None) -> GhostBatchNorm2d:
    b = bns[0]
    with torch.device('meta'):
        bn = GhostBatchNorm2d(b.num_features * len(bns), b.eps, b.momentum, b.affine, b.track_running_stats)
    _load_stacked_bn(bn, bns, perm)
    return bn


def _stack_sequential(seqs: Sequence[nn.Module], sources: int) -> Optional[Tuple[nn.Sequential, bool]]:
    """``(ReLU, Conv2d, ...)`` op of every edge -> (its layers after the ReLU stacked, reads repeated input?).

    ``None`` unless the op is a sequence of ReLU / Conv2d / BatchNorm2d layers starting with ReLU, Conv2d.
    A dense first conv reads ``relu(h)`` of each source once for all its targets; a grouped one (depthwise)
    reads ``relu(h)`` repeated once per target.  Every later conv is grouped per edge.
    """
    layers = list(seqs[0]) if isinstance(seqs[0], nn.Sequential) else []
    if (len(layers) < 2 or type(layers[0]) is not nn.ReLU or type(layers[1]) is not nn.Conv2d
            or any(type(m) not in (nn.ReLU, nn.Conv2d, nn.BatchNorm2d, GhostBatchNorm2d) for m in layers)):
        return None
    dense_first = layers[1].groups == 1
    out: List[nn.Module] = []
    for i, layer in enumerate(layers[1:], start=1):
        same = [s[i] for s in seqs]
        if isinstance(layer, nn.Conv2d):
            out.append(_stack_conv(same, sources if dense_first and i == 1 else len(same)))
        elif isinstance(layer, nn.BatchNorm2d):
            out.append(_stack_bn(same))
        else:
            out.append(nn.ReLU())
    return nn.Sequential(*out), not dense_first


def _stack_factorized_reduce(frs: Sequence[FactorizedReduce]) -> FactorizedReduce:
    """One :class:`FactorizedReduce` to ``targets * C`` channels (one source); its output channels are ordered
    ``(branch, target, channel)``."""
    t, half = len(frs), frs[0].conv_1.out_channels
    with torch.device('meta'):
        fr = FactorizedReduce(frs[0].conv_1.in_channels, 2 * half * t, affine=frs[0].bn.affine)
    fr.conv_1.weight = _param([m.conv_1.weight for m in frs])
    fr.conv_2.weight = _param([m.conv_2.weight for m in frs])
    fr.bn.__class__ = GhostBatchNorm2d
    # stacked BN channel (target, branch, c) -> FR output channel (branch, target, c)
    perm = torch.arange(2 * half * t).view(t, 2, half).transpose(0, 1).reshape(-1)
    _load_stacked_bn(fr.bn, [m.bn for m in frs], perm)
    return fr


_CHANNELWISE = (nn.Identity, nn.MaxPool2d, nn.AvgPool2d, nn.BatchNorm2d, nn.ReLU, nn.Sequential)


def _stack_parameter_free(mods: Sequence[nn.Module]) -> Optional[nn.Module]:
    """A parameter-free, channel-wise op (pools, identity, affine-free BN) of each source -> one op on the
    sources stacked along channels; ``None`` for other ops."""
    first = mods[0]
    if any(True for _ in first.parameters()) or not all(isinstance(m, _CHANNELWISE) for m in first.modules()):
        return None
    if len(mods) == 1:
        return mods[0]
    if isinstance(mods[0], nn.Sequential):
        return nn.Sequential(*[_stack_bn([m[i] for m in mods]) if isinstance(layer, nn.BatchNorm2d) else layer
                               for i, layer in enumerate(mods[0])])
    return None if isinstance(mods[0], nn.BatchNorm2d) else mods[0]


def _check_same_state(mods: Sequence[nn.Module], where: str) -> None:
    ref = mods[0].state_dict()
    for m in mods[1:]:
        for k, v in m.state_dict().items():
            if not torch.equal(v, ref[k]):
                raise ValueError(f'{where}: buffer {k!r} differs between target nodes; a parameter-free op '
                                 f'is computed once per source state, so its state must be the same')


class SourceOps(nn.Module):
    """The candidate ops of every edge leaving ``S`` states (1, or the 2 cell inputs), for all ``T`` targets.

    Built from ``edges[s][t]`` (:class:`MixedOp` modules).  ``forward(states)`` returns
    ``[T, batch, ops, S, C, H, W]``.  Kinds: ``shared`` (parameter-free, computed once per source), ``relu`` /
    ``repeat`` (stacked along channels, reading ``relu(h)`` once or repeated per target), ``reduce`` (a
    stride-2 ``FactorizedReduce`` stacked per source) and ``each`` (any other op, run once per edge).
    """

    def __init__(self, edges: Sequence[Sequence[MixedOp]], sources: Sequence[int]) -> None:
        super().__init__()
        self.num_sources, self.num_targets = len(edges), len(edges[0])
        ops, kinds = [], []
        for k in range(len(edges[0][0].ops)):
            per_source = [[e.ops[k] for e in row] for row in edges]
            flat = [m for row in per_source for m in row]
            shared = _stack_parameter_free([row[0] for row in per_source])
            stacked = None if shared is not None else _stack_sequential(flat, self.num_sources)
            if shared is not None:
                for src, row in zip(sources, per_source):
                    _check_same_state(row, f'edges from node {src}, op {k}')
                ops.append(shared)
                kinds.append('shared')
            elif type(flat[0]) is FactorizedReduce:
                ops.append(nn.ModuleList(_stack_factorized_reduce(row) for row in per_source))
                kinds.append('reduce')
            elif stacked is not None:
                ops.append(stacked[0])
                kinds.append('repeat' if stacked[1] else 'relu')
            else:
                ops.append(nn.ModuleList(flat))
                kinds.append('each')
        self.ops = nn.ModuleList(ops)
        self.kinds: Tuple[str, ...] = tuple(kinds)

    def forward(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        s, t = self.num_sources, self.num_targets
        x = states[0] if s == 1 else torch.cat(list(states), 1)
        relu = repeated = None
        outs = []
        for kind, op in zip(self.kinds, self.ops):
            if kind == 'shared':
                y = op(x).unflatten(1, (s, 1, -1)).expand(-1, -1, t, -1, -1, -1)
            elif kind == 'each':
                y = torch.stack([m(states[i // t]) for i, m in enumerate(op)], 1).unflatten(1, (s, t))
            elif kind == 'reduce':   # channels (branch, target, c) -> (target, c)
                y = torch.stack([fr(h).unflatten(1, (2, t, -1)).transpose(1, 2).flatten(2, 3)
                                 for fr, h in zip(op, states)], 1)
            else:
                relu = F.relu(x) if relu is None else relu
                if kind == 'repeat' and repeated is None:   # relu(h) once per target: channels (S, T, C)
                    repeated = relu.unflatten(1, (s, 1, -1)).expand(-1, -1, t, -1, -1, -1).flatten(1, 3)
                y = op(repeated if kind == 'repeat' else relu).unflatten(1, (s, t, -1))
            outs.append(y.permute(2, 0, 1, 3, 4, 5))          # [B, S, T, C, H, W] -> [T, B, S, C, H, W]
        return torch.stack(outs, 2)


def _mix(y: torch.Tensor, w: torch.Tensor, sources: int) -> torch.Tensor:
    """``sum over (op, source)`` of ``w * y`` as one batched matrix product -> ``[T, B, C, H, W]``.

    ``y``: ``[T, B, ops, S, C, H, W]``; ``w``: ``[(S, T), ops]`` or, per sample, ``[B, (S, T), ops]``.
    """
    t, b = y.shape[:2]
    if w.dim() == 3:
        w = w.unflatten(1, (sources, t)).permute(2, 0, 3, 1).reshape(t, b, 1, -1)   # [T, B, 1, ops * S]
    else:
        w = w.unflatten(0, (sources, t)).permute(1, 2, 0).reshape(t, 1, 1, -1)      # [T, 1, 1, ops * S]
    return torch.matmul(w, y.flatten(4).flatten(2, 3)).view((t, b) + y.shape[4:])


class SearchCell(nn.Module):
    """A search cell: two preprocessed inputs, ``steps`` nodes, every edge a mixture of all ops.

    ``fused=True`` (default) computes the edges per source state (:class:`SourceOps`); ``fused=False`` keeps
    one :class:`MixedOp` per edge (``edges``), the plain form of the same computation.
    """

    def __init__(self, steps: int, multiplier: int, c_pp: int, c_p: int, channels: int, reduction: bool,
                 reduction_prev: bool, op_names: Sequence[str], fused: bool = True) -> None:
        super().__init__()
        self.steps, self.multiplier, self.reduction = steps, multiplier, reduction
        self.preprocess0 = (FactorizedReduce(c_pp, channels, affine=False) if reduction_prev
                            else ReLUConvBN(c_pp, channels, affine=False))
        self.preprocess1 = ReLUConvBN(c_p, channels, affine=False)
        self.edges = nn.ModuleList(MixedOp(channels, 2 if reduction and src < 2 else 1, op_names)
                                   for to in range(2, steps + 2) for src in range(to))
        for m in self.modules():
            if type(m) is nn.BatchNorm2d:
                m.__class__ = GhostBatchNorm2d
        self.fused = False
        if fused:
            self.fuse_()

    @torch.no_grad()
    def fuse_(self) -> 'SearchCell':
        """Replace the per-edge modules by per-source ones holding the same parameters and statistics."""
        if self.fused:
            return self
        groups, rows = [], []
        for srcs in [(0, 1)] + [(n,) for n in range(2, self.steps + 1)]:   # the two inputs are ready together
            idx = [[edge_index(to, src) for to in range(max(2, src + 1), self.steps + 2)] for src in srcs]
            groups.append(SourceOps([[self.edges[r] for r in row] for row in idx], srcs))
            rows.extend(r for row in idx for r in row)
        device = next(self.preprocess1.parameters()).device
        self.sources = nn.ModuleList(groups)
        self.register_buffer('source_rows', torch.tensor(rows, dtype=torch.long, device=device),
                             persistent=False)
        del self.edges
        self.fused = True
        return self

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``weights``: ``[edges x ops]``, or ``[batch x edges x ops]`` for per-sample mixing."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        if not self.fused:
            per_sample, row = weights.dim() == 3, 0
            for _ in range(self.steps):
                node = None
                for h in states:
                    y = self.edges[row](h, weights[:, row] if per_sample else weights[row])
                    node = y if node is None else node + y
                    row += 1
                states.append(node)
            return torch.cat(states[-self.multiplier:], dim=1)
        # rows grouped by source; acc[j]: partial sum of the j-th node not complete yet, [T, B, C, H, W]
        w = weights.index_select(-2, self.source_rows)
        start, acc = 0, None
        for k, ops in enumerate(self.sources):
            n = ops.num_sources * ops.num_targets
            y = ops(states[:2] if k == 0 else states[-1:])                     # [T, B, ops, S, C, H, W]
            mixed = _mix(y, w[..., start:start + n, :].to(y.dtype), ops.num_sources)
            start += n
            acc = mixed if acc is None else acc[1:] + mixed
            states.append(acc[0])
        return torch.cat(states[-self.multiplier:], dim=1)
