"""Configuration of the evaluation stage.

Task lists, few-shot counts and reported metrics live here, not in code. The defaults reproduce the
paper's suite, the Open LLM Leaderboard v1 settings (ARC-Challenge 25-shot acc_norm, HellaSwag
10-shot acc_norm, MMLU 5-shot, TruthfulQA mc2 0-shot, Winogrande 5-shot, GSM8K 5-shot exact match);
the `toy_*` and `gsm8k_local` tasks run the same harness over local files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from sdd_ray.config import ModelSpec, StrictModel
from sdd_ray.data import DataSpec
from sdd_ray.toy.tasks import TASKS as BUILTIN_TASKS

FIDELITY = "fidelity"
"""The task name of the fidelity measurement (`sdd_ray.evaluate.fidelity`); it runs with either evaluator."""
DEFAULT_FIDELITY_PROMPTS = str(Path(__file__).parent / "prompts" / "fidelity.jsonl")


class HarnessTask(StrictModel):
    """How one lm-eval task is run and which of its numbers is reported."""

    num_fewshot: int = Field(0, ge=0)
    metric: str = "acc"
    """The lm-eval metric reported as the task's accuracy (`acc`, `acc_norm`, `exact_match`)."""
    filter: str = "none"
    """The lm-eval filter whose metric is reported (`none`; for GSM8K `strict-match`)."""


LEADERBOARD_V1 = {
    "arc_challenge": HarnessTask(num_fewshot=25, metric="acc_norm"),
    "hellaswag": HarnessTask(num_fewshot=10, metric="acc_norm"),
    "mmlu": HarnessTask(num_fewshot=5, metric="acc"),
    "truthfulqa_mc2": HarnessTask(num_fewshot=0, metric="acc"),  # lm-eval's name for the MC2 score
    "winogrande": HarnessTask(num_fewshot=5, metric="acc"),
    "gsm8k": HarnessTask(num_fewshot=5, metric="exact_match", filter="strict-match"),
}
COMMONSENSE = {
    "arc_easy": HarnessTask(num_fewshot=0, metric="acc_norm"),
    "piqa": HarnessTask(num_fewshot=0, metric="acc"),
    "openbookqa": HarnessTask(num_fewshot=0, metric="acc"),
    "commonsense_qa": HarnessTask(num_fewshot=0, metric="acc"),
    "truthfulqa_mc1": HarnessTask(num_fewshot=0, metric="acc"),
    "lambada_openai": HarnessTask(num_fewshot=0, metric="acc"),
}
"""Zero-shot neighbours of the leaderboard on which a ~100M-parameter model scores above chance."""
LOCAL = {
    "toy_arith": HarnessTask(num_fewshot=0, metric="exact_match"),
    "toy_facts": HarnessTask(num_fewshot=0, metric="acc"),
    "toy_instruct": HarnessTask(num_fewshot=0, metric="acc"),
    "gsm8k_local": HarnessTask(num_fewshot=5, metric="exact_match", filter="strict-match"),
}


class HarnessConfig(StrictModel):
    """lm-evaluation-harness settings: backend, task table, local data."""

    backend: Literal["hf", "vllm"] = "hf"
    """`hf`: transformers on CPU or GPU; `vllm`: vLLM on a GPU (tensor parallel over `num_gpus`)."""
    task_settings: dict[str, HarnessTask] = Field(default_factory=lambda: {**LEADERBOARD_V1, **COMMONSENSE, **LOCAL})
    """Every task the harness may run; add lm-eval task names here (few-shot count and metric)."""
    include_paths: list[str] = Field(default_factory=list)
    """Extra folders of lm-eval task YAMLs (`TaskManager(include_path=...)`)."""
    data_source: Literal["auto", "local", "hub"] = "auto"
    """Where the real benchmarks' rows come from: `auto` a local data folder when one is found, else the
    hub; `local` a local folder or an error; `hub` lm-eval's hub datasets (the official numbers)."""
    data_dir: str | None = None
    """The local data folder (`eval/<set>/<split>.jsonl`, `gsm8k/`); None: `$SDD_RAY_DATA_DIR`, else
    `../shared/data` beside the repository if present."""
    gsm8k: DataSpec = Field(default_factory=lambda: DataSpec(source="openai/gsm8k:main", split="test"))
    """The rows (`question`, `answer`) behind the `gsm8k_local` task: any data source; the hub set is
    read from its local copy when there is one (`sdd_ray.data.local_copy`)."""
    apply_chat_template: bool = False
    """Wrap prompts in the tokenizer's chat template (instruct models on real benchmarks)."""
    max_batch_tokens: int | None = Field(4096, gt=0)
    """`hf` backend: at most this many padded tokens per log-likelihood batch (rows x longest row), besides
    `batch_size` rows; bounds the (rows, length, vocabulary) logits (None: `batch_size` rows, lm-eval's batching)."""
    bootstrap_iters: int = Field(1000, ge=0)
    """Bootstrap resamples for the stderr of non-mean metrics (0: no stderr)."""
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    """vLLM only: the share of GPU memory vLLM may take."""
    max_model_len: int | None = Field(None, gt=0)
    """vLLM only: the context length to allocate for (None: the model's)."""


class FidelityConfig(StrictModel):
    """How close the model's next-token distributions stay to the reference's, on the reference's own answers."""

    prompts: DataSpec = Field(default_factory=lambda: DataSpec(source=DEFAULT_FIDELITY_PROMPTS, split="test"))
    """Held-out prompts (the instruction and input columns are used): any data source; the default ships
    with sdd_ray (general, math and coding instructions)."""
    max_new_tokens: int = Field(64, gt=0)
    """Length cap of the reference's greedy answers."""
    k: int = Field(4, gt=0)
    """Draft length for the expected accepted length (1 - a^(k+1)) / (1 - a) of speculative decoding."""
    cache_dir: str | None = None
    """Where the reference's answers are kept, by content (None: `~/.cache/sdd_ray/fidelity`)."""


class RayResources(StrictModel):
    """What one evaluation (one model, or one model x task with `split_tasks`) asks Ray for."""

    num_cpus: float = Field(1.0, gt=0)
    """CPU slots per evaluation; fractions share a small box (0.5 on 2 CPUs runs two at once)."""
    num_gpus: float = Field(0.0, ge=0)
    """GPUs per evaluation: 1 on a GPU cluster (one model per GPU); >1 for vLLM tensor parallelism."""
    split_tasks: bool = False
    """Run each (model, task) pair as its own Ray task instead of one Ray task per model."""


class EvaluateConfig(StrictModel):
    """Evaluate one model on a task suite, optionally against an unpruned baseline."""

    model: ModelSpec
    tasks: list[str] | None = Field(None, min_length=1)
    """Task names; None: `arith, facts, instruct` (builtin) or the leaderboard-v1 six (harness)."""
    evaluator: Literal["builtin", "harness"] = "builtin"
    limit: int | None = Field(200, gt=0)
    """Examples per task: a seeded random sample of the task's split, the same for every model with the same
    `seed` (None: the whole split; the toy tasks then have 1000)."""
    batch_size: Annotated[int, Field(gt=0)] | Literal["auto"] = 32
    """`auto` (harness only): lm-eval sizes batches itself; with vLLM, every request goes to the engine at once."""
    seed: int = 0
    """Seed of the document sample, of the toy `eval` split and of lm-eval's few-shot draw."""
    baseline: str | None = None
    """A `results.json` of the unpruned model, or a model to evaluate first; gives `recovery_pct`."""
    harness: HarnessConfig = Field(default_factory=HarnessConfig)
    reference: str | None = None
    """The original model for the `fidelity` task (a directory, hub id or `toy-teacher`)."""
    fidelity: FidelityConfig = Field(default_factory=FidelityConfig)
    pairs: list[str] | None = None
    """Paired comparisons for reports, `b:a` (b - a) by name; None: the report's default."""
    resources: RayResources = Field(default_factory=RayResources)
    use_ray: bool = False
    """Evaluate as Ray tasks (model and baseline in parallel; on a cluster, on a GPU node)."""

    @model_validator(mode="after")
    def _check_tasks(self) -> EvaluateConfig:
        if self.tasks is None:
            default = list(BUILTIN_TASKS) if self.evaluator == "builtin" else list(LEADERBOARD_V1)
            object.__setattr__(self, "tasks", default)
        if self.evaluator == "builtin":
            known, hint = list(BUILTIN_TASKS), ""
        else:
            known, hint = list(self.harness.task_settings), " (add lm-eval tasks under harness.task_settings)"
        unknown = [t for t in self.tasks if t not in known and t != FIDELITY]
        if unknown:
            raise ValueError(f"unknown {self.evaluator} task(s) {unknown}; choose from {[*known, FIDELITY]}{hint}")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks repeat a name: {self.tasks}")
        if self.batch_size == "auto" and self.evaluator != "harness":
            raise ValueError("batch_size: auto is for the harness evaluator; the builtin one needs a number")
        return self
