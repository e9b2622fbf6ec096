"""The container image definition: Ray and Python as pinned, non-root, nothing secret, a build context of only
what the image needs. (No Docker engine runs here; the Dockerfile is checked as text.)"""

from __future__ import annotations

import re

import pathspec
import ray

from tests.conftest import REPO

DOCKERFILE = (REPO / "deploy" / "docker" / "Dockerfile").read_text()


def args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE, flags=re.M))


def test_base_image_matches_pinned_ray_and_python() -> None:
    a = args()
    minor = re.search(r'"ray\[[^\]]*\]==(\d+\.\d+)\.\*"', (REPO / "pyproject.toml").read_text())
    assert minor and a["RAY_VERSION"].startswith(minor.group(1) + ".") and ray.__version__.startswith(minor.group(1))
    assert a["PYTHON_TAG"] == "py311"
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}-\$\{PYTHON_TAG\}-\$\{VARIANT\}$", DOCKERFILE, flags=re.M)
    assert a["VARIANT"] == "gpu" and '"$VARIANT" = "cpu"' in DOCKERFILE


def test_runs_as_non_root_and_bakes_in_no_credentials() -> None:
    users = re.findall(r"^USER (\S+)$", DOCKERFILE, flags=re.M)
    assert users and users[-1] not in ("0", "root")
    assert DOCKERFILE.index("USER ") < DOCKERFILE.index("pip install")
    for line in re.findall(r"^(?:ENV|ARG) .*$", DOCKERFILE, flags=re.M):
        assert not re.search(r"(?i)aws_|secret|token|password|access_key", line), line


def test_build_context_is_only_what_the_image_needs() -> None:
    spec = pathspec.PathSpec.from_lines("gitignore", (REPO / ".dockerignore").read_text().splitlines())
    for shipped in ("pyproject.toml", "README.md", "cluster/cli.py", "trainables/loop.py", "search_spaces/loader.py"):
        assert not spec.match_file(shipped), f"{shipped} left out of the build context"
    assert not spec.match_file("cluster/datasets/beijing_pm25_hourly.csv.xz"), "the bundled data must ship"
    for left_out in (
        ".git/config",
        "runs/quickstart/best.json",
        "tests/data/newsgroups-sgns-50d.txt.gz",
        "cluster/__pycache__/cli.cpython-311.pyc",
        ".venv/bin/python",
        "deploy/k8s/x.yaml",
    ):
        assert spec.match_file(left_out), f"{left_out} would enter the build context"
    for copied in re.findall(r"^COPY \S+ (.+) \./?\S*$", DOCKERFILE, flags=re.M):
        for path in copied.split():
            assert (REPO / path).exists(), f"COPY {path}: no such path"
