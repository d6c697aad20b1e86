"""Derived (final) D-DARTS networks: stems, :class:`CellNetwork`, :class:`DDartsNet`.

:class:`DDartsNet` follows timm's model API (``forward_features`` / ``forward_head`` / ``reset_classifier``
/ ``feature_info`` / ``forward_intermediates`` ...) and is scriptable, FX-traceable and ONNX-exportable.
Registered timm models live in :mod:`ddarts_zoo.zoo`.  :func:`build_stem` and :class:`CellNetwork` (the
stem dispatch and the run of the cells) are shared with the detection backbone and the search supernet;
pruning belongs to :class:`~ddarts_zoo.cells.CellStack`.
"""
# No `from __future__ import annotations` here: torch.fx copies forward()'s annotations into the code it
# generates, and TorchScript cannot read them back as strings (timm's FX + TorchScript test).
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import create_classifier
from timm.models._features import feature_take_indices

from .cells import AuxHead, Cell, CellStack, Node, PrunedCell, plan_cells
from .errors import UserError
from .genotype import Genotype
from .genotypes import load_genotype

__all__ = ['Node', 'Cell', 'PrunedCell', 'AuxHead', 'CellStack', 'CellNetwork', 'DDartsNet', 'Stem',
           'build_stem', 'level_source', 'STEM_TYPES', 'STEM_STRIDES']

STEM_STRIDES: Dict[str, int] = {'cifar': 1, 'imagenet': 4, 'imagenet_darts': 8}
"""Stem type -> stride of the first cell's input ``s1``. ``cifar``: conv3x3 to ``stem_multiplier * C``.
``imagenet``: the authors' ImageNet stem (used by the DO models). ``imagenet_darts``: the DARTS ImageNet stem,
so that 2-reduction genotypes reach stride 32 (the search supernet's ``'imagenet'`` stem)."""
STEM_TYPES: Tuple[str, ...] = tuple(STEM_STRIDES)


class Stem(NamedTuple):
    """What :func:`build_stem` returns: the modules and what the first cell needs to know."""
    modules: Dict[str, nn.Sequential]  # 'stem' (CIFAR: s0 = s1 = its output), or 'stem0' (s0), 'stem1' (s1)
    strides: Dict[str, int]  # output stride of each module
    c_pp: int  # channels of the first cell's input s0
    c_p: int  # channels of the first cell's input s1
    reduction_prev: bool  # s0 has twice the resolution of s1 (the first cell reduces it)


def _conv_bn(in_chs: int, out_chs: int, stride: int) -> List[nn.Module]:
    return [nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(out_chs)]


def build_stem(stem_type: str, in_chans: int, channels: int, stem_multiplier: int = 3) -> Stem:
    """The stem of a D-DARTS network (the same for the search supernet and the derived networks).

    ``cifar``: conv3x3 (stride 1) + BN to ``stem_multiplier * channels``. ImageNet stems (paper Sec. 5.3,
    DARTS's ImageNet setting): ``stem0`` = conv3x3 s2 to ``channels // 2``, BN, ReLU, conv3x3 (s1 for
    ``imagenet``, s2 for ``imagenet_darts``), BN; ``stem1`` = ReLU, conv3x3 s2, BN. BNs are affine.
    """
    if stem_type not in STEM_STRIDES:
        raise ValueError(f'stem_type must be one of {STEM_TYPES}, got {stem_type!r}')
    if stem_type == 'cifar':
        c_stem = stem_multiplier * channels
        stem = nn.Sequential(*_conv_bn(in_chans, c_stem, 1))
        return Stem({'stem': stem}, {'stem': 1}, c_stem, c_stem, False)
    second = 1 if stem_type == 'imagenet' else 2
    half = max(channels // 2, 1)
    stem0 = nn.Sequential(*_conv_bn(in_chans, half, 2), nn.ReLU(inplace=True),
                          *_conv_bn(half, channels, second))
    stem1 = nn.Sequential(nn.ReLU(inplace=False), *_conv_bn(channels, channels, 2))
    strides = {'stem0': 2 * second, 'stem1': STEM_STRIDES[stem_type]}
    return Stem({'stem0': stem0, 'stem1': stem1}, strides, channels, channels, True)


def level_source(module: str) -> int:
    """What a feature level's ``module`` taps: -2 the stem's ``s0`` (``'stem0'``), -1 its ``s1`` (``'stem'``,
    ``'stem1'``), ``i`` the output of cell ``i`` (``'cells.i'``)."""
    if module.startswith('cells.'):
        return int(module.split('.')[1])
    return -2 if module == 'stem0' else -1


class CellNetwork:
    """Mixin of the modules made of a :func:`build_stem` stem and a :class:`CellStack` ``cells`` (the derived
    network, the detection backbone, the search supernet): the one stem dispatch and run of the cells."""

    def stem_states(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The first cell's inputs ``(s0, s1)``: the CIFAR stem's output twice, or ``stem0`` and ``stem1``."""
        if hasattr(self, 'stem'):  # resolved at compile time under TorchScript
            s = self.stem(x)
            return s, s
        s0 = self.stem0(x)
        return s0, self.stem1(s0)

    def run_cells(self, x: torch.Tensor, sources: List[int], end: Optional[int] = None,
                  with_aux: bool = False,
                  checkpointing: bool = False) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Run the stem and cells ``0 .. end - 1`` (all when ``None``); return the last output and those of
        ``sources`` (see :func:`level_source`), in that order."""
        s0, s1 = self.stem_states(x)
        last, tapped = self.cells(s0, s1, None, 0, end, sources, with_aux, checkpointing)
        tapped[-2] = s0
        tapped[-1] = s1
        return last, [tapped[s] for s in sources]


def _build_cells(geno: Genotype, stem: Stem, stem_type: str, c: int, drop_path_rate: float, prune: bool,
                 aux_target: int) -> Tuple[CellStack, Dict[int, Tuple[str, int, int]], int, int]:
    """The cells of ``geno`` after ``stem``, as :func:`plan_cells` keeps them for the last cell and
    ``aux_target``; also the feature levels (stride -> module, channels, source), the auxiliary head's input
    channels and the last cell's output channels."""
    n = geno.num_cells
    reads = [sorted({e.src for e in geno.live_gene(i, warn=False)} & {0, 1}) for i in range(n)]
    plan = plan_cells(reads, [n - 1], aux_target, prune)
    c_pp, c_p, reduction_prev, stride = stem.c_pp, stem.c_p, stem.reduction_prev, STEM_STRIDES[stem_type]
    levels = {s: (name, c_pp if name == 'stem0' else c_p, level_source(name))
              for name, s in stem.strides.items()}
    cells: List[nn.Module] = []
    aux_chs = 0
    for i in range(n):
        reduction = geno.is_reduction(i)
        if reduction:
            c *= 2
            stride *= 2
        if plan.built[i]:
            cell: nn.Module = Cell(geno, i, c_pp, c_p, c, reduction, reduction_prev, drop_path_rate, prune)
        else:
            cell = PrunedCell(geno.multiplier(i) * c, reduction)
        cells.append(cell)
        reduction_prev = reduction
        c_pp, c_p = c_p, cell.out_chs
        if plan.computed[i]:
            levels[stride] = (f'cells.{i}', cell.out_chs, i)
        if i == aux_target:
            aux_chs = cell.out_chs
    return CellStack(cells, reads, plan.aux_only), levels, aux_chs, c_p


class DDartsNet(CellNetwork, nn.Module):
    """A network derived from a D-DARTS / DARTOpti genotype.

    Args:
        genotype: a :class:`Genotype`, a shipped genotype name, a JSON/official-text path or a JSON dict.
        num_classes: classifier outputs (0 removes the classifier).
        in_chans: input image channels.
        init_channels: width ``C`` of the first cells.
        layers: number of cells; another count than the genotype's applies Algorithm 1
            (:meth:`~ddarts_zoo.genotype.Genotype.expand`).
        stem_type: one of :data:`STEM_TYPES` (see :func:`build_stem`).
        auxiliary: build the auxiliary head (used by :meth:`forward_train` in training mode only).
        drop_rate: dropout before the classifier.
        drop_path_rate: per-sample drop-path probability on each node's sum (training only).
        global_pool: timm pooling type ('avg', 'max', ..., '' for none).
        stem_multiplier: CIFAR stem width in units of ``C`` (3 in DARTS).
        prune_unused_inputs: build only what the outputs read (default), so that every parameter receives a
            gradient: the preprocessing of cell inputs no edge reads and the cells whose output reaches
            neither the classifier nor (with ``auxiliary``) the auxiliary head are left out. ``False`` builds
            the paper's networks, whose parameter counts include those modules.

    Attributes:
        pruned_modules: state-dict key prefixes (e.g. ``'cells.6.'``, ``'cells.7.preprocess1.'``) that the
            paper configuration (``prune_unused_inputs=False``, other arguments equal) has and this model
            omits; empty in the paper configuration.
        feature_info: one level per stride: the stem output(s), then the last cell at each stride that the
            classifier path computes.
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
            prune_unused_inputs: bool = True,
    ) -> None:
        super().__init__()
        geno = load_genotype(genotype)
        if layers is not None and layers != geno.num_cells:
            geno = geno.expand(layers)
        if stem_type not in STEM_STRIDES:
            raise ValueError(f'stem_type must be one of {STEM_TYPES}, got {stem_type!r}')
        if init_channels < 2 or init_channels % 2:
            raise ValueError(f'init_channels must be an even integer >= 2, got {init_channels}')
        self.genotype = geno
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.init_channels = init_channels
        self.drop_rate = drop_rate
        self.stem_type = stem_type
        self.prune_unused_inputs = prune_unused_inputs
        self.grad_checkpointing = False

        stem = build_stem(stem_type, in_chans, init_channels, stem_multiplier)
        for name, module in stem.modules.items():
            self.add_module(name, module)
        last_reduction = max(geno.reductions) if geno.reductions else -1
        with_aux = auxiliary and num_classes > 0 and last_reduction >= 0
        self.aux_index = last_reduction if with_aux else -1
        self.cells, levels, aux_chs, c_p = _build_cells(geno, stem, stem_type, init_channels, drop_path_rate,
                                                        prune_unused_inputs, self.aux_index)
        self.feature_info: List[Dict[str, Any]] = [
            dict(num_chs=ch, reduction=s, module=m) for s, (m, ch, _) in sorted(levels.items())]
        self._level_sources: List[int] = [src for _, (_, _, src) in sorted(levels.items())]
        self._aux_cfg = (aux_chs, 3 if stem_type == 'cifar' else 2)  # (input channels, pool stride)
        self.aux_head = AuxHead(aux_chs, num_classes, self._aux_cfg[1]) if with_aux else None

        self.num_features = self.head_hidden_size = c_p
        self.global_pool, self.classifier = create_classifier(c_p, num_classes, pool_type=global_pool)
        self.head_drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.pruned_modules: Tuple[str, ...] = self.cells.pruned_prefixes(geno.num_cells)
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
            self.aux_head = AuxHead(self._aux_cfg[0], num_classes, self._aux_cfg[1]) \
                if num_classes > 0 else None
            if self.aux_head is None:
                self.aux_index = -1

    def set_drop_path(self, rate: float) -> None:
        """Change the drop-path probability of every node (training recipes ramp it over epochs)."""
        self.cells.set_drop_path(rate)

    # ------------------------------------------------------------------ forward
    def _forward_cells(self, x: torch.Tensor, with_aux: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        sources: List[int] = []
        if with_aux and self.aux_index >= 0:
            sources.append(self.aux_index)
        last, taps = self.run_cells(x, sources, None, with_aux, self.grad_checkpointing)
        aux_input: Optional[torch.Tensor] = None
        if len(taps) > 0:
            aux_input = taps[0]
        return last, aux_input

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

    # ------------------------------------------------------------------ intermediate features (timm 1.0)
    def _take_levels(self, indices: Optional[Union[int, List[int]]]) -> Tuple[List[int], int]:
        n = len(self.feature_info)
        if indices is not None and not (0 < indices <= n if isinstance(indices, int) else
                                        len(indices) and all(-n <= i < n for i in indices)):
            levels = ', '.join(f'{i}: {f["module"]} (stride {f["reduction"]})'
                               for i, f in enumerate(self.feature_info))
            raise UserError(f'feature indices {indices!r} select no valid level: give None (all), a count '
                            f'1..{n} or a non-empty list of indices of the {n} levels ({levels})')
        take, max_index = feature_take_indices(n, indices)
        for i in take:
            src = self._level_sources[i]
            if src >= len(self.cells) or (src >= 0 and isinstance(self.cells[src], PrunedCell)):
                raise ValueError(f'feature level {i} ({self.feature_info[i]["module"]}) was removed by '
                                 f'prune_intermediate_layers')
        return take, max_index

    @torch.jit.ignore
    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The ``feature_info`` levels ``indices`` (int: the last n, None: all), in that order, and unless
        ``intermediates_only`` the final features. ``stop_early`` runs no cell past the deepest level taken;
        ``norm`` changes nothing (there is no final norm)."""
        if output_fmt != 'NCHW':
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take, max_index = self._take_levels(indices)
        end = self._level_sources[max_index] + 1 if stop_early else len(self.cells)
        last, intermediates = self.run_cells(x, [self._level_sources[i] for i in take], max(end, 0), False,
                                             self.grad_checkpointing)
        return intermediates if intermediates_only else (last, intermediates)

    @torch.jit.ignore
    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Keep what the ``feature_info`` levels ``indices`` need (timm's API; ``features_only`` calls it).

        Cells after the deepest level taken are removed, and unless ``prune_unused_inputs=False`` so are
        cells those levels do not read; ``prune_head`` removes the classifier and the auxiliary head.
        :attr:`pruned_modules` grows accordingly. Returns the absolute level indices.
        """
        take, max_index = self._take_levels(indices)
        last = self._level_sources[max_index]
        keep_aux = not prune_head and self.aux_head is not None and self.aux_index <= last
        targets = [self._level_sources[i] for i in take if self._level_sources[i] >= 0]
        self.cells = self.cells.pruned_for(last, targets, self.aux_index if keep_aux else -1,
                                           self.prune_unused_inputs)
        head: List[str] = [p for p in self.pruned_modules if not p.startswith('cells.')]
        if not keep_aux and self.aux_head is not None:
            head.append('aux_head.')
            self.aux_head, self.aux_index = None, -1
        if prune_head:
            if any(True for _ in self.classifier.parameters()):
                head.append('classifier.')
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
            self.reset_classifier(0, '')
        self.pruned_modules = self.cells.pruned_prefixes(self.genotype.num_cells) + tuple(sorted(set(head)))
        return take
