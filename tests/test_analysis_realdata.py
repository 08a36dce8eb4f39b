"""``nh-xb compare`` on real CAMELS-US basins: regions (``huc_02``) and gauge locations come from the data set's own
attribute files. Skipped when ../shared/data is absent."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import caravan_config, require_caravan, run_cli, train_in_process

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def caravan_runs(tmp_path_factory):
    require_caravan()
    root = tmp_path_factory.mktemp("caravan_analysis")
    return [train_in_process(caravan_config(root, experiment_name=f"seed{seed}", seed=seed)) for seed in (1, 2)]


def test_compare_real_runs_by_region_with_maps(caravan_runs, tmp_path):
    from nh_crossbasin import analysis as xa

    data = require_caravan()
    out = tmp_path / "compare"
    proc = run_cli(["nh-xb", "compare", *caravan_runs, "--out", out, "--region-column", "huc_02"], cwd=tmp_path)
    assert "8 common basins" in proc.stdout
    assert (out / f"map_NSE_{caravan_runs[1].name}_vs_{caravan_runs[0].name}.png").is_file()
    comparison = pd.read_csv(out / "comparison.csv")
    attributes = xa.load_attribute_table(data / "attributes" / "camels_attributes_v2.csv")
    basins = [b for b in (data / "basins_ci.txt").read_text().split() if b]
    regions = xa.region_labels(attributes, "huc_02").loc[basins]
    assert set(comparison["region"].astype(str)) == {"all"} | {str(r) for r in regions}
    expected = xa.paired_comparison(*(xa.basin_metrics(r, progress=False) for r in caravan_runs), regions=regions)
    np.testing.assert_allclose(comparison["median_diff"], expected["median_diff"], rtol=1e-9)
