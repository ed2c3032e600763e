"""segment.loss: ce and balanced_ce against direct computations; DDP normalisation of the balanced loss."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conta_core.segment import _scale_terms, _segment_loss

IGNORE = 255


def _case(seed=0, batch=3, classes=5, size=6):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, size, size, generator=g) * 3
    # Classes 0, 1 and 3 only (2 and 4 absent), class 3 rare, some pixels ignored.
    labels = torch.zeros(batch, size, size, dtype=torch.long)
    labels[:, :3] = 1
    labels[0, 0, 0] = 3
    labels[1, 5, 5] = 3
    labels[2, 4, :2] = IGNORE
    return logits, labels


def direct_balanced(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """(1 / |P|) sum_{c in P} mean_{i : y_i = c} -log softmax(z_i)_c, pixel by pixel in numpy."""
    logp = torch.log_softmax(logits.double(), dim=1).numpy()
    y = labels.numpy()
    per_class = {}
    for b, i, j in np.ndindex(*y.shape):
        c = int(y[b, i, j])
        if c != IGNORE:
            per_class.setdefault(c, []).append(-logp[b, c, i, j])
    return float(np.mean([np.mean(v) for v in per_class.values()]))


def test_balanced_ce_is_the_mean_over_present_classes_of_their_mean_loss():
    logits, labels = _case()
    summed, norm = _scale_terms(logits, labels, IGNORE, balanced=True)
    assert norm == 3  # classes 0, 1, 3 present
    assert (summed / norm).item() == pytest.approx(direct_balanced(logits, labels), rel=1e-5)
    # It is not the plain mean: class 3 (2 pixels) weighs as much as class 0 (~50 pixels).
    plain = F.cross_entropy(logits, labels, ignore_index=IGNORE).item()
    assert abs(plain - direct_balanced(logits, labels)) > 0.05


def test_plain_ce_terms_are_the_pixel_mean():
    logits, labels = _case(seed=1)
    summed, norm = _scale_terms(logits, labels, IGNORE, balanced=False)
    assert norm == (labels != IGNORE).sum().item()
    assert (summed / norm).item() == pytest.approx(F.cross_entropy(logits, labels, ignore_index=IGNORE).item(),
                                                   rel=1e-6)


def test_segment_loss_sums_scales_with_labels_resized_to_each():
    logits, labels = _case(seed=2, size=8)
    small = logits[:, :, ::2, ::2].contiguous()
    model = lambda images: [logits, small]  # noqa: E731 - two "scales" of a fake DeepLab
    loss = _segment_loss(model, {"image": None, "label": labels}, ignore_index=IGNORE, balanced=True).item()
    resized = F.interpolate(labels[:, None].float(), size=(4, 4), mode="nearest")[:, 0].long()
    assert loss == pytest.approx(direct_balanced(logits, labels) + direct_balanced(small, resized), rel=1e-5)
    plain = _segment_loss(model, {"image": None, "label": labels}, ignore_index=IGNORE).item()
    assert plain == pytest.approx(F.cross_entropy(logits, labels, ignore_index=IGNORE).item()
                                  + F.cross_entropy(small, resized, ignore_index=IGNORE).item(), rel=1e-6)


@pytest.mark.parametrize("balanced", [False, True])
def test_ddp_terms_with_global_counts_add_up_to_the_whole_batch(balanced):
    """Two ranks, each with half the batch: counts summed over ranks (what all_reduce does), each
    rank's numerator over the global denominator; the rank losses add up to the one-process loss."""
    logits, labels = _case(seed=3, batch=4)
    halves = [(logits[:2], labels[:2]), (logits[2:], labels[2:])]
    totals = [torch.bincount(lab[lab != IGNORE], minlength=logits.shape[1]).double() for _, lab in halves]

    def reduce_from(rank):
        def reduce(counts):
            counts.copy_(totals[0] + totals[1])
        return reduce

    ranks = [_scale_terms(lg, lb, IGNORE, balanced, reduce=reduce_from(r)) for r, (lg, lb) in enumerate(halves)]
    assert ranks[0][1] == ranks[1][1]  # the same global denominator on both ranks
    whole = _scale_terms(logits, labels, IGNORE, balanced)
    assert ((ranks[0][0] + ranks[1][0]) / ranks[0][1]).item() == pytest.approx((whole[0] / whole[1]).item(), rel=1e-6)


def test_unknown_loss_name_is_rejected():
    from conta_core.segment import SEGMENT_LOSSES, _segmenter_job

    assert SEGMENT_LOSSES == ("ce", "balanced_ce")

    class Index:  # only what _segmenter_job touches before the loss is chosen
        num_classes, void = 3, IGNORE

    settings = {"backbone": 18, "weights": "none", "output_stride": 16, "aspp_rates": [2], "msc_scales": [1.0],
                "crop": 16, "scale_range": [1.0, 1.0], "loss": "focal"}
    ctx = type("Ctx", (), {"world_size": 1})()
    with pytest.raises(ValueError, match="segment.loss"):
        _segmenter_job(Index(), [], None, settings, 0, ctx)
