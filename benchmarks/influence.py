"""Speed of the gradient-influence sampler.

``refresh``: one full influence refresh (probe draw, one forward+backward per basin on its probe of k sequences,
G Gᵀ, weights) for N synthetic basins with the fused EA-LSTM (``xb_ealstm``) at hidden 256, sequence 270, probe 16.
Prints seconds, ms per basin, the size of the gradient matrix (n_basins × n_parameters: memory grows linearly in
both, never with basins² × parameters) and, on CUDA, the peak GPU memory.

``gradients``: the probe gradients of N synthetic basins (hidden 256, sequence 270, probe 16 by default), per-basin
loop vs batched passes (:mod:`nh_crossbasin.nh.batched_gradients`), for all parameters and for the head only, the two
methods taking turns in one run so that the ratio is fair on a shared machine; checks that both give the same
numbers. Both first run once, untimed, on the probes of the first ``--warmup-basins`` basins, so that neither is
timed in a fresh process's state (buffer pools empty, the allocator not yet used to large blocks). It also prints the arithmetic: the multiply-adds of the recurrent weight products (forward, and the two
backward products for all parameters), the GFLOP/s each method reached, and the throughput of one large matrix
product of the recurrent shape on the same device in the same run (the attainable rate). ``loop s × loop GFLOP/s /
peak GFLOP/s`` is the least time any exact method can take, so ``peak / loop GFLOP/s`` bounds the speed-up.

``epoch-ratio``: on real basins (default: the 119 dev basins of ../shared/data/camels_us_caravan, the reference
config's shapes), the cost of a heterogeneous epoch with one refresh relative to a homogeneous epoch:
``(updates × step + refresh) / (updates × step)``, from the measured training-step time (forward + backward + Adam
at the config's batch size, median of repeats) and the measured refresh time; ``updates`` is NH's number of
updates per epoch for these basins (1,529 for the dev basins).

Examples
--------
::

    python benchmarks/influence.py refresh --basins 531 1678 --device cuda:0
    python benchmarks/influence.py refresh --basins 60 --device cpu
    python benchmarks/influence.py epoch-ratio --device cpu --steps 5
    python benchmarks/influence.py gradients --basins 531 --model xb_ealstm cudalstm --device cpu --repeats 1
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CARAVAN = REPO.parent / "shared" / "data" / "camels_us_caravan"
REFERENCE_STATICS = ["p_mean", "pet_mean", "aridity", "p_seasonality", "frac_snow", "high_prec_freq",
                     "high_prec_dur", "low_prec_freq", "low_prec_dur", "elev_mean", "slope_mean", "area_gages2",
                     "frac_forest", "lai_max", "lai_diff", "gvf_max", "gvf_diff", "soil_depth_pelletier",
                     "soil_depth_statsgo", "soil_porosity", "soil_conductivity", "max_water_content", "sand_frac",
                     "silt_frac", "clay_frac", "carbonate_rocks_frac", "geol_permeability"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(cfg_dict: dict, scratch: Path, device: torch.device):
    """cfg, training dataset, model and loss, built as NH's trainer builds them (plugin active)."""
    import nh_crossbasin
    nh_crossbasin.register()
    from neuralhydrology.datasetzoo import get_dataset
    from neuralhydrology.modelzoo import get_model
    from neuralhydrology.training import get_loss_obj
    from neuralhydrology.utils.config import Config
    cfg = Config(dict(cfg_dict, run_dir=str(scratch), verbose=0))
    cfg.run_dir, cfg.train_dir = scratch, scratch / "train_data"
    dataset = get_dataset(cfg=cfg, is_train=True, period="train", scaler={})  # NH's default {} is shared
    cfg.number_of_basins = len(dataset.basins)
    torch.manual_seed(0)
    return cfg, dataset, get_model(cfg).to(device), get_loss_obj(cfg).to(device)


def time_refresh(cfg, dataset, model, loss_obj, device, repeats: int):
    """Seconds of ``repeats`` full refreshes (after one untimed warm-up refresh) and the peak GPU memory."""
    from nh_crossbasin.nh.influence_draw import InfluenceWeightedDraw
    sampler = InfluenceWeightedDraw(cfg, dataset)
    sampler.measure(model, loss_obj, device, epoch=1, learning_rate=1e-3)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for epoch in range(2, 2 + repeats):
        _sync(device)
        start = time.perf_counter()
        sampler.measure(model, loss_obj, device, epoch=epoch, learning_rate=1e-3)
        _sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan")
    return times, peak


def refresh_benchmark(args) -> None:
    from nh_crossbasin.synth import generate_basins
    device = torch.device(args.device)
    print(f"one influence refresh, xb_ealstm hidden {args.hidden}, seq {args.seq}, probe {args.probe}, "
          f"measure {args.measure}, device {device}")
    print(f"{'basins':>7s}{'params':>9s}{'refresh s':>11s}{'ms/basin':>10s}{'G MiB':>8s}{'GPU peak GiB':>14s}"
          f"{'max RSS GiB':>13s}")
    for n_basins in args.basins:
        with tempfile.TemporaryDirectory() as tmp:
            summary = generate_basins(Path(tmp) / "data", n_basins=n_basins, n_regimes=2, years=args.years, seed=0)
            cfg_dict = dict(summary.nh_config_entries(), model="xb_ealstm", head="regression", hidden_size=args.hidden,
                            initial_forget_bias=3, output_dropout=0.4, seq_length=args.seq, predict_last_n=1,
                            loss="xb_nse_star", xb_sampler="influence", xb_influence_probe_size=args.probe,
                            xb_influence_measure=args.measure, batch_size=256, experiment_name="bench", seed=1,
                            device=args.device, xb_influence_projection_dim=args.projection_dim)
            cfg, dataset, model, loss_obj = build(cfg_dict, Path(tmp) / "run", device)
            times, peak = time_refresh(cfg, dataset, model, loss_obj, device, args.repeats)
        n_params = sum(p.numel() for p in model.parameters())
        width = args.projection_dim or n_params
        seconds = statistics.median(times)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
        print(f"{n_basins:7d}{n_params:9d}{seconds:11.2f}{1e3 * seconds / n_basins:10.1f}"
              f"{n_basins * width * 4 / 2 ** 20:8.1f}{peak:14.2f}{rss:13.2f}", flush=True)


def _train_step_seconds(cfg, dataset, model, loss_obj, device, steps: int) -> float:
    from torch.utils.data import DataLoader
    from nh_crossbasin.nh.probes import batch_to_device
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, collate_fn=dataset.collate_fn)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    times = []
    for i, batch in enumerate(loader):
        if i > steps:
            break
        batch = batch_to_device(batch, device)
        _sync(device)
        start = time.perf_counter()
        loss, _ = loss_obj(model(model.pre_model_hook(batch, is_train=True)), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        _sync(device)
        if i > 0:  # the first step is warm-up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def epoch_ratio_benchmark(args) -> None:
    device = torch.device(args.device)
    data = Path(args.data)
    cfg_dict = {"experiment_name": "bench", "dataset": "generic", "data_dir": str(data),
                "train_basin_file": str(data / args.basin_file), "validation_basin_file": str(data / args.basin_file),
                "test_basin_file": str(data / args.basin_file), "train_start_date": "01/10/1999",
                "train_end_date": "30/09/2008", "validation_start_date": "01/10/1981",
                "validation_end_date": "30/09/1989", "test_start_date": "01/10/1989", "test_end_date": "30/09/1999",
                "dynamic_inputs": ["total_precipitation_sum", "temperature_2m_mean", "potential_evaporation_sum"],
                "target_variables": ["streamflow"], "static_attributes": REFERENCE_STATICS, "model": args.model,
                "head": "regression", "hidden_size": args.hidden, "initial_forget_bias": 3, "output_dropout": 0.4,
                "seq_length": args.seq, "predict_last_n": 1, "loss": "xb_nse_star", "batch_size": args.batch_size,
                "xb_sampler": "influence", "xb_influence_probe_size": args.probe, "seed": 1, "device": args.device}
    with tempfile.TemporaryDirectory() as tmp:
        cfg, dataset, model, loss_obj = build(cfg_dict, Path(tmp), device)
        updates = -(-len(dataset) // cfg.batch_size)
        step = _train_step_seconds(cfg, dataset, model, loss_obj, device, args.steps)
        times, _ = time_refresh(cfg, dataset, model, loss_obj, device, args.repeats)
    refresh = statistics.median(times)
    epoch = updates * step
    print(f"{len(dataset.basins)} basins, {len(dataset)} samples, {updates} updates/epoch at batch {cfg.batch_size}; "
          f"{args.model} hidden {args.hidden}, seq {args.seq}, probe {args.probe}, device {device}")
    print(f"training step {step * 1e3:.1f} ms -> homogeneous epoch {epoch:.1f} s (steps only)")
    print(f"influence refresh {refresh:.2f} s -> heterogeneous/homogeneous epoch cost {(epoch + refresh) / epoch:.4f}")


def recurrent_gflop(model: torch.nn.Module, n_sequences: int, seq_length: int, backward: bool) -> float:
    """GFLOP of the per-step weight products (input and recurrent) over ``n_sequences`` of ``seq_length`` steps.

    Forward: ``2 · T · n · (|W_ih| + |W_hh|)``; with ``backward`` the two backward products (input and weight
    gradients) triple it. Element-wise work, the static input gate and the head are left out (they are small).
    """
    per_step = sum(p.numel() for name, p in model.named_parameters() if "weight_ih" in name or "weight_hh" in name)
    return 2.0 * seq_length * n_sequences * per_step * (3 if backward else 1) / 1e9


def matmul_peak_gflops(model: torch.nn.Module, rows: int, device: torch.device, seconds: float = 2.0) -> float:
    """GFLOP/s of one large product ``[rows, H] @ [H, G]`` with the model's recurrent weight (the attainable rate)."""
    weight = next(p for name, p in model.named_parameters() if "weight_hh" in name).detach()
    a = torch.randn(rows, weight.shape[1], device=device, dtype=weight.dtype)
    b = weight.t().contiguous()
    for _ in range(2):
        a @ b
    _sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
        _sync(device)
    return 2.0 * rows * b.shape[0] * b.shape[1] * count / (time.perf_counter() - start) / 1e9


def gradients_benchmark(args) -> None:
    from nh_crossbasin.nh.batched_gradients import batched_probe_gradients
    from nh_crossbasin.nh.probes import (draw_probes, nh_loss_fn, probe_batches, probe_gradients, probe_mode,
                                         select_parameters)
    from nh_crossbasin.synth import generate_basins
    device = torch.device(args.device)
    print(f"probe gradients of {args.basins} basins, hidden {args.hidden}, seq {args.seq}, probe {args.probe}, "
          f"device {device}, {torch.get_num_threads()} threads; per-basin loop vs batched passes, taking turns")
    print(f"{'model':>10s}{'params':>8s}{'loop s':>9s}{'batched s':>11s}{'speed-up':>10s}{'max rel diff':>14s}"
          f"{'GFLOP':>8s}{'loop GF/s':>11s}{'batched GF/s':>14s}{'peak GF/s':>11s}{'bound':>7s}")
    with tempfile.TemporaryDirectory() as tmp:
        summary = generate_basins(Path(tmp) / "data", n_basins=args.basins, n_regimes=2, years=args.years, seed=0)
        for model_name in args.model:
            cfg_dict = dict(summary.nh_config_entries(), model=model_name, head="regression", hidden_size=args.hidden,
                            initial_forget_bias=3, output_dropout=0.4, seq_length=args.seq, predict_last_n=1,
                            loss="xb_nse_star", batch_size=256, experiment_name="bench", seed=1, device=args.device)
            cfg, dataset, model, loss_obj = build(cfg_dict, Path(tmp) / f"run_{model_name}", device)
            probes = draw_probes(dataset.sample_basin_index, len(dataset.basins), args.probe, seed=(1, 1))
            batches = probe_batches(dataset, probes.source, device)
            loss_fn = nh_loss_fn(loss_obj)
            n_sequences = sum(len(batch["y"]) for batch in batches if batch is not None)
            peak = matmul_peak_gflops(model, n_sequences, device)
            for label, names in (("all", None), ("head", ["head"])):
                params = select_parameters(model, names)
                timings = {True: [], False: []}
                results = {}
                with probe_mode(model):   # untimed warm-up of both methods on the first basins' probes
                    warm = batches[:args.warmup_basins]
                    batched_probe_gradients(model, loss_obj, warm, params)
                    probe_gradients(model, loss_fn, warm, params, batched=False)
                for _ in range(args.repeats):
                    for batched in (False, True):
                        _sync(device)
                        start = time.perf_counter()
                        with probe_mode(model):
                            results[batched] = (batched_probe_gradients(model, loss_obj, batches, params) if batched
                                                else probe_gradients(model, loss_fn, batches, params, batched=False))
                        _sync(device)
                        timings[batched].append(time.perf_counter() - start)
                loop, fast = statistics.median(timings[False]), statistics.median(timings[True])
                diff = float((results[True].grads - results[False].grads).abs().max()
                             / results[False].grads.abs().max())
                gflop = recurrent_gflop(model, n_sequences, args.seq, backward=label == "all")
                print(f"{model_name:>10s}{label:>8s}{loop:9.2f}{fast:11.2f}{loop / fast:10.2f}{diff:14.1e}"
                      f"{gflop:8.1f}{gflop / loop:11.1f}{gflop / fast:14.1f}{peak:11.1f}{peak * loop / gflop:7.2f}",
                      flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    for name in ("refresh", "epoch-ratio"):
        p = sub.add_parser(name)
        p.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
        p.add_argument("--hidden", type=int, default=256)
        p.add_argument("--seq", type=int, default=270)
        p.add_argument("--probe", type=int, default=16)
        p.add_argument("--repeats", type=int, default=2)
    refresh = sub.choices["refresh"]
    refresh.add_argument("--basins", type=int, nargs="+", default=[531])
    refresh.add_argument("--years", type=int, default=4, help="years of synthetic data per basin")
    refresh.add_argument("--measure", default="dot", choices=["dot", "cosine"])
    refresh.add_argument("--projection-dim", type=int, default=None)
    grads = sub.add_parser("gradients")
    grads.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    grads.add_argument("--hidden", type=int, default=256)
    grads.add_argument("--seq", type=int, default=270)
    grads.add_argument("--probe", type=int, default=16)
    grads.add_argument("--repeats", type=int, default=1)
    grads.add_argument("--warmup-basins", type=int, default=32,
                       help="basins whose probes both methods run once, untimed, before the timed runs")
    grads.add_argument("--basins", type=int, default=531)
    grads.add_argument("--years", type=int, default=3)
    grads.add_argument("--model", nargs="+", default=["xb_ealstm", "cudalstm"])
    ratio = sub.choices["epoch-ratio"]
    ratio.add_argument("--data", default=str(CARAVAN))
    ratio.add_argument("--basin-file", default="basins_dev.txt")
    ratio.add_argument("--model", default="cudalstm")
    ratio.add_argument("--batch-size", type=int, default=256)
    ratio.add_argument("--steps", type=int, default=10, help="timed training steps (after one warm-up step)")
    args = parser.parse_args()
    {"refresh": refresh_benchmark, "epoch-ratio": epoch_ratio_benchmark, "gradients": gradients_benchmark}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
