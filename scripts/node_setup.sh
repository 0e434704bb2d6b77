#!/usr/bin/env bash
# The one bootstrap of every node of cluster.yaml (head and GPU workers, run by
# setup_commands inside Ray's container). Idempotent; safe to rerun (`ray up` again).
#
#   - the project (rsynced to $CLNSCL_DIR by file_mounts) is complete (clnscl/data/ too);
#   - Ray, MLflow, torch, boto3 and psycopg2 at the versions of scripts/constraints.txt
#     (the driver's): Ray is kept when the image already has the pinned version;
#   - the project installed editable (`pip install -e`), the same way on every node;
#   - token authentication and no usage stats for every shell (the `ray exec` driver too);
#   - the Ray auth token is present (copied by file_mounts from ~/.ray/auth_token).
#
# Environment: CLNSCL_DIR (default ~/clnscl), PYTHON (default python3).
# tests/test_cluster.py runs it on the development machine in a scratch folder.
set -euo pipefail

CLNSCL_DIR="${CLNSCL_DIR:-$HOME/clnscl}"
PYTHON="${PYTHON:-python3}"
CONSTRAINTS="$CLNSCL_DIR/scripts/constraints.txt"
say() { echo "[node_setup] $*"; }
die() { echo "[node_setup] ERROR: $*" >&2; exit 1; }

[ -f "$CLNSCL_DIR/pyproject.toml" ] || die "no project at $CLNSCL_DIR (file_mounts '~/clnscl': '.'; run 'ray up' from the repository root)"
for f in clnscl/__init__.py clnscl/data/__init__.py clnscl/data/synthetic.py sweeps/grid.py analysis/__init__.py; do
  [ -f "$CLNSCL_DIR/$f" ] || die "$CLNSCL_DIR/$f is missing: the rsync excludes of cluster.yaml dropped it (anchor them: '/data/', not 'data')"
done
[ -s "$HOME/.ray/auth_token" ] || die "missing $HOME/.ray/auth_token - run 'ray get-auth-token --generate' locally before 'ray up'"
[ -f "$CONSTRAINTS" ] || die "missing $CONSTRAINTS"

pin() { sed -n "s/^$1==//p" "$CONSTRAINTS"; }
want_ray="$(pin ray)"
have_ray="$("$PYTHON" -c 'import ray; print(ray.__version__)' 2>/dev/null || true)"
pip_install() { "$PYTHON" -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS" "$@"; }
if [ "$have_ray" != "$want_ray" ]; then
  say "installing ray $want_ray (found '${have_ray:-none}')"
  pip_install "ray[default,tune]==$want_ray"
else
  say "ray $have_ray already installed (the image's)"
fi
pip_install mlflow torch boto3 psycopg2-binary
say "installing the project from $CLNSCL_DIR (editable)"
pip_install --no-build-isolation -e "$CLNSCL_DIR"

for line in "export RAY_AUTH_MODE=token" "export RAY_USAGE_STATS_ENABLED=0" "export MLFLOW_DISABLE_TELEMETRY=true"; do
  grep -qxF "$line" "$HOME/.bashrc" 2>/dev/null || echo "$line" >> "$HOME/.bashrc"
done

# the versions this node runs must be the pinned ones, and the package must import whole
cd /
"$PYTHON" - "$CONSTRAINTS" "$CLNSCL_DIR" <<'PY'
import sys
from importlib import metadata

pins = dict(line.strip().split("==", 1) for line in open(sys.argv[1])
            if "==" in line and not line.startswith("#"))
bad = {p: (metadata.version(p), v) for p, v in pins.items()
       if metadata.version(p).split("+")[0] != v}
if bad:
    sys.exit(f"[node_setup] ERROR: versions differ from scripts/constraints.txt: {bad}")
import os

import clnscl.data, clnscl.trainer, sweeps.grid, sweeps.trainable  # noqa: E401,F401

where = os.path.dirname(os.path.dirname(os.path.realpath(clnscl.__file__)))
if where != os.path.realpath(sys.argv[2]):
    sys.exit(f"[node_setup] ERROR: clnscl imports from {where}, not {sys.argv[2]}")
print("[node_setup] ok: " + ", ".join(f"{p} {v}" for p, v in pins.items())
      + f"; clnscl from {where}")
PY
