"""The one place that knows the names of the per-epoch metrics (torch-free).

A trainer record is a flat dict. Keys:

- bookkeeping: ``epoch``, ``step``, ``step_lr`` (the last step's learning rate; not
  ``lr``, which is the config's base rate), ``cum_lr`` (sum of learning rates so far, S_T),
  ``time_s``, ``eval_rows`` (rows per split behind the alignment metrics),
  ``knn_bank_rows`` (train rows in the kNN/NCC/probe bank), ``fingerprint`` (digest of
  what the coupled models consumed so far: their input views and labels, checked equal);
- per model ``{obj}/{metric}`` for metric in MODEL_METRICS (``cl/loss``, ``nscl/knn_acc``);
  the drift-from-init controls ``{obj}/init_cka``, ``{obj}/weight_move``,
  ``{obj}/knn_gain`` are among them; ``{obj}/probe_acc`` only in the final record;
- with the uncoupled control: ``cl_indep/batch_seed`` and ``cl_indep/aug_seed``, the seeds
  of its own batch-order and augmentation streams;
- per compared objective (every objective but ``cl``, always against ``cl``):
  ``{obj}/{split}/{features}/{metric}`` for split in SPLITS, features in FEATURES and
  metric in ALIGNMENT_METRICS, plus ``{obj}/param_dist`` and ``{obj}/param_dist_layer``;
- headline aliases ``{obj}/{metric}`` = the ``test/backbone`` value (what the reference
  paper plots: backbone features on held-out images).

Which representation is measured: every feature (``backbone`` h and ``proj`` z) is taken
in eval mode, i.e. with BN running statistics, on un-augmented images. The losses see
train-mode BN (batch statistics) on augmented views, so ``proj`` alignment describes the
deployed projector, not the exact z of the loss; SCIENCE.md section 4 asks for the former.
"""

from __future__ import annotations

OBJECTIVES = ("cl", "nscl", "supcon", "ce", "cl_indep")
# The uncoupled control: CL from the same init with its own batch order and augmentations.
# CL-vs-CONTROL misalignment is what a shared start alone buys (SCIENCE.md section 5).
CONTROL = "cl_indep"
CLAIM_OBJECTIVES = ("nscl", "supcon", "ce")  # the supervised proxies compared in claim 3
SPLITS = ("train", "test")
FEATURES = ("backbone", "proj")
HEADLINE_SPLIT, HEADLINE_FEATURES = "test", "backbone"

# metrics comparing CL against another model's representations (see alignment.compare)
ALIGNMENT_METRICS = (
    "cka",            # linear CKA, biased
    "cka_debiased",   # linear CKA with the unbiased HSIC estimator
    "rsa",            # Spearman correlation of 1 - cosine RDMs
    "rho",            # ||H(S_cl - S_x)H||_F / ||H S_cl H||_F, cosine similarity matrices
    "cka_cos",        # CKA of the cosine kernels (= linear CKA of row-normalised features)
    "bound_sqrt",     # sqrt(1 - rho^2) lower bound on cka_cos (nan when rho >= 1)
    "bound_ratio",    # (1 - rho)/(1 + rho) lower bound on cka_cos (nan when rho >= 1)
)
PARAM_METRICS = ("param_dist", "param_dist_layer")
# drift from the shared initial model: a model that did not move is "aligned" by inertia
DRIFT_METRICS = (
    "init_cka",     # linear CKA, current vs initial test/backbone features (1 at epoch 0)
    "weight_move",  # ||W - W0||_F / ||W0||_F over conv/linear weight matrices
    "knn_gain",     # knn_acc minus the initial model's (BN statistics recalibrated)
)
MODEL_METRICS = ("loss", "knn_acc", "ncc_acc", *DRIFT_METRICS)
CONTROL_SEEDS = ("batch_seed", "aug_seed")
FINAL_MODEL_METRICS = ("probe_acc",)
BOOKKEEPING = ("epoch", "step", "step_lr", "cum_lr", "time_s", "eval_rows", "knn_bank_rows")


def alignment_key(obj: str, split: str, features: str, metric: str) -> str:
    return f"{obj}/{split}/{features}/{metric}"


def model_key(obj: str, metric: str) -> str:
    return f"{obj}/{metric}"


def compared(objectives) -> list[str]:
    """The objectives compared against CL, in a stable order."""
    return [o for o in OBJECTIVES if o in objectives and o != "cl"]
