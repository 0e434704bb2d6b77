"""Coupled trainer: shared randomness, records, resume, divergence (small CPU runs)."""
import json
import math

import pytest
import torch

from clnscl import records
from clnscl.config import ConfigError, TrainConfig
from clnscl.trainer import CoupledTrainer, DivergedError

TINY = dict(dataset="synthetic", n_classes=4, synthetic_train_per_class=32, synthetic_test_per_class=16,
            image_size=16, batch_size=32, epochs=3, eval_size=64, warmup_epochs=1, tau=0.5,
            objectives=("cl", "nscl", "supcon", "ce"), seed=3)


@pytest.fixture(scope="module")
def full_run():
    tr = CoupledTrainer(TrainConfig(**TINY))
    recs = list(tr.run())
    return tr, recs


def numeric(rec):
    return {k: v for k, v in rec.items() if k not in ("time_s", "fingerprint")}


def test_one_initialisation_for_every_objective():
    tr = CoupledTrainer(TrainConfig(**TINY))
    ref = tr.models["cl"].state_dict()
    for obj, m in tr.models.items():
        sd = m.state_dict()
        for k, v in ref.items():
            assert torch.equal(sd[k], v), (obj, k)
    assert len({id(o) for o in tr.optimizers.values()}) == 4  # one optimiser each


def test_records_schedule_and_names(full_run):
    tr, recs = full_run
    assert [r["epoch"] for r in recs] == [0, 1, 2, 3]
    first, last = recs[0], recs[-1]
    # epoch 0: identical weights -> identical representations and zero parameter distance
    for obj in ("nscl", "supcon", "ce"):
        assert first[f"{obj}/param_dist"] == 0.0 and first[f"{obj}/param_dist_layer"] == 0.0
        assert first[f"{obj}/cka"] == pytest.approx(1.0) and first[f"{obj}/test/proj/rho"] == pytest.approx(0.0, abs=1e-9)
        assert last[f"{obj}/param_dist"] > 0
        for split in records.SPLITS:
            for feat in records.FEATURES:
                for m in records.ALIGNMENT_METRICS:
                    assert records.alignment_key(obj, split, feat, m) in last
        assert last[f"{obj}/cka"] == last[f"{obj}/test/backbone/cka"]
    assert "cl/loss" not in first and math.isfinite(last["cl/loss"])
    assert all(f"{o}/probe_acc" in last for o in ("cl", "nscl", "supcon", "ce"))
    assert not any(k.endswith("probe_acc") for k in recs[1])
    assert last["step"] == 3 * tr.steps_per_epoch and last["cum_lr"] > 0
    # NSCL drops negatives, so its loss is below CL's on the same batches
    assert last["nscl/loss"] <= last["cl/loss"]
    json.dumps(recs)  # records are plain JSON


def test_fingerprints_identical_for_every_model_and_reproducible(full_run):
    tr, recs = full_run
    assert len(set(tr.fingerprints.values())) == 1
    assert len({r["fingerprint"] for r in recs}) == len(recs)  # advances each epoch
    again = list(CoupledTrainer(TrainConfig(**TINY)).run())
    assert [r["fingerprint"] for r in again] == [r["fingerprint"] for r in recs]
    assert [numeric(r) for r in again] == [numeric(r) for r in recs]  # same seed, same numbers
    other = CoupledTrainer(TrainConfig(**{**TINY, "seed": 4}))
    other.train_epoch()
    assert other.fingerprints["cl"] != recs[1]["fingerprint"]


def test_resume_is_bit_identical(full_run, tmp_path):
    tr_full, recs_full = full_run
    tr = CoupledTrainer(TrainConfig(**TINY))
    it = tr.run()
    head = [next(it), next(it)]  # epochs 0 and 1
    ckpt = tmp_path / "state.pt"
    tr.save_checkpoint(ckpt)
    del tr, it
    state = torch.load(ckpt, weights_only=True)  # loads under the safe unpickler
    assert state["epoch"] == 1
    resumed = CoupledTrainer(TrainConfig(**TINY))
    resumed.load_checkpoint(ckpt)
    tail = list(resumed.run())
    assert [r["epoch"] for r in tail] == [2, 3]
    assert [numeric(r) for r in head + tail] == [numeric(r) for r in recs_full]
    assert [r["fingerprint"] for r in head + tail] == [r["fingerprint"] for r in recs_full]
    for obj, m in resumed.models.items():
        for k, v in m.state_dict().items():
            assert torch.equal(v, tr_full.models[obj].state_dict()[k]), (obj, k)


def test_checkpoint_refuses_other_config(tmp_path):
    tr = CoupledTrainer(TrainConfig(**TINY))
    tr.save_checkpoint(tmp_path / "s.pt")
    other = CoupledTrainer(TrainConfig(**{**TINY, "tau": 0.2}))
    with pytest.raises(ValueError, match="different config"):
        other.load_checkpoint(tmp_path / "s.pt")


def test_nan_loss_stops_with_diverged_error():
    tr = CoupledTrainer(TrainConfig(**{**TINY, "objectives": ("cl", "nscl")}))
    with torch.no_grad():
        next(tr.models["nscl"].projector.parameters()).fill_(float("nan"))
    with pytest.raises(DivergedError, match=r"diverged: objective nscl .* epoch 1 step 1"):
        tr.train_epoch()


def test_batch_larger_than_subset_is_refused():
    with pytest.raises(ConfigError, match="invalid batch_size=512"):
        CoupledTrainer(TrainConfig(**{**TINY, "batch_size": 512}))
