"""``nh-xb compare``: paired comparison of NH run directories, printed as a table, with CDF and map figures.

Each RUN is a run directory, or several joined by commas or given as a glob pattern (quoted): a seed ensemble,
whose mean prediction per time step is evaluated. The first RUN is the baseline A; every other is compared with it.
"""
from __future__ import annotations

import argparse
import glob
import time
from pathlib import Path
from typing import List

NAME = "compare"


def add_parser(subparsers) -> None:
    """Register the sub-command."""
    parser = subparsers.add_parser(
        NAME, help="compare runs over their common basins (medians, share improved, Wilcoxon p, Cohen's d); "
                   "writes CDFs and maps",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="run directory; 'dir1,dir2' or a quoted glob 'runs/het_seed*' is a seed ensemble")
    parser.add_argument("--names", nargs="+", help="labels of the runs (default: directory names)")
    parser.add_argument("--period", choices=["train", "validation", "test"], default="test")
    parser.add_argument("--epoch", type=int, help="epoch of the results (default: each run's last saved weights)")
    parser.add_argument("--metrics", nargs="+", default=None,
                        help="NH metrics (default: NSE KGE Alpha-NSE Beta-NSE FHV FMS FLV)")
    parser.add_argument("--out", help="folder for figures and CSV tables (default: xb_compare_<date>_<time> next to "
                                      "the first run directory)")
    parser.add_argument("--attributes", help="basin attribute CSV (regions, gauge_lat/gauge_lon for maps); "
                                             "default: the first run's data set attributes, if NH 'generic'")
    parser.add_argument("--region-column", help="attribute column with the region of each basin, e.g. huc_02")
    parser.add_argument("--no-evaluate", action="store_true",
                        help="fail instead of running NH's evaluation when a run has no results")
    parser.add_argument("--overwrite", action="store_true", help="replace files of an earlier compare in --out")
    parser.add_argument("--gpu", type=int, help="GPU id for evaluations that are missing; < 0: CPU")


def expand_run(spec: str) -> List[Path]:
    """The run directories one RUN argument names (a directory, a comma-separated list or a glob pattern)."""
    dirs: List[Path] = []
    for part in (p for p in spec.split(",") if p):
        matches = sorted(glob.glob(part)) if glob.has_magic(part) else [part]
        dirs += [Path(m) for m in matches]
    missing = [str(d) for d in dirs if not (d / "config.yml").is_file()]
    if not dirs or missing:
        raise FileNotFoundError(f"'{spec}' names no NH run directory" +
                                (f" ({', '.join(missing)} has no config.yml)" if missing else ""))
    return dirs


def _attributes(args, first_run: Path):
    from nh_crossbasin.analysis import load_attribute_table, run_attributes
    if args.attributes:
        if not Path(args.attributes).is_file():
            raise FileNotFoundError(f"--attributes: file {args.attributes} not found")
        return load_attribute_table(args.attributes)
    try:
        return run_attributes(first_run)
    except (NotImplementedError, FileNotFoundError, ValueError) as err:
        if args.region_column:
            raise ValueError(f"--region-column needs attributes: {err}") from err
        print(f"(no basin attributes: {err}; no maps)")
        return None


def run(args: argparse.Namespace) -> None:
    """Compare the runs, print the tables and write the figures."""
    if len(args.runs) < 2:
        raise ValueError("give at least two runs (A and B)")
    specs = [expand_run(spec) for spec in args.runs]
    if args.names and len(args.names) != len(specs):
        raise ValueError(f"{len(args.names)} --names for {len(specs)} runs")
    out_dir = Path(args.out) if args.out else specs[0][0].resolve().parent / time.strftime("xb_compare_%Y%m%d_%H%M%S")

    from nh_crossbasin.analysis import DEFAULT_METRICS, compare_runs, coordinates, format_comparison, region_labels
    from nh_crossbasin.analysis.report import planned_files, unique_names

    attributes = _attributes(args, specs[0][0])
    regions = None
    if args.region_column:
        try:
            regions = region_labels(attributes, args.region_column)
        except KeyError as err:
            raise ValueError(f"--region-column: {err.args[0]}") from err
    location = coordinates(attributes) if attributes is not None else None

    names = unique_names(args.names or [_default_name(s) for s in specs])
    existing = [f for f in planned_files(names, location is not None) if (out_dir / f).exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"{out_dir} already holds {existing}; choose another --out or pass --overwrite")
    report = compare_runs([s if len(s) > 1 else s[0] for s in specs], names=names, period=args.period,
                          epoch=args.epoch, metrics=args.metrics or DEFAULT_METRICS, regions=regions,
                          coordinates=location, out_dir=out_dir, evaluate_missing=not args.no_evaluate, gpu=args.gpu)
    for name, table in report.comparisons.items():
        n = int(table.loc[table["region"] == "all", "n_basins"].max())
        print(f"\n{name} (B) vs {report.baseline} (A), {args.period} period, {n} common basins:")
        print(format_comparison(table))
    print(f"\nwrote {len(report.files)} files to {out_dir}: {', '.join(p.name for p in report.files)}")


def _default_name(spec: List[Path]) -> str:
    return spec[0].name if len(spec) == 1 else f"{spec[0].name} (ensemble of {len(spec)})"

