"""Device choice and GPU slot claims: the one module that decides where tensors live.

Config says ``device: auto | cpu | cuda | cuda:N``; :func:`resolve_device` turns
that into a :class:`torch.device` and fails loudly when CUDA is asked for but
absent, instead of silently training on the CPU.

Snakemake's ``--resources gpu=N`` only limits how many GPU jobs run at once; it
does not say *which* GPU a job gets. :func:`claim_gpus` closes that gap:

* Under a scheduler (SLURM sets ``CUDA_VISIBLE_DEVICES`` per job) the job
  already owns the listed devices, so it takes the first ``count`` of them and
  takes no locks (SLURM with device cgroups numbers every job's GPU ``0``, so
  locks by id would make unrelated jobs wait on each other).
* Otherwise the job claims free slots with ``fcntl.flock`` on
  ``<lock_dir>/gpu<id>.lock``. A flock belongs to an open file descriptor, so
  the OS drops it when the process exits for any reason, ``kill -9`` included:
  a crashed job never leaves a slot taken.

Either way the claim then sets ``CUDA_VISIBLE_DEVICES`` to the claimed ids, so
torch inside the job sees them as ``cuda:0 .. cuda:k-1`` and child processes
(DDP workers) inherit exactly that set. On a shared workstation leave
``CUDA_VISIBLE_DEVICES`` unset and narrow the pool with ``visible`` instead.

``CONTA_FAKE_GPUS=N`` pretends N devices exist so claims can be tested on
machines without GPUs; CUDA is then never queried.
"""
from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)

DEVICE_KEY = "device"  # the config key whose value resolve_device parses


def bf16_hardware(device: torch.device) -> bool:
    """True where bf16 arithmetic runs natively: CUDA, or a CPU with AVX512-BF16 or AMX tiles
    (elsewhere the CPU emulates bf16 and autocast is slower than fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return True
    return device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_precision(precision: str, device: torch.device, key: str = "precision") -> str:
    """Config ``precision`` -> ``fp32`` or ``bf16``: ``auto`` is bf16 autocast where the hardware
    has native bf16 (:func:`bf16_hardware`; bench/demo_speed.py measured its mIoU against fp32
    on paired seeds), fp32 elsewhere. ``key`` names the config key in the error."""
    if precision == "auto":
        return "bf16" if bf16_hardware(device) else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"config key `{key}` must be auto, fp32 or bf16, got {precision!r}")
    return precision


def resolve_device(spec: str) -> torch.device:
    """Map the config value ``device`` to a torch device.

    ``auto`` picks ``cuda`` when a GPU is visible, else ``cpu``. ``cuda`` or
    ``cuda:N`` without a usable GPU N raises ``RuntimeError`` naming the key.
    """
    spec = str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        try:
            device = torch.device(spec)
        except RuntimeError as err:
            raise ValueError(f"config key `{DEVICE_KEY}`: cannot parse {spec!r}") from err
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"config key `{DEVICE_KEY}` is {spec!r} but CUDA is not available here; "
                f"set `{DEVICE_KEY}: auto` or `{DEVICE_KEY}: cpu`")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise RuntimeError(
                f"config key `{DEVICE_KEY}` is {spec!r} but only {count} CUDA device(s) "
                f"are visible (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})")
        return device
    raise ValueError(f"config key `{DEVICE_KEY}` must be auto, cpu, cuda or cuda:N, got {spec!r}")


def set_threads(n: int) -> None:
    """Limit CPU threads of this process and of children it starts.

    Several CPU jobs on one machine each default to all cores and slow each
    other down; Snakemake's ``threads:`` is only honoured if the job obeys it.
    """
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    torch.set_num_threads(n)


def use_deterministic_algorithms() -> None:
    """``torch.use_deterministic_algorithms(True, warn_only=True)`` without its import of
    torch._inductor (1.7 s per job on 2 cores), which only sets the flag for torch.compile;
    this package never compiles. Falls back to the public call if torch drops the setter."""
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        setter(True, warn_only=True)


def default_lock_dir() -> Path:
    """``$CONTA_GPU_LOCK_DIR``, else a per-user folder in /tmp shared by all jobs."""
    env = os.environ.get("CONTA_GPU_LOCK_DIR")
    return Path(env) if env else Path(f"/tmp/conta-gpu-locks-{os.getuid()}")


def _fake_gpus() -> int | None:
    value = os.environ.get("CONTA_FAKE_GPUS")
    return None if value in (None, "") else int(value)


def _physical_count() -> int:
    fake = _fake_gpus()
    return fake if fake is not None else torch.cuda.device_count()


class GpuClaim:
    """GPUs held by this job until :meth:`release` (or ``with`` exit, or process death).

    ``devices``: the claimed ids as integers in the numbering of the parent's
    visible set (for a scheduler-given UUID/MIG entry: its position in that list).
    ``ids``: the exact entries written to ``CUDA_VISIBLE_DEVICES``.
    ``torch_devices``: what to use inside the job, ``cuda:0 .. cuda:k-1``.
    An empty claim means: run on the CPU.
    """

    def __init__(self, ids: list[str], devices: list[int], fds: list[int]):
        self.ids = ids
        self.devices = devices
        self._fds = fds
        self._saved_env = os.environ.get("CUDA_VISIBLE_DEVICES")
        self._released = False
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(ids)

    @property
    def torch_devices(self) -> list[torch.device]:
        return [torch.device("cuda", k) for k in range(len(self.ids))]

    def release(self) -> None:
        """Give the slots back and restore ``CUDA_VISIBLE_DEVICES``; safe to call twice."""
        if self._released:
            return
        self._released = True
        for fd in self._fds:
            os.close(fd)  # closing the only descriptor drops the flock
        self._fds = []
        if self._saved_env is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = self._saved_env

    def __enter__(self) -> "GpuClaim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"GpuClaim(devices={self.devices}, ids={self.ids})"


def _try_lock(lock_dir: Path, device: int) -> int | None:
    path = lock_dir / f"gpu{device}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for humans debugging a wait
    return fd


def _holders(lock_dir: Path, pool: list[int]) -> str:
    parts = []
    for device in pool:
        try:
            pid = (lock_dir / f"gpu{device}.lock").read_text().strip()
        except OSError:
            pid = ""
        parts.append(f"gpu{device}: pid {pid or '?'}")
    return ", ".join(parts)


def claim_gpus(count: int, *, lock_dir: str | os.PathLike | None = None,
               timeout_s: float = 3600.0, visible: list[int] | None = None,
               poll_s: float = 0.2) -> GpuClaim:
    """Claim ``count`` GPUs for this job and point ``CUDA_VISIBLE_DEVICES`` at them.

    ``count == 0`` or no GPUs gives an empty claim and hides all GPUs, so a CPU
    job with ``device: auto`` cannot wander onto a GPU another job holds.
    With ``CUDA_VISIBLE_DEVICES`` set (a scheduler's allocation) the first
    ``count`` listed devices are used without locks. Otherwise ``count`` slots
    of ``visible`` (default: all devices) are locked in ``lock_dir``; when not
    enough are free, none are held and the attempt is retried every ``poll_s``
    seconds (holding a partial set could deadlock two multi-GPU jobs) until
    ``timeout_s``, then ``TimeoutError``. Asking for more GPUs than the pool has
    raises ``ValueError`` at once, since waiting would never help.
    """
    if count < 0:
        raise ValueError(f"GPU count must be >= 0, got {count}")
    if _fake_gpus() is None and torch.cuda.is_initialized():
        # CUDA reads CUDA_VISIBLE_DEVICES once, at initialisation; a later change is ignored.
        raise RuntimeError("claim_gpus must run before CUDA is initialised in this process")
    scheduled = os.environ.get("CUDA_VISIBLE_DEVICES")
    if scheduled is not None:
        entries = [e.strip() for e in scheduled.split(",") if e.strip()]
        if count == 0 or not entries:
            return GpuClaim([], [], [])
        if count > len(entries):
            raise ValueError(f"asked for {count} GPUs but CUDA_VISIBLE_DEVICES={scheduled!r} "
                             f"lists {len(entries)}")
        ids = entries[:count]
        devices = [int(e) if e.isdigit() else k for k, e in enumerate(ids)]
        return GpuClaim(ids, devices, [])

    pool = list(visible) if visible is not None else list(range(_physical_count()))
    if count == 0 or not pool:
        return GpuClaim([], [], [])
    if count > len(pool):
        raise ValueError(f"asked for {count} GPUs but only {len(pool)} exist ({pool})")
    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    waited = False
    while True:
        held: list[tuple[int, int]] = []
        for device in pool:
            fd = _try_lock(lock_dir, device)
            if fd is not None:
                held.append((device, fd))
                if len(held) == count:
                    devices = [d for d, _ in held]
                    log.info("claimed GPU(s) %s (locks in %s)", devices, lock_dir)
                    return GpuClaim([str(d) for d in devices], devices, [f for _, f in held])
        for _, fd in held:
            os.close(fd)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no {count} free GPU slot(s) within {timeout_s:.0f} s; "
                               f"held in {lock_dir}: {_holders(lock_dir, pool)}")
        if not waited:
            log.info("waiting for %d free GPU slot(s) in %s", count, lock_dir)
            waited = True
        time.sleep(poll_s)
