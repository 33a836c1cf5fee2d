"""quotas/gpu_use.py: nvidia-smi's CSV as the real one prints it, and the embedded source of GPU
use. A value nvidia-smi cannot give is no data, never 0 %."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from quotas.gpu_use import (
    GpuSample,
    GpuUseUnavailable,
    NvidiaSmiSource,
    ServerGpus,
    SmiGpu,
    parse_smi_use,
    samples_of,
    smi_fields,
    smi_number,
)

from .conftest import REPO

STAND_IN = REPO / "tests" / "bed" / "fake-nvidia-smi"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("field", "unit", "number"),
    [
        ("37", "", 37.0),
        (" 37 ", "", 37.0),
        ("0", "", 0.0),
        ("37 %", "%", 37.0),
        ("81559 MiB", "MiB", 81559.0),
        ("[N/A]", "", None),
        ("[Not Supported]", "%", None),
        ("[Unknown Error]", "", None),
        ("[Insufficient Permissions]", "", None),
        ("", "", None),
        ("-1", "", None),
        ("nan", "", None),
        ("inf", "", None),
        ("37 %", "", None),  # a unit where none was asked: not a number
    ],
)
def test_smi_number(field: str, unit: str, number: float | None) -> None:
    assert smi_number(field, unit) == number


def test_smi_fields() -> None:
    assert smi_fields("0, NVIDIA H100 80GB HBM3, 00000000:17:00.0") == [
        "0",
        "NVIDIA H100 80GB HBM3",
        "00000000:17:00.0",
    ]
    assert smi_fields("  1 ,GPU-ab ,  5,  7  ") == ["1", "GPU-ab", "5", "7"]
    assert smi_fields("   ") == []


def test_parse_smi_use_reads_nvidias_csv() -> None:
    output = (
        "0, GPU-5c1e0f0a-0000-0000-0000-000000000000, 97, 40312\n"
        "1, GPU-6d2f1a1b-0000-0000-0000-000000000001, 0, 1\n"
        "   2 ,  GPU-7e3a2b2c-0000-0000-0000-000000000002 ,  3 ,  512   \n"  # extra spaces
        "3, GPU-8f4b3c3d-0000-0000-0000-000000000003, [N/A], 3086\n"  # MIG enabled: no utilization of its own
        "4, GPU-904c4d4e-0000-0000-0000-000000000004, [Not Supported], [Not Supported]\n"
        "5, GPU-a15d5e5f-0000-0000-0000-000000000005, 250, 12\n"  # impossible: no data
        "\n"
        "WARNING: infoROM is corrupted at gpu 0000:17:00.0\n"  # garbage lines are left out
        "index, uuid, utilization.gpu [%], memory.used [MiB]\n"
        "6, GPU-b26e6f60-0000-0000-0000-000000000006, 4\n"  # truncated
        "7, GPU-c37f7071-0000-0000-0000-000000000007, 45 %, 1024 MiB\n"  # without nounits
    )
    assert parse_smi_use(output) == [
        SmiGpu("0", "GPU-5c1e0f0a-0000-0000-0000-000000000000", 97.0, 40312.0),
        SmiGpu("1", "GPU-6d2f1a1b-0000-0000-0000-000000000001", 0.0, 1.0),
        SmiGpu("2", "GPU-7e3a2b2c-0000-0000-0000-000000000002", 3.0, 512.0),
        SmiGpu("3", "GPU-8f4b3c3d-0000-0000-0000-000000000003", None, 3086.0),
        SmiGpu("4", "GPU-904c4d4e-0000-0000-0000-000000000004", None, None),
        SmiGpu("5", "GPU-a15d5e5f-0000-0000-0000-000000000005", None, 12.0),
        SmiGpu("7", "GPU-c37f7071-0000-0000-0000-000000000007", 45.0, 1024.0),
    ]
    assert parse_smi_use("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n") == []


def test_samples_of_gives_each_server_its_own_gpus_with_figures_only() -> None:
    gpus = [
        SmiGpu("0", "GPU-a", 97.0, 100.0),
        SmiGpu("1", "GPU-b", 0.0, 1.0),
        SmiGpu("2", "GPU-c", None, 3086.0),  # MIG enabled
        SmiGpu("3", "GPU-d", 2.0, 5.0),
    ]
    servers = [
        ServerGpus(("alice", ""), ("0", "1")),
        ServerGpus(("bob", "train"), ("2", "3")),  # one GPU without data: one sample, fewer than it holds
        ServerGpus(("carol", ""), ("2",)),  # none with data: left out
        ServerGpus(("dave", ""), ("GPU-d",)),  # CUDA_VISIBLE_DEVICES by UUID
        ServerGpus(("erin", ""), ("MIG-1234",)),  # a MIG slice: not a GPU nvidia-smi lists
        ServerGpus(("kim", ""), ()),
    ]
    assert samples_of(servers, gpus, NOW) == {
        ("alice", ""): [GpuSample("0", 97.0, 100.0, NOW), GpuSample("1", 0.0, 1.0, NOW)],
        ("bob", "train"): [GpuSample("3", 2.0, 5.0, NOW)],
        ("dave", ""): [GpuSample("GPU-d", 2.0, 5.0, NOW)],
    }


@pytest.fixture
def smi_dir(tmp_path: Path) -> Path:
    """A folder with the stand-in nvidia-smi and its use file."""
    (tmp_path / "nvidia-smi").symlink_to(STAND_IN)
    (tmp_path / "nvidia-smi.json").write_text(
        json.dumps({"0": {"utilization": 90, "memory_used_mib": 1200}, "1": {"utilization": 0, "memory_used_mib": 3}})
    )
    return tmp_path


async def test_nvidia_smi_source_reads_the_stand_in(smi_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIDC_FAKE_GPUS", "H100:3")
    source = NvidiaSmiSource(str(smi_dir / "nvidia-smi"))
    got = await source.sample([ServerGpus(("alice", ""), ("0",)), ServerGpus(("bob", ""), ("1", "2"))])
    assert {key: [(s.gpu, s.utilization, s.memory_used_mib) for s in v] for key, v in got.items()} == {
        ("alice", ""): [("0", 90.0, 1200.0)],
        ("bob", ""): [("1", 0.0, 3.0)],  # GPU 2: [N/A], no sample
    }
    assert await source.sample([ServerGpus(("carol", ""))]) == {}  # no GPU to read: nvidia-smi is not run


async def test_nvidia_smi_source_failures_are_no_data(tmp_path: Path) -> None:
    with pytest.raises(GpuUseUnavailable, match="not on PATH"):
        await NvidiaSmiSource(str(tmp_path / "nvidia-smi")).sample([ServerGpus(("alice", ""), ("0",))])
    failing = tmp_path / "failing"
    failing.write_text(
        "#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the driver'\nexit 9\n"
    )
    failing.chmod(0o755)
    with pytest.raises(GpuUseUnavailable, match="exit code 9: NVIDIA-SMI has failed"):
        await NvidiaSmiSource(str(failing)).sample([ServerGpus(("alice", ""), ("0",))])
    hung = tmp_path / "hung"
    hung.write_text("#!/bin/sh\nexec sleep 30\n")
    hung.chmod(0o755)
    with pytest.raises(GpuUseUnavailable, match="did not answer within 0.5s"):
        await NvidiaSmiSource(str(hung), timeout=0.5).sample([ServerGpus(("alice", ""), ("0",))])


async def test_nvidia_smi_source_bounds_what_it_reads(tmp_path: Path) -> None:
    chatty = tmp_path / "chatty"
    chatty.write_text("#!/bin/sh\necho '0, GPU-a, 3, 1'\nyes 'garbage garbage garbage' | head -c 3000000\n")
    chatty.chmod(0o755)
    got = await NvidiaSmiSource(str(chatty)).sample([ServerGpus(("alice", ""), ("0",))])
    assert [(s.gpu, s.utilization) for s in got[("alice", "")]] == [("0", 3.0)]


def test_the_stand_in_answers_the_inventory_as_the_fake_inventory(smi_dir: Path) -> None:
    """On PATH, the stand-in gives the hub the GPUs AIDC_FAKE_GPUS would (spawner/gpus.py)."""
    import subprocess

    env = {**os.environ, "AIDC_FAKE_GPUS": "H100:2,A100:1"}
    out = subprocess.run(
        [str(smi_dir / "nvidia-smi"), "--query-gpu=index,name,pci.bus_id", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert [smi_fields(line)[:2] for line in out.splitlines()] == [
        ["0", "NVIDIA H100 80GB HBM3"],
        ["1", "NVIDIA H100 80GB HBM3"],
        ["2", "NVIDIA A100-SXM4-80GB"],
    ]
    refused = subprocess.run(
        [str(smi_dir / "nvidia-smi"), "--query-gpu=index,foo", "--format=csv"], capture_output=True, text=True
    )
    assert refused.returncode != 0 and 'Field "foo" is not a valid field to query.' in refused.stderr


def test_the_quotas_service_picks_its_source(smi_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from quotas.dcgm import PrometheusSource
    from quotas.service.app import QuotasService

    monkeypatch.delenv("AIDC_PROMETHEUS_URL", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert QuotasService().gpu_use_source() is None  # no GPU-idle culling without a source
    monkeypatch.setenv("PATH", str(smi_dir))
    assert isinstance(QuotasService().gpu_use_source(), NvidiaSmiSource)  # the embedded mode
    monkeypatch.setenv("AIDC_PROMETHEUS_URL", "http://prometheus.monitoring:9090")
    assert isinstance(QuotasService().gpu_use_source(), PrometheusSource)  # Kubernetes: DCGM through Prometheus
    assert isinstance(QuotasService(prometheus_url="http://p:9090").gpu_use_source(), PrometheusSource)
