"""Changing a config key reruns exactly the jobs that read it (issue 10 item 4), for EVERY key of the schema.

A finished run is faked with `snakemake --touch` over empty outputs (Snakemake then records
each output's params, as after a real run). Each key is then changed to another valid
value and the run planned through Snakemake's Python API in this process (a dry run; about
0.5 s a plan instead of ~2 s for a `snakemake -n` process). The jobs planned must be
exactly the jobs that read the key directly, with everything downstream of them in the
finished run's DAG. Which job reads which key is written out below, by hand, from what the
steps do (not from rules/conta_steps.py, which it checks).
"""
import copy
import fnmatch
import json
from pathlib import Path

import pytest
import yaml
from workflow_helpers import plan_dag, run_snakemake

from snakemake.io import is_flagged

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
TINY_IRNET = REPO / "tests" / "configs" / "tiny_irnet.yaml"
TINY_SEAM = REPO / "tests" / "configs" / "tiny_seam.yaml"
SCHEMA = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
ROUNDS = 1  # tiny.yaml: rounds 0 and 1

pytestmark = pytest.mark.workflow


def job_id(job) -> tuple:
    return (job.rule.name, tuple(sorted((k, str(v)) for k, v in job.wildcards_dict.items())))


class Run:
    """A faked finished run of one configuration, planned again with one key changed."""

    def __init__(self, workdir: Path, configfiles: list[Path], base: dict | None = None):
        self.workdir, self.configfiles, self.base = workdir, configfiles, base or {}
        graph = plan_dag(workdir, configfiles, self.base, self._graph, forceall=True)
        self.jobs, self.consumers, outputs = graph
        for path, is_directory in outputs:
            target = workdir / path
            if is_directory:
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()
        # --forceall: also the outputs that exist already (folders) get their metadata recorded;
        # a second pass puts right any output whose mtime came out no newer than its input's.
        args = ["--configfile", *map(str, configfiles), *self.cli_args()]  # one --configfile: the last wins
        run_snakemake(workdir, "--touch", "--forceall", *args)
        if self.plan({}):
            run_snakemake(workdir, "--touch", *args)
        assert self.plan({}) == set(), "a touched run must be complete"

    def cli_args(self) -> list[str]:
        return ["--config", *[f"{k}={json.dumps(v)}" for k, v in self.base.items()]] if self.base else []

    @staticmethod
    def _graph(dag):
        jobs = {job_id(j) for j in dag.jobs}
        consumers = {job_id(j): {job_id(c) for c in dag.depending[j]} for j in dag.jobs}
        outputs = [(str(f), is_flagged(f, "directory")) for j in dag.jobs for f in j.output]
        return jobs, consumers, outputs

    def plan(self, overrides: dict) -> set:
        config = merge(copy.deepcopy(self.base), copy.deepcopy(overrides))
        planned = plan_dag(self.workdir, self.configfiles, config, lambda dag: {job_id(j) for j in dag.needrun_jobs()})
        return planned - {("all", ())}

    def downstream(self, direct: set) -> set:
        out, todo = set(), list(direct)
        while todo:
            job = todo.pop()
            if job in out:
                continue
            out.add(job)
            todo.extend(self.consumers.get(job, ()))
        return out - {("all", ())}

    def select(self, rule: str, rounds=None) -> set:
        return {j for j in self.jobs if j[0] == rule and
                (rounds is None or int(dict(j[1])["round"]) in rounds)}


@pytest.fixture(scope="module")
def crf_run(tmp_path_factory):
    return Run(tmp_path_factory.mktemp("crf"), [TINY])


@pytest.fixture(scope="module")
def irnet_run(tmp_path_factory):
    return Run(tmp_path_factory.mktemp("irnet"), [TINY, TINY_IRNET], {"expand": {"method": "irnet"}})


@pytest.fixture(scope="module")
def seam_run(tmp_path_factory):
    return Run(tmp_path_factory.mktemp("seam"), [TINY, TINY_SEAM], {"method": "seam"})


# -- every key of the schema -----------------------------------------------------------------------
def schema_keys(node=SCHEMA, path=()):
    if "$ref" in node:  # a shared definition (e.g. a CRF section): its keys are the key's
        node = {**SCHEMA["definitions"][node["$ref"].split("/")[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
    if node.get("type") == "object" and "properties" in node:
        for key, child in node["properties"].items():
            yield from schema_keys(child, path + (key,))
    else:
        yield ".".join(path), node


def config_of(run: Run) -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for path in run.configfiles:
        merge(config, yaml.safe_load(path.read_text()))
    return merge(config, copy.deepcopy(run.base))


def merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def get(config: dict, key: str):
    node = config
    for part in key.split("."):
        node = (node or {}).get(part)
    return node


def nested(key: str, value) -> dict:
    out = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


SPECIAL_VALUES = {"device": "cpu", "dataset.train_split": "val", "dataset.eval_split": "train",
                  "dataset.classes": ["background", "a", "b"], "dataset.label_map": {"0": 0},
                  "conta.mode": "seg_mask", "expand.irnet.train.weights": "none",
                  "classifier.weights": "imagenet", "segment.weights": "imagenet",
                  "report.overlay_ids": ["train_0000"], "classifier.frozen_blocks": ["conv1a"],
                  "expand.affinitynet.train.frozen_blocks": ["conv1a"]}


UNCHANGEABLE = object()  # a one-value enum: nothing else to plan


def changed(key: str, node: dict, current):
    """Another value of `key` that the schema accepts."""
    if key in SPECIAL_VALUES:
        return SPECIAL_VALUES[key]
    if "$ref" in node:
        node = {**SCHEMA["definitions"][node["$ref"].split("/")[-1]], **node}
    if "enum" in node:
        return next((v for v in node["enum"] if v != current), UNCHANGEABLE)
    if "anyOf" in node:
        return next(v for option in node["anyOf"] for v in option.get("enum", [option.get("const")])
                    if v is not None and v != current)
    types = node.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    if current is None:
        types = [t for t in types if t != "null"]
        return {"integer": max(1, node.get("minimum", 1)), "number": 0.5, "string": "/nonexistent",
                "array": [1], "object": {}}[types[0]]
    if isinstance(current, bool):
        return not current
    if isinstance(current, int) and "integer" in types:
        return current + 1 if current + 1 <= node.get("maximum", current + 1) else current - 1
    if isinstance(current, (int, float)):
        return current / 2 if current else 0.5
    if isinstance(current, str):
        return current + "x"
    if isinstance(current, list):
        if not current:
            return ["x"]
        return [changed(key, node.get("items", {}), current[0])] + current[1:]
    if isinstance(current, dict):
        return {**current, "extra": "extra.txt"}
    raise AssertionError(f"no other value for {key} = {current!r}")


# What reads each key (first match wins). `direct(run)` gives the jobs that read the key;
# the expected plan is those and everything downstream of them in the finished run.
ALL_ROUNDS, LATER_ROUNDS = None, range(1, ROUNDS + 1)
NOTHING = lambda run: set()  # noqa: E731
READERS = [
    # speed, scheduling and logging only: never a rerun
    ("device threads resources.* classifier.num_workers segment.num_workers segment.predict_batch_size "
     "cam.batch_size logging.*", "any", NOTHING),
    ("expand.irnet.train.num_workers expand.irnet.walk.batch_size", "any", NOTHING),
    # evaluation only: each method reads its own threshold (irnet cam.bg_threshold, seam cam.bg_power)
    ("cam.bg_power", "crf irnet", NOTHING),
    ("cam.bg_threshold", "affinitynet", NOTHING),
    ("cam.bg_threshold cam.bg_power", "any", lambda run: run.select("evaluate") | run.select("diagnose")
     | run.select("overlays")),  # overlays: the CAM seeds drawn
    # the report's overlays only (rules of the report, where present)
    ("report.*", "any", lambda run: {j for j in run.jobs if "overlay" in j[0] or "report" in j[0]}),
    # keys the synthetic dataset does not read
    ("dataset.root dataset.sbd_root dataset.aug_masks dataset.label_source dataset.mask_shards "
     "dataset.verify_images", "any", NOTHING),
    ("dataset.saliency_root", "crf irnet affinitynet", NOTHING),  # DSRG's seeds step only
    ("dataset.synthetic.*", "any", lambda run: run.select("generate_synthetic")),
    ("dataset.*", "any", lambda run: run.select("dataset_index")),
    ("seed", "any", lambda run: run.select("train_classifier") | run.select("train_segmenter")
     | run.select("confounder") | run.select("train_relation")),
    ("classifier.*", "any", lambda run: run.select("train_classifier")),
    ("cam.*", "any", lambda run: run.select("cam")),
    # CONTA: rounds >= 1, and the confounder built for them
    ("conta.mode conta.map_size", "any", lambda run: run.select("train_classifier", LATER_ROUNDS)
     | run.select("cam", LATER_ROUNDS) | run.select("confounder")),
    ("conta.*", "any", lambda run: run.select("train_classifier", LATER_ROUNDS) | run.select("cam", LATER_ROUNDS)),
    # and the overlays of the rounds whose training split is predicted only for a seg_mask
    # confounder (their sheets show that prediction)
    ("confounder.source", "any", lambda run: run.select("confounder") | run.select("overlays", range(ROUNDS))),
    ("segment.crf segment.predict_max_side", "any", lambda run: run.select("predict")),
    ("segment.*", "any", lambda run: run.select("train_segmenter")),
    # only the chosen expansion method's keys
    ("expand.crf.*", "crf", lambda run: run.select("expand")),
    ("expand.crf.*", "irnet", NOTHING),
    ("expand.irnet.*", "crf", NOTHING),
    ("expand.irnet.ir_label.*", "irnet", lambda run: run.select("ir_label")),
    ("expand.irnet.train.*", "irnet", lambda run: run.select("train_relation")),
    ("expand.irnet.walk.*", "irnet", lambda run: run.select("expand")),
    ("expand.affinitynet.*", "crf irnet", NOTHING),
    ("expand.affinitynet.alpha_low expand.affinitynet.alpha_high expand.affinitynet.crf.*", "affinitynet",
     lambda run: run.select("aff_label")),
    ("expand.affinitynet.train.num_workers", "affinitynet", NOTHING),
    ("expand.affinitynet.train.*", "affinitynet", lambda run: run.select("train_affinity")),
    ("expand.affinitynet.radius", "affinitynet", lambda run: run.select("train_affinity") | run.select("expand")),
    ("expand.affinitynet.*", "affinitynet", lambda run: run.select("expand")),
]
# Keys that change which jobs exist (paths, rounds, shards, methods): checked one by one below.
STRUCTURAL = {"run", "method", "rounds", "shards", "dataset.kind", "dataset.train_split", "dataset.eval_split",
              "expand.method", "segment.predict_train_all"}


def readers(key: str, baseline: str):
    for patterns, where, direct in READERS:
        if (where == "any" or baseline in where.split()) and any(fnmatch.fnmatchcase(key, p) for p in patterns.split()):
            return direct
    parts = key.split(".")
    if parts[0] == "expand" and len(parts) > 2 and parts[1] != baseline:
        return NOTHING  # another expansion's section: read only where that expansion is chosen
    raise AssertionError(f"config key {key} is not classified in tests/test_rerun_keys.py READERS: "
                         f"say which steps read it")


def check_keys(run: Run, baseline: str, keys: list[str]):
    config, failures, unread = config_of(run), [], []
    for key, node in schema_keys():
        if key not in keys:
            continue
        current = get(config, key)
        value = changed(key, node, node.get("default") if current is None else current)
        if value is UNCHANGEABLE:
            continue
        if readers(key, baseline) is NOTHING:
            unread.append((key, value))
            continue
        failures += check_one(run, key, value, run.downstream(readers(key, baseline)(run)))
    # The keys that no job reads are changed together, in one plan (most of the schema: the
    # other methods' sections, speed and logging keys): a job reruns when any of its
    # recorded params differs, so an empty plan with the same jobs means each change alone
    # reruns nothing. Otherwise (or when the values clash) each key is planned alone, which
    # names the culprit.
    if unread and not plans_nothing_together(run, unread):
        for key, value in unread:
            failures += check_one(run, key, value, set())
    assert not failures, "\n".join(failures)


def check_one(run: Run, key: str, value, expected: set) -> list[str]:
    planned = run.plan(nested(key, value))
    if planned == expected:
        return []
    return [f"{key} -> {value!r}: reran {sorted(planned - expected)} needlessly, missed {sorted(expected - planned)}"]


def plans_nothing_together(run: Run, changes: list) -> bool:
    overrides = {}
    for key, value in changes:
        merge(overrides, nested(key, value))
    config = merge(copy.deepcopy(run.base), overrides)
    try:
        jobs, planned = plan_dag(run.workdir, run.configfiles, config,
                             lambda dag: ({job_id(j) for j in dag.jobs}, {job_id(j) for j in dag.needrun_jobs()}))
    except Exception:  # noqa: BLE001 -- values valid alone but not together: plan them one by one
        return False
    # The same jobs: no change removed a job whose rerun it could hide.
    return jobs == run.jobs and planned - {("all", ())} == set()


def test_every_key_is_classified():
    for key, _ in schema_keys():
        if key not in STRUCTURAL:
            readers(key, "crf"), readers(key, "irnet"), readers(key, "affinitynet")


def test_each_key_reruns_exactly_its_readers_crf(crf_run):
    keys = [k for k, _ in schema_keys() if k not in STRUCTURAL]
    check_keys(crf_run, "crf", keys)


def test_each_key_reruns_exactly_its_readers_irnet(irnet_run):
    keys = [k for k, _ in schema_keys() if k.startswith("expand.") and k not in STRUCTURAL]
    check_keys(irnet_run, "irnet", keys)


def test_each_key_reruns_exactly_its_readers_seam(seam_run):
    """method seam, expand.method affinitynet: its expansion's keys and the CAM-as-mask thresholds."""
    width = "expand.affinitynet.train.width"  # must equal classifier.width while the trunk is the classifier's
    keys = [k for k, _ in schema_keys() if (k.startswith("expand.") or k.startswith("cam.bg_"))
            and k not in STRUCTURAL and k != width]
    check_keys(seam_run, "affinitynet", keys)
    planned = seam_run.plan({"expand": {"affinitynet": {"train": {"width": 0.125, "weights": "none"}}}})
    assert planned == seam_run.downstream(seam_run.select("train_affinity"))


def rules_of(jobs: set) -> dict:
    counts = {}
    for rule, _ in jobs:
        counts[rule] = counts.get(rule, 0) + 1
    return counts


def test_structural_keys(crf_run):
    run = crf_run
    training = {"train_classifier", "train_segmenter", "train_relation"}
    # A new run name: a new folder, every job.
    assert rules_of(run.plan({"run": "other"})) == rules_of(run.jobs - {("all", ())})
    # One round more: round 2's jobs, the confounder and training prediction of round 1, the summary.
    planned = run.plan({"rounds": 2})
    assert not {j for j in planned if j[0] in training and dict(j[1])["round"] != "2"}
    assert {("confounder", (("round", "1"),)), ("train_classifier", (("round", "2"),))} <= planned
    assert ("predict", (("round", "1"), ("shard", "0"), ("split", "train"))) in planned
    # Two shards: every inference job of every round; no classifier retrained in round 0.
    planned = run.plan({"shards": 2})
    assert ("cam", (("round", "0"), ("shard", "1"))) in planned
    assert ("train_classifier", (("round", "0"),)) not in planned
    # The last round's training split is predicted only when asked, and nothing else reruns
    # but that round's overlay sheet (it then shows the prediction) and the report's list.
    assert run.plan({"segment": {"predict_train_all": True}}) == {
        ("predict", (("round", str(ROUNDS)), ("shard", "0"), ("split", "train"))),
        ("overlays", (("round", str(ROUNDS)),)), ("report_manifest", ())}
    # conta.mode off: rounds >= 1 become baselines; no confounder; round 0 untouched (but its
    # overlay sheet: round 0's training split is no longer predicted, so it shows no prediction).
    planned = run.plan({"conta": {"mode": "off"}})
    assert not {j for j in planned if j[0] == "confounder" or dict(j[1]).get("round") == "0" and j[0] != "overlays"}
    assert ("train_classifier", (("round", "1"),)) in planned
    # IRNet instead of the CRF: the round's relation network and walk; the classifier stays.
    planned = run.plan({"expand": {"method": "irnet"}})
    assert rules_of(planned).get("train_relation") == ROUNDS + 1
    assert ("train_classifier", (("round", "0"),)) not in planned
    assert ("cam", (("round", "0"), ("shard", "0"))) not in planned
    # Another method (SEAM, with the classifier architecture it requires; the CRF expansion kept,
    # which presets/demo_seam.yaml would otherwise make affinitynet): every classifier and
    # everything after it (the CAM step, scoring and overlays read the method too, all downstream).
    planned = run.plan({"method": "seam", "classifier": {"backbone": "resnet38"}, "expand": {"method": "crf"}})
    assert planned == run.downstream(run.select("train_classifier"))
    # Another dataset kind: the index and everything after it, nothing generated.
    planned = run.plan({"dataset": {"kind": "voc_layout", "root": "/nonexistent"}})
    assert planned == run.downstream(run.select("dataset_index"))
    # Other splits: the index and everything after it (predictions of the splits now read).
    for split_key, split in (("train_split", "val"), ("eval_split", "train")):
        planned = run.plan({"dataset": {split_key: split}})
        kept = {j for j in run.downstream(run.select("dataset_index")) if j[0] != "predict"}
        assert kept <= planned and "generate_synthetic" not in rules_of(planned)


def test_last_round_training_prediction_is_not_built(crf_run):
    """Issue 10 item 11: nothing reads the last round's training-split prediction."""
    predicted = {dict(j[1])["round"] + "/" + dict(j[1])["split"] for j in crf_run.select("predict")}
    assert predicted == {"0/train", "0/val", "1/val"}


def test_short_cpu_jobs_are_local(crf_run):
    """SLURM hygiene (issue 15 item 7): seconds-long CPU jobs run where Snakemake runs."""
    local = plan_dag(crf_run.workdir, crf_run.configfiles, {}, lambda dag: set(dag.workflow._localrules))
    assert local >= {"all", "generate_synthetic", "summary"}
    assert not local & {"train_classifier", "cam", "expand", "train_segmenter", "predict", "dataset_index"}
