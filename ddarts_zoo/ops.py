"""Candidate operations of the D-DARTS / DARTOpti search spaces.

Every operation maps ``C`` channels to ``C`` channels; ``stride`` is 2 only on edges that leave the two
inputs of a reduction cell.  Layers are ``nn.Sequential`` children in a fixed order because that order
fixes the state-dict layout (and so checkpoint conversion, see :mod:`ddarts_zoo.convert`).

``affine=False`` builds the affine-free variants used inside the search supernet.  New operations can be
added with :func:`register_op`; the search code and the genotype validator both read :data:`OPS`.
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch
import torch.nn as nn

__all__ = [
    'OPS', 'DARTS_SPACE', 'DARTOPTI_SPACE', 'OP_SPACES', 'OpFactory', 'register_op', 'build_op',
    'Identity', 'FactorizedReduce', 'ReLUConvBN', 'SepConv', 'DilConv', 'SimpleConv', 'RectConv',
    'Bottleneck', 'op_space_of',
]

OpFactory = Callable[[int, int, bool], nn.Module]


def _bn(channels: int, affine: bool) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, affine=affine)


class Identity(nn.Identity):
    """``skip_connect`` at stride 1."""


class ReLUConvBN(nn.Sequential):
    """ReLU, 1x1 (or ``kernel_size``) convolution, BN: used to preprocess the two cell inputs."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1,
                 affine: bool = True) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding=kernel_size // 2, bias=False),
            _bn(out_chs, affine),
        )


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset 1x1 stride-2 convolutions whose outputs are concatenated."""

    def __init__(self, in_chs: int, out_chs: int, affine: bool = True) -> None:
        super().__init__()
        if out_chs % 2:
            raise ValueError(f'FactorizedReduce needs an even number of output channels, got {out_chs}')
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(in_chs, out_chs // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(in_chs, out_chs // 2, 1, stride=2, bias=False)
        self.bn = _bn(out_chs, affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        # The second branch sees the input shifted by one pixel. Padding one zero row/column at the end
        # keeps both branches the same size for odd inputs and is never read for even ones.
        shifted = nn.functional.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class SepConv(nn.Sequential):
    """Two stacked (ReLU, depthwise k x k, pointwise 1x1, BN) blocks; only the first one strides."""

    def __init__(self, chs: int, kernel_size: int, stride: int, affine: bool = True) -> None:
        pad = kernel_size // 2
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(chs, chs, kernel_size, stride, pad, groups=chs, bias=False),
            nn.Conv2d(chs, chs, 1, bias=False),
            _bn(chs, affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(chs, chs, kernel_size, 1, pad, groups=chs, bias=False),
            nn.Conv2d(chs, chs, 1, bias=False),
            _bn(chs, affine),
        )


class DilConv(nn.Sequential):
    """ReLU, depthwise k x k convolution with dilation 2, pointwise 1x1, BN."""

    def __init__(self, chs: int, kernel_size: int, stride: int, affine: bool = True) -> None:
        dilation = 2
        pad = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(chs, chs, kernel_size, stride, pad, dilation=dilation, groups=chs, bias=False),
            nn.Conv2d(chs, chs, 1, bias=False),
            _bn(chs, affine),
        )


class SimpleConv(nn.Sequential):
    """ReLU, dense k x k convolution, BN."""

    def __init__(self, chs: int, kernel_size: int, stride: int, affine: bool = True) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(chs, chs, kernel_size, stride, kernel_size // 2, bias=False),
            _bn(chs, affine),
        )


class RectConv(nn.Sequential):
    """ReLU, (1 x k) then (k x 1) convolutions (each striding along its own axis), BN."""

    def __init__(self, chs: int, kernel_size: int, stride: int, affine: bool = True) -> None:
        pad = kernel_size // 2
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(chs, chs, (1, kernel_size), stride=(1, stride), padding=(0, pad), bias=False),
            nn.Conv2d(chs, chs, (kernel_size, 1), stride=(stride, 1), padding=(pad, 0), bias=False),
            _bn(chs, affine),
        )


class Bottleneck(nn.Sequential):
    """``bottleneck_1x3x1``: 1x1 -> 3x3 (strided) -> 1x1 expanding to 4C -> 1x1 back to C."""

    expansion = 4

    def __init__(self, chs: int, stride: int, affine: bool = True) -> None:
        wide = chs * self.expansion
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(chs, chs, 1, bias=False),
            _bn(chs, affine),
            nn.Conv2d(chs, chs, 3, stride, 1, bias=False),
            _bn(chs, affine),
            nn.Conv2d(chs, wide, 1, bias=False),
            _bn(wide, affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(wide, chs, 1, bias=False),
            _bn(chs, affine),
        )


def _skip(chs: int, stride: int, affine: bool) -> nn.Module:
    return Identity() if stride == 1 else FactorizedReduce(chs, chs, affine=affine)


OPS: Dict[str, OpFactory] = {
    'max_pool_3x3': lambda c, s, a: nn.MaxPool2d(3, stride=s, padding=1),
    'avg_pool_3x3': lambda c, s, a: nn.AvgPool2d(3, stride=s, padding=1, count_include_pad=False),
    'skip_connect': _skip,
    'sep_conv_3x3': lambda c, s, a: SepConv(c, 3, s, a),
    'sep_conv_5x5': lambda c, s, a: SepConv(c, 5, s, a),
    'dil_conv_3x3': lambda c, s, a: DilConv(c, 3, s, a),
    'dil_conv_5x5': lambda c, s, a: DilConv(c, 5, s, a),
    'simple_conv_1x1': lambda c, s, a: SimpleConv(c, 1, s, a),
    'simple_conv_3x3': lambda c, s, a: SimpleConv(c, 3, s, a),
    'conv_3x1_1x3': lambda c, s, a: RectConv(c, 3, s, a),
    'conv_7x1_1x7': lambda c, s, a: RectConv(c, 7, s, a),
    'bottleneck_1x3x1': lambda c, s, a: Bottleneck(c, s, a),
}
"""Operation name -> factory ``(channels, stride, affine) -> nn.Module``."""

DARTS_SPACE: Tuple[str, ...] = (
    'max_pool_3x3', 'avg_pool_3x3', 'skip_connect', 'sep_conv_3x3', 'sep_conv_5x5',
    'dil_conv_3x3', 'dil_conv_5x5',
)
"""The 7-op DARTS space used by D-DARTS (no ``none`` op), in alpha-column order."""

DARTOPTI_SPACE: Tuple[str, ...] = (
    'conv_3x1_1x3', 'conv_7x1_1x7', 'max_pool_3x3', 'avg_pool_3x3', 'skip_connect', 'simple_conv_1x1',
    'simple_conv_3x3', 'sep_conv_3x3', 'sep_conv_5x5', 'dil_conv_3x3', 'dil_conv_5x5', 'bottleneck_1x3x1',
)
"""The 12-op DARTOpti space (DARTS's 7 and 5 new operations, paper Sec. 4.4), in alpha-column order
(also the distance metric's weight order, paper Table 1)."""

OP_SPACES: Dict[str, Tuple[str, ...]] = {'darts': DARTS_SPACE, 'dartopti': DARTOPTI_SPACE}

POOLING_OPS = frozenset({'max_pool_3x3', 'avg_pool_3x3'})


def register_op(name: str, factory: OpFactory, *, overwrite: bool = False) -> None:
    """Add an operation ``factory(channels, stride, affine) -> nn.Module`` under ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f'operation name must be a non-empty string, got {name!r}')
    if name in OPS and not overwrite:
        raise ValueError(f'operation {name!r} is already registered (pass overwrite=True to replace it)')
    OPS[name] = factory


def build_op(name: str, channels: int, stride: int = 1, affine: bool = True) -> nn.Module:
    """Instantiate operation ``name``; unknown names raise ``KeyError`` listing the known ones."""
    try:
        factory = OPS[name]
    except KeyError:
        raise KeyError(f'unknown operation {name!r}; known: {", ".join(sorted(OPS))}') from None
    return factory(channels, stride, affine)


def op_space_of(op_names) -> str:
    """Smallest named space containing every op in ``op_names`` ('darts', 'dartopti' or 'custom')."""
    names = set(op_names)
    for space_name, space in OP_SPACES.items():
        if names <= set(space):
            return space_name
    return 'custom'
