"""The state one hub process shares between its spawners.

The platform config (through the process's one :class:`~quotas.snapshot.PlatformHolder`, so a
reload swaps it for every spawner at once), the quotas store (reservations, the usage ledger and
delegated limits, in SQL) and, in the embedded mode, the GPU allocator. One instance per
(tenants file, catalog, database, GPU inventory), created at first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from quotas.model import PlatformConfig
from quotas.snapshot import PlatformHolder, shared_holder
from quotas.store import Store

from .gpus import GpuAllocator, detect_inventory


@dataclass
class Platform:
    holder: PlatformHolder
    store: Store
    gpus: GpuAllocator

    @property
    def config(self) -> PlatformConfig:
        """The platform config in force (the same object the authenticator and the hub's config
        read). Read it once per decision: a reload may swap it between two reads."""
        return self.holder.config

    @classmethod
    def shared(cls, tenants_file: str, catalog_file: str, db_url: str, fake_gpus: str) -> Platform:
        """The hub process's platform for these files and database (created once, then reused).

        Its store closes, before the first admission, the ledger runs of servers that did not
        survive a hub restart (running servers re-hold theirs first, from their saved state).
        The GPU inventory is sorted into the GPU types of the config in force at creation: a
        reload that changes ``gpu_types`` is refused (see :func:`quotas.snapshot.describe_changes`).
        """
        key = (str(Path(tenants_file).resolve()), str(Path(catalog_file).resolve()), db_url, fake_gpus)
        if key not in _SHARED:
            holder = shared_holder(tenants_file, catalog_file)
            store = Store(db_url)
            store.reconcile_at_first_admission()
            _SHARED[key] = cls(
                holder=holder, store=store, gpus=GpuAllocator(detect_inventory(fake_gpus, holder.config.gpu_types))
            )
        return _SHARED[key]


_SHARED: dict[tuple[str, str, str, str], Platform] = {}
