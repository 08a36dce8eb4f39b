"""Training-step time of NH ``cudalstm``, NH ``ealstm`` and the plugin's ``xb_ealstm``.

One step is forward + backward + Adam on a synthetic batch (``predict_last_n = 1``, MSE on the last time step),
timed after warm-up steps; the models take turns step by step, so that background load affects all alike. With
``--evaluate`` a step is instead one forward pass in eval mode without gradients (as NH's validation and test run
it). The table shows the median (and minimum) of the repeats, the ratios to ``cudalstm`` and NH ``ealstm`` and,
on CUDA, the peak GPU memory of the timed steps. Defaults are the reference shapes: hidden 256, sequence 270, 5
dynamic + 27 static inputs, batch 256 and 2048.

Examples
--------
::

    python benchmarks/ealstm_step.py --device cuda --batch-sizes 256 2048
    python benchmarks/ealstm_step.py --device cpu --batch-sizes 64 256 --repeats 5 --warmup 2 \\
        --results benchmarks/RESULTS.md
    python benchmarks/ealstm_step.py --device cpu --batch-sizes 256 1024 --repeats 5 --warmup 2 --evaluate
    python benchmarks/ealstm_step.py --device cpu --batch-sizes 64 256 --models ealstm xb_ealstm xb_ealstm_nh_head
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

import torch

MODELS = ("cudalstm", "ealstm", "xb_ealstm")
#: ablations (only with ``--models``): ``xb_ealstm`` with NH's ``head(dropout(h_n))`` (``time_major_head = False``)
ABLATIONS = ("xb_ealstm_nh_head",)
RESULTS_HEADER = ("# Benchmark results\n\nMeasurements of `benchmarks/*.py`, newest last. Each section gives the date, "
                  "the git commit, the machine and the exact command.\n")


def build_config(model: str, hidden_size: int, seq_length: int, n_dynamic: int, n_static: int):
    """An NH config for the benchmark shapes (no data needed)."""
    from neuralhydrology.utils.config import Config
    return Config({
        "model": "xb_ealstm" if model in ABLATIONS else model, "head": "regression", "output_activation": "linear",
        "hidden_size": hidden_size,
        "initial_forget_bias": 3, "output_dropout": 0.4, "seq_length": seq_length, "predict_last_n": 1,
        "dynamic_inputs": [f"dyn_{i}" for i in range(n_dynamic)],
        "static_attributes": [f"stat_{i}" for i in range(n_static)], "target_variables": ["streamflow"],
    })


def build_model(cfg, name: str = None) -> torch.nn.Module:
    """The model named by ``name`` (default ``cfg.model``): NH's classes, the plugin's, or an ablation."""
    if cfg.model == "xb_ealstm":
        from nh_crossbasin.nh.models.fused_ealstm import FusedEALSTM
        model = FusedEALSTM(cfg)
        model.time_major_head = name != "xb_ealstm_nh_head"
        return model
    if cfg.model == "ealstm":
        from neuralhydrology.modelzoo.ealstm import EALSTM
        return EALSTM(cfg)
    from neuralhydrology.modelzoo.cudalstm import CudaLSTM
    return CudaLSTM(cfg)


def synthetic_batch(cfg, batch_size: int, device: torch.device) -> Dict:
    """A random NH-style batch for ``cfg``."""
    generator = torch.Generator().manual_seed(0)
    x_d = {name: torch.randn(batch_size, cfg.seq_length, 1, generator=generator).to(device)
           for name in cfg.dynamic_inputs}
    x_s = torch.randn(batch_size, len(cfg.static_attributes), generator=generator).to(device)
    y = torch.randn(batch_size, cfg.seq_length, 1, generator=generator).to(device)
    return {"x_d": x_d, "x_s": x_s, "y": y}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TrainingStep:
    """One model, its Adam optimiser and a synthetic batch; calling it runs one timed training step.

    Parameters
    ----------
    model_name : str
        ``cudalstm``, ``ealstm`` or ``xb_ealstm``.
    batch_size : int
        Samples per batch.
    args : argparse.Namespace
        The benchmark's options (shapes, device).
    """

    def __init__(self, model_name: str, batch_size: int, args: argparse.Namespace):
        self.device = torch.device(args.device)
        torch.manual_seed(0)
        cfg = build_config(model_name, args.hidden_size, args.seq_length, args.dynamic_inputs, args.static_inputs)
        self.evaluate = args.evaluate
        self.model = build_model(cfg, model_name).to(self.device).train(not self.evaluate)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.data = synthetic_batch(cfg, batch_size, self.device)
        self.times_ms: List[float] = []
        self.peak_mib = 0.0
        self.prediction = None

    def step(self) -> None:
        """Forward, backward and Adam update (with ``--evaluate``: one forward in eval mode without gradients).

        The predictions stay alive until the next step's forward pass has run, as in NH's training loop.
        """
        if self.evaluate:
            with torch.no_grad():
                self.model(self.data)
            return
        self.optimizer.zero_grad()
        self.prediction = self.model(self.data)
        loss = torch.mean((self.prediction["y_hat"][:, -1:] - self.data["y"][:, -1:]) ** 2)
        loss.backward()
        self.optimizer.step()

    def timed_step(self) -> None:
        """One step, recording its wall time (and peak GPU memory on CUDA)."""
        _synchronize(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        self.step()
        _synchronize(self.device)
        self.times_ms.append(1000 * (time.perf_counter() - start))
        if self.device.type == "cuda":
            self.peak_mib = max(self.peak_mib, torch.cuda.max_memory_allocated(self.device) / 2 ** 20)

    def result(self) -> Dict[str, float]:
        result = {"median_ms": statistics.median(self.times_ms), "min_ms": min(self.times_ms)}
        if self.device.type == "cuda":
            result["peak_mib"] = self.peak_mib
        return result


def time_training_steps(models: Sequence[str], batch_size: int, args: argparse.Namespace) -> Dict[str, Dict]:
    """Median/min step time in ms (and peak GPU MiB on CUDA) of each model at one batch size.

    The models take turns step by step, so that load from other processes affects all of them alike.
    """
    steps = {name: TrainingStep(name, batch_size, args) for name in models}
    for step in steps.values():
        for _ in range(args.warmup):
            step.step()
    for _ in range(args.repeats):
        for step in steps.values():
            step.timed_step()
    results = {name: step.result() for name, step in steps.items()}
    del steps
    if torch.device(args.device).type == "cuda":
        torch.cuda.empty_cache()
    return results


def markdown_table(results: Dict[tuple, Dict[str, float]], batch_sizes: Sequence[int], models: Sequence[str],
                   cuda: bool) -> str:
    """Results as a markdown table (one row per batch size and model)."""
    header = ("| batch | model | median ms/step | min ms/step | × cudalstm | × ealstm |"
              + (" peak GPU MiB |" if cuda else ""))
    rows = [header, "|---" * (header.count("|") - 1) + "|"]
    for batch_size in batch_sizes:
        references = [results.get((name, batch_size), {}).get("median_ms") for name in ("cudalstm", "ealstm")]
        for model in models:
            result = results[(model, batch_size)]
            ratios = " | ".join(f"{result['median_ms'] / reference:.2f}" if reference else "–"
                                for reference in references)
            row = f"| {batch_size} | {model} | {result['median_ms']:.1f} | {result['min_ms']:.1f} | {ratios} |"
            rows.append(row + (f" {result['peak_mib']:.0f} |" if cuda else ""))
    return "\n".join(rows)


def machine_description(device: torch.device) -> str:
    """CPU/GPU, thread count and library versions, in words."""
    cpu = platform.processor() or platform.machine()
    text = (f"{os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__} with {torch.get_num_threads()} threads, "
            f"oneDNN {'on' if torch.backends.mkldnn.is_available() else 'off'}")
    if os.environ.get("THP_MEM_ALLOC_ENABLE"):   # torch backs tensors >= 2 MB with transparent huge pages
        text += f", THP_MEM_ALLOC_ENABLE={os.environ['THP_MEM_ALLOC_ENABLE']}"
    if device.type == "cuda":
        text += f"; GPU {torch.cuda.get_device_name(device)}, cuDNN {torch.backends.cudnn.version()}"
    return text


def git_commit() -> str:
    """Short hash of HEAD in the repository of this file ('unknown' outside git)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def append_results(path: Path, table: str, device: torch.device, argv: List[str]) -> None:
    """Append a dated section with the table, commit, machine and command to ``path`` (created if absent)."""
    path = Path(path)
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/ealstm_step.py", *argv])
    kind = "evaluation forward" if "--evaluate" in argv else "training step"
    section = (f"\n## EA-LSTM {kind}, {device.type.upper()}, "
               f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}\n\n"
               f"- commit: `{git_commit()}`\n- machine: {machine_description(device)}\n- command: `{command}`\n\n"
               f"{table}\n")
    if not path.exists():
        path.write_text(RESULTS_HEADER)
    with path.open("a") as fp:
        fp.write(section)


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 2048])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS + ABLATIONS)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--seq-length", type=int, default=270)
    parser.add_argument("--dynamic-inputs", type=int, default=5)
    parser.add_argument("--static-inputs", type=int, default=27)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before the timed ones")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps (the median is reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--evaluate", action="store_true",
                        help="time one forward pass in eval mode without gradients instead of a training step")
    parser.add_argument("--results", type=Path, default=None, help="append a section with the table to this file")
    return parser.parse_args(argv)


def main(argv: List[str] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = {}
    for batch_size in args.batch_sizes:
        for model, result in time_training_steps(args.models, batch_size, args).items():
            results[(model, batch_size)] = result
            print(f"batch {batch_size:5d} {model:10s} {result['median_ms']:9.1f} ms/step", file=sys.stderr,
                  flush=True)
    table = markdown_table(results, args.batch_sizes, args.models, cuda=device.type == "cuda")
    print(f"{'evaluation forward (no gradients)' if args.evaluate else 'training step'}: "
          f"hidden {args.hidden_size}, seq {args.seq_length}, {args.dynamic_inputs} dynamic + {args.static_inputs} "
          f"static inputs, {args.repeats} repeats after {args.warmup} warm-up steps; {machine_description(device)}")
    print(table)
    if args.results is not None:
        append_results(args.results, table, device, argv)


if __name__ == "__main__":
    main()
