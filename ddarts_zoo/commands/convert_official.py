"""``ddarts-zoo convert-official CHECKPOINT --model NAME --out DIR``: an authors' checkpoint -> an export folder.

The authors' key layout is mapped strictly onto ours (:mod:`ddarts_zoo.convert`); every missing, unexpected
or mis-shaped key is reported.  The auxiliary head of a training checkpoint is dropped (inference model).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import MissingFileError, UserError, describe_file
from .export import parse_json_object, target_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('checkpoint', help="the authors' checkpoint (torch.save({'state_dict': ...}))")
    parser.add_argument('--model', required=True, help='timm model name, e.g. ddarts_dd1_cifar')
    parser.add_argument('--init-channels', type=int, default=None, help='width C the checkpoint was trained with')
    parser.add_argument('--num-classes', type=int, default=None, help='classifier outputs of the checkpoint')
    parser.add_argument('--model-args', type=parse_json_object, default={}, help='other model arguments as JSON')
    parser.add_argument('--dataset', default=None, help='dataset of the weights (default: the model\'s target)')
    parser.add_argument('--name', default=None, help='name in the card')
    parser.add_argument('--repo-id', default=None, help='Hub repo id shown in the card\'s usage snippet')
    parser.add_argument('--out', required=True, help='output folder (replaced atomically)')


def run(args: argparse.Namespace) -> int:
    import timm

    import ddarts_zoo  # noqa: F401
    from ..convert import load_official_checkpoint
    from ..data import dataset_info
    from ..export import export_model

    model_args = dict(args.model_args)
    if args.init_channels is not None:
        model_args['init_channels'] = args.init_channels
    if args.num_classes is not None:
        model_args['num_classes'] = args.num_classes
    try:
        model = timm.create_model(args.model, pretrained=False, **model_args)
    except Exception as err:  # noqa: BLE001
        raise UserError(f'cannot build {args.model} with {model_args}: {type(err).__name__}: {err}') from err
    dataset = args.dataset or target_dataset(args.model)
    if not dataset:
        raise UserError('pass --dataset (cifar10, cifar100 or imagenet)')
    if dataset_info(dataset).num_classes != model.num_classes:
        raise UserError(f'{args.model} has {model.num_classes} classes but {dataset} has '
                         f'{dataset_info(dataset).num_classes}: pass --dataset or --num-classes')
    path = Path(args.checkpoint)
    if not path.is_file():
        raise MissingFileError(f"{describe_file(path)}: no checkpoint there; expected an authors' checkpoint")
    meta = load_official_checkpoint(str(path), model)
    epoch = f', epoch {meta["epoch"]}' if 'epoch' in meta else ''
    source = f"converted from the authors' checkpoint `{path.name}`{epoch} (accuracy not re-measured)"
    out = export_model(model, args.out, model_name=args.model, model_args=model_args, dataset=dataset,
                       name=args.name, source=source, repo_id=args.repo_id)
    print(f'converted {path} -> {out}')
    return 0
