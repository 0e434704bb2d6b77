"""The coupled trainer: one initialisation, one batch stream, one augmentation per step.

Every objective's model starts from a copy of the same weights, sees the same batches in
the same order and the same augmented tensors; each has its own optimiser with identical
hyperparameters (SCIENCE.md section 3). `run()` yields one flat record per evaluation
epoch (names in `clnscl.records`); storing them is the caller's business.

Controls (SCIENCE.md section 5): the optional objective ``cl_indep`` is CL from the same
initial weights whose batch order and augmentations come from its own two streams, so
CL-vs-cl_indep misalignment measures what a shared start alone buys; every model's drift
from the shared initial model (``init_cka``, ``weight_move``, ``knn_gain``) is measured at
every evaluation, against the initial model evaluated exactly like the others.

Evaluation (``eval_bn="recalibrate"``, the default): every model, the initial one
included, is evaluated as a copy whose BN statistics are re-estimated on the bank's
un-augmented training images. An untrained model's BN buffers (mean 0, variance 1) would
otherwise make it a strawman: a "kNN gain" could come from BN statistics alone.

The shared-randomness audit: each model folds a digest of the very tensors it consumed
(its input views and labels) into its own running digest on the device (no host sync per
step); at every evaluation the coupled models' digests must be equal, else
``SharedRandomnessError``. Feeding one model other views breaks it.

On CUDA the trainer sets cuDNN to deterministic kernels (``cudnn.deterministic = True``,
``benchmark = False``); the remaining non-deterministic kernels (atomic adds in backward
of some ops) can make GPU runs of the same seed differ in the last bits. Bit-identical
repeats are promised on the CPU only.

The whole state (models, optimisers, generators, position, audit digests) saves to one
file and loads with ``weights_only=True``; a run stopped after any record and resumed
ends bit-identical on the CPU to one that never stopped.
"""

from __future__ import annotations

import copy
import hashlib
import os
import time
import warnings
from collections.abc import Callable, Iterator

import torch

from . import alignment, evaluation, losses, records
from .augment import SimCLRAugment
from .config import ConfigError, TrainConfig
from .data import ImageData, load_data
from .models import Encoder, build_encoder
from .optim import build_optimizer, learning_rate, set_lr

CHECKPOINT_VERSION = 2
RSA_ROWS = 2000  # RSA on a seeded subsample: its RDMs grow as rows^2
# Warn when even perfectly aligned LARS steps could not move the weights this far (relative).
TINY_WEIGHT_MOVE = 0.1
_AUDIT_SEED = 20240229  # fixed: the audit's projection vectors are not part of the trial


class SharedRandomnessError(RuntimeError):
    """Coupled models consumed different inputs: the protocol of SCIENCE.md section 3 broke."""


class DivergedError(RuntimeError):
    """A loss turned NaN/Inf: names the objective, epoch and step."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"invalid device={name!r}: CUDA is not available here; allowed cpu, auto")
    return torch.device(name)


def objective_loss(obj: str, model: Encoder, z1, z2, y, cfg: TrainConfig) -> torch.Tensor:
    if obj in ("cl", "cl_indep"):  # the control is CL on its own stream
        return losses.cl_loss(z1, z2, cfg.tau, include_positive=cfg.include_positive)
    if obj == "nscl":
        return losses.nscl_loss(z1, z2, y, cfg.tau, include_positive=cfg.include_positive)
    if obj == "supcon":
        return losses.supcon_loss(z1, z2, y, cfg.tau)
    if obj == "ce":
        return losses.ce_loss(model.classifier(z1), model.classifier(z2), y)
    raise ValueError(f"unknown objective {obj!r}")


def _seeded_rows(n: int, sizes: tuple[int, ...], seed: int) -> list[torch.Tensor]:
    """Nested seeded row sets: the first ``k`` of one permutation for each k, sorted, so a
    smaller set (alignment rows) is always inside a larger one (the kNN bank)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return [perm[: min(k, n)].sort().values for k in sizes]


def stream_seeds(seed: int) -> dict[str, int]:
    """Seeds of the batch-order and augmentation streams: shared by the coupled models, and
    the uncoupled control's own pair."""
    base = seed * 1_000_003
    return {"batch": base + 1, "aug": base + 2, "indep_batch": base + 3, "indep_aug": base + 4}


def expected_weight_move_bound(cfg: TrainConfig, steps_per_epoch: int) -> float | None:
    """Most a LARS run can move a weight matrix, relative: eta x S_T / (1 - momentum), the
    movement if every step pointed the same way. None for plain SGD (no closed form)."""
    if cfg.optimizer != "lars":
        return None
    total = sum(learning_rate(t, steps_per_epoch, cfg) for t in range(cfg.epochs * steps_per_epoch))
    return cfg.lars_eta * total / max(1e-12, 1.0 - cfg.momentum)


class CoupledTrainer:
    def __init__(self, cfg: TrainConfig, data: ImageData | None = None):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.data = data if data is not None else load_data(cfg, device=self.device)
        n_train = len(self.data.train_y)  # load_data refused batch_size > n_train
        self.steps_per_epoch = n_train // cfg.batch_size  # drop_last
        st = cfg.aug_color_strength
        self.augment = SimCLRAugment(image_size=cfg.image_size, mean=self.data.mean, std=self.data.std,
                                     jitter=(0.8 * st, 0.8 * st, 0.8 * st, 0.2 * st),
                                     p_gray=cfg.aug_gray_prob, crop_scale=(cfg.aug_crop_min, 1.0))

        if self.device.type == "cuda":
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False

        # one initialisation, copied to every objective (and kept as the drift reference)
        torch.manual_seed(cfg.seed)
        init = build_encoder(cfg.arch, cfg.proj_dim, cfg.proj_hidden,
                             n_classes=self.data.num_classes if "ce" in cfg.objectives else None,
                             cnn_width=cfg.cnn_width)
        self.models = {obj: copy.deepcopy(init).to(self.device) for obj in cfg.objectives}
        self.optimizers = {obj: build_optimizer(m, cfg) for obj, m in self.models.items()}
        self.init_model = copy.deepcopy(init).to(self.device)
        self._init_ref: dict | None = None  # features/accuracies of the initial model, lazily

        # the shared randomness: batch order and augmentations, from explicit generators;
        # the uncoupled control draws both from its own pair of streams
        self.stream_seeds = stream_seeds(cfg.seed)
        self.batch_gen = torch.Generator().manual_seed(self.stream_seeds["batch"])
        self.aug_gen = torch.Generator().manual_seed(self.stream_seeds["aug"])
        self.indep_batch_gen = torch.Generator().manual_seed(self.stream_seeds["indep_batch"])
        self.indep_aug_gen = torch.Generator().manual_seed(self.stream_seeds["indep_aug"])
        self.coupled = [obj for obj in cfg.objectives if obj != records.CONTROL]

        # the audit: per model, a float64 running digest of the inputs it consumed
        pg = torch.Generator().manual_seed(_AUDIT_SEED)
        n_pix = 3 * cfg.image_size * cfg.image_size
        self._audit_pix = torch.randn(n_pix, 2, generator=pg, dtype=torch.float64).to(self.device)
        self._audit_pos = torch.randn(2 * cfg.batch_size, generator=pg, dtype=torch.float64).to(self.device)
        self.audits = {obj: torch.zeros(6, dtype=torch.float64, device=self.device)
                       for obj in cfg.objectives}
        # NaN/Inf check: at every step on the CPU (no cost), once per epoch elsewhere (a
        # per-step check is a host sync that stalls an accelerator's queue)
        self.check_every_step = self.device.type == "cpu"
        # first non-finite step per model (-1: none), for the per-epoch check
        self._nonfinite_step = {obj: torch.full((), -1, dtype=torch.long, device=self.device)
                                for obj in cfg.objectives}

        # fixed, seeded rows (the same for every model): alignment rows inside the kNN bank
        n_test = len(self.data.test_y)
        self.eval_rows, self.bank_rows = {}, {}
        for split, n, seed in (("train", n_train, cfg.seed + 101),
                               ("test", n_test, cfg.seed + 202)):
            rows, bank = _seeded_rows(n, (cfg.eval_size, cfg.knn_bank_max), seed)
            self.eval_rows[split], self.bank_rows[split] = rows.to(self.device), bank.to(self.device)
        # position of each alignment row inside its bank (both sorted, eval rows a subset)
        self._eval_in_bank = {split: torch.searchsorted(self.bank_rows[split], self.eval_rows[split])
                              for split in ("train", "test")}
        self.epoch = 0
        self.step = 0
        self.cum_lr = 0.0
        self.lr = 0.0
        self.evaluated_epoch = -1
        self.epoch_losses: dict[str, float] = {}
        self.progress: Callable[[int, int], None] | None = None  # (step in epoch, steps per epoch)
        self._t0 = time.perf_counter()
        self._elapsed = 0.0
        self.weight_move_bound = expected_weight_move_bound(cfg, self.steps_per_epoch)
        if self.weight_move_bound is not None and self.weight_move_bound < TINY_WEIGHT_MOVE:
            warnings.warn(
                f"this run can move its weight matrices by at most {self.weight_move_bound:.2%} "
                f"(LARS: lars_eta={cfg.lars_eta:g} x sum of learning rates "
                f"{self.weight_move_bound * (1 - cfg.momentum) / cfg.lars_eta:.3g} / "
                f"(1 - momentum)): the models will stay at their shared initialisation and "
                f"look 'aligned' by inertia. Raise lr, epochs or lars_eta, or use "
                f"optimizer=sgd.", UserWarning, stacklevel=2)

    @property
    def class_ids(self) -> list[int]:
        return list(self.data.class_ids)

    @property
    def finished(self) -> bool:
        return self.epoch >= self.cfg.epochs and self.evaluated_epoch == self.epoch

    # --- training ------------------------------------------------------------------
    def _input_digest(self, views: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Float64 digest of one step's inputs, on the device: two random projections of
        every view's pixels, weighted by position in the batch, and one of the labels."""
        n = views.shape[0]
        pix = views.reshape(n, -1).to(torch.float64) @ self._audit_pix  # (2B, 2)
        pos = self._audit_pos[:n]
        lab = y.to(torch.float64) @ self._audit_pos[: len(y)]
        return torch.cat([pos @ pix, lab.reshape(1)])

    def _audit(self, obj: str, views: torch.Tensor, y: torch.Tensor) -> None:
        d = self._input_digest(views, y)
        self.audits[obj][:3] += d
        self.audits[obj][3:] += d * float(self.step % 1009 + 1)  # order of steps matters

    def _train_step(self, obj: str, views: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        model, opt = self.models[obj], self.optimizers[obj]
        self._audit(obj, views, y)
        model.train()
        _, z = model(views)
        z1, z2 = z.chunk(2)
        try:
            loss = objective_loss(obj, model, z1, z2, y, self.cfg)
        except losses.SingleClassBatchError:
            only = int(y[0])
            raise losses.SingleClassBatchError(
                f"objective {obj} at epoch {self.epoch + 1} step {self.step + 1}: all "
                f"{len(y)} samples of the batch belong to class {only}, so no anchor has a "
                f"negative and the loss is undefined. With n_classes={self.cfg.n_classes} "
                f"and batch_size={self.cfg.batch_size} such batches occur by chance; use a "
                f"larger batch_size or n_classes, or include_positive=true") from None
        if self.check_every_step:  # free on the CPU: stop at the very step
            if not torch.isfinite(loss):
                raise DivergedError(f"diverged: objective {obj} loss={loss.item()} at epoch "
                                    f"{self.epoch + 1} step {self.step + 1} (tau={self.cfg.tau}, "
                                    f"lr={self.lr:.4g}); lower the learning rate or raise tau")
        else:  # on an accelerator a per-step check would stall the queue: flag, check per epoch
            first = self._nonfinite_step[obj]
            bad = ~torch.isfinite(loss.detach())
            self._nonfinite_step[obj] = torch.where(bad & (first < 0), self.step + 1, first)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    def _views(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Two augmented views of the batch, stacked (2B, 3, H, W), from one generator."""
        B = len(x)
        pa = self.augment.sample_params(B, gen)
        pb = self.augment.sample_params(B, gen)
        return torch.cat([self.augment.apply(x, pa), self.augment.apply(x, pb)])

    def train_epoch(self) -> dict[str, float]:
        cfg, B = self.cfg, self.cfg.batch_size
        n = len(self.data.train_y)
        perm = torch.randperm(n, generator=self.batch_gen).to(self.device)
        control = records.CONTROL in self.models
        if control:
            perm_c = torch.randperm(n, generator=self.indep_batch_gen).to(self.device)
        sums = {obj: torch.zeros((), device=self.device) for obj in self.models}
        for s in range(self.steps_per_epoch):
            idx = perm[s * B:(s + 1) * B]
            x, y = self.data.train_x[idx], self.data.train_y[idx]
            views = self._views(x, self.aug_gen)  # augment once, feed every coupled model
            self.lr = learning_rate(self.step, self.steps_per_epoch, cfg)
            for obj in self.coupled:
                set_lr(self.optimizers[obj], self.lr)
                sums[obj] += self._train_step(obj, views, y)
            if control:
                idc = perm_c[s * B:(s + 1) * B]
                views_c = self._views(self.data.train_x[idc], self.indep_aug_gen)
                set_lr(self.optimizers[records.CONTROL], self.lr)
                sums[records.CONTROL] += self._train_step(records.CONTROL, views_c,
                                                          self.data.train_y[idc])
            self.cum_lr += self.lr
            self.step += 1
            if self.progress is not None:
                self.progress(s + 1, self.steps_per_epoch)
        self._check_finite()
        self.epoch += 1
        self.epoch_losses = {obj: float(v) / self.steps_per_epoch for obj, v in sums.items()}
        return self.epoch_losses

    def _check_finite(self) -> None:
        """Accelerators: one host sync per epoch for the deferred NaN/Inf check."""
        for obj, first in self._nonfinite_step.items():
            step = int(first)
            if step > 0:
                raise DivergedError(f"diverged: objective {obj} loss not finite at epoch "
                                    f"{self.epoch + 1}, first at step {step} (tau={self.cfg.tau}); "
                                    f"lower the learning rate or raise tau")

    def check_shared_randomness(self) -> str:
        """Raise SharedRandomnessError unless every coupled model consumed the same inputs;
        return the common digest (hex)."""
        ref = self.audits["cl"]
        differ = [obj for obj in self.coupled if not torch.equal(self.audits[obj], ref)]
        if differ:
            raise SharedRandomnessError(
                f"shared randomness broken by epoch {self.epoch}: {', '.join(differ)} consumed "
                f"other inputs (views or labels) than cl")
        return hashlib.sha256(ref.cpu().numpy().tobytes()).hexdigest()

    # --- evaluation ----------------------------------------------------------------
    def _split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.data.train_x, self.data.train_y) if split == "train" else \
            (self.data.test_x, self.data.test_y)

    def _bank_features(self, model) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """(h, z) of the bank rows of each split: kNN bank (train) and queries (test), in
        eval mode, BN statistics as ``cfg.eval_bn`` says (the live model is never touched)."""
        if self.cfg.eval_bn == "recalibrate":
            x, _ = self._split("train")
            model = evaluation.recalibrate_batchnorm(copy.deepcopy(model), x[self.bank_rows["train"]],
                                                     self.augment.normalize)
        out = {}
        for split, rows in self.bank_rows.items():
            x, _ = self._split(split)
            out[split] = evaluation.extract_features(model, x[rows], self.augment.normalize)
        return out

    def _quality(self, bank: dict, final: bool) -> dict[str, float]:
        ytr = self.data.train_y[self.bank_rows["train"]]
        yte = self.data.test_y[self.bank_rows["test"]]
        htr, hte = bank["train"][0], bank["test"][0]
        out = {"knn_acc": evaluation.knn_accuracy(htr, ytr, hte, yte, k=self.cfg.knn_k),
               "ncc_acc": evaluation.ncc_accuracy(htr, ytr, hte, yte)}
        if final and self.cfg.linear_probe:
            out["probe_acc"] = evaluation.linear_probe_accuracy(htr, ytr, hte, yte, seed=self.cfg.seed)
        return out

    def init_reference(self) -> dict:
        """The untrained shared model, evaluated like the others: its test/backbone features
        on the alignment rows and its kNN/NCC accuracy."""
        if self._init_ref is None:
            bank = self._bank_features(self.init_model)
            q = self._quality(bank, final=False)
            self._init_ref = {"test_h": bank["test"][0][self._eval_in_bank["test"]], **q}
        return self._init_ref

    def evaluate(self, final: bool = False) -> dict:
        cfg = self.cfg
        self._elapsed += time.perf_counter() - self._t0
        self._t0 = time.perf_counter()
        rec: dict = {"epoch": self.epoch, "step": self.step, "step_lr": self.lr, "cum_lr": self.cum_lr,
                     "time_s": self._elapsed, "eval_rows": len(self.eval_rows["test"]),
                     "knn_bank_rows": len(self.bank_rows["train"])}
        rec["fingerprint"] = self.check_shared_randomness()
        if records.CONTROL in self.models:
            rec[records.model_key(records.CONTROL, "batch_seed")] = self.stream_seeds["indep_batch"]
            rec[records.model_key(records.CONTROL, "aug_seed")] = self.stream_seeds["indep_aug"]
        init = self.init_reference()
        feats = {}  # obj -> split -> (h, z) on the alignment rows
        for obj, model in self.models.items():
            if obj in self.epoch_losses:
                rec[records.model_key(obj, "loss")] = self.epoch_losses[obj]
            bank = self._bank_features(model)
            quality = self._quality(bank, final)
            for name, value in quality.items():
                rec[records.model_key(obj, name)] = value
            feats[obj] = {split: tuple(t[self._eval_in_bank[split]] for t in bank[split])
                          for split in bank}
            del bank
            rec[records.model_key(obj, "knn_gain")] = quality["knn_acc"] - init["knn_acc"]
            rec[records.model_key(obj, "init_cka")] = alignment.linear_cka(
                feats[obj]["test"][0], init["test_h"])
            rec[records.model_key(obj, "weight_move")] = alignment.weight_movement(
                _encoder_view(model), _encoder_view(self.init_model))
        for obj in records.compared(cfg.objectives):
            for split in records.SPLITS:
                for fi, features in enumerate(records.FEATURES):
                    m = alignment.compare(feats["cl"][split][fi], feats[obj][split][fi],
                                          rsa_rows=RSA_ROWS, seed=cfg.seed)
                    for name, value in m.items():
                        rec[records.alignment_key(obj, split, features, name)] = value
                        if (split, features) == (records.HEADLINE_SPLIT, records.HEADLINE_FEATURES):
                            rec[records.model_key(obj, name)] = value
            rec.update({records.model_key(obj, k): v for k, v in alignment.parameter_distance(
                _encoder_view(self.models["cl"]), _encoder_view(self.models[obj])).items()})
        self.evaluated_epoch = self.epoch
        return rec

    def run(self) -> Iterator[dict]:
        """Yield the records still to come: epoch 0 (before training), every eval_every
        epochs, and the last epoch (with the linear probe). Resumes where the state is."""
        cfg = self.cfg
        if self.evaluated_epoch < self.epoch:
            yield self.evaluate(final=self.epoch >= cfg.epochs)
        while self.epoch < cfg.epochs:
            self.train_epoch()
            last = self.epoch >= cfg.epochs
            if last or self.epoch % cfg.eval_every == 0:
                yield self.evaluate(final=last)

    # --- state ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "version": CHECKPOINT_VERSION,
            "config": self.cfg.to_dict(),
            "epoch": self.epoch, "step": self.step, "cum_lr": self.cum_lr, "lr": self.lr,
            "evaluated_epoch": self.evaluated_epoch,
            "epoch_losses": dict(self.epoch_losses),
            "elapsed": self._elapsed + time.perf_counter() - self._t0,
            "models": {k: m.state_dict() for k, m in self.models.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "batch_gen": self.batch_gen.get_state(),
            "aug_gen": self.aug_gen.get_state(),
            "indep_batch_gen": self.indep_batch_gen.get_state(),
            "indep_aug_gen": self.indep_aug_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "audits": {k: a.cpu() for k, a in self.audits.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version {state.get('version')!r}, expected {CHECKPOINT_VERSION}")
        if TrainConfig.from_dict(state["config"]) != self.cfg:
            raise ValueError("checkpoint was written by a different config; refusing to resume "
                             f"(checkpoint: {state['config']}, now: {self.cfg.to_dict()})")
        for k, m in self.models.items():
            m.load_state_dict(state["models"][k])
            self.optimizers[k].load_state_dict(state["optimizers"][k])
        self.batch_gen.set_state(state["batch_gen"])
        self.aug_gen.set_state(state["aug_gen"])
        self.indep_batch_gen.set_state(state["indep_batch_gen"])
        self.indep_aug_gen.set_state(state["indep_aug_gen"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.cum_lr, self.lr = state["cum_lr"], state["lr"]
        self.evaluated_epoch = state["evaluated_epoch"]
        self.epoch_losses = dict(state["epoch_losses"])
        self.audits = {k: a.to(self.device) for k, a in state["audits"].items()}
        self._elapsed, self._t0 = state["elapsed"], time.perf_counter()

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Atomic write: a crash mid-save leaves the previous checkpoint intact."""
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}"
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
        self.load_state_dict(state)


def _encoder_view(model: Encoder) -> torch.nn.Module:
    """Backbone + projector only: the CE head is not part of the compared encoder."""
    return torch.nn.ModuleDict({"backbone": model.backbone, "projector": model.projector})


__all__ = ["CoupledTrainer", "DivergedError", "SharedRandomnessError", "expected_weight_move_bound",
           "objective_loss", "resolve_device", "stream_seeds"]
