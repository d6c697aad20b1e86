"""search/experiment.py: end to end on a tiny configuration, reuse of finished units, and its statistics."""
import json
import math
import struct
from itertools import combinations
from pathlib import Path

import pytest

from ddarts_zoo.genotype import Genotype
from search.experiment import build_parser, train_spec
from search.experiment_report import beats, midranks, percentile_of, permutation_p, summarize
from search.random_genotypes import live_op_counts

TINY = ['--seeds', '0', '--random', '2', '--jobs', '1', '--arms', 'fair', 'ablation', 'dd1',
        '--layers', '3', '--channels', '2', '--epochs', '1', '--batch-size', '16',
        '--search-args', '{"subset": 0.2, "steps": 2}',
        '--train-channels', '2', '--train-epochs', '1', '--train-subset', '64', '--train-batch-size', '16']


def _png_size(path):
    head = path.read_bytes()[:24]
    assert head[:8] == b'\x89PNG\r\n\x1a\n'
    return struct.unpack('>II', head[16:24])


@pytest.mark.slow
def test_tiny_experiment_end_to_end_then_everything_reused(tmp_path, capsys):
    from search.experiment import main
    out = tmp_path / 'exp'
    assert main(['--out', str(out)] + TINY) == 0
    first = capsys.readouterr().out
    doc = json.loads((out / 'results.json').read_text())
    records = doc['records']
    assert sorted(r['arm'] for r in records) == ['ablation', 'dd1', 'fair', 'random', 'random']
    assert all(0.0 <= r['top1'] <= 100.0 and r['num_images'] == 359 for r in records)
    by_arm = {r['arm']: r for r in records}
    # seeded, L_abl adds no gradient: same genotype as fair, trained once
    fair, abl = (Genotype.load(by_arm[a]['genotype']) for a in ('fair', 'ablation'))
    assert fair == abl and by_arm['fair']['train_dir'] == by_arm['ablation']['train_dir']
    assert doc['units'] == 2 + 4 and doc['units_ran'] == 6
    for r in (r for r in records if r['arm'] == 'random'):   # matched to searched genotypes, cell by cell
        ref = Genotype.load(next(x['genotype'] for x in records if x.get('run_dir') == r['reference']))
        assert live_op_counts(Genotype.load(r['genotype'])) == live_op_counts(ref)
    stats = doc['statistics']
    assert set(stats) == {'fair', 'ablation', 'dd1', 'random'}
    assert stats['random']['n'] == 2 and 0.0 <= stats['fair']['percentile'] <= 100.0
    table = (out / 'results.md').read_text()
    for label in ('D-DARTS, L_fair', 'DD-1 (published)', 'random architectures', 'percentile in random'):
        assert label in table
    width, height = _png_size(out / 'random_distribution.png')
    assert width > 400 and height > 200
    assert first.count('(ran)') == 6

    stamps = {p: p.stat().st_mtime_ns for p in out.glob('*/*/*.json')}
    assert main(['--out', str(out)] + TINY + ['--jobs', '2']) == 0   # through the process pool this time
    second = capsys.readouterr().out
    assert '(ran)' not in second and second.count('(reused)') == 6
    assert json.loads((out / 'results.json').read_text())['units_ran'] == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps   # no search or training file rewritten
    again = json.loads((out / 'results.json').read_text())['records']
    assert [r['top1'] for r in again] == [r['top1'] for r in records]

    # a search killed before its first checkpoint leaves a folder without results: it is redone, and being
    # seeded finds the same genotype, whose training is reused
    fair_dir = Path(by_arm['fair']['run_dir'])
    for name in ('checkpoint.pt', 'genotype.json'):
        (fair_dir / name).unlink()
    assert main(['--out', str(out)] + TINY) == 0
    third = capsys.readouterr().out
    assert third.count('(ran)') == 1 and f'search {fair_dir.name}' in third
    assert json.loads((out / 'results.json').read_text())['units_ran'] == 1


def test_training_units_are_named_by_genotype_recipe_and_seed(tmp_path):
    args = build_parser().parse_args(['--out', str(tmp_path)] + TINY)
    from ddarts_zoo.genotypes import load_genotype
    a = load_genotype('dd1').save(tmp_path / 'a.json')
    b = load_genotype('dd1').renamed('other').save(tmp_path / 'b.json')
    base = train_spec(args, 'x', str(a), 0)
    assert train_spec(args, 'y', str(b), 0)['out'] == base['out']            # same genes, other file: reused
    assert train_spec(args, 'x', str(a), 1)['out'] != base['out']            # seed
    longer = build_parser().parse_args(['--out', str(tmp_path)] + TINY + ['--train-epochs', '2'])
    assert train_spec(longer, 'x', str(a), 0)['out'] != base['out']          # recipe
    assert '--train-subset' in base['argv'] and '--resume' in base['argv']


def test_statistics_against_hand_computed_values():
    s = summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.776 * math.sqrt(2.5) / math.sqrt(5)
    assert s['mean'] == 3.0 and math.isclose(s['std'], math.sqrt(2.5))
    assert math.isclose(s['ci_low'], 3.0 - half) and math.isclose(s['ci_high'], 3.0 + half)
    assert summarize([7.0])['std'] is None
    assert percentile_of(2.0, [1.0, 2.0, 3.0, 4.0]) == 37.5
    assert beats([5.0, 0.0], [1.0, 2.0]) == 0.5
    assert midranks([5.0, 1.0, 5.0, 3.0]) == [3.5, 1.0, 3.5, 2.0]
    # Mann-Whitney: a = [3, 4, 5] has ranks 4, 6, 7 among the 7 values (sum 17, expected 12); the exact
    # two-sided p is the share of the 35 splits whose rank sum is <= 7 or >= 17: 4 of them
    a, b = [3.0, 4.0, 5.0], [0.0, 1.0, 2.0, 3.5]
    far = sum(abs(sum(c) - 12) >= 5 for c in combinations(range(1, 8), 3))
    assert far == 4 and permutation_p(a, b) == pytest.approx(4 / 35)
    assert permutation_p([10.0, 11.0], [0.0, 1.0, 2.0]) == pytest.approx(2 / 10)   # the two extreme splits
    assert permutation_p(a, b, exact_limit=1, draws=4000) == pytest.approx(permutation_p(a, b), abs=0.02)


def test_one_experiment_per_output_folder(tmp_path):
    from ddarts_zoo.errors import UserError
    from search.unit_runner import exclusive
    with exclusive(tmp_path):
        with pytest.raises(UserError, match='another experiment is running'):
            with exclusive(tmp_path):
                pass
    with exclusive(tmp_path):   # released with its holder
        pass
