"""``ddarts-zoo export CHECKPOINT --out DIR``: a training checkpoint -> a Hub-ready folder.

The folder holds ``model.safetensors``, timm's ``config.json`` and a model card ``README.md``; it is written
atomically.  ``--model`` / ``--model-args`` / ``--dataset`` default to what ``ddarts-zoo train`` recorded in
the checkpoint, and ``metrics.json`` beside the checkpoint (if any) provides the measured accuracy.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, Optional

from ..errors import UnreadableFileError, UserError


def parse_json_object(text: str) -> Dict[str, Any]:
    """argparse type: a JSON object (model keyword arguments)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f'not valid JSON: {err}') from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('expected a JSON object, e.g. \'{"init_channels": 16}\'')
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('checkpoint', help='checkpoint.pth from `ddarts-zoo train`, a state dict (.pth / .safetensors)')
    parser.add_argument('--model', default=None, help='timm model name (default: the one recorded in the checkpoint)')
    parser.add_argument('--model-args', type=parse_json_object, default=None,
                        help='model keyword arguments as JSON (default: recorded in the checkpoint)')
    parser.add_argument('--dataset', default=None, help='dataset the weights were trained on (mean/std, input size)')
    parser.add_argument('--metrics', default=None, help='metrics JSON (default: metrics.json beside the checkpoint)')
    parser.add_argument('--name', default=None, help='name in the card, e.g. ddarts_dd1_cifar.digits')
    parser.add_argument('--repo-id', default=None, help='Hub repo id shown in the card\'s usage snippet')
    parser.add_argument('--notes', default='', help='free text for the card\'s "Notes" section')
    parser.add_argument('--out', required=True, help='output folder (replaced atomically)')


def target_dataset(model_name: str) -> Optional[str]:
    """The dataset of a registered model's paper configuration (``None`` for ``ddarts_genotype*``)."""
    from .. import zoo
    paper_config = zoo.PAPER_MODELS.get(model_name)
    return None if paper_config is None else paper_config.dataset


def _load_checkpoint(path: Path) -> Dict[str, Any]:
    """The checkpoint as a dict; a bare safetensors state dict is wrapped as ``{'state_dict': ...}``."""
    from ..convert import read_weights_file
    ckpt = read_weights_file(path, 'a checkpoint of `ddarts-zoo train` or a state dict (.pth / .safetensors)')
    return {'state_dict': ckpt} if path.suffix == '.safetensors' else ckpt


def _metrics(path: Optional[str], ckpt_path: Path) -> Optional[Dict[str, Any]]:
    candidate = Path(path) if path else ckpt_path.with_name('metrics.json')
    if not candidate.is_file():
        if path:
            raise UnreadableFileError(f'--metrics: no file {candidate}')
        return None
    try:
        metrics = json.loads(candidate.read_text(encoding='utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UnreadableFileError(f'{candidate}: not a metrics JSON file ({err})') from None
    if not isinstance(metrics, dict):
        raise UnreadableFileError(f'{candidate}: expected a JSON object of metrics, got {type(metrics).__name__}')
    return metrics


def run(args: argparse.Namespace) -> int:
    import timm

    import ddarts_zoo  # noqa: F401
    from ..convert import CheckpointError, load_state_dict_strict
    from ..export import export_model

    path = Path(args.checkpoint)
    ckpt = _load_checkpoint(path)
    model_name = args.model or ckpt.get('model_name')
    if not model_name:
        raise UserError(f'{path} does not record its model: pass --model NAME')
    model_args = args.model_args if args.model_args is not None else dict(ckpt.get('model_args') or {})
    dataset = args.dataset or ckpt.get('dataset') or target_dataset(model_name)
    if not dataset:
        raise UserError('pass --dataset (digits, cifar10, cifar100 or imagenet)')
    try:
        model = timm.create_model(model_name, pretrained=False, **model_args)
    except Exception as err:  # noqa: BLE001
        raise UserError(f'cannot build {model_name} with {model_args}: {type(err).__name__}: {err}') from err
    try:
        load_state_dict_strict(model, ckpt, str(path))
    except CheckpointError as err:
        raise CheckpointError(f'{err}\nPass the --model / --model-args the checkpoint was trained with.',
                              err.missing, err.unexpected, err.mis_shaped) from err
    metrics = _metrics(args.metrics, path)
    if metrics and metrics.get('model') not in (None, model_name):
        raise UserError(f'{args.metrics or "metrics.json"} describes {metrics["model"]}, not {model_name}')
    epoch = ckpt.get('epoch')
    source = 'trained by ddarts-zoo (`ddarts-zoo train`)' + (f', {epoch} epochs' if epoch else '')
    out = export_model(model, args.out, model_name=model_name, model_args=model_args, dataset=dataset,
                       metrics=metrics, name=args.name, source=source, repo_id=args.repo_id, notes=args.notes)
    top1 = f', top-1 {metrics["top1"]:.2f}%' if metrics else ''
    print(f'exported {model_name} ({dataset}{top1}) to {out}')
    return 0
