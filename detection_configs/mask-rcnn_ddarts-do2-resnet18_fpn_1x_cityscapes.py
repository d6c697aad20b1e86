# Mask R-CNN + FPN with the DO-2-ResNet18 backbone on Cityscapes instances (paper Sec. 5.7, Table 7).
# Everything but the backbone is mmdet's Mask R-CNN Cityscapes recipe
# (configs/cityscapes/mask-rcnn_r50_fpn_1x_cityscapes.py: 8 classes, 8 epochs of the 8x repeated set),
# inherited from the installed mmdet package, without its COCO-pretrained R50 detector (load_from).
# Other ddarts-zoo models: change model_name and the FPN in_channels (README table).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/cityscapes_instance.py',
    'mmdet::_base_/default_runtime.py',
    'mmdet::_base_/schedules/schedule_1x.py',
]
custom_imports = dict(imports=['ddarts_zoo.mmdet'], allow_failed_imports=False)

# ImageNet weights of DO-2-ResNet18: a timm tag, 'hf-hub:org/repo', 'local-dir:/folder' or a checkpoint file.
# With weights, the stem and the stride-4 cell are frozen and BN statistics kept (mmdet's ResNet recipe);
# None trains the backbone from scratch.
backbone_weights = None

model = dict(
    backbone=dict(
        _delete_=True,
        type='DDartsBackbone',
        model_name='ddarts_do2_resnet18',
        out_indices=(1, 2, 3, 4),  # strides 4, 8, 16, 32
        frozen_stages=1 if backbone_weights else -1,
        norm_eval=bool(backbone_weights),
        drop_path_rate=0.0,
        with_cp=False,
        pretrained=backbone_weights),
    neck=dict(in_channels=[256, 512, 1024, 2048], num_outs=5),
    roi_head=dict(
        bbox_head=dict(
            type='Shared2FCBBoxHead',
            num_classes=8,
            loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0)),
        mask_head=dict(num_classes=8)))

# lr for a total batch size of 8 (8 GPUs x 1 image)
optim_wrapper = dict(optimizer=dict(lr=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=8, by_epoch=True, milestones=[7], gamma=0.1),
]
train_cfg = dict(max_epochs=8)  # the train set is repeated 8 times: 64 epochs of Cityscapes
load_from = None
