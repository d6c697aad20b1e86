# RetinaNet + FPN with a narrow DD-1 (CIFAR stem, C=8) on the generated digits-det set; trains on 2 CPU cores
# (800 iterations of 4 images: RetinaNet's dense classifier needs more updates than Mask R-CNN's RoI head).
#   python -m ddarts_zoo.mmdet.train detection_configs/retinanet_ddarts-dd1-cifar_fpn_digits-det.py
_base_ = ['mmdet::_base_/models/retinanet_r50_fpn.py', './_digits-det_runtime.py']

model = dict(
    data_preprocessor=dict(mean=[44.0, 44.0, 44.0], std=[41.0, 41.0, 41.0], bgr_to_rgb=True,
                           pad_size_divisor=32),
    backbone=dict(
        _delete_=True,
        type='DDartsBackbone',
        model_name='ddarts_dd1_cifar',
        out_indices=(0, 1, 2),  # strides 1, 2, 4 at 64 px
        model_args=dict(init_channels=8)),  # out channels 32, 64, 128
    neck=dict(in_channels=[32, 64, 128], out_channels=64, start_level=1, add_extra_convs='on_input',
              num_outs=4),  # P at strides 2, 4 (+ 8, 16 from extra convs)
    bbox_head=dict(
        num_classes=10,
        in_channels=64,
        feat_channels=64,
        stacked_convs=2,
        anchor_generator=dict(octave_base_scale=4, scales_per_octave=3, strides=[2, 4, 8, 16])),
    test_cfg=dict(nms_pre=200, score_thr=0.05, max_per_img=20))

# dense one-stage classification learns slowly: more, smaller steps than the Mask R-CNN config
max_iters = 800
train_dataloader = dict(batch_size=4)
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=30, end=max_iters, T_max=max_iters - 30,
         eta_min=2e-5),
]
default_hooks = dict(checkpoint=dict(interval=max_iters))
auto_scale_lr = dict(base_batch_size=4)
