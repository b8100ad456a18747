"""Why is the forward error E < 1 on the quickstart's validation data? Evidence, one command.

``E_n(g) = loss(f(g·x_n), g·y_n) / loss(f(x_n), y_n)`` on isotropic decaying turbulence with a
trajectory split should be 1 within its interval on held-out data. This script trains the
quickstart (``configs/quickstart.yaml``: 32², small U-Net, 20 epochs; no logger, no monitor) for
a few seeds and reports, per element and split:

* the median of ``E`` with a **trajectory-cluster** bootstrap interval (the samples of one
  trajectory are not independent: 240 validation samples are 16 trajectories), and the share of
  samples with ``E < 1``;
* the same split's median with the per-probe-bootstrap used by ``measure`` (which treats every
  sample as independent);
* a data check: the mean vorticity skewness (reflections flip it, so a reflection-invariant data
  distribution has mean 0) and the x/y gradient-energy ratio (rotations by 90° swap them);
* a nearest-neighbour check: distance from ``x`` and from ``g·x`` to the closest training input.

    python experiments/equivariance_error_baseline.py [--seeds 3] [--epochs 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def train_quickstart(seed: int, epochs: int) -> tuple:
    """Fit ``configs/quickstart.yaml`` for one seed; the model (eval mode) and its datamodule."""
    from symcoherence.cli.lightning import lightning_cli

    cli = lightning_cli(
        [
            "fit",
            "--config",
            str(ROOT / "configs" / "quickstart.yaml"),
            f"--seed_everything={seed}",
            f"--trainer.max_epochs={epochs}",
            "--trainer.logger=false",
            "--trainer.enable_checkpointing=false",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--trainer.callbacks=[]",
            f"--data.init_args.cache_dir={ROOT / 'data_cache'}",
        ]
    )
    return cli.model.eval(), cli.datamodule


def split_errors(model, datamodule, split: str, group) -> tuple[torch.Tensor, torch.Tensor]:
    """``E`` ``(K, S)`` over every pair of ``split`` and the trajectory index of each sample."""
    import symcoherence as sc

    pairs = datamodule.dataset(split)
    inputs = torch.stack([pairs.pair(i)[0] for i in range(len(pairs))])
    targets = torch.stack([pairs.pair(i)[1] for i in range(len(pairs))])
    errors = sc.equivariance_error(
        model.backbone, sc.smse, inputs, targets, group, datamodule.field_type
    )
    trajectory = torch.arange(len(pairs)) // pairs.per_trajectory
    return errors, trajectory


def cluster_interval(
    values: torch.Tensor, clusters: torch.Tensor, resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """90 % percentile interval of the median of ``values`` resampling whole clusters."""
    generator = torch.Generator().manual_seed(seed)
    ids = clusters.unique()
    members = [torch.nonzero(clusters == c).flatten() for c in ids]
    medians = []
    for _ in range(resamples):
        chosen = torch.randint(len(ids), (len(ids),), generator=generator)
        sample = torch.cat([values[members[int(c)]] for c in chosen])
        medians.append(float(sample.median()))
    low, high = torch.tensor(medians).quantile(torch.tensor([0.05, 0.95], dtype=torch.float32))
    return float(low), float(high)


def data_checks(datamodule) -> dict[str, float]:
    """Mean skewness of vorticity and x/y gradient-energy ratio per split (raw frames)."""
    out = {}
    for split in ("train", "val"):
        frames = datamodule.data[datamodule.splits[split]][:, :, 0].double()  # (M, T, n, n)
        flat = frames.flatten(2)
        centred = flat - flat.mean(-1, keepdim=True)
        skew = (centred**3).mean(-1) / centred.pow(2).mean(-1).pow(1.5)
        gx = (frames - frames.roll(1, -1)).pow(2).mean()
        gy = (frames - frames.roll(1, -2)).pow(2).mean()
        out[f"{split} skewness mean"] = float(skew.mean())
        out[f"{split} skewness sem"] = float(skew.mean(1).std() / skew.shape[0] ** 0.5)
        out[f"{split} grad x/y"] = float(gx / gy)
    return out


def nearest_training(datamodule, group, elements, count: int = 120) -> dict[str, float]:
    """Median over validation inputs of min distance to training inputs: g·x vs x."""
    train = datamodule.dataset("train")
    val = datamodule.dataset("val")
    bank = torch.stack([train.pair(i)[0] for i in range(len(train))]).flatten(1)
    picks = torch.linspace(0, len(val) - 1, count).long()
    x = torch.stack([val.pair(int(i))[0] for i in picks])
    out = {}
    for element in elements:
        moved = group.act(element, x, datamodule.field_type).flatten(1)
        out[element] = float(torch.cdist(moved, bank).min(dim=1).values.median())
    return out


def fresh_errors(model, datamodule, group, trajectories: int, seed: int) -> tuple:
    """``E`` on freshly generated trajectories of the same source (another data seed)."""
    import dataclasses

    import symcoherence as sc

    source = dataclasses.replace(datamodule.source, num_trajectories=trajectories, seed=seed)
    frames = source.generate(0, trajectories)  # (M, T, 1, n, n), raw
    frames = (frames - datamodule.offset[:, None, None]) / datamodule.scale[:, None, None]
    inputs = frames[:, :-1].flatten(0, 1)
    targets = frames[:, 1:].flatten(0, 1)
    errors = sc.equivariance_error(
        model.backbone, sc.smse, inputs, targets, group, datamodule.field_type
    )
    per_trajectory = frames.shape[1] - 1
    return errors, torch.arange(inputs.shape[0]) // per_trajectory


def subset_medians(
    errors: torch.Tensor, trajectory: torch.Tensor, size: int, draws: int = 400
) -> torch.Tensor:
    """Median E of random ``size``-trajectory subsets: ``(K, draws)`` (the val-sample spread)."""
    generator = torch.Generator().manual_seed(0)
    count = int(trajectory.max()) + 1
    out = []
    for _ in range(draws):
        chosen = torch.randperm(count, generator=generator)[:size]
        mask = torch.isin(trajectory, chosen)
        out.append(errors[:, mask].median(dim=1).values)
    return torch.stack(out, dim=1)


def main(argv: list[str] | None = None) -> None:
    import symcoherence as sc
    from symcoherence.coherence.statistics import bootstrap_interval, resampled_medians

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--fresh", type=int, default=160, help="fresh trajectories (seed 0)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    group = sc.groups.D4()
    for seed in range(args.seeds):
        start = time.perf_counter()
        model, datamodule = train_quickstart(seed, args.epochs)
        print(f"\n=== seed {seed}: trained in {time.perf_counter() - start:.0f} s", flush=True)
        if seed == 0 and args.fresh:
            errors, trajectory = fresh_errors(model, datamodule, group, args.fresh, seed=7)
            spread = subset_medians(errors, trajectory, size=len(datamodule.splits["val"]))
            print(f"fresh data: {errors.shape[1]} samples from {args.fresh} new trajectories")
            for k, element in enumerate(group.elements):
                if element == "e":
                    continue
                lo, hi = cluster_interval(errors[k], trajectory)
                q = spread[k].quantile(torch.tensor([0.05, 0.5, 0.95], dtype=spread.dtype))
                below = float((spread[k] <= 0.96).double().mean())
                print(
                    f"  {element:4s} E median {float(errors[k].median()):.3f} "
                    f"trajectory-bootstrap [{lo:.3f}, {hi:.3f}]; median of random "
                    f"{len(datamodule.splits['val'])}-trajectory subsets: 5/50/95 % "
                    f"{q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f}, P(subset median ≤ 0.96) = {below:.2f}",
                    flush=True,
                )
        if seed == 0:
            print("data:", {k: round(v, 4) for k, v in data_checks(datamodule).items()})
            print(
                "nearest training input (median distance):",
                nearest_training(datamodule, group, group.elements),
            )
        for split in ("val", "train"):
            errors, trajectory = split_errors(model, datamodule, split, group)
            count = int(trajectory.max()) + 1
            print(f"{split}: {errors.shape[1]} samples from {count} trajectories")
            lo_probe, hi_probe = bootstrap_interval(
                lambda idx, e=errors: resampled_medians(e, idx),
                errors.shape[1],
                confidence=0.9,
                resamples=1000,
                seed=0,
            )
            for k, element in enumerate(group.elements):
                if element == "e":
                    continue
                values = errors[k]
                lo, hi = cluster_interval(values, trajectory)
                print(
                    f"  {element:4s} E median {float(values.median()):.3f} "
                    f"trajectory-bootstrap [{lo:.3f}, {hi:.3f}] "
                    f"probe-bootstrap [{float(lo_probe[k]):.3f}, {float(hi_probe[k]):.3f}] "
                    f"below 1: {float((values < 1).double().mean()):.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main(sys.argv[1:])
