"""The search loop: determinism, resume after SIGKILL, run directories and --resume auto, early stopping, AMP,
non-finite losses."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ddarts_zoo.errors import UserError
from ddarts_zoo.genotype import Genotype
from search.checkpoint import load_checkpoint
from search.config import SearchConfig
from search_configs import tiny
from search.searcher import Searcher, should_stop_early
from search.step import NonFiniteLossError

ROOT = Path(__file__).resolve().parents[2]
KILLED_RUN = '''
import sys, time
from search.run import build_parser, config_from_args
from search.searcher import Searcher
cfg = config_from_args(build_parser().parse_args(sys.argv[1:]))
Searcher(cfg, step_callback=lambda searcher, epoch, step: time.sleep(0.4)).run()   # paced: killed mid-epoch
'''



def alphas_of(run_dir):
    state = load_checkpoint(run_dir)['model']
    return [state[k] for k in sorted(state) if k.startswith('alphas.')]


def test_seeded_runs_are_identical_and_write_their_outputs(tmp_path):
    r1 = Searcher(tiny(tmp_path, 'a', tensorboard=True, plots=True)).run()
    r2 = Searcher(tiny(tmp_path, 'b')).run()
    assert r1.epochs_completed == 2
    for x, y in zip(alphas_of(r1.run_dir), alphas_of(r2.run_dir)):
        assert torch.equal(x, y)
    for kind in ('sparse', 'edge'):
        assert r1.genotypes[kind].genes == r2.genotypes[kind].genes
    # every epoch's genotype is in the run log, identical across the two runs
    log1 = [json.loads(l) for l in (r1.run_dir / 'epochs.jsonl').read_text().splitlines()]
    log2 = [json.loads(l) for l in (r2.run_dir / 'epochs.jsonl').read_text().splitlines()]
    assert len(log1) == 2 and [h['genotypes']['sparse']['genes'] for h in log1] == \
        [h['genotypes']['sparse']['genes'] for h in log2]
    assert 'genotype (sparse)' in (r1.run_dir / 'search.log').read_text()
    header = (r1.run_dir / 'metrics.csv').read_text().splitlines()[0].split(',')
    for col in ('train_loss', 'arch_ce', 'valid_acc', 'entropy_0', 'mc_0', 'mc_2', 'cell_loss_1'):
        assert col in header
    for name in ('genotype.json', 'genotype_sparse.json', 'genotype_edge.json', 'config.json',
                 'plots/alphas.png', 'plots/marginal_contributions.png', 'plots/accuracy.png'):
        assert (r1.run_dir / name).is_file(), name
    assert list((r1.run_dir / 'tb').glob('events.out.tfevents.*'))
    geno = Genotype.load(r1.run_dir / 'genotype_sparse.json')
    assert geno.reductions == (1, 2) and geno.meta['search_reductions'] == [1, 2]
    assert geno.genes == r1.genotypes['sparse'].genes
    with pytest.raises(UserError, match='already holds a search; continue it with --resume'):
        Searcher(tiny(tmp_path, 'a'))


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_same_genotype(tmp_path):
    """Kill a run with SIGKILL in the middle of epoch 2, resume it, compare with an uninterrupted run."""
    args = [sys.executable, '-c', KILLED_RUN, '--preset', 'tiny', '--epochs', '3', '--out', str(tmp_path),
            '--name', 'killed', '--no-progress', '--no-plots', '--no-tensorboard']
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1', PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ckpt = tmp_path / 'killed' / 'checkpoint.pt'
    deadline = time.time() + 240
    while not ckpt.exists():
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.time() < deadline, 'no checkpoint after 240 s'
        time.sleep(0.1)
    time.sleep(1.0)                      # a few steps into epoch 2 (each step sleeps 0.4 s)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    state = load_checkpoint(tmp_path / 'killed')
    assert state['epoch'] == 1           # killed mid-epoch 2: the last checkpoint is epoch 1's
    resumed = Searcher(resume=tmp_path / 'killed').run()
    reference = Searcher(tiny(tmp_path, 'reference', epochs=3)).run()
    assert resumed.epochs_completed == reference.epochs_completed == 3
    for x, y in zip(alphas_of(tmp_path / 'killed'), alphas_of(reference.run_dir)):
        assert torch.equal(x, y)
    for kind in ('sparse', 'edge'):
        assert resumed.genotypes[kind].genes == reference.genotypes[kind].genes
    hist = [json.loads(l) for l in (tmp_path / 'killed' / 'epochs.jsonl').read_text().splitlines()]
    assert [h['epoch'] for h in hist] == [1, 2, 3]
    assert 'resuming' in (tmp_path / 'killed' / 'search.log').read_text()


def test_should_stop_early_rule():
    flat = [0.3] * 12
    assert not should_stop_early(flat[:9], epoch=8)            # before epoch 10
    assert should_stop_early(flat[:10], epoch=9)               # epoch 10, 5 stable changes
    moving = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5005]
    assert not should_stop_early(moving[:10], epoch=9)         # only 4 stable changes at epoch 10
    assert should_stop_early(moving, epoch=10)                 # |0.0005| <= 1e-3: the 5th
    assert not should_stop_early(moving[:-1] + [0.502], epoch=10)


def write_baseline(path):
    """A 3-cell DARTS-space baseline whose cells 0 and 2 are identical (they share alphas)."""
    g = Genotype([[('sep_conv_3x3', 2, 0), ('skip_connect', 3, 2)], [('max_pool_3x3', 2, 1), ('skip_connect', 3, 2)],
                  [('sep_conv_3x3', 2, 0), ('skip_connect', 3, 2)]], reductions=[1, 2], concat=[2, 3], name='toy')
    return g.save(path)


def test_dartopti_pretraining_distance_and_early_stop(tmp_path):
    base = write_baseline(tmp_path / 'toy.json')
    calls = []

    def fake_distance(a, b):
        calls.append(b)
        return 0.25

    cfg = tiny(tmp_path, 'opti', baseline=str(base), ops='darts', pretrain_epochs=2, epochs=20, early_stop=True,
               early_stop_from=4, early_stop_patience=2, max_steps_per_epoch=2, eval=False)
    s = Searcher(cfg, distance_fn=fake_distance)
    assert s.net.cell_groups == (0, 1, 0) and len(s.updates.agents) == 2
    before = [a.detach().clone() for a in s.net.alphas]
    res = s.run()
    assert res.stopped_early and res.epochs_completed == 4     # epochs 1-2 pre-training, stop at epoch 4
    phases = [h['phase'] for h in res.history]
    assert phases == ['pretrain', 'pretrain', 'search', 'search']
    assert [h['distance'] for h in res.history] == [0.25] * 4 and len(calls) >= 4
    assert all(h['arch_ce'] is None for h in res.history[:2])
    # alphas only move in search epochs; the shared group moved for cells 0 and 2 together
    assert not torch.equal(before[0], s.net.alphas[0].detach())
    edge = res.genotypes['edge']
    assert edge.genes[0] == edge.genes[2] and edge.reductions == (1, 2)
    assert res.genotypes['sparse'].meta['distance_to_baseline'] == 0.25


def test_dartopti_real_distance_is_logged(tmp_path):
    pytest.importorskip('ddarts_zoo.distance')
    base = write_baseline(tmp_path / 'toy.json')
    cfg = tiny(tmp_path, 'opti2', baseline=str(base), ops='darts', pretrain_epochs=1, epochs=1,
               max_steps_per_epoch=2, eval=False)
    assert cfg.early_stop_enabled                              # on by default with a baseline
    res = Searcher(cfg).run()
    assert res.history[0]['distance'] == pytest.approx(0.0)   # pre-training does not move alphas
    assert 0.0 <= res.history[1]['distance'] <= 1.0


def small_searcher(tmp_path, name, **kw):
    s = Searcher(tiny(tmp_path, name, **kw))
    x, y = next(iter(s.a_loader))
    return s, x, y


def test_amp_bf16_step_on_cpu(tmp_path):
    s, x, y = small_searcher(tmp_path, 'amp', amp=True)
    with s.updates.autocast():
        assert s.net(x).dtype == torch.bfloat16
    before = [a.detach().clone() for a in s.net.alphas]
    res = s.updates.arch_step(x, y, 0, 0)
    assert res is not None and all(torch.isfinite(g).all() for g in res.grads)
    assert res.mc is not None and torch.isfinite(res.mc).all()
    assert all(not torch.equal(b, a.detach()) for b, a in zip(before, s.net.alphas))
    assert all(a.dtype == torch.float32 for a in s.net.alphas)
    w = s.updates.weight_step(x, y, 0, 0)
    assert w is not None and torch.isfinite(w.loss)


def test_non_finite_loss_is_detected(tmp_path):
    s, x, y = small_searcher(tmp_path, 'nan', nonfinite='error')
    x_bad = x.clone()
    x_bad[0, 0, 0, 0] = float('nan')
    with pytest.raises(NonFiniteLossError, match=r'non-finite architecture loss .*epoch 1, step 1'):
        s.updates.arch_step(x_bad, y, 0, 0)
    with pytest.raises(NonFiniteLossError, match='non-finite weight loss'):
        s.updates.weight_step(x_bad, y, 0, 0)

    s, x, y = small_searcher(tmp_path, 'nan-skip', nonfinite='skip', max_nonfinite=2)
    before = [a.detach().clone() for a in s.net.alphas]
    weights = [p.detach().clone() for p in s.updates.w_params]
    assert s.updates.arch_step(x_bad, y, 0, 0) is None and s.updates.weight_step(x_bad, y, 0, 1) is None
    assert all(torch.equal(b, a.detach()) for b, a in zip(before, s.net.alphas))      # skipped: nothing moved
    assert all(torch.equal(b, p.detach()) for b, p in zip(weights, s.updates.w_params))
    assert s.updates.nonfinite_skipped == 2
    with pytest.raises(NonFiniteLossError, match='exceed --max-nonfinite 2'):
        s.updates.arch_step(x_bad, y, 0, 2)
    assert s.updates.arch_step(x, y, 0, 3) is not None                                           # healthy data steps


def test_missing_cifar_is_a_clear_error(tmp_path):
    from ddarts_zoo.data import DatasetMissingError
    with pytest.raises(DatasetMissingError, match='cifar10'):
        Searcher(tiny(tmp_path, 'cifar', dataset='cifar10', data=str(tmp_path / 'nowhere')))


def test_config_errors_name_the_option():
    with pytest.raises(ValueError, match='--loss'):
        SearchConfig(loss='shapley').check()
    with pytest.raises(ValueError, match='--threshold'):
        SearchConfig(threshold=1.5).check()
    with pytest.raises(ValueError, match='--baseline'):
        SearchConfig(baseline='resnet1000').check()
    with pytest.raises(ValueError, match='unknown search option'):
        SearchConfig.from_dict({'loss': 'fair', 'lerning_rate': 1})


def test_run_directory_resume_auto_and_stale_temporary_files(tmp_path):
    """``resume='auto'`` starts a missing run, continues a checkpointed one with the same options only, and a
    resume removes (and never loads) the temporary files of interrupted writes."""
    quick = dict(epochs=1, max_steps_per_epoch=2, eval=False)
    with pytest.raises(UserError, match='--resume auto needs --name'):
        Searcher(tiny(tmp_path, None, **quick), resume='auto')
    first = Searcher(tiny(tmp_path, 'x', **quick), resume='auto')
    assert first.ckpt is None and first.run().epochs_completed == 1
    run = tmp_path / 'x'
    stale = [run / '.checkpoint.pt.k2j4l5.tmp', run / '.epochs.jsonl.a8b9c0.tmp']
    for p in stale:
        p.write_bytes(b'half a file')
    with pytest.raises(UserError, match='temporary file of an interrupted write, not a checkpoint'):
        Searcher(resume=stale[0])
    with pytest.raises(UserError, match=r'holds a search with other options \(--epochs 1 there, 2 here\)'):
        Searcher(tiny(tmp_path, 'x', **dict(quick, epochs=2)), resume='auto')
    assert all(p.exists() for p in stale)                       # refusals touch nothing
    again = Searcher(tiny(tmp_path, 'x', **quick), resume='auto')
    assert again.ckpt is not None and again.start_epoch == 1
    assert not any(p.exists() for p in stale)
    again.run()
    assert 'removed 2 temporary file(s) of interrupted writes' in (run / 'search.log').read_text()
    assert load_checkpoint(run)['epoch'] == 1


def test_a_new_run_never_writes_into_a_foreign_directory(tmp_path):
    quick = dict(epochs=1, max_steps_per_epoch=1, eval=False)
    cfg = tiny(tmp_path, 'y', **quick)
    run = tmp_path / 'y'
    run.mkdir()
    (run / 'config.json').write_text(json.dumps(cfg.to_dict()))   # a first try that died before its checkpoint
    (run / 'search.log').write_text('first try\n')
    with pytest.raises(UserError, match=r'holds no search checkpoint \(config.json, search.log\); nothing was '
                                        r'written there'):
        Searcher(cfg)
    assert Searcher(tiny(tmp_path, 'y', **quick), resume='auto').run().epochs_completed == 1
    other = tmp_path / 'z'
    other.mkdir()
    (other / 'config.json').write_text(json.dumps(dict(cfg.to_dict(), lr=1.0)))   # another run's first try
    with pytest.raises(UserError, match='holds no search checkpoint'):
        Searcher(tiny(tmp_path, 'z', **quick), resume='auto')
    assert sorted(p.name for p in other.iterdir()) == ['config.json']
