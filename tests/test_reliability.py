"""Bad input gets one named error, no code runs from a file, and nothing is lost or half-written.

The table ``ROWS`` drives the command-line cases.  A row is a :class:`Row`:

* ``id``: the case, e.g. ``'search-resume-truncated'``;
* ``tool``: ``'ddarts-zoo'`` or ``'search'`` (``python search/run.py``);
* ``args``: the command's arguments; ``{tmp}`` stands for the row's own empty temporary folder;
* ``error``: a fragment the single ``error: ...`` line must contain;
* ``prepare``: ``f(tmp)`` writing the row's input files (default: nothing);
* ``slow``: run the row only as a subprocess under ``-m slow`` (rows that build or train something).

Every row runs in-process through the command's ``main`` (fast): the exit code must be 2, stderr exactly one
line ``error: ...`` holding ``error``, and every file under ``{tmp}`` byte-identical afterwards (nothing
overwritten, removed, added or left half-written; a crafted pickle's marker file never appears).  The slow
test runs a sample of rows as real processes and checks ``--debug`` shows a traceback instead.

Helpers append rows for their cases to ``ROWS``; ``API_ROWS`` holds Python-level loaders (a call that must
raise a given error type) in the same spirit.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import pytest
import torch

import ddarts_zoo  # noqa: F401  (registers the models)
from ddarts_zoo.errors import DiskFullError, UnreadableFileError, UserError
from ddarts_zoo.utils.io import atomic_write, safe_torch_load

ROOT = Path(__file__).resolve().parent.parent
MARKER = 'CODE_RAN'
SEARCH_FORMAT = 'ddarts-zoo/search-checkpoint'


# ---------------------------------------------------------------------------------------------- inputs
class _Payload:
    """Unpickling this runs code: it writes ``MARKER`` into its folder (what a malicious checkpoint would do)."""

    def __init__(self, folder: Path) -> None:
        self.marker = str(folder / MARKER)

    def __reduce__(self):
        return (exec, (f'open({self.marker!r}, "w").write("code from a file ran")',))


def _evil(name: str, extra: Optional[dict] = None) -> Callable[[Path], None]:
    """``prepare``: a ``torch.save``-d checkpoint carrying a code payload, at ``{tmp}/name``."""
    def prepare(tmp: Path) -> None:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        torch.save({**(extra or {}), 'state_dict': {'w': torch.zeros(2)}, 'payload': _Payload(tmp)}, tmp / name)
    return prepare


def _search_ckpt(kind: str) -> Callable[[Path], None]:
    """``prepare``: ``{tmp}/run/checkpoint.pt`` truncated to half, random bytes, empty or a code pickle."""
    def prepare(tmp: Path) -> None:
        path = tmp / 'run' / 'checkpoint.pt'
        path.parent.mkdir()
        if kind == 'evil':
            return _evil('run/checkpoint.pt', {'format': SEARCH_FORMAT})(tmp)
        torch.save({'format': SEARCH_FORMAT, 'version': 2, 'model': {'w': torch.randn(4096)}}, path)
        data = path.read_bytes()
        path.write_bytes({'truncated': data[:len(data) // 2], 'random': os.urandom(4096), 'empty': b''}[kind])
    return prepare


def _random_file(name: str, size: int = 4096) -> Callable[[Path], None]:
    def prepare(tmp: Path) -> None:
        (tmp / name).write_bytes(os.urandom(size))
    return prepare


def _nothing(tmp: Path) -> None:
    pass


# ---------------------------------------------------------------------------------------------- the table
@dataclasses.dataclass(frozen=True)
class Row:
    id: str
    tool: str                      # 'ddarts-zoo' or 'search'
    args: Tuple[str, ...]          # '{tmp}' -> the row's temporary folder
    error: str                     # fragment of the one `error:` line
    prepare: Callable[[Path], None] = _nothing
    slow: bool = False


_CUDA_ARGS = ('--device', 'cuda:99') if torch.cuda.is_available() else ('--device', 'cuda')
_SEARCH_OUT = ('--out', '{tmp}/runs', '--no-progress')

ROWS = [
    # item 1: a crafted pickle never runs (every loader of a file a user may have received)
    Row('search-resume-code', 'search', ('--resume', '{tmp}/run'), 'Python objects other than tensors',
        _search_ckpt('evil')),
    Row('export-code', 'ddarts-zoo', ('export', '{tmp}/evil.pth', '--out', '{tmp}/out'),
        'Python objects other than tensors', _evil('evil.pth')),
    Row('convert-official-code', 'ddarts-zoo',
        ('convert-official', '{tmp}/evil.pth.tar', '--model', 'ddarts_dd1_cifar', '--init-channels', '4',
         '--out', '{tmp}/out'), 'Python objects other than tensors', _evil('evil.pth.tar')),
    # item 2: corrupt files
    Row('search-resume-truncated', 'search', ('--resume', '{tmp}/run'), 'truncated or corrupt archive',
        _search_ckpt('truncated')),
    Row('search-resume-random', 'search', ('--resume', '{tmp}/run'), 'not a PyTorch tensor file',
        _search_ckpt('random')),
    Row('search-resume-empty', 'search', ('--resume', '{tmp}/run'), 'checkpoint.pt (0 bytes): the file is empty',
        _search_ckpt('empty')),
    Row('export-random-safetensors', 'ddarts-zoo', ('export', '{tmp}/w.safetensors', '--out', '{tmp}/out'),
        'w.safetensors (4096 bytes): truncated or not a safetensors file', _random_file('w.safetensors')),
    Row('export-random-pth', 'ddarts-zoo', ('export', '{tmp}/w.pth', '--out', '{tmp}/out'),
        'w.pth (4096 bytes): not a PyTorch tensor file', _random_file('w.pth')),
    Row('export-missing', 'ddarts-zoo', ('export', '{tmp}/none.pth', '--out', '{tmp}/out'),
        'none.pth (missing): no such file'),
    # item 6: values
    Row('search-image-size-0', 'search', ('--preset', 'tiny', '--image-size', '0') + _SEARCH_OUT,
        '--image-size must be >= 1, got 0'),
    Row('search-multiplier-above-steps', 'search', ('--preset', 'tiny', '--steps', '2', '--multiplier', '5')
        + _SEARCH_OUT, '--multiplier 5: a cell concatenates its last MULTIPLIER nodes, so it must be <= --steps (2)'),
    Row('search-device-cuda', 'search', ('--preset', 'tiny') + _CUDA_ARGS + _SEARCH_OUT, f'--device {_CUDA_ARGS[1]}'),
    Row('search-device-unknown', 'search', ('--preset', 'tiny', '--device', 'tpu') + _SEARCH_OUT,
        "--device 'tpu': choose"),
    Row('distance-out-missing-dir', 'ddarts-zoo',
        ('distance', '--matrix', 'resnet18', 'resnet50', '--out', '{tmp}/missing/m.png'),
        'the directory {tmp}/missing does not exist'),
    Row('plot-out-missing-dir', 'ddarts-zoo', ('plot', 'dd1', '--out', '{tmp}/missing/cells.png'),
        'the directory {tmp}/missing does not exist'),
]



def _files(*names: str) -> Callable[[Path], None]:
    """``prepare``: the files ``names`` (relative to ``{tmp}``) holding a few bytes each."""
    def prepare(tmp: Path) -> None:
        for name in names:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(b'not a checkpoint')
    return prepare


ROWS += [  # item 6 and item 3: the search's run directory, --resume auto, the collective timeout
    Row('search-name-existing-dir', 'search', ('--preset', 'tiny', '--name', 'x') + _SEARCH_OUT,
        '{tmp}/runs/x already exists and holds no search checkpoint (notes.txt); nothing was written there',
        _files('runs/x/notes.txt')),
    Row('search-name-existing-run', 'search', ('--preset', 'tiny', '--name', 'x') + _SEARCH_OUT,
        '{tmp}/runs/x already holds a search; continue it with --resume {tmp}/runs/x (or --resume auto)',
        _files('runs/x/checkpoint.pt')),
    Row('search-resume-auto-without-name', 'search', ('--preset', 'tiny', '--resume', 'auto') + _SEARCH_OUT,
        '--resume auto needs --name'),
    Row('search-resume-temporary-file', 'search', ('--resume', '{tmp}/run/.checkpoint.pt.k2j4l5.tmp'),
        'is the temporary file of an interrupted write, not a checkpoint', _files('run/.checkpoint.pt.k2j4l5.tmp')),
    Row('search-dist-timeout-0', 'search', ('--preset', 'tiny', '--dist-timeout', '0') + _SEARCH_OUT,
        '--dist-timeout must be > 0 seconds, got 0'),
]


_GENOTYPE = {'format': 'ddarts-zoo/genotype', 'version': 1, 'num_cells': 1, 'reductions': [], 'concat': [2, 3],
             'genes': [[['sep_conv_3x3', 2, 0], ['skip_connect', 3, 2]]], 'seq': [0]}


def _genotype_file(**changes) -> Callable[[Path], None]:
    """``prepare``: ``{tmp}/g.json``, a valid 1-cell genotype (nodes 2..3) with ``changes`` applied
    (``edges=[...]`` appended to its gene, ``drop=key`` removing a field)."""
    def prepare(tmp: Path) -> None:
        import json
        doc = json.loads(json.dumps(_GENOTYPE))
        doc['genes'][0] += changes.pop('edges', [])
        doc.pop(changes.pop('drop', None), None)
        doc.update(changes)
        (tmp / 'g.json').write_text(json.dumps(doc))
    return prepare


_TRAIN = ('train', '--dataset', 'digits', '--epochs', '1', '--init-channels', '4', '--out', '{tmp}/out')
ROWS += [  # item 5 and item 6: genotypes (every field checked; the error names cell, edge and field)
    Row('train-genotype-unknown-name', 'ddarts-zoo', _TRAIN + ('--genotype', 'nosuch'),
        "genotype 'nosuch' is neither a shipped name (dd1, dd2,"),
    Row('train-genotype-missing-file', 'ddarts-zoo', _TRAIN + ('--genotype', '{tmp}/none.json'),
        "genotype file '{tmp}/none.json' does not exist"),
    Row('train-genotype-random-bytes', 'ddarts-zoo', _TRAIN + ('--genotype', '{tmp}/g.json'),
        'g.json (4096 bytes) is not a genotype file', _random_file('g.json')),
    Row('train-genotype-empty-cell', 'ddarts-zoo', _TRAIN + ('--genotype', '{tmp}/g.json'),
        'cell 0, field "genes": no intermediate node has a live input',
        _genotype_file(genes=[[['sep_conv_3x3', 3, 2]]], seq=None, concat=None)),
    Row('train-genotype-node-17', 'ddarts-zoo', _TRAIN + ('--genotype', '{tmp}/g.json'),
        """cell 0 (genes[0]), edge 2 ('sep_conv_3x3', 17, 2), field "to": node 17 is not a node of the cell: """
        'its nodes are 2..3', _genotype_file(edges=[['sep_conv_3x3', 17, 2]])),
    Row('stats-genotype-concat', 'ddarts-zoo', ('stats', '{tmp}/g.json'),
        'field "concat": must be consecutive node indices in 2..64, got [1, 2]', _genotype_file(concat=[1, 2])),
    Row('stats-genotype-concat-before-nodes', 'ddarts-zoo', ('stats', '{tmp}/g.json'),
        """edge 1 ('skip_connect', 3, 2), field "to": node 3 is not a node of the cell: its nodes are 2..2""",
        _genotype_file(concat=[2])),
    Row('stats-genotype-num-cells', 'ddarts-zoo', ('stats', '{tmp}/g.json'),
        'field "num_cells": 99 does not match the 1 cells listed', _genotype_file(num_cells=99)),
    Row('stats-genotype-op-space', 'ddarts-zoo', ('stats', '{tmp}/g.json'),
        """field "op_space": unknown op space 'nosuch'""", _genotype_file(op_space='nosuch')),
    Row('stats-genotype-unknown-op', 'ddarts-zoo', ('stats', '{tmp}/g.json'),
        """edge 2 ('conv_9x9', 3, 0), field "op": unknown operation 'conv_9x9'""",
        _genotype_file(edges=[['conv_9x9', 3, 0]])),
    Row('stats-genotype-duplicate-edge', 'ddarts-zoo', ('stats', '{tmp}/g.json'),
        """edge 2 ('sep_conv_3x3', 2, 0), field "genes": duplicate of edge 0""",
        _genotype_file(edges=[['sep_conv_3x3', 2, 0]])),
    Row('stats-genotype-no-format', 'ddarts-zoo', ('stats', '{tmp}/g.json'),
        'field "format": missing', _genotype_file(drop='format')),
    Row('stats-genotype-version', 'ddarts-zoo', ('stats', '{tmp}/g.json'),
        'field "version": genotype format version 7 is not supported', _genotype_file(version=7)),
    Row('stats-genotype-reductions', 'ddarts-zoo', ('stats', '{tmp}/g.json'),
        'field "reductions": reduction index 3 is outside the 1 cells', _genotype_file(reductions=[3])),
    Row('stats-genotype-wrong-type', 'ddarts-zoo', ('stats', '{tmp}/g.json'),
        """edge 2 ('sep_conv_3x3', '3', 0), field "to": node indices must be integers""",
        _genotype_file(edges=[['sep_conv_3x3', '3', 0]])),
]

_TRAIN_FORMAT = {'format': 'ddarts-zoo/train-checkpoint'}
ROWS += [  # items 1, 2 and 6: final training (`ddarts-zoo train`): its --resume files and its options
    Row('train-resume-code', 'ddarts-zoo', _TRAIN + ('--resume', '{tmp}/evil.pth'),
        'evil.pth', _evil('evil.pth', _TRAIN_FORMAT)),
    Row('train-resume-random', 'ddarts-zoo', _TRAIN + ('--resume', '{tmp}/c.pth'),
        'c.pth (4096 bytes): not a PyTorch tensor file; expected a checkpoint written by ddarts-zoo train',
        _random_file('c.pth')),
    Row('train-resume-empty', 'ddarts-zoo', _TRAIN + ('--resume', '{tmp}/c.pth'),
        'c.pth (0 bytes): the file is empty', _random_file('c.pth', size=0)),
    Row('train-resume-incomplete', 'ddarts-zoo', _TRAIN + ('--resume', '{tmp}/c.pth'),
        'no model_name, model_args, model, optimizer, scaler, rng in it; expected a checkpoint written by',
        lambda tmp: atomic_write(tmp / 'c.pth', {**_TRAIN_FORMAT, 'version': 2, 'epoch': 1})),
    Row('train-resume-missing', 'ddarts-zoo', _TRAIN + ('--resume', '{tmp}/none.pth'),
        '--resume: no checkpoint at {tmp}/none.pth (missing)'),
    Row('train-resume-search-checkpoint', 'ddarts-zoo', _TRAIN + ('--resume', '{tmp}/run/checkpoint.pt'),
        "holds 'ddarts-zoo/search-checkpoint', not a checkpoint written by ddarts-zoo train",
        lambda tmp: atomic_write(tmp / 'run' / 'checkpoint.pt', {'format': SEARCH_FORMAT, 'version': 2})),
    Row('train-out-holds-a-run', 'ddarts-zoo', _TRAIN,
        'already holds a run ({tmp}/out/checkpoint.pth); continue it with --resume auto', _files('out/checkpoint.pth')),
    Row('train-model-unknown', 'ddarts-zoo', _TRAIN + ('--model', 'nosuch'),
        "--model 'nosuch': not a registered timm model"),
    Row('train-model-args-not-json', 'ddarts-zoo', _TRAIN + ('--model-args', '{init_channels: 4}'),
        "--model-args '{init_channels: 4}': not valid JSON"),
    Row('train-model-kwargs-unknown', 'ddarts-zoo', _TRAIN + ('--model-kwargs', '{"nosuch": 1}'),
        '--model-args {"nosuch": 1}: ddarts_dd1_cifar does not accept them'),
    Row('train-cifar-missing', 'ddarts-zoo', _TRAIN + ('--dataset', 'cifar10', '--data', '{tmp}/cifar'),
        "cifar10 was not found under --data '{tmp}/cifar'"),
    Row('train-lr-negative', 'ddarts-zoo', _TRAIN + ('--lr', '-1'), '--lr must be a positive number, got -1.0'),
    Row('train-subset-too-large', 'ddarts-zoo', _TRAIN + ('--train-subset', '5000'),
        '--train-subset 5000: the training split has only 1438 images'),
    Row('train-image-size-too-small', 'ddarts-zoo', _TRAIN + ('--image-size', '20'),
        '--image-size 20: 20 px inputs are too small for ddarts_dd1_cifar'),
    Row('train-device-cuda', 'ddarts-zoo', _TRAIN + _CUDA_ARGS, f'--device {_CUDA_ARGS[1]}'),
]


def _fill(text: str, tmp: Path) -> str:
    return text.replace('{tmp}', str(tmp))


def snapshot(root: Path) -> Dict[str, str]:
    """Every file and folder under ``root`` -> a digest of its bytes (``'dir'`` for folders)."""
    out = {}
    for p in sorted(root.rglob('*')):
        out[str(p.relative_to(root))] = 'dir' if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _main(tool: str) -> Callable[[Sequence[str]], int]:
    if tool == 'search':
        from search.run import main
    else:
        from ddarts_zoo.cli import main
    return main


@pytest.mark.parametrize('row', [r for r in ROWS if not r.slow], ids=lambda r: r.id)
def test_bad_input_gives_one_named_error(row: Row, tmp_path: Path, capsys) -> None:
    row.prepare(tmp_path)
    before = snapshot(tmp_path)
    capsys.readouterr()
    code = _main(row.tool)([_fill(a, tmp_path) for a in row.args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith('error: ')]
    assert code == 2, err
    assert len(lines) == 1 and 'Traceback' not in err, err
    assert _fill(row.error, tmp_path) in lines[0]
    assert 'weights_only=False' not in err and 'weights_only` set to `False' not in err
    assert snapshot(tmp_path) == before  # nothing written, overwritten, removed; no code ran (no marker)


def test_the_crafted_pickle_is_live(tmp_path: Path) -> None:
    """The payload used above really runs code when a file is unpickled unsafely (the tests are not vacuous)."""
    _evil('evil.pth')(tmp_path)
    torch.load(tmp_path / 'evil.pth', weights_only=False)
    assert (tmp_path / MARKER).is_file()


_SUBPROCESS_SAMPLE = ('search-resume-truncated', 'export-random-pth', 'distance-out-missing-dir')


@pytest.mark.slow
@pytest.mark.parametrize('row', [r for r in ROWS if r.slow or r.id in _SUBPROCESS_SAMPLE], ids=lambda r: r.id)
def test_bad_input_as_a_process(row: Row, tmp_path: Path) -> None:
    """Exit code 2 and one line for a real process; ``--debug`` shows the traceback and still writes nothing."""
    row.prepare(tmp_path)
    before = snapshot(tmp_path)
    cmd = ([sys.executable, 'search/run.py'] if row.tool == 'search' else [sys.executable, '-m', 'ddarts_zoo'])
    args = [_fill(a, tmp_path) for a in row.args]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(cmd + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count('error: ') == 1, proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr and _fill(row.error, tmp_path) in proc.stderr
    debug = subprocess.run(cmd + ['--debug'] + args, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
    assert debug.returncode != 0 and 'Traceback' in debug.stderr, debug.stderr[-3000:]
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------------------------- Python loaders
def _pretrained_overlay(path: Path) -> None:
    import timm
    timm.create_model('ddarts_dd1_cifar', pretrained=True, init_channels=4,
                      pretrained_cfg_overlay=dict(file=str(path)))


def _official(path: Path) -> None:
    import timm
    from ddarts_zoo.convert import load_official_checkpoint
    load_official_checkpoint(str(path), timm.create_model('ddarts_dd1_cifar', init_channels=4))


def _search_resume(path: Path) -> None:
    from search.checkpoint import load_checkpoint
    load_checkpoint(path)


def _backbone(path: Path) -> None:
    pytest.importorskip('mmdet')
    from ddarts_zoo.mmdet.backbone import DDartsBackbone
    DDartsBackbone(model_name='ddarts_dd1_cifar', model_args=dict(init_channels=4),
                   init_cfg=dict(type='Pretrained', checkpoint=str(path))).init_weights()


def _read_weights(path: Path) -> None:
    from ddarts_zoo.convert import read_weights_file
    read_weights_file(path)


API_ROWS = [  # (id, loader(path), file name): each must refuse the crafted pickle with UnreadableFileError
    ('safe_torch_load', lambda p: safe_torch_load(p, expected='tensors'), 'evil.pt'),
    ('read_weights_file', _read_weights, 'evil.pth'),
    ('load_official_checkpoint', _official, 'evil.pth.tar'),
    ('search load_checkpoint', _search_resume, 'checkpoint.pt'),
    ('pretrained_cfg_overlay file', _pretrained_overlay, 'evil.bin'),
    ('DDartsBackbone init_cfg', _backbone, 'evil.pth'),
]


@pytest.mark.parametrize('loader,name', [r[1:] for r in API_ROWS], ids=[r[0] for r in API_ROWS])
def test_loaders_never_run_code_from_a_file(loader, name: str, tmp_path: Path) -> None:
    _evil(name)(tmp_path)
    with pytest.raises(UnreadableFileError, match=r'evil|checkpoint') as info:
        loader(tmp_path / name)
    assert f'({(tmp_path / name).stat().st_size} bytes)' in str(info.value)
    assert 'weights_only' not in str(info.value)
    assert not (tmp_path / MARKER).exists()


@pytest.mark.parametrize('kind', ['truncated', 'random', 'empty'])
def test_corrupt_weights_files_name_file_size_and_expectation(kind: str, tmp_path: Path) -> None:
    from ddarts_zoo.convert import read_weights_file
    torch.save({'w': torch.randn(1024)}, tmp_path / 'w.pth')
    data = (tmp_path / 'w.pth').read_bytes()
    (tmp_path / 'w.pth').write_bytes({'truncated': data[:len(data) // 2], 'random': os.urandom(999),
                                      'empty': b''}[kind])
    size = (tmp_path / 'w.pth').stat().st_size
    with pytest.raises(UnreadableFileError, match=rf'w\.pth \({size} bytes\): .*; expected a state dict'):
        read_weights_file(tmp_path / 'w.pth')


# ---------------------------------------------------------------------------------------------- disk full
def _fail_midway(obj, f) -> None:
    f.write(b'half a checkpoint')
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _fail_as_torch_does(obj, f) -> None:
    try:
        _fail_midway(obj, f)
    except OSError as err:  # torch.save reports the ENOSPC of its writer as a RuntimeError
        raise RuntimeError('[enforce fail at inline_container.cc] unexpected pos') from err


@pytest.mark.parametrize('writer', [_fail_midway, _fail_as_torch_does], ids=['oserror', 'torch-runtimeerror'])
def test_disk_full_keeps_the_previous_file(writer, tmp_path: Path, monkeypatch) -> None:
    import ddarts_zoo.utils.io as io
    target = tmp_path / 'checkpoint.pt'
    atomic_write(target, {'epoch': 1})
    before = snapshot(tmp_path)
    monkeypatch.setattr(io, '_write_tensors', writer)
    with pytest.raises(DiskFullError, match=r'checkpoint\.pt; the previous checkpoint\.pt is intact'):
        atomic_write(target, {'epoch': 2})
    assert snapshot(tmp_path) == before and safe_torch_load(target, expected='x') == {'epoch': 1}
    with pytest.raises(DiskFullError, match='nothing was written'):
        atomic_write(tmp_path / 'new.pt', {'epoch': 2})
    assert snapshot(tmp_path) == before


def test_disk_full_in_an_export_folder_keeps_the_previous_folder(tmp_path: Path) -> None:
    from ddarts_zoo.utils.io import atomic_dir
    with atomic_dir(tmp_path / 'export') as folder:
        (folder / 'config.json').write_text('{"v": 1}')
    before = snapshot(tmp_path)
    with pytest.raises(DiskFullError, match=r'writing .*export; the previous export is intact'):
        with atomic_dir(tmp_path / 'export') as folder:
            (folder / 'config.json').write_text('{"v": 2}')
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / 'model.safetensors'))
    assert snapshot(tmp_path) == before


@pytest.fixture
def tiny_tmpfs(tmp_path: Path):
    """A 600 KiB tmpfs (needs root and mount permission; skipped elsewhere)."""
    mnt = tmp_path / 'tmpfs'
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=600k', 'tmpfs', str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip('mounting a tmpfs needs root and mount permission')
    try:
        yield mnt
    finally:
        subprocess.run(['umount', str(mnt)], check=False)


def test_disk_full_on_a_real_filesystem(tiny_tmpfs: Path) -> None:
    target = tiny_tmpfs / 'checkpoint.pt'
    atomic_write(target, {'w': torch.zeros(10)})
    before = snapshot(tiny_tmpfs)
    with pytest.raises(DiskFullError, match='the previous checkpoint.pt is intact'):
        atomic_write(target, {'w': torch.zeros(1_000_000)})  # 4 MB
    assert snapshot(tiny_tmpfs) == before


@pytest.mark.slow
def test_search_on_a_full_disk_stops_with_the_last_checkpoint_intact(tiny_tmpfs: Path) -> None:
    """Epoch 1's checkpoint (~370 KB) fits a 600 KiB disk, epoch 2's temporary copy does not."""
    cmd = [sys.executable, 'search/run.py', '--preset', 'tiny', '--epochs', '3', '--max-steps-per-epoch', '2',
           '--out', str(tiny_tmpfs), '--name', 'run', '--no-progress', '--no-plots', '--no-tensorboard',
           '--no-eval']
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS='1'), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert 'error: no space left on the device while writing' in proc.stderr
    assert 'the previous checkpoint.pt is intact' in proc.stderr
    from search.checkpoint import load_checkpoint
    assert load_checkpoint(tiny_tmpfs / 'run')['epoch'] == 1
    assert not list((tiny_tmpfs / 'run').glob('.*.tmp'))


def test_user_errors_are_value_errors() -> None:
    """Callers that caught ``ValueError`` (or ``FileNotFoundError`` for a missing file) keep working."""
    from ddarts_zoo.errors import MissingFileError
    assert issubclass(UnreadableFileError, UserError) and issubclass(UserError, ValueError)
    assert issubclass(MissingFileError, FileNotFoundError) and issubclass(DiskFullError, OSError)
