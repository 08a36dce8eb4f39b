"""Reading trained NH run directories: weight files, the trained model, the training dataset."""
from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Optional, Tuple

import torch

_WEIGHT_FILE = re.compile(r"model_epoch(\d+)\.pt$")


def weight_file(run_dir: Path, epoch: Optional[int] = None) -> Tuple[Path, int]:
    """The weight file of ``epoch`` (default: the last one saved, as NH's tester picks it) and its epoch number.

    Raises
    ------
    FileNotFoundError
        If the run directory has no (such) weight file.
    """
    run_dir = Path(run_dir)
    if epoch is None:
        files = sorted(run_dir.glob("model_epoch*.pt"))
        if not files:
            raise FileNotFoundError(f"No model_epoch*.pt in {run_dir}; is it a trained NH run directory?")
        path = files[-1]
    else:
        path = run_dir / f"model_epoch{str(epoch).zfill(3)}.pt"
        if not path.is_file():
            raise FileNotFoundError(f"No weights for epoch {epoch} in {run_dir} ({path.name} is missing).")
    return path, int(_WEIGHT_FILE.search(path.name).group(1))


def load_trained_model(run_dir: Path, epoch: Optional[int] = None):
    """The run's config and model with the weights of ``epoch`` (CPU, eval mode).

    The plugin is active while the config is read and the model built, so plugin runs (``xb_`` keys, ``model:
    xb_ealstm``) load as well as plain NH runs.

    Returns
    -------
    tuple
        ``(cfg, model, epoch)``.
    """
    import nh_crossbasin
    from neuralhydrology.utils.config import Config

    run_dir = Path(run_dir)
    path, epoch = weight_file(run_dir, epoch)
    with nh_crossbasin.activated():
        from neuralhydrology import modelzoo
        cfg = Config(run_dir / "config.yml")
        model = modelzoo.get_model(cfg)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return cfg, model.eval(), epoch


def training_dataset(cfg, run_dir: Path):
    """The run's training samples exactly as training saw them, normalised with the run's stored scaler.

    NH builds the dataset in training mode (only samples with valid inputs and targets), but anything it would
    write (scaler, optional training-data dump) goes to a temporary folder, never into the run directory.
    """
    from neuralhydrology.datasetzoo import get_dataset
    from neuralhydrology.datautils.utils import load_scaler

    from nh_crossbasin.nh_adapter import BasinIndexedDataset

    run_train_dir = cfg.train_dir
    with tempfile.TemporaryDirectory() as scratch:
        cfg.train_dir = Path(scratch)
        try:
            dataset = get_dataset(cfg=cfg, is_train=True, period="train", scaler=load_scaler(Path(run_dir)))
        finally:
            cfg.train_dir = run_train_dir
    return dataset if isinstance(dataset, BasinIndexedDataset) else BasinIndexedDataset(dataset)
