"""The EA-LSTM's learned catchment embedding: the static input gate ``i = sigmoid(W_i x_s + b_i)`` per basin.

Works for run directories of the plugin's ``xb_ealstm`` and of NH's own ``ealstm``. The static inputs are built as
NH built them in training: NH's attribute loading of the run's dataset class, normalised with the run's training
scaler (``train_data/train_data_scaler.yml``), followed by the one-hot basin ids when the run used them, and passed
through the model's statics embedding network.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Union

import numpy as np
import torch
import xarray as xr

from nh_crossbasin.nh.run_dirs import load_trained_model

EMBEDDING_NAME = "input_gate"

BasinSelection = Union[None, str, Path, Sequence[str]]


def _basin_list(cfg, basins: BasinSelection) -> List[str]:
    from neuralhydrology.datautils.utils import load_basin_file
    if basins is None:
        return load_basin_file(Path(cfg.train_basin_file))
    if isinstance(basins, (str, Path)) and Path(basins).is_file():
        return load_basin_file(Path(basins))
    if isinstance(basins, str):
        return [basins]
    return [str(b) for b in basins]


def static_inputs(run_dir: Path, cfg, basins: Iterable[str]) -> torch.Tensor:
    """The static model input ``x_s`` of each basin exactly as NH's dataset builds it for this run.

    Parameters
    ----------
    run_dir : Path
        The run directory (for the training scaler and the one-hot basin encoding).
    cfg : neuralhydrology.utils.config.Config
        The run's config.
    basins : iterable of str
        Basin ids.

    Returns
    -------
    torch.Tensor
        ``[n_basins, n_static]`` float32: normalised static/HydroATLAS attributes, then one-hot basin ids if used.

    Raises
    ------
    ValueError
        If the run uses evolving attributes (its input gate then changes in time), or a basin has no one-hot id.
    """
    from neuralhydrology.datautils.utils import load_scaler
    from neuralhydrology.evaluation.utils import load_basin_id_encoding

    from nh_crossbasin.nh_adapter import normalized_static_attributes

    basins = list(basins)
    if cfg.evolving_attributes:
        raise ValueError(f"The run uses evolving_attributes {cfg.evolving_attributes}: its input gate varies in time "
                         f"and is no per-basin embedding.")
    parts = []
    if cfg.static_attributes or cfg.hydroatlas_attributes:
        attributes = normalized_static_attributes(cfg, basins, load_scaler(Path(run_dir)))
        parts.append(torch.stack([attributes[b] for b in basins]))
    if cfg.use_basin_id_encoding:
        id_to_int = load_basin_id_encoding(Path(run_dir))
        unknown = [b for b in basins if b not in id_to_int]
        if unknown:
            raise ValueError(f"Basins {unknown[:5]} were not among the training basins of a run that uses one-hot "
                             f"basin ids (use_basin_id_encoding); they have no embedding.")
        ids = torch.tensor([id_to_int[b] for b in basins])
        parts.append(torch.nn.functional.one_hot(ids, num_classes=len(id_to_int)).to(torch.float32))
    if not parts:
        raise ValueError("The run has no static inputs (static/HydroATLAS attributes or one-hot basin ids).")
    return torch.cat(parts, dim=-1)


def input_gate_from_static_inputs(model: torch.nn.Module, x_s: torch.Tensor) -> torch.Tensor:
    """``sigmoid(W_i e(x_s) + b_i)`` of an EA-LSTM (NH ``ealstm`` or ``xb_ealstm``), ``e`` its statics embedding.

    Parameters
    ----------
    model : torch.nn.Module
        A model with NH's ``embedding_net`` (``InputLayer``) and ``input_gate`` (``nn.Linear``).
    x_s : torch.Tensor
        Static inputs ``[n, S]`` as NH's batches carry them (``x_s`` and ``x_one_hot`` concatenated).

    Returns
    -------
    torch.Tensor
        ``[n, H]``, values in (0, 1).
    """
    if not (hasattr(model, "input_gate") and hasattr(model, "embedding_net")):
        raise TypeError(f"{type(model).__name__} is not an EA-LSTM (it has no input_gate / embedding_net).")
    parameter = next(model.input_gate.parameters())
    with torch.no_grad():
        statics = model.embedding_net.statics_embedding(x_s.to(dtype=parameter.dtype, device=parameter.device))
        return torch.sigmoid(model.input_gate(statics))


def input_gate_embedding(run_dir: Union[str, Path], epoch: Optional[int] = None,
                         basins: BasinSelection = None) -> xr.DataArray:
    """The static input-gate vector of each basin for a trained EA-LSTM run (``xb_ealstm`` or NH ``ealstm``).

    Parameters
    ----------
    run_dir : str or Path
        The run directory.
    epoch : int, optional
        Epoch of the weights (default: the last saved).
    basins : str, Path or sequence of str, optional
        A basin file, one basin id or a list of ids (default: the run's training basins).

    Returns
    -------
    xarray.DataArray
        ``input_gate`` with dims ``(basin, cell)``, basin ids as coordinate, values in (0, 1); attributes name the
        run, the epoch and the model.
    """
    run_dir = Path(run_dir)
    cfg, model, epoch = load_trained_model(run_dir, epoch)
    basin_ids = _basin_list(cfg, basins)
    gate = input_gate_from_static_inputs(model, static_inputs(run_dir, cfg, basin_ids))
    return xr.DataArray(gate.cpu().numpy(), dims=("basin", "cell"),
                        coords={"basin": np.array(basin_ids, dtype=str), "cell": np.arange(gate.shape[1])},
                        name=EMBEDDING_NAME,
                        attrs={"long_name": "EA-LSTM static input gate sigmoid(W_i x_s + b_i)",
                               "run_dir": str(run_dir.resolve()), "epoch": epoch, "model": str(cfg.model)})


def embedding_path(run_dir: Path, epoch: int) -> Path:
    """A new file name for the embedding of ``epoch`` in ``run_dir``; never the name of an existing file."""
    from nh_crossbasin.files import next_free_path
    return next_free_path(Path(run_dir) / f"input_gate_embedding_epoch{str(epoch).zfill(3)}.nc")


def write_input_gate_embedding(run_dir: Union[str, Path], epoch: Optional[int] = None,
                               basins: BasinSelection = None) -> Path:
    """Compute :func:`input_gate_embedding` and write it as netCDF into the run directory.

    The file is ``input_gate_embedding_epochNNN.nc``; if that exists, ``_2``, ``_3``, ... is appended
    (:func:`nh_crossbasin.files.next_free_path`): an existing file is never overwritten.

    Returns
    -------
    Path
        The file written.
    """
    embedding = input_gate_embedding(run_dir, epoch=epoch, basins=basins)
    path = embedding_path(Path(run_dir), embedding.attrs["epoch"])
    embedding.to_netcdf(path)
    return path
