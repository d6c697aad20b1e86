"""Fixtures of the zoo tests: a local Hugging Face Hub (olah, offline, 127.0.0.1 only; see ``local_hub``).

* ``hub`` (session): the published export folders of :mod:`ddarts_zoo.weights` served as Hub repositories.
* ``hub_env`` (function): this process's ``huggingface_hub`` pointed at that server, with an empty cache.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from local_hub import LocalHub, serve_published_weights


@pytest.fixture(scope='session')
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    with serve_published_weights(tmp_path_factory.mktemp('hub')) as server:
        yield server


@pytest.fixture
def hub_env(hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalHub:
    """Point this process's huggingface_hub at the local server, with an empty cache."""
    from huggingface_hub import constants
    home = tmp_path / 'hf_home'
    for key, value in hub.subprocess_env(home).items():
        if key.startswith('HF_'):
            monkeypatch.setenv(key, value)
    for key in ('HF_HUB_OFFLINE', 'HF_HUB_CACHE', 'HF_TOKEN'):
        monkeypatch.delenv(key, raising=False)
    # huggingface_hub reads these once, at import: patch the module constants it uses at call time
    monkeypatch.setattr(constants, 'ENDPOINT', hub.endpoint)
    monkeypatch.setattr(constants, 'HUGGINGFACE_CO_URL_TEMPLATE',
                        hub.endpoint + '/{repo_id}/resolve/{revision}/{filename}')
    monkeypatch.setattr(constants, 'HF_HOME', str(home))
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(home / 'hub'))
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setattr(constants, 'HF_HUB_ETAG_TIMEOUT', 5)
    return hub
