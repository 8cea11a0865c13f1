"""Distillation at scale: one `sdd-ray distill` job on a local two-node Ray cluster, stopped and resumed.

What it does, in order:
1. writes the input: `toy:all` rows plus bad rows of four kinds (not JSON, a missing field, a
   duplicate id, a prompt longer than the teacher's context), as one JSONL file;
2. starts `cluster/local_cluster.sh` (a head and a second node, one CPU each, private ports and
   temp dir) and submits `jobs/distill.py` over the Jobs API, one generation actor per node;
3. samples every `--interval` seconds: rows and tokens committed (from the shard manifests) and
   the RSS of the driver, of each generation actor and of the other Ray processes;
4. stops the job once `--stop-at` of the rows are committed and resubmits the same command;
   SIGKILLs one generation actor once `--kill-at` of the rows are committed;
5. checks the Parquet output: every input row exactly once, in `data/` or in `rejected.jsonl`;
   reads object-store spilling from `ray memory`; writes the figures as JSON and a plot.

    .venv/bin/python benchmarks/distill_scale.py --rows 52000                  # the documented run
    .venv/bin/python benchmarks/distill_scale.py --rows 2000 --shard-rows 128 \\
        --results /tmp/scale.json --plot /tmp/scale.png                       # CI's small version
    .venv/bin/python benchmarks/distill_scale.py --nodes --rows 3000 --repeats 2   # one vs two nodes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

from sdd_ray.testing.cluster import LocalCluster
from sdd_ray.testing.distill_rows import check_output, write_input

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "distill_scale.json"
NODES_RESULTS = REPO / "benchmarks" / "results" / "distill_nodes.json"
PLOT = REPO / "docs" / "img" / "distill_scale.png"
# Ray starts workers at nice 15: on a shared machine anything else would take their CPU
CLUSTER_ENV = {"RAY_worker_niceness": os.environ.get("RAY_worker_niceness", "0")}


# --- the job ----------------------------------------------------------------------------------------

def entrypoint(input_path: Path, out: Path, config: Path) -> str:
    return (f"{shlex.quote(sys.executable)} jobs/distill.py --teacher toy-teacher --data {shlex.quote(str(input_path))} "
            f"--out {shlex.quote(str(out))} --config {shlex.quote(str(config))}")


def spilled_mib(cluster: LocalCluster) -> float:
    """Object-store bytes spilled to disk so far, over all nodes (`ray memory --stats-only`)."""
    shown = subprocess.run([cluster.env["RAY"], "memory", "--stats-only", f"--address={cluster.gcs_address}"],
                           env=cluster.env, capture_output=True, text=True, timeout=120).stdout
    return sum(float(m) for m in re.findall(r"Spilled (\d+(?:\.\d+)?) MiB", shown))


# --- sampling ---------------------------------------------------------------------------------------

_CACHE_LOCK = threading.Lock()


def committed(out: Path, cache: dict) -> tuple[int, int]:
    """Rows (valid + rejected) and generated tokens in committed shards (a shard's manifest is read once)."""
    with _CACHE_LOCK:
        return _committed(out, cache)


def _committed(out: Path, cache: dict) -> tuple[int, int]:
    for manifest in (out / "shards").glob("part-*.json"):
        if manifest.name not in cache and (out / "data" / f"{manifest.stem}.parquet").is_file():
            counts = json.loads(manifest.read_text())
            cache[manifest.name] = (counts["rows_out"] + counts["rows_rejected"], counts["generated_tokens"])
    return sum(r for r, _ in cache.values()), sum(t for _, t in cache.values())


def role(cmdline: list[str]) -> str | None:
    text = " ".join(cmdline)
    if "jobs/distill.py" in text:
        return "driver"
    if "HFRewriter" in text:
        return "actor"
    if text.startswith("ray::") or "default_worker.py" in text:
        return "ray_worker"
    return "ray_system"  # raylet, GCS, dashboard, agents


class Sampler(threading.Thread):
    """Every `interval` s: committed rows/tokens and the RSS of each process of the cluster, by role."""

    def __init__(self, cluster: LocalCluster, out: Path, interval: float):
        super().__init__(daemon=True)
        self.cluster, self.out, self.interval = cluster, out, interval
        self.start_time = time.monotonic()
        self.samples: list[dict] = []
        self.events: list[dict] = []
        self.cache: dict = {}
        self._halt = threading.Event()

    def now(self) -> float:
        return round(time.monotonic() - self.start_time, 2)

    def mark(self, event: str, **details):
        rows, _ = committed(self.out, self.cache)
        self.events.append({"t": self.now(), "event": event, "rows_committed": rows, **details})
        print(f"[{self.now():8.1f} s] {event} at {rows} rows committed {details or ''}", flush=True)

    def sample(self) -> dict:
        import psutil

        rows, tokens = committed(self.out, self.cache)
        rss: dict[str, list] = {"driver": [], "actor": [], "ray_worker": [], "ray_system": []}
        for proc in self.cluster.processes():
            try:
                cmdline = proc.cmdline()
                mib = proc.memory_info().rss / 2**20
            except psutil.Error:
                continue
            rss[role(cmdline)].append((proc.pid, round(mib, 1)))
        return {"t": self.now(), "rows": rows, "tokens": tokens, "load_1min": round(os.getloadavg()[0], 2),
                "rss_mib": {k: dict(v) for k, v in rss.items()}}

    def run(self):
        while not self._halt.is_set():
            self.samples.append(self.sample())
            self._halt.wait(self.interval)

    def halt(self):
        self._halt.set()
        self.join()
        self.samples.append(self.sample())


def wait_until(predicate, timeout: float, what: str, client, job: str, poll: float = 0.5):
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + timeout
    while not predicate():
        status = client.get_job_status(job)
        if status in (JobStatus.FAILED, JobStatus.STOPPED) or time.monotonic() > deadline:
            raise RuntimeError(f"{what}: job {job} is {status}:\n{client.get_job_logs(job)[-4000:]}")
        time.sleep(poll)


def rows_received(logs: str) -> int:
    """The driver's last progress-bar count (`distill: 12345row`): rows that reached it before the stop."""
    counts = re.findall(r"distill: (\d+)row", logs)
    return int(counts[-1]) if counts else 0


# --- figures ----------------------------------------------------------------------------------------

def rates(samples: list[dict], window: float) -> list[dict]:
    """Rows/s and tokens/s committed over sliding windows of `window` seconds."""
    result, j = [], 0
    for i, sample in enumerate(samples):
        while samples[j]["t"] < sample["t"] - window:
            j += 1
        span = sample["t"] - samples[j]["t"]
        if i and span > 0 and sample["rows"] >= samples[j]["rows"]:
            result.append({"t": sample["t"], "rows_per_s": round((sample["rows"] - samples[j]["rows"]) / span, 2),
                           "tokens_per_s": round((sample["tokens"] - samples[j]["tokens"]) / span, 1)})
    return result


def peaks(samples: list[dict]) -> dict:
    """Peak RSS per role, and per generation actor (by pid), in MiB."""
    peak: dict[str, float] = {}
    actors: dict[str, float] = {}
    for sample in samples:
        for kind, by_pid in sample["rss_mib"].items():
            if by_pid:
                peak[kind] = max(peak.get(kind, 0.0), max(by_pid.values()))
            if kind == "actor":
                for pid, mib in by_pid.items():
                    actors[str(pid)] = max(actors.get(str(pid), 0.0), mib)
    return {"by_role": peak, "by_actor_pid": actors}


def rss_growth(samples: list[dict], kind: str) -> dict:
    """RSS of the largest `kind` process at 25% and at 100% of the rows: flat means memory is not held per row."""
    points = [(s["rows"], max(s["rss_mib"][kind].values())) for s in samples if s["rss_mib"][kind]]
    if not points:
        return {}
    last_rows = points[-1][0]
    quarter = next(mib for rows, mib in points if rows >= last_rows / 4)
    late = max(mib for rows, mib in points if rows >= 0.9 * last_rows)
    return {"at_25pct_mib": quarter, "at_end_mib": late, "growth_mib": round(late - quarter, 1)}


def plot(samples: list[dict], events: list[dict], window_rates: list[dict], path: Path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rows, ax_rate, ax_rss) = plt.subplots(3, 1, figsize=(9, 10))
    t = [s["t"] / 60 for s in samples]
    ax_rows.plot(t, [s["rows"] for s in samples], color="black")
    for event in events:
        ax_rows.axvline(event["t"] / 60, color="red" if "stop" in event["event"] or "kill" in event["event"] else "gray",
                        linestyle="--", linewidth=0.8)
        ax_rows.annotate(event["event"], (event["t"] / 60, event["rows_committed"]), fontsize=7, rotation=90,
                         va="bottom")
    ax_rows.set(xlabel="minutes", ylabel="rows committed", title=title)
    ax_rate.plot([r["t"] / 60 for r in window_rates], [r["rows_per_s"] for r in window_rates], label="rows/s")
    ax_tok = ax_rate.twinx()
    ax_tok.plot([r["t"] / 60 for r in window_rates], [r["tokens_per_s"] for r in window_rates], color="orange",
                label="tokens/s")
    ax_rate.set(xlabel="minutes", ylabel="rows/s committed")
    ax_tok.set_ylabel("tokens/s", color="orange")
    pids = sorted({pid for s in samples for pid in s["rss_mib"]["actor"]})
    rows = [s["rows"] for s in samples]
    ax_rss.plot(rows, [s["rss_mib"]["driver"] and max(s["rss_mib"]["driver"].values()) or None for s in samples],
                label="driver", color="black")
    for n, pid in enumerate(pids):
        ax_rss.plot(rows, [s["rss_mib"]["actor"].get(pid) for s in samples], label=f"actor {n + 1} (pid {pid})")
    ax_rss.plot(rows, [max(s["rss_mib"]["ray_worker"].values(), default=None) for s in samples],
                label="largest other Ray worker", color="gray", linewidth=0.8)
    ax_rss.set(xlabel="rows committed", ylabel="RSS (MiB)", ylim=(0, None))
    ax_rss.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


# --- the run ----------------------------------------------------------------------------------------

def run_scale(args) -> dict:
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out = work / "distilled"
    if out.exists():
        raise SystemExit(f"error: {out} exists; this benchmark starts from an empty output (remove it)")
    input_path = work / "input.jsonl"
    expected = write_input(input_path, args.rows, args.bad_per_kind)
    config = work / "distill.yaml"
    config.write_text(json.dumps({"num_workers": 2, "cpus_per_worker": 0.75, "torch_threads": 1,
                                  "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
                                  "shard_rows": args.shard_rows}))
    command = entrypoint(input_path, out, config)
    with LocalCluster(env=CLUSTER_ENV) as cluster:
        client = cluster.client
        sampler = Sampler(cluster, out, args.interval)
        sampler.start()
        runs = []
        job = cluster.submit(command)
        sampler.mark("job 1 submitted")
        total = expected["lines"]
        wait_until(lambda: committed(out, sampler.cache)[0] > 0, args.timeout, "first shard", client, job)
        sampler.mark("job 1 first shard")
        wait_until(lambda: committed(out, sampler.cache)[0] >= args.stop_at * total, args.timeout, "stop point",
                   client, job)
        client.stop_job(job)
        sampler.mark("job 1 stopped")
        status = cluster.wait(job, 300)
        logs = client.get_job_logs(job)
        at_stop = committed(out, sampler.cache)[0]
        runs.append({"job": job, "status": status, "rows_committed_at_stop": at_stop,
                     "rows_received_by_driver": rows_received(logs), "spilled_mib": spilled_mib(cluster)})

        job = cluster.submit(command)
        sampler.mark("job 2 submitted")
        wait_until(lambda: committed(out, sampler.cache)[0] > at_stop, args.timeout, "first resumed shard",
                   client, job)
        sampler.mark("job 2 first shard")
        killed = None
        if args.kill_at < 1:
            wait_until(lambda: committed(out, sampler.cache)[0] >= args.kill_at * total, args.timeout, "kill point",
                       client, job)
            killed = cluster.kill_one("HFRewriter")
            sampler.mark("actor killed", pid=killed)
        status = cluster.wait(job, args.timeout)
        sampler.mark("job 2 finished")
        logs = client.get_job_logs(job)
        runs.append({"job": job, "status": status, "spilled_mib": spilled_mib(cluster),
                     "log_tail": logs[-1500:] if status != "SUCCEEDED" else ""})
        sampler.halt()
    stats = json.loads((out / "stats.json").read_text())
    check = check_output(out, expected)
    window_rates = rates(sampler.samples, args.rate_window)
    events = {e["event"]: e for e in sampler.events}
    first_rows = next(s for s in sampler.samples if s["rows"] > 0)
    steady_start = events["job 2 first shard"]
    steady_end = events["job 2 finished"]
    result = {
        "command": "python benchmarks/distill_scale.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "cluster": "cluster/local_cluster.sh: head 1 CPU + worker node 1 CPU; 2 generation actors x 0.75 CPU, "
                   "1 torch thread each (one per node)",
        "settings": {"rows": args.rows, "bad_rows_per_kind": args.bad_per_kind, "batch_size": args.batch_size,
                     "max_new_tokens": args.max_new_tokens, "shard_rows": args.shard_rows, "teacher": "toy-teacher"},
        "input": {"lines": expected["lines"], "valid": len(expected["valid_ids"]), "bad": expected["bad"]},
        "stats_json": {k: stats[k] for k in ("rows_in", "rows_out", "rows_rejected", "teacher_selected",
                                            "original_selected", "generated_tokens", "complete")},
        "check": check,
        "time_to_first_shard_s": {"job 1": round(events["job 1 first shard"]["t"] - events["job 1 submitted"]["t"], 1),
                                  "job 2": round(steady_start["t"] - events["job 2 submitted"]["t"], 1)},
        "stop": {**runs[0], "redone_rows_at_least": max(0, runs[0]["rows_received_by_driver"] - runs[0]["rows_committed_at_stop"]),
                 "stopped_to_resubmitted_first_shard_s": round(steady_start["t"] - events["job 1 stopped"]["t"], 1)},
        "kill": {"actor_pid": killed, "t": events.get("actor killed", {}).get("t")},
        "job_2": runs[1],
        "rows_per_s": {
            "whole_run": round(total / (steady_end["t"] - events["job 1 submitted"]["t"]), 2),
            "job_2_after_first_shard": round((sampler.samples[-1]["rows"] - steady_start["rows_committed"])
                                             / max(1e-9, steady_end["t"] - steady_start["t"]), 2),
        },
        "tokens_per_s_job_2_after_first_shard": round(
            (sampler.samples[-1]["tokens"] - committed_tokens_at(sampler.samples, steady_start["t"]))
            / max(1e-9, steady_end["t"] - steady_start["t"]), 1),
        "peak_rss_mib": peaks(sampler.samples),
        "rss_growth": {kind: rss_growth(sampler.samples, kind) for kind in ("driver", "actor")},
        "first_sample_with_rows_t": first_rows["t"],
        "events": sampler.events,
        "windowed_rates": window_rates,
        "samples": sampler.samples,
    }
    plot(sampler.samples, sampler.events, window_rates, Path(args.plot),
         f"{total} rows, toy teacher, 2 nodes x 1 CPU: stopped at {runs[0]['rows_committed_at_stop']}, resumed")
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(result, indent=1) + "\n")
    return result


def committed_tokens_at(samples: list[dict], t: float) -> int:
    return max((s["tokens"] for s in samples if s["t"] <= t), default=0)


def node_scaling(args) -> dict:
    """The same rows on one generation actor (one node busy) and on two (one per node), one job each.

    Rates come from the driver's own stats: tokens/s after the first generated batch (steady) and
    end to end. Runs alternate 1, 2, 2, 1, ... so that drift in the machine's load cancels out.
    """
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    input_path = work / "input.jsonl"
    write_input(input_path, args.rows, 0)
    order = [1, 2, 2, 1] * args.repeats
    runs = []
    with LocalCluster(env=CLUSTER_ENV) as cluster:
        for n, workers in enumerate(order[: 2 * args.repeats]):
            out, config = work / f"out-{n}-{workers}w", work / f"distill-{n}.yaml"
            config.write_text(json.dumps({"num_workers": workers, "cpus_per_worker": 0.75, "torch_threads": 1,
                                          "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
                                          "shard_rows": args.shard_rows, "progress": False}))
            job = cluster.submit(entrypoint(input_path, out, config))
            status = cluster.wait(job, args.timeout)
            if status != "SUCCEEDED":
                raise RuntimeError(f"job {job} {status}:\n{cluster.client.get_job_logs(job)[-3000:]}")
            stats = json.loads((out / "stats.json").read_text())
            runs.append({"workers": workers, "rows": stats["rows_in"], "wall_s": stats["wall_s"],
                         "tokens_per_s": stats["tokens_per_s"],
                         "steady_tokens_per_s": stats["this_run"]["steady_tokens_per_s"],
                         "first_output_s": stats["this_run"]["first_output_s"], "load_1min": os.getloadavg()[0]})
            print(json.dumps(runs[-1]), flush=True)

    def mean(workers: int, key: str) -> float:
        values = [r[key] for r in runs if r["workers"] == workers]
        return sum(values) / len(values)

    result = {
        "command": "python benchmarks/distill_scale.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "cluster": "cluster/local_cluster.sh: head 1 CPU + worker node 1 CPU; actors 0.75 CPU, 1 torch thread",
        "runs": runs,
        "ratio_steady_2_vs_1_node": round(mean(2, "steady_tokens_per_s") / mean(1, "steady_tokens_per_s"), 3),
        "ratio_end_to_end_2_vs_1_node": round(mean(2, "tokens_per_s") / mean(1, "tokens_per_s"), 3),
        "target": "ratio_steady_2_vs_1_node >= 1.7",
    }
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(result, indent=1) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--rows", type=int, default=52_000, help="valid toy rows (bad rows come on top)")
    parser.add_argument("--bad-per-kind", type=int, default=25, help="bad rows of each of the four kinds")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--shard-rows", type=int, default=512)
    parser.add_argument("--stop-at", type=float, default=0.5, help="stop job 1 at this fraction of rows committed")
    parser.add_argument("--kill-at", type=float, default=0.75,
                        help="SIGKILL one generation actor at this fraction (1 = never)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--rate-window", type=float, default=120.0, help="seconds per rows/s window")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds any one wait may take")
    parser.add_argument("--work", default=str(REPO / "runs" / "distill-scale"), help="input and output folder")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--plot", default=str(PLOT))
    parser.add_argument("--nodes", action="store_true",
                        help="instead: one vs two nodes on --rows valid rows (results: distill_nodes.json)")
    parser.add_argument("--repeats", type=int, default=1, help="with --nodes: pairs of runs (1, 2, then 2, 1, ...)")
    args = parser.parse_args()
    if args.nodes:
        if args.results == str(RESULTS):
            args.results = str(NODES_RESULTS)
        print(json.dumps(node_scaling(args), indent=1))
        return
    result = run_scale(args)
    summary = {k: result[k] for k in ("input", "stats_json", "check", "time_to_first_shard_s", "stop", "kill",
                                      "rows_per_s", "tokens_per_s_job_2_after_first_shard", "peak_rss_mib",
                                      "rss_growth")}
    print(json.dumps(summary, indent=1))
    if not result["check"]["every_row_exactly_once"] or result["job_2"]["status"] != "SUCCEEDED":
        sys.exit(1)


if __name__ == "__main__":
    main()
