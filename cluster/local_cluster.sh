#!/usr/bin/env bash
# A local multi-node Ray cluster on one machine: a head node and a second node with its own
# resources, both on non-default ports and under their own temp dir, so that it never collides with
# another Ray on the same machine. `stop` ends only the processes of this cluster (found by its temp
# dir), never every Ray on the machine as `ray stop` would.
#
#   cluster/local_cluster.sh start     # head (HEAD_CPUS) + worker node (WORKER_CPUS, resource `worker_node`)
#   RAY_ADDRESS=http://127.0.0.1:$((BASE_PORT+1)) ray job submit --working-dir . -- python jobs/pipeline.py configs/demo.yaml
#   cluster/local_cluster.sh status
#   cluster/local_cluster.sh stop
#
# Settings (environment): BASE_PORT (26400; the cluster uses BASE_PORT..BASE_PORT+299),
# RAY_TEMP_DIR (/tmp/sdd_ray_cluster; keep it short: Ray's socket paths must fit in 107 bytes),
# HEAD_CPUS (1), WORKER_CPUS (1), WORKER_GPUS (0), RAY_num_workers_soft_limit (8), RAY (the `ray` executable; default: .venv/bin/ray, else PATH),
# RAY_AUTH_MODE (`disabled`, or `token`: Ray's token, ~/.ray/auth_token or RAY_AUTH_TOKEN, required by both
# nodes and every client). Set explicitly because `ray start --head` turns token auth on by itself whenever
# ~/.ray/auth_token exists, and a second node started without it then cannot join. The dashboard and Jobs API
# bind 127.0.0.1; Ray's GCS and raylets listen on all interfaces, so on a shared network use `token`.
set -euo pipefail
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
# A generous worker start-up timeout: on a busy machine a worker process can take minutes to come up.
export RAY_worker_register_timeout_seconds=${RAY_worker_register_timeout_seconds:-300}
# Ray keeps at most one idle worker process per CPU and kills the rest: on 1-CPU nodes running many
# fractional-CPU tasks (Ray Data's reads and per-batch functions) that means a new Python process
# per task, seconds each. Keep a few idle workers per node instead.
export RAY_num_workers_soft_limit=${RAY_num_workers_soft_limit:-8}

BASE_PORT=${BASE_PORT:-26400}
RAY_TEMP_DIR=${RAY_TEMP_DIR:-/tmp/sdd_ray_cluster}
HEAD_CPUS=${HEAD_CPUS:-1}
WORKER_CPUS=${WORKER_CPUS:-1}
WORKER_GPUS=${WORKER_GPUS:-0}
HERE=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z "${RAY:-}" ]]; then
  if [[ -x "$HERE/.venv/bin/ray" ]]; then RAY="$HERE/.venv/bin/ray"; else RAY=$(command -v ray); fi
fi

GCS_PORT=$BASE_PORT
DASHBOARD_PORT=$((BASE_PORT + 1))

# Ports of one node: $1 = offset of its block of ten, $2 = offset of its block of worker ports.
node_ports() {
  local o=$((BASE_PORT + $1)) w=$((BASE_PORT + $2))
  echo --node-manager-port=$((o + 3)) --object-manager-port=$((o + 4)) \
    --dashboard-agent-listen-port=$((o + 5)) --dashboard-agent-grpc-port=$((o + 6)) \
    --runtime-env-agent-port=$((o + 7)) --metrics-export-port=$((o + 8)) \
    --min-worker-port=$w --max-worker-port=$((w + 99))
}

# PIDs of the processes that belong to this cluster: those whose command line names its temp dir (or,
# for Ray's client server, which names neither, the address of this cluster's GCS), and all their
# descendants (Ray's agents and workers rename themselves, e.g. `ray::IDLE`). One `ps`, no per-process forks.
cluster_pids() {
  ps -eo pid=,ppid=,args= | awk -v dir="$RAY_TEMP_DIR" -v gcs=":$GCS_PORT" -v self="$$" '
    {
      pid = $1; parent[pid] = $2; pids[NR] = pid
      line = $0 " "
      if (pid != self && (index(line, dir "/") || index(line, dir " ") || line ~ ("--address=[^ ]*" gcs " "))) keep[pid] = 1
    }
    END {
      do { grew = 0; for (i in pids) { p = pids[i]; if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; grew = 1 } } } while (grew)
      for (p in keep) print p
    }'
}

start() {
  mkdir -p "$RAY_TEMP_DIR"
  # shellcheck disable=SC2046
  "$RAY" start --head --node-ip-address=127.0.0.1 --port="$GCS_PORT" --temp-dir="$RAY_TEMP_DIR" \
    --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" --ray-client-server-port=$((BASE_PORT + 2)) \
    --num-cpus="$HEAD_CPUS" --num-gpus=0 --resources='{"head_node": 1}' --disable-usage-stats \
    $(node_ports 0 100)
  # shellcheck disable=SC2046
  "$RAY" start --address="127.0.0.1:$GCS_PORT" --node-ip-address=127.0.0.1 --temp-dir="$RAY_TEMP_DIR" \
    --num-cpus="$WORKER_CPUS" --num-gpus="$WORKER_GPUS" --resources='{"worker_node": 1}' --disable-usage-stats \
    $(node_ports 10 200)
  echo "cluster up: RAY_ADDRESS=127.0.0.1:$GCS_PORT (drivers), http://127.0.0.1:$DASHBOARD_PORT (jobs API, dashboard)"
}

stop() {
  local pids
  pids=$(cluster_pids | tr '\n' ' ')
  if [[ -z "${pids// /}" ]]; then echo "no processes of the cluster in $RAY_TEMP_DIR"; return 0; fi
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 1 16); do  # ray stop, too, waits 16 s before SIGKILL
    sleep 1
    pids=$(cluster_pids | tr '\n' ' ')
    [[ -z "${pids// /}" ]] && { echo "cluster in $RAY_TEMP_DIR stopped"; return 0; }
  done
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
  echo "cluster in $RAY_TEMP_DIR stopped (some processes needed SIGKILL)"
}

status() {
  "$RAY" status --address="127.0.0.1:$GCS_PORT"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
