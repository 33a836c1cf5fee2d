"""The state one hub process shares between its spawners.

The platform config, the reservation book (usage now), the ledger (usage over
time) and, in the embedded mode, the GPU allocator. One instance per
(tenants file, catalog, data directory), created at first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from quotas.loader import load_platform_cached
from quotas.model import PlatformConfig
from quotas.usage import Ledger, ReservationBook

from .gpus import GpuAllocator, detect_inventory


@dataclass
class Platform:
    config: PlatformConfig
    book: ReservationBook
    gpus: GpuAllocator

    @classmethod
    def shared(cls, tenants_file: str, catalog_file: str, data_dir: str, fake_gpus: str) -> Platform:
        """The process-wide platform for these files (loaded once, then reused)."""
        key = (
            str(Path(tenants_file).resolve()),
            str(Path(catalog_file).resolve()),
            str(Path(data_dir).resolve()),
            fake_gpus,
        )
        if key not in _SHARED:
            config = load_platform_cached(tenants_file, catalog_file)
            _SHARED[key] = cls(
                config=config,
                book=ReservationBook(Ledger(Path(data_dir) / "ledger.jsonl")),
                gpus=GpuAllocator(detect_inventory(fake_gpus, config.gpu_types)),
            )
        return _SHARED[key]


_SHARED: dict[tuple[str, str, str, str], Platform] = {}
