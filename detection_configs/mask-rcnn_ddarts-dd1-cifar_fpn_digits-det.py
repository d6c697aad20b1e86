# Mask R-CNN + FPN with a narrow DD-1 (CIFAR stem, C=8) on the generated digits-det set; trains on 2 CPU
# cores (300 iterations of 8 images).
#   python -m ddarts_zoo.mmdet.train detection_configs/mask-rcnn_ddarts-dd1-cifar_fpn_digits-det.py
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py', './_digits-det_runtime.py']

model = dict(
    data_preprocessor=dict(mean=[44.0, 44.0, 44.0], std=[41.0, 41.0, 41.0], bgr_to_rgb=True, pad_mask=True,
                           pad_size_divisor=32),
    backbone=dict(
        _delete_=True,
        type='DDartsBackbone',
        model_name='ddarts_dd1_cifar',
        out_indices=(0, 1, 2),  # strides 1, 2, 4 at 64 px
        model_args=dict(init_channels=8)),  # out channels 32, 64, 128
    neck=dict(in_channels=[32, 64, 128], out_channels=64, start_level=1, num_outs=4),  # strides 2, 4, 8, 16
    rpn_head=dict(
        in_channels=64,
        feat_channels=64,
        anchor_generator=dict(scales=[4], ratios=[0.5, 1.0, 2.0], strides=[2, 4, 8, 16])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64, featmap_strides=[2, 4, 8]),
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=10),
        mask_roi_extractor=dict(out_channels=64, featmap_strides=[2, 4, 8]),
        mask_head=dict(num_convs=2, in_channels=64, conv_out_channels=64, num_classes=10)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(sampler=dict(num=128), mask_size=28)),
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(max_per_img=20)))

val_evaluator = dict(metric=['bbox', 'segm'])
test_evaluator = val_evaluator
