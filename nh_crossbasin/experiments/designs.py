"""The experiment designs of the field as lists of runs (which basins train, which are evaluated, what differs).

- ``global-vs-local``: one model on all regions vs one model per region, each evaluated on the same basins
  (each region's basins);
- ``similar-vs-dissimilar``: for each region of interest (a region on the finest level of a hierarchical scheme),
  a model trained on the region alone (``local``), plus its hierarchical siblings (``local+close``: the other
  regions of the same parent), plus the regions outside the parent that are closest in mean standardised static
  attributes (``local+far``: similar but far in the hierarchy), or plus those farthest in attributes
  (``local+dissimilar``). The added sets are grown region by region until they hold at least as many basins as
  the close set; with size control, each added set is randomly subsampled to the size of the smallest one
  (``..._sized``), so that the amount of added data is equal. All are evaluated on the region of interest;
- ``single-vs-regional``: one model per basin vs one pooled model;
- ``homogeneous-vs-heterogeneous``: NH's shuffle vs the influence sampler, globally and with each region as the
  sampler's region of interest (evaluated on that region), each with the control that changes only the weights
  (``uniform_replacement``: the same weighted draw with uniform weights). With fine-tune epochs ``F``, a pooled run of
  the base config's ``E`` epochs is the start of four fine-tune arms (run by the experiment runner after the
  pooled runs): per-cluster specialisation (``specialize_clusters``), the same fine-tune with NH's shuffle
  (``finetune_uniform``), with each cluster's own basins only (``finetune_local``), and with the basins of a random
  partition of the same sizes only (``finetune_local_random``, the control of ``finetune_local``); the global arms
  then train ``E + F`` epochs, so that every arm makes the same number of updates.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from nh_crossbasin.experiments.regions import RegionScheme, region_centroids

DESIGNS = ("global-vs-local", "similar-vs-dissimilar", "single-vs-regional", "homogeneous-vs-heterogeneous")
#: fine-tune arms of homogeneous-vs-heterogeneous: arm -> ``nh-xb specialize --sampler``
FINETUNE_ARMS = {"specialize_clusters": "influence", "finetune_uniform": "uniform", "finetune_local": "local",
                 "finetune_local_random": "local_random"}
#: each variant's control: the arm that differs from it only in the thing under test
CONTROLS = {"uniform_replacement": "homogeneous", "influence_global": "uniform_replacement",
            "influence_roi": "uniform_replacement", "specialize_clusters": "finetune_uniform",
            "finetune_local": "finetune_local_random", "finetune_local_random": "finetune_uniform",
            "finetune_uniform": "homogeneous"}


#: the fine-tune arms whose units are the influence clusters, so that K (the number of clusters) changes them
CLUSTERED_ARMS = ("specialize_clusters", "finetune_local", "finetune_local_random")


def candidate_arms(cluster_counts: Sequence[int] = (), finetune_epochs: Sequence[int] = (), pooled_epochs: int = 0,
                   study_finetune_epochs: int = 1) -> tuple:
    """Fine-tune arms at further numbers of clusters K or fine-tune epochs F, for choosing them on validation.

    - For each ``K``: ``<arm>_k<K>`` of every arm of :data:`CLUSTERED_ARMS` (``finetune_uniform`` fine-tunes one
      model for all targets: K does not change it).
    - For each ``F`` (at least the study's ``F``): ``<arm>_f<F>`` of every fine-tune arm, starting from the pooled
      run's weights of epoch ``E + F_study - F`` (``pooled_epoch``), so that every arm keeps the study's total of
      ``E + F_study`` epochs of updates. A smaller ``F`` would need a longer pooled run than the study trained.

    Each arm's control is the arm at the same K or F that :data:`CONTROLS` names (``finetune_local_k2`` ->
    ``finetune_local_random_k2``), or the control itself where it does not depend on that setting.

    Parameters
    ----------
    pooled_epochs, study_finetune_epochs : int
        The study's ``E`` (epochs of the pooled run) and ``F``; needed with ``finetune_epochs``.

    Returns
    -------
    tuple of dict
        ``({arm: {"sampler", "overrides"[, "clusters"][, "epochs", "pooled_epoch"]}}, {arm: control})``.

    Raises
    ------
    ValueError
        For a K below 1, or an F below the study's F or above its total of epochs.
    """
    arms, controls = {}, {}
    settings = [(f"_k{int(k)}", {"clusters": int(k)}, CLUSTERED_ARMS) for k in cluster_counts]
    for k in cluster_counts:
        if int(k) < 1:
            raise ValueError(f"--clusters: every number of clusters must be at least 1, got {k}")
    total = int(pooled_epochs) + int(study_finetune_epochs)
    for f in finetune_epochs:
        if not int(study_finetune_epochs) <= int(f) < total:
            raise ValueError(f"--finetune-epochs: candidate F = {f} must lie between the study's F = "
                             f"{study_finetune_epochs} and its total of {total} epochs minus one (a smaller F needs a "
                             f"longer pooled run than the study's E = {pooled_epochs})")
        settings.append((f"_f{int(f)}", {"epochs": int(f), "pooled_epoch": total - int(f)}, tuple(FINETUNE_ARMS)))
    for suffix, spec, members in settings:
        for arm in members:
            arms[arm + suffix] = {"sampler": FINETUNE_ARMS[arm], **spec, "overrides": {}}
            control = CONTROLS[arm]
            controls[arm + suffix] = control + suffix if control in members else control
    return arms, controls


def finetune_arms(extra_variants: Optional[Dict[str, dict]] = None, cluster_counts: Sequence[int] = (),
                  finetune_epoch_counts: Sequence[int] = (), clusters: int = 2, pooled_epochs: int = 0,
                  finetune_epochs: int = 1) -> tuple:
    """The fine-tune arms of ``homogeneous-vs-heterogeneous`` and their controls: the arms of :data:`FINETUNE_ARMS`,
    further per-cluster specialisation variants (``{variant: overrides}``, influence weights, controlled by
    ``finetune_uniform``) and the arms at further K or F (:func:`candidate_arms`; the study's own ``clusters`` and
    ``finetune_epochs`` among the counts add nothing).

    Returns
    -------
    tuple of dict
        ``({arm: spec}, {arm: control})`` as :func:`candidate_arms` returns them.
    """
    arms = {arm: {"sampler": sampler, "overrides": {}} for arm, sampler in FINETUNE_ARMS.items()}
    extra_variants = {safe_name(v): dict(o) for v, o in (extra_variants or {}).items()}
    arms.update({v: {"sampler": "influence", "overrides": o} for v, o in extra_variants.items()})
    controls = dict(CONTROLS, **{v: "finetune_uniform" for v in extra_variants})
    more, more_controls = candidate_arms([k for k in cluster_counts if int(k) != int(clusters)],
                                         [f for f in finetune_epoch_counts if int(f) != int(finetune_epochs)],
                                         pooled_epochs, finetune_epochs)
    return dict(arms, **more), dict(controls, **more_controls)


def arm_family(variant: str) -> str:
    """The arm a candidate variant belongs to: its name without the candidate suffixes ``_tau<τ>``, ``_mix<ε>``,
    ``_k<K>`` and ``_f<F>`` (``specialize_clusters_tau0.3_k2`` -> ``specialize_clusters``;
    ``finetune_local_random_k2`` -> ``finetune_local_random``, not ``finetune_local``)."""
    return re.sub(r"(_(tau|mix|k|f)[0-9.]+)+$", "", variant)


def with_controls(variants: Sequence[str], controls: Dict[str, str]) -> List[str]:
    """``variants`` and, recursively, their controls (``finetune_local_k2`` -> ``finetune_local_random_k2`` ->
    ``finetune_uniform`` -> ``homogeneous``), in that order, each once."""
    result = []
    for variant in variants:
        while variant and variant not in result:
            result.append(variant)
            variant = controls.get(variant)
    return result


def variant_control(overrides: dict) -> str:
    """Control of an extra global influence variant: ``uniform_replacement`` (the same draw mechanics with uniform
    weights), or ``homogeneous`` (NH's shuffle, unit weights) when the weights act in the loss
    (``xb_influence_apply: loss``) and the draw is NH's shuffle."""
    return "homogeneous" if overrides.get("xb_influence_apply") == "loss" else "uniform_replacement"


@dataclass(frozen=True)
class RunSpec:
    """One model to train and evaluate.

    Attributes
    ----------
    name : str
        Unique, file-name-safe run name.
    variant : str
        What the run stands for in the design (``global``, ``local``, ``local+close_sized``, ...).
    group : str
        Comparison group: runs of the same group are evaluated on the same basins.
    train_basins, eval_basins : tuple of str
        Training and evaluation (test) basins.
    overrides : dict
        Config keys that differ from the base config (besides basin files, names and seeds).
    """

    name: str
    variant: str
    group: str
    train_basins: tuple
    eval_basins: tuple
    overrides: dict = field(default_factory=dict)


def safe_name(text: str) -> str:
    """``text`` with every character other than letters, digits, - _ . replaced by -, for file names."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in str(text))


def global_vs_local(scheme: RegionScheme, level: int = 0) -> List[RunSpec]:
    """One global run (all basins) and one local run per region at ``level``; the global run is evaluated on all
    basins, so every basin has a global and a local prediction."""
    basins = tuple(scheme.table.index)
    runs = [RunSpec("global", "global", "all", basins, basins)]
    for region in scheme.regions(level):
        members = tuple(scheme.members(region, level))
        runs.append(RunSpec(f"local_{safe_name(region)}", "local", region, members, members))
    return runs


def single_vs_regional(basins: Sequence[str]) -> List[RunSpec]:
    """One pooled run and one run per basin."""
    basins = tuple(basins)
    runs = [RunSpec("regional", "regional", "all", basins, basins)]
    runs += [RunSpec(f"single_{safe_name(b)}", "single", b, (b,), (b,)) for b in basins]
    return runs


def homogeneous_vs_heterogeneous(scheme: Optional[RegionScheme], basins: Sequence[str], level: int = 0,
                                 targets_files: Optional[Dict[str, str]] = None, base_epochs: Optional[int] = None,
                                 finetune_epochs: int = 0,
                                 extra_variants: Optional[Dict[str, dict]] = None) -> List[RunSpec]:
    """NH's shuffle vs the influence sampler (global, and one run per region of interest), with their controls.

    ``targets_files`` maps each region to the basin file the sampler uses as ``xb_influence_targets_file``
    (written by the experiment writer). With ``finetune_epochs`` > 0, the global runs train ``base_epochs +
    finetune_epochs`` epochs and a ``pooled`` run of ``base_epochs`` is added, the start of the fine-tune arms.
    ``extra_variants`` adds global influence-sampler runs with other settings (``{variant: config overrides}``, e.g.
    another ``xb_influence_temperature``), whose control is :func:`variant_control`.
    """
    basins = tuple(basins)
    longer = {"epochs": int(base_epochs) + int(finetune_epochs)} if finetune_epochs else {}
    runs = [RunSpec("homogeneous", "homogeneous", "all", basins, basins, {"xb_sampler": "uniform", **longer}),
            RunSpec("uniform_replacement", "uniform_replacement", "all", basins, basins,
                    {"xb_sampler": "uniform_replacement", **longer}),
            RunSpec("influence_global", "influence_global", "all", basins, basins,
                    {"xb_sampler": "influence", **longer})]
    for variant, overrides in (extra_variants or {}).items():
        runs.append(RunSpec(safe_name(variant), variant, "all", basins, basins,
                            {"xb_sampler": "influence", **longer, **overrides}))
    if finetune_epochs:
        runs.append(RunSpec("pooled", "pooled", "all", basins, basins, {"xb_sampler": "uniform"}))
    if scheme is not None:
        for region in scheme.regions(level):
            members = tuple(scheme.members(region, level))
            overrides = {"xb_sampler": "influence", **longer}
            if targets_files is not None:
                overrides["xb_influence_targets_file"] = str(targets_files[region])
            runs.append(RunSpec(f"influence_roi_{safe_name(region)}", "influence_roi", region, basins, members,
                                overrides))
    return runs


def _grow(order: Sequence[str], members: Dict[str, List[str]], at_least: int) -> List[str]:
    """Basins of the regions in ``order``, adding whole regions until there are at least ``at_least``."""
    chosen: List[str] = []
    for region in order:
        if len(chosen) >= max(at_least, 1):
            break
        chosen += members[region]
    return chosen


def similar_vs_dissimilar(scheme: RegionScheme, attributes: pd.DataFrame, static_columns: Sequence[str],
                          rois: Optional[Sequence[str]] = None, size_control: bool = True, seed: int = 0,
                          min_roi_basins: int = 1) -> List[RunSpec]:
    """Local, local+close, local+far and local+dissimilar runs per region of interest (see the module docstring).

    Parameters
    ----------
    scheme : RegionScheme
        At least two levels; regions of interest are on the finest level.
    attributes : pd.DataFrame
        Basin-indexed static attributes used for region similarity.
    static_columns : sequence of str
        The attribute columns compared (usually the config's ``static_attributes``).
    rois : sequence of str, optional
        Regions of interest (finest-level ids, e.g. ``11/4``); default: every finest-level region with at least
        ``min_roi_basins`` basins.
    size_control : bool
        Also add the ``_sized`` variants, with the added sets subsampled to equal size.
    seed : int
        Seed of the subsampling.

    Raises
    ------
    ValueError
        If the scheme has one level, or a named region of interest does not exist.
    """
    if len(scheme.levels) < 2:
        raise ValueError("similar-vs-dissimilar needs a hierarchical region scheme, e.g. 'huc_02>huc_04' or "
                         "'clz_cl_smj>tbi_cl_smj'.")
    fine = len(scheme.levels) - 1
    members = {r: scheme.members(r, fine) for r in scheme.regions(fine)}
    unknown = [r for r in (rois or []) if r not in members]
    if unknown:
        raise ValueError(f"--roi {unknown} are not regions of the finest level; regions: {sorted(members)[:40]}")
    rois = list(rois) if rois else [r for r, b in members.items() if len(b) >= min_roi_basins]
    centroids = region_centroids(scheme, attributes, static_columns, fine)
    rng = np.random.default_rng(seed)
    runs = []
    for roi in rois:
        parent = scheme.parent(roi)
        local = members[roi]
        close = [b for r, bs in members.items() if r != roi and scheme.parent(r) == parent for b in bs]
        outside = [r for r in members if scheme.parent(r) != parent]
        distance = ((centroids.loc[outside] - centroids.loc[roi]) ** 2).sum(axis=1).sort_values(kind="stable")
        far = _grow(list(distance.index), members, len(close))
        dissimilar = _grow(list(distance.index[::-1]), members, len(close))
        added = {"close": close, "far": far, "dissimilar": dissimilar}
        group = roi
        runs.append(RunSpec(f"roi_{safe_name(roi)}_local", "local", group, tuple(local), tuple(local)))
        for kind, extra in added.items():
            if extra:
                runs.append(RunSpec(f"roi_{safe_name(roi)}_local+{kind}", f"local+{kind}", group,
                                    tuple(local + extra), tuple(local)))
        sizes = [len(v) for v in added.values() if v]
        if size_control and len(sizes) == len(added):
            size = min(sizes)
            for kind, extra in added.items():
                picked = sorted(rng.choice(len(extra), size=size, replace=False))
                runs.append(RunSpec(f"roi_{safe_name(roi)}_local+{kind}_sized", f"local+{kind}_sized", group,
                                    tuple(local + [extra[i] for i in picked]), tuple(local)))
    return runs
