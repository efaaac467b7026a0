"""Where probe runs execute: local processes (the default, ``probes.sweep.run_sweep``), a Ray
cluster, or Slurm through submitit.

Every executor runs the same unit of work, ``run_locked``: one config trained into its own
directory of the run store (``<out>/<config key>/``), under an exclusive lock, skipped when
``done.json`` exists, resumed from its checkpoint otherwise. So the guarantees do not depend on the
executor: no run is trained twice at once, a finished run is never retrained, a resumed run continues
from its checkpoint, and rows are appended by the one process that holds the run's lock.

Results are written by the workers into the store, not sent back to the driver: the store must be
on a filesystem every node sees (NFS, Lustre, a cloud filestore; any local disk for a one-machine
Ray cluster). The driver only collects each run's status. A driver that dies loses nothing, a
worker that dies leaves a checkpoint the retry resumes from, and `probe status` / `probe export`
read the same directory whichever engine trained it.
"""
from __future__ import annotations

import fcntl
import math
import os
import shutil
from pathlib import Path

from scaling_core.io import atomic_write_text
from fits.errors import InputError

from .config import ProbeConfig

__all__ = ["EXECUTORS", "run_locked", "run_ray", "run_slurm", "ray_options", "gpu_env"]

EXECUTORS = ("local", "ray", "slurm")


def run_locked(cfg: ProbeConfig, out: Path, progress: bool, threads: int | None):
    """Train one config unless another process holds its lock (the unit of work of every executor and
    of the local pool). Returns (key, status)."""
    import dataclasses

    from .train import train_probe

    if threads:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threads=threads))
    run_dir = out / cfg.key()
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "lock", "a+") as lock:  # not "w": a held lock keeps its holder's pid
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return cfg.key(), "busy"
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")  # who trains this run (read by `probe status` users and tests)
        lock.flush()
        if (run_dir / "done.json").exists():
            return cfg.key(), "skipped"
        err = run_dir / "error.txt"
        try:
            res = train_probe(cfg, out, progress=progress)
        except Exception as exc:  # `probe status` shows the last line; the sweep reports it and goes on
            atomic_write_text(err, f"{type(exc).__name__}: {exc}\n")
            raise
        err.unlink(missing_ok=True)
        return cfg.key(), "diverged" if res.diverged else ("resumed" if res.resumed else "trained")


def _missing(extra: str, package: str, executor: str) -> InputError:
    return InputError(f"--executor {executor}: needs {package}, which is not installed; install the "
                      f"'{extra}' extra: pip install -e \".[{extra}]\"")


def _ray_task(cfg: ProbeConfig, out: str, threads: int):
    return run_locked(cfg, Path(out), False, threads)


def gpu_env(gpus_per_probe: float) -> dict:
    """Environment a probe task runs in: with GPUs, ``device = "auto"`` must find one (no silent CPU
    run); with none, no GPU is visible (a task given 0 GPUs must not share one uncounted)."""
    return {"PROBES_GPUS_EXPECTED": "1"} if gpus_per_probe > 0 else {"CUDA_VISIBLE_DEVICES": ""}


def ray_options(threads: int, gpus_per_probe: float, attempts: int) -> dict:
    """Ray's resource request for one probe task: ``threads`` CPUs (not the driver's core count: a task
    asking for a whole node's cores cannot share it, and fractional GPUs never pack), the GPU fraction
    as given, and the task's GPU environment (:func:`gpu_env`)."""
    return {"num_cpus": threads, "num_gpus": gpus_per_probe, "max_retries": attempts - 1,
            "retry_exceptions": False, "runtime_env": {"env_vars": gpu_env(gpus_per_probe)}}


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A one-line error for a cluster address nothing answers at (Ray itself retries for minutes)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--address: must be 'auto', 'host:port' or 'ray://host:port'; got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise InputError(f"--address: no Ray cluster answers at {address!r} ({exc.strerror or exc}); start one "
                         "with `ray start --head`, or leave --address out to start a local one") from None


def run_ray(configs: list[ProbeConfig], out, threads: int = 1, attempts: int = 2, address: str | None = None,
            gpus_per_probe: float = 0.0, progress: bool = True, num_cpus: int | None = None) -> dict:
    """Each config as one Ray task needing ``threads`` CPUs and ``gpus_per_probe`` GPUs (fractions
    pack several small probes on one GPU: 0.25 runs four at once). A task whose worker process dies
    is retried by Ray (``max_retries = attempts - 1``) and resumes from its checkpoint; an error
    raised by the run itself is not retried (it would fail again) and is reported as ``failed``.

    ``address``: "auto" or "ray://host:port" joins a running cluster; None starts a local one for
    the sweep (``num_cpus`` CPUs, default all) and stops it afterwards.
    """
    try:
        import ray
    except ImportError:
        raise _missing("distributed", "ray", "ray") from None
    if not 0 <= gpus_per_probe <= 8:
        raise InputError(f"--gpus-per-probe: must be between 0 and 8; got {gpus_per_probe!r}")
    started = not ray.is_initialized()
    if started:
        if not address:  # Ray runs workers at nice 15 by default: any other process on the machine starves them
            os.environ.setdefault("RAY_worker_niceness", "0")
        if address and address != "auto":
            _check_reachable(address)
        kw = {"address": address} if address else {"num_cpus": num_cpus, "include_dashboard": False}
        try:
            ray.init(log_to_driver=False, configure_logging=False, **kw)
        except ConnectionError as exc:
            raise InputError(f"--address: cannot join a Ray cluster at {address!r} ({exc})") from None
    task = ray.remote(_ray_task).options(**ray_options(threads, gpus_per_probe, attempts))
    statuses = {}
    try:
        refs = {task.remote(c, str(Path(out).resolve()), threads): c for c in configs}
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(refs), desc="sweep (ray)", unit="run")
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            c = refs[done[0]]
            try:
                key, status = ray.get(done[0])
            except ray.exceptions.RayTaskError as exc:  # the run raised: recorded in its error.txt too
                key, status = c.key(), f"failed: {str(exc.cause) if exc.cause else exc}".splitlines()[0]
            except ray.exceptions.RayError as exc:  # its worker died more often than the retries allow
                key, status = c.key(), f"failed: its worker died {attempts} times ({type(exc).__name__})"
            statuses[key] = status
            bar.update(1) if bar else None
        if bar:
            bar.close()
    finally:
        if started:
            ray.shutdown()
    return statuses


class _SlurmProbe:
    """One probe as a submitit job. On pre-emption or a time limit Slurm requeues it (submitit's
    checkpoint protocol), and the rerun resumes the probe from its own checkpoint."""

    def __init__(self, out: str, threads: int, gpus_per_probe: float = 0.0):
        self.out, self.threads, self.gpus = out, threads, gpus_per_probe

    def __call__(self, cfg: ProbeConfig):
        os.environ.update(gpu_env(self.gpus))
        return run_locked(cfg, Path(self.out), False, self.threads)

    def checkpoint(self, cfg: ProbeConfig):
        import submitit

        return submitit.helpers.DelayedSubmission(self, cfg)


def run_slurm(configs: list[ProbeConfig], out, threads: int = 1, gpus_per_probe: float = 0.0,
              partition: str | None = None, timeout_min: int = 240, array_parallelism: int = 64,
              cluster: str | None = None, progress: bool = True, poll_s: float = 5.0) -> dict:
    """All configs as one Slurm job array through submitit (logs under ``<out>/_submitit``), each
    job asking for ``threads`` CPUs and ceil(``gpus_per_probe``) GPUs for at most ``timeout_min``
    minutes; at most ``array_parallelism`` run at once. A job that is pre-empted or reaches its
    time limit is requeued and resumes from its checkpoint. ``cluster``: submitit's cluster
    ("slurm", or "local" / "debug" to run the same jobs on this machine, as the tests do); by
    default Slurm, which needs ``sbatch`` on the PATH."""
    try:
        import submitit
    except ImportError:
        raise _missing("distributed", "submitit", "slurm") from None
    if cluster in (None, "slurm") and shutil.which("sbatch") is None:
        raise InputError("--executor slurm: no Slurm here (sbatch is not on the PATH); run from a Slurm login "
                         "node, or use --executor local or ray")
    folder = Path(out).resolve() / "_submitit"
    ex = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=cluster)
    params = {"timeout_min": timeout_min, "cpus_per_task": threads}
    if gpus_per_probe:
        params["gpus_per_node"] = math.ceil(gpus_per_probe)
    if cluster in (None, "slurm"):
        params.update(slurm_array_parallelism=array_parallelism,
                      **({"slurm_partition": partition} if partition else {}))
    ex.update_parameters(**params)
    jobs = ex.map_array(_SlurmProbe(str(Path(out).resolve()), threads, gpus_per_probe), configs)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(jobs), desc="sweep (slurm)", unit="run")
    statuses = {}
    for job, c in zip(jobs, configs):
        try:
            key, status = job.result()
        except Exception as exc:  # noqa: BLE001 - a failed job fails its run, not the sweep
            last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            key, status = c.key(), f"failed: {last} (log: {job.paths.stderr})"
        statuses[key] = status
        bar.update(1) if bar else None
    if bar:
        bar.close()
    return statuses
