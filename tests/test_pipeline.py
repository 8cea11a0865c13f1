"""The whole-run pipeline: configs, cache keys, cluster manifests, and a Ray job on a local two-node cluster."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from sdd_ray.config import ConfigError, read_yaml
from sdd_ray.pipeline.cache import StageCache, StageUnit, stage_key
from sdd_ray.pipeline.config import RunConfig, check_run_config, load_run_config
from sdd_ray.pipeline.plan import build_plan

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def short_config(model: Path, out: Path, **changes) -> dict:
    """A run of every stage on a tiny model, small enough for a test."""
    data = {
        "model": str(model),
        "out": str(out),
        "prune": {"block_size": 2, "num_samples": 8, "num_workers": 0, "max_length": 64},
        "distill": {"data": {"source": "toy:all", "limit": 12}, "max_new_tokens": 8, "batch_size": 4,
                    "shard_rows": 4, "progress": False},
        "finetune": {"strategy": "ddp", "num_workers": 1, "cpus_per_worker": 0.5, "max_steps": 2, "batch_size": 4,
                     "max_length": 128},
        "merge": {"t": 0.5},
        "evaluate": {"limit": 4, "batch_size": 8},
        "specdec": {"data": "toy:all", "limit": 2, "max_new_tokens": 8},
    }
    for block, value in changes.items():
        data[block] = {**data[block], **value} if isinstance(value, dict) and block in data else value
    return data


# --- configs -----------------------------------------------------------------------------------

def _stage_file_config(path: Path):
    """`<stage>_*.yaml` files without a `prune:` block are one stage's settings (the model comes from the command line)."""
    from sdd_ray.pipeline import config as pc
    from sdd_ray.serve.config import ServeConfig

    if "prune" in read_yaml(path):
        return None  # a run config
    stage = path.stem.split("_")[0]
    classes = {"prune": pc.PruneConfig, "distill": pc.DistillConfig, "finetune": pc.FinetuneConfig,
               "merge": pc.MergeConfig, "evaluate": pc.EvaluateConfig, "specdec": pc.SpecDecConfig, "serve": ServeConfig}
    return classes.get(stage)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_validates(path):
    """Run configs load as RunConfig (the model's depth checked when it is local); stage files as their stage."""
    from sdd_ray.pipeline.config import _stage_config

    stage_cls = _stage_file_config(path)
    if stage_cls is not None:
        data = read_yaml(path)
        placeholders = {"model": {"path": "placeholder"}, "teacher": {"path": "placeholder"}, "target": {"path": "p"},
                        "drafts": {"d": {"path": "p"}}, "models": [{"path": "a"}, {"path": "b"}], "data": "placeholder"}
        wired = {k: v for k, v in placeholders.items() if k in stage_cls.model_fields and k not in data}
        _stage_config(stage_cls, {**data, **wired}, str(path), path.stem)
        return
    cfg = load_run_config(path, check_model=Path(RunConfig.model_validate(read_yaml(path)).model.path).is_dir())
    assert cfg.prune.block_sizes and "prune" in cfg.stages
    referenced = cfg.specdec.data.source if cfg.specdec else ""
    if referenced.endswith((".jsonl", ".parquet")):
        assert (REPO / referenced).is_file(), f"{path.name}: specdec.data {referenced} is not in the repository"


def test_demo_config_runs_every_stage(toy_teacher):
    cfg = load_run_config(REPO / "configs" / "demo.yaml")
    assert cfg.stages == ["baseline", "prune", "distill", "finetune", "merge", "evaluate", "specdec"]
    assert cfg.finetune.arms == ["sft", "sdd"] and cfg.specdec.drafts == ["no_ft", "sft", "sdd"]


def test_block_size_checked_against_the_model(tmp_path, tiny_llama):
    path = write_config(tmp_path / "run.yaml", short_config(tiny_llama, tmp_path / "out", prune={"block_size": 6}))
    with pytest.raises(ConfigError) as error:
        load_run_config(path)
    assert str(error.value) == f"{path}: prune.block_size: must be < num_hidden_layers (6), got 6"
    path = write_config(tmp_path / "sweep.yaml", short_config(tiny_llama, tmp_path / "out", prune={"block_size": [2, 9]}))
    with pytest.raises(ConfigError, match=r"prune.block_size: must be < num_hidden_layers \(6\), got 9"):
        load_run_config(path)


@pytest.mark.parametrize("changes, message", [
    ({"finetune": {"lr": 0}}, "finetune.lr: Input should be greater than 0"),
    ({"finetune": {"offload_params": True}}, "finetune: offload_params needs strategy deepspeed with zero_stage 3"),
    ({"prune": {"block_size": [2, 2]}}, "prune.block_size: block sizes repeat: [2, 2]"),
    ({"distill": {"bogus": 1}}, "distill.bogus: unknown field"),
    ({"merge": {"arms": ["sdd", "sft"]}, "finetune": {"arms": ["sdd"]}, "specdec": {"drafts": ["no_ft", "sdd"]}},
     "merge.arms: ['sdd', 'sft'] must be fine-tuned arms ['sdd']"),
    ({"specdec": {"drafts": ["no_ft", "merged"]}, "stages": ["baseline", "prune", "distill", "finetune", "specdec"]},
     "specdec.drafts: ['merged'] are not produced by the stages run ['baseline', 'prune', 'distill', 'finetune', 'specdec']"),
    ({"stages": ["baseline", "prune", "finetune", "evaluate"]}, "stages: `finetune` needs ['distill'] (it reads their outputs)"),
    ({"evaluate": {"tasks": ["nope"]}}, "evaluate: unknown builtin task(s) ['nope']; choose from ['arith', 'facts', 'instruct', 'fidelity']"),
])
def test_config_errors_name_file_and_field(tmp_path, tiny_llama, changes, message):
    path = write_config(tmp_path / "bad.yaml", short_config(tiny_llama, tmp_path / "out", **changes))
    with pytest.raises(ConfigError) as error:
        load_run_config(path)
    assert f"{path}: {message}" in str(error.value).splitlines()


# --- cache keys ----------------------------------------------------------------------------------

def _keys(cfg_data: dict, out: Path) -> dict[str, str]:
    cfg = RunConfig.model_validate(cfg_data)
    check_run_config(cfg, check_model=False)
    return {job.label: job.unit.key for job in build_plan(cfg, out).jobs}


def test_changed_config_reruns_only_dependents(tmp_path):
    base = short_config(Path("model"), tmp_path, prune={"block_size": [1, 2]})
    keys = _keys(base, tmp_path)
    assert len(keys) == 2 + 2 * 9  # baseline, distill; per size: prune, 2 arms, merge, 4 evaluations, specdec
    changed = {
        "finetune.lr": (short_config(Path("model"), tmp_path, prune={"block_size": [1, 2]}, finetune={"lr": 1e-3}),
                        {"finetune", "merge", "evaluate[sft", "evaluate[sdd", "evaluate[merged", "specdec"}),
        "distill.max_new_tokens": (short_config(Path("model"), tmp_path, prune={"block_size": [1, 2]},
                                                distill={"max_new_tokens": 9}),
                                   {"distill", "finetune", "merge", "evaluate[sft", "evaluate[sdd", "evaluate[merged",
                                    "specdec"}),
        "evaluate.limit": (short_config(Path("model"), tmp_path, prune={"block_size": [1, 2]}, evaluate={"limit": 5}),
                           {"evaluate"}),
        "specdec.k": (short_config(Path("model"), tmp_path, prune={"block_size": [1, 2]}, specdec={"k": 2}), {"specdec"}),
        "merge.t": (short_config(Path("model"), tmp_path, prune={"block_size": [1, 2]}, merge={"t": 0.3}),
                    {"merge", "evaluate[merged"}),
    }
    for name, (data, dependents) in changed.items():
        new = _keys(data, tmp_path)
        rerun = {label for label in keys if new[label] != keys[label]}
        expected = {label for label in keys if label.startswith(tuple(dependents))}
        assert rerun == expected, name
    # cosmetic settings do not change any key
    assert _keys(short_config(Path("model"), tmp_path, prune={"block_size": [1, 2]}, finetune={"log_every": 7}),
                 tmp_path) == keys
    # a sweep shares the distillation and each size's units are its own
    one = _keys(short_config(Path("model"), tmp_path, prune={"block_size": 2}), tmp_path)
    assert one.items() <= keys.items()


def test_seeds_train_every_arm_per_seed_and_leave_other_keys_alone(tmp_path):
    keys = _keys(short_config(Path("model"), tmp_path), tmp_path)
    seeded = _keys(short_config(Path("model"), tmp_path, finetune={"seeds": [0, 1]}), tmp_path)
    assert {label for label in seeded if label.startswith("finetune")} == {
        f"finetune[{arm}-s{seed}, bs=2]" for arm in ("sft", "sdd") for seed in (0, 1)}
    assert {label for label in seeded if label.startswith("evaluate[s")} == {
        f"evaluate[{arm}-s{seed}, bs=2]" for arm in ("sft", "sdd") for seed in (0, 1)}
    assert len({seeded[f"finetune[{arm}-s{seed}, bs=2]"] for arm in ("sft", "sdd") for seed in (0, 1)}) == 4
    upstream = [label for label in keys if not label.startswith(("finetune", "evaluate[s", "evaluate[m", "merge", "specdec"))]
    assert len(upstream) == 4  # baseline and no_ft evaluations, prune, distill
    assert all(seeded[label] == keys[label] for label in upstream)
    # merge and specdec read each arm's first seed
    assert seeded["merge[bs=2]"] != keys["merge[bs=2]"] and "specdec[bs=2]" in seeded


def test_a_new_setting_at_its_default_keeps_finished_keys(tmp_path):
    """Keys hold the settings that differ from the defaults: a config that spells a default out, as a
    run made before that option existed did not, reuses the same outputs."""
    keys = _keys(short_config(Path("model"), tmp_path), tmp_path)
    spelled = _keys(short_config(Path("model"), tmp_path, finetune={"batch_order": "length"},
                                 distill={"drop_missing_context": False, "gate": None}), tmp_path)
    assert spelled == keys
    gated = _keys(short_config(Path("model"), tmp_path, distill={"gate": {}}), tmp_path)
    assert gated["distill"] != keys["distill"]


def test_stage_cache_states(tmp_path):
    cache = StageCache(tmp_path)
    root = StageUnit("prune", "prune[bs=2]", {"block_size": 2})
    child = StageUnit("evaluate", "evaluate[no_ft, bs=2]", {"limit": 4}, {"model": root})
    assert child.key == stage_key("evaluate", {"limit": 4}, {"model": root.key})
    assert child.key != StageUnit("evaluate", "x", {"limit": 4}, {"model": StageUnit("prune", "p", {"block_size": 3})}).key
    assert cache.state(root) == "new"
    out = cache.begin(root)
    assert out == tmp_path / "prune" / root.key and cache.state(root) == "partial"
    assert json.loads((out / "_inputs.json").read_text())["settings"] == {"block_size": 2}
    cache.complete(root, {"removed_layers": [3, 4]}, 1.5)
    assert cache.state(root) == "done"
    assert cache.result(root)["result"] == {"removed_layers": [3, 4]} and cache.result(root)["wall_s"] == 1.5


# --- cluster manifests ---------------------------------------------------------------------------

def _entrypoint_files(command: str) -> tuple[Path, Path]:
    words = shlex.split(command)
    script = next(w for w in words if w.endswith(".py"))
    config = next(w for w in words if w.endswith(".yaml"))
    return REPO / script, REPO / config


def test_kuberay_manifests_name_the_pipeline_and_a_real_config():
    raycluster = yaml.safe_load((REPO / "cluster/kuberay/raycluster.yaml").read_text())
    rayjob = yaml.safe_load((REPO / "cluster/kuberay/rayjob.yaml").read_text())
    assert (raycluster["apiVersion"], raycluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert (rayjob["apiVersion"], rayjob["kind"]) == ("ray.io/v1", "RayJob")
    script, config = _entrypoint_files(rayjob["spec"]["entrypoint"])
    assert script == REPO / "jobs/pipeline.py" and script.is_file() and config.is_file()
    load_run_config(config, check_model=False)
    for spec in (raycluster["spec"], rayjob["spec"]["rayClusterSpec"]):
        workers = spec["workerGroupSpecs"]
        gpus = [c["resources"]["limits"].get("nvidia.com/gpu") for w in workers for c in w["template"]["spec"]["containers"]]
        assert any(int(g) > 0 for g in gpus if g)
        images = {c["image"] for c in spec["headGroupSpec"]["template"]["spec"]["containers"]}
        images |= {c["image"] for w in workers for c in w["template"]["spec"]["containers"]}
        assert len(images) == 1
    # the image the manifests run is the one cluster/Dockerfile builds, with the repository at /app
    assert "WORKDIR /app" in (REPO / "cluster/Dockerfile").read_text()


def test_launcher_yaml_matches_ray_schema_and_docs_name_real_files():
    import jsonschema
    import ray.autoscaler

    launcher = yaml.safe_load((REPO / "cluster/launcher.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(launcher, schema)
    assert any(node.get("node_config", {}).get("InstanceType", "").startswith(("p4", "p5", "g5"))
               for node in launcher["available_node_types"].values())
    docs = (REPO / "docs/cluster.md").read_text()
    commands = [line for line in docs.splitlines() if line.startswith("    ") and "jobs/pipeline.py" in line]
    assert len(commands) >= 3
    for line in commands:
        script, config = _entrypoint_files(line.split("#")[0])
        assert script.is_file() and config.is_file(), line


# --- Ray jobs on a local two-node cluster -------------------------------------------------------

def _pipeline(cluster, config: Path) -> str:
    return cluster.submit(f"{shlex.quote(sys.executable)} jobs/pipeline.py {shlex.quote(str(config))}")


def _finished(cluster, job: str, timeout: float) -> str:
    """The job's logs, once it has succeeded."""
    status = cluster.wait(job, timeout)
    logs = cluster.client.get_job_logs(job)
    assert status == "SUCCEEDED", logs[-5000:]
    return logs


@pytest.mark.timeout(2400)  # minutes on a quiet 2-core machine; generous for a busy one
def test_pipeline_job_on_two_node_cluster_resumes_and_reuses(two_node_cluster, tiny_llama, tmp_path):
    from sdd_ray.toy.sources import toy_records

    cluster = two_node_cluster
    out = tmp_path / "run"
    rows = 96
    data = short_config(
        tiny_llama, out,
        distill={"data": {"source": "toy:all", "limit": rows}, "max_new_tokens": 32, "batch_size": 2, "shard_rows": 4},
        ray={"resources": {s: {"num_cpus": 0.5} for s in ("baseline", "prune", "merge", "evaluate", "specdec")}},
    )
    config = write_config(tmp_path / "short.yaml", data)
    cfg = load_run_config(config)
    plan = build_plan(cfg, out)
    distill_dir = plan.artifact(plan.distill)

    # 1. an interrupted run, as a stopped job leaves it: the distill stage begun, 2 of its 24 shards committed
    plan.cache.begin(plan.distill.unit)
    interrupted = write_config(tmp_path / "distill.yaml", {**plan.distill.config.model_dump(mode="json"), "max_shards": 2})
    _finished(cluster, cluster.submit(f"{shlex.quote(sys.executable)} jobs/distill.py --out {distill_dir} "
                                      f"--config {interrupted}"), 600)
    assert len(list((distill_dir / "data").glob("part-*.parquet"))) == 2
    assert plan.cache.state(plan.distill.unit) == "partial"

    # 2. the pipeline job resumes the distillation, every stage finishes, the report is written
    logs = _finished(cluster, _pipeline(cluster, config), 1200)
    assert "distill: resuming" in logs
    import pyarrow.parquet as pq

    ids = pq.read_table(distill_dir / "data", columns=["id"]).column("id").to_pylist()
    assert sorted(ids) == sorted(r["id"] for r in toy_records("toy:all", rows))  # none lost, none twice
    assert json.loads((distill_dir / "stats.json").read_text())["this_run"]["resumed"] == 2 * 4
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["arms"]) == {"baseline", "no_ft", "sft", "sdd", "merged"}
    assert summary["arms"]["baseline"]["recovery_pct"] == pytest.approx(100.0)
    assert set(summary["specdec"]) == {"no_ft", "sft", "sdd"}
    for draft in summary["specdec"].values():  # greedy: every draft's output is the target's own
        assert draft["outputs_identical"] is True and 1 <= draft["mean_accepted_length"] <= cfg.specdec.k + 1
    report = (out / "report.md").read_text()
    assert "| Baseline |" in report and "| SDD |" in report and "## Speculative decoding" in report
    assert (out / "distances.png").is_file() and (out / "loss.png").is_file()

    # 3. a second run reuses every stage
    logs = _finished(cluster, _pipeline(cluster, config), 300)
    assert logs.count(": reused ") == len(plan.jobs) and ": start:" not in logs
    again = json.loads((out / "summary.json").read_text())
    assert again["arms"] == summary["arms"] and all(s["cached"] for s in again["stages"].values())


@pytest.mark.timeout(1200)
def test_block_size_sweep_report(ray_local, tiny_llama, tmp_path):
    """Two block sizes without fine-tuning: the sweep table and plot, recovery and accepted length per size."""
    from sdd_ray.pipeline.run import run_pipeline

    data = short_config(tiny_llama, tmp_path / "sweep", prune={"block_size": [1, 3]},
                        specdec={"drafts": ["no_ft"], "limit": 1, "max_new_tokens": 4}, evaluate={"limit": 2})
    for block in ("distill", "finetune", "merge"):
        data.pop(block)
    cfg = load_run_config(write_config(tmp_path / "sweep.yaml", data))
    assert cfg.stages == ["baseline", "prune", "evaluate", "specdec"]
    summary = run_pipeline(cfg)
    sweep = {row["block_size"]: row for row in summary["sweep"]}
    assert list(sweep) == [1, 3]
    assert sweep[1]["num_layers_after"] == 5 and sweep[3]["num_layers_after"] == 3
    assert 0 < sweep[1]["params_removed_pct"] < sweep[3]["params_removed_pct"] < 100
    assert set(sweep[3]["recovery_pct"]) == {"no_ft"} and set(sweep[3]["mean_accepted_length"]) == {"no_ft"}
    assert summary["arms"]["no_ft"]["recovery_pct"] == sweep[1]["recovery_pct"]["no_ft"]
    report = (tmp_path / "sweep" / "report.md").read_text()
    assert "## Block-size sweep" in report and (tmp_path / "sweep" / "sweep.png").is_file()


def test_stage_outputs_of_a_gguf_model_are_plain_checkpoints(tmp_path, monkeypatch):
    """A run on `x.gguf` converts the base once; pruned, tuned and merged models are never 'converted'."""
    gguf = pytest.importorskip("gguf")
    import numpy as np

    from sdd_ray.config import ModelSpec

    monkeypatch.setenv("SDD_RAY_CACHE", str(tmp_path / "cache"))
    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file(), writer.close()
    cfg = RunConfig.model_validate(short_config(tmp_path / "m.gguf", tmp_path / "out"))
    check_run_config(cfg, check_model=False)
    specs = [value for job in build_plan(cfg, tmp_path / "out").jobs for value in job.config.__dict__.values()
             if isinstance(value, ModelSpec)]
    specs += [spec for job in build_plan(cfg, tmp_path / "out").jobs
              for spec in getattr(job.config, "drafts", {}).values()]
    base = [spec for spec in specs if spec.gguf]
    outputs = [spec for spec in specs if spec.path.startswith(str(tmp_path / "out"))]
    assert base and all(spec.path == cfg.model.path for spec in base)
    assert outputs and all(spec.gguf is None for spec in outputs)


def test_pipeline_specdec_prompts_come_from_the_test_split_as_on_the_command_line():
    """The drafts were fine-tuned on the train split: measuring them there would flatter SFT and SDD."""
    from sdd_ray.pipeline.config import SpecdecBlock
    from sdd_ray.specdec.config import SpecDecConfig

    block = SpecdecBlock(data="toy:all")
    command_line = SpecDecConfig(target={"path": "t"}, drafts={"d": {"path": "d"}}, data="toy:all")
    assert block.data.split == command_line.data.split == "test"
    assert SpecdecBlock(data={"source": "toy:all", "split": "train"}).data.split == "train"


def test_specdec_dtype_loads_target_and_drafts_alike(tmp_path):
    cfg = RunConfig.model_validate(short_config(Path("model"), tmp_path, specdec={"dtype": "float32"}))
    check_run_config(cfg, check_model=False)
    job = next(j for j in build_plan(cfg, tmp_path).jobs if j.unit.stage == "specdec")
    assert job.config.target.dtype == "float32"
    assert {name: spec.dtype for name, spec in job.config.drafts.items()} == dict.fromkeys(("no_ft", "sft", "sdd"), "float32")
    default = RunConfig.model_validate(short_config(Path("model"), tmp_path))
    plain = next(j for j in build_plan(default, tmp_path).jobs if j.unit.stage == "specdec")
    assert plain.config.target.dtype == "auto" and plain.unit.key != job.unit.key
