"""``ddarts-zoo train`` under ``torchrun --max-restarts 1``: a worker SIGKILLed mid-run is restarted,
resumes the run from its last checkpoint by itself (``--resume auto``) and ends with an uninterrupted run's
weights."""
from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import torch

from ddarts_zoo.train import load_train_checkpoint

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith('linux'), reason='finds the worker in /proc')]

TRAIN = ['--model', 'ddarts_dd5_cifar', '--init-channels', '4', '--batch-size', '16', '--max-steps', '6',
         '--epochs', '4', '--eval-interval', '0', '--no-progress', '--threads', '1', '--seed', '3',
         '--resume', 'auto', '--dist-timeout', '60']


def torchrun(out: Path, env: Dict[str, str]) -> subprocess.Popen:
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2',
           '--max-restarts', '1', '-m', 'ddarts_zoo', 'train', *TRAIN, '--out', str(out)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _environ(pid: str) -> Dict[str, str]:
    try:
        raw = Path(f'/proc/{pid}/environ').read_bytes()
    except OSError:   # gone, or not ours
        return {}
    return dict(item.split('=', 1) for item in raw.decode(errors='replace').split('\0') if '=' in item)


def find_worker(token: str, rank: int) -> Optional[int]:
    """The pid of the first-try worker of ``rank`` in the job whose environment carries ``token``."""
    for pid in filter(str.isdigit, os.listdir('/proc')):
        env = _environ(pid)
        if env.get('ELASTIC_TEST_TOKEN') == token and env.get('RANK') == str(rank) \
                and env.get('TORCHELASTIC_RESTART_COUNT') == '0':
            return int(pid)
    return None


def epochs_logged(out: Path) -> List[str]:
    try:
        with open(out / 'log.csv', newline='') as f:
            return [row['epoch'] for row in csv.DictReader(f)]
    except (OSError, KeyError):
        return []


def kill_rank1_after_first_epoch(proc: subprocess.Popen, out: Path, token: str) -> None:
    """SIGKILL rank 1 as soon as epoch 1's checkpoint is logged (3 of 4 epochs still to run)."""
    deadline = time.monotonic() + 240
    while not epochs_logged(out):
        assert proc.poll() is None and time.monotonic() < deadline, 'the job ended before its first epoch'
        time.sleep(0.05)
    pid = find_worker(token, rank=1)
    assert pid is not None, 'rank 1 of the first try is not running'
    os.kill(pid, signal.SIGKILL)


def test_killed_worker_restarts_and_matches_an_uninterrupted_run(tmp_path):
    token = uuid.uuid4().hex
    env = dict(os.environ, OMP_NUM_THREADS='1', ELASTIC_TEST_TOKEN=token)
    straight = torchrun(tmp_path / 'straight', env)
    log_straight = straight.communicate(timeout=300)[0]
    assert straight.returncode == 0, log_straight[-3000:]

    killed = torchrun(tmp_path / 'killed', env)
    kill_rank1_after_first_epoch(killed, tmp_path / 'killed', token)
    log_killed = killed.communicate(timeout=300)[0]
    assert killed.returncode == 0, log_killed[-3000:]
    assert re.search(r'resumed .* at epoch [123]/4', log_killed), log_killed[-3000:]  # not started over

    a = load_train_checkpoint(tmp_path / 'straight' / 'checkpoint.pth')
    b = load_train_checkpoint(tmp_path / 'killed' / 'checkpoint.pth')
    assert a['epoch'] == b['epoch'] == 4 and len(b['rng']) == 2
    assert a['model'].keys() == b['model'].keys()
    assert all(torch.equal(v, b['model'][k]) for k, v in a['model'].items())
    assert epochs_logged(tmp_path / 'killed') == ['0', '1', '2', '3']   # each epoch once, none lost
    assert not list((tmp_path / 'killed').glob('.*.tmp'))
