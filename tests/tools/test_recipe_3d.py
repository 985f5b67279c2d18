"""tools/lib/recipe.py on mmdet3d configs: the loss in ``pts_bbox_head`` is what a sweep
varies, and mmdet_polyloss.det3d's heads are the mmdet3d heads they are made from."""
import copy

from tools.lib.recipe import classifier_losses, first_difference


def pointpillars(head_key: str, head_type: str, loss_type: str, **loss) -> dict:
    return dict(model=dict(type='MVXFasterRCNN', **{head_key: dict(
        type=head_type, num_classes=3, anchor_generator=dict(sizes=[[4.73, 2.08, 1.77]]),
        loss_cls=dict(type=loss_type, use_sigmoid=True, gamma=2.0, alpha=0.25, **loss))}),
        train_cfg=dict(max_epochs=24), randomness=dict(seed=0))


def test_the_poly_head_and_loss_differ_from_the_baseline_in_the_loss_alone():
    for key in ('bbox_head', 'pts_bbox_head'):
        base = pointpillars(key, 'Anchor3DHead', 'mmdet.FocalLoss')
        poly = pointpillars(key, 'PolyFocalAnchor3DHead', 'mmdet.Poly1FocalLoss', epsilon=-1.0)
        assert first_difference(poly, base) is None
        assert list(classifier_losses(poly)) == [f'model.{key}.loss_cls']


def test_other_differences_are_still_seen():
    base = pointpillars('pts_bbox_head', 'Anchor3DHead', 'mmdet.FocalLoss')
    poly = pointpillars('pts_bbox_head', 'PolyFocalAnchor3DHead', 'mmdet.Poly1FocalLoss')
    other_head = copy.deepcopy(poly)
    other_head['model']['pts_bbox_head']['type'] = 'PolyFocalShapeAwareHead'
    assert first_difference(other_head, base).key == 'model.pts_bbox_head.type'
    poly['model']['pts_bbox_head']['anchor_generator']['sizes'][0][0] = 4.8
    difference = first_difference(poly, base)
    assert difference.key == 'model.pts_bbox_head.anchor_generator.sizes.0.0'
    assert (difference.first, difference.second) == (4.8, 4.73)
    assert base['model']['pts_bbox_head']['type'] == 'Anchor3DHead'  # inputs left alone
