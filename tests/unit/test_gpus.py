"""spawner.gpus: the embedded mode's GPU inventory and its exclusive allocator."""

from __future__ import annotations

from pathlib import Path

import pytest

from quotas.model import PlatformConfig
from spawner.gpus import Gpu, GpuAllocator, InventoryError, NoFreeGpus, parse_fake_gpus, parse_nvidia_smi


def test_parse_fake_gpus_numbers_every_gpu_in_order() -> None:
    gpus = parse_fake_gpus("H100:4,A100:4")
    assert [g.index for g in gpus] == [str(i) for i in range(8)]
    assert [g.type for g in gpus] == ["H100"] * 4 + ["A100"] * 4
    assert gpus[0] == Gpu(index="0", type="H100", name="simulated H100", minor=0)
    assert [g.minor for g in gpus] == list(range(8))  # /dev/nvidia<N>


@pytest.mark.parametrize(
    ("spec", "types"),
    [
        ("", []),
        ("H100:2", ["H100", "H100"]),
        (" H100 : 1 , A100-1g.10gb:2 ,", ["H100", "A100-1g.10gb", "A100-1g.10gb"]),
        ("H100:0,A100:1", ["A100"]),
    ],
)
def test_parse_fake_gpus_specs(spec: str, types: list[str]) -> None:
    assert [g.type for g in parse_fake_gpus(spec)] == types


@pytest.mark.parametrize("item", ["H100", "H100:x", "H100:-1", ":4", "H100:4:1", "H 100:4"])
def test_parse_fake_gpus_bad_items(item: str) -> None:
    with pytest.raises(InventoryError) as info:
        parse_fake_gpus(f"A100:1,{item}")
    assert f"GPU inventory item {item.strip()!r} is not TYPE:COUNT" in str(info.value)


def test_parse_fake_gpus_unknown_type_with_known_types() -> None:
    with pytest.raises(InventoryError) as info:
        parse_fake_gpus("H100:2,B200:2", known_types=["H100", "A100"])
    assert "names type 'B200', which tenants.yaml does not declare" in str(info.value)
    assert "(declared: A100, H100)" in str(info.value)
    assert len(parse_fake_gpus("H100:2", known_types=["H100"])) == 2


def test_parse_nvidia_smi_matches_product_labels_and_names(config: PlatformConfig) -> None:
    output = (
        "0, NVIDIA H100 80GB HBM3\n"
        "1, NVIDIA H100 80GB HBM3\n"
        "2, NVIDIA A100-SXM4-80GB\n"
        "\n"
        "3, NVIDIA H100 PCIe\n"
        "4, Tesla T4\n"
        "5, NVIDIA A100 80GB PCIe\n"
    )
    gpus = parse_nvidia_smi(output, config.gpu_types)
    assert [(g.index, g.type) for g in gpus] == [
        ("0", "H100"),
        ("1", "H100"),
        ("2", "A100"),
        ("3", "H100"),
        ("5", "A100"),
    ]
    assert gpus[2].name == "NVIDIA A100-SXM4-80GB"


def test_parse_nvidia_smi_device_minors_from_the_driver(config: PlatformConfig, tmp_path: Path) -> None:
    """The minor of /dev/nvidia<N> is the driver's "Device Minor" for the bus id, which need not be the
    index nvidia-smi gives (CUDA orders by PCI bus, the driver by probe order)."""
    (tmp_path / "0000:17:00.0").mkdir()
    (tmp_path / "0000:17:00.0" / "information").write_text("Model: \t\t NVIDIA H100\nDevice Minor: \t 3\n")
    output = "0, NVIDIA H100 80GB HBM3, 00000000:17:00.0\n1, NVIDIA H100 80GB HBM3, 00000000:2A:00.0\n"
    gpus = parse_nvidia_smi(output, config.gpu_types, driver_gpus=tmp_path)
    assert [(g.index, g.name, g.minor) for g in gpus] == [
        ("0", "NVIDIA H100 80GB HBM3", 3),
        ("1", "NVIDIA H100 80GB HBM3", 1),  # the driver says nothing: its index
    ]
    assert GpuAllocator(gpus).minors(["0", "1", "9"]) == [3, 1]


def test_parse_nvidia_smi_nothing_declared(config: PlatformConfig) -> None:
    assert parse_nvidia_smi("0, Tesla T4\n", config.gpu_types) == []
    assert parse_nvidia_smi("", config.gpu_types) == []


def allocator() -> GpuAllocator:
    return GpuAllocator(parse_fake_gpus("H100:4,A100:2"))


def test_allocate_is_exclusive() -> None:
    gpus = allocator()
    alice = gpus.allocate(("alice", ""), "H100", 2)
    bob = gpus.allocate(("bob", ""), "H100", 2)
    assert len(alice) == len(bob) == 2
    assert not set(alice) & set(bob)
    assert set(alice) | set(bob) == {"0", "1", "2", "3"}
    assert gpus.owned_by(("alice", "")) == alice
    assert gpus.allocate(("carol", ""), "A100", 1) == ["4"]
    assert gpus.capacity("H100") == 4
    assert gpus.capacity("B200") == 0


def test_allocate_is_all_or_nothing_and_names_the_holders() -> None:
    gpus = allocator()
    gpus.allocate(("alice", ""), "H100", 2)
    gpus.allocate(("bob", "train"), "H100", 1)
    with pytest.raises(NoFreeGpus) as info:
        gpus.allocate(("carol", ""), "H100", 2)
    assert str(info.value).startswith(
        "This machine has 4 H100 GPUs and 1 free (alice: 2, bob: 1 in use); you asked for 2."
    )
    assert gpus.owned_by(("carol", "")) == []  # nothing taken
    assert gpus.allocate(("carol", ""), "H100", 1) == ["3"]


def test_allocate_a_type_this_machine_lacks() -> None:
    with pytest.raises(NoFreeGpus, match="This machine has 0 B200 GPUs and 0 free; you asked for 1"):
        allocator().allocate(("alice", ""), "B200", 1)


def test_release_frees_and_is_idempotent() -> None:
    gpus = allocator()
    taken = gpus.allocate(("alice", ""), "H100", 4)
    assert sorted(gpus.release(("alice", ""))) == sorted(taken)
    assert gpus.release(("alice", "")) == []
    assert gpus.release(("nobody", "")) == []
    assert gpus.allocate(("bob", ""), "H100", 4) == taken


def test_claim_after_restart_and_conflicts() -> None:
    gpus = allocator()
    assert gpus.claim(("alice", ""), ["0", "1"]) == []
    assert gpus.claim(("alice", ""), ["1"]) == []  # claiming again what one holds is fine
    assert gpus.claim(("bob", ""), ["1", "2"]) == ["1"]
    assert gpus.owned_by(("alice", "")) == ["0", "1"]
    assert gpus.owned_by(("bob", "")) == ["2"]
    assert gpus.allocate(("carol", ""), "H100", 1) == ["3"]
