"""Single coupled trial from the command line: `python -m clnscl.train --classes 10 --tau 0.5`.

Prints progress and a per-epoch table; `--json out.json` writes the records;
`--checkpoint-dir DIR` saves the whole state after every record and resumes from it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

from .config import ConfigError, TrainConfig, parse_assignment

# CLI flag -> TrainConfig field (flags users type; every other field via --set FIELD=VALUE)
FLAGS = {
    "dataset": "dataset", "data_root": "data_root", "classes": "n_classes", "tau": "tau",
    "batch_size": "batch_size", "epochs": "epochs", "objectives": "objectives",
    "seed": "seed", "device": "device", "arch": "arch", "lr": "lr", "lr_rule": "lr_rule",
    "optimizer": "optimizer", "eval_every": "eval_every", "eval_size": "eval_size",
    "image_size": "image_size", "train_per_class": "synthetic_train_per_class",
}
TABLE_COLUMNS = ["epoch", "cl/loss", "nscl/loss", "cl/knn_acc", "cl/knn_gain", "cl/init_cka",
                 "nscl/cka", "nscl/rsa", "nscl/rho", "nscl/param_dist", "cl_indep/rho",
                 "supcon/cka", "ce/cka", "time_s"]


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m clnscl.train", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default=d.dataset,
                   help="synthetic, cifar10, cifar100, tinyimagenet, miniimagenet, imagefolder")
    p.add_argument("--data-root", default=d.data_root)
    p.add_argument("--download", action="store_true", help="download CIFAR when missing")
    p.add_argument("--classes", type=int, default=d.n_classes, help="number of classes C")
    p.add_argument("--tau", type=float, default=d.tau)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--objectives", default=",".join(d.objectives), help="cl plus any of nscl,supcon,ce,cl_indep (cl_indep: the uncoupled CL control)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="cpu, cuda, cuda:N, auto")
    p.add_argument("--arch", default=d.arch, help="smallcnn, resnet18, resnet50")
    p.add_argument("--optimizer", default=d.optimizer, help="lars, sgd")
    p.add_argument("--lr", type=float, default=d.lr, help="base lr at B=256")
    p.add_argument("--lr-rule", default=d.lr_rule, help="linear, sqrt, constant")
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--eval-size", type=int, default=d.eval_size)
    p.add_argument("--image-size", type=int, default=d.image_size)
    p.add_argument("--train-per-class", type=int, default=d.synthetic_train_per_class,
                   help="synthetic data: training images per class")
    p.add_argument("--include-positive", action="store_true", help="NT-Xent variant of CL/NSCL")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any other TrainConfig field, e.g. --set warmup_epochs=0")
    p.add_argument("--checkpoint-dir", default=None, help="save state after each record; resume from it")
    p.add_argument("--json", default=None, help="write the records to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {field: getattr(args, flag) for flag, field in FLAGS.items()}
    values["download"] = args.download
    values["include_positive"] = args.include_positive
    values.update(parse_assignment(item) for item in args.set)
    return TrainConfig(**values)


def format_table_row(rec: dict, columns: list[str]) -> str:
    cells = []
    for c in columns:
        v = rec.get(c)
        if v is None:
            cells.append(f"{'-':>10}")
        elif c == "epoch":
            cells.append(f"{v:>10d}")
        elif isinstance(v, float) and (abs(v) >= 1000 or (v != 0 and abs(v) < 1e-3)) and math.isfinite(v):
            cells.append(f"{v:>10.3e}")
        else:
            cells.append(f"{v:>10.4f}")
    return " ".join(cells)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        parser.error(str(e))  # exits 2, before any data is loaded

    from .trainer import CoupledTrainer, DivergedError

    t0 = time.perf_counter()
    try:
        trainer = CoupledTrainer(cfg)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ckpt = None
    if args.checkpoint_dir:
        os.makedirs(args.checkpoint_dir, exist_ok=True)
        ckpt = os.path.join(args.checkpoint_dir, "state.pt")
        if os.path.exists(ckpt):
            trainer.load_checkpoint(ckpt)
            print(f"resumed from {ckpt} at epoch {trainer.epoch}", file=sys.stderr)
    print(f"{cfg.run_name()}  dataset={cfg.dataset} classes={trainer.class_ids} "
          f"objectives={','.join(cfg.objectives)} train images={len(trainer.data.train_y)} "
          f"steps/epoch={trainer.steps_per_epoch} device={trainer.device} "
          f"(data + models ready in {time.perf_counter() - t0:.1f}s)", file=sys.stderr)
    if not args.quiet and sys.stderr.isatty():
        trainer.progress = lambda s, n: print(f"\r  epoch {trainer.epoch + 1}: step {s}/{n}",
                                              end="" if s < n else "\r", file=sys.stderr, flush=True)
    columns = [c for c in TABLE_COLUMNS if c.split("/")[0] in cfg.objectives or "/" not in c]
    print(" ".join(f"{c:>10}" for c in columns), flush=True)
    history = []
    try:
        for rec in trainer.run():
            history.append(rec)
            print(format_table_row(rec, columns), flush=True)
            if ckpt:
                trainer.save_checkpoint(ckpt)
    except DivergedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    finally:
        if args.json and history:
            with open(args.json, "w") as f:
                json.dump({"config": cfg.to_dict(), "class_ids": trainer.class_ids,
                           "records": history}, f, indent=1)
    final = history[-1] if history else {}
    probes = {o: final.get(f"{o}/probe_acc") for o in cfg.objectives if f"{o}/probe_acc" in final}
    if probes:
        print("linear probe accuracy: " + ", ".join(f"{o}={v:.4f}" for o, v in probes.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
