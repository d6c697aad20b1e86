"""The search on the user's own images: ``python search/run.py --dataset folder --data ROOT``."""
from __future__ import annotations

import json

import pytest
import torch

from ddarts_zoo.data import TooFewImagesError, build_dataset, folder_stats
from ddarts_zoo.genotype import Genotype
from search.data import build_search_data
from search.run import build_parser, config_from_args, main
from search.searcher import Searcher
from search_configs import tiny
from tests.image_trees import make_tree


def test_search_on_a_folder_writes_a_genotype_and_the_data_statistics(tmp_path, monkeypatch, capsys):
    data = tmp_path / 'images'
    make_tree(data, 'L', per_class=14)
    cfg = tiny(tmp_path, 'run', dataset='folder', data=str(data), image_size=None, subset=1.0, epochs=1,
               max_steps_per_epoch=2, eval=False)
    searcher = Searcher(cfg)
    first_conv = next(m for m in searcher.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 1 and searcher.net.classifier.out_features == 3
    result = searcher.run()
    run = result.run_dir
    geno = Genotype.load(run / 'genotype.json')
    assert geno.num_cells == 3 and geno.meta['dataset'] == 'folder'
    stats = json.loads((run / 'data_stats.json').read_text())
    assert stats['classes'] == ['cat', 'dog', 'emu'] and stats['in_chans'] == 1
    assert 'folder ' in capsys.readouterr().out

    def boom(*args, **kw):
        raise AssertionError('statistics recomputed')
    monkeypatch.setattr(folder_stats, '_channel_stats', boom)
    (data / '.ddarts-zoo-stats.json').unlink()           # only the run directory still holds them
    resumed = Searcher(resume=run)
    assert resumed.info.stats_file == str(run / 'data_stats.json') and resumed.info.mean == searcher.info.mean


def test_the_search_halves_exclude_the_heldout_split(tmp_path):
    make_tree(tmp_path, 'RGB', per_class=10)
    cfg = tiny(tmp_path, 'x', dataset='folder', data=str(tmp_path), image_size=None, subset=1.0)
    weight, arch, info = build_search_data(cfg)
    paths = lambda split: {split.dataset.samples[i][0] for i in split.indices}  # noqa: E731
    heldout = {p for p, _ in build_dataset('folder', 'test', str(tmp_path)).samples}
    assert info.in_chans == 3 and len(weight) == 12 and len(arch) == 12
    assert not paths(weight) & paths(arch) and not (paths(weight) | paths(arch)) & heldout
    x, y = weight[0]
    assert x.shape == (3, info.image_size, info.image_size) and y in (0, 1, 2)
    too_few = 'each half of the training split.*has 12 image.s., fewer than one batch .--batch-size 13'
    with pytest.raises(TooFewImagesError, match=too_few):
        build_search_data(tiny(tmp_path, 'y', dataset='folder', data=str(tmp_path), subset=1.0,
                               batch_size=13))


def test_a_preset_resolution_does_not_follow_another_dataset(tmp_path):
    def cfg_of(*argv):
        return config_from_args(build_parser().parse_args(list(argv)))
    assert cfg_of('--preset', 'tiny').image_size == 8
    assert cfg_of('--preset', 'tiny', '--dataset', 'folder', '--data', str(tmp_path)).image_size is None
    assert cfg_of('--preset', 'tiny', '--dataset', 'folder', '--image-size', '20').image_size == 20


@pytest.mark.parametrize('argv, message', [
    (['--dataset', 'folder'], '--dataset folder needs --data ROOT'),
    (['--dataset', 'folder', '--data', '{tmp}/missing'], '{tmp}/missing: no such folder'),
    (['--dataset', 'folder', '--data', '{tmp}/images', '--batch-size', '64'], 'fewer than one batch'),
])
def test_run_py_bad_folders_exit_2_with_one_line(tmp_path, capsys, argv, message):
    make_tree(tmp_path / 'images', per_class=4)
    argv = [a.replace('{tmp}', str(tmp_path)) for a in argv]
    code = main(['--preset', 'tiny', '--out', str(tmp_path / 'runs'), '--no-progress', *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith('error: ')
    assert message.replace('{tmp}', str(tmp_path)) in err[0]
    assert not (tmp_path / 'runs').exists()                # nothing written
