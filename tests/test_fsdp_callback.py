"""OrbitCoherenceMonitor under FSDP2: ModelParallelStrategy with ``fully_shard``, 2 CPU processes on
gloo, in a subprocess with a hard timeout. The sharded run logs what one process measures on the
gathered model, under the identity and the Adam metric."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers.tiny import TinyData, TinyModule

import symcoherence as sc

TESTS = Path(__file__).parent
SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from lightning.pytorch.strategies import ModelParallelStrategy
    from torch.distributed.fsdp import fully_shard
    import symcoherence as sc
    from helpers.tiny import RecordingLogger, TinyData, TinyModule, trainer

    out = sys.argv[1]

    from symcoherence.callbacks import _sharded
    replicas = []  # the class of every module copied (the backbone is an FSDPSequential)
    gather = _sharded.plain_replica

    def counting_replica(module):
        replicas.append(type(module).__name__)
        return gather(module)

    _sharded.plain_replica = counting_replica

    class Gain(torch.nn.Module):  # a layer the hooks have no rule for
        def __init__(self):
            super().__init__()
            self.gain = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            return self.gain * x

    def refusals(mesh):
        # what orbit_influence says of sharded models it cannot measure (every rank)
        x, y = TinyData().probe_batch(4)
        said = {}
        plain_conv = torch.nn.Conv2d(1, 1, 3, padding=1)
        uncovered = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, padding=1), Gain())
        for label, net, projection in (
            ("exact", plain_conv, None),
            ("uncovered", uncovered, sc.coherence.Projection(dim=16)),
        ):
            fully_shard(net, mesh=mesh)
            try:
                sc.orbit_influence(net, sc.smse, x, y, sc.groups.D4(), sc.FieldType(["scalar"]), projection=projection)
            except ValueError as error:
                said[label] = str(error)
        return said

    class Sharded(TinyModule):
        def configure_model(self):
            mesh = self.device_mesh["data_parallel"]
            for layer in self.backbone:
                if isinstance(layer, torch.nn.Conv2d):
                    fully_shard(layer, mesh=mesh)
            fully_shard(self.backbone, mesh=mesh)

    def gathered(module):
        return {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in module.state_dict().items()}

    class Save(sc.OrbitCoherenceMonitor):  # keeps the initial and final parameters (every rank gathers)
        def on_train_start(self, trainer, pl_module):
            state = gathered(pl_module)
            if trainer.global_rank == 0:
                torch.save(state, out + "/initial.pt")
            super().on_train_start(trainer, pl_module)

        def on_train_end(self, trainer, pl_module):
            state = gathered(pl_module)
            optimizer = trainer.optimizers[0]
            moments = [
                {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in optimizer.state[p].items()}
                for p in pl_module.parameters()
            ]
            said = refusals(pl_module.device_mesh["data_parallel"])
            if trainer.global_rank == 0:
                torch.save({"model": state, "moments": moments}, out + "/final.pt")
                with open(out + "/refusals.json", "w") as handle:
                    json.dump(said, handle)

    monitors = [
        Save(max_overhead=None, every_n_train_steps=2, probe_size=6),
        sc.OrbitCoherenceMonitor(max_overhead=None, every_n_train_steps=2, probe_size=6, metric="adam", prefix="adam/"),
        sc.OrbitCoherenceMonitor(max_overhead=None, every_n_train_steps=2, probe_size=6, projection=sc.coherence.Projection(dim=32), prefix="projected/"),
    ]
    logger = RecordingLogger()
    strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
    fit = trainer(monitors, logger=logger, max_steps=4, max_epochs=-1, devices=2, strategy=strategy)
    fit.fit(Sharded(), datamodule=TinyData())
    with open(f"{out}/rank{fit.global_rank}.json", "w") as handle:
        json.dump({"records": logger.records, "replicas": replicas.count("FSDPSequential")}, handle)
    """
)


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("fsdp")
    script = tmp_path / "fsdp_run.py"
    script.write_text(SCRIPT)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(TESTS.parent), str(TESTS)]), OMP_NUM_THREADS="1"
    )
    env.pop("MASTER_PORT", None)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = json.loads((tmp_path / "rank0.json").read_text())["records"]
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert rank1["records"] == []  # rank 0 logs
    assert rank1["replicas"] == 6
    return records, tmp_path


def _logged(records, key):
    return {step: m for step, m in records if key in m}


def _single_process(state, metric="identity", moments=None, prefix="", projection=None):
    module = TinyModule()
    module.load_state_dict(state)
    model = module.backbone.eval()
    if metric == "adam":
        optimizer = torch.optim.Adam(model.parameters())
        for param, moment in zip(model.parameters(), moments, strict=True):
            optimizer.state[param] = moment
        metric = sc.coherence.Adam(optimizer)
    inputs, targets = TinyData().probe_batch(6)
    kinds, group = sc.FieldType(["scalar"]), sc.groups.D4()
    influence = sc.orbit_influence(
        model, sc.smse, inputs, targets, group, kinds, metric=metric, projection=projection
    )
    errors = sc.equivariance_error(model, sc.smse, inputs, targets, group, kinds)
    return {
        k: v
        for k, v in influence.summary(prefix=prefix, equivariance=errors).items()
        if "measurement/" not in k  # health: free memory and seconds differ between runs
    }


def test_a_sharded_run_logs_the_single_process_numbers_of_the_gathered_model(sharded_run):
    records, folder = sharded_run
    logged = _logged(records, "coherence/D4/orbit")
    assert sorted(logged) == [0, 2, 4]
    start = _single_process(torch.load(folder / "initial.pt"))
    for key, value in start.items():
        assert logged[0][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    final = torch.load(folder / "final.pt")
    expected = _single_process(final["model"])
    for key, value in expected.items():
        assert logged[4][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_the_adam_metric_reads_the_gathered_second_moments(sharded_run):
    records, folder = sharded_run
    logged = _logged(records, "adam/coherence/D4/orbit")
    assert sorted(logged) == [1, 2, 4]  # Adam has no second moments before the first step
    final = torch.load(folder / "final.pt")
    expected = _single_process(final["model"], "adam", final["moments"], prefix="adam/")
    for key, value in expected.items():
        assert logged[4][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    identity = _single_process(final["model"], prefix="adam/")
    key = "adam/coherence/D4/ratio/r"
    assert expected[key] != pytest.approx(identity[key], rel=1e-4)  # the moments mattered


def test_a_projection_measures_the_sharded_model_in_place_as_one_process_measures_it(sharded_run):
    """With a projection the sharded layers' hooks give the rows: no rank gathers the model
    (the identity and Adam monitors gather it three times each), and the numbers are those of
    one process measuring the gathered weights with the same projection."""
    records, folder = sharded_run
    assert json.loads((folder / "rank0.json").read_text())["replicas"] == 6
    logged = _logged(records, "projected/coherence/D4/orbit")
    assert sorted(logged) == [0, 2, 4]
    final = torch.load(folder / "final.pt")
    projection = sc.coherence.Projection(dim=32)
    expected = _single_process(final["model"], prefix="projected/", projection=projection)
    exact = _single_process(final["model"], prefix="projected/")
    key = "projected/coherence/D4/ratio/r"
    assert expected[key] != pytest.approx(exact[key], rel=1e-4)  # 32 < P numbers: projected
    for key, value in expected.items():
        assert logged[4][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_sharded_models_that_cannot_be_measured_in_place_are_refused_with_the_way_out(sharded_run):
    _, folder = sharded_run
    said = json.loads((folder / "refusals.json").read_text())
    assert "projection=Projection" in said["exact"] and "FSDP2" in said["exact"]
    assert "['1.gain']" in said["uncovered"] and "register_rule" in said["uncovered"]
