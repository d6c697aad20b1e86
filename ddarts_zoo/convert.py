"""Load the D-DARTS authors' checkpoints into :class:`~ddarts_zoo.network.DDartsNet`, strictly.

The authors save ``torch.save({'state_dict': ..., 'epoch': ...})`` of their CIFAR / ImageNet network
(SPEC section 7).  Their key layout differs from ours only in module paths:

=====================================================  ======================================================
authors                                                ddarts-zoo
=====================================================  ======================================================
``stem.{0,1}`` / ``stem0.{0,1,3,4}`` / ``stem1.{1,2}``  same
``cells.i.preprocess{0,1}.op.{1,2}`` (ReLUConvBN)      ``cells.i.preprocess{0,1}.{1,2}``
``cells.i.preprocess0.{conv_1,conv_2,bn}`` (FR)        same
``cells.i._ops.{to}.{from}.{k}.op.<layer>``            ``cells.i.nodes.{n}.ops.{j}.<layer>``
``cells.i._ops.{to}.{from}.{k}.<layer>``               (``conv_7x1_1x7``, strided ``skip_connect``: no ``.op``)
``auxiliary_head.{features,classifier}``               ``aux_head.{features,classifier}``
``classifier``                                         ``classifier``
=====================================================  ======================================================

``k`` counts the ops of one ``(to, from)`` pair in gene order; ``n`` is the node's position among the
cell's live nodes (sorted by index) and ``j`` the edge's position among the node's incoming edges in gene
order.  The mapping is computed from *our* model (each of our keys names the authors' key it needs), so
every key is accounted for: a missing, unexpected or mis-shaped key raises one :class:`CheckpointError`
listing all of them.  The authors loaded with ``strict=False``; we never do.

Tolerated on purpose (documented, never silent about anything else):

* ``auxiliary_head.*`` when the target model has no auxiliary head (a training-only branch): dropped.
* Keys of edges our network drops as dead (SPEC section 3, the genotype warns about them): dropped with a
  warning, since the authors' network never runs those edges either.
* ``num_batches_tracked`` absent from old checkpoints: set to 0 (it does not affect inference).
* A ``module.`` prefix (``nn.DataParallel``) and the ``{'state_dict': ...}`` wrapper.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, List, Mapping, Tuple

import torch
import torch.nn as nn

from .ops import FactorizedReduce

__all__ = ['CheckpointError', 'convert_official_state_dict', 'official_key_map', 'official_key',
           'is_official_state_dict', 'unwrap_state_dict', 'load_official_checkpoint']


class CheckpointError(ValueError):
    """A checkpoint does not fit the model; the message names every offending key."""


def unwrap_state_dict(checkpoint: Mapping[str, Any]) -> Dict[str, Any]:
    """The state dict inside a ``{'state_dict': ...}`` / ``{'model': ...}`` wrapper, without ``module.``."""
    sd: Mapping[str, Any] = checkpoint
    for key in ('state_dict', 'model'):
        if key in sd and isinstance(sd[key], Mapping):
            sd = sd[key]
            break
    if not all(isinstance(k, str) for k in sd):
        raise CheckpointError('the checkpoint is not a state dict (its keys are not all strings)')
    return {k[7:] if k.startswith('module.') else k: v for k, v in sd.items()}


def is_official_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """True when the keys follow the authors' layout (``._ops.`` edges or ``.op.`` preprocessing)."""
    return any('._ops.' in k or '.preprocess0.op.' in k or k.startswith('auxiliary_head.') for k in state_dict)


def _op_wrapper(op: nn.Module, op_name: str) -> str:
    """Path segment the authors put between an edge's index and the op's layers."""
    if isinstance(op, FactorizedReduce) or op_name == 'conv_7x1_1x7':
        return ''  # strided skip_connect is a bare FactorizedReduce; conv_7x1_1x7 a bare Sequential
    return 'op.'


def _cell_key_map(cell: nn.Module, live_gene: Tuple[Any, ...]) -> Dict[str, str]:
    """Our in-cell prefixes (``nodes.n.ops.j.``) -> the authors' (``_ops.to.from.k.[op.]``) for one cell."""
    out: Dict[str, str] = {}
    for p in ('preprocess0', 'preprocess1'):
        out[f'{p}.'] = f'{p}.' if isinstance(getattr(cell, p), FactorizedReduce) else f'{p}.op.'
    for n, (node_id, node) in enumerate(zip(cell.node_ids, cell.nodes)):
        edges = [e for e in live_gene if e.to == node_id]
        if len(edges) != len(node.ops):  # the network and its genotype disagree: a bug, not a user error
            raise CheckpointError(f'cell node {node_id}: the model has {len(node.ops)} ops but the genotype '
                                  f'lists {len(edges)} live edges')
        for j, (edge, op) in enumerate(zip(edges, node.ops)):
            # k = rank among the gene's edges with the same (to, from) pair. Liveness is a property of the
            # pair, so the live gene keeps all or none of them, in gene order: counting live edges suffices.
            k = sum(1 for e in edges[:j] if (e.to, e.src) == (edge.to, edge.src))
            out[f'nodes.{n}.ops.{j}.'] = f'_ops.{edge.to}.{edge.src}.{k}.{_op_wrapper(op, edge.op)}'
    return out


def official_key_map(model: nn.Module) -> Dict[str, str]:
    """Each key of ``model.state_dict()`` -> the authors' key holding the same tensor."""
    genotype = model.genotype
    maps = []
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # dead-node warnings were already given when the model was built
        for i, cell in enumerate(model.cells):
            maps.append(_cell_key_map(cell, genotype.live_gene(i, warn=False)))
    out: Dict[str, str] = {}
    for key in model.state_dict():
        out[key] = _official_key(key, maps)
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


def official_key(model: nn.Module, key: str) -> str:
    """The authors' name of one of our state-dict keys (builds the whole map: use :func:`official_key_map` in loops)."""
    return official_key_map(model)[key]


def _dead_edge_prefixes(model: nn.Module) -> List[str]:
    prefixes = []
    genotype = model.genotype
    for i in range(len(model.cells)):
        live = set(genotype.live_gene(i, warn=False))
        for e in genotype.genes[i]:
            if e not in live:
                prefixes.append(f'cells.{i}._ops.{e.to}.{e.src}.')
    return prefixes


def _describe(model: nn.Module) -> str:
    geno = getattr(model, 'genotype', None)
    name = getattr(model, 'pretrained_cfg', {}).get('architecture') or type(model).__name__
    cells = f', {geno.num_cells} cells' if geno is not None else ''
    return f'{name} ({getattr(geno, "name", None) or "genotype"}{cells}, {getattr(model, "num_classes", "?")} classes)'


def convert_official_state_dict(state_dict: Mapping[str, Any], model: nn.Module,
                                allow_aux_drop: bool = True) -> Dict[str, torch.Tensor]:
    """Map an authors' state dict onto ``model``'s keys, strictly.

    Args:
        state_dict: the authors' ``state_dict`` (or the checkpoint dict holding it).
        model: the target :class:`~ddarts_zoo.network.DDartsNet` (same genotype, width and classes).
        allow_aux_drop: drop ``auxiliary_head.*`` when ``model`` has no auxiliary head.

    Returns:
        A state dict in our layout that ``model.load_state_dict(..., strict=True)`` accepts.

    Raises:
        CheckpointError: listing every missing, unexpected and mis-shaped key (authors' and our names).
    """
    if not hasattr(model, 'cells') or not hasattr(model, 'genotype'):
        raise TypeError(f'convert_official_state_dict needs a DDartsNet, got {type(model).__name__}')
    source = unwrap_state_dict(state_dict)
    target = model.state_dict()
    key_map = official_key_map(model)

    out: Dict[str, torch.Tensor] = {}
    missing: List[str] = []
    mis_shaped: List[str] = []
    for ours, theirs in key_map.items():
        if theirs not in source:
            if ours.endswith('num_batches_tracked'):
                out[ours] = torch.zeros_like(target[ours])
                continue
            missing.append(f'{theirs} (for {ours})' if theirs != ours else theirs)
            continue
        value = source[theirs]
        if not isinstance(value, torch.Tensor):
            mis_shaped.append(f'{theirs}: not a tensor ({type(value).__name__})')
            continue
        if value.shape != target[ours].shape:
            mis_shaped.append(f'{theirs}: checkpoint {tuple(value.shape)} vs model {tuple(target[ours].shape)}'
                              + (f' (for {ours})' if theirs != ours else ''))
            continue
        out[ours] = value

    used = set(key_map.values())
    dead = _dead_edge_prefixes(model)
    unexpected, dropped_dead = [], []
    has_aux = any(k.startswith('aux_head.') for k in target)
    for key in source:
        if key in used:
            continue
        if key.startswith('auxiliary_head.') and not has_aux and allow_aux_drop:
            continue
        if any(key.startswith(p) for p in dead):
            dropped_dead.append(key)
            continue
        unexpected.append(key)

    if missing or unexpected or mis_shaped:
        parts = [f"the authors' checkpoint does not fit {_describe(model)}: {len(missing)} missing, "
                 f'{len(unexpected)} unexpected, {len(mis_shaped)} mis-shaped key(s)']
        for title, keys in (('missing from the checkpoint', missing), ('unexpected in the checkpoint', unexpected),
                            ('shape mismatch', mis_shaped)):
            if keys:
                parts.append(f'{title}:\n  ' + '\n  '.join(keys))
        parts.append('Check the model name, init_channels, num_classes and layers against the training run '
                     'that produced the checkpoint.')
        raise CheckpointError('\n'.join(parts))
    if dropped_dead:
        warnings.warn(f'{len(dropped_dead)} checkpoint key(s) belong to dead edges that the network drops '
                      f'(e.g. {dropped_dead[0]}); they are ignored', UserWarning, stacklevel=2)
    return out


def load_official_checkpoint(path: str, model: nn.Module) -> Dict[str, Any]:
    """Read an authors' ``.pth.tar`` (tensors only, ``weights_only=True``) and load it into ``model`` strictly.

    Returns the checkpoint's non-tensor metadata (``epoch``, accuracies ...), if any.
    """
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # unpickling refused or corrupt file: name the file, keep the reason
        raise CheckpointError(f'cannot read checkpoint {path!r}: {err}') from err
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f'{path}: expected a dict checkpoint, got {type(ckpt).__name__}')
    converted = convert_official_state_dict(ckpt, model)
    model.load_state_dict(converted, strict=True)
    meta = {k: v for k, v in ckpt.items() if k not in ('state_dict', 'model', 'optimizer')
            and isinstance(v, (int, float, str, bool))}
    return meta

