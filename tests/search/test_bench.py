"""`search/bench.py` end to end on CPU: this project's step next to the authors' own step, in one run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AUTHORS = ROOT.parent / 'shared' / 'reference' / 'authors-code'
TOOL = ROOT.parent / 'shared' / 'tools' / 'ref_search_bench.py'


@pytest.mark.slow
@pytest.mark.skipif(not (AUTHORS.is_dir() and TOOL.is_file()), reason="the authors' code is not beside the clone")
def test_bench_measures_both_implementations_at_the_same_settings(tmp_path):
    out = tmp_path / 'bench.json'
    cmd = [sys.executable, 'search/bench.py', '--device', 'cpu', '--impl', 'project', 'authors',
           '--loss', 'fair', 'ablation', 'ablation-grad', '--batch', '4', '--classes', '10', '--C', '4',
           '--cells', '3', '--steps', '1', '--warmup', '0', '--threads', '1', '--json', str(out)]
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
