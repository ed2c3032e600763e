"""Wall time of a full VOC IRNet + CONTA run from the per-part timings of bench/gpu_check.py.

Pure arithmetic (no torch), so it can be checked by hand and tested. The run is
presets/voc12_irnet_conta.yaml over config.yaml (``VOC_RUN`` below; a test checks
these numbers against the two files): rounds 0 (baseline) .. 3, 10,582 train_aug
and 1,449 val images. One round is the chain of jobs

    train_classifier -> cam -> ir_label -> train_relation -> expand -> train_segmenter -> predict

(the confounder and evaluation jobs are numpy over stored masks: seconds, left out).
Each step's wall time on G GPUs:

* training (classifier, segmenter): ``iterations x (t_iter + loading)``. On G > 1
  GPUs the job trains with DDP on g = the largest divisor of the batch size <= G
  ranks (the batch must split evenly: DeepLab's 10 over 8 GPUs runs on 5), each
  rank at batch / g, plus one gradient all-reduce per step, ``2 (g-1)/g x 4 bytes
  x trainable parameters / bandwidth`` (not overlapped with the backward pass:
  an upper bound). The relation network trains on 1 GPU (its rule asks for 1).
* loading: the preset leaves ``num_workers: 0``, so the training process decodes
  and augments every image itself, serially with the GPU: ``batch / g x seconds
  per image on one core``. ``overlapped`` assumes enough DataLoader workers to
  hide it (needs ``images/s x s/image`` cores per job).
* inference (cam, expand, predict): the images split over ``shards`` jobs of one
  GPU each; ``min(G, shards)`` run at once. The estimate assumes ``shards = max(4, G)``
  (the preset's 4; set ``shards: 8`` on 8 GPUs).
* predict's dense CRFs (``segment.crf: true``, 21 labels, one core each) run in the
  job's worker processes (``conta_core.segment.predict_split``), one per CPU core a
  predict job gets: ``workers = cpu cores // predict jobs at once`` (16 cores, 1 GPU:
  16; 8 GPUs: 2), which the run asks for with ``--set-threads predict=<workers>``.
  They refine batch k while the network predicts batch k+1, so a job takes
  ``wall = max(network + decode, CRFs / workers)`` (the job's own process, waiting on
  the GPU, is not counted as a core). No other step is modelled as overlapped.
* ir_label: two dense CRFs per image (3 labels: background + ~1.5 classes), CPU
  only: all ``shards`` jobs run at once (no GPU to wait for), each spreading its CRFs
  over its worker processes (workflow_scripts/ir_label.py) like predict:
  ``workers = cpu cores // shards`` (16 cores, 4 shards: 4), asked for with
  ``--set-threads ir_label=<workers>``; ``wall = CRFs of a shard / workers`` (the
  job's own process, reading CAMs, is not counted as a core).

Left out: job start-up (seconds per job, ~20 jobs per round), HDF5 reads and writes,
the confounder and evaluation jobs, Snakemake's scheduling gaps, and DDP start-up.
Images are generated at 384x512; VOC's average is ~500x375, so CAM, boundary and
prediction times per image are close to VOC's. Parts of a job that could overlap
(loading with the GPU when ``num_workers`` > 0) are counted serially in ``total_h``.
"""
from __future__ import annotations

VOC_RUN = {
    "rounds": 4,                       # round 0 (baseline) + rounds 1..3 (preset rounds: 3)
    "train_images": 10582,
    "val_images": 1449,
    "shards": 4,
    "classifier": {"epochs": 5, "batch_size": 16},
    "relation": {"epochs": 3, "batch_size": 32},
    "segment": {"epochs": 19, "batch_size": 10, "crf": True},
    "num_workers": 0,
}


def ranks_for(batch_size: int, gpus: int) -> int:
    """DDP ranks a training job can use: the largest divisor of the batch size <= gpus."""
    return max(d for d in range(1, min(batch_size, gpus) + 1) if batch_size % d == 0)


def allreduce_s(params: int, ranks: int, gbps: float) -> float:
    """Ring all-reduce of fp32 gradients: 2 (g-1)/g x bytes over the bus bandwidth (GB/s)."""
    if ranks <= 1:
        return 0.0
    return 2.0 * (ranks - 1) / ranks * 4.0 * params / (gbps * 1e9)


def _train_step(name: str, iters: int, batch: int, gpus: int, t_full: float, t_rank: float | None,
                params: int, load_s: float, gbps: float, ddp: bool = True) -> dict:
    g = ranks_for(batch, gpus) if ddp else 1
    if g == 1:
        t = t_full
    else:
        if t_rank is None:
            raise ValueError(f"{name}: no per-rank timing at batch {batch // g} for {g} ranks")
        t = t_rank + allreduce_s(params, g, gbps)
    gpu = iters * t
    loading = iters * (batch / g) * load_s
    return {"step": name, "gpus_used": g, "gpu_s": gpu, "serial_cpu_s": loading, "iterations": iters}


def _infer_step(name: str, images: int, s_per_image: float, gpus: int, shards: int, cpu_s: float = 0.0) -> dict:
    jobs = min(gpus, shards)
    return {"step": name, "gpus_used": jobs, "gpu_s": images * s_per_image / jobs,
            "serial_cpu_s": images * cpu_s / jobs, "images": images}


def _predict_step(name: str, images: int, s_per_image: float, decode_s: float, crf_s: float, gpus: int,
                  shards: int, cpu_cores: int) -> dict:
    """Inference whose per-image CPU work ``crf_s`` runs in the job's worker processes, overlapped
    with the job's own serial part (network on the GPU, then decoding): wall = max of the two."""
    jobs = min(gpus, shards)
    workers = max(1, cpu_cores // jobs)
    per_job = images / jobs
    gpu, serial, pool = per_job * s_per_image, per_job * decode_s, per_job * crf_s / workers
    return {"step": name, "gpus_used": jobs, "gpu_s": gpu, "serial_cpu_s": serial, "cpu_workers": workers,
            "pool_cpu_s": pool, "wall_s": max(gpu + serial, pool), "images": images}


def _cpu_pool_step(name: str, images: int, crf_s: float, shards: int, cpu_cores: int) -> dict:
    """A CPU-only sharded step: its ``shards`` jobs at once (waves when there are more jobs than
    cores), each over ``cpu cores // jobs at once`` worker processes."""
    jobs = min(shards, cpu_cores)
    workers = max(1, cpu_cores // jobs)
    waves = -(-shards // jobs)
    pool = waves * (images / shards) * crf_s / workers
    return {"step": name, "gpus_used": 0, "gpu_s": 0.0, "serial_cpu_s": 0.0, "cpu_workers": workers,
            "pool_cpu_s": pool, "wall_s": pool, "images": images}


def estimate(m: dict, gpus: int, *, cpu_cores: int, allreduce_gbps: float = 100.0,
             run: dict = VOC_RUN) -> dict:
    """Per-step and total hours of the full run on ``gpus`` GPUs.

    ``m``: measured numbers (seconds), keys:
    classifier_s_iter, classifier_s_iter_rank (batch 16 / ranks), classifier_params,
    cam_s_image, relation_s_iter, boundary_s_image, walk_s_image,
    segment_s_iter, segment_s_iter_rank, segment_params, predict_s_image,
    load_cls_s_image, load_seg_s_image, decode_s_image (one core),
    crf3_s, crf21_s (one dense CRF, one core).
    Returns ``{"steps": [...], "round_h", "total_h", "total_overlapped_h"}``;
    ``total_overlapped_h`` assumes loading hidden by DataLoader workers.
    """
    n, v = run["train_images"], run["val_images"]
    shards = max(run["shards"], gpus)
    c, r, s = run["classifier"], run["relation"], run["segment"]
    steps = [
        _train_step("train_classifier", c["epochs"] * (n // c["batch_size"]), c["batch_size"], gpus,
                    m["classifier_s_iter"], m.get("classifier_s_iter_rank"), m["classifier_params"],
                    m["load_cls_s_image"], allreduce_gbps),
        _infer_step("cam", n, m["cam_s_image"], gpus, shards, m["decode_s_image"]),
        _cpu_pool_step("ir_label (CPU)", n, 2 * m["crf3_s"], shards, cpu_cores),
        _train_step("train_relation", r["epochs"] * (n // r["batch_size"]), r["batch_size"], 1,
                    m["relation_s_iter"], None, 0, m["load_cls_s_image"], allreduce_gbps, ddp=False),
        _infer_step("expand (boundary + walk)", n, m["boundary_s_image"] + m["walk_s_image"], gpus, shards,
                    m["decode_s_image"]),
        _train_step("train_segmenter", s["epochs"] * (n // s["batch_size"]), s["batch_size"], gpus,
                    m["segment_s_iter"], m.get("segment_s_iter_rank"), m["segment_params"],
                    m["load_seg_s_image"], allreduce_gbps),
        _predict_step("predict (train_aug + val)", n + v, m["predict_s_image"], m["decode_s_image"],
                      m["crf21_s"] if s["crf"] else 0.0, gpus, shards, cpu_cores),
    ]
    loading_steps = {"train_classifier", "train_relation", "train_segmenter"}
    for step in steps:
        step.setdefault("pool_cpu_s", 0.0)
        step.setdefault("wall_s", step["gpu_s"] + step["serial_cpu_s"])  # predict's: already the max
        hidden = step["step"] in loading_steps
        step["overlapped_s"] = step["gpu_s"] if hidden else step["wall_s"]
    round_s = sum(st["wall_s"] for st in steps)
    overlapped_s = sum(st["overlapped_s"] for st in steps)
    return {"gpus": gpus, "shards": shards, "cpu_cores": cpu_cores, "allreduce_gbps": allreduce_gbps,
            "rounds": run["rounds"],
            "steps": steps, "round_h": round_s / 3600, "total_h": run["rounds"] * round_s / 3600,
            "total_overlapped_h": run["rounds"] * overlapped_s / 3600}


def format_estimate(est: dict) -> str:
    """The table: GPU h, serial CPU h (in the job's own process), pool h (in worker processes,
    overlapped with the rest of the job), and wall h of each step per round."""
    lines = [f"{'step':28s} {'GPUs':>4s} {'GPU h':>7s} {'CPU h':>7s} {'pool h':>12s} {'h/round':>8s}"]
    for st in est["steps"]:
        pool = (f"{st['pool_cpu_s'] / 3600:7.2f} x{st['cpu_workers']:<3d}" if st.get("cpu_workers")
                else f"{'-':>7s}     ")
        lines.append(f"{st['step']:28s} {st['gpus_used']:4d} {st['gpu_s'] / 3600:7.2f} "
                     f"{st['serial_cpu_s'] / 3600:7.2f} {pool} {st['wall_s'] / 3600:8.2f}")
    last = est.get("rounds", VOC_RUN["rounds"]) - 1
    lines.append(f"one round {est['round_h']:.2f} h; full run, rounds 0..{last} (round 0 = baseline + {last} CONTA "
                 f"rounds): {est['total_h']:.1f} h as configured, {est['total_overlapped_h']:.1f} h with the "
                 "training data loading overlapped by DataLoader workers")
    return "\n".join(lines)
