"""Real benchmarks from local files: the same prompts and per-example scores as lm-eval's own tasks.

The official task definitions read the hub; here their dataset download is replaced by the same
local rows, so that any difference between the two runs comes from sdd_ray's rewritten configs.
"""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # the hub is never reached

from conftest import SHARED_DATA, make_tiny_llama  # noqa: E402

from sdd_ray.config import ConfigError  # noqa: E402
from sdd_ray.evaluate.local_benchmarks import (  # noqa: E402
    DATA_DIR_ENV,
    LOCAL_FILES,
    benchmark_data_dir,
    eval_data_dir,
    official_config,
    official_task_index,
    official_task_manager,
    prepare_local_benchmarks,
)

COMPARED_BY_SHOTS = {
    0: ["hellaswag", "arc_easy", "piqa", "winogrande", "openbookqa", "commonsense_qa", "truthfulqa_mc2"],
    5: ["mmlu_high_school_geography"],  # the leaderboard's 5 shots: the first 5 `dev` rows of the subject
}
"""Zero-shot where the hub draws few-shot examples from a `train` split the local copy lacks."""
COMPARED = [name for names in COMPARED_BY_SHOTS.values() for name in names]
LIMIT = 8

needs_data = pytest.mark.skipif(
    not (SHARED_DATA / "eval").is_dir(), reason=f"{SHARED_DATA}/eval not found (the shared data folder sits beside the repository)"
)


@pytest.fixture(scope="module")
def text_llama(tmp_path_factory):
    """A tiny random Llama with a byte-level BPE tokenizer trained on the benchmarks' own text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = []
    for files in LOCAL_FILES.values():
        with open(SHARED_DATA / next(iter(files.values()))) as lines:
            texts += [line for _, line in zip(range(200), lines)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<pad>", "<s>", "</s>"]
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=2000, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    ))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", padding_side="left"
    )
    return make_tiny_llama(tmp_path_factory.mktemp("text_llama"), num_layers=2, tokenizer=tokenizer, max_positions=2048)


def hub_layout_of_local_rows(names: list[str], cache_dir) -> dict:
    """{(dataset_path, dataset_name): DatasetDict} that the official tasks would download, from the local rows.

    Splits the local copy lacks (`train`; OpenBookQA's `test`) are given the `validation` rows, the
    split the local tasks fall back to.
    """
    import datasets

    index = official_task_index()
    hub = {}
    for name in names:
        config = official_config(name, index)
        if name in LOCAL_FILES:
            splits = {s: datasets.Dataset.from_json(str(SHARED_DATA / f), cache_dir=str(cache_dir)) for s, f in LOCAL_FILES[name].items()}
        else:
            subject = config["dataset_name"]
            splits = {
                s: datasets.Dataset.from_json(str(SHARED_DATA / "eval" / "mmlu" / f"{s}.jsonl"), cache_dir=str(cache_dir))
                .filter(lambda row: row["subject"] == subject)
                for s in ("test", "validation", "dev")
            }
        for field in ("training_split", "validation_split", "test_split", "fewshot_split"):
            if config.get(field) and config[field] not in splits:
                splits[config[field]] = splits["validation"]
        hub[(config["dataset_path"], config.get("dataset_name"))] = datasets.DatasetDict(splits)
    return hub


def per_example(lm, manager) -> dict[str, list[tuple]]:
    """{task: [(doc_id, the model's requests, the scored metrics, dataset_path)]} of the compared tasks."""
    import lm_eval

    out = {}
    for shots, names in COMPARED_BY_SHOTS.items():
        raw = lm_eval.simple_evaluate(
            model=lm, tasks=names, num_fewshot=shots, limit=LIMIT, task_manager=manager,
            bootstrap_iters=0, log_samples=True, random_seed=0,
        )
        for name in names:
            samples = sorted(raw["samples"][name], key=lambda s: s["doc_id"])
            source = raw["configs"][name]["dataset_path"]
            metrics = [{m: s[m] for m in ("acc", "acc_norm") if m in s} for s in samples]
            out[name] = [(s["doc_id"], [tuple(a) for a in s["arguments"]], m, source) for s, m in zip(samples, metrics)]
    return out


@needs_data
def test_local_tasks_score_every_example_as_lm_evals_own_tasks(text_llama, tmp_path, monkeypatch):
    import datasets
    from lm_eval.api.registry import get_model
    from lm_eval.tasks import TaskManager

    lm = get_model("hf").create_from_arg_obj({"pretrained": str(text_llama), "dtype": "float32"}, {"batch_size": 16, "device": "cpu"})
    local = per_example(lm, TaskManager(include_path=prepare_local_benchmarks(COMPARED, tmp_path / "tasks", SHARED_DATA), include_defaults=False))

    hub = hub_layout_of_local_rows(COMPARED, tmp_path / "cache")
    read_json = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda path, name=None, **kw: read_json(path, name=name, **kw) if path == "json" else hub[(path, name)])
    official = per_example(lm, official_task_manager())

    for name in COMPARED:
        assert len(local[name]) == LIMIT, name
        assert {row[3] for row in local[name]} == {"json"} and {row[3] for row in official[name]} != {"json"}, name
        assert [row[:3] for row in local[name]] == [row[:3] for row in official[name]], name


@needs_data
def test_every_listed_benchmark_reads_its_local_splits(tmp_path):
    """Each task keeps lm-eval's prompt and evaluation split, with rows from the local files."""
    from lm_eval.tasks import TaskManager

    names = [*LOCAL_FILES, "mmlu"]
    manager = TaskManager(include_path=prepare_local_benchmarks(names, tmp_path, SHARED_DATA), include_defaults=False)
    loaded = manager.load(names)
    assert len([t for t in loaded["tasks"] if t.startswith("mmlu_")]) == 57
    assert set(loaded["group_map"]["mmlu"]) == {"mmlu_stem", "mmlu_other", "mmlu_social_sciences", "mmlu_humanities"}
    sizes = {name: len(loaded["tasks"][name].eval_docs) for name in LOCAL_FILES}
    assert sizes == {
        "hellaswag": 10042, "arc_easy": 2376, "arc_challenge": 1172, "piqa": 1838, "winogrande": 1267,
        "openbookqa": 500, "commonsense_qa": 1221, "truthfulqa_mc1": 817, "truthfulqa_mc2": 817,
        "lambada_openai": 5153, "gsm8k": 1319,
    }
    assert sum(len(t.eval_docs) for n, t in loaded["tasks"].items() if n.startswith("mmlu_")) == 14042
    gsm8k = loaded["tasks"]["gsm8k"]
    assert len(gsm8k.fewshot_docs()) == 7473  # few-shot examples from the local train file, as on the hub
    for name, task in loaded["tasks"].items():  # the local rows have the fields lm-eval's prompts read
        doc = task.eval_docs[0]
        text, target = task.doc_to_text(doc), task.doc_to_target(doc)
        assert text != "" and target != "", name
        if task.config.output_type == "multiple_choice":
            choices = task.doc_to_choice(doc)
            gold = text if isinstance(text, int) else target  # WinoGrande: the gold index picks the context
            assert (choices.index(gold) if isinstance(gold, str) else gold) in range(len(choices)), name


def test_data_folder_is_found_or_named(tmp_path, monkeypatch):
    from sdd_ray.evaluate import local_benchmarks
    from sdd_ray.evaluate.harness import benchmarks_with_local_data

    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(local_benchmarks, "DEFAULT_DATA_DIR", tmp_path / "absent")
    assert eval_data_dir() is None and benchmark_data_dir("auto") is None  # the hub
    assert benchmarks_with_local_data(["hellaswag"], None) == []
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(ConfigError, match=rf"\${DATA_DIR_ENV}={tmp_path}: no eval/ folder"):
        eval_data_dir()
    (tmp_path / "eval").mkdir()
    assert eval_data_dir() == tmp_path
    with pytest.raises(ConfigError, match="harness.data_dir"):
        eval_data_dir(str(tmp_path / "missing"))
    assert benchmark_data_dir("hub") is None and benchmark_data_dir("local") == tmp_path
    if (SHARED_DATA / "eval").is_dir():  # a partial folder: the tasks without their files go to the hub
        (tmp_path / "eval" / "piqa").mkdir()
        (tmp_path / "eval" / "piqa" / "validation.jsonl").symlink_to(SHARED_DATA / "eval" / "piqa" / "validation.jsonl")
        assert benchmarks_with_local_data(["piqa", "hellaswag", "mmlu"], tmp_path) == ["piqa"]
    monkeypatch.delenv(DATA_DIR_ENV)
    with pytest.raises(ConfigError, match="harness.data_source=local but no data folder"):
        benchmark_data_dir("local")


@pytest.mark.slow
@needs_data
def test_cli_harness_writes_leaderboard_metrics(monkeypatch, capsys, tmp_path, text_llama):
    """`sdd-ray evaluate --evaluator harness` on real tasks from the data folder, end to end."""
    from test_evaluate import run_cli

    monkeypatch.setenv(DATA_DIR_ENV, str(SHARED_DATA))
    out = tmp_path / "r.json"
    code, err = run_cli(
        monkeypatch, capsys, "evaluate", "--model", str(text_llama), "--evaluator", "harness",
        "--tasks", "hellaswag,arc_easy,gsm8k", "--limit", "4", "--out", str(out),
    )
    assert code == 0, err
    written = json.loads(out.read_text())
    assert written["data_dir"] == str(SHARED_DATA.resolve())
    tasks = written["tasks"]
    assert {t: (r["metric"], r["n"], r["num_fewshot"]) for t, r in tasks.items()} == {
        "hellaswag": ("acc_norm", 4, 10), "arc_easy": ("acc_norm", 4, 0), "gsm8k": ("exact_match (strict-match)", 4, 5),
    }
    assert all(0 <= r["value"] <= 1 for r in tasks.values())


@needs_data
def test_local_source_refuses_tasks_without_a_local_copy():
    from sdd_ray.config import validate_config
    from sdd_ray.evaluate.config import EvaluateConfig
    from sdd_ray.evaluate.harness import evaluate_harness

    harness = {"data_source": "local", "data_dir": str(SHARED_DATA), "task_settings": {"boolq": {}, "piqa": {}}}
    cfg = validate_config(EvaluateConfig, {"model": {"path": "never-loaded"}, "evaluator": "harness", "tasks": ["piqa", "boolq"], "harness": harness})
    with pytest.raises(ConfigError, match=r"\['boolq'\] have no local copy"):
        evaluate_harness(cfg.model, cfg.tasks, cfg)


@needs_data
@pytest.mark.timeout(900)
def test_harness_scores_a_seeded_sample_and_writes_per_document_files(text_llama, tmp_path, monkeypatch, capsys):
    """--limit draws seeded documents (not the first ones); accuracy is the mean of the written records;
    batches bounded by tokens give lm-eval's own per-document numbers, with a progress bar over the requests."""
    from sdd_ray.config import validate_config
    from sdd_ray.evaluate.config import EvaluateConfig
    from sdd_ray.evaluate.examples import draw_documents
    from sdd_ray.evaluate.run import run_evaluate

    monkeypatch.setenv(DATA_DIR_ENV, str(SHARED_DATA))
    base = {"model": {"path": str(text_llama)}, "evaluator": "harness", "tasks": ["piqa", "arc_easy"], "limit": 5,
            "seed": 3, "batch_size": 8}
    bounded = {**base, "harness": {"max_batch_tokens": 64}}  # a few rows per batch, one where a row is longer
    results = run_evaluate(validate_config(EvaluateConfig, bounded), tmp_path / "a" / "results.json")
    assert "Scoring log-likelihoods: 100%" in capsys.readouterr().err
    run_evaluate(validate_config(EvaluateConfig, {**base, "harness": {"max_batch_tokens": None}}),
                 tmp_path / "b" / "results.json")
    sizes = {"piqa": 1838, "arc_easy": 2376}
    for task, size in sizes.items():
        entry = results["tasks"][task]
        lines = [json.loads(line) for line in (tmp_path / "a" / entry["samples"]).read_text().splitlines()]
        assert [r["doc_id"] for r in lines] == draw_documents(size, 5, 3, task) != list(range(5))
        assert entry["value"] == sum(r["correct"] for r in lines) / 5 and entry["n"] == 5
        scores = [r["score"] for r in lines]  # a probability; a random model's may round to exactly 0 or 1
        assert all(0 <= p <= 1 for p in scores) and any(0 < p < 1 for p in scores), scores
        other = [json.loads(line) for line in (tmp_path / "b" / entry["samples"]).read_text().splitlines()]
        assert [r["correct"] for r in other] == [r["correct"] for r in lines]
        assert [r["score"] for r in other] == pytest.approx([r["score"] for r in lines], abs=1e-5)
    assert results["tasks"]["piqa"]["chance"] == 0.5
    assert 0.2 <= results["tasks"]["arc_easy"]["chance"] <= 0.34  # 3-5 options, mostly 4
