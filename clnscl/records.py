"""The one place that knows the names of the per-epoch metrics (torch-free).

A trainer record is a flat dict. Keys:

- bookkeeping: ``epoch``, ``step``, ``step_lr`` (the last step's learning rate; not
  ``lr``, which is the config's base rate), ``cum_lr`` (sum of learning rates so far, S_T),
  ``time_s``, ``fingerprint`` (hex digest of every (indices, augmentation) step so far);
- per model ``{obj}/{metric}`` for metric in MODEL_METRICS (``cl/loss``, ``nscl/knn_acc``);
  ``{obj}/probe_acc`` only in the final record;
- per compared objective (every objective but ``cl``, always against ``cl``):
  ``{obj}/{split}/{features}/{metric}`` for split in SPLITS, features in FEATURES and
  metric in ALIGNMENT_METRICS, plus ``{obj}/param_dist`` and ``{obj}/param_dist_layer``;
- headline aliases ``{obj}/{metric}`` = the ``test/backbone`` value (what the reference
  paper plots: backbone features on held-out images).
"""

from __future__ import annotations

OBJECTIVES = ("cl", "nscl", "supcon", "ce")
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
MODEL_METRICS = ("loss", "knn_acc", "ncc_acc")
FINAL_MODEL_METRICS = ("probe_acc",)
BOOKKEEPING = ("epoch", "step", "step_lr", "cum_lr", "time_s")


def alignment_key(obj: str, split: str, features: str, metric: str) -> str:
    return f"{obj}/{split}/{features}/{metric}"


def model_key(obj: str, metric: str) -> str:
    return f"{obj}/{metric}"


def compared(objectives) -> list[str]:
    """The objectives compared against CL, in a stable order."""
    return [o for o in OBJECTIVES if o in objectives and o != "cl"]
