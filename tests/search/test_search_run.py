"""Presets, command line precedence, and `python search/run.py` end to end (plus the timm model it feeds)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ddarts_zoo  # noqa: F401  (registers the timm models)
from ddarts_zoo.genotype import Genotype
from search.config import SearchConfig, build_supernet
from search.presets import PRESET_SOURCES, PRESETS, preset
from search.run import build_parser, config_from_args

ROOT = Path(__file__).resolve().parents[2]

PAPER = {  # preset: (dataset, loss, parsing)
    'dd1': ('cifar10', 'ablation', 'sparse'), 'dd2': ('cifar10', 'fair', 'edge'),
    'dd3': ('cifar10', 'ablation', 'edge'), 'dd4': ('cifar100', 'ablation', 'edge'),
    'dd5': ('cifar100', 'ablation', 'sparse'), 'dd6': ('cifar100', 'fair', 'edge'),
    'dd7': ('imagenet', 'ablation', 'edge'),
}


def cfg_of(*argv):
    return config_from_args(build_parser().parse_args(list(argv)))


def test_every_preset_is_valid_and_documented():
    names = set(PAPER) | {f'do{k}-{b}' for k in (1, 2) for b in ('resnet18', 'resnet50', 'xception')}
    assert names | {'quick', 'tiny'} == set(PRESETS) == set(PRESET_SOURCES)
    for name in PRESETS:
        cfg = SearchConfig(**preset(name))
        cfg.check()
        assert name in PRESET_SOURCES and PRESET_SOURCES[name]
    for name, (dataset, loss, parse) in PAPER.items():
        cfg = SearchConfig(**preset(name))
        assert (cfg.dataset, cfg.loss, cfg.parse) == (dataset, loss, parse), name
        assert cfg.layers == 8 and cfg.epochs == 50 and cfg.threshold == 0.85 and cfg.w01 == 7.0
        assert cfg.w_abl == 0.5 and cfg.arch_lr == 3e-3 and cfg.lr == 0.005 and cfg.amp
        assert cfg.batch_size == (96 if dataset == 'imagenet' else 128)
    assert SearchConfig(**preset('dd3')).derive_layers == 14
    for k, dataset in ((1, 'cifar10'), (2, 'cifar100')):
        for base in ('resnet18', 'resnet50', 'xception'):
            cfg = SearchConfig(**preset(f'do{k}-{base}'))
            assert (cfg.dataset, cfg.baseline, cfg.op_set, cfg.channels) == (dataset, base, 'dartopti', 32)
            assert cfg.pretrain_epochs == 5 and cfg.early_stop_enabled and cfg.parse == 'sparse'


def test_explicit_flags_override_the_preset():
    cfg = cfg_of('--preset', 'dd1', '--loss', 'fair', '--epochs', '3', '--no-amp')
    assert (cfg.dataset, cfg.loss, cfg.epochs, cfg.amp, cfg.parse, cfg.preset) == \
        ('cifar10', 'fair', 3, False, 'sparse', 'dd1')
    assert cfg_of().preset == 'quick' and cfg_of().dataset == 'digits'
    cfg = cfg_of('--baseline', 'resnet18')
    assert cfg.op_set == 'dartopti' and cfg.ops is None and cfg.early_stop_enabled and cfg.pretrain == 5
    assert cfg_of().pretrain == 0 and cfg_of('--baseline', 'resnet18', '--pretrain-epochs', '0').pretrain == 0
    assert cfg_of('--preset', 'do1-resnet18', '--no-early-stop').early_stop_enabled is False
    with pytest.raises(SystemExit):
        cfg_of('--preset', 'dd9')
    with pytest.raises(ValueError, match='--layers cannot be combined with --baseline'):
        cfg_of('--preset', 'do1-resnet18', '--layers', '8')


def test_dartopti_preset_supernet_structure():
    cfg = SearchConfig(**dict(preset('do1-resnet50'), channels=4))
    net = build_supernet(cfg, num_classes=10, in_chans=3)
    assert net.layers == 4 and net.steps == 6 and net.reductions == (1, 2, 3)
    assert net.cell_groups == (0, 1, 2, 0) and len(net.alphas) == 3 and net.alphas[0].shape == (27, 12)


@pytest.mark.slow
def test_run_py_end_to_end(tmp_path):
    cmd = [sys.executable, 'search/run.py', '--preset', 'tiny', '--epochs', '1', '--out', str(tmp_path), '--name',
           'e2e', '--no-progress']
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    # the end names the files, the plots, a per-cell summary and the training command; no raw genotype dump
    assert 'genotype_sparse.json' in out and 'genotype_edge.json' in out and 'plots/' in out
    assert 'sparse genotype per cell' in out and 'ddarts-zoo train --genotype' in out
    assert 'Genotype_nested(' not in out and 'Genotype(' not in out
    run = tmp_path / 'e2e'
    epoch_lines = [line for line in out.splitlines() if line.startswith('epoch ')]
    assert len(epoch_lines) == 1 and len(epoch_lines[0]) < 200           # one compact line per epoch
    assert 'genotype (sparse)' not in out and 'genotype (sparse)' in (run / 'search.log').read_text()
    for name in ('genotype.json', 'genotype_sparse.json', 'genotype_edge.json', 'metrics.csv', 'epochs.jsonl',
                 'search.log', 'checkpoint.pt', 'plots/alphas.png'):
        assert (run / name).is_file(), name
    geno = Genotype.load(run / 'genotype.json')
    assert geno.num_cells == 3 and geno.reductions == (1, 2) and geno.meta['preset'] == 'tiny'

    import timm
    import torch
    if 'ddarts_genotype_cifar' not in timm.list_models('ddarts_genotype_cifar'):
        pytest.skip('ddarts_genotype_cifar is not registered yet')
    model = timm.create_model('ddarts_genotype_cifar', genotype=str(run / 'genotype.json'), in_chans=1,
                              num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


@pytest.mark.slow
def test_resume_flag_rejects_a_missing_run(tmp_path):
    cmd = [sys.executable, 'search/run.py', '--resume', str(tmp_path / 'nothing')]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode != 0 and 'no search checkpoint' in proc.stderr


def test_readme_preset_table_is_generated_from_the_presets():
    from search.presets import preset_table
    readme = (Path(__file__).resolve().parents[2] / 'README.md').read_text()
    assert preset_table() in readme, 'README preset table is stale: paste search.presets.preset_table()'
