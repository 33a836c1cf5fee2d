"""The state one hub process shares between its spawners.

The platform config (through the process's one :class:`~quotas.snapshot.PlatformHolder`, so a
reload swaps it for every spawner at once), the quotas store (reservations, the usage ledger and
delegated limits, in SQL) and, in the embedded mode, the GPU allocator. One instance per
(tenants file, catalog, database, GPU inventory), created at first use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quotas.model import PlatformConfig
from quotas.snapshot import PlatformHolder, shared_holder
from quotas.store import Store

from .gpus import GpuAllocator, detect_inventory
from .workspaces import Registry


@dataclass
class Platform:
    holder: PlatformHolder
    store: Store
    gpus: GpuAllocator
    workspaces: Registry
    keeper: Any = None  # the embedded mode's spawner.queue_keeper.QueueKeeper, made at first use
    _reconciled: asyncio.Future[None] | None = field(default=None, repr=False)

    async def reconciled(self, reconcile: Callable[[], Awaitable[None]]) -> None:
        """Return once ``reconcile`` (the spawner's reconcile of workspace processes against the
        hub's records) has run, once per hub process: every spawn awaits this before it allocates."""
        if self._reconciled is None:
            self._reconciled = asyncio.ensure_future(reconcile())
        try:
            await asyncio.shield(self._reconciled)
        except Exception:
            if self._reconciled.done():  # failed: the next spawn tries again, none allocates before
                self._reconciled = None
            raise

    @property
    def config(self) -> PlatformConfig:
        """The platform config in force (the same object the authenticator and the hub's config
        read). Read it once per decision: a reload may swap it between two reads."""
        return self.holder.config

    @classmethod
    def shared(cls, tenants_file: str, catalog_file: str, db_url: str, fake_gpus: str, data_dir: str) -> Platform:
        """The hub process's platform for these files and database (created once, then reused).

        Its store closes, before the first admission, the ledger runs of servers that did not
        survive a hub restart (running servers re-hold theirs first, from their saved state).
        The GPU inventory is sorted into the GPU types of the config in force at creation: a
        reload that changes ``gpu_types`` is refused (see :func:`quotas.snapshot.describe_changes`).
        The embedded mode's workspace processes are recorded under ``<data_dir>/workspaces``.
        """
        key = (str(Path(tenants_file).resolve()), str(Path(catalog_file).resolve()), db_url, fake_gpus, data_dir)
        if key not in _SHARED:
            holder = shared_holder(tenants_file, catalog_file)
            store = Store(db_url)
            store.reconcile_at_first_admission()
            _SHARED[key] = cls(
                holder=holder,
                store=store,
                gpus=GpuAllocator(detect_inventory(fake_gpus, holder.config.gpu_types)),
                workspaces=Registry(Path(data_dir) / "workspaces"),
            )
        return _SHARED[key]


_SHARED: dict[tuple[str, str, str, str, str], Platform] = {}
