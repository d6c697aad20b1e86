"""Pretrained weights of the ``ddarts_*`` models: where they come from, and errors a user can act on.

:func:`prepare_pretrained` checks, before timm builds a model, that its weights can be had and read (an
unreachable Hub or a missing repo / file fails within seconds, naming model, repo, file, endpoint and the
offline alternatives); :func:`pretrained_errors` turns timm's loading errors into the same exception family.
A local or downloaded weights file is read as data only: safetensors, or a pickle of tensors (no code runs).
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Tuple, Union

from .convert import CheckpointError
from .errors import UnreadableFileError
from .utils.io import safe_torch_load
from .weights import PRETRAINED_TAGS, WEIGHTS_FILE, local_weights_dir, published_tags

__all__ = [
    'PretrainedWeightsError', 'WeightsUnavailableError', 'CorruptWeightsError', 'WeightsMismatchError',
    'WeightsSource', 'resolve_weights_source', 'check_safetensors', 'check_weights_file', 'fetch_hub_file',
    'prepare_pretrained',
    'pretrained_errors',
]


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights could not be loaded; the message says which and what to do."""


class WeightsUnavailableError(PretrainedWeightsError):
    """The Hub is unreachable, or the repo / file does not exist there (and nothing is cached)."""


class CorruptWeightsError(PretrainedWeightsError, UnreadableFileError):
    """A weights file exists but cannot be read (truncated download, random bytes, a pickle with code ...)."""


class WeightsMismatchError(PretrainedWeightsError):
    """The weights do not fit the model that was built (missing / unexpected keys, shapes)."""


# ---------------------------------------------------------------------------------------------- error types
def _classes(module: str, *names: str) -> Tuple[type, ...]:
    """The exception classes ``names`` of ``module`` that this installation has (none if it is absent)."""
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return ()
    return tuple(c for c in (getattr(mod, n, None) for n in names) if isinstance(c, type))


@lru_cache(maxsize=None)
def _hub_errors() -> Mapping[str, Tuple[type, ...]]:
    """huggingface_hub / HTTP-client exception classes by meaning (older hubs keep them in ``utils``)."""
    hub = 'huggingface_hub.errors' if importlib.util.find_spec('huggingface_hub.errors') else 'huggingface_hub.utils'
    transport = sum((_classes(m, 'TransportError') for m in ('httpx', 'httpx2')), ())
    return {
        'not_cached': _classes(hub, 'LocalEntryNotFoundError'),
        'no_repo': _classes(hub, 'RepositoryNotFoundError', 'GatedRepoError'),
        'no_entry': _classes(hub, 'RemoteEntryNotFoundError', 'EntryNotFoundError', 'RevisionNotFoundError'),
        'unreachable': (_classes(hub, 'HfHubHTTPError', 'OfflineModeIsEnabled') + transport
                        + _classes('requests.exceptions', 'ConnectionError', 'Timeout')),
        'corrupt': _classes('safetensors', 'SafetensorError'),
    }


def _kind(err: BaseException) -> str:
    """``'not_cached'``, ``'no_repo'``, ``'no_entry'``, ``'unreachable'``, ``'corrupt'`` or ``''``."""
    for kind, classes in _hub_errors().items():  # not_cached first: it subclasses EntryNotFoundError
        if classes and isinstance(err, classes):
            return kind
    return ''


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
    """Where timm will load ``cfg``'s weights from: ``source=hf-hub|local-dir``, then state_dict, file, hf_hub_id, url.

    timm has no public function for this; a test compares this order with timm's own on every kind of source.
    """
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


def _unavailable_message(model_name: str, source: WeightsSource, err: BaseException) -> str:
    from huggingface_hub import constants
    kind = _kind(err)
    detail = str(err).strip().splitlines()[0][:300] if str(err).strip() else ''
    if kind == 'no_repo':
        what = 'the repository does not exist there or is not accessible (a token may be needed: HF_TOKEN)'
    elif kind == 'no_entry':
        what = 'the repository exists but has no such file / revision'
    elif constants.HF_HUB_OFFLINE:
        what = 'HF_HUB_OFFLINE is set and the file is not in the cache'
    else:
        what = 'the Hub could not be reached and the file is not in the cache'
    return (f'{model_name}: cannot get pretrained weights from {source.describe()} at HF_ENDPOINT={_endpoint()}: '
            f'{what} ({type(err).__name__}: {detail}).\n{_offline_hint(model_name, source)}')


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


def check_weights_file(path: Union[str, Path], model_name: str = 'model', hint: str = '') -> None:
    """Check that a weights file reads as tensors only (safetensors, or a tensor pickle with no code in it).

    Raises :class:`CorruptWeightsError` naming the file, its size and what was expected.
    """
    path = Path(path)
    if path.suffix == '.safetensors':
        check_safetensors(path, model_name, hint)
        return
    try:
        safe_torch_load(path, expected='a state dict of tensors (.safetensors, .pth, .bin)')
    except UnreadableFileError as err:
        raise CorruptWeightsError(f'{model_name}: the weights file {err}'
                                  + (f'. {hint}' if hint else '')) from None


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
            if cfg.get('hf_hub_filename') or _kind(err.__cause__) != 'no_entry':
                raise
            source = dataclasses.replace(source, filename='pytorch_model.bin')
            path = fetch_hub_file(label, source.repo_id, source.filename, source.revision, kwargs.get('cache_dir'))
        check_weights_file(path, label, hint=f'remove the cached copy (`hf cache rm model/{source.repo_id}`) '
                                             f'and retry; if it persists, the file on the Hub is damaged')
        source = WeightsSource('hf-hub', source.repo_id, source.revision, source.filename, path, label)
    elif source.kind in ('file', 'local-dir'):
        path = Path(source.path or '')
        target = path / WEIGHTS_FILE if source.kind == 'local-dir' else path
        if source.kind == 'file' and not path.is_file():
            raise WeightsUnavailableError(f'{label}: pretrained weights file {path} does not exist')
        if source.kind == 'local-dir' and not target.is_file() and (path / 'pytorch_model.bin').is_file():
            target = path / 'pytorch_model.bin'  # timm's fallback of a folder without safetensors
        if target.is_file():
            check_weights_file(target, label)
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
        text = str(err)
        kind = _kind(err)
        if isinstance(err, CheckpointError) or 'Error(s) in loading state_dict' in text:
            raise WeightsMismatchError(
                f'{variant}: the weights from {where} do not fit the model that was built. Build it with the '
                f'model arguments recorded with the weights (config.json "model_args"); pass num_classes=N '
                f'to get a fresh classifier for another number of classes.\n{text}') from err
        if 'weights_only' in text:  # torch refused a pickle (its text advises unsafe loading: not shown)
            raise CorruptWeightsError(f'{variant}: the weights from {where} are not a plain tensor file (it holds '
                                      f'Python objects other than tensors, which are never loaded)') from None
        if kind == 'corrupt' or ('safetensors' in text.lower() and 'header' in text.lower()):
            raise CorruptWeightsError(f'{variant}: cannot read the weights from {where}: {text}') from err
        if kind:
            raise WeightsUnavailableError(_unavailable_message(variant, source or WeightsSource(''), err)) from err
        raise
