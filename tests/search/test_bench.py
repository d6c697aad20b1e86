"""`search/bench.py` end to end on CPU: this project's step next to the authors' own step, in one run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from search.bench import AUTHORS_DIR_ENV, CLONE_HINT

ROOT = Path(__file__).resolve().parents[2]
AUTHORS = os.environ.get(AUTHORS_DIR_ENV)


@pytest.mark.slow
@pytest.mark.skipif(not AUTHORS, reason=f"needs the authors' code: {CLONE_HINT}")
def test_bench_measures_both_implementations_at_the_same_settings(tmp_path):
    out = tmp_path / 'bench.json'
    cmd = [sys.executable, 'search/bench.py', '--device', 'cpu', '--impl', 'project', 'authors',
           '--loss', 'fair', 'ablation', 'ablation-grad', '--batch', '4', '--classes', '10', '--C', '4',
           '--cells', '3', '--steps', '1', '--warmup', '0', '--threads', '1', '--authors-dir', AUTHORS,
           '--json', str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {(r['impl'], r['loss']): r for r in report['results']}
    # the authors' code has no ablation-grad: it is measured for this project only
    assert set(rows) == {('project', 'fair'), ('project', 'ablation'), ('project', 'ablation-grad'),
                         ('authors', 'fair'), ('authors', 'ablation')}
    for row in rows.values():
        assert row['s_per_step'] > 0 and row['peak_mib'] > 0
    assert rows['authors', 'fair']['cells'] == 3 and rows['authors', 'fair']['batch'] == 4
    assert '| this project | ablation |' in res.stdout and "| authors' code | ablation |" in res.stdout


def test_bench_without_the_authors_code_names_the_clone_command(monkeypatch, capsys):
    monkeypatch.delenv(AUTHORS_DIR_ENV, raising=False)
    from search import bench
    with pytest.raises(SystemExit) as exc:
        bench.main(['--device', 'cpu', '--impl', 'project', 'authors', '--loss', 'fair'])
    assert 'git clone --depth 1 https://github.com/aheuillet/D-DARTS' in str(exc.value)
