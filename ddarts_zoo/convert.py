"""The one strict state-dict loader, and the authors' checkpoint layout -> ours.

:func:`load_state_dict_strict` unwraps a checkpoint, converts the authors' layout when it finds it and loads
strictly: a missing, unexpected or mis-shaped key raises one :class:`CheckpointError` naming all of them and
the checkpoint.  Keys of modules a model prunes (``model.pruned_modules``) are dropped with a logged note.
:func:`read_weights_file` is the one reader of weights files a user may have received (safetensors, or
``torch.load`` of tensors only): no code in a file ever runs, and a bad file raises ``UnreadableFileError``.
The authors' keys differ from ours only in module paths (their ``cells.i._ops.{to}.{src}.{k}.op.*`` is our
``cells.i.nodes.{n}.ops.{j}.*``); :func:`official_key_map` computes the mapping from our model.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .errors import MissingFileError, UnreadableFileError, UserError, describe_file
from .ops import FactorizedReduce
from .utils.io import safe_torch_load

__all__ = ['CheckpointError', 'LoadReport', 'unwrap_state_dict', 'is_official_state_dict', 'to_model_layout',
           'drop_pruned_keys', 'match_state_dict', 'load_state_dict_strict', 'official_key_map',
           'convert_official_state_dict', 'load_official_checkpoint', 'read_weights_file']

_logger = logging.getLogger(__name__)
_WRAPPER_KEYS = ('state_dict', 'model', 'state_dict_ema')
_CHECK_ARGS_HINT = ('Check the model name and its arguments (init_channels, num_classes, layers, in_chans) '
                    'against the run that produced the checkpoint.')


class CheckpointError(UserError):
    """A checkpoint does not fit the model; the message names the checkpoint and every offending key."""

    def __init__(self, message: str, missing: Sequence[str] = (), unexpected: Sequence[str] = (),
                 mis_shaped: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.missing, self.unexpected, self.mis_shaped = list(missing), list(unexpected), list(mis_shaped)

    @classmethod
    def mismatch(cls, source: str, target: str, missing: Sequence[str] = (), unexpected: Sequence[str] = (),
                 mis_shaped: Sequence[str] = (), hint: str = _CHECK_ARGS_HINT) -> 'CheckpointError':
        """The error listing every missing, unexpected and mis-shaped key of ``source`` for ``target``."""
        err = cls('', missing, unexpected, mis_shaped)
        lines = [f'{source} does not fit {target}: {len(err.missing)} missing, {len(err.unexpected)} '
                 f'unexpected, {len(err.mis_shaped)} mis-shaped key(s)']
        for title, keys in err._groups(('missing from the checkpoint', 'unexpected in the checkpoint',
                                        'shape mismatch')):
            lines.append(f'{title}:\n  ' + '\n  '.join(keys))
        if hint:
            lines.append(hint)
        err.args = ('\n'.join(lines),)
        return err

    def _groups(self, titles: Sequence[str]) -> List[Tuple[str, List[str]]]:
        groups = zip(titles, (self.missing, self.unexpected, self.mis_shaped))
        return [(title, keys) for title, keys in groups if keys]

    def one_line(self) -> str:
        """The message's first line, at most 8 keys of each kind, and its last line (the hint)."""
        lines = str(self).split('\n')
        if not self._groups(('', '', '')):
            return super().one_line()
        tail = f' {lines[-1]}' if len(lines) > 1 and not lines[-1].startswith(' ') else ''
        return f'{lines[0]}; {self.summary()}.{tail}'

    def summary(self, limit: int = 8) -> str:
        """One line: ``missing N: k1, k2 ...; unexpected N: ...; shape mismatch N: ...`` (``limit`` keys each)."""
        def show(keys: List[str]) -> str:
            return ', '.join(keys[:limit]) + (f' ... (+{len(keys) - limit})' if len(keys) > limit else '')
        return '; '.join(f'{title} {len(keys)}: {show(keys)}'
                         for title, keys in self._groups(('missing', 'unexpected', 'shape mismatch')))


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What a strict load did besides copying tensors."""

    source: str
    loaded: int  # tensors taken from the checkpoint
    pruned: Tuple[str, ...] = ()  # checkpoint keys of modules the model prunes (dropped with a note)
    ignored: Tuple[str, ...] = ()  # checkpoint keys under the caller's ignored prefixes / the absent aux head
    filled: Tuple[str, ...] = ()  # BatchNorm ``num_batches_tracked`` absent from the checkpoint, kept from the model


# ---------------------------------------------------------------------------- reading files
def _read_safetensors(path: Path, expected: str) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    if not path.exists():
        raise MissingFileError(f'{describe_file(path)}: no such file; expected {expected}')
    try:
        return load_file(str(path), device='cpu')
    except Exception as err:  # noqa: BLE001 - SafetensorError (bad header / extent), OSError ...
        why = 'truncated or not a safetensors file' if path.is_file() and path.stat().st_size else 'unreadable'
        raise UnreadableFileError(f'{describe_file(path)}: {why} ({type(err).__name__}); '
                                  f'expected {expected}') from None


def read_weights_file(path: Union[str, 'os.PathLike[str]'],
                      expected: str = 'a state dict (.pth / .pt / .safetensors)') -> Dict[str, Any]:
    """A weights file as a dict: ``.safetensors`` (tensors), else ``torch.load`` with ``weights_only=True``.

    Raises :class:`UnreadableFileError` naming the file, its size and ``expected`` when it is missing, empty,
    truncated, random bytes, a pickle referring to code, or not a dict.
    """
    path = Path(path)
    if path.suffix == '.safetensors':
        return _read_safetensors(path, expected)
    ckpt = safe_torch_load(path, expected=expected)
    if not isinstance(ckpt, Mapping):
        raise UnreadableFileError(f'{describe_file(path)}: holds a {type(ckpt).__name__}; expected {expected}')
    return dict(ckpt)


# ---------------------------------------------------------------------------- checkpoint forms
def unwrap_state_dict(checkpoint: Mapping[str, Any]) -> Dict[str, Any]:
    """The state dict inside a ``{'state_dict' | 'model' | 'state_dict_ema': ...}`` wrapper, without ``module.``."""
    sd: Mapping[str, Any] = checkpoint
    for key in _WRAPPER_KEYS:
        if key in sd and isinstance(sd[key], Mapping):
            sd = sd[key]
            break
    if not all(isinstance(k, str) for k in sd):
        raise CheckpointError('the checkpoint is not a state dict (its keys are not all strings)')
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in sd.items()}


def is_official_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """True when the keys follow the authors' layout (``._ops.`` edges, ``.op.`` preprocessing, ``auxiliary_head``)."""
    return any('._ops.' in k or '.preprocess0.op.' in k or '.preprocess1.op.' in k or k.startswith('auxiliary_head.')
               for k in state_dict)


def to_model_layout(checkpoint: Mapping[str, Any], model: nn.Module, source: str = 'the checkpoint'
                    ) -> Dict[str, Any]:
    """Unwrap ``checkpoint``, convert the authors' layout (strictly) and drop keys of pruned modules."""
    sd = unwrap_state_dict(checkpoint)
    if is_official_state_dict(sd):
        return convert_official_state_dict(sd, model, source=source)
    return drop_pruned_keys(sd, model, source)[0]


def _pruned_prefixes(model: nn.Module) -> Tuple[str, ...]:
    return tuple(getattr(model, 'pruned_modules', ()) or ())


def drop_pruned_keys(state_dict: Mapping[str, Any], model: nn.Module, source: str
                     ) -> Tuple[Dict[str, Any], Tuple[str, ...]]:
    """Remove keys of modules ``model`` prunes (``model.pruned_modules`` prefixes), logging one note.

    Such modules exist in the paper configuration (``prune_unused_inputs=False``) but receive no gradient,
    so a checkpoint of that configuration has them and the pruned model has not.
    """
    prefixes = _pruned_prefixes(model)
    if not prefixes:
        return dict(state_dict), ()
    own = model.state_dict()
    dropped = tuple(k for k in state_dict if k not in own and k.startswith(prefixes))
    if dropped:
        hit = sorted({p for p in prefixes if any(k.startswith(p) for k in dropped)})
        _logger.info('%s: dropped %d key(s) of module(s) this model prunes (they get no gradient; the paper '
                        'configuration prune_unused_inputs=False keeps them): %s', source, len(dropped),
                        ', '.join(hit))
    gone = set(dropped)
    return {k: v for k, v in state_dict.items() if k not in gone}, dropped


def _describe(model: nn.Module) -> str:
    geno = getattr(model, 'genotype', None)
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    name = cfg.get('architecture') or type(model).__name__
    if geno is None:
        return name
    return (f'{name} ({getattr(geno, "name", None) or "genotype"}, {geno.num_cells} cells, '
            f'{getattr(model, "num_classes", "?")} classes)')


# ---------------------------------------------------------------------------- the strict loader
def match_state_dict(model: nn.Module, state_dict: Mapping[str, Any], source: str, *,
                     ignore: Sequence[str] = (), names: Optional[Mapping[str, str]] = None,
                     unexpected: Iterable[str] = (), target: Optional[str] = None
                     ) -> Tuple[Dict[str, torch.Tensor], LoadReport]:
    """Check a state dict in our layout against ``model``; return what ``load_state_dict(strict=True)`` takes.

    Dropped: keys under ``ignore`` prefixes, ``aux_head.*`` when ``model`` has no auxiliary head (a
    training-only branch) and keys of pruned modules (noted).  Missing ``num_batches_tracked`` buffers keep
    the model's value.  ``names`` maps our keys to the checkpoint's names for messages; ``unexpected`` adds
    checkpoint keys the caller already knows to be unexpected.

    Raises:
        CheckpointError: naming ``source`` and every missing, unexpected and mis-shaped key.
    """
    own = model.state_dict()
    names = names or {}
    ignore = tuple(ignore) + (() if any(k.startswith('aux_head.') for k in own) else ('aux_head.',))
    sd, pruned = drop_pruned_keys(state_dict, model, source)
    ignored = tuple(k for k in sd if k not in own and k.startswith(ignore))

    def label(key: str) -> str:
        theirs = names.get(key, key)
        return f'{theirs} (for {key})' if theirs != key else key

    out: Dict[str, torch.Tensor] = {}
    missing, mis_shaped, filled = [], [], []
    for key, want in own.items():
        if key not in sd:
            if key.endswith('num_batches_tracked'):
                out[key] = want
                filled.append(key)
            else:
                missing.append(label(key))
            continue
        value = sd[key]
        if not isinstance(value, torch.Tensor):
            mis_shaped.append(f'{names.get(key, key)}: not a tensor ({type(value).__name__})')
        elif value.shape != want.shape:
            theirs = names.get(key, key)
            mis_shaped.append(f'{theirs}: checkpoint {tuple(value.shape)} vs model {tuple(want.shape)}'
                              + (f' (for {key})' if theirs != key else ''))
        else:
            out[key] = value
    extra = list(unexpected) + [k for k in sd if k not in own and k not in ignored]
    if missing or extra or mis_shaped:
        raise CheckpointError.mismatch(source, target or _describe(model), missing, extra, mis_shaped)
    return out, LoadReport(source, len(out) - len(filled), pruned, ignored, tuple(filled))


def load_state_dict_strict(model: nn.Module, checkpoint: Mapping[str, Any], source: str, *,
                           ignore: Sequence[str] = (), target: Optional[str] = None) -> LoadReport:
    """Load ``checkpoint`` (ours or the authors', wrapped or not) into ``model``, strictly.

    ``source`` names the checkpoint in errors; see :func:`match_state_dict` for what is tolerated.
    """
    sd = unwrap_state_dict(checkpoint)
    if is_official_state_dict(sd):
        matched, report = _convert_official(sd, model, True, source, ignore=ignore, target=target)
    else:
        matched, report = match_state_dict(model, sd, source, ignore=ignore, target=target)
    model.load_state_dict(matched, strict=True)
    return report


# ---------------------------------------------------------------------------- the authors' layout
def _op_wrapper(op: nn.Module, op_name: str) -> str:
    """Path segment the authors put between an edge's index and the op's layers."""
    if isinstance(op, FactorizedReduce) or op_name == 'conv_7x1_1x7':
        return ''  # strided skip_connect is a bare FactorizedReduce; conv_7x1_1x7 a bare Sequential
    return 'op.'


def _cell_key_map(cell: nn.Module, live_gene: Tuple[Any, ...]) -> Dict[str, str]:
    """Our in-cell prefixes (``nodes.n.ops.j.``) -> the authors' (``_ops.to.from.k.[op.]``) for one cell."""
    out: Dict[str, str] = {}
    for p in ('preprocess0', 'preprocess1'):
        out[f'{p}.'] = f'{p}.' if isinstance(getattr(cell, p, None), FactorizedReduce) else f'{p}.op.'
    for n, (node_id, node) in enumerate(zip(cell.node_ids, cell.nodes)):
        edges = [e for e in live_gene if e.to == node_id]
        if len(edges) != len(node.ops):  # the network and its genotype disagree: a bug, not a user error
            raise RuntimeError(f'cell node {node_id}: the model has {len(node.ops)} ops but the genotype '
                               f'lists {len(edges)} live edges')
        for j, (edge, op) in enumerate(zip(edges, node.ops)):
            # k = rank among the gene's edges with the same (to, from) pair. Liveness is a property of the
            # pair, so the live gene keeps all or none of them, in gene order: counting live edges suffices.
            k = sum(1 for e in edges[:j] if (e.to, e.src) == (edge.to, edge.src))
            out[f'nodes.{n}.ops.{j}.'] = f'_ops.{edge.to}.{edge.src}.{k}.{_op_wrapper(op, edge.op)}'
    return out


def _official_key(key: str, cell_maps: List[Dict[str, str]]) -> str:
    if key.startswith('aux_head.'):
        return 'auxiliary_head.' + key[len('aux_head.'):]
    if key.startswith('cells.'):
        _, idx, rest = key.split('.', 2)
        for ours, theirs in cell_maps[int(idx)].items():
            if rest.startswith(ours):
                return f'cells.{idx}.{theirs}{rest[len(ours):]}'
    return key  # stems and classifier share our names


def official_key_map(model: nn.Module) -> Dict[str, str]:
    """Each key of ``model.state_dict()`` -> the authors' key holding the same tensor."""
    genotype = model.genotype
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # dead-node warnings were already given when the model was built
        maps = [_cell_key_map(cell, genotype.live_gene(i, warn=False)) for i, cell in enumerate(model.cells)]
    return {key: _official_key(key, maps) for key in model.state_dict()}


def _dead_edge_prefixes(model: nn.Module) -> Tuple[str, ...]:
    """The authors' key prefixes of edges our network drops as dead (their network never runs them either)."""
    genotype = model.genotype
    prefixes = []
    for i in range(len(model.cells)):
        live = set(genotype.live_gene(i, warn=False))
        prefixes += [f'cells.{i}._ops.{e.to}.{e.src}.' for e in genotype.genes[i] if e not in live]
    return tuple(prefixes)


def convert_official_state_dict(state_dict: Mapping[str, Any], model: nn.Module, allow_aux_drop: bool = True,
                                source: str = "the authors' checkpoint") -> Dict[str, torch.Tensor]:
    """Map an authors' state dict onto ``model``'s keys, strictly.

    Tolerated: ``auxiliary_head.*`` when ``model`` has none (``allow_aux_drop``); keys of dead edges (a
    warning); keys of modules ``model`` prunes (a logged note); absent ``num_batches_tracked``; a
    ``{'state_dict': ...}`` wrapper and ``module.`` prefixes.  Returns a state dict that
    ``model.load_state_dict(..., strict=True)`` accepts.

    Raises:
        CheckpointError: listing every missing, unexpected and mis-shaped key (authors' and our names).
    """
    return _convert_official(unwrap_state_dict(state_dict), model, allow_aux_drop, source)[0]


def _convert_official(sd: Mapping[str, Any], model: nn.Module, allow_aux_drop: bool, source: str, *,
                      ignore: Sequence[str] = (), target: Optional[str] = None
                      ) -> Tuple[Dict[str, torch.Tensor], LoadReport]:
    if not hasattr(model, 'cells') or not hasattr(model, 'genotype'):
        raise TypeError(f'convert_official_state_dict needs a DDartsNet, got {type(model).__name__}')
    key_map = official_key_map(model)
    ours_of = {theirs: ours for ours, theirs in key_map.items()}
    dead = _dead_edge_prefixes(model)
    dropped_dead = [k for k in sd if k not in ours_of and dead and k.startswith(dead)]
    renamed = {ours_of[k]: v for k, v in sd.items() if k in ours_of}
    leftover = {k: v for k, v in sd.items() if k not in ours_of and k not in dropped_dead}
    collide = [k for k in leftover if k in renamed]  # a key in our naming inside an authors' dict
    renamed.update((k, v) for k, v in leftover.items() if k not in renamed)
    has_aux = any(k.startswith('aux_head.') for k in key_map)
    ignore = tuple(ignore) + (('auxiliary_head.',) if allow_aux_drop and not has_aux else ())
    out, report = match_state_dict(model, renamed, source, ignore=ignore, names=key_map, unexpected=collide,
                                   target=target)
    if dropped_dead:
        warnings.warn(f'{len(dropped_dead)} checkpoint key(s) belong to dead edges that the network drops '
                      f'(e.g. {dropped_dead[0]}); they are ignored', UserWarning, stacklevel=3)
    return out, dataclasses.replace(report, ignored=report.ignored + tuple(dropped_dead))


def load_official_checkpoint(path: str, model: nn.Module) -> Dict[str, Any]:
    """Read an authors' ``.pth.tar`` (tensors only, see :func:`read_weights_file`) into ``model`` strictly.

    Returns the checkpoint's non-tensor metadata (``epoch``, accuracies ...), if any.
    """
    ckpt = read_weights_file(path, "an authors' checkpoint (torch.save({'state_dict': ...}))")
    load_state_dict_strict(model, ckpt, str(path))
    return {k: v for k, v in ckpt.items() if k not in ('state_dict', 'model', 'optimizer')
            and isinstance(v, (int, float, str, bool))}
