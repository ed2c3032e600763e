"""``method: irnet``: the project's original path (IRNet, Ahn et al., CVPR 2019; paper Appendix 3.2).

ResNet-50 (torchvision layout) CAM classifier trained with the multi-label soft
margin of Eq. 2; CAMs max-normalised; expansion by a dense CRF or by IRNet's
boundary network and random walk. The functions are where they always were;
this module only names them.
"""
from __future__ import annotations

from . import Expansion, Recipe, Ref

RECIPE = Recipe(
    name="irnet",
    description="IRNet: ResNet-50 CAMs, expansion by inter-pixel relations (or a CRF)",
    backbone=Ref("conta_core.models.backbone:build_resnet"),
    classifier=Ref("conta_core.models.classifier:CamClassifier"),
    build_round_classifier=Ref("conta_core.classify:build_classifier"),
    train_round_classifier=Ref("conta_core.classify:train_classifier"),
    training_loss=Ref("conta_core.classify:classification_loss"),
    cam_inference=Ref("conta_core.cam:infer_cams"),
    cam_labels=Ref("conta_core.cam_labels:cam_to_label"),
    expansions={
        "irnet": Expansion(
            name="irnet",
            steps=("ir_label", "train_relation"),
            labels=Ref("conta_core.expand.ir_label:make_ir_label"),
            network=Ref("conta_core.expand.irnet:RelationNet"),
            loss=Ref("conta_core.expand.irnet:relation_loss"),
            expand=Ref("conta_core.expand.random_walk:expand_irnet"),
        ),
        "crf": Expansion(name="crf", expand=Ref("conta_core.expand.crf:expand_crf")),
    },
    default_expansion="irnet",
    conta_blocks=(2, 3, 4, 5),
    defaults={"root": {"rounds": 3}},  # the paper's best round for IRNet
)
