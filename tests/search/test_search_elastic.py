"""Elastic restarts: ``torchrun --max-restarts 1`` with 2 gloo ranks; the worker with RANK=1 is SIGKILLed in
the middle of epoch 2; the restarted workers resume the run from its epoch-1 checkpoint by themselves
(``--resume auto``) and finish with the alphas of an uninterrupted run, bit for bit.

The job runs in its own process group, killed as a whole on a timeout, and every collective has a finite
timeout (``--dist-timeout``), so a regression fails the test instead of hanging it.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from search.checkpoint import load_checkpoint
from ports import free_port

ROOT = Path(__file__).resolve().parents[2]

# search/run.py's main, with a step callback that SIGKILLs the RANK=1 worker of the first try at epoch 2,
# step 2 (a test harness: run.py itself has no such hook)
KILLED_WORKER = textwrap.dedent('''
    import os, signal, sys
    from search.searcher import Searcher
    from search.run import main

    def kill_rank1_in_epoch2(searcher, epoch, step):
        first_try = os.environ.get('TORCHELASTIC_RESTART_COUNT', '0') == '0'
        if first_try and searcher.ctx.rank == 1 and epoch == 1 and step == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    init = Searcher.__init__
    def with_callback(self, *args, **kwargs):
        init(self, *args, **dict(kwargs, step_callback=kill_rank1_in_epoch2))
    Searcher.__init__ = with_callback
    sys.exit(main(sys.argv[1:]))
''')



def torchrun(script: Path, args, cwd: Path, timeout: float = 420) -> subprocess.CompletedProcess:
    """``torchrun --max-restarts 1 --nproc-per-node 2 script args`` in its own session, killed whole on a
    timeout (no orphaned worker survives a failing test)."""
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nnodes', '1', '--nproc-per-node', '2',
           '--max-restarts', '1', '--monitor-interval', '0.5', '--master-addr', '127.0.0.1',
           '--master-port', str(free_port()), str(script)] + list(args)
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT), PYTHONUNBUFFERED='1')
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f'torchrun did not finish in {timeout} s:\n{out[-4000:]}')
    return subprocess.CompletedProcess(cmd, proc.returncode, out, '')


def alphas(run_dir: Path):
    state = load_checkpoint(run_dir)['model']
    return {k: v for k, v in state.items() if k.startswith('alphas.')}


@pytest.mark.slow
def test_a_killed_rank_restarts_and_resumes_bit_exactly(tmp_path):
    search_args = ['--preset', 'tiny', '--epochs', '3', '--seed', '5', '--out', str(tmp_path), '--resume', 'auto',
                   '--dist-timeout', '60', '--no-progress', '--no-plots', '--no-tensorboard']
    killed_script = tmp_path / 'killed_worker.py'
    killed_script.write_text(KILLED_WORKER)
    killed = torchrun(killed_script, search_args + ['--name', 'killed'], tmp_path)
    assert killed.returncode == 0, killed.stdout[-4000:]
    assert 'failed (exitcode: -9) local_rank: 1' in killed.stdout, \
        killed.stdout[-4000:]                                          # the worker did die, and was restarted
    log = (tmp_path / 'killed' / 'search.log').read_text()
    assert 'resuming' in log and 'after epoch 1' in log and 'torchrun restart 1' in log, log

    reference = torchrun(ROOT / 'search' / 'run.py', search_args + ['--name', 'reference'], tmp_path)
    assert reference.returncode == 0, reference.stdout[-4000:]
    got, want = alphas(tmp_path / 'killed'), alphas(tmp_path / 'reference')
    assert got.keys() == want.keys() and got
    for k in want:
        assert torch.equal(got[k], want[k]), k
    assert load_checkpoint(tmp_path / 'killed')['epoch'] == 3
    hist = [json.loads(line) for line in (tmp_path / 'killed' / 'epochs.jsonl').read_text().splitlines()]
    assert [h['epoch'] for h in hist] == [1, 2, 3]
    for name in ('genotype_sparse.json', 'genotype_edge.json'):
        a = json.loads((tmp_path / 'killed' / name).read_text())
        b = json.loads((tmp_path / 'reference' / name).read_text())
        assert a['genes'] == b['genes'], name
