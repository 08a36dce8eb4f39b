"""Peak resident memory of CPU training steps of NH ``ealstm`` and the plugin's ``xb_ealstm``, each model in its own
process.

Each process builds one model (the reference shapes of ``ealstm_step.py``), runs ``--steps`` training steps the way
NH's training loop does (the previous step's predictions stay alive while the next forward pass runs), and prints
its peak resident set size (``ru_maxrss``) before and after the steps. ``xb_ealstm`` on the CPU trains batches
above ``CPU_FUSED_MAX_BATCH`` with :func:`nh_crossbasin.core.ealstm_sequence.ealstm_sequence`, whose buffers it keeps
between steps; this shows what that costs. Results: ``benchmarks/RESULTS.md``.

Example
-------
::

    OMP_NUM_THREADS=2 python benchmarks/ealstm_memory.py --batch-size 256
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import ealstm_step  # noqa: E402


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(model_name: str, args: argparse.Namespace) -> None:
    """Train ``model_name`` for ``args.steps`` steps in this process and print its peak memory."""
    step_args = argparse.Namespace(device="cpu", hidden_size=args.hidden_size, seq_length=args.seq_length,
                                   dynamic_inputs=5, static_inputs=27, evaluate=False)
    step = ealstm_step.TrainingStep(model_name, args.batch_size, step_args)
    before = peak_mib()
    for _ in range(args.steps):
        step.step()       # keeps the previous step's predictions through the next forward pass, as NH does
    print(f"| {args.batch_size} | {model_name} | {before:.0f} | {peak_mib():.0f} | {peak_mib() - before:.0f} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--seq-length", type=int, default=270)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--model", choices=("ealstm", "xb_ealstm"), default=None,
                        help="measure this model in this process (default: each model in a subprocess)")
    args = parser.parse_args(argv)
    if args.model:
        measure(args.model, args)
        return
    print("| batch | model | peak RSS before steps MiB | peak RSS after MiB | growth MiB |")
    print("|---|---|---|---|---|")
    for model_name in ("ealstm", "xb_ealstm"):
        command = [sys.executable, __file__, "--model", model_name, "--batch-size", str(args.batch_size),
                   "--hidden-size", str(args.hidden_size), "--seq-length", str(args.seq_length),
                   "--steps", str(args.steps)]
        print(subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
