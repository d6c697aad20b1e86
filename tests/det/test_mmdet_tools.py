"""MMDetection's own tools on the digits-det configs, run as subprocesses the way mmdet users run them.

In an empty directory: ``ddarts-zoo digits-det`` prepares the data; then the installed mmdet wheel's
``tools/train.py``, ``tools/test.py`` on the saved checkpoint (same metrics and same predictions as the
training run's validation), ``tools/train.py --resume``, ``DetInferencer`` and ``init_detector`` +
``inference_detector`` on one image, and 2-rank CPU training under ``torchrun`` with the project's entry.
torch's weights-only loading stays on: no subprocess gets any ``TORCH_FORCE_*`` variable.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
from ports import free_port

try:
    import mmcv.ops  # noqa: F401
    import mmdet
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmdet.registry import DATASETS

    from ddarts_zoo.mmdet.checkpoints import MMENGINE_CHECKPOINT_GLOBALS
    from ddarts_zoo.mmdet.digits_det import DigitsDetMissingError
except ImportError as err:  # pragma: no cover - depends on the environment
    pytest.skip(f'needs the `det` extra: {err}', allow_module_level=True)

pytestmark = [pytest.mark.det, pytest.mark.filterwarnings('ignore:pkg_resources is deprecated')]

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {'retinanet': REPO / 'detection_configs' / 'retinanet_ddarts-dd1-cifar_fpn_digits-det.py',
           'mask-rcnn': REPO / 'detection_configs' / 'mask-rcnn_ddarts-dd1-cifar_fpn_digits-det.py'}
TOOLS = Path(mmdet.__file__).parent / '.mim' / 'tools'
VAL_IMAGES = 12
ITERS = 2


def _env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith('TORCH_FORCE_')}
    env.update(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    return env


def _run(args: List[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, \
        f'{args[:4]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}'
    return proc


def _options(name: str, iters: int = ITERS) -> List[str]:
    """Short schedule, a small held-out subset, every box kept (a few iterations pass no score threshold)."""
    ann = 'annotations/val-small.json'
    score = 'model.test_cfg.rcnn.score_thr=0.0' if name == 'mask-rcnn' else 'model.test_cfg.score_thr=0.0'
    return ['train_dataloader.batch_size=2', f'train_cfg.max_iters={iters}',
            f'train_cfg.val_interval={iters}',
            f'default_hooks.checkpoint.interval={iters}', 'default_hooks.logger.interval=1',
            f'val_dataloader.dataset.ann_file={ann}', f'test_dataloader.dataset.ann_file={ann}',
            f'val_evaluator.ann_file=data/digits-det/{ann}', f'test_evaluator.ann_file=data/digits-det/{ann}',
            score]


def _scalars(work_dir: Path, name: str) -> dict:
    """The last line of mmengine's JSON log under ``work_dir`` (``vis_data/scalars.json`` or test json)."""
    files = sorted(work_dir.glob(name))
    assert files, f'no {name} in {work_dir}'
    return json.loads(files[-1].read_text().splitlines()[-1])


@pytest.fixture(scope='module')
def workspace(tmp_path_factory) -> Path:
    """An empty directory where the one documented command prepared data/digits-det."""
    cwd = tmp_path_factory.mktemp('mmdet-tools')
    out = _run([sys.executable, '-m', 'ddarts_zoo', 'digits-det'], cwd).stdout
    assert out.startswith('wrote data/digits-det: train 1602 images'), out
    ann = cwd / 'data' / 'digits-det' / 'annotations'
    coco = json.loads((ann / 'val.json').read_text())
    keep = {im['id'] for im in coco['images'][:VAL_IMAGES]}
    coco['images'] = [im for im in coco['images'] if im['id'] in keep]
    coco['annotations'] = [a for a in coco['annotations'] if a['image_id'] in keep]
    (ann / 'val-small.json').write_text(json.dumps(coco))
    return cwd


@pytest.fixture(scope='module')
def trained(workspace) -> Dict[str, Path]:
    """Both digits-det configs trained for a few iterations by mmdet's tools/train.py, then validated."""
    if not (TOOLS / 'train.py').is_file():
        pytest.skip(f'the installed mmdet has no tools folder ({TOOLS})')
    work = {}
    for name, config in CONFIGS.items():
        work[name] = workspace / f'work-{name}'
        _run([sys.executable, TOOLS / 'train.py', config, '--work-dir', work[name], '--cfg-options',
              *_options(name), f'val_evaluator.outfile_prefix={work[name]}/val'], workspace)
        assert (work[name] / f'iter_{ITERS}.pth').is_file()
    return work


def test_missing_digits_det_names_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = Config.fromfile(str(CONFIGS['retinanet']))
    with DefaultScope.overwrite_default_scope('mmdet'):
        with pytest.raises(DigitsDetMissingError, match=r'data/digits-det .* does not exist; .*'
                                                        r'`ddarts-zoo digits-det --out data/digits-det`'):
            DATASETS.build(cfg.train_dataloader.dataset)
        (tmp_path / 'data' / 'digits-det').mkdir(parents=True)
        with pytest.raises(FileNotFoundError, match='is incomplete'):
            DATASETS.build(cfg.val_dataloader.dataset)


@pytest.mark.slow
@pytest.mark.parametrize('name', list(CONFIGS))
def test_tools_test_reproduces_the_validation(name, trained, workspace):
    work = trained[name]
    test_dir = workspace / f'test-{name}'
    _run([sys.executable, TOOLS / 'test.py', CONFIGS[name], work / f'iter_{ITERS}.pth',
          '--work-dir', test_dir, '--cfg-options', *_options(name),
          f'test_evaluator.outfile_prefix={test_dir}/test'], workspace)
    val = _scalars(work, '*/vis_data/scalars.json')
    test = _scalars(test_dir, '*/*.json')
    kinds = ('bbox', 'segm') if name == 'mask-rcnn' else ('bbox',)
    for kind in kinds:
        key = f'coco/{kind}_mAP'
        assert key in val and test[key] == val[key], (key, test, val)
        val_preds = json.loads((work / f'val.{kind}.json').read_text())
        test_preds = json.loads((test_dir / f'test.{kind}.json').read_text())
        assert len(val_preds) == len(test_preds) >= VAL_IMAGES  # every box of every image is compared
        for v, t in zip(val_preds, test_preds):
            assert (v['image_id'], v['category_id']) == (t['image_id'], t['category_id'])
            assert v['score'] == pytest.approx(t['score'], abs=1e-6)
            if kind == 'bbox':
                np.testing.assert_allclose(v['bbox'], t['bbox'], atol=1e-4)
            else:
                assert v['segmentation'] == t['segmentation']


@pytest.mark.slow
def test_checkpoint_needs_exactly_the_registered_globals(trained):
    for name, work in trained.items():
        ckpt = work / f'iter_{ITERS}.pth'
        needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(ckpt)))
        registered = {g[1] if isinstance(g, tuple) else f'{g.__module__}.{g.__qualname__}'
                      for g in MMENGINE_CHECKPOINT_GLOBALS}
        assert needed <= registered, needed - registered
        state = torch.load(ckpt, map_location='cpu', weights_only=True)
        assert state['meta']['iter'] == ITERS and state['meta']['dataset_meta']['classes'][9] == '9'
        assert type(state['message_hub']['log_scalars']['train/loss']).__name__ == 'HistoryBuffer'


class _GetattrEscape:
    """Pickles as ``getattr(numpy.ndarray, 'tofile')``: what a crafted checkpoint would try."""

    def __reduce__(self):
        return getattr, (np.ndarray, 'tofile')


def test_weights_only_still_refuses_other_objects(tmp_path):
    import pickle
    torch.save({'state_dict': {}, 'hook': _GetattrEscape()}, tmp_path / 'crafted.pth')
    refused = r"getattr\(<class 'numpy.ndarray'>, 'tofile'\) is not allowed"
    with pytest.raises(pickle.UnpicklingError, match=refused):
        torch.load(tmp_path / 'crafted.pth', weights_only=True)
    import shutil
    torch.save({'state_dict': {}, 'call': shutil.rmtree}, tmp_path / 'rmtree.pth')
    with pytest.raises(pickle.UnpicklingError, match='Unsupported global: GLOBAL shutil.rmtree'):
        torch.load(tmp_path / 'rmtree.pth', weights_only=True)


@pytest.mark.slow
def test_tools_train_resume(trained, workspace):
    work = trained['retinanet']
    proc = _run([sys.executable, TOOLS / 'train.py', CONFIGS['retinanet'], '--work-dir', work, '--resume',
                 '--cfg-options', *_options('retinanet', iters=ITERS + 1),
                 'default_hooks.checkpoint.max_keep_ckpts=2'], workspace)  # keep iter_2 for the other tests
    assert f'resumed epoch: 0, iter: {ITERS}' in proc.stdout + proc.stderr
    state = torch.load(work / f'iter_{ITERS + 1}.pth', map_location='cpu', weights_only=True)
    assert state['meta']['iter'] == ITERS + 1
    # the resumed run continued the logged history instead of starting a new one
    assert len(state['message_hub']['log_scalars']['train/loss']._log_history) == ITERS + 1


INFERENCE = '''
import json, sys
from mmdet.apis import DetInferencer, inference_detector, init_detector
results = []
for config, ckpt, image in json.loads(sys.argv[1]):
    inferencer = DetInferencer(model=config, weights=ckpt, device='cpu', show_progress=False)
    pred = inferencer(image, no_save_vis=True, no_save_pred=True, return_vis=False)['predictions'][0]
    model = init_detector(config, ckpt, device='cpu')
    found = inference_detector(model, image).pred_instances
    results.append({'inferencer': pred, 'boxes': found.bboxes.tolist(), 'labels': found.labels.tolist(),
                    'scores': found.scores.tolist(), 'classes': list(model.dataset_meta['classes']),
                    'masks': list(found.masks.shape) if 'masks' in found else None})
print(json.dumps(results))
'''


@pytest.mark.slow
def test_inference_on_one_image(trained, workspace):
    """DetInferencer and init_detector + inference_detector agree with each other and with the validation."""
    coco = json.loads((workspace / 'data' / 'digits-det' / 'annotations' / 'val-small.json').read_text())
    image = coco['images'][0]
    path = workspace / 'data' / 'digits-det' / 'val' / image['file_name']
    # the configs as trained (mmengine dumps them into the work dirs: every box kept, as in validation)
    jobs = [(str(next(trained[name].glob('*.py'))), str(trained[name] / f'iter_{ITERS}.pth'), str(path))
            for name in CONFIGS]
    proc = _run([sys.executable, '-c', INFERENCE, json.dumps(jobs)], workspace)
    outs = json.loads(proc.stdout.splitlines()[-1])
    for name, out in zip(CONFIGS, outs):
        assert out['classes'] == [str(d) for d in range(10)]
        assert len(out['boxes']) > 0
        np.testing.assert_allclose(out['inferencer']['bboxes'], out['boxes'], atol=1e-4)
        np.testing.assert_allclose(out['inferencer']['scores'], out['scores'], atol=1e-6)
        assert out['inferencer']['labels'] == out['labels']
        masks = [len(out['boxes']), image['height'], image['width']] if name == 'mask-rcnn' else None
        assert out['masks'] == masks
        val = json.loads((trained[name] / 'val.bbox.json').read_text())
        val = [p for p in val if p['image_id'] == image['id']]
        assert len(val) == len(out['boxes'])
        for p, box, score in zip(val, out['boxes'], out['scores']):
            x, y, w, h = p['bbox']
            np.testing.assert_allclose([x, y, x + w, y + h], box, atol=1e-3)
            assert p['score'] == pytest.approx(score, abs=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason='mmengine launches CUDA runs itself')
def test_cpu_distributed_checks_the_backend():
    from mmengine.config import ConfigDict

    from ddarts_zoo.errors import UserError
    from ddarts_zoo.mmdet.cpu_dist import prepare_cpu_distributed
    cfg = ConfigDict(launcher='none', env_cfg=dict(dist_cfg=dict(backend='nccl')))
    assert prepare_cpu_distributed(cfg) is False and 'model_wrapper_cfg' not in cfg  # single process
    cfg.launcher = 'pytorch'
    with pytest.raises(UserError, match=r"env_cfg.dist_cfg.backend='nccl' needs GPUs"):
        prepare_cpu_distributed(cfg)



@pytest.mark.slow
def test_two_rank_cpu_training_under_torchrun(workspace):
    work = workspace / 'work-dist'
    _run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_addr=127.0.0.1',
          f'--master_port={free_port()}', '-m', 'ddarts_zoo.mmdet.train', CONFIGS['retinanet'],
          '--launcher', 'pytorch', '--work-dir', work, '--cfg-options', *_options('retinanet')], workspace)
    log = next(work.glob('*/*.log')).read_text()
    assert 'Distributed training: True' in log and 'GPU number: 2' in log, log[:3000]
    result = json.loads((work / 'final_metrics.json').read_text())
    assert result['iterations'] == ITERS and 'coco/bbox_mAP' in result['metrics']
    state = torch.load(work / f'iter_{ITERS}.pth', map_location='cpu', weights_only=True)
    assert state['meta']['iter'] == ITERS
