"""The test bed's stand-in DCGM exporter (tests/bed/dcgm_exporter.py): dcgm-exporter's text format
with pod mapping, GPUs handed out per node as pods come and go, readings as the test sets them."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace as NS
from typing import Any

import pytest
import requests

from tests.bed.dcgm_exporter import DcgmExporter, gpu_uuid

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def node(name: str, gpus: int, kwok: bool = True) -> Any:
    return NS(
        metadata=NS(
            name=name,
            annotations={"kwok.x-k8s.io/node": "fake"} if kwok else {},
            labels={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"} if gpus else {},
        ),
        status=NS(allocatable={"cpu": "96", **({"nvidia.com/gpu": str(gpus)} if gpus else {})}),
    )


def pod(name: str, gpus: int, node_name: str = "h100-0", age: int = 0) -> Any:
    limits = {"cpu": "2", **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    return NS(
        metadata=NS(name=name, namespace="aidc-lab", uid=f"uid-{name}", creation_timestamp=T0 + timedelta(seconds=age)),
        spec=NS(node_name=node_name, containers=[NS(name="notebook", resources=NS(limits=limits, requests=limits))]),
    )


class FakeCore:
    def __init__(self) -> None:
        self.nodes = [node("h100-0", 4), node("cpu-0", 0), node("real-gpu-node", 8, kwok=False)]
        self.pods: list[Any] = []

    def list_node(self) -> Any:
        return NS(items=self.nodes)

    def list_pod_for_all_namespaces(self, field_selector: str) -> Any:
        assert field_selector == "status.phase=Running"
        return NS(items=self.pods)


@pytest.fixture
def exporter() -> Iterator[tuple[DcgmExporter, FakeCore]]:
    e = DcgmExporter(None)  # type: ignore[arg-type]  # reads FakeCore, not an API server
    core = FakeCore()
    e.core = core  # type: ignore[assignment]
    yield e.start(), core
    e.stop()


def lines(text: str, metric: str = "DCGM_FI_DEV_GPU_UTIL") -> list[str]:
    return [line for line in text.splitlines() if line.startswith(metric + "{")]


def test_the_exporters_format(exporter: tuple[DcgmExporter, FakeCore]) -> None:
    e, core = exporter
    core.pods = [pod("jupyter-alice", 2), pod("cpu-only", 0, age=1)]
    e.set("aidc-lab", "jupyter-alice", utilization=87, memory_used_mib=30512.5)
    text = requests.get(e.url, timeout=5).text
    uuid = gpu_uuid("h100-0", 0)
    assert text.startswith(
        "# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).\n# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n"
        f'DCGM_FI_DEV_GPU_UTIL{{gpu="0",UUID="{uuid}",pci_bus_id="00000000:18:00.0",device="nvidia0",'
        'modelName="NVIDIA H100 80GB HBM3",Hostname="h100-0",DCGM_FI_DRIVER_VERSION="550.127.05",'
        'container="notebook",namespace="aidc-lab",pod="jupyter-alice"} 87\n'
    )
    assert "# HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).\n# TYPE DCGM_FI_DEV_FB_USED gauge\n" in text
    # the KWOK GPU node's 4 GPUs only, the two unheld ones without pod labels
    util = lines(text)
    assert len(util) == 4 and [line.endswith(" 87") for line in util] == [True, True, False, False]
    assert 'pod="' not in util[2] and util[2].endswith(" 0")
    assert lines(text, "DCGM_FI_DEV_FB_USED")[0].endswith(" 30512.5")
    if shutil.which("promtool"):  # Prometheus' own parser and linter of the exposition format
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        # it parses; the lint finds only what it finds in the real exporter's output (modelName, UUID)
        problems = set((check.stdout + check.stderr).splitlines())
        camel = {
            f"{m} label names should be written in 'snake_case' not 'camelCase'"
            for m in ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED")
        }
        assert check.returncode in (0, 3) and problems <= camel, problems


def test_gpus_are_handed_out_lowest_first_and_kept_while_a_pod_runs(exporter: tuple[DcgmExporter, FakeCore]) -> None:
    e, core = exporter
    core.pods = [pod("jupyter-alice", 2), pod("jupyter-bob", 1, age=1)]
    e.set("aidc-lab", "jupyter-bob", utilization=50)
    assert ['pod="jupyter-bob"' in line for line in lines(e.metrics())] == [False, False, True, False]
    core.pods = [pod("jupyter-bob", 1, age=1), pod("jupyter-carol", 2, age=2)]  # alice ended
    held = [line.split('pod="')[1].split('"')[0] if 'pod="' in line else "" for line in lines(e.metrics())]
    assert held == ["jupyter-carol", "jupyter-carol", "jupyter-bob", ""]


def test_readings_per_pod_per_gpu_and_hidden(exporter: tuple[DcgmExporter, FakeCore]) -> None:
    e, core = exporter
    core.pods = [pod("jupyter-alice", 2)]
    e.set("aidc-lab", "jupyter-alice", utilization=87, memory_used_mib=100)
    r = requests.put(f"http://{e.address}/pods/aidc-lab/jupyter-alice", json={"utilization": 3, "gpu": 1}, timeout=5)
    assert r.status_code == 204
    values = [line.rsplit(" ", 1)[1] for line in lines(e.metrics())[:2]]
    memory = [line.rsplit(" ", 1)[1] for line in lines(e.metrics(), "DCGM_FI_DEV_FB_USED")[:2]]
    assert (values, memory) == (["87", "3"], ["100", "100"])
    e.set("aidc-lab", "jupyter-alice", utilization=0)  # the whole pod again: per-GPU readings go
    assert [line.rsplit(" ", 1)[1] for line in lines(e.metrics())[:2]] == ["0", "0"]
    requests.put(f"http://{e.address}/pods/aidc-lab/jupyter-alice", json={"hidden": True}, timeout=5)
    assert not [line for line in lines(e.metrics()) if "jupyter-alice" in line]
    assert len(lines(e.metrics())) == 2  # the two unheld GPUs still report
