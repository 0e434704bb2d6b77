#!/usr/bin/env bash
# A supervised MLflow tracking server (the head node of cluster.yaml; also usable anywhere).
#
#   mlflow_server.sh start    start the supervisor (returns once the server answers)
#   mlflow_server.sh stop     stop the supervisor and its server (their process group only)
#   mlflow_server.sh status   exit 0 when the server answers
#
# The supervisor restarts the server whenever it exits (crash, OOM kill), after 3 s.
# Environment:
#   MLFLOW_BACKEND_URI  required: postgresql://user:pw@host:5432/db (e.g. RDS; survives
#                       `ray down`) or sqlite:////abs/path/mlflow.db (only for tests/laptops)
#   MLFLOW_ARTIFACTS    artifact destination: s3://BUCKET/mlartifacts or /abs/folder
#   MLFLOW_HOSTS        addresses to listen on, space-separated (default 127.0.0.1); the head
#                       uses "127.0.0.1 <private VPC address>" (SSH tunnel + workers)
#   MLFLOW_PORT         default 5000
#   MLFLOW_DIR          pid files and logs (default ~/mlflow)
#   MLFLOW_BIN          the mlflow executable (default: mlflow on PATH)
set -euo pipefail

MLFLOW_DIR="${MLFLOW_DIR:-$HOME/mlflow}"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"
MLFLOW_HOSTS="${MLFLOW_HOSTS:-127.0.0.1}"
MLFLOW_BIN="${MLFLOW_BIN:-mlflow}"
SUP_PID="$MLFLOW_DIR/supervisor.pid"
SRV_PID="$MLFLOW_DIR/server.pid"
mkdir -p "$MLFLOW_DIR"
first_host="${MLFLOW_HOSTS%% *}"
url="http://$first_host:$MLFLOW_PORT"

answers() { "${PYTHON:-python3}" - "$url" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1] + "/health", timeout=3) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

supervise() {
  local opts=() extra=""
  for h in $MLFLOW_HOSTS; do
    [ "$h" = "$first_host" ] || extra="$extra --bind $h:$MLFLOW_PORT"
  done
  [ -n "$extra" ] && opts=(--gunicorn-opts "$extra")   # several addresses: gunicorn binds all
  local art=()
  [ -n "${MLFLOW_ARTIFACTS:-}" ] && art=(--artifacts-destination "$MLFLOW_ARTIFACTS")
  trap 'kill "$(cat "$SRV_PID" 2>/dev/null)" 2>/dev/null; rm -f "$SRV_PID"; exit 0' TERM INT
  while true; do
    echo "[supervisor] $(date -u +%FT%TZ) starting mlflow server on $MLFLOW_HOSTS:$MLFLOW_PORT" >&2
    "$MLFLOW_BIN" server --backend-store-uri "$MLFLOW_BACKEND_URI" "${art[@]}" \
      --host "$first_host" --port "$MLFLOW_PORT" --workers "${MLFLOW_WORKERS:-2}" "${opts[@]}" &
    echo $! > "$SRV_PID"
    wait $! || true
    echo "[supervisor] $(date -u +%FT%TZ) mlflow server exited; restarting in 3 s" >&2
    sleep 3
  done
}

case "${1:-}" in
  start)
    [ -n "${MLFLOW_BACKEND_URI:-}" ] || { echo "MLFLOW_BACKEND_URI is not set" >&2; exit 2; }
    # SQLAlchemy 2.1 reads postgresql:// as psycopg 3; with psycopg2 installed, name it
    case "$MLFLOW_BACKEND_URI" in postgresql://*)
      "${PYTHON:-python3}" -c 'import psycopg' 2>/dev/null ||
        export MLFLOW_BACKEND_URI="postgresql+psycopg2://${MLFLOW_BACKEND_URI#postgresql://}" ;;
    esac
    if [ -f "$SUP_PID" ] && kill -0 "$(cat "$SUP_PID")" 2>/dev/null; then
      echo "supervisor already running (pid $(cat "$SUP_PID"))"; exit 0
    fi
    # own session and process group: `stop` ends exactly this group
    setsid bash "$0" _supervise >> "$MLFLOW_DIR/server.log" 2>&1 < /dev/null &
    echo $! > "$SUP_PID"
    for _ in $(seq 1 120); do answers && { echo "mlflow server answers at $url"; exit 0; }; sleep 1; done
    echo "mlflow server did not answer at $url; see $MLFLOW_DIR/server.log" >&2; exit 1 ;;
  stop)
    if [ -f "$SUP_PID" ]; then
      pg="$(cat "$SUP_PID")"
      kill -TERM -- "-$pg" 2>/dev/null || true
      for _ in $(seq 1 30); do kill -0 -- "-$pg" 2>/dev/null || break; sleep 0.5; done
      kill -KILL -- "-$pg" 2>/dev/null || true
      rm -f "$SUP_PID" "$SRV_PID"
    fi ;;
  status) answers ;;
  _supervise) supervise ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
