"""``method: dsrg``: DSRG (Huang et al., CVPR 2018), paper Appendix 3.3.

Classifier: ResNet-101 at output stride 16 with the shared CAM classifier of
Eq. 2; CONTA's [X, M_t] at block 2..5 (ResNet layer1..layer4) or ``dense``.
The paper's best round for DSRG is 2 (``rounds: 2``).

Seeds (``labels``, :func:`conta_core.expand.seeds.seeds_from_cams`): foreground
the top 20 % of each class's CAM; background where the normalised saliency is
below 0.06. Saliency: ``dataset.saliency_root`` (one PNG per image id, DRFI's
maps as DSRG users have them), else OpenCV's spectral-residual saliency as a
stand-in (:mod:`conta_core.expand.saliency`; extra ``dsrg``). Stored per round
as a ``seeds`` HDF5 artifact.

Expansion ``dsrg``: DeepLab-v2 ASPP on ResNet-101 (output stride 16, dropout
0.5) trained with the balanced seeding loss on seeds grown by seeded region
growing (8-connected, thresholds 0.99 foreground / 0.85 background) and the
constrain loss; SGD lr 5e-4 / 10 every 2,000 iterations, 10,000 iterations,
momentum 0.9, wd 5e-4, batch 20, 321 crops. Its CRF-refined predictions on the
training split are the pseudo-masks. Workflow: rules/dsrg.smk (docs/methods.md).
"""
from __future__ import annotations

from . import Expansion, Recipe, Ref

DSRG_TRAIN = {"optimizer": "sgd", "lr": 5e-4, "momentum": 0.9, "weight_decay": 5e-4, "iterations": 10000,
              "batch_size": 20, "crop": 321, "lr_step": 2000, "lr_gamma": 0.1, "dropout": 0.5,
              "depth": 101, "output_stride": 16}
# DSRG's public code refines with SEC's CRF parameters (its CRF layer and its test script)
SEC_CRF = {"iterations": 10, "bi_w": 10.0, "bi_xy_std": 80.0, "bi_rgb_std": 13.0, "pos_w": 3.0, "pos_xy_std": 3.0}

RECIPE = Recipe(
    name="dsrg",
    description="DSRG: ResNet-101 CAMs and saliency seeds, seeded region growing network",
    backbone=Ref("conta_core.models.backbone:build_resnet"),
    classifier=Ref("conta_core.models.classifier:CamClassifier"),
    build_round_classifier=Ref("conta_core.classify:build_classifier"),
    train_round_classifier=Ref("conta_core.classify:train_classifier"),
    training_loss=Ref("conta_core.classify:classification_loss"),
    cam_inference=Ref("conta_core.cam:infer_cams"),
    cam_labels=Ref("conta_core.cam_labels:cam_to_label"),
    expansions={
        "dsrg": Expansion(
            name="dsrg",
            steps=("seeds", "train_dsrg"),
            labels=Ref("conta_core.expand.seeds:seeds_from_cams"),
            network=Ref("conta_core.expand.dsrg:build_dsrg_network"),
            loss=Ref("conta_core.expand.dsrg:dsrg_loss"),
            expand=Ref("conta_core.expand.sec:predict_pseudo_mask"),
            # config section expand.dsrg, by the step that reads each part (as expand.sec)
            defaults={"seeds": {"fg_fraction": 0.2, "fg_rule": "top_fraction", "saliency_threshold": 0.06},
                      "loss": {"fg_threshold": 0.99, "bg_threshold": 0.85, "connectivity": 8, "grow_on": "crf",
                               "crf_scale": 12.0, "constrain_clip": [0.05, 20.0], "crf": SEC_CRF},
                      "train": {**DSRG_TRAIN, "scale_range": [1.0, 1.0], "weights": "imagenet", "freeze_bn": True,
                                "num_workers": 0},
                      "pseudo_mask": {"crf": SEC_CRF}},
        ),
        "crf": Expansion(name="crf", expand=Ref("conta_core.expand.crf:expand_crf")),
    },
    default_expansion="dsrg",
    conta_blocks=(2, 3, 4, 5),
    defaults={
        "root": {"rounds": 2},
        "classifier": {"backbone": 101, "output_stride": 16, "weights": "imagenet"},
        "dataset": {"saliency_root": None},
    },
)
