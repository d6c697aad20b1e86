"""Hub-ready export folders (weights, timm config, model card) and publishing them to the Hugging Face Hub.

:func:`export_model` writes ``model.safetensors``, timm's ``config.json`` and a model card ``README.md``
atomically; :func:`model_card` renders the card from the metadata it is given; :func:`publish_folder`
uploads a folder with ``huggingface_hub`` (honours ``HF_ENDPOINT`` and tokens).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Mapping, Optional, Union

from .errors import UnreadableFileError, describe_file
from .pretrained import check_safetensors
from .utils.io import atomic_dir, atomic_write
from .weights import WEIGHTS_FILE

__all__ = ['EXPORT_FILES', 'install_note', 'model_card', 'export_model', 'publish_folder']

EXPORT_FILES = (WEIGHTS_FILE, 'config.json', 'README.md')
PAPER_CITATION = ('A. Heuillet et al., "D-DARTS: Distributed Differentiable Architecture Search" '
                  '(authors\' code and genotypes: https://github.com/aheuillet/D-DARTS)')
DATASET_NOTES = {
    'digits': ('the UCI ML hand-written digits (as shipped by scikit-learn, embedded in ddarts-zoo): 8x8 grey '
               'images upsampled to 32x32, 1 channel, 10 classes; fixed seeded split of 1438 train / 359 held-out '
               'test images'),
    'cifar10': 'CIFAR-10 (50k train / 10k test, 32x32 RGB, 10 classes)',
    'cifar100': 'CIFAR-100 (50k train / 10k test, 32x32 RGB, 100 classes)',
    'imagenet': 'ImageNet-1k (1.28M train / 50k val, evaluated at 224x224 after resize 256 + center crop)',
}


def _fmt_int(n: Optional[int]) -> str:
    if n is None:
        return 'n/a'
    return f'{n / 1e6:.3f}M' if n >= 1e5 else f'{n:,}'


def install_note(model_name: str) -> list:
    """The card's first lines: timm alone does not know ``model_name``; how to install, import ddarts-zoo."""
    return [
        f'> **Needs the `ddarts-zoo` package.** timm alone does not know `{model_name}` and stops with '
        f'`RuntimeError: Unknown model ({model_name})`. Install it (`pip install ddarts-zoo`, or '
        f'`pip install -e .` in a clone of the ddarts-zoo repository) and run `import ddarts_zoo` before '
        f'`timm.create_model(...)`: the import registers the `ddarts_*` models with timm.',
    ]


def _accuracy_section(metrics: Optional[Mapping[str, Any]], dataset: str) -> List[str]:
    """The card's training recipe and held-out accuracy, from a training run's ``metrics.json``."""
    if not metrics:
        return ['', '## Accuracy', '', 'Not measured by ddarts-zoo for these weights.']
    lines: List[str] = []
    recipe = metrics.get('recipe') or {}
    if recipe:
        lines += ['', '## Training recipe', '', '| setting | value |', '|---|---|']
        lines += [f'| {k} | {v} |' for k, v in recipe.items()]
        if metrics.get('train_time_s') is not None:
            threads = f', {metrics["cpu_threads"]} thread(s)' if metrics.get('device') == 'cpu' and \
                metrics.get('cpu_threads') else ''
            world = f', {metrics["world_size"]} processes' if (metrics.get('world_size') or 1) > 1 else ''
            lines.append(f'| training time | {metrics["train_time_s"]} s on {metrics.get("device", "?")}'
                         f'{threads}{world} |')
    lines += ['', '## Accuracy', '', '| split | images | top-1 (%) | top-5 (%) |', '|---|---|---|---|',
              f'| {metrics.get("dataset", dataset)} {metrics.get("split", "test")} '
              f'| {metrics.get("num_images", "?")} | {metrics["top1"]:.2f} | {metrics["top5"]:.2f} |', '',
              'Measured on the held-out split after the last epoch (no checkpoint selection on that split).']
    return lines


def model_card(*, name: str, model_name: str, model_args: Mapping[str, Any], dataset: str, params: int,
               macs: Optional[int], input_size: tuple, genotype: Optional[Mapping[str, Any]] = None,
               metrics: Optional[Mapping[str, Any]] = None, source: str = '', repo_id: Optional[str] = None,
               license: str = 'apache-2.0', notes: str = '') -> str:
    """Markdown model card (Hub YAML header + dataset, recipe, accuracy, size, usage, credit).

    ``genotype`` describes a shipped genotype (``name``, ``paper_name``, ``source``, ``search_dataset``,
    ``parsing``: its provenance metadata); ``None`` for one passed in ``model_args``.
    """
    geno_line = ''
    if genotype:
        geno_name = genotype.get('name') or '?'
        geno_line = (f'- **Genotype**: `{geno_name}` ({genotype.get("paper_name", geno_name)}; authors\' file '
                     f'`{Path(str(genotype.get("source", "?"))).name}`, searched on '
                     f'{genotype.get("search_dataset", "?")}, {genotype.get("parsing", "?")} parsing)\n')
    elif 'genotype' in model_args:
        geno_line = '- **Genotype**: stored in `config.json` (`model_args.genotype`)\n'
    shown_args = {k: v for k, v in model_args.items() if k != 'genotype'}
    lines = [
        '---', f'license: {license}', 'library_name: timm', 'pipeline_tag: image-classification',
        'tags:', '- image-classification', '- timm', '- ddarts-zoo', '- neural-architecture-search', '---', '',
        f'# {name}', '',
        *install_note(model_name), '',
        f'A D-DARTS network (`{model_name}`) for image classification on **{dataset}**, '
        f'packaged for [timm](https://github.com/huggingface/pytorch-image-models) by ddarts-zoo.', '',
        '## Model details', '',
        f'- **Architecture**: `{model_name}` with `{json.dumps(shown_args, sort_keys=True)}`\n{geno_line.rstrip()}',
        f'- **Parameters**: {_fmt_int(params)} (the network as `timm.create_model` loads it: no auxiliary '
        f'head, no module that the output does not read)',
        f'- **MACs**: {_fmt_int(macs)} at input {tuple(input_size)}',
        f'- **Dataset**: {dataset}: {DATASET_NOTES.get(dataset, "see the training recipe")}',
    ]
    if source:
        lines.append(f'- **Weights**: {source}')
    if notes:
        lines += ['', '## Notes', '', notes.strip()]
    lines += _accuracy_section(metrics, dataset)
    ref = f'hf-hub:{repo_id}' if repo_id else 'local-dir:/path/to/this/folder'
    lines += [
        '', '## Usage', '', '```python', 'import timm',
        'import ddarts_zoo  # registers the ddarts_* models with timm', '',
        f'model = timm.create_model("{ref}", pretrained=True).eval()',
    ]
    if name != model_name and '.' in name:
        lines.append(f'# or, with ddarts-zoo installed: timm.create_model("{name}", pretrained=True)')
    lines += [
        'cfg = timm.data.resolve_data_config({}, model=model)  # mean / std / input size of these weights',
        '```', '', '## Credit and license', '',
        f'- Paper: {PAPER_CITATION}.',
        '- Genotypes: from the authors\' public release (Apache-2.0).',
        f'- These weights and this card: ddarts-zoo, license {license}.', '',
    ]
    return '\n'.join(lines)


def _genotype_card(model: Any, model_args: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    """Card metadata of the model's shipped genotype (``None`` when ``model_args`` carries the genotype)."""
    geno = getattr(model, 'genotype', None)
    if geno is None or 'genotype' in model_args or not geno.meta.get('source'):
        return None
    return dict(geno.meta, name=geno.name)


def export_model(model: Any, out: Union[str, Path], *, model_name: str, model_args: Mapping[str, Any],
                 dataset: str, metrics: Optional[Mapping[str, Any]] = None, name: Optional[str] = None,
                 source: str = '', repo_id: Optional[str] = None, notes: str = '') -> Path:
    """Write a Hub-ready folder for ``model`` (built by ``timm.create_model(model_name, **model_args)``).

    Writes ``model.safetensors`` and ``config.json`` (timm's ``save_for_hf``: ``architecture``,
    ``num_classes``, ``model_args``, ``pretrained_cfg`` with the dataset's mean / std / input size) and a model
    card ``README.md``; the folder appears complete or not at all.
    """
    import timm.models
    from .complexity import count_macs, count_params
    from .data import dataset_info

    model_args = json.loads(json.dumps(dict(model_args)))  # must be JSON: fail here, not in a user's load
    info = dataset_info(dataset)
    model = model.eval().cpu()
    in_chans = getattr(model, 'in_chans', info.in_chans)
    input_size = (in_chans, info.image_size, info.image_size)
    params = count_params(model, include_aux=False)
    macs = count_macs(model, input_size)
    name = name or model_name
    tag = name.split('.', 1)[1] if '.' in name else None
    cfg = dict(getattr(model, 'pretrained_cfg', {}) or {})
    cfg.update(num_classes=model.num_classes, input_size=input_size, mean=tuple(info.mean), std=tuple(info.std),
               crop_pct=1.0 if info.image_size <= 64 else 0.875, architecture=model_name,
               license='apache-2.0', description=f'{model_name} trained on {dataset}')
    cfg.pop('pool_size', None)  # timm recomputes nothing from it; a stale value would mislead
    if tag:
        cfg['tag'] = tag
    for key in ('url', 'file', 'state_dict', 'hf_hub_id', 'hf_hub_filename', 'source'):
        cfg.pop(key, None)
    extra = dict(name=name, dataset=dataset, params=params, macs=macs)
    if metrics:
        extra.update({k: metrics[k] for k in ('top1', 'top5', 'split', 'num_images', 'epochs', 'train_time_s')
                      if k in metrics})
    saved_cfg = getattr(model, 'pretrained_cfg', None)
    model.pretrained_cfg = cfg  # save_for_hf writes the model's pretrained_cfg: describe these weights
    try:
        with atomic_dir(out) as tmp:
            timm.models.save_for_hf(model, tmp, model_args=model_args, safe_serialization=True,
                                    model_config={'ddarts_zoo': extra})
            card = model_card(name=name, model_name=model_name, model_args=model_args, dataset=dataset,
                              params=params, macs=macs, input_size=input_size,
                              genotype=_genotype_card(model, model_args), metrics=metrics, source=source,
                              repo_id=repo_id, notes=notes)
            atomic_write(tmp / 'README.md', card)
    finally:
        model.pretrained_cfg = saved_cfg
    return Path(out)


# ---------------------------------------------------------------------------------------------- publish
def publish_folder(folder: Union[str, Path], repo_id: str, *, token: Optional[str] = None, private: bool = False,
                   revision: Optional[str] = None, commit_message: Optional[str] = None) -> str:
    """Create ``repo_id`` if needed and upload an export folder; returns the commit URL.

    Uses ``huggingface_hub.HfApi`` with its usual configuration: ``HF_ENDPOINT`` for the server and
    ``HF_TOKEN`` / ``hf auth login`` for credentials unless ``token`` is given.
    """
    folder = Path(folder)
    missing = [f for f in EXPORT_FILES if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f'{folder} is not an export folder: missing {", ".join(missing)} '
                                f'(create it with `ddarts-zoo export`)')
    check_safetensors(folder / WEIGHTS_FILE, str(folder))
    try:
        config = json.loads((folder / 'config.json').read_text(encoding='utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UnreadableFileError(f'{describe_file(folder / "config.json")}: not JSON ({err}); expected timm\'s '
                                  f'config.json') from None
    if not isinstance(config, dict) or 'architecture' not in config or 'pretrained_cfg' not in config:
        raise UnreadableFileError(f'{folder / "config.json"} is not a timm config (no architecture / pretrained_cfg)')
    from huggingface_hub import HfApi
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, revision=revision,
                                 allow_patterns=list(EXPORT_FILES),
                                 commit_message=commit_message or f'Upload {config["architecture"]} ({folder.name})')
    except Exception as err:  # noqa: BLE001
        from huggingface_hub import constants
        raise RuntimeError(f'publishing {folder} to {repo_id} at HF_ENDPOINT={constants.ENDPOINT} failed: '
                           f'{type(err).__name__}: {err}. Check the token (HF_TOKEN or `hf auth login`) and that '
                           f'you may write to {repo_id.split("/")[0]!r}.') from err
    return str(getattr(info, 'commit_url', info))
