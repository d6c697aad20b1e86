"""``ddarts-zoo train``: a tiny digits run, checkpoint / resume, logs, metrics, export, DDP (gloo on CPU)."""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddarts_zoo.cli import main
from ddarts_zoo.commands.train import add_arguments, resolve_args
from ddarts_zoo.train import CHECKPOINT_FORMAT
from ddarts_zoo.transforms import Cutout, build_transforms
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


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return resolve_args(parser.parse_args(list(argv)))


def _rows(out: Path):
    with open(out / 'log.csv', newline='') as f:
        return list(csv.DictReader(f))


def test_tiny_run_writes_checkpoint_logs_and_metrics(tmp_path):
    out = tmp_path / 'run'
    assert train(*TINY, '--epochs', '1', '--out', str(out)) == 0
    ckpt = torch.load(out / 'checkpoint.pth', map_location='cpu', weights_only=False)
    assert ckpt['format'] == CHECKPOINT_FORMAT and ckpt['epoch'] == 1
    assert ckpt['model_name'] == 'ddarts_dd5_cifar' and ckpt['model_args'] == dict(
        num_classes=10, in_chans=1, init_channels=4)
    assert any(k.startswith('aux_head.') for k in ckpt['model'])  # trained with the auxiliary head
    rows = _rows(out)
    assert [r['epoch'] for r in rows] == ['0'] and rows[0]['test_top1'] != ''
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['num_images'] == 359 and metrics['split'] == 'test'
    assert 0 <= metrics['top1'] <= metrics['top5'] <= 100
    assert metrics['recipe']['lr'] == 0.025 and metrics['recipe']['autoaugment'] is False
    assert metrics['recipe']['cutout'] == 16 and metrics['recipe']['drop_path'] == 0.2
    assert list((out / 'tb').glob('events.out.tfevents.*'))
    assert not [p for p in out.rglob('*.tmp')]


def test_resume_continues_bit_exactly(tmp_path):
    straight, first = tmp_path / 'straight', tmp_path / 'first'
    assert train(*TINY, '--epochs', '2', '--out', str(straight)) == 0
    # a run stopped after epoch 1 (as a killed job would be) ...
    assert train(*TINY, '--epochs', '2', '--out', str(first), '--stop-after', '1') == 0
    assert torch.load(first / 'checkpoint.pth', weights_only=False)['epoch'] == 1
    assert not (first / 'metrics.json').exists()
    # ... and resumed reproduces the uninterrupted run
    assert train(*TINY, '--epochs', '2', '--out', str(first), '--resume') == 0
    a = torch.load(straight / 'checkpoint.pth', weights_only=False)
    b = torch.load(first / 'checkpoint.pth', weights_only=False)
    assert b['epoch'] == 2
    assert all(torch.equal(v, b['model'][k]) for k, v in a['model'].items())
    assert [r['epoch'] for r in _rows(first)] == ['0', '1']
    assert json.loads((first / 'metrics.json').read_text())['top1'] == \
        json.loads((straight / 'metrics.json').read_text())['top1']


def test_resume_refuses_another_model(tmp_path):
    out = tmp_path / 'run'
    assert train(*TINY, '--epochs', '1', '--out', str(out)) == 0
    with pytest.raises(SystemExit, match='init_channels'):
        train(*TINY, '--epochs', '2', '--out', str(out), '--resume', '--init-channels', '6')
    with pytest.raises(SystemExit, match='no checkpoint'):
        train(*TINY, '--out', str(tmp_path / 'nothing'), '--resume')


def test_shard_sampler_covers_the_split_once():
    evals = [list(EpochShardSampler(359, r, 3, shuffle=False)) for r in range(3)]
    assert sorted(i for shard in evals for i in shard) == list(range(359))
    assert [len(EpochShardSampler(359, r, 3, shuffle=False)) for r in range(3)] == [120, 120, 119]
    trains = [list(EpochShardSampler(100, r, 3, shuffle=True, seed=1)) for r in range(3)]
    flat = [i for shard in trains for i in shard]
    assert len(flat) == len(set(flat)) == 99 and all(len(s) == 33 for s in trains)


def test_amp_on_cpu_runs(tmp_path):
    assert train(*TINY, '--epochs', '1', '--max-steps', '1', '--amp', '--out', str(tmp_path / 'amp')) == 0
    assert json.loads((tmp_path / 'amp' / 'metrics.json').read_text())['recipe']['amp'] is True


def test_image_transforms():
    from PIL import Image
    img = Image.fromarray((torch.rand(40, 48, 3) * 255).to(torch.uint8).numpy())
    for dataset, size in (('cifar10', 32), ('imagenet', 224)):
        args = parse('--dataset', dataset, '--data', '/x')
        train_tf, test_tf = build_transforms(args.dataset, args.cutout, args.autoaugment)
        crop = img.resize((size, size)) if dataset == 'cifar10' else img
        assert train_tf(crop).shape == (3, size, size)
        assert test_tf(crop).shape == (3, size, size)
    cut = Cutout(16)(torch.ones(1, 32, 32))
    assert 0 < int((cut == 0).sum()) <= 256


def test_recipe_defaults_per_dataset():
    args = parse('--dataset', 'imagenet', '--data', '/x')
    assert (args.batch_size, args.label_smoothing, args.autoaugment, args.cutout) == (96, 0.1, True, 0)
    args = parse('--dataset', 'cifar10', '--data', '/x')
    assert (args.batch_size, args.label_smoothing, args.autoaugment, args.cutout, args.epochs) == \
        (128, 0.0, True, 16, 600)
    with pytest.raises(SystemExit, match='--data'):
        parse('--dataset', 'cifar100')


@pytest.mark.slow
def test_ddp_gloo_genotype_run_and_export(tmp_path):
    """Two CPU processes under torchrun (gloo), a genotype file, then `ddarts-zoo export` of the result."""
    from ddarts_zoo import genotypes
    geno = tmp_path / 'geno.json'
    genotypes.get('dd1').save(geno)
    out = tmp_path / 'ddp'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', '-m', 'ddarts_zoo',
           'train', '--genotype', str(geno), '--model-args', '{"init_channels": 4}', '--batch-size', '16', '--max-steps', '1',
           '--epochs', '1', '--no-progress', '--out', str(out), '--aux-weight', '0']
    res = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['world_size'] == 2 and metrics['num_images'] == 359  # sharded evaluation, nothing twice
    assert metrics['model'] == 'ddarts_genotype_cifar' and metrics['model_args']['genotype']['genes']

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
    assert '--genotype' in out and '--resume' in out and 'checkpoint.pth' in out
