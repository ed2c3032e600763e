"""``method: seam``: SEAM (Wang et al., CVPR 2020) + AffinityNet (Ahn and Kwak, CVPR 2018).

The paper's main baseline (Appendix 3.1; Table 1 and every ablation): ResNet-38
at output stride 8, the siamese network with PCM trained with the
classification, ER and ECR losses (OHEM top 20 %) by Adam, lr 0.01 poly 0.9,
batch 8, 8 epochs, 448 crops; inference CAMs are PCM-refined, multi-scale
(0.5, 1, 1.5, 2) with flips, min-max normalised; the CAM as a mask has the
background (1 - max) ** 16; seeds expand by AffinityNet (confident labels at
alpha 4 / 24 refined by the CRF, radius 5, beta 8, t = 256). CONTA splices
[X, M_t] at ResNet-38 block 5 (B5; 2..4 or all four for ``dense``).
See docs/methods.md for what the workflow still has to wire.
"""
from __future__ import annotations

from . import Expansion, Recipe, Ref

RECIPE = Recipe(
    name="seam",
    description="SEAM: ResNet-38 siamese CAMs with PCM, expansion by AffinityNet",
    backbone=Ref("conta_core.models.resnet38:build_resnet38"),
    classifier=Ref("conta_core.models.seam:SeamClassifier"),
    build_round_classifier=Ref("conta_core.seam_classify:build_seam_classifier"),
    train_round_classifier=Ref("conta_core.seam_classify:train_seam_classifier"),
    training_loss=Ref("conta_core.seam:seam_loss"),
    optimizer_groups=Ref("conta_core.seam:optimizer_groups"),
    cam_inference=Ref("conta_core.seam:infer_seam_cams"),
    cam_labels=Ref("conta_core.cam_labels:cam_to_label_power"),  # = expand.affinitynet.cam_labels, no torch
    cam_label_keys={"alpha": "bg_power"},
    expansions={
        "affinitynet": Expansion(
            name="affinitynet",
            steps=("aff_label", "train_affinity"),
            labels=Ref("conta_core.expand.aff_label:make_aff_label"),
            network=Ref("conta_core.expand.affinitynet:AffinityNet"),
            loss=Ref("conta_core.expand.affinitynet:affinity_training_loss"),
            expand=Ref("conta_core.expand.affinitynet:expand_affinitynet"),
            defaults={"alpha": 16.0, "alpha_low": 4.0, "alpha_high": 24.0, "radius": 5, "beta": 8.0,
                      "steps": 256, "crf": {"iterations": 10, "pos_xy_std": 3.0, "pos_w": 3.0,
                                            "bi_xy_std": 80.0, "bi_rgb_std": 13.0, "bi_w": 10.0},
                      "train": {"optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4, "batch_size": 8,
                                "epochs": 8, "crop": 448, "long_side": [448, 768], "new_layer_lr_mult": 10.0}},
        ),
        "crf": Expansion(name="crf", expand=Ref("conta_core.expand.crf:expand_crf")),
    },
    default_expansion="affinitynet",
    conta_blocks=(2, 3, 4, 5),
    defaults={
        "root": {"rounds": 3},  # the paper's best round
        "classifier": {"backbone": "resnet38", "width": 1.0, "weights": "none", "freeze_bn": True,
                       "frozen_blocks": ["conv1a", "b2", "b2_1", "b2_2"], "optimizer": "adam", "lr": 0.01,
                       "poly_power": 0.9, "weight_decay": 5e-4, "batch_size": 8, "epochs": 8, "crop": 448,
                       "long_side": [448, 768], "siamese_scale": 0.3, "ohem_fraction": 0.2},
        "cam": {"scales": [0.5, 1.0, 1.5, 2.0], "flip": True, "bg_power": 16.0},
    },
)
