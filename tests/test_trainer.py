"""Coupled trainer: shared randomness, records, resume, divergence (small CPU runs)."""
import json
import math
import warnings

import pytest
import torch

from clnscl import alignment, records
from clnscl.config import ConfigError, TrainConfig
from clnscl.losses import SingleClassBatchError
from clnscl.trainer import CoupledTrainer, DivergedError, SharedRandomnessError

TINY = dict(dataset="synthetic", n_classes=4, synthetic_train_per_class=32, synthetic_test_per_class=16,
            image_size=16, batch_size=32, epochs=3, eval_size=64, warmup_epochs=1, tau=0.5,
            objectives=("cl", "nscl", "supcon", "ce", "cl_indep"), seed=3, optimizer="sgd",
            lr=0.5)


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
    assert len({id(o) for o in tr.optimizers.values()}) == 5  # one optimiser each


def test_records_schedule_and_names(full_run):
    tr, recs = full_run
    assert [r["epoch"] for r in recs] == [0, 1, 2, 3]
    first, last = recs[0], recs[-1]
    # epoch 0: identical weights -> identical representations and zero parameter distance
    for obj in ("nscl", "supcon", "ce", "cl_indep"):
        assert first[f"{obj}/param_dist"] == 0.0 and first[f"{obj}/param_dist_layer"] == 0.0
        assert first[f"{obj}/cka"] == pytest.approx(1.0) and first[f"{obj}/test/proj/rho"] == pytest.approx(0.0, abs=1e-9)
        assert last[f"{obj}/param_dist"] > 0
        for split in records.SPLITS:
            for feat in records.FEATURES:
                for m in records.ALIGNMENT_METRICS:
                    assert records.alignment_key(obj, split, feat, m) in last
        assert last[f"{obj}/cka"] == last[f"{obj}/test/backbone/cka"]
    assert "cl/loss" not in first and math.isfinite(last["cl/loss"])
    assert all(f"{o}/probe_acc" in last for o in ("cl", "nscl", "supcon", "ce", "cl_indep"))
    assert not any(k.endswith("probe_acc") for k in recs[1])
    assert last["step"] == 3 * tr.steps_per_epoch and last["cum_lr"] > 0
    # NSCL drops negatives, so its loss is below CL's on the same batches
    assert last["nscl/loss"] <= last["cl/loss"]
    json.dumps(recs)  # records are plain JSON


def test_fingerprint_reproducible_and_advancing(full_run):
    _, recs = full_run
    assert len({r["fingerprint"] for r in recs}) == len(recs)  # advances each epoch
    again = list(CoupledTrainer(TrainConfig(**TINY)).run())
    assert [r["fingerprint"] for r in again] == [r["fingerprint"] for r in recs]
    assert [numeric(r) for r in again] == [numeric(r) for r in recs]  # same seed, same numbers
    other = CoupledTrainer(TrainConfig(**{**TINY, "seed": 4}))
    other.train_epoch()
    assert other.check_shared_randomness() != recs[1]["fingerprint"]


class _PerturbedViews(CoupledTrainer):
    """Feeds one coupled model views that differ from the others' in one pixel."""

    victim = "nscl"

    def _train_step(self, obj, views, y):
        if obj == self.victim:
            views = views.clone()
            views[0, 0, 0, 0] += 1e-3
        return super()._train_step(obj, views, y)


class _PermutedLabels(CoupledTrainer):
    def _train_step(self, obj, views, y):
        return super()._train_step(obj, views, y.roll(1) if obj == "supcon" else y)


@pytest.mark.parametrize("cls, victim", [(_PerturbedViews, "nscl"), (_PermutedLabels, "supcon")])
def test_audit_catches_a_model_fed_other_inputs(cls, victim):
    tr = cls(TrainConfig(**{**TINY, "epochs": 1}))
    tr.train_epoch()
    with pytest.raises(SharedRandomnessError, match=f"{victim} consumed other inputs"):
        tr.evaluate()


def test_control_consumes_its_own_stream_and_logs_its_seeds(full_run):
    tr, recs = full_run
    # the control is not coupled: its inputs differ, yet the audit of the others passes
    assert not torch.equal(tr.audits["cl_indep"], tr.audits["cl"])
    assert torch.equal(tr.audits["nscl"], tr.audits["cl"])
    seeds = {recs[-1]["cl_indep/batch_seed"], recs[-1]["cl_indep/aug_seed"]}
    assert seeds == {tr.stream_seeds["indep_batch"], tr.stream_seeds["indep_aug"]}
    assert not seeds & {tr.stream_seeds["batch"], tr.stream_seeds["aug"]}
    # same start, other batches: it moves away from CL (and further than the coupled NSCL)
    assert recs[-1]["cl_indep/param_dist"] > recs[-1]["nscl/param_dist"] > 0


def test_cl_trajectory_independent_of_companions():
    """CL's weights after training are bit-identical whichever models train beside it."""
    def cl_weights(objectives):
        tr = CoupledTrainer(TrainConfig(**{**TINY, "epochs": 2, "objectives": objectives}))
        tr.train_epoch()
        tr.train_epoch()
        return tr.models["cl"].state_dict()

    alone = cl_weights(("cl", "nscl"))
    crowd = cl_weights(("cl", "nscl", "supcon", "ce", "cl_indep"))
    for k, v in alone.items():
        assert torch.equal(v, crowd[k]), k


def test_drift_metrics(full_run):
    _, recs = full_run
    first, last = recs[0], recs[-1]
    for obj in TINY["objectives"]:
        assert first[f"{obj}/init_cka"] == pytest.approx(1.0)
        assert first[f"{obj}/weight_move"] == 0.0 and first[f"{obj}/knn_gain"] == 0.0
        assert last[f"{obj}/weight_move"] > 0.01
        assert last[f"{obj}/init_cka"] < 1.0 - 1e-6
        assert last[f"{obj}/knn_gain"] == pytest.approx(
            last[f"{obj}/knn_acc"] - first[f"{obj}/knn_acc"])
    assert first["eval_rows"] == 64 and first["knn_bank_rows"] == 4 * 32  # the whole subset


def test_weight_movement_counts_matrices_only():
    tr = CoupledTrainer(TrainConfig(**{**TINY, "epochs": 1}))
    m = tr.models["cl"]
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.mul_(3.0)  # BN scale moves a lot: not a learned feature
    assert alignment.weight_movement(m, tr.init_model) == 0.0
    with torch.no_grad():
        w = next(p for p in m.backbone.parameters() if p.ndim == 4)
        w.mul_(1.5)
    moved = alignment.weight_movement(m, tr.init_model)
    total = sum(p.detach().pow(2).sum() for p in tr.init_model.parameters() if p.ndim >= 2).sqrt()
    assert moved == pytest.approx(float(0.5 * w.detach().norm() / 1.5 / total), rel=1e-5)


def test_bank_is_capped_and_holds_the_alignment_rows():
    tr = CoupledTrainer(TrainConfig(**{**TINY, "knn_bank_max": 100, "eval_size": 50}))
    for split in ("train", "test"):
        bank, rows = tr.bank_rows[split], tr.eval_rows[split]
        assert len(rows) == 50 and len(bank) == min(100, len(tr._split(split)[1]))
        assert set(rows.tolist()) <= set(bank.tolist())
        assert torch.equal(bank[tr._eval_in_bank[split]], rows)
    with pytest.raises(ConfigError, match="invalid eval_size=200: allowed <= knn_bank_max=100"):
        TrainConfig(**{**TINY, "knn_bank_max": 100, "eval_size": 200})


def test_evaluation_leaves_the_live_models_untouched(full_run):
    tr = CoupledTrainer(TrainConfig(**{**TINY, "epochs": 1}))
    tr.train_epoch()
    before = {k: v.clone() for k, v in tr.models["cl"].state_dict().items()}
    tr.evaluate()
    for k, v in tr.models["cl"].state_dict().items():
        assert torch.equal(v, before[k]), k  # BN re-estimation works on a copy


def test_tiny_lars_run_warns_and_learning_run_does_not():
    with pytest.warns(UserWarning, match="at most .*lars_eta=0.001"):
        CoupledTrainer(TrainConfig(**{**TINY, "optimizer": "lars", "lr": 0.3}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CoupledTrainer(TrainConfig(**TINY))  # plain SGD: no closed-form bound, no warning
        CoupledTrainer(TrainConfig(**{**TINY, "optimizer": "lars", "lars_eta": 10.0}))


def test_lars_eta_reaches_the_optimizer():
    with pytest.warns(UserWarning, match="at most 8.75%"):  # eta x S_T / (1 - momentum)
        tr = CoupledTrainer(TrainConfig(**{**TINY, "optimizer": "lars", "lars_eta": 0.02}))
    assert {g["eta"] for g in tr.optimizers["cl"].param_groups} == {0.02}
    with pytest.raises(ConfigError, match="invalid lars_eta=0"):
        TrainConfig(**{**TINY, "lars_eta": 0})


def test_single_class_batch_names_what_happened():
    tr = CoupledTrainer(TrainConfig(**{**TINY, "objectives": ("cl", "nscl")}))
    x = tr.data.train_x[:4]
    views = torch.cat([x, x]).float()
    with pytest.raises(SingleClassBatchError, match=r"objective nscl .* all 4 samples .* class 2, "
                       r".* include_positive=true"):
        tr._train_step("nscl", tr.augment.normalize(views.to(torch.uint8)),
                       torch.full((4,), 2))


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


def test_deferred_divergence_check_names_the_first_bad_step():
    """The accelerator path (no host sync per step) still stops the epoch it diverged in."""
    tr = CoupledTrainer(TrainConfig(**{**TINY, "objectives": ("cl", "nscl")}))
    tr.check_every_step = False
    real = tr._train_step.__func__

    def poisoned(self, obj, views, y):
        if obj == "nscl" and self.step == 2:  # the third step of epoch 1
            with torch.no_grad():
                next(self.models["nscl"].projector.parameters()).fill_(float("nan"))
        return real(self, obj, views, y)

    tr._train_step = poisoned.__get__(tr)
    with pytest.raises(DivergedError, match=r"objective nscl loss not finite at epoch 1, first at step 3"):
        tr.train_epoch()
    assert tr.epoch == 0  # the diverged epoch is not counted


def test_batch_larger_than_subset_is_refused():
    with pytest.raises(ConfigError, match="invalid batch_size=512"):
        CoupledTrainer(TrainConfig(**{**TINY, "batch_size": 512}))
