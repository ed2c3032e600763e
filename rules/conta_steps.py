"""What each step of a round reads from the config: the settings that make its output.

A rule passes its step's *result settings* as `--settings` (a Snakemake param, so a
change reruns the step) and the keys that change only its speed as `--runtime`
(a derived param, which Snakemake does not compare). The producer records the
digest of its result settings in its output (`config_digest`, with the round);
each consumer is told, with `--expect`, the digest and round of every input it
reads, so a foreign or stale file is refused instead of used.

    round 0                 the baseline: no conta key reaches it
    round t >= 1            conta.* reaches the classifier and its CAMs when the
                            mode is not off, and the confounder of round t - 1
    evaluation only         the cam keys the method scores CAMs as masks with
                            (cam.bg_threshold; SEAM: cam.bg_power)

`method` (conta_core.methods) reaches the steps that build or score the classifier;
`expand.method`'s steps are listed in EXPANSIONS below (a new expansion adds its entry
and its rules file, rules/<name>.smk).

No Snakemake import: tests build the same settings from a config dict.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

try:  # the recipes are plain Python (no torch); the repository's copy where the package is not installed
    from conta_core import methods as _methods
except ImportError:  # pragma: no cover - Snakemake planning outside the package's environment
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from conta_core import methods as _methods

# Keys that change only how fast a step runs, never what it writes (section path -> keys).
RUNTIME_KEYS = {
    ("classifier",): ("num_workers",),
    ("segment",): ("num_workers", "predict_batch_size"),
    ("cam",): ("batch_size",),
}  # an expansion's speed-only keys: ExpansionStep.runtime
# Read by the scoring steps only (evaluate, diagnose, the report's overlays), never by a step
# that makes an artifact another step reads; each method reads those its recipe names.
EVAL_ONLY_KEYS = {("cam",): ("bg_threshold", "bg_power")}
# Dataset keys only one dataset kind reads (the others ignore them).
KIND_ONLY_KEYS = {"sbd_root": "voc12", "aug_masks": "voc12", "label_source": "voc12",
                  "mask_shards": "coco14", "verify_images": "coco14"}
# predict reads these segment keys (the network, its multi-scale inputs and the CRF);
# the training keys reach it through the segmenter it loads.
SEGMENTER_ARCHITECTURE = ("backbone", "output_stride", "weights", "freeze_bn", "freeze_conv1",
                          "aspp_rates", "msc_scales")
# segment.crf and predict_max_side shape predictions only: they never reach training.
PREDICT_ONLY = ("crf", "predict_train_all", "predict_max_side")


@dataclass(frozen=True)
class ExpansionStep:
    """A per-round step of an expansion (its `expand` step included), as its settings see it.

    parts: the keys of `expand.<name>` whose values make its output (None: the whole section);
    runtime: {part: keys of that part that change only the speed}; reads: {name under the
    settings' "inputs": producer step of the same round}; reads_classifier(section): whether it
    also reads the round's classifier.pt; sharded: one job per shard (settings hold `shards`);
    seed: the run's seed reaches it (it trains); extra(config): keys from outside the section
    that it reads too (DSRG's seeds: dataset.saliency_root).
    """
    parts: tuple[str, ...] | None = None
    runtime: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    reads: Mapping[str, str] = field(default_factory=dict)
    reads_classifier: Callable[[dict], bool] | None = None
    sharded: bool = False
    seed: bool = False
    extra: Callable[[dict], dict] | None = None


def _seed_net_steps(name: str, **seeds) -> ExpansionSpec:
    """SEC's and DSRG's steps: seeds (CAM shard -> seed maps), train_<name> (the network on the
    round's seeds), expand (its CRF-refined predictions)."""
    train = f"train_{name}"
    return ExpansionSpec(
        {"seeds": ExpansionStep(parts=("seeds",), reads={"cam": "cam"}, sharded=True, **seeds),
         train: ExpansionStep(parts=("loss", "train"), runtime={"train": ("num_workers",)}, reads={"seeds": "seeds"},
                              seed=True, reads_classifier=lambda section: section["train"]["weights"] == "classifier"),
         "expand": ExpansionStep(parts=("pseudo_mask",), reads={"cam": "cam", "seed_net": train}, sharded=True)},
        artifacts={"seeds": ("seeds", "seeds"), "seed_net": ("seed_net", train)})


@dataclass(frozen=True)
class ExpansionSpec:
    """An `expand.method` as the workflow runs it: its steps by rule name, in order, `expand`
    last (the recipe's `Expansion.steps` + expand), and the artifacts its rules pass by input
    name: {input name: (kind, producer step)}."""
    steps: Mapping[str, ExpansionStep]
    artifacts: Mapping[str, tuple[str, str]] = field(default_factory=dict)


EXPANSIONS: dict[str, ExpansionSpec] = {
    "crf": ExpansionSpec({"expand": ExpansionStep(reads={"cam": "cam"}, sharded=True)}),
    "irnet": ExpansionSpec(
        {"ir_label": ExpansionStep(parts=("ir_label",), reads={"cam": "cam"}, sharded=True),
         "train_relation": ExpansionStep(parts=("train",), runtime={"train": ("num_workers",)},
                                         reads={"ir_label": "ir_label"}, seed=True,
                                         reads_classifier=lambda section: section["train"]["weights"] == "classifier"),
         "expand": ExpansionStep(parts=("walk",), runtime={"walk": ("batch_size",)},
                                 reads={"cam": "cam", "relation_net": "train_relation"}, sharded=True)},
        artifacts={"ir_labels": ("ir_label", "ir_label"), "relation_net": ("relation_net", "train_relation")}),
    "affinitynet": ExpansionSpec(
        {"aff_label": ExpansionStep(parts=("alpha_low", "alpha_high", "crf"), reads={"cam": "cam"}, sharded=True),
         "train_affinity": ExpansionStep(parts=("train", "radius"), runtime={"train": ("num_workers",)},
                                         reads={"aff_label": "aff_label"}, seed=True,
                                         reads_classifier=lambda section: section["train"]["weights"] == "classifier"),
         "expand": ExpansionStep(parts=("alpha", "beta", "steps", "radius"),
                                 reads={"cam": "cam", "affinity_net": "train_affinity"}, sharded=True)},
        artifacts={"aff_labels": ("aff_label", "aff_label"), "affinity_net": ("affinity_net", "train_affinity")}),
    # SEC's background cue is the round classifier's gradient saliency; DSRG's the saliency maps
    "sec": _seed_net_steps("sec", reads_classifier=lambda section: section["seeds"]["background"] == "gradient_saliency"),
    "dsrg": _seed_net_steps("dsrg", extra=lambda config: {"saliency_root": config["dataset"].get("saliency_root")}),
}


def method_recipe(config: dict):
    """The recipe of the config's `method`, checked to be wired into the workflow together with
    its `expand.method` (ValueError naming the key otherwise)."""
    name = config.get("method", "irnet")
    try:
        recipe = _methods.get(name)
    except ValueError as error:
        raise ValueError(f"config key method: {error}") from None
    if recipe.train_round_classifier is None or recipe.build_round_classifier is None:
        raise ValueError(f"config key method: {name!r} is not wired into the workflow yet (its recipe, "
                         f"conta_core/methods/{name}.py, names no build/train_round_classifier); wired: "
                         f"{wired_methods()}")
    # Where the shared classifier builds the trunk from classifier.backbone (classify.build_backbone),
    # a named architecture in the recipe's defaults (sec: vgg16) is required; a ResNet depth
    # (dsrg: 101) is the paper's value only (the demo uses 18).
    required = recipe.defaults.get("classifier", {}).get("backbone")
    shared = recipe.build_round_classifier.target == "conta_core.classify:build_classifier"
    if shared and isinstance(required, str) and config["classifier"].get("backbone") != required:
        raise ValueError(f"config key classifier.backbone: method {name!r} uses {required!r}, got "
                         f"{config['classifier'].get('backbone')!r} (presets/demo_{name}.yaml sets it)")
    expansion = config["expand"]["method"]
    if expansion not in recipe.expansions:
        raise ValueError(f"config key expand.method: {expansion!r} is not available for method {name!r}; "
                         f"choose one of {sorted(recipe.expansions)} (default {recipe.default_expansion})")
    if expansion not in EXPANSIONS:
        raise ValueError(f"config key expand.method: {expansion!r} is not wired into the workflow yet "
                         f"(rules/conta_steps.py EXPANSIONS and rules/{expansion}.smk); wired: {sorted(EXPANSIONS)}")
    train = (config["expand"].get(expansion) or {}).get("train") or {}
    if train.get("weights") == "classifier" and config["classifier"].get("backbone") == "vgg16" and \
            bool(train.get("batch_norm", False)) != bool(config["classifier"].get("batch_norm", False)):
        raise ValueError(f"config key expand.{expansion}.train.batch_norm ({train.get('batch_norm', False)}) must equal "
                         f"classifier.batch_norm ({config['classifier'].get('batch_norm', False)}) when its weights "
                         "are the classifier's")
    if train.get("weights") == "classifier" and "width" in train and \
            float(train["width"]) != float(config["classifier"].get("width", 1.0)):
        raise ValueError(f"config key expand.{expansion}.train.width ({train['width']}) must equal classifier.width "
                         f"({config['classifier'].get('width', 1.0)}) when its weights are the classifier's")
    steps = tuple(EXPANSIONS[expansion].steps)
    if steps != (*recipe.expansion(expansion).steps, "expand"):
        raise ValueError(f"expand.method {expansion}: the workflow runs the steps {steps}, the recipe of "
                         f"method {name} lists {recipe.expansion(expansion).steps} before expand")
    return recipe


def method_rounds(config: dict) -> int:
    """The number of CONTA rounds the config's method uses when `rounds` is null (its recipe's
    ``defaults["root"]["rounds"]``: the round the paper reports as best)."""
    name = config.get("method", "irnet")
    try:
        recipe = _methods.get(name)
    except ValueError as error:
        raise ValueError(f"config key method: {error}") from None
    rounds = recipe.defaults.get("root", {}).get("rounds")
    if rounds is None:
        raise ValueError(f"config key rounds: null, and method {name!r} names no default "
                         f"(conta_core/methods/{name}.py defaults['root']['rounds']): set rounds")
    return int(rounds)


def wired_methods() -> list[str]:
    return [name for name in _methods.available()
            if _methods.get(name).train_round_classifier is not None
            and _methods.get(name).build_round_classifier is not None]


def digest(obj: Any) -> str:
    """The same digest as conta_core.store.digest (tests check they agree); no conta_core import
    here because Snakemake may plan in an environment without the package."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _without(section: dict, *keys: str) -> dict:
    return {k: copy.deepcopy(v) for k, v in section.items() if k not in keys}


def _pick(section: dict, keys) -> dict:
    return {k: copy.deepcopy(section[k]) for k in keys if k in section}


def _section(config: dict, path: tuple[str, ...]) -> dict:
    node = config
    for key in path:
        node = (node or {}).get(key) or {}
    return node


class Steps:
    """The result settings, runtime settings and input expectations of every step of a config."""

    def __init__(self, config: dict):
        self.config = config
        self.rounds = method_rounds(config) if config["rounds"] is None else int(config["rounds"])
        self.shards = int(config["shards"])
        self.dataset = config["dataset"]
        self.train_split = self.dataset["train_split"]
        self.eval_split = self.dataset["eval_split"]
        self.mode = config["conta"]["mode"]
        self.recipe = method_recipe(config)
        self.method = config["expand"]["method"]
        self.expansion = EXPANSIONS[self.method]
        self._digests: dict = {}

    # -- which round reads what -------------------------------------------------------
    def uses_context(self, round_index: int) -> bool:
        """Round t's classifier and CAMs read conta.* and round t - 1's confounder."""
        return int(round_index) > 0 and self.mode != "off"

    def builds_confounder(self, round_index: int) -> bool:
        return int(round_index) < self.rounds and self.uses_context(int(round_index) + 1)

    def predicts_train(self, round_index: int) -> bool:
        """Round t's training-split prediction is built only where something reads it: the
        confounder (source seg_mask), unless segment.predict_train_all asks for every round."""
        if self.config["segment"].get("predict_train_all", False):
            return True
        return self.builds_confounder(round_index) and self.config["confounder"]["source"] == "seg_mask"

    # -- result settings, by step ------------------------------------------------------
    def _base(self, seed: bool = True) -> dict:
        base = {"train_split": self.train_split}
        if seed:
            base["seed"] = self.config["seed"]
        return base

    def _conta(self, round_index: int) -> dict:
        # Round 0 (and every round with mode off) trains without context: no conta key reaches it.
        return copy.deepcopy(self.config["conta"]) if self.uses_context(round_index) else {"mode": "off"}

    def settings(self, step: str, round_index: int | None = None, split: str | None = None) -> dict:
        """The step's own keys and, under "inputs", the digests of the artifacts it reads: a file
        made from another run's inputs (e.g. a pseudo-mask expanded from a seed-1 CAM) carries
        another digest, although the expansion's own keys are the same."""
        own = self._own(step, round_index, split)
        inputs = self._inputs(step, round_index)
        return {**own, "inputs": inputs} if inputs else own

    def _inputs(self, step: str, t: int | None) -> dict:
        up = {}
        if step == "train_classifier":
            data = {"index": self.settings("dataset_index")}
            if self.dataset["kind"] == "synthetic":
                data["synthetic"] = self.settings("generate_synthetic")
            up["dataset"] = digest(data)
        if step in ("train_classifier", "cam", "diagnose") and self.uses_context(t):
            up["confounder"] = self.digest("confounder", t - 1)
        spec = self.expansion.steps.get(step)
        if step in ("cam", "diagnose") or (spec is not None and spec.reads_classifier is not None
                                           and spec.reads_classifier(self._expand_section())):
            up["classifier"] = self.digest("train_classifier", t)
        if step in ("evaluate", "diagnose"):
            up["cam"] = self.digest("cam", t)
        for name, producer in (spec.reads.items() if spec is not None else ()):
            up[name] = self.digest(producer, t)
        if step in ("train_segmenter", "evaluate", "diagnose") or (
                step == "confounder" and self.config["confounder"]["source"] == "pseudo_mask"):
            up["pseudo_mask"] = self.digest("expand", t)
        if step == "predict":
            up["segmenter"] = self.digest("train_segmenter", t)
        if step == "evaluate":
            up["seg_pred"] = self.digest("predict", t, self.eval_split)
        if step == "confounder" and self.config["confounder"]["source"] == "seg_mask":
            up["seg_pred"] = self.digest("predict", t, self.train_split)
        return up

    def _expand_section(self) -> dict:
        return self.config["expand"].get(self.method) or {}

    def _expansion_own(self, step: str) -> dict:
        """`expand.method` and the parts of its section that the step reads (speed keys left out)."""
        spec, section = self.expansion.steps[step], self._expand_section()
        if spec.parts is None:
            part = copy.deepcopy(section)
        else:
            part = {name: _without(section[name], *spec.runtime.get(name, ())) if isinstance(section[name], dict)
                    else copy.deepcopy(section[name]) for name in spec.parts}
        own = self._base(seed=spec.seed)
        if spec.sharded:
            own["shards"] = self.shards
        own["expand"] = {"method": self.method, self.method: part}
        if spec.extra is not None:
            own.update(copy.deepcopy(spec.extra(self.config)))
        return own

    def _cam_label_keys(self) -> dict:
        """The cam keys the method scores CAMs as masks with (evaluate, diagnose, overlays)."""
        return {key: copy.deepcopy(self.config["cam"].get(key)) for key in self.recipe.cam_label_keys.values()}

    def _own(self, step: str, round_index: int | None, split: str | None) -> dict:
        c, t = self.config, round_index
        if step == "generate_synthetic":
            return copy.deepcopy(self.dataset.get("synthetic") or {})
        if step == "dataset_index":
            kind = self.dataset["kind"]
            # saliency_root: read by DSRG's seeds step alone (ExpansionStep.extra), not by the index
            ignored = {"synthetic", "saliency_root"} | ({"root"} if kind == "synthetic" else set())  # the rule passes --root
            return {k: copy.deepcopy(v) for k, v in self.dataset.items()
                    if k not in ignored and KIND_ONLY_KEYS.get(k, kind) == kind}
        method = self.recipe.name
        if step == "train_classifier":
            return {**self._base(), "method": method,
                    "classifier": _without(c["classifier"], *RUNTIME_KEYS[("classifier",)]), "conta": self._conta(t)}
        if step == "cam":
            cam = _without(c["cam"], *RUNTIME_KEYS[("cam",)], *EVAL_ONLY_KEYS[("cam",)])
            return {**self._base(), "method": method, "shards": self.shards, "cam": cam, "conta": self._conta(t),
                    "classifier": _without(c["classifier"], *RUNTIME_KEYS[("classifier",)])}
        if step in self.expansion.steps:
            return self._expansion_own(step)
        if step == "train_segmenter":
            return {**self._base(), "segment": _without(c["segment"], *RUNTIME_KEYS[("segment",)], *PREDICT_ONLY)}
        if step == "predict":
            segment = {**_pick(c["segment"], SEGMENTER_ARCHITECTURE), "crf": c["segment"].get("crf", False),
                       "predict_max_side": c["segment"].get("predict_max_side", 1024)}
            return {"shards": self.shards, "split": split, "segment": segment}
        if step == "confounder":
            conta = {"mode": self.mode, "map_size": copy.deepcopy(c["conta"]["map_size"])}
            return {**self._base(), "conta": conta, "confounder": copy.deepcopy(c["confounder"])}
        if step == "evaluate":
            return {**self._base(seed=False), "method": method, "eval_split": self.eval_split,
                    "cam": self._cam_label_keys()}
        if step == "diagnose":
            # The round's classifier rebuilt, its M-usage scored with the CAM seeds' threshold.
            return {**self._base(), "method": method,
                    "classifier": _without(c["classifier"], *RUNTIME_KEYS[("classifier",)]),
                    "conta": self._conta(t), "cam": self._cam_label_keys()}
        if step == "overlays":  # the report's mask sheets: the CAM drawn as the evaluation scores it
            return {"method": method, "cam": self._cam_label_keys()}
        raise KeyError(f"no settings for step {step!r}")

    def runtime(self, step: str) -> dict:
        """The keys of `step` that change only its speed (merged over its settings by the step)."""
        sections = {"train_classifier": [("classifier",)], "cam": [("cam",)],
                    "train_segmenter": [("segment",)], "predict": [("segment",)]}
        keys = dict(RUNTIME_KEYS)
        spec = self.expansion.steps.get(step)
        for part, part_keys in (spec.runtime.items() if spec is not None else ()):
            keys[("expand", self.method, part)] = part_keys
            sections.setdefault(step, []).append(("expand", self.method, part))
        out: dict = {}
        for path in sections.get(step, []):
            values = _pick(_section(self.config, path), keys[path])
            if step == "train_segmenter":
                values.pop("predict_batch_size", None)
            if values:
                node = out
                for key in path[:-1]:
                    node = node.setdefault(key, {})
                node[path[-1]] = values
        return out

    def digest(self, step: str, round_index: int | None = None, split: str | None = None) -> str:
        key = (step, round_index, split)
        if key not in self._digests:  # each round's digests build on the previous round's
            self._digests[key] = digest(self.settings(step, round_index, split))
        return self._digests[key]

    # -- what each consumer expects of its inputs ------------------------------------------
    def expect(self, step: str, round_index: int, inputs: dict[str, list[str]]) -> list[dict]:
        """For each input file of `step` in round t: its kind, producer digest and round.

        `inputs` maps the rule's input names to their paths (Snakemake's named input).
        """
        t = int(round_index)
        producers = {
            "classifier": ("classifier", "train_classifier", t, None),
            "confounder": ("confounder", "confounder", t - 1, None),
            "cam": ("cam", "cam", t, None),
            "cams": ("cam", "cam", t, None),
            "pseudo_masks": ("pseudo_mask", "expand", t, None),
            "segmenter": ("segmenter", "train_segmenter", t, None),
            "seg_preds": ("seg_pred", "predict", t, self.eval_split),
            "train_preds": ("seg_pred", "predict", t, self.train_split),
        }
        producers.update({name: (kind, producer, t, None)
                          for name, (kind, producer) in self.expansion.artifacts.items()})
        if step == "confounder":
            if self.config["confounder"]["source"] == "seg_mask":
                producers["masks"] = ("seg_pred", "predict", t, self.train_split)
            else:
                producers["masks"] = ("pseudo_mask", "expand", t, None)
        expected = []
        for name, paths in inputs.items():
            if name not in producers:
                continue
            kind, producer, producer_round, split = producers[name]
            for path in ([paths] if isinstance(paths, str) else list(paths)):
                expected.append({"path": str(path), "kind": kind, "round": producer_round,
                                 "config_digest": self.digest(producer, producer_round, split)})
        return expected
