"""Seeded searches and trainings give bit-identical results to those recorded before the code was restructured.

The recorded fingerprints (``tests/fixtures/seeded_fingerprints.json``) come from ``tests/seeded_runs.py`` run
on the code before the restructuring; this test reruns the same commands on the current code and compares
every tensor of each final checkpoint.
"""
import json
from pathlib import Path

import pytest

import seeded_runs

RECORDED = json.loads((Path(__file__).parent / 'fixtures' / 'seeded_fingerprints.json').read_text())['runs']


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(seeded_runs.RUNS))
def test_seeded_run_is_bit_identical_to_recorded(name, tmp_path):
    got = seeded_runs.run_one(name, tmp_path)
    want = RECORDED[name]
    assert sorted(got) == sorted(want), f'{name}: state-dict keys changed'
    differing = [k for k in want if got[k] != want[k]]
    assert not differing, f'{name}: {len(differing)} of {len(want)} tensors differ, e.g. {differing[:5]}'
