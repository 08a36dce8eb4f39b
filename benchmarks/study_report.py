"""Tables of the accuracy study (``heterogeneous_vs_homogeneous.py``): the arm tables of a period, the test-period
report of the final configurations, and the export of the tidy per-basin results for committing."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from study_choices import final_configurations


def tables(out: Path, period: str, controls: dict, header: str, baseline: str = "homogeneous",
           keep: list = None) -> str:
    """Markdown arm tables (per (basin, seed) and per seed-ensemble) of a design folder (only the variants ``keep``,
    when given; the others with results of ``period`` are named in a line after the tables)."""
    from nh_crossbasin.experiments.summary import arm_table, format_arm_table
    suffix = "" if period == "test" else f"_{period}"
    text = []
    for kind, name in (("(basin, seed) pairs", f"results{suffix}.csv"),
                       ("seed-ensemble mean prediction, basin pairs", f"results{suffix}_ensemble.csv")):
        path = out / name
        if path.exists():
            table = pd.read_csv(path, dtype={"basin": str, "seed": str})
            left_out = sorted(set(table["variant"]) - set(keep or table["variant"]))
            table = table[table["variant"].isin(keep or table["variant"])]
            text.append(f"{header}, {period} period, {kind}:\n\n"
                        + format_arm_table(arm_table(table, baseline, controls)))
            text.append("the same, paired differences in KGE:\n\n"
                        + format_arm_table(arm_table(table, baseline, controls, metrics=("KGE", "NSE"))))
            if kind.startswith("(basin"):
                per_seed = table.groupby(["variant", "seed"])["NSE"].median().unstack().round(3)
                text.append(f"median {period} NSE per seed:\n\n" + per_seed.to_string())
                if left_out:
                    text.append(f"not final configurations (not chosen on validation, or evaluated on {period} before "
                                f"they were candidates), left out of these tables: {', '.join(left_out)}")
    return "\n\n".join(text)


def export(out: Path, target: Path) -> None:
    """Tidy per-basin tables of every finished run of a study folder (``results[_validation][_ensemble].csv`` of the
    design, ``ground_truth_...`` of the twin ground truth, ``learning_rate_<schedule>_...`` of the learning-rate
    candidates; a stage still running contributes its finished runs) and ``choices*.json``, for committing: metrics
    rounded to 5 decimals, no run paths."""
    import nh_crossbasin.experiments.experiment as ex
    from nh_crossbasin.files import replace_keeping_previous
    if not (out / "design" / "experiment.json").exists():
        raise SystemExit(f"{out} holds no study (no design/experiment.json)")
    target.mkdir(parents=True, exist_ok=True)
    written = []
    lr_designs = [(f"learning_rate/{d.parent.name}/design", f"learning_rate_{d.parent.name}_")
                  for d in sorted((out / "learning_rate").glob("*/design"))]
    for design, prefix in [("design", ""), ("regimes", "ground_truth_")] + lr_designs:
        if not (out / design / "experiment.json").exists():
            continue
        for period in ("validation", "test"):
            suffix = "" if period == "test" else f"_{period}"
            for kind, collect in (("", ex.collect_results), ("_ensemble", ex.collect_ensembles)):
                table = collect(out / design, period)
                if table.empty:
                    continue
                table = table.drop(columns=[c for c in ("run_dir", "run") if c in table]).round(5)
                name = f"{prefix}results{suffix}{kind}.csv"
                replace_keeping_previous(target / name, table.to_csv(index=False))
                written.append(name)
    for name in ("choices.json", "choices_learning_rate.json"):
        if (out / name).exists():
            replace_keeping_previous(target / name, (out / name).read_text())
            written.append(name)
    print(f"{target}: {', '.join(written)}")


def report(out: Path) -> None:
    """Print the test-period tables of the final configurations (and of the twin ground truth, when the study has
    one) and write them to ``OUT/summary.md``."""
    design, ground_truth = out / "design", out / "regimes"
    controls = json.loads((design / "experiment.json").read_text())["controls"]
    text = [tables(design, "test", controls, "final configurations (chosen on validation)",
                   keep=final_configurations(json.loads((out / "choices.json").read_text()), controls))]
    if (ground_truth / "experiment.json").exists():
        text.append(tables(ground_truth, "test", {}, "ground truth: one pooled model (global) vs one model per hidden "
                                                     "regime (local)", baseline="global"))
    print("\n\n".join(text))
    (out / "summary.md").write_text("\n\n".join(text) + "\n")
