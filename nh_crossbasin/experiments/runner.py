"""Execute NH runs (train or finetune, then evaluate) on local worker processes or a Ray cluster.

Each task runs NH's own machinery in a subprocess: NH's ``start_run`` or ``finetune`` (what ``nh-xb train|finetune``
calls), then ``eval_run`` on the run directory it created (what ``nh-xb evaluate`` calls). Tasks are resumable (a task whose run
parent already holds test metrics is skipped; an interrupted run directory is left as it is and a fresh one is
made), and one failing task is reported without stopping the others.

Ray is an optional extra (``pip install 'nh-crossbasin[ray]'``). ``ray="local"`` starts a Ray instance on this
machine with ``workers`` CPUs; ``"auto"`` or an address joins an existing cluster (``ray start --head`` on the head
node, ``ray start --address=HEAD:6379`` on the others; every node needs this package, NH, the data and the output
folder at the same paths, e.g. a shared file system). With ``gpus_per_task`` > 0 Ray assigns GPUs per task.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

from tqdm import tqdm

ERROR_TAIL = 4000
PERIODS = ("train", "validation", "test")
FAILURES = "failures.json"


@dataclass(frozen=True)
class Task:
    """One NH run: ``mode`` (``train``, ``finetune``, or ``evaluate`` for an existing run) with ``config``, run
    directories below ``run_parent``, evaluated on ``periods``."""

    name: str
    mode: str
    config: Path
    run_parent: Path
    periods: Tuple[str, ...] = ("test",)


def finished_run_dir(run_parent: Path, period: Union[str, Sequence[str]] = "test") -> Optional[Path]:
    """The newest run directory below ``run_parent`` that has metrics of ``period`` (of every period, for a
    sequence), if any."""
    periods = [period] if isinstance(period, str) else list(period)
    done = sorted(p.parents[2] for p in Path(run_parent).glob(f"*/{periods[0]}/model_epoch*/{periods[0]}_metrics.csv"))
    done = [d for d in done if all(list(d.glob(f"{q}/model_epoch*/{q}_metrics.csv")) for q in periods)]
    return done[-1] if done else None


def trained_run_dir(run_parent: Path) -> Optional[Path]:
    """The newest run directory below ``run_parent`` that holds model weights, if any."""
    trained = sorted(p.parent for p in Path(run_parent).glob("*/model_epoch*.pt"))
    return trained[-1] if trained else None


def execute(task: Task, gpu: Optional[int] = None, threads: Optional[int] = None) -> dict:
    """Run one task (or skip it when already finished); never raises for a failing NH run.

    The task runs in a fresh interpreter (:mod:`nh_crossbasin.experiments.task`): NH's ``start_run`` or
    ``finetune``, then ``eval_run`` on the new run directory.

    Returns
    -------
    dict
        ``name``, ``status`` (``done``, ``skipped`` or ``failed``), ``run_dir``, ``seconds``, ``error``.
    """
    start = time.perf_counter()
    result = {"name": task.name, "status": "skipped", "run_dir": None, "seconds": 0.0, "error": ""}
    done = finished_run_dir(task.run_parent, task.periods)
    if done is not None:
        return dict(result, run_dir=str(done))
    env = dict(os.environ)
    # the run imports the same nh_crossbasin as this process (an installed one, or a checkout on sys.path)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([package_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    mode = task.mode
    if mode != "evaluate" and trained_run_dir(task.run_parent) is not None and any(
            finished_run_dir(task.run_parent, period) is not None for period in PERIODS):
        mode = "evaluate"  # trained and evaluated on other periods before: evaluate the missing ones only
    command = [sys.executable, "-m", "nh_crossbasin.experiments.task", mode, str(task.config),
               str(task.run_parent), "--periods", *task.periods, "--gpu", str(gpu if gpu is not None else -1)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    run_dir = finished_run_dir(task.run_parent, task.periods)
    if proc.returncode == 0 and run_dir is not None:
        return dict(result, status="done", run_dir=str(run_dir), seconds=time.perf_counter() - start)
    return dict(result, status="failed", seconds=time.perf_counter() - start,
                error=(proc.stderr or proc.stdout)[-ERROR_TAIL:])


def run_tasks(tasks: Iterable[Task], workers: int = 1, ray: Optional[str] = None, gpus: Optional[List[int]] = None,
              gpus_per_task: float = 0, threads_per_task: Optional[int] = None,
              log: Callable[[str], None] = print) -> List[dict]:
    """Run tasks concurrently and return their results in task order.

    Parameters
    ----------
    tasks : iterable of Task
        What to run.
    workers : int
        Concurrent tasks (local) or CPUs of a local Ray instance.
    ray : str, optional
        None: local worker processes; ``"local"``: start Ray on this machine; ``"auto"`` or an address: join a
        Ray cluster.
    gpus : list of int, optional
        Local GPU ids, assigned round robin to local tasks (default: CPU).
    gpus_per_task : float
        GPUs Ray reserves per task.
    threads_per_task : int, optional
        ``OMP_NUM_THREADS`` of each run (default: cores divided by workers).
    log : callable
        Receives one line per finished task.
    """
    tasks = list(tasks)
    threads = threads_per_task or max(1, (os.cpu_count() or 1) // max(workers, 1))
    results = {}
    bar = tqdm(total=len(tasks), desc="runs", file=sys.stdout, disable=len(tasks) < 2)

    def record(result: dict) -> None:
        results[result["name"]] = result
        bar.update(1)
        line = f"{result['status']:>7s}  {result['name']}  ({result['seconds']:.0f} s)"
        log(line + (f"\n{result['error'][-800:]}" if result["status"] == "failed" else ""))

    if ray is None:
        with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
            futures = [pool.submit(execute, task, gpus[i % len(gpus)] if gpus else None, threads)
                       for i, task in enumerate(tasks)]
            for future in as_completed(futures):
                record(future.result())
    else:
        for result in _run_on_ray(tasks, workers, ray, gpus_per_task, threads):
            record(result)
    bar.close()
    return [results[t.name] for t in tasks]


def write_failures(out: Path, results: List[dict]) -> List[dict]:
    """Record the failed tasks of the latest invocation in ``out/failures.json`` (name -> error) and return them.

    Tasks that were retried and finished are no longer listed; without failures the file is removed.
    """
    failed = [r for r in results if r["status"] == "failed"]
    path = Path(out) / FAILURES
    if failed:
        path.write_text(json.dumps({r["name"]: r["error"] for r in failed}, indent=1) + "\n")
    elif path.exists():
        path.unlink()
    return failed


def _run_on_ray(tasks: List[Task], workers: int, address: str, gpus_per_task: float, threads: int):
    try:
        import ray
    except ImportError as err:
        raise RuntimeError("--ray needs Ray: pip install 'nh-crossbasin[ray]'") from err
    started_here = not ray.is_initialized()
    if started_here:
        if address == "local":
            ray.init(num_cpus=max(workers, 1), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1, num_gpus=gpus_per_task, max_retries=0)(execute)
        pending = [remote.remote(task, 0 if gpus_per_task else None, threads) for task in tasks]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            yield ray.get(ready[0])
    finally:
        if started_here:
            ray.shutdown()
