"""Smoke test of ``benchmarks/ealstm_step.py`` at toy sizes (no timing asserts)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "ealstm_step.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("ealstm_step", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_prints_table_and_appends_results(tmp_path, capsys):
    benchmark = load_benchmark()
    results = tmp_path / "RESULTS.md"
    argv = ["--device", "cpu", "--batch-sizes", "4", "3", "--seq-length", "12", "--hidden-size", "8",
            "--warmup", "1", "--repeats", "2", "--threads", "1", "--results", str(results)]
    threads = torch.get_num_threads()
    try:
        benchmark.main(argv)
        printed = capsys.readouterr().out
        benchmark.main(argv[:-2] + ["--models", "xb_ealstm", "xb_ealstm_nh_head", "--results", str(results)])
        ablation = capsys.readouterr().out
        benchmark.main(argv[:-2] + ["--evaluate", "--results", str(results)])
        evaluated = capsys.readouterr().out
    finally:
        torch.set_num_threads(threads)
    for model in ("cudalstm", "ealstm", "xb_ealstm"):
        assert f"| 4 | {model} |" in printed and f"| 3 | {model} |" in printed
    assert "| 3 | xb_ealstm_nh_head |" in ablation
    text = results.read_text()
    assert text.startswith("# Benchmark results")
    assert "benchmarks/ealstm_step.py --device cpu --batch-sizes 4 3" in text and "| 3 | xb_ealstm |" in text
    assert results.read_text().count("## EA-LSTM training step") == 2
    assert evaluated.startswith("evaluation forward (no gradients)") and "| 3 | xb_ealstm |" in evaluated
    assert results.read_text().count("## EA-LSTM evaluation forward") == 1


def test_cpu_routes_benchmark_prints_routes_that_agree(capsys):
    """``benchmarks/ealstm_cpu_routes.py`` at toy sizes: a row per batch and gradient mode, routes that agree."""
    spec = importlib.util.spec_from_file_location("ealstm_cpu_routes", BENCHMARK.parent / "ealstm_cpu_routes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--batch-sizes", "3", "40", "--seq", "7", "--hidden", "5", "--repeats", "1"])
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| 3 ")
            or line.startswith("| 40 ")]
    assert [(r[1].strip(), r[2].strip()) for r in rows] == [("3", "yes"), ("3", "no"), ("40", "yes"), ("40", "no")]
    assert all(float(r[8]) < 1e-5 for r in rows)   # the three routes compute the same recurrence


def test_memory_benchmark_prints_a_row_per_model(capsys):
    """``benchmarks/ealstm_memory.py`` at toy sizes (a batch that takes the CPU training node): one row per model,
    each from its own process, with a peak that did not shrink."""
    spec = importlib.util.spec_from_file_location("ealstm_memory", BENCHMARK.parent / "ealstm_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--batch-size", "40", "--hidden-size", "8", "--seq-length", "20", "--steps", "2"])
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| 40 ")]
    assert [r[2].strip() for r in rows] == ["ealstm", "xb_ealstm"]
    assert all(float(r[4]) >= float(r[3]) > 0 for r in rows)


def test_node_ab_benchmark_compares_a_commit_with_the_installed_package(capsys):
    """``benchmarks/ealstm_node_ab.py`` at toy sizes against HEAD: one row per batch, the same recurrence."""
    import subprocess
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=BENCHMARK.parent, capture_output=True).returncode != 0:
        import pytest
        pytest.skip("benchmarks/ealstm_node_ab.py reads the base commit with git; this is not a git checkout")
    spec = importlib.util.spec_from_file_location("ealstm_node_ab", BENCHMARK.parent / "ealstm_node_ab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--base", "HEAD", "--batch-sizes", "3", "5", "--seq", "6", "--hidden", "4", "--warmup", "0",
                 "--repeats", "1"])
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith(("| 3 ", "| 5 "))]
    assert [r[1].strip() for r in rows] == ["3", "5"]
    assert all(float(r[8]) < 1e-5 for r in rows)
