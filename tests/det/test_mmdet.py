"""MMDetection integration: DDartsBackbone, detection configs, digits-det generator (``det`` extra)."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

try:  # the whole module needs the det extra (mmcv compiled with ops for this torch)
    import mmcv.ops  # noqa: F401
    import mmdet  # noqa: F401
    import mmengine  # noqa: F401
    import ddarts_zoo.mmdet  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the environment
    pytest.skip(f'needs the `det` extra (mmengine, mmcv 2.1 with ops, mmdet 3.3, pycocotools): {err}',
                allow_module_level=True)

import timm
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.structures import InstanceData
from torch.nn.modules.batchnorm import _BatchNorm

from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks

from ddarts_zoo.mmdet import DDartsBackbone, generate_digits_det
from ddarts_zoo.mmdet.digits_det import DEFAULT_PARAMS, MASK_THRESHOLD

pytestmark = [
    pytest.mark.det,
    # pycocotools with numpy 2 (harmless); mmengine's pkg_resources probe on setuptools 81
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.filterwarnings('ignore:pkg_resources is deprecated'),
    pytest.mark.filterwarnings('ignore:.*instance named of visualizer has been created'),  # 2 runners
]

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / 'detection_configs'
RETINANET_COCO = CONFIGS / 'retinanet_ddarts-do2-resnet18_fpn_1x_coco.py'
MASKRCNN_CITYSCAPES = CONFIGS / 'mask-rcnn_ddarts-do2-resnet18_fpn_1x_cityscapes.py'
DIGITS_CONFIGS = [CONFIGS / 'retinanet_ddarts-dd1-cifar_fpn_digits-det.py',
                  CONFIGS / 'mask-rcnn_ddarts-dd1-cifar_fpn_digits-det.py']


def _backbone(**kwargs) -> DDartsBackbone:
    cfg = dict(type='DDartsBackbone', model_name='ddarts_do2_resnet18', model_args=dict(init_channels=8))
    cfg.update(kwargs)
    return MODELS.build(cfg)


def _conv_weight(module: torch.nn.Module) -> torch.Tensor:
    return next(p for p in module.parameters() if p.dim() == 4)


def _first_bn(module: torch.nn.Module) -> _BatchNorm:
    return next(m for m in module.modules() if isinstance(m, _BatchNorm))


def _synthetic_batch(size: int = 128, with_mask: bool = False, num_classes: int = 80):
    """One image with two objects, in the format the detectors' data_preprocessor takes."""
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)
    boxes = torch.tensor([[10., 12., 70., 90.], [60., 40., 120., 100.]])
    shape = (size, size)
    sample = DetDataSample(metainfo=dict(img_shape=shape, ori_shape=shape, pad_shape=shape,
                                         scale_factor=(1.0, 1.0), batch_input_shape=shape))
    gt = InstanceData(bboxes=boxes, labels=torch.tensor([1, num_classes - 1]))
    if with_mask:
        masks = np.zeros((2, size, size), dtype=np.uint8)
        for k, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
            masks[k, y0:y1, x0:x1] = 1
        gt.masks = BitmapMasks(masks, size, size)
    sample.gt_instances = gt
    return dict(inputs=[img], data_samples=[sample])


# ---------------------------------------------------------------------------------------------- import
@pytest.mark.slow
def test_import_ddarts_zoo_does_not_import_mmdet():
    code = ('import sys, ddarts_zoo, timm; timm.create_model("ddarts_dd1_cifar"); '
            'heavy = [m for m in ("mmdet", "mmengine", "mmcv") if m in sys.modules]; '
            'assert not heavy, heavy')
    subprocess.run([sys.executable, '-c', code], check=True, cwd=REPO)


# ---------------------------------------------------------------------------------------------- paper configs
@pytest.mark.parametrize('path, neck_levels', [(RETINANET_COCO, 4), (MASKRCNN_CITYSCAPES, 4)])
def test_paper_config_channels_match_neck(path, neck_levels):
    cfg = Config.fromfile(str(path))
    bb = cfg.model.backbone
    assert bb.type == 'DDartsBackbone' and bb.model_name == 'ddarts_do2_resnet18'
    assert not any(k in bb for k in ('depth', 'style', 'num_stages'))  # ResNet keys deleted
    levels = ddarts_zoo.mmdet.backbone_levels(bb.model_name)
    assert [levels[i]['num_chs'] for i in bb.out_indices] == list(cfg.model.neck.in_channels) == \
        [256, 512, 1024, 2048]
    assert [levels[i]['reduction'] for i in bb.out_indices] == [4, 8, 16, 32]
    assert len(cfg.model.neck.in_channels) == neck_levels
    assert cfg.custom_imports['imports'] == ['ddarts_zoo.mmdet']


@pytest.mark.slow
@pytest.mark.parametrize('path', [RETINANET_COCO, MASKRCNN_CITYSCAPES], ids=['retinanet', 'mask-rcnn'])
def test_paper_config_train_step_and_inference(path):
    cfg = Config.fromfile(str(path))
    # Narrow backbone to keep CPU time low; the neck follows the backbone's channels.
    cfg.model.backbone.model_args = dict(init_channels=16)
    model = MODELS.build(cfg.model)
    cfg.model.neck.in_channels = model.backbone.out_channels
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert model.backbone.out_channels == [64, 128, 256, 512]
    is_mask = cfg.model.type == 'MaskRCNN'
    num_classes = 8 if is_mask else 80
    data = _synthetic_batch(128, with_mask=is_mask, num_classes=num_classes)

    model.train()
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    before = _conv_weight(model.backbone.cells[0]).detach().clone()
    log_vars = model.train_step(copy.deepcopy(data), optim)
    assert torch.isfinite(log_vars['loss'])
    expected = {'loss_cls', 'loss_bbox'} if not is_mask else {'loss_rpn_cls', 'loss_cls', 'loss_mask'}
    assert expected <= set(log_vars)
    assert not torch.equal(before, _conv_weight(model.backbone.cells[0]))

    model.eval()
    with torch.no_grad():
        out = model.test_step(copy.deepcopy(data))
    pred = out[0].pred_instances
    assert pred.bboxes.shape[1] == 4 and len(pred.scores) == len(pred.labels)
    if is_mask:
        assert pred.masks.shape[1:] == (128, 128)


# ---------------------------------------------------------------------------------------------- backbone
@pytest.mark.parametrize('name, args, indices, strides', [
    ('ddarts_do2_resnet18', dict(init_channels=8), (1, 2, 3, 4), [4, 8, 16, 32]),
    ('ddarts_dd1_cifar', dict(init_channels=8), (0, 1, 2), [1, 2, 4]),
    ('ddarts_dd4', dict(init_channels=8, layers=8), (0, 1, 2, 3), [4, 8, 16, 32]),
])
def test_out_channels_and_strides(name, args, indices, strides):
    bb = _backbone(model_name=name, model_args=args, out_indices=indices)
    ref = timm.create_model(name, features_only=True, out_indices=indices, **args)
    assert bb.out_channels == ref.feature_info.channels()
    assert bb.out_strides == strides == ref.feature_info.reduction()
    x = torch.randn(1, 3, 64, 64)
    feats = bb.eval()(x)
    assert isinstance(feats, tuple)
    assert [f.shape[1] for f in feats] == bb.out_channels
    assert [64 // f.shape[-1] for f in feats] == strides
    assert not any(k.startswith(('classifier', 'aux_head')) for k in bb.state_dict())


def test_unused_cells_are_not_built():
    bb = _backbone(out_indices=(1, 2))  # stride 4 and 8: cells 0 and 1 only
    assert len(bb.cells) == 2 and bb.num_cells_total == 4
    assert [f.shape[1] for f in bb(torch.randn(1, 3, 64, 64))] == bb.out_channels == [32, 64]


def test_frozen_stages_and_bn_eval():
    bb = _backbone(out_indices=(1, 2, 3, 4), frozen_stages=1)
    bb.train()
    frozen = [bb.stem0, bb.stem1, bb.cells[0]]
    for m in frozen:
        assert all(not p.requires_grad for p in m.parameters())
        assert all(not b.training for b in m.modules() if isinstance(b, _BatchNorm))
    for m in bb.cells[1:]:
        assert all(p.requires_grad for p in m.parameters())
        assert all(b.training for b in m.modules() if isinstance(b, _BatchNorm))
    bn = _first_bn(bb.cells[0])
    stats = bn.running_mean.clone()
    sum(f.sum() for f in bb(torch.randn(2, 3, 64, 64))).backward()
    assert torch.equal(bn.running_mean, stats)  # frozen BN statistics
    assert all(p.grad is None for m in frozen for p in m.parameters())
    assert all(p.grad is not None for p in bb.cells[1].parameters())


def test_frozen_stage_zero_is_the_stem_only():
    bb = _backbone(frozen_stages=0).train()
    assert all(not p.requires_grad for p in bb.stem0.parameters()) and \
        all(not p.requires_grad for p in bb.stem1.parameters())
    assert all(p.requires_grad for p in bb.cells[0].parameters())
    cifar = _backbone(model_name='ddarts_dd1_cifar', frozen_stages=1).train()  # level 1 = cells.5
    assert all(not p.requires_grad for c in cifar.cells[:6] for p in c.parameters())
    assert all(p.requires_grad for c in cifar.cells[6:] for p in c.parameters())


def test_norm_eval_keeps_bn_in_eval_but_trainable():
    bb = _backbone(norm_eval=True).train()
    bns = [m for m in bb.modules() if isinstance(m, _BatchNorm)]
    assert bns and all(not m.training for m in bns)
    assert all(p.requires_grad for p in bb.parameters())
    assert bb.cells[1].training  # only normalisation layers are switched


def test_with_cp_matches_plain_gradients():
    torch.manual_seed(0)
    plain = _backbone(model_name='ddarts_dd1_cifar', out_indices=(1, 2))
    cp = _backbone(model_name='ddarts_dd1_cifar', out_indices=(1, 2), with_cp=True)
    cp.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for bb in (plain, cp):
        bb.train()
        sum(f.square().mean() for f in bb(x)).backward()
        grads.append(_conv_weight(bb.cells[0]).grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_drop_path_rate_reaches_the_cells():
    bb = _backbone(drop_path_rate=0.2)
    rates = {m.drop_prob for m in bb.modules() if type(m).__name__ == 'DropPath'}
    assert rates == {0.2}
    bb.set_drop_path(0.1)
    assert {m.drop_prob for m in bb.modules() if type(m).__name__ == 'DropPath'} == {0.1}


@pytest.mark.parametrize('field, cfg, match', [
    ('model_name', dict(model_name='ddarts_nope'), r"model_name='ddarts_nope' is not a registered"),
    ('model_name', dict(model_name='resnet18'), 'model_name'),
    ('out_indices', dict(out_indices=(1, 7)), r'out_indices=\(1, 7\) is invalid'),
    ('out_indices', dict(out_indices=(3, 2)), 'out_indices=.*strictly increasing'),
    ('out_indices', dict(out_indices=()), 'out_indices'),
    ('frozen_stages', dict(frozen_stages=5), 'frozen_stages must be an int in \\[-1, 4\\]'),
    ('model_args', dict(model_args=dict(num_classes=3)), "model_args may not contain 'num_classes'"),
    ('pretrained', dict(pretrained='x.pth', init_cfg=dict(type='Pretrained', checkpoint='y.pth')),
     'either pretrained or init_cfg'),
])
def test_bad_arguments_fail_at_build_time(field, cfg, match):
    with pytest.raises(ValueError, match=match) as info:
        _backbone(**cfg)
    assert field in str(info.value)


# ---------------------------------------------------------------------------------------------- weights
def _source_model(name: str = 'ddarts_dd1_cifar', **args):
    torch.manual_seed(1)
    model = timm.create_model(name, num_classes=10, **args)
    with torch.no_grad():  # make BN buffers non-trivial too
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return model


def _assert_backbone_equals(bb: DDartsBackbone, model: torch.nn.Module) -> None:
    src = model.state_dict()
    own = bb.state_dict()
    assert own, 'empty backbone'
    for key, value in own.items():
        assert torch.equal(value, src[key]), key


def test_pretrained_local_dir(tmp_path):
    from timm.models import save_for_hf
    args = dict(init_channels=8)
    model = _source_model(**args)
    save_for_hf(model, tmp_path / 'dd1', model_args=args, safe_serialization=True)
    assert (tmp_path / 'dd1' / 'model.safetensors').is_file()
    # the folder's config.json fixes init_channels: no model_args needed
    bb = _backbone(model_name='ddarts_dd1_cifar', model_args=None, pretrained=f'local-dir:{tmp_path / "dd1"}')
    assert bb.out_channels == [32, 64, 128]
    assert not torch.equal(bb.stem[0].weight, model.stem[0].weight)  # loaded by init_weights, not at build
    bb.init_weights()
    _assert_backbone_equals(bb, model)
    assert not any(k.startswith('classifier') for k in bb.state_dict())

    # the mmdet spelling, inside a whole detector: init_cfg on the backbone, Runner-style init_weights()
    cfg = Config.fromfile(str(DIGITS_CONFIGS[0]))
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=f'local-dir:{tmp_path / "dd1"}')
    detector = MODELS.build(cfg.model)
    detector.init_weights()
    _assert_backbone_equals(detector.backbone, model)

    with pytest.raises(ValueError, match='holds ddarts_dd1_cifar weights, but model_name'):
        _backbone(model_name='ddarts_dd2_cifar', pretrained=f'local-dir:{tmp_path / "dd1"}')


def _published_digits_dir() -> Path:
    from ddarts_zoo.weights import local_weights_dir
    folder = local_weights_dir('ddarts_dd1_cifar.digits')
    if not (folder / 'model.safetensors').is_file():
        pytest.skip('the published ddarts_dd1_cifar.digits weights are not shipped in this checkout')
    return folder


def test_published_weights_initialise_an_rgb_backbone():
    folder = _published_digits_dir()
    bb = _backbone(model_name='ddarts_dd1_cifar', model_args=dict(in_chans=3),
                   pretrained=f'local-dir:{folder}')
    assert bb.in_chans == 3 and bb.out_channels == [32, 64, 128]
    bb.init_weights()
    ref = timm.create_model(f'local-dir:{folder}', pretrained=True)  # 1-channel classifier
    ref_state = ref.state_dict()
    for key, value in bb.state_dict().items():
        if key != 'stem.0.weight':  # the first conv is adapted from 1 to 3 input channels by timm
            assert torch.equal(value, ref_state[key]), key
    assert bb.stem[0].weight.shape[1] == 3


def test_tagged_weights_set_the_architecture():
    _published_digits_dir()
    # the published digits weights are C=8, 1 channel; nothing is loaded (or downloaded) at build time
    bb = _backbone(model_name='ddarts_dd1_cifar', model_args=dict(in_chans=3), pretrained='digits')
    assert bb.out_channels == [32, 64, 128] and bb.in_chans == 3
    assert _backbone(model_name='ddarts_dd1_cifar.digits', model_args=None).in_chans == 1
    with pytest.raises(ValueError, match="is for ddarts_dd5_cifar, but model_name is 'ddarts_dd1_cifar'"):
        _backbone(model_name='ddarts_dd1_cifar', pretrained='ddarts_dd5_cifar.digits')


def test_pretrained_checkpoint_files(tmp_path):
    from safetensors.torch import save_file
    args = dict(init_channels=8)
    model = _source_model(**args)
    torch.save({'state_dict': model.state_dict(), 'epoch': 3}, tmp_path / 'wrapped.pth')
    save_file(model.state_dict(), str(tmp_path / 'plain.safetensors'))
    detector_state = {f'backbone.{k}': v for k, v in model.state_dict().items()}
    torch.save({'state_dict': detector_state}, tmp_path / 'det.pth')
    for ckpt in ('wrapped.pth', 'plain.safetensors', 'det.pth'):
        bb = _backbone(model_name='ddarts_dd1_cifar', model_args=args, out_indices=(0, 1),
                       init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / ckpt)))
        bb.init_weights()
        _assert_backbone_equals(bb, model)

    wrong = _backbone(model_name='ddarts_dd1_cifar', model_args=dict(init_channels=16),
                      pretrained=str(tmp_path / 'plain.safetensors'))
    with pytest.raises(RuntimeError, match=r'do not fit the backbone; shape mismatch \d+: stem.0.weight'):
        wrong.init_weights()
    truncated = {k: v for k, v in model.state_dict().items() if not k.startswith('cells.3.')}
    torch.save(truncated, tmp_path / 'truncated.pth')
    with pytest.raises(RuntimeError, match=r'missing \d+: cells\.3\.'):
        _backbone(model_name='ddarts_dd1_cifar', model_args=args,
                  pretrained=str(tmp_path / 'truncated.pth')).init_weights()
    with pytest.raises(FileNotFoundError):
        _backbone(model_name='ddarts_dd1_cifar', model_args=args,
                  pretrained=str(tmp_path / 'missing.pth')).init_weights()


# ---------------------------------------------------------------------------------------------- digits-det
@pytest.fixture(scope='module')
def digits_det(tmp_path_factory):
    root = tmp_path_factory.mktemp('dd') / 'digits-det'
    return generate_digits_det(root, train_repeats=1)


def test_digits_det_is_deterministic(digits_det, tmp_path):
    again = generate_digits_det(tmp_path / 'again', train_repeats=1)
    for split in ('train', 'val'):
        assert (digits_det / 'annotations' / f'{split}.json').read_bytes() == \
            (again / 'annotations' / f'{split}.json').read_bytes()
        files = sorted(p.name for p in (digits_det / split).glob('*.png'))
        assert files == sorted(p.name for p in (again / split).glob('*.png'))
        for name in files[:50]:
            assert (digits_det / split / name).read_bytes() == (again / split / name).read_bytes()
    meta = json.loads((digits_det / 'meta.json').read_text())
    assert meta['params'] == dict(DEFAULT_PARAMS, train_repeats=1)
    other = generate_digits_det(tmp_path / 'seed1', seed=1, train_repeats=1)
    val_json = Path('annotations') / 'val.json'
    assert (other / val_json).read_bytes() != (again / val_json).read_bytes()
    with pytest.raises(FileExistsError):
        generate_digits_det(again, train_repeats=1)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]  # no temporary folder left


def test_digits_det_is_valid_coco(digits_det):
    from PIL import Image
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    from ddarts_zoo.data import digits_split_indices
    for split, digits_split in (('train', 'train'), ('val', 'test')):
        coco = COCO(str(digits_det / 'annotations' / f'{split}.json'))
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == [str(d) for d in range(10)]
        images = coco.loadImgs(coco.getImgIds())
        assert images and all(len(coco.getAnnIds(imgIds=im['id'])) in (1, 2, 3) for im in images)
        used = sorted(a['digit_index'] for a in coco.loadAnns(coco.getAnnIds()))
        assert used == sorted(digits_split_indices(digits_split).tolist())  # each digit once, split respected
        for im in images[:60]:
            pixels = np.asarray(Image.open(digits_det / split / im['file_name']))
            assert pixels.shape == (im['height'], im['width'], 3)
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=im['id'])):
                x, y, w, h = ann['bbox']
                assert 0 <= x and 0 <= y and w > 0 and h > 0
                assert x + w <= im['width'] and y + h <= im['height']
                m = coco.annToMask(ann)
                assert m.sum() == ann['area'] > 0
                assert mask_utils.toBbox(ann['segmentation']).tolist() == ann['bbox']
                rows, cols = np.nonzero(m)
                assert [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1] == [x, y, x + w, y + h]
                # the mask is where the digit is bright: brighter than the background around it
                assert pixels[m > 0].mean() > pixels[m == 0].mean()
    assert 0 < MASK_THRESHOLD < 1


@pytest.mark.slow
@pytest.mark.parametrize('path', DIGITS_CONFIGS, ids=['retinanet', 'mask-rcnn'])
def test_digits_config_trains_and_evaluates(path, digits_det, tmp_path):
    """Two iterations with the Runner, then the COCO evaluation on 16 held-out images."""
    from ddarts_zoo.mmdet.train import build_config, train
    root = str(digits_det) + '/'
    options = {
        'train_dataloader.batch_size': 2, 'train_dataloader.dataset.data_root': root,
        'val_dataloader.dataset.data_root': root, 'val_dataloader.dataset.indices': 16,
        'val_evaluator.ann_file': root + 'annotations/val.json',
        'train_cfg.max_iters': 2, 'train_cfg.val_interval': 2, 'param_scheduler': [],
        'default_hooks.checkpoint.interval': 2, 'digits_det': None}
    cfg = build_config(str(path), work_dir=str(tmp_path / 'work'), cfg_options=options)
    # after 2 iterations no score passes the usual threshold: keep every box so that COCOeval runs
    test_cfg = cfg.model.test_cfg.rcnn if 'rcnn' in cfg.model.test_cfg else cfg.model.test_cfg
    test_cfg.score_thr = 0.0
    result = train(cfg)
    assert result['iterations'] == 2
    assert 'coco/bbox_mAP' in result['metrics']
    assert ('coco/segm_mAP' in result['metrics']) == ('mask-rcnn' in path.name)
    written = json.loads((tmp_path / 'work' / 'final_metrics.json').read_text())
    assert written == json.loads(json.dumps(result))
    if 'retinanet' in path.name:  # resume from the run's own mmengine checkpoint (torch >= 2.6 weights_only)
        options.update({'train_cfg.max_iters': 3, 'train_cfg.val_interval': 3})
        cfg = build_config(str(path), work_dir=str(tmp_path / 'work'), cfg_options=options, resume='auto')
        assert train(cfg)['iterations'] == 3
