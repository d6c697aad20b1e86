# RetinaNet + FPN with the DO-2-ResNet18 backbone on MS-COCO, 1x schedule (paper Sec. 5.7, Table 6:
# ImageNet-pretrained DO-2-ResNet18 fine-tuned 12 epochs with MMDetection). Everything but the backbone is
# mmdet's own RetinaNet-R50 recipe (configs/retinanet/retinanet_r50_fpn_1x_coco.py), inherited from the
# installed mmdet package. Other ddarts-zoo models: change model_name and the FPN in_channels (README table).
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['ddarts_zoo.mmdet'], allow_failed_imports=False)

# ImageNet weights of DO-2-ResNet18 (the paper's starting point): a timm tag ('ddarts_do2_resnet18.<tag>'),
# 'hf-hub:org/repo', 'local-dir:/folder' or a checkpoint file. With weights, the stem and the stride-4 cell
# are frozen and BN statistics kept, as in mmdet's ResNet recipes; None trains the backbone from scratch.
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
    # as mmdet's RetinaNet-R50: the stride-4 level is skipped (start_level=1), P6/P7 come from C5
    neck=dict(in_channels=[256, 512, 1024, 2048], start_level=1, add_extra_convs='on_input', num_outs=5))

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))
