"""IRNet: IR labels, pair labels, the relation network and its loss."""
import numpy as np
import pytest
import torch

from conta_core.expand.affinity import affinity_labels, reduce_label
from conta_core.expand.irnet import (IR_CRF_PARAMS, RelationNet, labels_to_probs, make_ir_label,
                                     predict_boundary, relation_loss, train_relation_net)
from conta_core.expand.random_walk import pair_offsets


# --- pair labels --------------------------------------------------------------


def test_affinity_labels_by_hand():
    # radius 2: offsets (0,1) (1,-1) (1,0) (1,1)
    assert pair_offsets(2) == [(0, 1), (1, -1), (1, 0), (1, 1)]
    label = np.array([[1, 1, 0],
                      [0, 255, 0],
                      [2, 0, 0]], dtype=np.uint8)
    bg, fg, neg = affinity_labels(label, radius=2)
    assert bg.shape == fg.shape == neg.shape == (4, 3, 3) and bg.dtype == torch.bool
    # Hand count over the 20 in-map pairs (8 touch the 255 at (1,1)):
    #  fg_pos: (0,0)-(0,1)
    #  bg_pos: (2,1)-(2,2) (1,2)-(2,1) (0,2)-(1,2) (1,2)-(2,2) (1,0)-(2,1)
    #  neg:    (0,1)-(0,2) (2,0)-(2,1) (0,1)-(1,0) (0,0)-(1,0) (1,0)-(2,0) (0,1)-(1,2)
    assert int(fg.sum()) == 1 and int(bg.sum()) == 5 and int(neg.sum()) == 6
    k = {off: i for i, off in enumerate(pair_offsets(2))}
    assert fg[k[(0, 1)], 0, 0]
    assert bg[k[(0, 1)], 2, 1] and bg[k[(1, -1)], 1, 2] and bg[k[(1, 0)], 0, 2]
    assert bg[k[(1, 0)], 1, 2] and bg[k[(1, 1)], 1, 0]
    assert neg[k[(0, 1)], 0, 1] and neg[k[(0, 1)], 2, 0] and neg[k[(1, -1)], 0, 1]
    assert neg[k[(1, 0)], 0, 0] and neg[k[(1, 0)], 1, 0] and neg[k[(1, 1)], 0, 1]
    # the three groups never overlap
    assert not (bg & fg).any() and not (bg & neg).any() and not (fg & neg).any()
    # two different classes are a negative pair, not a positive one
    bg2, fg2, neg2 = affinity_labels(torch.tensor([[1, 2]]), radius=2)
    assert neg2[0, 0, 0] and not fg2.any() and not bg2.any()
    # batched input gives the per-item result
    bgb, fgb, negb = affinity_labels(torch.from_numpy(np.stack([label, label])), radius=2)
    assert bgb.shape == (2, 4, 3, 3) and torch.equal(bgb[1], bg) and torch.equal(negb[0], neg)


def test_reduce_label_matches_stride4_output():
    label = np.arange(10 * 13, dtype=np.int64).reshape(10, 13) % 250
    small = reduce_label(label)
    assert small.shape == (3, 4)  # ceil(10/4), ceil(13/4)
    assert small[0, 0] == label[2, 2] and small[1, 2] == label[6, 10]
    assert small[2, 0] == 255  # row 10 is padding


# --- IR labels ----------------------------------------------------------------


def _identity_crf(image, probs, **kwargs):
    assert kwargs == IR_CRF_PARAMS
    return probs


def test_labels_to_probs_is_unary_from_labels():
    from pydensecrf.utils import unary_from_labels
    labels = np.array([[0, 2], [1, 1]])
    probs = labels_to_probs(labels, 3, gt_prob=0.7)
    assert np.allclose(-np.log(probs).reshape(3, -1), unary_from_labels(labels, 3, gt_prob=0.7, zero_unsure=False))


def test_make_ir_label_rule_by_hand():
    image = np.full((4, 5, 3), 128, dtype=np.uint8)
    cams = np.zeros((2, 4, 5), dtype=np.float32)
    # class 5 (channel 0) and class 12 (channel 1)
    cams[0, 0, :] = [0.9, 0.31, 0.30, 0.2, 0.06]   # fg (> 0.30) | tie at 0.30 -> bg | unsure | unsure
    cams[1, 1, :] = [0.9, 0.5, 0.04, 0.05, 0.0]   # fg | fg | bg (< 0.05) | tie at 0.05 -> bg | bg
    cams[0, 2, 0], cams[1, 2, 0] = 0.6, 0.8        # both confident: the larger wins
    cams[0, 3, 0], cams[1, 3, 0] = 0.25, 0.2       # both unsure
    label = make_ir_label(image, cams, [5, 12], conf_fg=0.30, conf_bg=0.05, crf_fn=_identity_crf)
    expected = np.array([[5, 5, 255, 255, 255],
                         [12, 12, 0, 0, 0],
                         [12, 0, 0, 0, 0],
                         [255, 0, 0, 0, 0]], dtype=np.uint8)
    assert label.dtype == np.uint8
    assert np.array_equal(label, expected)


def test_make_ir_label_with_dense_crf():
    # a bright square on a dark image; the CAM is a blurred blob over it
    image = np.zeros((40, 48, 3), dtype=np.uint8)
    image[10:30, 14:34] = 220
    yy, xx = np.mgrid[0:40, 0:48]
    cam = np.exp(-(((yy - 20) / 9.0) ** 2 + ((xx - 24) / 9.0) ** 2)).astype(np.float32)
    cams = cam[None] / cam.max()
    square = np.zeros((40, 48), dtype=bool)
    square[10:30, 14:34] = True
    # without refinement: fg core, an unsure (255) band where 0.05 < CAM <= 0.30, bg outside
    raw = make_ir_label(image, cams, [3], crf_fn=_identity_crf)
    assert raw[20, 24] == 3 and raw[0, 0] == 0 and (raw == 255).any()
    # the dense CRF snaps both confident maps to the square's edges
    label = make_ir_label(image, cams, [3])
    assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 3, 255}
    assert ((label == 3) == square).mean() > 0.97
    assert (label[~square] != 3).all() and label[0, 0] == 0 and label[39, 47] == 0


# --- relation network ---------------------------------------------------------


def test_relation_loss_weighting():
    boundary = torch.full((1, 4, 4), 0.5)
    bg, fg, neg = affinity_labels(torch.zeros(1, 4, 4, dtype=torch.long), radius=2)
    loss, parts = relation_loss(boundary, bg, fg, neg, radius=2)
    # only background pairs: loss = L_bg / 4 with L_bg = -log(0.5 + 1e-5)
    assert parts["fg_pos"] == 0.0 and parts["neg"] == 0.0
    assert loss.item() == pytest.approx(-np.log(0.5 + 1e-5) / 4, rel=1e-5)


class _FixedBatch(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(2, 3, 48, 48, generator=g)
        label = torch.zeros(12, 12, dtype=torch.long)
        label[3:9, 2:7] = 1
        label[2:10, 1:8][(label[2:10, 1:8] == 0)] = 255  # unsure ring around the object
        label[4:8, 8:11] = 2
        self.labels = torch.stack([label, label.flip(-1)])

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


def test_relation_net_forward_backward_and_training_reduces_loss():
    torch.manual_seed(0)
    model = RelationNet(depth=18, output_stride=16)
    assert all(not p.requires_grad for p in model.backbone.parameters())
    out = model(torch.randn(1, 3, 50, 61))
    assert out.shape == (1, 1, 13, 16)  # ceil(H/4), ceil(W/4)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}

    data = _FixedBatch()
    losses = train_relation_net(model, data, epochs=20, batch_size=2, lr=0.1, momentum=0.9, radius=5,
                                progress=False, seed=0)
    assert len(losses) == 20 and all(np.isfinite(losses))
    assert losses[-1] < 0.85 * losses[0]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    # the backbone is frozen: weights and BN statistics unchanged
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)

    boundary = predict_boundary(model, data.images[0][:, :45, :47])
    assert boundary.shape == (12, 12) and float(boundary.min()) >= 0 and float(boundary.max()) <= 1
