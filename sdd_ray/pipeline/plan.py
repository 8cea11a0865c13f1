"""The run as a graph of stage units, each with its stage config and its place in the cache.

Every unit's output directory follows from its key, and its key from its settings and its upstream
keys, so the whole graph (with every stage config, upstream paths filled in) is known before any
work starts. For each block size n: prune(n) -> evaluate(no_ft); distill (once, it reads only the
unpruned teacher) -> finetune(sft | sdd, n) -> merge(n) -> evaluate(arm); specdec(n) with every draft.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from sdd_ray.config import ModelSpec
from sdd_ray.distill.config import DistillConfig
from sdd_ray.evaluate.config import EvaluateConfig
from sdd_ray.finetune.config import FinetuneConfig
from sdd_ray.guards import fingerprint
from sdd_ray.merge.config import MergeConfig
from sdd_ray.models import TOY_TEACHER
from sdd_ray.pipeline.cache import StageCache, StageUnit
from sdd_ray.pipeline.config import RunConfig
from sdd_ray.prune.config import PruneConfig
from sdd_ray.specdec.config import SpecDecConfig

ARTIFACT = {
    "prune": "model",
    "distill": "distill",
    "finetune": "model",
    "merge": "model",
    "evaluate": "results.json",
    "specdec": "specdec.json",
}
"""What a unit's directory holds its output under."""

RESPONSE_COLUMN = {"sft": "original_response", "sdd": "response"}
COSMETIC = {"progress", "log_every", "gradient_checkpointing", "pairs"}
"""Settings that do not change a stage's output, left out of its key (gradient checkpointing recomputes
the same activations: same gradients; `pairs` only chooses what the report compares)."""


@dataclass
class Job:
    """A unit, the stage config it runs with, and a sentence on what it does."""

    unit: StageUnit
    config: BaseModel
    doing: str

    @property
    def label(self) -> str:
        return self.unit.label


@dataclass
class Plan:
    cache: StageCache
    jobs: list[Job] = field(default_factory=list)
    """In dependency order."""
    prune: dict[int, Job] = field(default_factory=dict)
    distill: Job | None = None
    finetune: dict[tuple[str, int], Job] = field(default_factory=dict)
    merge: dict[int, Job] = field(default_factory=dict)
    evaluations: dict[tuple[str, int | None], Job] = field(default_factory=dict)
    """(arm, block size): arm is baseline (block size None), no_ft, sft, sdd or merged."""
    specdec: dict[int, Job] = field(default_factory=dict)

    def artifact(self, job: Job) -> Path:
        return self.cache.dir(job.unit) / ARTIFACT[job.unit.stage]

    def add(self, job: Job) -> Job:
        self.jobs.append(job)
        return job


def _settings(block: BaseModel | None, exclude: set[str] = frozenset(), **extra) -> dict:
    """The settings that enter a unit's key: those that differ from the stage's defaults, so that a new
    option whose default keeps today's behaviour leaves the keys of finished outputs unchanged."""
    data = block.model_dump(mode="json", exclude=set(exclude) | COSMETIC, exclude_defaults=True) if block is not None else {}
    return {**data, **extra}


def arm_label(arm: str, seed: int | None) -> str:
    """`sft`, or `sft-s1` when the arms are trained once per seed."""
    return arm if seed is None else f"{arm}-s{seed}"


def _model_key(spec: ModelSpec) -> dict:
    """The model as it enters a key: the toy teacher by name, so keys do not depend on where the package lives."""
    data = spec.model_dump(mode="json")
    data["fingerprint"] = fingerprint(spec.path)  # weights replaced at the same path make a new key
    if Path(spec.path).resolve() == TOY_TEACHER.resolve():
        data["path"] = "toy-teacher"
    return data


def _spec(path: Path, base: ModelSpec) -> dict:
    """A ModelSpec dict for a stage output, loaded the way the baseline is (dtype, device)."""
    return {**base.model_dump(), "path": str(path), "revision": None, "gguf": None}


def _local(path: str) -> str:
    """A relative path that exists here, made absolute: Ray workers need not share the driver's directory."""
    return str(Path(path).resolve()) if not Path(path).is_absolute() and Path(path).exists() else path


def build_plan(cfg: RunConfig, out: Path) -> Plan:
    """Every unit of `cfg`'s run under `out`, with its stage config."""
    plan = Plan(StageCache(out))
    base = cfg.model
    model_key = _model_key(base)
    evaluate_block = cfg.evaluate.model_dump()

    def evaluation(arm: str, size: int | None, model: Job | None) -> Job:
        """The evaluation of one arm; `fidelity` among the tasks measures it against the unpruned model."""
        fidelity = "fidelity" in (cfg.evaluate.tasks or [])
        reference = {"reference": base.path} if fidelity else {}
        unit = StageUnit(
            "evaluate", f"evaluate[{arm}" + (f", bs={size}]" if size is not None else "]"),
            _settings(cfg.evaluate, model=model_key if model is None else None,
                      **({"reference": model_key} if fidelity else {})),
            {"model": model.unit} if model is not None else {},
        )
        spec = base.model_dump() if model is None else _spec(plan.artifact(model), base)
        config = EvaluateConfig(**{**evaluate_block, **reference, "model": spec})
        job = plan.add(Job(unit, config, f"{config.evaluator} evaluation on {', '.join(config.tasks)}"))
        plan.evaluations[(arm, size)] = job
        return job

    if cfg.runs("baseline"):
        evaluation("baseline", None, None)

    if cfg.runs("distill"):
        unit = StageUnit("distill", "distill", _settings(cfg.distill, teacher=model_key,
                                                         data_fingerprint=fingerprint(cfg.distill.data.source)))
        distill_block = cfg.distill.model_dump()
        distill_block["data"]["source"] = _local(distill_block["data"]["source"])
        config = DistillConfig(**{**distill_block, "teacher": base.model_dump()})
        doing = f"teacher rewrites {config.data.source} ({config.backend}, {config.num_workers} workers)"
        plan.distill = Job(unit, config, doing)

    prune_block = cfg.prune.model_dump(exclude={"block_size"})
    prune_block["calib"]["source"] = _local(prune_block["calib"]["source"])
    for size in cfg.prune.block_sizes:
        unit = StageUnit("prune", f"prune[bs={size}]", _settings(cfg.prune, {"block_size"}, block_size=size, model=model_key,
                                                                        calib_fingerprint=fingerprint(cfg.prune.calib.source)))
        config = PruneConfig(**{**prune_block, "model": base.model_dump(), "block_size": size})
        prune = plan.prune[size] = plan.add(Job(unit, config, f"{config.metric} distances on {config.num_samples} texts, remove {size} layers"))
        if cfg.runs("evaluate"):
            evaluation("no_ft", size, prune)

    if plan.distill is not None:
        plan.add(plan.distill)

    for size, prune in plan.prune.items():
        drafts: dict[str, Job] = {"no_ft": prune}
        if cfg.runs("finetune"):
            block = cfg.finetune.model_dump(exclude={"arms", "seeds"})
            for arm in cfg.finetune.arms:
                for seed in cfg.finetune.seeds or [None]:
                    label = arm_label(arm, seed)
                    seeded = {} if seed is None else {"seed": seed}
                    unit = StageUnit(
                        "finetune", f"finetune[{label}, bs={size}]",
                        _settings(cfg.finetune, {"arms", "seeds", *seeded}, response_column=RESPONSE_COLUMN[arm], **seeded),
                        {"model": prune.unit, "data": plan.distill.unit},
                    )
                    unit_dir = plan.cache.dir(unit)
                    config = FinetuneConfig(**{
                        **block, **seeded, "model": _spec(plan.artifact(prune), base),
                        "data": str(plan.artifact(plan.distill)),
                        "response_column": RESPONSE_COLUMN[arm], "storage_path": str(unit_dir / "ray"),
                        "run_name": f"finetune-{unit.key}",
                    })
                    doing = f"{config.method} {config.strategy} on `{config.response_column}`, seed {config.seed}"
                    job = plan.finetune[(label, size)] = plan.add(Job(unit, config, doing))
                    drafts.setdefault(arm, job)  # merge and specdec take an arm's first seed
                    if cfg.runs("evaluate"):
                        evaluation(label, size, job)
        if cfg.runs("merge"):
            parents = [drafts[arm] for arm in cfg.merge.arms]
            unit = StageUnit("merge", f"merge[bs={size}]", _settings(cfg.merge, {"arms"}),
                             {"a": parents[0].unit, "b": parents[1].unit})
            config = MergeConfig(**{**cfg.merge.model_dump(exclude={"arms"}),
                                    "models": [_spec(plan.artifact(p), base) for p in parents]})
            doing = f"SLERP of {' and '.join(cfg.merge.arms)} (t = {config.t})"
            drafts["merged"] = plan.merge[size] = plan.add(Job(unit, config, doing))
            if cfg.runs("evaluate"):
                evaluation("merged", size, drafts["merged"])
        if cfg.runs("specdec"):
            specdec_block = cfg.specdec.model_dump(exclude={"drafts", "dtype"})
            measured = base if cfg.specdec.dtype is None else base.model_copy(update={"dtype": cfg.specdec.dtype})
            specdec_block["data"]["source"] = _local(specdec_block["data"]["source"])
            chosen = {name: drafts[name] for name in cfg.specdec.drafts}
            unit = StageUnit("specdec", f"specdec[bs={size}]", _settings(cfg.specdec, {"drafts"}, target=model_key,
                                                                       data_fingerprint=fingerprint(cfg.specdec.data.source)),
                             {f"draft_{name}": job.unit for name, job in chosen.items()})
            config = SpecDecConfig(**{
                **specdec_block, "target": measured.model_dump(),
                "drafts": {name: _spec(plan.artifact(job), measured) for name, job in chosen.items()},
            })
            doing = f"k = {config.k}, drafts {', '.join(chosen)} vs target-only decoding"
            plan.specdec[size] = plan.add(Job(unit, config, doing))
    return plan


def upstream_jobs(plan: Plan, job: Job) -> list[Job]:
    """The jobs whose outputs `job` reads."""
    by_key = {j.unit.key: j for j in plan.jobs}
    return [by_key[u.key] for u in job.unit.upstream.values()]
