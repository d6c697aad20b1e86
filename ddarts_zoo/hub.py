"""Hugging Face Hub side of the zoo: export folders, publishing, and pretrained-weight errors a user can act on.

* :func:`export_model` writes a Hub-ready folder (``model.safetensors``, timm's ``config.json``, a model card
  ``README.md``) atomically: everything goes into a temporary sibling folder that is renamed into place.
* :func:`publish_folder` uploads such a folder with ``huggingface_hub`` (honours ``HF_ENDPOINT`` and tokens).
* :func:`prepare_pretrained` / :func:`pretrained_errors` wrap timm's pretrained loading for the ``ddarts_*``
  models: an unreachable Hub or a missing repo / file fails within seconds (no retry loop) with one message
  naming the model, repo, file and endpoint plus the offline alternatives; a truncated or corrupt
  safetensors file names the file; keys or shapes that do not fit name the keys.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Union

__all__ = [
    'HUB_ORG', 'WEIGHTS_FILE', 'PretrainedWeightsError', 'WeightsUnavailableError', 'CorruptWeightsError',
    'WeightsMismatchError', 'WeightsSource', 'resolve_weights_source', 'check_safetensors', 'fetch_hub_file',
    'prepare_pretrained', 'pretrained_errors', 'export_model', 'model_card', 'publish_folder',
    'atomic_write_dir',
]

HUB_ORG = 'ddarts-zoo'  # the organisation of the published repos (same value as ddarts_zoo.weights.HUB_ORG)
WEIGHTS_FILE = 'model.safetensors'
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


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights could not be loaded; the message says which and what to do."""


class WeightsUnavailableError(PretrainedWeightsError):
    """The Hub is unreachable, or the repo / file does not exist there (and nothing is cached)."""


class CorruptWeightsError(PretrainedWeightsError):
    """A weights file exists but cannot be read (truncated download, not a safetensors file ...)."""


class WeightsMismatchError(PretrainedWeightsError):
    """The weights do not fit the model that was built (missing / unexpected keys, shapes)."""


# ---------------------------------------------------------------------------------------------- sources
@dataclasses.dataclass(frozen=True)
class WeightsSource:
    """Where timm will read a pretrained cfg's weights from."""

    kind: str  # 'hf-hub', 'file', 'local-dir', 'state_dict', 'url' or '' (no weights)
    repo_id: Optional[str] = None
    revision: Optional[str] = None
    filename: Optional[str] = None
    path: Optional[str] = None
    label: str = ''  # the model name the user asked for ('model.tag'), for messages

    def describe(self) -> str:
        if self.kind == 'hf-hub':
            rev = f'@{self.revision}' if self.revision else ''
            return f'Hub repo {self.repo_id}{rev}, file {self.filename}'
        if self.kind in ('file', 'local-dir', 'url'):
            return f'{self.kind} {self.path}'
        return self.kind or 'no source'


def resolve_weights_source(cfg: Mapping[str, Any]) -> WeightsSource:
    """Mirror of timm's source priority: ``source=hf-hub|local-dir``, then state_dict, file, hf_hub_id, url."""
    source = cfg.get('source') or ''
    hub_id = cfg.get('hf_hub_id')
    if source == 'local-dir':
        return WeightsSource('local-dir', path=cfg.get('file'))
    if source != 'hf-hub':
        if cfg.get('state_dict'):
            return WeightsSource('state_dict')
        if cfg.get('file'):
            return WeightsSource('file', path=str(cfg['file']))
    if hub_id:
        repo_id, _, revision = str(hub_id).partition('@')
        # without hf_hub_filename timm asks for pytorch_model.bin and falls back to model.safetensors
        return WeightsSource('hf-hub', repo_id=repo_id, revision=revision or None,
                             filename=cfg.get('hf_hub_filename') or WEIGHTS_FILE)
    if cfg.get('url'):
        return WeightsSource('url', path=str(cfg['url']))
    return WeightsSource('')


def _endpoint() -> str:
    from huggingface_hub import constants
    return constants.ENDPOINT


def _offline_hint(model_name: str, source: WeightsSource) -> str:
    from .weights import PRETRAINED_TAGS, local_weights_dir
    shipped = local_weights_dir(model_name)
    published = PRETRAINED_TAGS.get(model_name, {}).get('hf_hub_id')
    if published == source.repo_id and (shipped / WEIGHTS_FILE).is_file():  # its export folder ships with us
        folder, weights = str(shipped), str(shipped / WEIGHTS_FILE)
    else:
        folder = f'/path/to/{source.repo_id.split("/")[-1] if source.repo_id else "export_folder"}'
        weights = f'/path/to/{WEIGHTS_FILE}'
    return (f'Offline alternatives: timm.create_model("local-dir:{folder}", pretrained=True), or '
            f'timm.create_model("{model_name}", pretrained=True, pretrained_cfg_overlay=dict(file="{weights}")); '
            f'a warm Hugging Face cache also works with HF_HUB_OFFLINE=1.')


def fetch_hub_file(model_name: str, repo_id: str, filename: str, revision: Optional[str] = None,
                   cache_dir: Optional[Union[str, Path]] = None) -> str:
    """Download (or find in the cache) one file of a Hub repo, failing fast with an actionable message.

    ``hf_hub_download`` alone retries a failed metadata request for up to a minute when nothing is cached;
    one metadata request (``HF_HUB_ETAG_TIMEOUT`` seconds at most, no retries) is made first instead.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url, \
        try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
    try:
        if not isinstance(cached, str) and not constants.HF_HUB_OFFLINE:
            get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision),
                                 timeout=constants.HF_HUB_ETAG_TIMEOUT)
        return hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir)
    except Exception as err:  # noqa: BLE001 - every failure here becomes the one actionable message
        raise WeightsUnavailableError(_unavailable_message(model_name, WeightsSource(
            'hf-hub', repo_id, revision, filename), err)) from err


def _unavailable_message(model_name: str, source: WeightsSource, err: BaseException) -> str:
    from huggingface_hub import constants
    reason = type(err).__name__
    detail = str(err).strip().splitlines()[0][:300] if str(err).strip() else ''
    if reason in ('RepositoryNotFoundError', 'GatedRepoError'):
        what = 'the repository does not exist there or is not accessible (a token may be needed: HF_TOKEN)'
    elif reason in ('EntryNotFoundError', 'RemoteEntryNotFoundError', 'RevisionNotFoundError'):
        what = 'the repository exists but has no such file / revision'
    elif constants.HF_HUB_OFFLINE:
        what = 'HF_HUB_OFFLINE is set and the file is not in the cache'
    else:
        what = 'the Hub could not be reached and the file is not in the cache'
    return (f'{model_name}: cannot get pretrained weights from {source.describe()} at HF_ENDPOINT={_endpoint()}: '
            f'{what} ({reason}: {detail}).\n{_offline_hint(model_name, source)}')


def check_safetensors(path: Union[str, Path], model_name: str = 'model', hint: str = '') -> None:
    """Check a safetensors header and every tensor's extent; raise :class:`CorruptWeightsError` naming the file."""
    from safetensors import safe_open
    path = Path(path)
    try:
        with safe_open(str(path), framework='pt', device='cpu') as f:
            for key in f.keys():
                f.get_slice(key)  # validates each tensor's offsets against the file size
    except Exception as err:  # noqa: BLE001 - SafetensorError, OSError, ...
        size = path.stat().st_size if path.exists() else 0
        raise CorruptWeightsError(
            f'{model_name}: the weights file {path} ({size} bytes) is not a readable safetensors file '
            f'({type(err).__name__}: {err}). It is probably truncated or corrupt: '
            f'{hint or "replace it with a good copy (re-export or download it again)"}.') from err


def _local_weights_file(folder: Union[str, Path]) -> Optional[Path]:
    candidate = Path(folder) / WEIGHTS_FILE
    return candidate if candidate.is_file() else None


def prepare_pretrained(variant: str, kwargs: Mapping[str, Any]) -> WeightsSource:
    """Check, before timm builds the model, that the pretrained weights can be had and read.

    Hub weights are fetched into the cache with a fast failure (timm then reads them from the cache);
    local safetensors files are validated.  Returns the resolved source for later error messages.
    """
    from timm.models import resolve_pretrained_cfg
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get('pretrained_cfg'),
                                 pretrained_cfg_overlay=kwargs.get('pretrained_cfg_overlay')).to_dict()
    source = resolve_weights_source(cfg)
    tag = kwargs.get('pretrained_cfg') if isinstance(kwargs.get('pretrained_cfg'), str) else cfg.get('tag')
    label = f'{variant}.{tag}' if tag else variant
    if not source.kind:
        from .weights import published_tags
        tags = published_tags(variant)
        hint = (f'published weights: {", ".join(tags)} (e.g. timm.create_model("{tags[0]}", pretrained=True))'
                if tags else 'no weights are published for this architecture yet')
        raise WeightsUnavailableError(f'{label}: this configuration has no pretrained weights; {hint}. Pass '
                                      f'pretrained_cfg_overlay=dict(file=PATH) to load your own.')
    if source.kind == 'hf-hub':
        try:
            path = fetch_hub_file(label, source.repo_id, source.filename, source.revision, kwargs.get('cache_dir'))
        except WeightsUnavailableError as err:
            # no explicit hf_hub_filename (e.g. an `hf-hub:` name): timm falls back to pytorch_model.bin, so do we
            if cfg.get('hf_hub_filename') or 'EntryNotFound' not in type(err.__cause__).__name__:
                raise
            source = dataclasses.replace(source, filename='pytorch_model.bin')
            path = fetch_hub_file(label, source.repo_id, source.filename, source.revision, kwargs.get('cache_dir'))
        if path.endswith('.safetensors'):
            check_safetensors(path, label, hint=f'remove the cached copy (`hf cache rm model/{source.repo_id}`) '
                                                f'and retry; if it persists, the file on the Hub is damaged')
        source = WeightsSource('hf-hub', source.repo_id, source.revision, source.filename, path, label)
    elif source.kind in ('file', 'local-dir'):
        path = Path(source.path or '')
        target = _local_weights_file(path) if source.kind == 'local-dir' else path
        if source.kind == 'file' and not path.is_file():
            raise WeightsUnavailableError(f'{label}: pretrained weights file {path} does not exist')
        if target is not None and target.suffix == '.safetensors':
            check_safetensors(target, label)
    return dataclasses.replace(source, label=label)


@contextlib.contextmanager
def pretrained_errors(variant: str, source: Optional[WeightsSource]) -> Iterator[None]:
    """Turn the errors of timm's pretrained loading into :class:`PretrainedWeightsError` subclasses."""
    where = source.describe() if source is not None else 'the pretrained source'
    variant = (source.label if source is not None and source.label else variant)
    try:
        yield
    except PretrainedWeightsError:
        raise
    except Exception as err:  # noqa: BLE001 - re-raised with context, original chained
        name = type(err).__name__
        text = str(err)
        if 'Error(s) in loading state_dict' in text or name == 'CheckpointError':
            raise WeightsMismatchError(
                f'{variant}: the weights from {where} do not fit the model that was built. Build it with the '
                f'model arguments recorded with the weights (config.json "model_args"); pass num_classes=N '
                f'to get a fresh classifier for another number of classes.\n{text}') from err
        if name == 'SafetensorError' or ('safetensors' in text.lower() and 'header' in text.lower()):
            raise CorruptWeightsError(f'{variant}: cannot read the weights from {where}: {text}') from err
        if name in ('LocalEntryNotFoundError', 'RepositoryNotFoundError', 'EntryNotFoundError',
                    'RemoteEntryNotFoundError', 'RevisionNotFoundError', 'HfHubHTTPError', 'OfflineModeIsEnabled',
                    'ConnectError', 'ConnectTimeout'):
            raise WeightsUnavailableError(_unavailable_message(variant, source or WeightsSource(''), err)) from err
        raise


# ---------------------------------------------------------------------------------------------- export
def atomic_write_dir(out: Union[str, Path]) -> 'contextlib.AbstractContextManager[Path]':
    """Context manager yielding a temporary folder that replaces ``out`` when the block succeeds."""
    return _AtomicDir(Path(out))


class _AtomicDir:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.tmp: Optional[Path] = None

    def __enter__(self) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f'.{self.out.name}.', suffix='.tmp', dir=self.out.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.tmp is not None
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        # mkdtemp / mkstemp-style modes (0700 / 0600) would keep a published folder from other users
        os.chmod(self.tmp, 0o755)
        for path in self.tmp.rglob('*'):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        old = None
        if self.out.exists():  # a folder cannot be os.replace'd over a non-empty one: move it aside first
            old = self.out.with_name(f'.{self.out.name}.old-{os.getpid()}')
            os.replace(self.out, old)
        try:
            os.replace(self.tmp, self.out)
        except BaseException:
            if old is not None:
                os.replace(old, self.out)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _fmt_int(n: Optional[int]) -> str:
    if n is None:
        return 'n/a'
    return f'{n / 1e6:.3f}M' if n >= 1e5 else f'{n:,}'


def model_card(*, name: str, model_name: str, model_args: Mapping[str, Any], dataset: str, params: int,
               macs: Optional[int], input_size: tuple, metrics: Optional[Mapping[str, Any]] = None,
               source: str = '', repo_id: Optional[str] = None, license: str = 'apache-2.0',
               notes: str = '') -> str:
    """Markdown model card (Hub YAML header + dataset, recipe, accuracy, size, usage, credit)."""
    from . import genotypes as shipped
    from .zoo import MODEL_SPECS
    geno_name = MODEL_SPECS.get(model_name, (None,))[0]
    geno_line = ''
    if geno_name:
        meta = shipped.info(geno_name)
        geno_line = (f'- **Genotype**: `{geno_name}` ({meta.get("paper_name", geno_name)}; authors\' file '
                     f'`{Path(str(meta.get("source", "?"))).name}`, searched on {meta.get("search_dataset", "?")}, '
                     f'{meta.get("parsing", "?")} parsing)\n')
    elif 'genotype' in model_args:
        geno_line = '- **Genotype**: stored in `config.json` (`model_args.genotype`)\n'
    shown_args = {k: v for k, v in model_args.items() if k != 'genotype'}
    lines = [
        '---', f'license: {license}', 'library_name: timm', 'pipeline_tag: image-classification',
        'tags:', '- image-classification', '- timm', '- ddarts-zoo', '- neural-architecture-search', '---', '',
        f'# {name}', '',
        f'A D-DARTS network (`{model_name}`) for image classification on **{dataset}**, '
        f'packaged for [timm](https://github.com/huggingface/pytorch-image-models) by ddarts-zoo.', '',
        '## Model details', '',
        f'- **Architecture**: `{model_name}` with `{json.dumps(shown_args, sort_keys=True)}`\n{geno_line.rstrip()}',
        f'- **Parameters**: {_fmt_int(params)} (inference network, no auxiliary head)',
        f'- **MACs**: {_fmt_int(macs)} at input {tuple(input_size)}',
        f'- **Dataset**: {dataset}: {DATASET_NOTES.get(dataset, "see the training recipe")}',
    ]
    if source:
        lines.append(f'- **Weights**: {source}')
    if notes:
        lines += ['', '## Notes', '', notes.strip()]
    if metrics:
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
    else:
        lines += ['', '## Accuracy', '', 'Not measured by ddarts-zoo for these weights.']
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
        with atomic_write_dir(out) as tmp:
            timm.models.save_for_hf(model, tmp, model_args=model_args, safe_serialization=True,
                                    model_config={'ddarts_zoo': extra})
            card = model_card(name=name, model_name=model_name, model_args=model_args, dataset=dataset,
                              params=params, macs=macs, input_size=input_size, metrics=metrics, source=source,
                              repo_id=repo_id, notes=notes)
            (tmp / 'README.md').write_text(card, encoding='utf-8')
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
    config = json.loads((folder / 'config.json').read_text(encoding='utf-8'))
    if 'architecture' not in config or 'pretrained_cfg' not in config:
        raise ValueError(f'{folder / "config.json"} is not a timm config (no architecture / pretrained_cfg)')
    from huggingface_hub import HfApi
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, revision=revision,
                                 allow_patterns=list(EXPORT_FILES),
                                 commit_message=commit_message or f'Upload {config["architecture"]} ({folder.name})')
    except Exception as err:  # noqa: BLE001
        raise RuntimeError(f'publishing {folder} to {repo_id} at HF_ENDPOINT={_endpoint()} failed: '
                           f'{type(err).__name__}: {err}. Check the token (HF_TOKEN or `hf auth login`) and that '
                           f'you may write to {repo_id.split("/")[0]!r}.') from err
    return str(getattr(info, 'commit_url', info))
