"""The cluster path without a cluster: devices decided from the cluster's resources (not the driver's CUDA),
resource checks that let an autoscaler scale up, and the GPU configs built with the real classes."""

from __future__ import annotations

import pytest

from sdd_ray import guards
from sdd_ray.config import validate_config
from sdd_ray.guards import InputError, check_cluster_resources
from sdd_ray.serve.config import ServeConfig


def test_device_comes_from_the_cluster_not_the_driver():
    from sdd_ray.vllm_engine import cluster_device

    assert [cluster_device("auto", gpus) for gpus in (0, 0.5, 8)] == ["cpu", "gpu", "gpu"]
    assert cluster_device("auto", 0, accelerator_type="A100") == "gpu"  # a group scaled to zero still runs GPUs
    assert (cluster_device("cpu", 8), cluster_device("gpu", 0)) == ("cpu", "gpu")


def test_serve_and_distill_place_engines_by_the_cluster_s_gpus():
    """This machine has no CUDA; a driver here on a GPU cluster must still ask for GPU engines."""
    import torch

    from sdd_ray.distill.config import DistillConfig
    from sdd_ray.distill.vllm_backend import processor_config
    from sdd_ray.serve.vllm_app import llm_config

    assert not torch.cuda.is_available()
    serve = validate_config(ServeConfig, {"target": {"path": "/t"}, "draft": {"path": "/d"}, "engine": "vllm"})
    on_gpus, on_cpus = llm_config(serve, cluster_gpus=4), llm_config(serve, cluster_gpus=0)
    assert "placement_group_config" not in on_gpus and on_gpus["engine_kwargs"]["gpu_memory_utilization"] == 0.9
    assert "enforce_eager" not in on_gpus["engine_kwargs"]
    assert on_cpus["placement_group_config"] == {"bundles": [{"CPU": 0.5}]} and on_cpus["engine_kwargs"]["enforce_eager"]

    distill = validate_config(DistillConfig, {"teacher": {"path": "/t"}, "data": {"source": "toy:all"}, "backend": "vllm",
                                              "vllm": {"accelerator_type": "A100"}})
    pinned = processor_config(distill, cluster_gpus=0)
    assert pinned.placement_group_config is None and pinned.accelerator_type == "A100"


def test_cluster_gpus_counts_what_the_autoscaler_can_add(monkeypatch):
    from sdd_ray import runtime

    monkeypatch.setattr("ray.cluster_resources", lambda: {"CPU": 4.0})
    monkeypatch.setattr(runtime, "max_cluster_resources", lambda: {"CPU": 260, "GPU": 32})
    assert runtime.cluster_gpus() == 32
    monkeypatch.setattr(runtime, "max_cluster_resources", lambda: {})  # a local Ray: no autoscaler
    assert runtime.cluster_gpus() == 0


@pytest.fixture
def autoscaling_cluster(monkeypatch):
    """A cluster of one CPU head whose autoscaler can add up to 16 GPUs; `grows` GPUs appear after each poll."""
    state = {"GPU": 0.0, "grows": 8.0, "requests": []}
    monkeypatch.setattr(guards, "max_cluster_resources", lambda: {"CPU": 132, "GPU": 16})
    monkeypatch.setattr("ray.cluster_resources", lambda: {"CPU": 4.0, "GPU": state["GPU"]})
    monkeypatch.setattr("ray.autoscaler.sdk.request_resources", lambda bundles: state["requests"].append(bundles))

    def poll(seconds):
        state["GPU"] += state["grows"]

    monkeypatch.setattr("time.sleep", poll)
    return state


def test_resource_check_waits_for_the_autoscaler_then_passes(autoscaling_cluster, capsys):
    check_cluster_resources("finetune", 8, 0.5, 1.0, timeout_s=60)
    assert autoscaling_cluster["GPU"] == 8
    assert autoscaling_cluster["requests"] == [[{"CPU": 0.5, "GPU": 1.0}] * 8, []]  # asked, then the request cleared
    assert "finetune: waiting up to 60 s for the autoscaler to add 8 GPU" in capsys.readouterr().err


def test_resource_check_refuses_beyond_the_autoscaler_and_times_out_with_a_clear_line(autoscaling_cluster):
    with pytest.raises(InputError, match=r"32 GPU, but the Ray cluster has 0 GPU in all \(its autoscaler: at most 16\)"):
        check_cluster_resources("distill", 32, 0.5, 1.0)
    assert autoscaling_cluster["requests"] == []  # refused before asking
    autoscaling_cluster["grows"] = 0.0
    with pytest.raises(InputError, match="distill: the autoscaler did not add 8 GPU within 0 s"):
        check_cluster_resources("distill", 8, 0.5, 1.0, timeout_s=0)
    assert autoscaling_cluster["requests"][-1] == []


def test_resource_check_on_a_fixed_cluster_refuses_at_once(monkeypatch):
    monkeypatch.setattr(guards, "max_cluster_resources", lambda: {})
    monkeypatch.setattr("ray.cluster_resources", lambda: {"CPU": 2.0})
    with pytest.raises(InputError, match=r"4 workers x 1 CPU = 4 CPU, but the Ray cluster has 2 CPU in all; lower"):
        check_cluster_resources("distill", 4, 1.0)
    check_cluster_resources("distill", 2, 1.0)  # fits: no wait, no autoscaler request


def test_gpu_greedy_check_accepts_bf16_ties_and_catches_wrong_tokens():
    """Served tokens scored by the engine's target-only prefill: (rank, logprob, top logprob) per token."""
    from sdd_ray.serve.greedy_check import TIE_LOGPROB, off_argmax

    argmax, tie, wrong = (1, -0.1, -0.1), (2, -0.80, -0.70), (7, -6.0, -0.05)
    assert off_argmax([argmax, tie, argmax]) == []  # a near-tie broken the other way is no error
    assert off_argmax([argmax, argmax, wrong, argmax]) == [2]
    assert off_argmax([(2, -1.0, -1.0 + TIE_LOGPROB + 0.01)]) == [0]
    assert off_argmax([tie], tolerance=0.0) == [0]  # the CPU build's float32 could use no tolerance at all
