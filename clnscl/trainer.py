"""The coupled trainer: one initialisation, one batch stream, one augmentation per step.

Every objective's model starts from a copy of the same weights, sees the same batches in
the same order and the same augmented tensors; each has its own optimiser with identical
hyperparameters (SCIENCE.md section 3). `run()` yields one flat record per evaluation
epoch (names in `clnscl.records`); storing them is the caller's business.

The whole state (models, optimisers, generators, position, fingerprints) saves to one
file and loads with ``weights_only=True``; a run stopped after any record and resumed
ends bit-identical on the CPU to one that never stopped.
"""

from __future__ import annotations

import copy
import hashlib
import os
import time
from collections.abc import Callable, Iterator

import torch

from . import alignment, evaluation, losses, records
from .augment import SimCLRAugment
from .config import ConfigError, TrainConfig
from .data import ImageData, load_data
from .models import Encoder, build_encoder
from .optim import build_optimizer, learning_rate, set_lr

CHECKPOINT_VERSION = 1
RSA_ROWS = 2000  # RSA on a seeded subsample: its RDMs grow as rows^2


class DivergedError(RuntimeError):
    """A loss turned NaN/Inf: names the objective, epoch and step."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"invalid device={name!r}: CUDA is not available here; allowed cpu, auto")
    return torch.device(name)


def objective_loss(obj: str, model: Encoder, z1, z2, y, cfg: TrainConfig) -> torch.Tensor:
    if obj == "cl":
        return losses.cl_loss(z1, z2, cfg.tau, include_positive=cfg.include_positive)
    if obj == "nscl":
        return losses.nscl_loss(z1, z2, y, cfg.tau, include_positive=cfg.include_positive)
    if obj == "supcon":
        return losses.supcon_loss(z1, z2, y, cfg.tau)
    if obj == "ce":
        return losses.ce_loss(model.classifier(z1), model.classifier(z2), y)
    raise ValueError(f"unknown objective {obj!r}")


def _seeded_rows(n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[: min(k, n)].sort().values


class CoupledTrainer:
    def __init__(self, cfg: TrainConfig, data: ImageData | None = None):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.data = data if data is not None else load_data(cfg, device=self.device)
        n_train = len(self.data.train_y)  # load_data refused batch_size > n_train
        self.steps_per_epoch = n_train // cfg.batch_size  # drop_last
        self.augment = SimCLRAugment(image_size=cfg.image_size, mean=self.data.mean, std=self.data.std)

        # one initialisation, copied to every objective
        torch.manual_seed(cfg.seed)
        init = build_encoder(cfg.arch, cfg.proj_dim, cfg.proj_hidden,
                             n_classes=self.data.num_classes if "ce" in cfg.objectives else None)
        self.models = {obj: copy.deepcopy(init).to(self.device) for obj in cfg.objectives}
        self.optimizers = {obj: build_optimizer(m, cfg) for obj, m in self.models.items()}

        # the shared randomness: batch order and augmentations, from explicit generators
        self.batch_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 1)
        self.aug_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 2)
        self.fingerprints = {obj: hashlib.sha256(b"clnscl").hexdigest() for obj in cfg.objectives}

        # fixed, seeded evaluation rows (the same rows for every model)
        self.eval_rows = {
            "train": _seeded_rows(n_train, cfg.eval_size, cfg.seed + 101).to(self.device),
            "test": _seeded_rows(len(self.data.test_y), cfg.eval_size, cfg.seed + 202).to(self.device),
        }
        self.epoch = 0
        self.step = 0
        self.cum_lr = 0.0
        self.lr = 0.0
        self.evaluated_epoch = -1
        self.epoch_losses: dict[str, float] = {}
        self.progress: Callable[[int, int], None] | None = None  # (step in epoch, steps per epoch)
        self._t0 = time.perf_counter()
        self._elapsed = 0.0

    @property
    def class_ids(self) -> list[int]:
        return list(self.data.class_ids)

    @property
    def finished(self) -> bool:
        return self.epoch >= self.cfg.epochs and self.evaluated_epoch == self.epoch

    # --- training ------------------------------------------------------------------
    def _step_digest(self, idx: torch.Tensor, pa: torch.Tensor, pb: torch.Tensor) -> bytes:
        h = hashlib.sha256()
        for t in (idx, pa, pb):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.digest()

    def _train_step(self, obj: str, views: torch.Tensor, y: torch.Tensor, digest: bytes) -> float:
        model, opt = self.models[obj], self.optimizers[obj]
        self.fingerprints[obj] = hashlib.sha256(bytes.fromhex(self.fingerprints[obj]) + digest).hexdigest()
        model.train()
        _, z = model(views)
        z1, z2 = z.chunk(2)
        loss = objective_loss(obj, model, z1, z2, y, self.cfg)
        if not torch.isfinite(loss):
            raise DivergedError(f"diverged: objective {obj} loss={loss.item()} at epoch "
                                f"{self.epoch + 1} step {self.step + 1} (tau={self.cfg.tau}, "
                                f"lr={self.lr:.4g}); lower the learning rate or raise tau")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    def train_epoch(self) -> dict[str, float]:
        cfg, B = self.cfg, self.cfg.batch_size
        perm = torch.randperm(len(self.data.train_y), generator=self.batch_gen).to(self.device)
        sums = {obj: torch.zeros((), device=self.device) for obj in self.models}
        for s in range(self.steps_per_epoch):
            idx = perm[s * B:(s + 1) * B]
            x, y = self.data.train_x[idx], self.data.train_y[idx]
            pa = self.augment.sample_params(B, self.aug_gen)
            pb = self.augment.sample_params(B, self.aug_gen)
            views = torch.cat([self.augment.apply(x, pa), self.augment.apply(x, pb)])
            digest = self._step_digest(idx, pa, pb)
            self.lr = learning_rate(self.step, self.steps_per_epoch, cfg)
            for obj in self.models:
                set_lr(self.optimizers[obj], self.lr)
                sums[obj] += self._train_step(obj, views, y, digest)
            self.cum_lr += self.lr
            self.step += 1
            if self.progress is not None:
                self.progress(s + 1, self.steps_per_epoch)
        self.epoch += 1
        self.epoch_losses = {obj: float(v) / self.steps_per_epoch for obj, v in sums.items()}
        return self.epoch_losses

    # --- evaluation ----------------------------------------------------------------
    def _features(self) -> dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """features[obj][split] = (h, z) on the fixed un-augmented evaluation rows."""
        out = {}
        for obj, model in self.models.items():
            out[obj] = {}
            for split, rows in self.eval_rows.items():
                x = (self.data.train_x if split == "train" else self.data.test_x)[rows]
                out[obj][split] = evaluation.extract_features(model, x, self.augment.normalize)
        return out

    def evaluate(self, final: bool = False) -> dict:
        cfg = self.cfg
        self._elapsed += time.perf_counter() - self._t0
        self._t0 = time.perf_counter()
        rec: dict = {"epoch": self.epoch, "step": self.step, "step_lr": self.lr, "cum_lr": self.cum_lr,
                     "time_s": self._elapsed}
        if len(set(self.fingerprints.values())) != 1:
            raise RuntimeError(f"shared randomness broken: fingerprints differ {self.fingerprints}")
        rec["fingerprint"] = self.fingerprints["cl"]
        feats = self._features()
        ytr = self.data.train_y[self.eval_rows["train"]]
        yte = self.data.test_y[self.eval_rows["test"]]
        for obj in self.models:
            if obj in self.epoch_losses:
                rec[records.model_key(obj, "loss")] = self.epoch_losses[obj]
            htr, hte = feats[obj]["train"][0], feats[obj]["test"][0]
            rec[records.model_key(obj, "knn_acc")] = evaluation.knn_accuracy(htr, ytr, hte, yte, k=cfg.knn_k)
            rec[records.model_key(obj, "ncc_acc")] = evaluation.ncc_accuracy(htr, ytr, hte, yte)
            if final and cfg.linear_probe:
                rec[records.model_key(obj, "probe_acc")] = evaluation.linear_probe_accuracy(
                    htr, ytr, hte, yte, seed=cfg.seed)
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
            "torch_rng": torch.get_rng_state(),
            "fingerprints": dict(self.fingerprints),
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
        torch.set_rng_state(state["torch_rng"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.cum_lr, self.lr = state["cum_lr"], state["lr"]
        self.evaluated_epoch = state["evaluated_epoch"]
        self.epoch_losses = dict(state["epoch_losses"])
        self.fingerprints = dict(state["fingerprints"])
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


__all__ = ["CoupledTrainer", "DivergedError", "objective_loss", "resolve_device"]
