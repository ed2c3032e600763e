"""``method: sec``: SEC (Kolesnikov and Lampert, ECCV 2016), paper Appendix 3.4.

Classifier: VGG-16 in the DeepLab-LargeFOV form (:mod:`conta_core.models.vgg`:
pool4/pool5 stride 1, conv5 dilated 2, fc6/fc7 as random 3x3 convolutions with
1024 channels, dropout 0.5, output stride 8), the shared CAM classifier of
Eq. 2 on top; CONTA's [X, M_t] at VGG block 2..5 (block 5 = conv5 + fc6 + fc7,
the class convolution's input; ``dense`` = all four).

Seeds (``labels``, :func:`conta_core.expand.seeds.seeds_from_cams`): foreground
the top 20 % of each class's CAM; background SEC's cue, the 10 % least salient
pixels of the classifier's gradient saliency
(:func:`conta_core.expand.sec.gradient_saliency`, SEC's background notebook,
computed on the round's classifier instead of a separate ImageNet VGG);
stored per round as a ``seeds`` HDF5 artifact.

Expansion ``sec``: the SEC network (VGG-16 LargeFOV, fc6 dilation 12, fc8
N(0, 0.01)) trained with the seeding, expansion (GWRP, d_fg 0.996, d_bg 0.999)
and constrain-to-boundary losses (CRF spatial kernels / 12), SGD lr 1e-3 / 10
every 2,000 iterations, 8,000 iterations, batch 15, wd 5e-4, 321 crops. Its
CRF-refined predictions on the training split are the pseudo-masks.
Workflow: rules/sec.smk (docs/methods.md).
"""
from __future__ import annotations

from . import Expansion, Recipe, Ref

SEC_TRAIN = {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 5e-4, "iterations": 8000,
             "batch_size": 15, "crop": 321, "lr_step": 2000, "lr_gamma": 0.1, "dropout": 0.5, "fc8_std": 0.01}
SEC_CRF = {"iterations": 10, "bi_w": 10.0, "bi_xy_std": 80.0, "bi_rgb_std": 13.0, "pos_w": 3.0, "pos_xy_std": 3.0}

RECIPE = Recipe(
    name="sec",
    description="SEC: VGG-16 LargeFOV CAMs, seed / expand / constrain network",
    backbone=Ref("conta_core.models.vgg:build_vgg16"),
    classifier=Ref("conta_core.models.classifier:CamClassifier"),
    # the shared classifier steps: classify.build_backbone builds VGG-16 for classifier.backbone vgg16
    build_round_classifier=Ref("conta_core.classify:build_classifier"),
    train_round_classifier=Ref("conta_core.classify:train_classifier"),
    training_loss=Ref("conta_core.classify:classification_loss"),
    cam_inference=Ref("conta_core.cam:infer_cams"),
    cam_labels=Ref("conta_core.cam_labels:cam_to_label"),
    expansions={
        "sec": Expansion(
            name="sec",
            steps=("seeds", "train_sec"),
            labels=Ref("conta_core.expand.seeds:seeds_from_cams"),
            network=Ref("conta_core.expand.sec:build_sec_network"),
            loss=Ref("conta_core.expand.sec:sec_loss"),
            expand=Ref("conta_core.expand.sec:predict_pseudo_mask"),
            # config section expand.sec, by the step that reads each part: seeds (seeds), loss and
            # train (train_sec), pseudo_mask (expand: the CRF of the predictions, unscaled)
            defaults={"seeds": {"fg_fraction": 0.2, "fg_rule": "top_fraction", "background": "gradient_saliency",
                                "bg_fraction": 0.1},
                      "loss": {"fg_decay": 0.996, "bg_decay": 0.999, "crf_scale": 12.0, "crf": SEC_CRF},
                      "train": {**SEC_TRAIN, "scale_range": [1.0, 1.0], "weights": "imagenet", "width": 1.0,
                                "num_workers": 0},
                      "pseudo_mask": {"crf": SEC_CRF}},
        ),
        "crf": Expansion(name="crf", expand=Ref("conta_core.expand.crf:expand_crf")),
    },
    default_expansion="sec",
    conta_blocks=(2, 3, 4, 5),
    defaults={
        "root": {"rounds": 3},  # the paper's best round
        "classifier": {"backbone": "vgg16", "width": 1.0, "weights": "imagenet", "fc6_dilation": 1,
                       "output_stride": 8},
        "cam": {"scales": [1.0], "flip": False},
    },
)
