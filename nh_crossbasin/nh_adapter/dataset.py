"""The training glue between NH's datasets and the plugin: each sample carries its basin, degenerate training basins
are left out.

:func:`wrap_dataset` is what the patched ``get_dataset`` returns for configs that use the plugin: NH's dataset
wrapped in :class:`BasinIndexedDataset`; for training datasets, the degenerate basins
(:mod:`nh_crossbasin.nh.degenerate`) are reported once and excluded.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
import torch

from nh_crossbasin import config_keys

BASIN_INDEX_KEY = "basin_index"


class BasinIndexedDataset(torch.utils.data.Dataset):
    """An NH dataset whose samples also carry ``basin_index``, the position of the sample's basin in the dataset's
    basin list (for the training dataset: the order of ``train_basin_file``).

    Everything else is delegated to the wrapped dataset (``scaler``, ``collate_fn``, ``basins``, ...).

    Parameters
    ----------
    dataset : neuralhydrology.datasetzoo.basedataset.BaseDataset
        The dataset NH built.
    exclude : set of str, optional
        Basins whose samples are left out (degenerate training basins); they stay in ``basins`` with no samples.
    """

    def __init__(self, dataset, exclude: Optional[set] = None):
        self.dataset = dataset
        self.basin_to_index = {basin: i for i, basin in enumerate(dataset.basins)}
        lookup = dataset.lookup_table
        basin_index = np.fromiter((self.basin_to_index[lookup[i][0]] for i in range(len(dataset))),
                                  dtype=np.int64, count=len(dataset))
        keep = np.ones(len(dataset), dtype=bool)
        for basin in exclude or ():
            keep &= basin_index != self.basin_to_index[basin]
        self._items = np.flatnonzero(keep)
        self.sample_basin_index = basin_index[self._items]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, item: int) -> dict:
        sample = self.dataset[int(self._items[item])]
        sample[BASIN_INDEX_KEY] = torch.tensor(self.sample_basin_index[item])
        return sample

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)




def sample_targets(dataset) -> Tuple[np.ndarray, np.ndarray]:
    """``(basin of every sample, its last target value(s))`` of an NH dataset (``lookup_table`` and the loaded,
    normalised targets of NH 1.13's ``BaseDataset``)."""
    lookup = dataset.lookup_table
    freq = dataset.frequencies[0]
    basins = np.array([lookup[i][0] for i in range(len(lookup))], dtype=object)
    ends = np.fromiter((lookup[i][1][0] for i in range(len(lookup))), dtype=np.int64, count=len(lookup))
    targets = np.full((len(lookup), len(dataset.cfg.target_variables)), np.nan)
    for basin in np.unique(basins) if len(basins) else []:
        rows = basins == basin
        targets[rows] = dataset._y[basin][freq].numpy()[ends[rows]]
    return basins, targets


def wrap_dataset(dataset, cfg, is_train: bool) -> BasinIndexedDataset:
    """NH's dataset with the basin index on every sample; for training, without degenerate basins.

    Raises
    ------
    ValueError
        With ``xb_degenerate_basins: error`` when the training data hold degenerate basins.
    """
    if not is_train:
        return BasinIndexedDataset(dataset)
    from nh_crossbasin.nh.degenerate import find_degenerate_basins, report_degenerate_basins
    degenerate = find_degenerate_basins(dataset.basins, *sample_targets(dataset))
    report_degenerate_basins(degenerate, config_keys.options(cfg)["xb_degenerate_basins"], cfg.run_dir)
    return BasinIndexedDataset(dataset, exclude=set(degenerate.index))
