"""The `chart` tier: the Helm chart in helm/aidc-hub, with the `helm` that
tests/bed/helm/build.sh builds from the Go module proxy (cached under ~/.cache/aidc/helm/), and,
for the tests that create its objects, a real control plane (tests/bed/cluster.py).

If helm or the control plane cannot be built, the tests error with the build's output; none is
skipped.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.bed.cluster import ControlPlane

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "aidc-hub"
PRODUCTION = CHART / "examples" / "production.yaml"
BUILD_SH = REPO / "tests" / "bed" / "helm" / "build.sh"


class Helm:
    """The helm command, run against the chart (and, with a kubeconfig, a cluster)."""

    def __init__(self, binary: Path, kubeconfig: Path | None = None):
        self.binary = binary
        self.kubeconfig = kubeconfig

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.binary), *args]
        if self.kubeconfig is not None:
            cmd += ["--kubeconfig", str(self.kubeconfig)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr}{proc.stdout}")
        return proc

    def template(self, *values: Path, namespace: str = "aidc", extra: tuple[str, ...] = ()) -> str:
        args = ["template", "aidc", str(CHART), "--namespace", namespace, *extra]
        for v in values:
            args += ["--values", str(v)]
        return self.run(*args).stdout

    def objects(self, *values: Path, namespace: str = "aidc") -> list[dict[str, Any]]:
        return [d for d in yaml.safe_load_all(self.template(*values, namespace=namespace)) if d]


def build_helm() -> Path:
    proc = subprocess.run(["bash", str(BUILD_SH)], capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not (Path(lines[-1]) / "helm").is_file():
        tail = "\n".join(proc.stderr.splitlines()[-40:])
        raise RuntimeError(f"{BUILD_SH} could not build helm (exit {proc.returncode}):\n{tail}")
    return Path(lines[-1]) / "helm"


@pytest.fixture(scope="session")
def helm() -> Helm:
    return Helm(build_helm())


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp("chart-cluster"))
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def cluster_helm(helm: Helm, cluster: ControlPlane) -> Helm:
    return Helm(helm.binary, cluster.kubeconfig)


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(
        f"no {kind} {name} in the rendered chart: {[(o['kind'], o['metadata']['name']) for o in objects]}"
    )
