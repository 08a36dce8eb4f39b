"""Measuring basin-to-basin gradient influence of an NH model, and turning a measurement into weights.

:class:`InfluenceMeter` draws each basin's disjoint source and target probes (seeded by run seed and epoch), measures
``I[t, s]`` (:mod:`nh_crossbasin.nh.probes`) and returns an influence record (``xarray.Dataset``, target × source,
basin ids as coordinates). :func:`add_weights` turns a record into per-target source weights ``w_t(s)`` and basin
weights ``q(s)`` (:mod:`nh_crossbasin.core.weights`). The influence sampler uses both before each refreshed epoch;
``nh-xb influence`` and per-target specialisation use them offline. Nothing here draws training samples.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import xarray as xr
from neuralhydrology.datautils.utils import load_basin_file

from nh_crossbasin.config_keys import options
from nh_crossbasin.core.influence import smooth
from nh_crossbasin.core.weights import basin_weights, effective_number, entropy, target_weights
from nh_crossbasin.nh.probes import (draw_probes, measure_influence, nh_loss_fn, probe_batches, select_parameters,
                                     unweighted)

LOGGER = logging.getLogger(__name__)
DEFINITION = ("I[t, s] compares the target probe of t with the source probe of s (disjoint probes, t = s included); "
              "weights[t, s] = w_t(s); basin_weight = q(s)")


def target_basins(cfg, train_basins: list) -> list:
    """The target basins of a run (``xb_influence_targets_file``, or all training basins), checked against the
    training basins."""
    targets_file = options(cfg)["xb_influence_targets_file"]
    if targets_file is None:
        return list(train_basins)
    path = Path(targets_file)
    if path.is_dir():
        raise ValueError(f"Config key 'xb_influence_targets_file': {path} is a folder; allowed: a basin file (one "
                         f"training basin id per line).")
    if not path.is_file():
        raise ValueError(f"Config key 'xb_influence_targets_file': {path} does not exist; allowed: a basin file "
                         f"(one training basin id per line).")
    targets = load_basin_file(path)
    if not targets:
        raise ValueError(f"Config key 'xb_influence_targets_file': {path} lists no basin; allowed: a non-empty "
                         f"subset of the training basins.")
    train = set(train_basins)
    missing = [b for b in targets if b not in train]
    if missing:
        raise ValueError(f"Config key 'xb_influence_targets_file': {len(missing)} of the {len(targets)} basins in "
                         f"{path} are not training basins ({cfg.train_basin_file}), e.g. {missing[:5]}; allowed: a "
                         f"non-empty subset of the training basins.")
    return targets


class InfluenceMeter:
    """Measures the influence of every training basin (source) on every target basin of a run.

    Parameters
    ----------
    cfg : neuralhydrology.utils.config.Config
        The run configuration (``xb_influence_*`` keys).
    dataset : nh_crossbasin.nh_adapter.BasinIndexedDataset
        The training dataset.
    """

    def __init__(self, cfg, dataset):
        self.cfg, self.dataset = cfg, dataset
        self.opts = options(cfg)
        self.basins = list(dataset.basins)
        self.targets = target_basins(cfg, self.basins)
        position = {b: i for i, b in enumerate(self.basins)}
        self.target_index = [position[b] for b in self.targets]
        self.samples_per_basin = np.bincount(dataset.sample_basin_index, minlength=len(self.basins))

    def measure(self, model, loss_obj, device, epoch: int, learning_rate: Optional[float] = None) -> xr.Dataset:
        """The influence record of ``model`` (probes seeded by the run seed and ``epoch``).

        Returns
        -------
        xr.Dataset
            ``influence_raw`` (target × source) and, per basin, the size, loss and gradient norm of its source probe
            (``source_*``) and of its target probe (``target_*``).
        """
        params = select_parameters(model, None if self.opts["xb_influence_params"] == "all"
                                   else self.opts["xb_influence_params"])
        k = self.opts["xb_influence_probe_size"]
        probes = draw_probes(self.dataset.sample_basin_index, len(self.basins), k, seed=(int(self.cfg.seed), epoch))
        self._log_probe_fallbacks(probes, k, epoch)
        dtype = params[0][1].dtype
        source_batches = probe_batches(self.dataset, probes.source, device, dtype)
        target_batches = probe_batches(self.dataset, [probes.target[t] for t in self.target_index], device, dtype)
        with unweighted(loss_obj):
            result = measure_influence(model, nh_loss_fn(loss_obj), source_batches, target_batches,
                                       self.opts["xb_influence_measure"], params,
                                       self.opts["xb_influence_projection_dim"], int(self.cfg.seed), learning_rate)
        as_numpy = lambda t: t.detach().cpu().double().numpy()  # noqa: E731
        attrs = {key[len("xb_influence_"):]: str(value) for key, value in self.opts.items()
                 if key.startswith("xb_influence_")}
        attrs.update(epoch=int(epoch), definition=DEFINITION)
        return xr.Dataset(
            {"influence_raw": (("target", "source"), as_numpy(result.influence)),
             "source_probe_size": (("source",), result.source.probe_sizes.astype(np.int64)),
             "source_probe_loss": (("source",), as_numpy(result.source.losses)),
             "source_grad_norm": (("source",), as_numpy(result.source.norms)),
             "target_probe_size": (("target",), result.target.probe_sizes.astype(np.int64)),
             "target_probe_loss": (("target",), as_numpy(result.target.losses)),
             "target_grad_norm": (("target",), as_numpy(result.target.norms)),
             "training_samples": (("source",), self.samples_per_basin.astype(np.int64))},
            coords={"target": list(self.targets), "source": list(self.basins)}, attrs=attrs)

    def _log_probe_fallbacks(self, probes, k: int, epoch: int) -> None:
        halved = [self.basins[b] for b in probes.halved]
        if halved:
            LOGGER.warning(f"Influence probes before epoch {epoch}: {len(halved)} basins have fewer than 2 x "
                           f"xb_influence_probe_size = {2 * k} training samples; their source and target probes are "
                           f"two disjoint halves of their samples: {halved[:10]}")
        lonely = [self.basins[b] for b in probes.no_target if b in set(self.target_index)]
        if lonely:
            LOGGER.warning(f"Influence probes before epoch {epoch}: {len(lonely)} target basins have a single "
                           f"training sample, too few for two disjoint probes; they keep uniform weights: "
                           f"{lonely[:10]}")


def add_weights(record: xr.Dataset, opts: dict, previous: Optional[np.ndarray] = None) -> xr.Dataset:
    """Smooth the measured influence with the previous matrix, derive ``w_t(s)`` and ``q(s)``; log the fallbacks.

    Parameters
    ----------
    record : xr.Dataset
        A record of :meth:`InfluenceMeter.measure`.
    opts : dict
        The run's plugin options (``xb_influence_*``).
    previous : np.ndarray, optional
        The influence matrix used at the previous refresh (for ``xb_influence_smoothing``).

    Returns
    -------
    xr.Dataset
        ``record`` plus ``influence`` (smoothed), ``weights`` (target × source), ``basin_weight`` (source) and the
        attributes ``weight_entropy`` and ``effective_sources``.

    Raises
    ------
    RuntimeError
        If no source basin has a finite probe gradient.
    """
    epoch = record.attrs.get("epoch")
    raw = record["influence_raw"].values
    basins, targets = list(record["source"].values), list(record["target"].values)
    has_samples = record["training_samples"].values > 0
    finite_source = np.isfinite(raw).any(axis=0)
    valid = has_samples & finite_source
    if not valid.any():
        raise RuntimeError(f"Influence refresh before epoch {epoch}: no source basin has a finite probe gradient "
                           f"(source probe losses: {record['source_probe_loss'].values[:5].tolist()}...); stopping "
                           f"rather than sampling without information.")
    bad = [basins[i] for i in np.flatnonzero(has_samples & ~finite_source)]
    if bad:
        LOGGER.warning(f"Influence refresh before epoch {epoch}: {len(bad)} source basins have no finite probe "
                       f"gradient and get no influence weight this refresh: {bad[:10]}")
    zero = [basins[i] for i in np.flatnonzero(has_samples & (record["source_grad_norm"].values == 0))]
    if zero:
        LOGGER.warning(f"Influence refresh before epoch {epoch}: {len(zero)} basins have a zero probe gradient "
                       f"(their probes are already fitted or their parameters get no gradient); their influence is 0 "
                       f"with every basin this refresh: {zero[:10]}")
    bad_targets = [t for t, row in zip(targets, raw) if not np.isfinite(row).any()]
    if bad_targets:
        LOGGER.warning(f"Influence refresh before epoch {epoch}: targets without a finite target-probe gradient or "
                       f"loss keep uniform weights this refresh: {bad_targets[:10]}")
    used = smooth(None if previous is None else torch.from_numpy(previous), torch.from_numpy(raw),
                  opts["xb_influence_smoothing"]).numpy()
    position = {b: i for i, b in enumerate(basins)}
    weights = target_weights(used, opts["xb_influence_temperature"], opts["xb_influence_uniform_mix"],
                             opts["xb_influence_self_floor"], self_source=[position[t] for t in targets],
                             valid_sources=valid)
    q = basin_weights(weights)
    out = record.assign(influence=(("target", "source"), used), weights=(("target", "source"), weights),
                        basin_weight=(("source",), q))
    out.attrs.update(weight_entropy=entropy(q), effective_sources=effective_number(q))
    return out
