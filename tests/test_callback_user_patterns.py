"""The monitor with the training loops and models users already have (real Trainer runs)."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import pytest
import torch
from helpers.stand_ins import CachedFilterConv, InPlaceSpectral
from helpers.tiny import RecordingLogger, TinyModule, make_pairs, trainer
from torch.utils.data import DataLoader, Dataset, TensorDataset

import symcoherence as sc
from symcoherence.callbacks import MeasurementError
from symcoherence.coherence import MeasurementSpec, measure

D4 = sc.groups.D4().elements
SCALAR = sc.FieldType(["scalar"])


class DictPairs(Dataset):
    """Samples as dicts with an extra item, as many user datasets return them."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        return {"state": self.x[index], "next": self.y[index], "time": float(index)}


class DictModule(TinyModule):
    def training_step(self, batch, batch_idx):
        return sc.smse(self(batch["state"]), batch["next"]).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", sc.smse(self(batch["state"]), batch["next"]).mean())


# the settings these tests share: measure at step 4 only, no overhead budget
MEASURED_AT_4 = dict(
    max_overhead=None,
    group="D4",
    field_type=["scalar"],
    every_n_train_steps=4,
    at_start=False,
    probe_size=6,
)


def _monitor(**overrides) -> sc.OrbitCoherenceMonitor:
    """A monitor that measures at step 4 (``MEASURED_AT_4``, with ``overrides``)."""
    return sc.OrbitCoherenceMonitor(**{**MEASURED_AT_4, **overrides})


def _expected(module, x, y, probe_size, seed=0):
    """What the monitor must log: measure() on the same seeded draw of the same samples."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    index = sorted(order[:probe_size].tolist())
    spec = MeasurementSpec(group="D4", field_type=SCALAR)
    with torch.no_grad():
        module.backbone.eval()
    result = measure(module.backbone, module.loss_fn, x[index], y[index], spec)
    module.backbone.train()
    return result.scalars()


def test_plain_fit_with_dataloaders_draws_probes_from_the_trainer_val_dataloader():
    x_train, y_train = make_pairs(16, 1)
    x_val, y_val = make_pairs(12, 2)
    recording = RecordingLogger()
    monitor = _monitor()
    module = TinyModule()
    snapshot = {}

    class Snapshot(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 4:
                snapshot.update(_expected(pl_module, x_val, y_val, 6))

    trainer([Snapshot(), monitor], logger=recording, max_epochs=1, num_sanity_val_steps=0).fit(
        module,
        train_dataloaders=DataLoader(TensorDataset(x_train, y_train), batch_size=4),
        val_dataloaders=DataLoader(TensorDataset(x_val, y_val), batch_size=4),
    )
    assert monitor.state_dict()["probe"]["source"] == "trainer val dataloader"
    for key in ("coherence/D4/ratio/r", "coherence/D4/coupling/sr", "equivariance/D4/s/median"):
        assert recording.values(key)[4] == pytest.approx(snapshot[key], rel=1e-5)


def test_dict_batches_with_extra_items_are_read_by_batch_items():
    x_val, y_val = make_pairs(12, 2)
    loaders = {
        "train_dataloaders": DataLoader(DictPairs(*make_pairs(16, 1)), batch_size=4),
        "val_dataloaders": DataLoader(DictPairs(x_val, y_val), batch_size=4),
    }
    recording = RecordingLogger()
    monitor = _monitor(batch_items=("state", "next"))
    trainer([monitor], logger=recording, max_epochs=1).fit(DictModule(), **loaders)
    assert sorted(recording.values("coherence/D4/orbit")) == [4]

    wrong = sc.OrbitCoherenceMonitor(
        max_overhead=None, group="D4", field_type=["scalar"], probe_size=6
    )
    with pytest.raises(TypeError, match=r"pass batch_items=\(input key, target key\)"):
        trainer([wrong], max_epochs=1).fit(DictModule(), **loaders)


def test_a_function_can_pick_input_and_target():
    monitor = _monitor(
        group="C4", probe_size=5, batch_items=lambda sample: (sample["state"], sample["next"])
    )
    recording = RecordingLogger()
    loaders = {
        "train_dataloaders": DataLoader(DictPairs(*make_pairs(16, 1)), batch_size=4),
        "val_dataloaders": DataLoader(DictPairs(*make_pairs(12, 2)), batch_size=4),
    }
    trainer([monitor], logger=recording, max_epochs=1).fit(DictModule(), **loaders)
    assert sorted(recording.values("coherence/C4/orbit")) == [4]


@pytest.mark.parametrize("bad", ["x", ("x",), 3])
def test_batch_items_is_checked_at_construction(bad):
    with pytest.raises(TypeError, match="batch_items"):
        sc.OrbitCoherenceMonitor(max_overhead=None, group="D4", batch_items=bad)


def test_a_model_whose_parameters_do_not_enter_the_forward_pass_logs_nothing_and_names_the_fix():
    def fit(monitor):
        recording = RecordingLogger()
        data = {
            "train_dataloaders": DataLoader(TensorDataset(*make_pairs(16, 1)), batch_size=4),
            "val_dataloaders": DataLoader(TensorDataset(*make_pairs(12, 2)), batch_size=4),
        }
        trainer([monitor], logger=recording, max_epochs=1).fit(
            TinyModule(CachedFilterConv()), **data
        )
        return recording

    with pytest.warns(UserWarning, match=r"does not depend on .*eval_mode=False"):
        recording = fit(_monitor())
    assert not any(key.startswith("coherence/") for _, m in recording.records for key in m)
    with pytest.raises(MeasurementError, match="eval_mode=False"):
        fit(_monitor(on_error="raise"))
    with warnings.catch_warnings(record=True) as caught:  # the fix works: measured, no skip
        warnings.simplefilter("always")
        recording = fit(_monitor(eval_mode=False))
    assert not [w for w in caught if "could not measure" in str(w.message)]
    assert sorted(recording.values("coherence/D4/orbit")) == [4]


def test_a_model_vmap_cannot_batch_is_measured_through_the_loop_with_one_warning():
    monitor = _monitor()
    recording = RecordingLogger()
    data = {
        "train_dataloaders": DataLoader(TensorDataset(*make_pairs(16, 1)), batch_size=4),
        "val_dataloaders": DataLoader(TensorDataset(*make_pairs(12, 2)), batch_size=4),
    }
    with pytest.warns(UserWarning, match="falling back to a per-sample loop") as caught:
        trainer([monitor], logger=recording, max_epochs=1).fit(
            TinyModule(InPlaceSpectral()), **data
        )
    assert len([w for w in caught if "falling back" in str(w.message)]) == 1
    assert sorted(recording.values("coherence/D4/orbit")) == [4]
