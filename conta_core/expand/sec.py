"""SEC (Kolesnikov and Lampert, ECCV 2016): seed, expand and constrain (CONTA Appendix 3.4).

The SEC network is VGG-16 DeepLab-LargeFOV (:mod:`conta_core.models.vgg`)
with a prediction layer ``fc8`` (1x1, C classes, weights N(0, std 0.01) as
SEC's prototxt fills them; the appendix's "variance 0.01" would be std 0.1).
Its output f (softmax over C classes at stride 8, plus :data:`MIN_PROB` and
renormalised, as SEC's softmax layer) is trained with three losses, summed
with weight 1 each:

* seeding (:func:`seeding_loss`), on the localisation cues S_c (seed map,
  :mod:`conta_core.expand.seeds`)::

      L_seed = -1 / sum_c |S_c| * sum_c sum_{u in S_c} log f_{u,c}

* expansion (:func:`expansion_loss`) with global weighted rank pooling
  (:func:`gwrp`): sort class c's scores descending, f_(1) >= f_(2) >= ...,
  G_c = sum_j d_c^(j-1) f_(j) / sum_j d_c^(j-1), with d = 0.996 for
  foreground classes and 0.999 for the background (SEC's ExpandLossLayer);
  with T the image's classes::

      L_expand = -1/|T| sum_{c in T} log G_c - 1/|~T| sum_{c not in T} log(1 - max_u f_{u,c}) - log G_bg

* constrain to boundary (:func:`constrain_loss`): Q = dense CRF of the
  network's own output on the image downscaled to the output grid, with the
  spatial kernels' standard deviations divided by 12 (Appendix 3.4: "spatial
  distance multiplied by 12"; SEC's CRF layer: bilateral w 10, sxy 80/12, srgb 13;
  Gaussian w 3, sxy 3/12; 10 iterations), clipped at MIN_PROB and renormalised; Q
  is a constant::

      L_constrain = 1/n sum_u sum_c Q_{u,c} log(Q_{u,c} / f_{u,c})

Training (:data:`SEC_TRAINING`, :func:`optimizer_groups`, :func:`step_lr_factor`):
SGD momentum 0.9, 8,000 iterations, batch 15, 321 crops, weight decay 5e-4
(none on biases, SEC's decay_mult 0), lr 1e-3 divided by 10 every 2,000
iterations; lr x1 (biases x2) on the trunk, x10 (x20) on fc8.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from ..crf import dense_crf
from ..models.vgg import VGG16Trunk, build_vgg16

MIN_PROB = 1e-4          # SEC's min_prob: floor of the softmax and of the CRF output
FG_DECAY = 0.996         # GWRP decay d_fg (SEC ExpandLossLayer q_fg)
BG_DECAY = 0.999         # GWRP decay d_bg (q_bg)
CRF_SCALE = 12.0         # Appendix 3.4: 321 input -> 41 output, spatial kernels scaled by 12
# SEC's CRF (krahenbuhl2013 wrapper): add_pairwise_energy(10, 80/s, 80/s, 13, 13, 13, 3, 3/s, 3/s)
SEC_CRF = {"iterations": 10, "bi_w": 10.0, "bi_xy_std": 80.0, "bi_rgb_std": 13.0, "pos_w": 3.0,
           "pos_xy_std": 3.0}
SEC_TRAINING = {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 5e-4, "iterations": 8000,
                "batch_size": 15, "crop": 321, "lr_step": 2000, "lr_gamma": 0.1, "dropout": 0.5,
                "fc8_std": 0.01}
LR_MULT = {"trunk": 1.0, "trunk_bias": 2.0, "fc8": 10.0, "fc8_bias": 20.0}


class SecNet(nn.Module):
    """VGG-16 LargeFOV + fc8: ``forward`` gives logits [B, C, h, w] at stride 8."""

    def __init__(self, trunk: VGG16Trunk, num_classes: int, fc8_std: float = SEC_TRAINING["fc8_std"]):
        super().__init__()
        self.trunk = trunk
        self.fc8 = nn.Conv2d(trunk.stage_channels[-1], num_classes, 1)
        nn.init.normal_(self.fc8.weight, std=fc8_std)
        nn.init.zeros_(self.fc8.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc8(self.trunk(images)[-1])

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        return sec_softmax(self(images))


def build_sec_network(num_classes: int, weights: str = "none", width: float = 1.0) -> SecNet:
    return SecNet(build_vgg16(weights, width=width, fc6_dilation=12), num_classes)


def sec_softmax(logits: torch.Tensor) -> torch.Tensor:
    """SEC's softmax: softmax + MIN_PROB, renormalised (no log of 0 in the losses)."""
    p = F.softmax(logits, dim=1) + MIN_PROB
    return p / p.sum(dim=1, keepdim=True)


def seeding_loss(probs: torch.Tensor, cues: torch.Tensor) -> torch.Tensor:
    """SEC's seeding loss. ``cues``: [B, C, h, w] one-hot at cue pixels (zero elsewhere).

    Per image the sum of -log f over its cues divided by its number of cues, then the batch mean;
    an image without cues adds 0 (SEC's layer would divide by zero).
    """
    count = cues.sum(dim=(1, 2, 3))
    per_image = -(cues * probs.log()).sum(dim=(1, 2, 3)) / count.clamp_min(1.0)
    return per_image.mean()


def gwrp(values: torch.Tensor, decay: float) -> torch.Tensor:
    """Global weighted rank pooling over the last axis: sum_j d^(j-1) v_(j) / sum_j d^(j-1), v descending."""
    ordered = values.sort(dim=-1, descending=True).values
    weights = decay ** torch.arange(values.shape[-1], dtype=values.dtype, device=values.device)
    return (ordered * weights).sum(dim=-1) / weights.sum()


def expansion_loss(probs: torch.Tensor, labels: torch.Tensor, fg_decay: float = FG_DECAY,
                   bg_decay: float = BG_DECAY) -> torch.Tensor:
    """SEC's expansion loss. ``probs`` [B, C, h, w] (channel 0 background); ``labels`` [B, C-1] multi-hot.

    A term over an empty class set (no present or no absent class) is 0.
    """
    flat = probs.flatten(2)
    fg = flat[:, 1:]
    present = labels.to(probs.dtype)
    absent = 1.0 - present
    g_fg = gwrp(fg, fg_decay)                          # [B, C-1]
    g_bg = gwrp(flat[:, 0], bg_decay)                  # [B]
    peak = fg.amax(dim=2)
    term_present = -(present * g_fg.log()).sum(1) / present.sum(1).clamp_min(1.0)
    term_absent = -(absent * (1.0 - peak).log()).sum(1) / absent.sum(1).clamp_min(1.0)
    return (term_present + term_absent - g_bg.log()).mean()


def downscale_images(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [B, H, W, 3] -> [B, h, w, 3] by bilinear resampling (SEC zooms the image to the output grid)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def crf_targets(probs: torch.Tensor, images: np.ndarray, scale: float = CRF_SCALE,
                crf: dict | None = None, workers=None) -> torch.Tensor:
    """Q: the dense CRF of each image's output (spatial std / ``scale``), floored at MIN_PROB, renormalised.

    ``workers``: a :class:`conta_core.parallel.ProcessMap` to spread the per-image CRFs over (None: here)."""
    params = dict(SEC_CRF, **(crf or {}))
    params["bi_xy_std"] /= scale
    params["pos_xy_std"] /= scale
    small = downscale_images(images, tuple(probs.shape[-2:]))
    p = probs.detach().float().cpu().numpy()
    one = partial(dense_crf, **params)
    q = np.stack(workers(one, list(small), list(p)) if workers is not None else [one(a, b) for a, b in zip(small, p)])
    q = np.maximum(q, MIN_PROB)
    q /= q.sum(axis=1, keepdims=True)
    return torch.from_numpy(q).to(probs.device, probs.dtype)


def constrain_loss(probs: torch.Tensor, targets: torch.Tensor, clip: tuple[float, float] | None = None
                   ) -> torch.Tensor:
    """mean over images and pixels of KL(Q || f) = sum_c Q log(Q / f); Q = ``targets`` (no gradient).

    ``clip``: bounds on Q / f inside the log (DSRG's constrain layer uses (0.05, 20)); None for SEC.
    """
    q = targets.detach()
    ratio = q / probs
    if clip is not None:
        ratio = ratio.clamp(*clip)
    return (q * ratio.log()).sum(dim=1).mean()


def one_hot_cues(seeds: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """[B, h, w] seed labels (ignore_index = no cue) -> [B, C, h, w] float cues."""
    valid = seeds != ignore_index
    cues = F.one_hot(torch.where(valid, seeds, torch.zeros_like(seeds)).long(), num_classes)
    return (cues.permute(0, 3, 1, 2) * valid[:, None]).float()


def seeds_to_grid(seeds: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Seed maps [B, H, W] onto the output grid by nearest neighbour (SEC stores cues at 41x41)."""
    return F.interpolate(seeds[:, None].float(), size=size, mode="nearest")[:, 0].to(seeds.dtype)


def sec_loss(model: SecNet, batch: dict, *, crf: dict | None = None, fg_decay: float = FG_DECAY,
             bg_decay: float = BG_DECAY, scale: float = CRF_SCALE, workers=None) -> torch.Tensor:
    """Seed + expand + constrain for :func:`conta_core.train.train`.

    ``batch``: ``image`` [B, 3, H, W] (normalised network input), ``rgb`` uint8 [B, H, W, 3]
    (the same crops, for the CRF), ``seeds`` [B, H, W] seed labels, ``labels`` [B, C-1] multi-hot.
    ``workers``: spreads the CRFs (see :func:`crf_targets`).
    """
    logits = model(batch["image"])
    probs = sec_softmax(logits)
    num_classes, size = probs.shape[1], tuple(probs.shape[-2:])
    cues = one_hot_cues(seeds_to_grid(batch["seeds"], size), num_classes)
    rgb = batch["rgb"].cpu().numpy() if torch.is_tensor(batch["rgb"]) else np.asarray(batch["rgb"])
    return (seeding_loss(probs, cues) + expansion_loss(probs, batch["labels"], fg_decay, bg_decay)
            + constrain_loss(probs, crf_targets(probs, rgb, scale, crf=crf, workers=workers)))


def optimizer_groups(model: SecNet) -> list[dict]:
    """SEC's groups: trunk weights 1x, trunk biases 2x (no decay), fc8 10x, fc8 bias 20x (no decay)."""
    trunk = [p for n, p in model.trunk.named_parameters() if p.requires_grad and not n.endswith("bias")]
    trunk_b = [p for n, p in model.trunk.named_parameters() if p.requires_grad and n.endswith("bias")]
    return [{"params": trunk, "lr_mult": LR_MULT["trunk"]},
            {"params": trunk_b, "lr_mult": LR_MULT["trunk_bias"], "weight_decay": 0.0},
            {"params": [model.fc8.weight], "lr_mult": LR_MULT["fc8"]},
            {"params": [model.fc8.bias], "lr_mult": LR_MULT["fc8_bias"], "weight_decay": 0.0}]


def step_lr_factor(iteration: int, step: int = SEC_TRAINING["lr_step"], gamma: float = SEC_TRAINING["lr_gamma"]
                   ) -> float:
    """Caffe's "step" policy: lr = base * gamma ** floor(iteration / step)."""
    return gamma ** (iteration // step)


def sec_optimizer(model: SecNet, lr: float = SEC_TRAINING["lr"], momentum: float = SEC_TRAINING["momentum"],
                  weight_decay: float = SEC_TRAINING["weight_decay"]) -> torch.optim.SGD:
    """SGD over :func:`optimizer_groups` at lr * lr_mult (scale each group's lr by :func:`step_lr_factor`)."""
    groups = [{"params": g["params"], "lr": lr * g["lr_mult"], "lr_mult": g["lr_mult"],
               "weight_decay": g.get("weight_decay", weight_decay)} for g in optimizer_groups(model)]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


def set_step_lr(optimizer: torch.optim.Optimizer, iteration: int, base_lr: float = SEC_TRAINING["lr"],
                step: int = SEC_TRAINING["lr_step"], gamma: float = SEC_TRAINING["lr_gamma"]) -> None:
    for group in optimizer.param_groups:
        group["lr"] = base_lr * group["lr_mult"] * step_lr_factor(iteration, step, gamma)


def gradient_saliency(classifier: nn.Module, images: torch.Tensor, median: int = 3) -> np.ndarray:
    """SEC's background saliency (Simonyan et al.) from a CAM classifier, float32 [B, H, W].

    SEC back-propagates 1 from every class score to the conv4_1 activations of
    its classification network and takes max |gradient| over channels, median
    filtered 3x3. Here: the gradient of the summed class scores with respect to
    the block-3 output (pool3, stride 8, the input of conv4_1), max |.| over
    channels, median filtered on that grid, resized (bilinear) to the image size. Its 10 %
    lowest pixels are the background cue (:func:`conta_core.expand.seeds.lowest_fraction`).
    ``classifier``: a :class:`~conta_core.models.classifier.CamClassifier`-like
    model with ``backbone.stem``, ``backbone.stages()`` and ``classifier``; no CONTA splice
    (the cue is taken from the round's own network without M, as SEC's).
    """
    from scipy.ndimage import median_filter

    was_training = classifier.training
    classifier.eval()
    with torch.enable_grad():
        stages = list(classifier.backbone.stages())
        x = stages[1](stages[0](classifier.backbone.stem(images)))
        x = x.detach().requires_grad_(True)
        y = x
        for stage in stages[2:]:
            y = stage(y)
        scores = classifier.classifier(y).mean(dim=(2, 3))
        (grad,) = torch.autograd.grad(scores.sum(), x)
    classifier.train(was_training)
    grid = grad.abs().amax(dim=1).float().cpu().numpy()          # [B, h, w] on the stride-8 grid
    if median > 1:  # filtered on the grid, as SEC (41 x 41), then resized
        grid = np.stack([median_filter(g, size=median) for g in grid])
    sal = F.interpolate(torch.from_numpy(np.ascontiguousarray(grid))[:, None], size=images.shape[-2:],
                        mode="bilinear", align_corners=False)[:, 0]
    return sal.numpy().astype(np.float32)


@torch.no_grad()
def predict_pseudo_mask(model: SecNet, image: torch.Tensor, rgb: np.ndarray, class_ids: list[int],
                        crf: dict | None = None) -> np.ndarray:
    """A round's pseudo-mask: the network's probabilities at full size, restricted to background + the
    image's classes, refined by the dense CRF (SEC's parameters, unscaled at full resolution), arg-max.

    ``image``: [1, 3, H, W] network input; ``rgb`` uint8 [H, W, 3]. Returns uint8 [H, W].
    """
    model.eval()
    logits = model(image)
    logits = F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)[0]
    keep = [0] + list(class_ids)
    probs = F.softmax(logits[keep], dim=0).cpu().numpy()
    refined = dense_crf(rgb, probs, **dict(SEC_CRF, **(crf or {})))
    return np.asarray(keep, dtype=np.uint8)[refined.argmax(axis=0)]
