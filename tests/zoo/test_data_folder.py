"""``--dataset folder``: the user's own images (generated PNG trees: 3 classes, gray / RGB, odd sizes)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch
from PIL import Image

from ddarts_zoo.data import (DATASETS, DatasetMissingError, FolderDataError, TooFewImagesError, build_dataset,
                             check_enough_images, dataset_info)
from ddarts_zoo.data import folder_stats
from ddarts_zoo.errors import UnreadableFileError, UserError
from ddarts_zoo.transforms import SMALL_IMAGE_MAX, build_transforms
from tests.image_trees import CLASSES, make_tree


def info_of(root: Path, **kw):
    return dataset_info('folder', str(root), **kw)


@pytest.mark.parametrize('mode, chans', [('L', 1), ('RGB', 3)])
def test_classes_channels_size_from_the_data(tmp_path, mode, chans, capsys):
    make_tree(tmp_path, mode)
    info = info_of(tmp_path)
    assert info.name == 'folder' and info.classes == CLASSES and info.num_classes == 3
    assert info.in_chans == chans and len(info.mean) == len(info.std) == chans
    train = build_dataset('folder', 'train', str(tmp_path), info=info)
    shorter = sorted(min(img.size) for img, _ in (train[i] for i in range(len(train))))
    assert info.image_size == shorter[len(shorter) // 2]       # median shorter side of the training images
    line = capsys.readouterr().out
    assert f'{tmp_path}: 3 classes (cat, dog, emu)' in line and f'{info.image_size} px' in line
    assert ('1 channel' if chans == 1 else '3 channels') in line


def test_mean_and_std_are_those_of_the_training_images(tmp_path):
    levels = make_tree(tmp_path, 'L', per_class=8, val=2, constant=True)
    info = info_of(tmp_path, image_size=16)
    values = np.array(levels['train']) / 255.0     # flat images: every one weighs 16 x 16 pixels
    assert info.mean[0] == pytest.approx(values.mean(), abs=1e-4)
    assert info.std[0] == pytest.approx(values.std(), abs=1e-4)


def test_heldout_split_seeded_per_class_and_disjoint(tmp_path):
    make_tree(tmp_path, 'L', per_class=10)
    train = build_dataset('folder', 'train', str(tmp_path))
    test = build_dataset('folder', 'test', str(tmp_path))
    assert len(train) == 24 and len(test) == 6 and sorted(set(test.targets)) == [0, 1, 2]
    assert [test.targets.count(c) for c in range(3)] == [2, 2, 2]
    assert not {p for p, _ in train.samples} & {p for p, _ in test.samples}
    assert build_dataset('folder', 'test', str(tmp_path)).samples == test.samples   # the same every time


def test_val_folder_is_the_heldout_split(tmp_path):
    make_tree(tmp_path, 'RGB', per_class=4, val=2)
    train = build_dataset('folder', 'train', str(tmp_path))
    test = build_dataset('folder', 'test', str(tmp_path))
    assert len(train) == 12 and len(test) == 6
    assert all('/val/' in p for p, _ in test.samples) and all('/train/' in p for p, _ in train.samples)


def test_mixed_grayscale_and_rgb_give_three_channels(tmp_path):
    make_tree(tmp_path, 'L', per_class=3)
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / 'train' / 'dog' / 'colour.png')
    info = info_of(tmp_path)
    x, _ = build_dataset('folder', 'train', str(tmp_path), info=info,
                         transform=build_transforms('folder', 0, False, info=info)[1])[0]
    assert info.in_chans == 3 and x.shape == (3, info.image_size, info.image_size)


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits(tmp_path):
    make_tree(tmp_path, 'L', per_class=3)
    path = tmp_path / 'train' / 'cat' / 'deep.png'
    Image.fromarray(np.full((20, 20), 65535, np.uint16)).save(path)
    info = info_of(tmp_path)
    ds = build_dataset('folder', 'train', str(tmp_path), info=info)
    img = next(img for (p, _), (img, _) in zip(ds.samples, (ds[i] for i in range(len(ds)))) if p == str(path))
    assert info.in_chans == 1 and img.mode == 'L' and np.asarray(img).min() == 255


@pytest.mark.parametrize('size', [20, SMALL_IMAGE_MAX + 8])
def test_transforms_bring_odd_sizes_to_one_square(tmp_path, size):
    make_tree(tmp_path, 'RGB', per_class=3)
    info = info_of(tmp_path, image_size=size)
    train_tf, test_tf = build_transforms('folder', 4, True, info=info)
    for tf in (train_tf, test_tf):
        ds = build_dataset('folder', 'train', str(tmp_path), transform=tf, info=info)
        batch = torch.stack([ds[i][0] for i in range(len(ds))])
        assert batch.shape == (len(ds), 3, size, size) and torch.isfinite(batch).all()
    with pytest.raises(ValueError, match='needs info'):
        build_transforms('folder', 0, False)


def test_stats_cached_and_reused(tmp_path, monkeypatch, capsys):
    make_tree(tmp_path, 'L', per_class=4)
    cache = tmp_path / 'run'
    first = info_of(tmp_path, cache_dir=cache)
    record = json.loads((cache / 'data_stats.json').read_text())
    assert first.stats_file == str(cache / 'data_stats.json')
    assert record['classes'] == list(CLASSES) and str(first.image_size) in record['stats']
    assert 'computed, cached in' in capsys.readouterr().out

    def boom(*args, **kw):
        raise AssertionError('the cache was not used')
    monkeypatch.setattr(folder_stats, '_channel_stats', boom)
    monkeypatch.setattr(folder_stats, 'read_header', boom)
    assert info_of(tmp_path, cache_dir=cache) == first
    assert '[cached in' in capsys.readouterr().out
    Image.fromarray(np.zeros((15, 15), np.uint8)).save(tmp_path / 'train' / 'emu' / 'new.png')
    with pytest.raises(AssertionError, match='cache was not used'):   # a new file: recomputed
        info_of(tmp_path, cache_dir=cache)


def test_stats_cached_next_to_the_data_without_a_run_directory(tmp_path):
    make_tree(tmp_path, 'L', per_class=3)
    info = info_of(tmp_path)
    assert info.stats_file == str(tmp_path / '.ddarts-zoo-stats.json') and Path(info.stats_file).is_file()
    assert len(build_dataset('folder', 'train', str(tmp_path))) == 6   # the hidden file is not a class


def test_a_broken_cache_is_recomputed(tmp_path):
    make_tree(tmp_path, 'L', per_class=3)
    good = info_of(tmp_path)
    Path(good.stats_file).write_text('{"format": "ddarts-zoo folder statistics", "stats": ')
    assert info_of(tmp_path) == good


def _expect(exc: type, match: str, root: Path, batch: Optional[int] = None) -> None:
    with pytest.raises(exc, match=match) as caught:
        info = info_of(root)
        train = build_dataset('folder', 'train', str(root), info=info)
        [train[i] for i in range(len(train))]
        check_enough_images(len(train), batch or 1, f'the training split of --data {root}')
    assert isinstance(caught.value, UserError) and '\n' not in str(caught.value)


def test_bad_trees_get_named_errors(tmp_path):
    _expect(FolderDataError, f'{tmp_path / "nope"}: no such folder', tmp_path / 'nope')
    (tmp_path / 'a' / 'images').mkdir(parents=True)
    _expect(FolderDataError, 'no train/ folder .found images', tmp_path / 'a')
    (tmp_path / 'b' / 'train').mkdir(parents=True)
    _expect(FolderDataError, 'no class folders', tmp_path / 'b')
    make_tree(tmp_path / 'c', per_class=2)
    (tmp_path / 'c' / 'train' / 'fox').mkdir()
    (tmp_path / 'c' / 'train' / 'fox' / 'notes.txt').write_text('not an image')
    _expect(FolderDataError, f'empty class folder {tmp_path / "c" / "train" / "fox"}', tmp_path / 'c')
    make_tree(tmp_path / 'd', per_class=2)
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(tmp_path / 'd' / 'train' / 'loose.png')
    _expect(FolderDataError, 'must be inside class folders.*loose.png', tmp_path / 'd')
    make_tree(tmp_path / 'e', per_class=2, val=1)
    (tmp_path / 'e' / 'val' / 'cat').rename(tmp_path / 'e' / 'val' / 'lynx')
    _expect(FolderDataError, 'class folder.s. lynx are not in', tmp_path / 'e')
    (tmp_path / 'f' / 'train' / 'only').mkdir(parents=True)
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(tmp_path / 'f' / 'train' / 'only' / '0.png')
    _expect(FolderDataError, "at least 2 class folders, found 'only'", tmp_path / 'f')
    make_tree(tmp_path / 'g', per_class=4)
    _expect(TooFewImagesError, 'has 9 image.s., fewer than one batch .--batch-size 16', tmp_path / 'g',
            batch=16)


@pytest.mark.parametrize('content', [b'', b'\x89PNG\r\n\x1a\n garbage', os.urandom(300)])
def test_an_unreadable_image_is_named(tmp_path, content):
    make_tree(tmp_path, per_class=2)
    bad = tmp_path / 'train' / 'dog' / 'broken.png'
    bad.write_bytes(content)
    _expect(UnreadableFileError, f'{bad} .{len(content)} bytes.: cannot decode this image', tmp_path)


def test_a_truncated_image_is_named_when_it_is_loaded(tmp_path):
    make_tree(tmp_path, 'RGB', per_class=3)
    info = info_of(tmp_path)
    path, _ = build_dataset('folder', 'train', str(tmp_path)).samples[1]
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:len(data) // 2])   # after the scan: the cached info does not see it
    ds = build_dataset('folder', 'train', str(tmp_path), info=info)
    with pytest.raises(UnreadableFileError, match=f'{path} .* cannot decode this image'):
        ds[1]


def test_folder_needs_data_and_other_datasets_are_unchanged():
    with pytest.raises(DatasetMissingError, match='needs --data ROOT'):
        dataset_info('folder')
    with pytest.raises(UserError, match='unknown dataset .mnist.*folder'):
        build_dataset('mnist')
    assert dataset_info('digits', '/ignored', image_size=99) is DATASETS['digits']
    assert dataset_info('cifar10') is DATASETS['cifar10']
