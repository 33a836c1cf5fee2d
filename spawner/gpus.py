"""The embedded mode's GPU inventory and its exclusive allocator.

The inventory comes from ``nvidia-smi`` where it exists, otherwise from a
configured list such as ``AIDC_FAKE_GPUS=H100:4,A100:4`` (this is the only
simulated layer: everything above it is the production code). Indices are handed
out exclusively and become the workspace's ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from i18n import ngettext
from quotas.gpu_use import smi_fields
from quotas.model import GpuType

ServerKey = tuple[str, str]  # (user, server name)
DRIVER_GPUS = Path("/proc/driver/nvidia/gpus")


@dataclass(frozen=True)
class Gpu:
    """One GPU (or MIG slice) of this machine: ``index`` is what CUDA_VISIBLE_DEVICES names."""

    index: str
    type: str
    name: str = ""
    minor: int | None = None  # N of /dev/nvidia<N>; None: unknown (MIG slices)


class InventoryError(ValueError):
    """An unusable GPU inventory specification."""


_FAKE_ITEM = re.compile(r"^\s*(?P<type>[A-Za-z0-9][A-Za-z0-9._-]*)\s*:\s*(?P<count>\d+)\s*$")


def parse_fake_gpus(spec: str, known_types: Iterable[str] | None = None) -> list[Gpu]:
    """``"H100:4,A100:4"`` -> eight GPUs with indices 0-7, H100s first.

    Raises :class:`InventoryError` naming the bad item, or a GPU type that the
    tenant config does not declare (when ``known_types`` is given).
    """
    gpus: list[Gpu] = []
    known = set(known_types) if known_types is not None else None
    for item in filter(None, (part.strip() for part in spec.split(","))):
        match = _FAKE_ITEM.match(item)
        if not match:
            raise InventoryError(
                f"GPU inventory item {item!r} is not TYPE:COUNT (for example H100:4)"  # i18n: the operator's setting
            )
        gpu_type, count = match.group("type"), int(match.group("count"))
        if known is not None and gpu_type not in known:
            raise InventoryError(
                f"GPU inventory names type {gpu_type!r}, which tenants.yaml does not declare under gpu_types"  # i18n: the operator's setting
                f" (declared: {', '.join(sorted(known)) or 'none'})"
            )
        for _ in range(count):
            index = len(gpus)
            gpus.append(Gpu(index=str(index), type=gpu_type, name=f"simulated {gpu_type}", minor=index))
    return gpus


def parse_nvidia_smi(output: str, gpu_types: Mapping[str, GpuType], driver_gpus: Path = DRIVER_GPUS) -> list[Gpu]:
    """Parse ``nvidia-smi --query-gpu=index,name,pci.bus_id --format=csv,noheader`` (the bus id may
    be left out). A GPU's device minor (``/dev/nvidia<N>``) is the driver's ``Device Minor`` of its
    bus id (``driver_gpus``), else its index.

    A GPU's type is the declared type whose ``product`` label matches the
    product name (spaces become dashes, as GPU feature discovery writes it), or
    else whose name appears as a word of the product name (``H100`` in
    ``NVIDIA H100 80GB HBM3``). GPUs of no declared type are left out.
    """
    gpus = []
    for line in output.splitlines():
        fields = smi_fields(line)
        if len(fields) < 2:
            continue
        index, name, bus_id = fields[0], fields[1], fields[2] if len(fields) > 2 else ""
        gpu_type = _match_type(name, gpu_types)
        if gpu_type:
            minor = device_minor(bus_id, driver_gpus) if bus_id else None
            if minor is None and index.isdigit():
                minor = int(index)
            gpus.append(Gpu(index=index, type=gpu_type, name=name, minor=minor))
    return gpus


def device_minor(bus_id: str, driver_gpus: Path = DRIVER_GPUS) -> int | None:
    """The ``Device Minor`` the NVIDIA driver gives the GPU at PCI ``bus_id`` (nvidia-smi writes
    ``00000000:17:00.0``, the driver's folder is ``0000:17:00.0``), or None where it says nothing."""
    domain, _, rest = bus_id.lower().partition(":")
    try:
        text = (driver_gpus / f"{domain[-4:]}:{rest}" / "information").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Device Minor" and value.strip().isdigit():
            return int(value.strip())
    return None


def _match_type(product: str, gpu_types: Mapping[str, GpuType]) -> str | None:
    label = product.replace(" ", "-")
    for t in gpu_types.values():
        if t.product and t.product == label and t.resource == "nvidia.com/gpu":
            return t.name
    words = set(re.split(r"[\s-]+", product))
    for t in gpu_types.values():
        if t.name in words and t.resource == "nvidia.com/gpu":
            return t.name
    return None


def detect_inventory(fake_spec: str, gpu_types: Mapping[str, GpuType]) -> list[Gpu]:
    """The GPUs of this machine: ``nvidia-smi`` if installed, else ``fake_spec``."""
    smi = shutil.which("nvidia-smi")
    if smi:
        out = subprocess.run(
            [smi, "--query-gpu=index,name,pci.bus_id", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        return parse_nvidia_smi(out, gpu_types)
    return parse_fake_gpus(fake_spec, gpu_types.keys())


class NoFreeGpus(RuntimeError):
    """Not enough free GPUs of a type on this machine; the message is for people."""


class GpuAllocator:
    """Exclusive assignment of GPU indices to servers."""

    def __init__(self, gpus: Iterable[Gpu]):
        self.gpus = list(gpus)
        self._owner: dict[str, ServerKey] = {}

    def capacity(self, gpu_type: str) -> int:
        return sum(1 for g in self.gpus if g.type == gpu_type)

    def minors(self, indices: Iterable[str]) -> list[int]:
        """The device minors (``/dev/nvidia<N>``) of the GPUs ``indices``, where known."""
        wanted = set(indices)
        return [g.minor for g in self.gpus if g.index in wanted and g.minor is not None]

    def owned_by(self, key: ServerKey) -> list[str]:
        return [i for i, owner in self._owner.items() if owner == key]

    def allocate(self, key: ServerKey, gpu_type: str, count: int) -> list[str]:
        """Give ``count`` free GPUs of ``gpu_type`` to ``key``; all or nothing."""
        free = [g.index for g in self.gpus if g.type == gpu_type and g.index not in self._owner]
        if len(free) < count:
            total = self.capacity(gpu_type)
            holders: dict[str, int] = {}
            for g in self.gpus:
                if g.type == gpu_type and g.index in self._owner:
                    user = self._owner[g.index][0]
                    holders[user] = holders.get(user, 0) + 1
            held = ", ".join(f"{u}: {n}" for u, n in sorted(holders.items(), key=lambda kv: (-kv[1], kv[0])))
            values = {"gpu": gpu_type, "free": len(free), "asked": count, "held": held}
            if held:
                message = ngettext(
                    "This machine has {count} {gpu} GPU and {free} free ({held} in use); you asked for {asked}."
                    " Wait for one to be freed or pick a smaller profile.",
                    "This machine has {count} {gpu} GPUs and {free} free ({held} in use); you asked for {asked}."
                    " Wait for one to be freed or pick a smaller profile.",
                    total,
                    **values,
                )
            else:
                del values["held"]
                message = ngettext(
                    "This machine has {count} {gpu} GPU and {free} free; you asked for {asked}. Wait for one to be"
                    " freed or pick a smaller profile.",
                    "This machine has {count} {gpu} GPUs and {free} free; you asked for {asked}. Wait for one to be"
                    " freed or pick a smaller profile.",
                    total,
                    **values,
                )
            raise NoFreeGpus(message)
        chosen = free[:count]
        for index in chosen:
            self._owner[index] = key
        return chosen

    def claim(self, key: ServerKey, indices: Iterable[str]) -> list[str]:
        """Re-take GPUs a running server already has (after a hub restart).

        Returns the indices that another server holds already (should be none);
        those are not taken.
        """
        conflicts = []
        for index in indices:
            owner = self._owner.get(index)
            if owner is not None and owner != key:
                conflicts.append(index)
            else:
                self._owner[index] = key
        return conflicts

    def release(self, key: ServerKey) -> list[str]:
        """Free every GPU ``key`` holds; releasing twice is harmless."""
        freed = self.owned_by(key)
        for index in freed:
            del self._owner[index]
        return freed
