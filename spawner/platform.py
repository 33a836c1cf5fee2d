"""The state one hub process shares between its spawners.

The platform config, the quotas store (reservations, the usage ledger and delegated
limits, in SQL) and, in the embedded mode, the GPU allocator. One instance per
(tenants file, catalog, database, GPU inventory), created at first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from quotas.loader import load_platform_cached
from quotas.model import PlatformConfig
from quotas.store import Store

from .gpus import GpuAllocator, detect_inventory


@dataclass
class Platform:
    config: PlatformConfig
    store: Store
    gpus: GpuAllocator

    @classmethod
    def shared(cls, tenants_file: str, catalog_file: str, db_url: str, fake_gpus: str) -> Platform:
        """The hub process's platform for these files and database (loaded once, then reused).

        Its store closes, before the first admission, the ledger runs of servers that did not
        survive a hub restart (running servers re-hold theirs first, from their saved state).
        """
        key = (str(Path(tenants_file).resolve()), str(Path(catalog_file).resolve()), db_url, fake_gpus)
        if key not in _SHARED:
            config = load_platform_cached(tenants_file, catalog_file)
            store = Store(db_url)
            store.reconcile_at_first_admission()
            _SHARED[key] = cls(
                config=config, store=store, gpus=GpuAllocator(detect_inventory(fake_gpus, config.gpu_types))
            )
        return _SHARED[key]


_SHARED: dict[tuple[str, str, str, str], Platform] = {}
