"""Experiment designs: the configs and basin files each design writes (synthetic data, known memberships)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from ruamel.yaml import YAML

from conftest import require_caravan, synth_config, write_yaml
from nh_crossbasin.experiments.designs import arm_family, candidate_arms, similar_vs_dissimilar, with_controls
from nh_crossbasin.experiments.experiment import (add_finetune_arms, add_global_variants, build_experiment,
                                                  finetune_entries)
from nh_crossbasin.experiments.regions import region_scheme
from nh_crossbasin.experiments.specialize import random_partition, specialize


@pytest.fixture
def base_config(tmp_path, synth_data):
    return write_yaml(tmp_path / "base.yml", synth_config(synth_data, tmp_path / "unused", loss="xb_nse_star"))


def _runs(out):
    return {e["name"]: e for e in json.loads((out / "experiment.json").read_text())["runs"]}


def _basins(path):
    return Path(path).read_text().split()


def _config(entry):
    return YAML(typ="safe").load(Path(entry["config"]).read_text())


def test_global_vs_local_from_a_region_file(tmp_path, base_config, synth_data):
    out = tmp_path / "gvl"
    spec = f"{synth_data.out_dir / 'ground_truth.csv'}:regime"
    build_experiment("global-vs-local", base_config, spec, out, n_seeds=2)
    runs = _runs(out)
    assert set(runs) == {f"{n}_seed{s}" for n in ("global", "local_0", "local_1") for s in (1, 2)}
    for regime in (0, 1):
        entry = runs[f"local_{regime}_seed1"]
        assert sorted(_basins(entry["train_basin_file"])) == sorted(synth_data.basins_of_regime(regime))
        assert _basins(entry["eval_basin_file"]) == _basins(entry["train_basin_file"])
    glob = runs["global_seed2"]
    assert sorted(_basins(glob["eval_basin_file"])) == sorted(synth_data.basins)
    cfg = _config(glob)
    assert cfg["seed"] == 2 and cfg["test_basin_file"] == str(Path(glob["eval_basin_file"]).resolve())
    assert cfg["run_dir"].endswith("runs/global_seed2") and cfg["loss"] == "xb_nse_star"
    # writing the same design again is a no-op (resumable); a different one into the same folder is refused
    build_experiment("global-vs-local", base_config, spec, out, n_seeds=2)
    with pytest.raises(FileExistsError, match="choose a new --out"):
        build_experiment("global-vs-local", base_config, spec, out, n_seeds=3)


def test_single_vs_regional_and_homogeneous_vs_heterogeneous(tmp_path, base_config, synth_data):
    out = tmp_path / "svr"
    build_experiment("single-vs-regional", base_config, None, out)
    runs = _runs(out)
    assert len(runs) == 1 + len(synth_data.basins)
    for basin in synth_data.basins:
        assert _basins(runs[f"single_{basin}_seed1"]["train_basin_file"]) == [basin]
    out = tmp_path / "hvh"
    build_experiment("homogeneous-vs-heterogeneous", base_config, f"{synth_data.out_dir / 'ground_truth.csv'}:regime",
                     out)
    runs = _runs(out)
    assert _config(runs["homogeneous_seed1"])["xb_sampler"] == "uniform"
    assert _config(runs["influence_global_seed1"])["xb_sampler"] == "influence"
    roi = runs["influence_roi_1_seed1"]
    assert sorted(_basins(_config(roi)["xb_influence_targets_file"])) == sorted(synth_data.basins_of_regime(1))
    assert sorted(_basins(roi["train_basin_file"])) == sorted(synth_data.basins)
    assert _basins(roi["eval_basin_file"]) == _basins(_config(roi)["xb_influence_targets_file"])


def test_extra_variants_are_compared_with_the_arm_that_differs_only_in_the_weights(tmp_path, base_config):
    out = tmp_path / "variants"
    build_experiment("homogeneous-vs-heterogeneous", base_config, None, out, extra_variants={
        "influence_global_tau0.3": {"xb_influence_temperature": 0.3},
        "influence_loss": {"xb_influence_apply": "loss"}})
    manifest = json.loads((out / "experiment.json").read_text())
    # weights in the draw: the draw with uniform weights; weights in the loss: NH's shuffle with unit weights
    assert manifest["controls"]["influence_global_tau0.3"] == "uniform_replacement"
    assert manifest["controls"]["influence_loss"] == "homogeneous"
    runs = _runs(out)
    assert _config(runs["influence_loss_seed1"])["xb_influence_apply"] == "loss"
    assert _config(runs["influence_loss_seed1"])["xb_sampler"] == "influence"


def test_finetune_arms_each_have_the_control_that_changes_one_thing(tmp_path, base_config):
    out = tmp_path / "finetune_arms"
    build_experiment("homogeneous-vs-heterogeneous", base_config, None, out, finetune_epochs=1, clusters=2)
    manifest = json.loads((out / "experiment.json").read_text())
    samplers = {arm: spec["sampler"] for arm, spec in manifest["finetune"]["arms"].items()}
    assert samplers == {"specialize_clusters": "influence", "finetune_uniform": "uniform", "finetune_local": "local",
                        "finetune_local_random": "local_random"}
    controls = manifest["controls"]
    # influence weights vs the same fine-tune with NH's shuffle; the clusters vs a random split of the same sizes
    assert controls["specialize_clusters"] == "finetune_uniform"
    assert controls["finetune_local"] == "finetune_local_random"
    assert controls["finetune_local_random"] == "finetune_uniform"
    assert controls["finetune_uniform"] == "homogeneous"


def test_candidate_numbers_of_clusters_each_come_with_their_control_at_the_same_k(tmp_path, base_config):
    out = tmp_path / "k_candidates"
    # base config: E = 1 pooled epoch; F = 1, so the study's total is 2 epochs and F = 2 starts from epoch 0 (none)
    with pytest.raises(ValueError, match="candidate F = 2"):
        build_experiment("homogeneous-vs-heterogeneous", base_config, None, tmp_path / "bad", finetune_epochs=1,
                         finetune_epoch_counts=[1, 2])
    build_experiment("homogeneous-vs-heterogeneous", base_config, None, out, finetune_epochs=1, clusters=2,
                     cluster_counts=[2, 3])
    manifest = json.loads((out / "experiment.json").read_text())
    arms, controls = manifest["finetune"]["arms"], manifest["controls"]
    # the study's own K adds nothing; K = 3 adds the three clustered arms (finetune_uniform does not depend on K)
    assert set(arms) - {"specialize_clusters", "finetune_uniform", "finetune_local", "finetune_local_random"} == {
        "specialize_clusters_k3", "finetune_local_k3", "finetune_local_random_k3"}
    assert controls["finetune_local_k3"] == "finetune_local_random_k3"
    assert controls["finetune_local_random_k3"] == "finetune_uniform"
    assert controls["specialize_clusters_k3"] == "finetune_uniform"
    entries = {e["variant"]: e for e in finetune_entries(out, manifest)}
    assert {v: (e["sampler"], e["clusters"], e["epochs"], e["pooled_epoch"]) for v, e in entries.items()} == {
        "specialize_clusters": ("influence", 2, 1, None), "finetune_uniform": ("uniform", 2, 1, None),
        "finetune_local": ("local", 2, 1, None), "finetune_local_random": ("local_random", 2, 1, None),
        "specialize_clusters_k3": ("influence", 3, 1, None), "finetune_local_k3": ("local", 3, 1, None),
        "finetune_local_random_k3": ("local_random", 3, 1, None)}
    # F candidates (E = 4, F = 1: a total of 5 epochs): F = 2 starts from the pooled epoch 3, every arm at F = 2,
    # each with its control at F = 2
    f_arms, f_controls = candidate_arms(finetune_epochs=[2], pooled_epochs=4, study_finetune_epochs=1)
    assert {a: (s["sampler"], s["epochs"], s["pooled_epoch"]) for a, s in f_arms.items()} == {
        "specialize_clusters_f2": ("influence", 2, 3), "finetune_uniform_f2": ("uniform", 2, 3),
        "finetune_local_f2": ("local", 2, 3), "finetune_local_random_f2": ("local_random", 2, 3)}
    assert f_controls == {"specialize_clusters_f2": "finetune_uniform_f2", "finetune_uniform_f2": "homogeneous",
                          "finetune_local_f2": "finetune_local_random_f2",
                          "finetune_local_random_f2": "finetune_uniform_f2"}
    for bad in ([0], [5]):  # below the study's F; no pooled epoch left to start from
        with pytest.raises(ValueError, match="--finetune-epochs"):
            candidate_arms(finetune_epochs=bad, pooled_epochs=4, study_finetune_epochs=1)
    # the final configurations of a choice: the chosen arm and its chain of controls, each at the chosen K
    assert with_controls(["finetune_local_k3", "specialize_clusters"], controls) == [
        "finetune_local_k3", "finetune_local_random_k3", "finetune_uniform", "homogeneous", "specialize_clusters"]
    assert [arm_family(v) for v in ("finetune_local_k3", "finetune_local_random_k3", "specialize_clusters_tau0.3_k2",
                                    "influence_global_tau0.3_mix0.3", "finetune_uniform_f2", "finetune_local")] == [
        "finetune_local", "finetune_local_random", "specialize_clusters", "influence_global", "finetune_uniform",
        "finetune_local"]
    with pytest.raises(ValueError, match="at least 1"):
        candidate_arms([0])


def test_new_arms_join_a_study_begun_without_them_and_nothing_is_lost(tmp_path, base_config):
    out = tmp_path / "resumed"
    build_experiment("homogeneous-vs-heterogeneous", base_config, None, out, finetune_epochs=1, clusters=2)
    before = (out / "experiment.json").read_text()
    arms, controls = candidate_arms([4])
    assert add_finetune_arms(out, arms, controls) == sorted(arms, key=list(arms).index)
    manifest = json.loads((out / "experiment.json").read_text())
    assert (out / "experiment.previous_1.json").read_text() == before
    assert manifest["runs"] == json.loads(before)["runs"] and manifest["finetune"]["arms"]["finetune_local_k4"] == {
        "sampler": "local", "clusters": 4, "overrides": {}}
    assert manifest["controls"]["finetune_local_k4"] == "finetune_local_random_k4"
    # asking again adds nothing and keeps no further copy; an arm of the same name but another K is refused
    assert add_finetune_arms(out, arms, controls) == []
    assert not (out / "experiment.previous_2.json").exists()
    clash = {"finetune_local_k4": dict(arms["finetune_local_k4"], clusters=5)}
    with pytest.raises(ValueError, match="finetune_local_k4"):
        add_finetune_arms(out, clash, controls)
    plain = tmp_path / "no_finetune"
    build_experiment("homogeneous-vs-heterogeneous", base_config, None, plain)
    with pytest.raises(ValueError, match="no fine-tune arms"):
        add_finetune_arms(plain, arms, controls)


def test_a_global_variant_joins_a_study_begun_without_it_with_the_configs_of_a_fresh_build(tmp_path, base_config):
    variant = {"influence_global_mix0.3": {"xb_influence_uniform_mix": 0.3}}
    fresh, resumed = tmp_path / "fresh", tmp_path / "resumed"
    build_experiment("homogeneous-vs-heterogeneous", base_config, None, fresh, n_seeds=2, finetune_epochs=1,
                     extra_variants=variant)
    build_experiment("homogeneous-vs-heterogeneous", base_config, None, resumed, n_seeds=2, finetune_epochs=1)
    before = (resumed / "experiment.json").read_text()
    assert add_global_variants(resumed, variant) == ["influence_global_mix0.3"]
    assert (resumed / "experiment.previous_1.json").read_text() == before
    runs = _runs(resumed)
    assert {n: e for n, e in runs.items() if "mix" not in n} == {
        e["name"]: e for e in json.loads(before)["runs"]}
    for seed in (1, 2):
        name = f"influence_global_mix0.3_seed{seed}"
        config = _config(runs[name])
        assert config["xb_influence_uniform_mix"] == 0.3 and config["epochs"] == 2  # E + F, like the global arms
        assert Path(runs[name]["config"]).read_text().replace(str(resumed.resolve()), "OUT") == Path(
            _runs(fresh)[name]["config"]).read_text().replace(str(fresh.resolve()), "OUT")
    manifest = json.loads((resumed / "experiment.json").read_text())
    assert manifest["controls"]["influence_global_mix0.3"] == "uniform_replacement"
    assert add_global_variants(resumed, variant) == []  # again: nothing added, no further copy
    assert not (resumed / "experiment.previous_2.json").exists()


def test_random_partition_keeps_unit_sizes_and_members_and_mixes_them():
    clusters = {"cluster_0": [f"a{i}" for i in range(12)], "cluster_1": [f"b{i}" for i in range(8)],
                "cluster_2": [f"c{i}" for i in range(4)]}
    dealt = random_partition(clusters, seed=1)
    assert {k: len(v) for k, v in dealt.items()} == {k: len(v) for k, v in clusters.items()}
    assert sorted(t for v in dealt.values() for t in v) == sorted(t for v in clusters.values() for t in v)
    assert dealt == random_partition(clusters, seed=1)
    assert dealt != random_partition(clusters, seed=2)
    # mixed: no unit keeps (nearly) its cluster; the identity partition is the negative control of this assertion
    for partition, mixed in ((dealt, True), (clusters, False)):
        kept = max(len(set(partition[k]) & set(clusters[k])) / len(clusters[k]) for k in clusters)
        assert (kept < 0.9) == mixed


def test_a_random_partition_needs_clusters(tmp_path):
    with pytest.raises(ValueError, match="local_random needs --clusters"):
        specialize(tmp_path / "no_run", tmp_path / "targets.txt", tmp_path / "out", sampler="local_random")
    assert not (tmp_path / "out").exists()


def _hierarchy(synth_data, tmp_path):
    """Coarse = regime; fine = regime/(a|b|c) (4/4/4 per regime for 12 basins)."""
    rows = []
    for regime in (0, 1):
        for i, basin in enumerate(sorted(synth_data.basins_of_regime(regime))):
            rows.append({"basin": basin, "coarse": f"r{regime}", "fine": "abc"[i % 3]})
    path = tmp_path / "regions.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_similar_vs_dissimilar_memberships_and_exact_size_control(tmp_path, synth_data):
    path = _hierarchy(synth_data, tmp_path)
    scheme = region_scheme(f"{path}:coarse>fine", synth_data.basins)
    attributes = pd.read_csv(synth_data.out_dir / "attributes" / "attributes.csv", dtype={"basin_id": str})
    attributes = attributes.set_index("basin_id")
    runs = {r.name: r for r in similar_vs_dissimilar(scheme, attributes, synth_data.static_attributes,
                                                      rois=["r0/a"], seed=5)}
    local = set(scheme.members("r0/a", 1))
    assert set(runs["roi_r0-a_local"].train_basins) == local and len(local) == 2
    close = set(runs["roi_r0-a_local+close"].train_basins) - local
    assert close == set(scheme.members("r0/b", 1)) | set(scheme.members("r0/c", 1))
    for kind in ("far", "dissimilar"):
        added = set(runs[f"roi_r0-a_local+{kind}"].train_basins) - local
        assert added and all(b in set(synth_data.basins_of_regime(1)) for b in added)  # outside the parent
        assert len(added) >= len(close)
    sized = [set(runs[f"roi_r0-a_local+{k}_sized"].train_basins) - local for k in ("close", "far", "dissimilar")]
    assert len({len(s) for s in sized}) == 1 and len(sized[0]) == min(
        len(set(runs[f"roi_r0-a_local+{k}"].train_basins) - local) for k in ("close", "far", "dissimilar"))
    assert all(set(r.eval_basins) == local for r in runs.values())
    # far = most similar outside the parent, dissimilar = least similar: their mean distance is ordered
    standardised = (attributes - attributes.mean()) / attributes.std(ddof=0)
    centre = standardised.loc[sorted(local), synth_data.static_attributes].mean()
    distance = {k: ((standardised.loc[sorted(set(runs[f"roi_r0-a_local+{k}"].train_basins) - local),
                                      synth_data.static_attributes] - centre) ** 2).sum(axis=1).mean()
                for k in ("far", "dissimilar")}
    assert distance["far"] <= distance["dissimilar"]
    with pytest.raises(ValueError, match="hierarchical"):
        similar_vs_dissimilar(region_scheme(f"{path}:coarse", synth_data.basins), attributes, ["p_mean"])
    with pytest.raises(ValueError, match=r"--roi \['r9/z'\]"):
        similar_vs_dissimilar(scheme, attributes, ["p_mean"], rois=["r9/z"])


def test_region_errors_name_the_column(tmp_path, synth_data):
    path = _hierarchy(synth_data, tmp_path)
    with pytest.raises(ValueError, match=r"columns \['huc'\] are not in .*available: \['coarse', 'fine'\]"):
        region_scheme(f"{path}:huc", synth_data.basins)


def test_real_region_columns_from_the_dataset_attributes(tmp_path):
    data = require_caravan()
    import nh_crossbasin
    nh_crossbasin.register()
    from neuralhydrology.utils.config import Config
    from nh_crossbasin.nh_adapter import raw_attributes
    cfg = Config({"dataset": "generic", "data_dir": str(data), "target_variables": ["streamflow"],
                  "dynamic_inputs": ["total_precipitation_sum"]})
    basins = (data / "basins_dev.txt").read_text().split()
    attributes = raw_attributes(cfg, basins)
    scheme = region_scheme("clz_cl_smj>tbi_cl_smj", basins, attributes)
    assert scheme.table.shape == (len(basins), 2)
    assert all(fine.startswith(coarse + "/") for coarse, fine in scheme.table.itertuples(index=False))
    huc = region_scheme("huc_02", basins, attributes)
    assert len(huc.regions()) == 18
