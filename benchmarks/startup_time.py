"""Start-up cost of the nh-crossbasin hook: `python -X importtime -c pass` with and without the package's start-up
files, in a throw-away venv so that nothing else differs.

The hook is what an installed nh-crossbasin adds to every Python process (``nh_crossbasin.pth`` runs
``_nh_crossbasin_startup.install()``); the plugin body, torch and NH are imported only when a process imports NH.

Usage: python benchmarks/startup_time.py [--repeats 40]
"""
from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

STARTUP_FILES = ("_nh_crossbasin_startup.py", "nh_crossbasin.pth", "nh_crossbasin.start")


def _measure_once(python: Path) -> tuple:
    start = time.perf_counter()
    proc = subprocess.run([str(python), "-X", "importtime", "-c", "pass"], capture_output=True, text=True, check=True)
    wall_ms = (time.perf_counter() - start) * 1e3
    rows = [re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line) for line in proc.stderr.splitlines()]
    rows = [r for r in rows if r]
    imports_us = sum(int(r.group(1)) for r in rows)  # sum of self times = all import work
    hook_us = sum(int(r.group(2)) for r in rows if r.group(4) == "_nh_crossbasin_startup")
    return wall_ms, imports_us, hook_us


def _make_venv(root: Path, with_hook: bool, purelib: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    if with_hook:
        site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip())
        for name in STARTUP_FILES:
            shutil.copy(purelib / name, site / name)
        # pip byte-compiles installed modules; do the same so that the hook is not re-compiled at every start
        subprocess.run([str(python), "-m", "py_compile", str(site / STARTUP_FILES[0])], check=True)
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    purelib = Path(sysconfig.get_paths()["purelib"])
    missing = [f for f in STARTUP_FILES if not (purelib / f).exists()]
    if missing:
        sys.exit(f"start-up files {missing} not in {purelib}: install the package first (make install)")
    with tempfile.TemporaryDirectory() as tmp:
        pythons = {False: _make_venv(Path(tmp) / "bare", False, purelib),
                   True: _make_venv(Path(tmp) / "hook", True, purelib)}
        samples = {False: [], True: []}
        for _ in range(args.repeats):  # interleaved, so that drift in machine load hits both alike
            for hook in (False, True):
                samples[hook].append(_measure_once(pythons[hook]))
    without, with_hook = ({"wall_ms": statistics.median(s[0] for s in samples[h]),
                           "imports_us": statistics.median(s[1] for s in samples[h]),
                           "hook_us": statistics.median(s[2] for s in samples[h])} for h in (False, True))
    print(f"python -X importtime -c pass, median of {args.repeats} runs ({sys.version.split()[0]})")
    print(f"{'':22s}{'wall ms':>10s}{'import us':>12s}{'hook us':>10s}")
    for label, row in (("without nh-crossbasin", without), ("with nh-crossbasin", with_hook)):
        print(f"{label:22s}{row['wall_ms']:10.1f}{row['imports_us']:12.0f}{row['hook_us']:10.0f}")
    print(f"added: {with_hook['wall_ms'] - without['wall_ms']:+.1f} ms wall, "
          f"{with_hook['imports_us'] - without['imports_us']:+.0f} us import time")


if __name__ == "__main__":
    main()
