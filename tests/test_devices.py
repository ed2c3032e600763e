"""GPU slot claims across processes (with fake GPUs), scheduler hand-off, device parsing."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from conta_core import devices
from conta_core.devices import claim_gpus, resolve_device, set_threads

REPO = Path(__file__).resolve().parents[1]

# Claims one fake GPU, reports it, then holds it until killed.
HOLDER = textwrap.dedent("""
    import os, sys, time
    from conta_core.devices import claim_gpus
    claim = claim_gpus(1, lock_dir=sys.argv[1], timeout_s=30)
    out = sys.argv[2]
    with open(out + ".tmp", "w") as f:
        f.write(f"{claim.devices[0]} {os.environ['CUDA_VISIBLE_DEVICES']}")
    os.replace(out + ".tmp", out)
    time.sleep(120)
""")


@pytest.fixture
def fake_env(monkeypatch, tmp_path):
    """Two fake GPUs, no scheduler allocation, a private lock folder."""
    monkeypatch.setenv("CONTA_FAKE_GPUS", "2")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("CONTA_GPU_LOCK_DIR", str(tmp_path / "locks"))
    return tmp_path / "locks"


def _start_holder(lock_dir: Path, out: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_dir), str(out)], env=env)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"holder exited early with {proc.returncode}"
        assert time.monotonic() < deadline, f"holder never wrote {path}"
        time.sleep(0.05)
    return path.read_text()


def test_concurrent_claims_get_distinct_slots_and_kill_frees_one(fake_env, tmp_path):
    procs = [_start_holder(fake_env, tmp_path / f"claim{k}") for k in range(2)]
    try:
        got = [_wait_for(tmp_path / f"claim{k}", p) for k, p in enumerate(procs)]
        ids = sorted(int(g.split()[0]) for g in got)
        assert ids == [0, 1]
        # The holder's torch sees only its own device.
        assert all(g.split()[0] == g.split()[1] for g in got)

        start = time.monotonic()
        with pytest.raises(TimeoutError, match="gpu0: pid"):
            claim_gpus(1, timeout_s=0.6, poll_s=0.1)
        assert time.monotonic() - start >= 0.5  # it waited rather than failing at once

        victim = procs[0]
        victim_device = int(got[0].split()[0])
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        with claim_gpus(1, timeout_s=10) as claim:
            assert claim.devices == [victim_device]
            assert os.environ["CUDA_VISIBLE_DEVICES"] == str(victim_device)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    assert "CUDA_VISIBLE_DEVICES" not in os.environ  # restored on release


def test_waiting_claim_proceeds_when_slot_frees(fake_env):
    first = claim_gpus(2)
    assert first.devices == [0, 1]
    assert first.torch_devices == [torch.device("cuda", 0), torch.device("cuda", 1)]
    first.release()
    first.release()  # idempotent
    with claim_gpus(2, timeout_s=1) as again:
        assert again.devices == [0, 1]


def test_partial_free_set_is_not_held(fake_env, monkeypatch):
    with claim_gpus(1) as one:
        assert one.devices == [0]
        # Another job: it would not inherit this process's CUDA_VISIBLE_DEVICES.
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
        with pytest.raises(TimeoutError):
            claim_gpus(2, timeout_s=0.3, poll_s=0.1)
        # The failed 2-GPU attempt must not have kept gpu1.
        with claim_gpus(1, timeout_s=0.3) as other:
            assert other.devices == [1]


def test_visible_narrows_the_pool(fake_env, monkeypatch):
    with claim_gpus(1, visible=[1]) as claim:
        assert claim.devices == [1]
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
        with pytest.raises(TimeoutError):
            claim_gpus(1, visible=[1], timeout_s=0.2, poll_s=0.05)


def test_too_many_or_zero(fake_env):
    with pytest.raises(ValueError, match="only 2"):
        claim_gpus(3, timeout_s=0.1)
    with claim_gpus(0) as none:
        assert none.devices == [] and none.torch_devices == []
        assert os.environ["CUDA_VISIBLE_DEVICES"] == ""  # CPU job cannot see GPUs


def test_no_gpus_gives_empty_claim(monkeypatch, tmp_path):
    monkeypatch.setenv("CONTA_FAKE_GPUS", "0")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with claim_gpus(1, lock_dir=tmp_path) as claim:
        assert claim.devices == []


def test_scheduler_allocation_is_respected(fake_env, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    held = claim_gpus(1)
    # No locks: a second job with the same allocation text is not blocked (SLURM
    # with device cgroups shows every job's own GPU as 0).
    also = claim_gpus(1, timeout_s=0.1)
    assert held.devices == [3] and also.devices == [3]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    also.release()
    held.release()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"
    assert not fake_env.exists()

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa,GPU-bbbb")
    with claim_gpus(2) as claim:
        assert claim.ids == ["GPU-aaaa", "GPU-bbbb"] and claim.devices == [0, 1]
    with pytest.raises(ValueError, match="lists 2"):
        claim_gpus(3)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="`device`"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        for spec in ("cuda", "cuda:1"):
            with pytest.raises(RuntimeError, match="`device`.*CUDA is not available"):
                resolve_device(spec)


def test_set_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1
        assert os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError):
        set_threads(0)


def test_default_lock_dir(monkeypatch):
    monkeypatch.delenv("CONTA_GPU_LOCK_DIR", raising=False)
    assert devices.default_lock_dir() == Path(f"/tmp/conta-gpu-locks-{os.getuid()}")


def _setup_in_subprocess(script_imports: str, uses_torch: bool) -> dict:
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, 'workflow_scripts')
        import _common
        {script_imports}
        args = _common.parser('x').parse_args(['--settings', '{{"seed": 3}}', '--device', 'cpu'])
        device = _common.setup(args, uses_torch={uses_torch})
        report = {{"device": str(device), "modules": sorted(m for m in sys.modules if m.split('.')[0]
                                                             in ('torch', 'torchvision'))}}
        if 'torch' in sys.modules:
            import torch
            report["deterministic"] = torch.are_deterministic_algorithms_enabled()
            report["warn_only"] = torch.is_deterministic_algorithms_warn_only_enabled()
        print(json.dumps(report))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    import json
    return json.loads(result.stdout.splitlines()[-1])


def test_torch_steps_are_deterministic_without_loading_compilers():
    # Each of these imports costs seconds per job (torchvision pulls torch._dynamo).
    report = _setup_in_subprocess("import conta_core.classify, conta_core.segment, conta_core.cam", True)
    assert report["device"] == "cpu"
    assert report["deterministic"] is True and report["warn_only"] is True
    assert not [m for m in report["modules"] if m.startswith(("torchvision", "torch._dynamo", "torch._inductor"))]


def test_cpu_steps_never_import_torch():
    imports = ("import conta_core.evaluate, conta_core.confounder, conta_core.expand.crf, "
               "conta_core.cam_labels, conta_core.data.index, conta_core.store")
    report = _setup_in_subprocess(imports, False)
    assert report == {"device": "None", "modules": []}


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(True, False, "bf16"), (False, True, "bf16"),
                                                        (False, False, "fp32")])
def test_precision_auto_follows_native_bf16(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert devices.resolve_precision("auto", torch.device("cpu")) == expected
    # CUDA always has it; explicit values are kept whatever the hardware
    assert devices.resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert devices.resolve_precision("fp32", torch.device("cuda")) == "fp32"
    assert devices.resolve_precision("bf16", torch.device("cpu")) == "bf16"


def test_precision_error_names_the_key():
    with pytest.raises(ValueError, match=r"`segment.precision` must be auto, fp32 or bf16, got 'fp16'"):
        devices.resolve_precision("fp16", torch.device("cpu"), "segment.precision")


def test_training_resolves_auto_precision(monkeypatch, capsys):
    """train_job turns auto into the precision it trains with (bf16 here: autocast runs)."""
    from conta_core import train

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    seen = {}

    def fake_rank_main(ctx, build, s, name, checkpoint, out, scalars):
        seen["precision"] = s.precision

    monkeypatch.setattr(train, "_rank_main", fake_rank_main)
    s = train.TrainSettings(epochs=1, batch_size=2, lr=0.1, precision="auto")
    train.train_job(lambda ctx: None, s, torch.device("cpu"), "probe")
    assert seen["precision"] == "bf16"
    assert "[probe] precision auto: bf16 on this cpu" in capsys.readouterr().err
