"""The configuration of a whole run: the baseline model, one block per stage, Ray placement.

Each stage block is the stage's own config (`sdd_ray/<stage>/config.py`) minus the fields the
pipeline wires from upstream outputs (the pruned model, the distilled data, the drafts, ...). The
blocks are derived from the stage configs, so a field a stage adds is accepted here at once; and
`check_run_config` builds every real stage config with placeholder wiring, so the stages' own
validators (cross-field rules) run before any work, as does the check of block sizes against the
model's depth.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, create_model, field_validator, model_validator

from sdd_ray.config import ConfigError, ModelSpec, StrictModel, format_validation_error, read_yaml, validate_config
from sdd_ray.data import check_data_columns, check_data_source, with_split
from sdd_ray.distill.config import DistillConfig
from sdd_ray.evaluate.config import EvaluateConfig
from sdd_ray.finetune.config import FinetuneConfig
from sdd_ray.merge.config import MergeConfig
from sdd_ray.models import as_spec, model_num_layers
from sdd_ray.prune.config import PruneConfig
from sdd_ray.specdec.config import SpecDecConfig

STAGES = ("baseline", "prune", "distill", "finetune", "merge", "evaluate", "specdec")
Stage = Literal["baseline", "prune", "distill", "finetune", "merge", "evaluate", "specdec"]
Arm = Literal["sft", "sdd"]
Draft = Literal["no_ft", "sft", "sdd", "merged"]

# Fields of each stage config that the pipeline sets from upstream outputs (never from the YAML).
WIRED = {
    PruneConfig: {"model", "block_size"},
    DistillConfig: {"teacher"},
    FinetuneConfig: {"model", "data", "response_column", "storage_path", "run_name"},
    MergeConfig: {"models", "base_model"},
    # placement: `ray.resources.evaluate`; `reference` (fidelity): the unpruned model
    EvaluateConfig: {"model", "baseline", "use_ray", "resources", "reference"},
    SpecDecConfig: {"target", "drafts"},
}


def stage_block(cls: type[BaseModel], name: str, **extra: Any) -> type[StrictModel]:
    """A model with the fields of `cls` except the wired ones, plus `extra` (name -> (type, FieldInfo))."""
    fields = {
        field_name: (info.annotation, copy.copy(info))
        for field_name, info in cls.model_fields.items()
        if field_name not in WIRED[cls]
    }
    fields.update(extra)
    return create_model(name, __base__=StrictModel, __doc__=cls.__doc__, **fields)


PruneBlockBase = stage_block(
    PruneConfig, "PruneBlockBase",
    block_size=(int | list[int], Field(..., description="Layers to remove; a list runs a sweep, one run per size.")),
)


class PruneBlock(PruneBlockBase):
    """Pruning settings; `block_size` may be a list (a sweep over block sizes)."""

    @field_validator("block_size")
    @classmethod
    def _positive_unique(cls, value):
        sizes = value if isinstance(value, list) else [value]
        if not sizes:
            raise ValueError("give at least one block size")
        if any(size < 1 for size in sizes):
            raise ValueError(f"block sizes must be >= 1, got {value}")
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"block sizes repeat: {value}")
        return value

    @property
    def block_sizes(self) -> list[int]:
        return self.block_size if isinstance(self.block_size, list) else [self.block_size]


DistillBlock = stage_block(DistillConfig, "DistillBlock")
FinetuneBlock = stage_block(
    FinetuneConfig, "FinetuneBlock",
    arms=(list[Arm], Field(["sft", "sdd"], min_length=1,
                           description="`sft` trains on `original_response`, `sdd` on the self-distilled `response`.")),
    seeds=(list[int] | None, Field(None, min_length=1,
                                   description="Train every arm once per seed (arms labelled `sft-s0`, `sdd-s1`, ...), "
                                               "for a seed-noise floor; None: once, with `seed`. Merge and specdec "
                                               "use each arm's first seed.")),
)
MergeBlock = stage_block(
    MergeConfig, "MergeBlock",
    arms=(list[Arm], Field(["sdd", "sft"], min_length=2, max_length=2,
                           description="The two fine-tuned arms to SLERP (the first is the t = 0 parent).")),
)
EvaluateBlock = stage_block(EvaluateConfig, "EvaluateBlock")
SpecdecBlockBase = stage_block(
    SpecDecConfig, "SpecdecBlockBase",
    drafts=(list[Draft], Field(["no_ft", "sft", "sdd"], min_length=1,
                               description="Drafts measured against the unpruned target, on the same prompts.")),
    dtype=(Literal["auto", "float32", "bfloat16", "float16"] | None,
           Field(None, description="Load target and drafts in this dtype for the measurement (float32: greedy "
                                   "speculation is token-identical to target-only decoding); None: the model's.")),
)


class SpecdecBlock(SpecdecBlockBase):
    @field_validator("data", mode="before")
    @classmethod
    def _test_split(cls, value):
        """As `sdd-ray specdec`: prompts from the `test` split unless another is named, never the
        fine-tuning rows the SFT and SDD drafts were trained on."""
        return with_split(value, "test")


class StageResources(StrictModel):
    """What the Ray task that runs one unit of a stage reserves."""

    num_cpus: float = Field(1.0, ge=0)
    """0 for stages that schedule their own Ray workers (distillation, fine-tuning): the wrapper only waits."""
    num_gpus: float = Field(0.0, ge=0)
    """1 on a GPU cluster for stages that load a model in the wrapper (evaluate, prune, specdec)."""
    memory_gb: float | None = Field(None, gt=0)
    """Memory to reserve (Ray's `memory` resource), for scheduling large models onto big nodes."""


def _default_resources() -> dict[str, StageResources]:
    own_workers = {"distill", "finetune"}
    return {stage: StageResources(num_cpus=0.0 if stage in own_workers else 1.0) for stage in STAGES}


class RayOptions(StrictModel):
    """How the run reaches Ray and what each stage's tasks reserve."""

    address: str | None = None
    """A cluster to join (`auto`, `ray://host:10001`, `host:6379`); None: `RAY_ADDRESS`, else start a local Ray."""
    num_cpus: int | None = Field(None, gt=0)
    """CPUs of a local Ray started by the run (None: all of this machine's)."""
    resources: dict[Stage, StageResources] = Field(default_factory=_default_resources)
    """Per stage; stages not named keep their defaults."""

    @field_validator("resources", mode="after")
    @classmethod
    def _fill_defaults(cls, value: dict) -> dict:
        return {**_default_resources(), **value}


class RunConfig(StrictModel):
    """One run of the pipeline: baseline evaluation -> prune -> distill -> fine-tune -> merge -> evaluate -> specdec."""

    model: ModelSpec
    """The unpruned model: a directory, a hub id, or `toy-teacher`."""
    out: str = "runs/pipeline"
    """Run directory: `<out>/<stage>/<key>/` per stage output, `<out>/report.md`, `<out>/summary.json`."""
    stages: list[Stage] | None = None
    """Stages to run; None: every stage whose block is given. Later stages need the earlier ones' outputs."""
    ray: RayOptions = Field(default_factory=RayOptions)
    prune: PruneBlock
    distill: DistillBlock | None = None
    finetune: FinetuneBlock | None = None
    merge: MergeBlock | None = None
    evaluate: EvaluateBlock = Field(default_factory=EvaluateBlock)
    specdec: SpecdecBlock | None = None
    heartbeat_s: float = Field(30.0, gt=0)
    """Seconds between progress lines while stages run."""

    @field_validator("model", mode="before")
    @classmethod
    def _model_from_name(cls, value):
        return as_spec(value).model_dump() if isinstance(value, (str, Path)) else value

    @model_validator(mode="after")
    def _stages_have_blocks(self) -> RunConfig:
        if self.stages is None:
            chosen = [s for s in STAGES if s in ("baseline", "prune", "evaluate") or getattr(self, s) is not None]
            object.__setattr__(self, "stages", chosen)
        if len(set(self.stages)) != len(self.stages):
            raise ValueError(f"stages: a stage is named twice: {self.stages}")
        for stage in self.stages:
            if stage in ("distill", "finetune", "merge", "specdec") and getattr(self, stage) is None:
                raise ValueError(f"stages: `{stage}` is listed but the config has no `{stage}:` block")
        needs = {"finetune": ["prune", "distill"], "merge": ["finetune"], "specdec": ["prune"], "distill": []}
        for stage, required in needs.items():
            missing = [r for r in required if stage in self.stages and r not in self.stages]
            if missing:
                raise ValueError(f"stages: `{stage}` needs {missing} (it reads their outputs)")
        if "merge" in self.stages and not set(self.merge.arms) <= set(self.finetune.arms):
            raise ValueError(f"merge.arms: {self.merge.arms} must be fine-tuned arms {self.finetune.arms}")
        if "specdec" in self.stages:
            available = {"no_ft"} | (set(self.finetune.arms) if "finetune" in self.stages else set())
            available |= {"merged"} if "merge" in self.stages else set()
            missing = [d for d in self.specdec.drafts if d not in available]
            if missing:
                raise ValueError(f"specdec.drafts: {missing} are not produced by the stages run {self.stages}")
        return self

    def runs(self, stage: str) -> bool:
        return stage in self.stages


def _stage_config(cls: type[BaseModel], data: dict, source: str, prefix: str) -> BaseModel:
    """`cls` from `data`, errors named `source: prefix.field: reason`."""
    try:
        return cls.model_validate(data)
    except ValidationError as error:
        lines = format_validation_error(error, "").splitlines()  # ": field: reason", ": (root): reason"
        lines = [line.removeprefix(": ").removeprefix("(root)") for line in lines]
        raise ConfigError("\n".join(f"{source}: {prefix}{'' if line.startswith(':') else '.'}{line}" for line in lines)) from None


def check_run_inputs(cfg: RunConfig, source: str) -> None:
    """Every local input file exists and has rows, and the distillation data has its columns: before any stage."""
    check_data_source(cfg.prune.calib.source, f"{source}: prune.calib.source")
    if cfg.distill is not None and cfg.runs("distill"):
        check_data_source(cfg.distill.data.source, f"{source}: distill.data.source")
        check_data_columns(cfg.distill.data, f"{source}: distill.data.source")
    if cfg.specdec is not None and cfg.runs("specdec"):
        check_data_source(cfg.specdec.data.source, f"{source}: specdec.data.source")


def check_run_config(cfg: RunConfig, source: str = "<config>", check_model: bool = True) -> None:
    """Validate every stage config with placeholder wiring, and block sizes against the model's depth.

    `check_model` reads the model's `config.json` (a local directory, or the hub for a hub id).
    """
    placeholder = cfg.model.model_dump()
    if check_model:
        num_layers = model_num_layers(cfg.model)
        for size in cfg.prune.block_sizes:
            if size >= num_layers:
                raise ConfigError(f"{source}: prune.block_size: must be < num_hidden_layers ({num_layers}), got {size}")
        check_run_inputs(cfg, source)
    prune = cfg.prune.model_dump(exclude={"block_size"})
    _stage_config(PruneConfig, {**prune, "model": placeholder, "block_size": 0}, source, "prune")
    _stage_config(EvaluateConfig, {**cfg.evaluate.model_dump(), "model": placeholder}, source, "evaluate")
    if cfg.distill is not None:
        _stage_config(DistillConfig, {**cfg.distill.model_dump(), "teacher": placeholder}, source, "distill")
    if cfg.finetune is not None:
        block = cfg.finetune.model_dump(exclude={"arms", "seeds"})
        _stage_config(FinetuneConfig, {**block, "model": placeholder, "data": "placeholder"}, source, "finetune")
    if cfg.merge is not None:
        block = cfg.merge.model_dump(exclude={"arms"})
        models = [{"path": "placeholder/a"}, {"path": "placeholder/b"}]
        _stage_config(MergeConfig, {**block, "models": models}, source, "merge")
    if cfg.specdec is not None:
        block = cfg.specdec.model_dump(exclude={"drafts", "dtype"})
        _stage_config(SpecDecConfig, {**block, "target": placeholder, "drafts": {"d": placeholder}}, source, "specdec")


def load_run_config(path: str | Path, overrides: dict | None = None, check_model: bool = True) -> RunConfig:
    """A checked RunConfig from a YAML file; every problem is a `ConfigError` naming file and field."""
    data = read_yaml(path)
    data.update({key: value for key, value in (overrides or {}).items() if value is not None})
    try:
        cfg = validate_config(RunConfig, data, str(path))
    except ConfigError as error:  # cross-field rules name their fields themselves
        raise ConfigError(str(error).replace(": (root): ", ": ")) from None
    check_run_config(cfg, str(path), check_model=check_model)
    return cfg
