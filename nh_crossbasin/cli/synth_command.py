"""``nh-xb synth``: write a synthetic NH ``generic`` dataset with hidden hydrological regimes."""
from __future__ import annotations

import argparse

NAME = "synth"


def add_parser(subparsers) -> None:
    """Register the sub-command."""
    parser = subparsers.add_parser(NAME, help="generate synthetic basins (NH generic layout)")
    parser.add_argument("--out", required=True, help="output folder (must be empty or absent)")
    parser.add_argument("--basins", type=int, default=100, help="number of basins (default 100)")
    parser.add_argument("--regimes", type=int, default=2, help="number of hidden regimes (default 2)")
    parser.add_argument("--years", type=int, default=20, help="years of daily data (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--twins", action="store_true",
                        help="twin pairs: identical attributes and climate, opposite hidden regimes (even --basins, "
                             "--regimes 2); no model input tells the twins apart, so pooling truly hurts")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files this generator wrote before in --out (other files are kept)")


def run(args: argparse.Namespace) -> None:
    """Generate the data set and print where it went."""
    from nh_crossbasin.synth import generate_basins
    summary = generate_basins(args.out, n_basins=args.basins, n_regimes=args.regimes, years=args.years,
                              seed=args.seed, overwrite=args.overwrite, twins=args.twins)
    kind = f"{len(summary.basins) // 2} twin pairs, " if args.twins else ""
    print(f"wrote {len(summary.basins)} basins ({kind}{args.regimes} regimes, {args.years} years) to {summary.out_dir} "
          f"in {summary.elapsed_s:.1f} s")
