"""A local Hugging Face Hub for the tests: olah serving git repositories fully offline on 127.0.0.1.

The fixtures ``hub`` and ``hub_env`` (``tests/zoo/conftest.py``) use it; tests using them are marked ``hub``.

* ``hub`` (session): the published export folders of :mod:`ddarts_zoo.weights` are committed as git
  repositories (branch ``main``) under ``<tmp>/mirrors/models/ddarts-zoo/<model>.<tag>``, plus a repo whose
  ``model.safetensors`` is truncated (``ddarts-zoo/corrupt.digits``); ``olah-cli`` serves them with
  ``offline = true`` on a free port of 127.0.0.1 only, and is stopped at the end of the session.
* ``hub_env`` (function): points ``huggingface_hub`` at the server in this process (environment *and* the
  module constants that ``huggingface_hub`` reads once at import) with an empty ``HF_HOME``.
  ``hub.subprocess_env(tmp)`` gives the environment for a fresh interpreter instead.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from contextlib import contextmanager
from typing import Dict, Iterator, List

import pytest
from ports import free_port

HUB_ORG = 'ddarts-zoo'
CORRUPT_REPO = f'{HUB_ORG}/corrupt.digits'



def _git(cwd: Path, *args: str) -> None:
    subprocess.run(['git', '-c', 'user.name=ddarts-zoo tests', '-c', 'user.email=tests@ddarts-zoo.invalid',
                    '-c', 'commit.gpgsign=false', '-c', 'init.defaultBranch=main', *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def commit_repo(mirrors: Path, repo_id: str, files: Dict[str, Path]) -> Path:
    """Create ``mirrors/models/<repo_id>`` as a git repository on branch ``main`` holding ``files``."""
    repo = mirrors / 'models' / repo_id
    repo.mkdir(parents=True)
    for name, src in files.items():
        shutil.copyfile(src, repo / name)
    _git(repo, 'init', '-q', '-b', 'main')
    _git(repo, 'add', '-A')
    _git(repo, 'commit', '-q', '-m', f'add {repo_id}')
    return repo


@dataclass
class LocalHub:
    endpoint: str
    root: Path
    repos: List[str] = field(default_factory=list)
    process: 'subprocess.Popen[bytes] | None' = None

    def subprocess_env(self, home: Path) -> Dict[str, str]:
        env = dict(os.environ)
        env.update(HF_ENDPOINT=self.endpoint, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY='1',
                   HF_HUB_ETAG_TIMEOUT='5', HF_HUB_DOWNLOAD_TIMEOUT='10')
        env.pop('HF_HUB_OFFLINE', None)
        env.pop('HF_HUB_CACHE', None)
        env.pop('HF_TOKEN', None)
        return env


def _wait_until_up(url: str, proc: 'subprocess.Popen[bytes]', log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f'olah exited with code {proc.returncode}:\n{log.read_text(errors="replace")[-3000:]}')
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f'olah did not answer {url} within {timeout:.0f}s:\n{log.read_text(errors="replace")[-3000:]}')


def _stop(proc: 'subprocess.Popen[bytes]') -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: uvicorn workers go too
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextmanager
def serve_published_weights(root: Path) -> Iterator[LocalHub]:
    """Serve the published weight folders (and one truncated repo) from ``root`` until the block ends."""
    from ddarts_zoo.weights import PRETRAINED_TAGS, local_weights_dir

    olah = shutil.which('olah-cli') or str(Path(sys.executable).with_name('olah-cli'))
    if not Path(olah).exists():
        pytest.skip('olah-cli is not installed (pip install "ddarts-zoo[dev]")')
    if shutil.which('git') is None:
        pytest.skip('git is needed to build the local Hub repositories')
    if not PRETRAINED_TAGS:
        pytest.skip('no published weights in ddarts_zoo/weights/')
    mirrors = root / 'mirrors'
    repos = []
    for name_tag, overlay in PRETRAINED_TAGS.items():
        folder = local_weights_dir(name_tag)
        commit_repo(mirrors, overlay['hf_hub_id'], {p.name: p for p in folder.iterdir() if p.is_file()})
        repos.append(overlay['hf_hub_id'])
    # a repo whose weights file was cut short, as an interrupted upload would leave it
    first = local_weights_dir(next(iter(PRETRAINED_TAGS)))
    broken = root / 'truncated.safetensors'
    data = (first / 'model.safetensors').read_bytes()
    broken.write_bytes(data[:len(data) // 2])
    commit_repo(mirrors, CORRUPT_REPO, {'model.safetensors': broken, 'config.json': first / 'config.json'})

    port = free_port()
    endpoint = f'http://127.0.0.1:{port}'
    config = root / 'olah.toml'
    config.write_text(
        '[basic]\n'
        f'host = "127.0.0.1"\nport = {port}\n'
        f'repos-path = "{root / "repos"}"\n'
        f'mirror-netloc = "127.0.0.1:{port}"\nmirror-lfs-netloc = "127.0.0.1:{port}"\n'
        f'mirrors-path = ["{mirrors}"]\n\n'
        '[accessibility]\noffline = true\n', encoding='utf-8')
    log = root / 'olah.log'
    with open(log, 'wb') as out:
        proc = subprocess.Popen([olah, '-c', str(config), '--log-path', str(root / 'logs')], cwd=root,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = LocalHub(endpoint, root, repos, proc)
    try:
        _wait_until_up(f'{endpoint}/api/models/{repos[0]}/revision/main', proc, log)
        yield server
    finally:
        _stop(proc)
