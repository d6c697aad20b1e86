"""``ddarts-zoo train``: a tiny digits run, checkpoint / resume, logs, metrics, export, DDP (gloo on CPU), the
configuration checks, the shared checkpoint and AMP-step helpers."""
from __future__ import annotations

import argparse
import csv
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from ddarts_zoo.cli import main
from ddarts_zoo.commands.train import add_arguments, config_from_args
from ddarts_zoo.errors import UnreadableFileError
from ddarts_zoo.train import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, load_train_checkpoint
from ddarts_zoo.train_config import TrainConfig, TrainConfigError
from ddarts_zoo.train_loops import TrainingDivergedError
from ddarts_zoo.train_setup import train_subset
from ddarts_zoo.transforms import Cutout, build_transforms
from ddarts_zoo.utils.amp import unscale_and_clip_
from ddarts_zoo.utils.checkpoint import load_checkpoint, remove_stale_temps, save_checkpoint
from ddarts_zoo.utils.dist import EpochShardSampler

TINY = ['--model', 'ddarts_dd5_cifar', '--model-args', '{"init_channels": 4}', '--batch-size', '16',
        '--max-steps', '2', '--no-progress', '--threads', '1', '--seed', '3']


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def train(*argv: str) -> int:
    return main(['train', *argv])


def parse(*argv: str) -> TrainConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(list(argv)))


def _rows(out: Path):
    with open(out / 'log.csv', newline='') as f:
        return list(csv.DictReader(f))


def _same_weights(a: Path, b: Path) -> bool:
    sa, sb = load_train_checkpoint(a)['model'], load_train_checkpoint(b)['model']
    return sa.keys() == sb.keys() and all(torch.equal(v, sb[k]) for k, v in sa.items())


def test_tiny_run_writes_checkpoint_logs_and_metrics(tmp_path):
    out = tmp_path / 'run'
    assert train(*TINY, '--epochs', '1', '--out', str(out)) == 0
    ckpt = torch.load(out / 'checkpoint.pth', map_location='cpu', weights_only=True)  # tensors only
    assert (ckpt['format'], ckpt['version'], ckpt['epoch']) == (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, 1)
    assert ckpt['model_name'] == 'ddarts_dd5_cifar' and ckpt['model_args'] == dict(
        num_classes=10, in_chans=1, init_channels=4)
    assert len(ckpt['rng']) == 1 and ckpt['args']['seed'] == 3   # one process's RNG state; the options
    assert any(k.startswith('aux_head.') for k in ckpt['model'])  # trained with the auxiliary head
    rows = _rows(out)
    assert [r['epoch'] for r in rows] == ['0'] and rows[0]['test_top1'] != ''
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['num_images'] == 359 and metrics['split'] == 'test' and metrics['train_images'] == 1438
    assert 0 <= metrics['top1'] <= metrics['top5'] <= 100
    assert metrics['recipe']['lr'] == 0.025 and metrics['recipe']['autoaugment'] is False
    assert metrics['recipe']['cutout'] == 16 and metrics['recipe']['drop_path'] == 0.2
    assert json.loads((out / 'args.json').read_text())['channels_last'] is True
    assert list((out / 'tb').glob('events.out.tfevents.*'))
    assert not [p for p in out.rglob('*.tmp')]


@pytest.mark.slow
def test_resume_continues_bit_exactly_also_from_the_unversioned_format(tmp_path):
    straight, first = tmp_path / 'straight', tmp_path / 'first'
    assert train(*TINY, '--epochs', '2', '--out', str(straight)) == 0
    # a run stopped after epoch 1 (as a killed job would be) ...
    assert train(*TINY, '--epochs', '2', '--out', str(first), '--stop-after', '1') == 0
    assert load_train_checkpoint(first / 'checkpoint.pth')['epoch'] == 1
    assert not (first / 'metrics.json').exists()
    old = tmp_path / 'old'   # ... the same checkpoint in the layout written before checkpoints had a version
    old.mkdir()
    ckpt = torch.load(first / 'checkpoint.pth', weights_only=True)
    del ckpt['version']
    ckpt['rng'] = ckpt['rng'][0]
    torch.save(ckpt, old / 'checkpoint.pth')
    (old / '.checkpoint.pth.x1y2.tmp').write_bytes(b'half a checkpoint')   # left by a kill mid-write
    # ... resumed (`--resume` and `--resume auto`) reproduces the uninterrupted run
    assert train(*TINY, '--epochs', '2', '--out', str(first), '--resume') == 0
    assert train(*TINY, '--epochs', '2', '--out', str(old), '--resume', 'auto') == 0
    for resumed in (first, old):
        assert load_train_checkpoint(resumed / 'checkpoint.pth')['epoch'] == 2
        assert _same_weights(straight / 'checkpoint.pth', resumed / 'checkpoint.pth')
    assert [r['epoch'] for r in _rows(first)] == ['0', '1']
    assert json.loads((first / 'metrics.json').read_text())['top1'] == \
        json.loads((straight / 'metrics.json').read_text())['top1']
    assert not list(old.glob('.*.tmp'))   # the stale temporary file was removed


def test_resume_auto_starts_and_resume_refuses_what_it_cannot_continue(tmp_path, capsys):
    out = tmp_path / 'run'
    assert train(*TINY, '--epochs', '1', '--max-steps', '1', '--eval-interval', '0', '--out', str(out),
                 '--resume', 'auto') == 0   # nothing to resume: a fresh run
    before = (out / 'checkpoint.pth').read_bytes()
    refused = {('--epochs', '1'): ['already holds a run', '--resume auto'],   # never overwrites a run
               ('--epochs', '2', '--resume', '--init-channels', '6'): ["'init_channels': 6"]}
    for argv, messages in refused.items():
        capsys.readouterr()
        assert train(*TINY, *argv, '--max-steps', '1', '--out', str(out)) == 2
        err = capsys.readouterr().err
        assert err.startswith('error: ') and err.count('\n') == 1 and all(m in err for m in messages), err
        assert (out / 'checkpoint.pth').read_bytes() == before
    assert train(*TINY, '--out', str(tmp_path / 'nothing'), '--resume') == 2
    assert 'no checkpoint at' in capsys.readouterr().err and not (tmp_path / 'nothing').exists()


@pytest.mark.slow
def test_a_full_disk_stops_with_the_previous_checkpoint_intact(tmp_path, capsys, monkeypatch):
    """ENOSPC on epoch 2's checkpoint: one error line, exit 2, epoch 1's checkpoint intact, no temporary."""
    import ddarts_zoo.utils.io as io
    writes = []
    real_write = io._write_tensors

    def fill_the_disk(obj, f):
        writes.append(1)
        if len(writes) == 2:
            f.write(b'half a checkpoint')
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(obj, f)

    monkeypatch.setattr(io, '_write_tensors', fill_the_disk)
    out = tmp_path / 'run'
    capsys.readouterr()
    assert train(*TINY, '--epochs', '2', '--max-steps', '1', '--eval-interval', '0', '--out', str(out)) == 2
    err = capsys.readouterr().err
    assert 'error: no space left on the device' in err and 'the previous checkpoint.pth is intact' in err
    assert load_train_checkpoint(out / 'checkpoint.pth')['epoch'] == 1
    assert not list(out.glob('.*.tmp')) and not (out / 'metrics.json').exists()


def test_a_diverging_run_stops_before_updating_anything(tmp_path, capsys):
    out = tmp_path / 'run'
    assert train(*TINY, '--epochs', '1', '--max-steps', '6', '--lr', '1e9', '--aux-weight', '0',
                 '--grad-clip', '0', '--out', str(out)) == 2
    assert 'no update was applied' in capsys.readouterr().err and not (out / 'checkpoint.pth').exists()
    # the step itself: a NaN gradient raises and leaves the weights and optimizer untouched
    net = nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    from ddarts_zoo.train_loops import TrainForward, train_step
    x = torch.tensor([[1.0, float('nan'), 0.0]])
    with pytest.raises(TrainingDivergedError, match='step 0'):
        train_step(TrainForward(net), x, torch.tensor([1]), opt, torch.amp.GradScaler('cpu', enabled=False),
                   TrainConfig(label_smoothing=0.0), 'step 0')
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items()) and not opt.state


def test_train_subset_is_seeded():
    data = torch.utils.data.TensorDataset(torch.arange(100))

    def pick(size, seed):
        return sorted(int(data[i][0]) for i in train_subset(data, size, seed).indices)

    assert pick(10, 1) == pick(10, 1) != pick(10, 2) and len(pick(10, 1)) == 10 == len(set(pick(10, 1)))
    assert len(pick(0.25, 0)) == 25
    with pytest.raises(TrainConfigError, match='only 100 images'):
        train_subset(data, 101, 0)


@pytest.mark.slow
def test_train_subset_run_reports_what_it_trained_on(tmp_path):
    out = tmp_path / 'run'
    assert train(*TINY, '--epochs', '1', '--max-steps', '1', '--train-subset', '48', '--out', str(out)) == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    assert (metrics['train_images'], metrics['num_images']) == (48, 359)
    assert metrics['recipe']['train_subset'] == 48


def test_trains_on_an_image_folder_at_a_chosen_size(tmp_path):
    from tests.image_trees import make_tree
    make_tree(tmp_path / 'data', 'RGB', per_class=10)   # 3 classes; 24 train / 6 held-out images
    out = tmp_path / 'run'
    assert train(*TINY, '--dataset', 'folder', '--data', str(tmp_path / 'data'), '--image-size', '20',
                 '--aux-weight', '0', '--batch-size', '8', '--epochs', '1', '--out', str(out)) == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['model_args'] == dict(num_classes=3, in_chans=3, init_channels=4)
    assert (metrics['image_size'], metrics['train_images'], metrics['num_images']) == (20, 24, 6)
    assert (out / 'data_stats.json').is_file()   # the folder's statistics, cached in the run directory


def test_digits_at_another_size():
    from dataclasses import replace
    from ddarts_zoo.data import DATASETS, build_dataset
    info = replace(DATASETS['digits'], image_size=16)
    train_tf, _ = build_transforms('digits', 16, False, info=info)
    x, _ = build_dataset('digits', 'train', image_size=16, transform=train_tf)[0]
    assert x.shape == (1, 16, 16)
    with pytest.raises(TrainConfigError, match='--image-size applies to digits and folder'):
        parse('--dataset', 'cifar10', '--data', '/x', '--image-size', '16')


def test_shard_sampler_covers_the_split_once():
    evals = [list(EpochShardSampler(359, r, 3, shuffle=False)) for r in range(3)]
    assert sorted(i for shard in evals for i in shard) == list(range(359))
    assert [len(EpochShardSampler(359, r, 3, shuffle=False)) for r in range(3)] == [120, 120, 119]
    trains = [list(EpochShardSampler(100, r, 3, shuffle=True, seed=1)) for r in range(3)]
    flat = [i for shard in trains for i in shard]
    assert len(flat) == len(set(flat)) == 99 and all(len(s) == 33 for s in trains)


@pytest.mark.slow
def test_amp_on_cpu_trains_with_finite_weights(tmp_path):
    """bfloat16 on a CPU: channels-last is off by default there (its dilated-conv backward gives NaNs)."""
    out = tmp_path / 'amp'
    assert train(*TINY, '--model', 'ddarts_dd1_cifar', '--epochs', '1', '--max-steps', '3', '--amp',
                 '--out', str(out)) == 0
    assert json.loads((out / 'metrics.json').read_text())['recipe']['amp'] is True
    assert json.loads((out / 'args.json').read_text())['channels_last'] is False
    ckpt = load_train_checkpoint(out / 'checkpoint.pth')
    assert all(torch.isfinite(v).all() for v in ckpt['model'].values() if v.is_floating_point())


def test_unscale_and_clip_is_the_update_sequence_of_both_loops():
    p = nn.Parameter(torch.zeros(4))
    opt = torch.optim.SGD([p], lr=1.0)
    scaler = torch.amp.GradScaler('cpu', init_scale=8.0)   # float16 path on the CPU
    scaler.scale(p.sum()).backward()
    p.grad = torch.tensor([3.0, 4.0, 0.0, 0.0]) * 8.0   # as if the scaled loss had these gradients
    norm = unscale_and_clip_(scaler, opt, [p], max_norm=1.0)
    assert float(norm) == 5.0 and torch.allclose(p.grad, torch.tensor([0.6, 0.8, 0.0, 0.0]))
    p.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])
    off = torch.amp.GradScaler('cpu', enabled=False)
    assert float(unscale_and_clip_(off, opt, [p], max_norm=0)) == 5.0
    assert float(p.grad[1]) == 4.0  # not clipped
    p.grad = torch.tensor([float('inf'), 0.0, 0.0, 0.0])
    assert not torch.isfinite(unscale_and_clip_(off, opt, [p], max_norm=0))


def test_checkpoint_helpers_check_format_and_version(tmp_path):
    path = save_checkpoint(tmp_path / 'c.pt', {'w': torch.ones(2)}, kind='k', version=3)
    loaded = load_checkpoint(path, kind='k', versions=(3,), what='a k checkpoint')
    assert torch.equal(loaded['w'], torch.ones(2)) and loaded['version'] == 3
    with pytest.raises(UnreadableFileError, match=r"c\.pt \(\d+ bytes\): holds 'k', not a j checkpoint"):
        load_checkpoint(path, kind='j', versions=(3,), what='a j checkpoint')
    with pytest.raises(UnreadableFileError, match='checkpoint version 3 is not supported'):
        load_checkpoint(path, kind='k', versions=(1, 2), what='a k checkpoint')
    (tmp_path / '.c.pt.abc.tmp').write_bytes(b'x')
    (tmp_path / '.other.pt.abc.tmp').write_bytes(b'x')
    assert [p.name for p in remove_stale_temps(path)] == ['.c.pt.abc.tmp']
    assert (tmp_path / '.other.pt.abc.tmp').exists() and path.exists()


def test_image_transforms():
    from PIL import Image
    img = Image.fromarray((torch.rand(40, 48, 3) * 255).to(torch.uint8).numpy())
    for dataset, size in (('cifar10', 32), ('imagenet', 224)):
        cfg = parse('--dataset', dataset, '--data', '/x')
        train_tf, test_tf = build_transforms(cfg.dataset, cfg.cutout, cfg.autoaugment)
        crop = img.resize((size, size)) if dataset == 'cifar10' else img
        assert train_tf(crop).shape == (3, size, size)
        assert test_tf(crop).shape == (3, size, size)
    cut = Cutout(16)(torch.ones(1, 32, 32))
    assert 0 < int((cut == 0).sum()) <= 256


def test_recipe_defaults_per_dataset_and_checks():
    cfg = parse('--dataset', 'imagenet', '--data', '/x')
    assert (cfg.batch_size, cfg.label_smoothing, cfg.autoaugment, cfg.cutout) == (96, 0.1, True, 0)
    cfg = parse('--dataset', 'cifar10', '--data', '/x')
    assert (cfg.batch_size, cfg.label_smoothing, cfg.autoaugment, cfg.cutout, cfg.epochs) == \
        (128, 0.0, True, 16, 600)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    bad = {('--dataset', 'cifar100'): '--data is required', ('--lr', '0'): '--lr must be a positive',
           ('--epochs', '0'): '--epochs must be >= 1',
           ('--drop-path', '1'): r'--drop-path must be in \[0, 1\)',
           ('--min-lr', '1'): '--min-lr 1.0 is above --lr', ('--train-subset', '2.5'): '--train-subset',
           ('--model', 'dd1', '--genotype', 'dd1'): 'exclude each other',
           ('--grad-clip', '-1'): '--grad-clip must be >= 0',
           ('--model-args', '[]'): 'expected a JSON object', ('--model', 'nosuch'): "--model 'nosuch'"}
    for argv, message in bad.items():
        with pytest.raises(TrainConfigError if argv[0] != '--model-args' else ValueError, match=message):
            parse(*argv)


@pytest.mark.slow
def test_ddp_gloo_genotype_run_and_export(tmp_path):
    """Two CPU processes under torchrun (gloo), a genotype file, then `ddarts-zoo export` of the result."""
    from ddarts_zoo import genotypes
    geno = tmp_path / 'geno.json'
    genotypes.get('dd1').save(geno)
    out = tmp_path / 'ddp'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
           '-m', 'ddarts_zoo', 'train', '--genotype', str(geno), '--model-args', '{"init_channels": 4}',
           '--batch-size', '16', '--max-steps', '1', '--epochs', '1', '--no-progress', '--out', str(out),
           '--aux-weight', '0']
    res = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['world_size'] == 2 and metrics['num_images'] == 359  # sharded evaluation, nothing twice
    assert metrics['model'] == 'ddarts_genotype_cifar' and metrics['model_args']['genotype']['genes']
    assert len(load_train_checkpoint(out / 'checkpoint.pth')['rng']) == 2   # every rank's RNG state

    import timm
    assert main(['export', str(out / 'checkpoint.pth'), '--out', str(tmp_path / 'export')]) == 0
    model = timm.create_model(f'local-dir:{tmp_path / "export"}', pretrained=True).eval()
    from ddarts_zoo.data import build_dataset
    ds = build_dataset('digits', 'test')
    with torch.no_grad():
        top1 = 100.0 * int((model(ds.images).argmax(1) == ds.labels).sum()) / len(ds)
    assert abs(top1 - metrics['top1']) < 1e-9
    card = (tmp_path / 'export' / 'README.md').read_text()
    assert f'{metrics["top1"]:.2f}' in card


def test_train_is_a_ddarts_zoo_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(['train', '--help'])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert '--genotype' in out and '--resume' in out and 'checkpoint.pth' in out and '--train-subset' in out
