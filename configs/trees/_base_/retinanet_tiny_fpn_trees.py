# The tree-crown benchmark's recipe: the shapes demo's tiny RetinaNet
# (ResNet-18 layout at 1/4 width, no pretrained weights, a 2-conv head),
# trained from scratch on 256 x 256 tiles of two NEON airborne orthophotos
# (10 cm per pixel, one class: tree). Everything the focal and Poly-1 configs
# share; they differ only in bbox_head.loss_cls. The recipe was tuned on the
# focal config alone and then frozen (docs/trees.md): 256-px tiles at native
# resolution, batch 4, 8 epochs (568 iterations), square anchors, flips in
# all three directions. About 100 s of training and test on 2 idle CPU cores.
#
# Self-contained on purpose: it repeats much of configs/demo/_base_/ rather
# than inheriting it, so that no change to the demo can alter this frozen
# recipe (or the sweep's run keys, which hash the resolved config).
#
# Data: `python tools/make_tree_data.py` writes it to data/polyloss_trees/,
# relative to the working directory (the repository root). To read it from
# elsewhere, override {train,val,test}_dataloader.dataset.data_root=DIR/ and
# {val,test}_evaluator.ann_file=DIR/annotations/instances_val.json.
_base_ = 'mmdet::_base_/default_runtime.py'

custom_imports = dict(imports=['mmdet_polyloss'], allow_failed_imports=False)

# ---------------------------------------------------------------- data
data_root = 'data/polyloss_trees/'
dataset_type = 'CocoDataset'
metainfo = dict(classes=('tree', ), palette=[(34, 139, 34)])
img_scale = (256, 256)  # the tile size: tiles are used at native resolution
backend_args = None

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    # Top-down images: a vertical or diagonal flip is as valid as a
    # horizontal one (each direction with probability 1/6, none 1/2).
    dict(type='RandomFlip', prob=0.5,
         direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        # Tiles without a crown (meadow) stay in: background is what focal
        # loss is about.
        filter_cfg=dict(filter_empty_gt=False),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader

# The sweep report wants recall as well as the six AP figures. With
# max_per_img=100, AR@100 is COCO's AR@100 and the *@1000 area figures equal
# their @100 values (a validation tile holds at most a few dozen crowns).
val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val.json',
    metric='bbox',
    metric_items=[
        'mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l', 'AR@100',
        'AR_s@1000', 'AR_m@1000', 'AR_l@1000'
    ],
    format_only=False,
    backend_args=backend_args)
test_evaluator = val_evaluator

# ---------------------------------------------------------------- model
model = dict(
    type='RetinaNet',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    backbone=dict(
        type='ResNet',
        depth=18,
        base_channels=16,
        num_stages=4,
        out_indices=(1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=None),
    neck=dict(
        type='FPN',
        in_channels=[32, 64, 128],
        out_channels=64,
        start_level=0,
        add_extra_convs='on_input',
        num_outs=4),
    bbox_head=dict(
        type='RetinaHead',
        num_classes=1,
        in_channels=64,
        stacked_convs=2,
        feat_channels=64,
        # Square anchors 16 to 203 px over strides 8 to 64; crowns are 8 to
        # 108 px and about as wide as high seen from above.
        anchor_generator=dict(
            type='AnchorGenerator',
            octave_base_scale=2,
            scales_per_octave=3,
            ratios=[1.0],
            strides=[8, 16, 32, 64]),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[.0, .0, .0, .0],
            target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(
            type='FocalLoss',
            use_sigmoid=True,
            gamma=2.0,
            alpha=0.25,
            loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    train_cfg=dict(
        assigner=dict(
            type='MaxIoUAssigner',
            pos_iou_thr=0.5,
            neg_iou_thr=0.4,
            min_pos_iou=0,
            ignore_iof_thr=-1),
        sampler=dict(type='PseudoSampler'),
        allowed_border=-1,
        pos_weight=-1,
        debug=False),
    test_cfg=dict(
        nms_pre=1000,
        min_bbox_size=0,
        score_thr=0.05,
        nms=dict(type='nms', iou_threshold=0.5),
        max_per_img=100))

# ---------------------------------------------------------------- schedule
max_epochs = 8
train_cfg = dict(
    type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[6, 7],
        gamma=0.1)
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
    clip_grad=dict(max_norm=10, norm_type=2))
auto_scale_lr = dict(enable=False, base_batch_size=4)

# ---------------------------------------------------------------- runtime
randomness = dict(seed=0)
# AtomicCheckpointHook (mmdet_polyloss/engine/hooks.py): CheckpointHook whose
# saves a crash cannot break (docs/reliability.md).
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='AtomicCheckpointHook', interval=max_epochs,
                    max_keep_ckpts=1))
log_processor = dict(type='LogProcessor', window_size=10, by_epoch=True)
