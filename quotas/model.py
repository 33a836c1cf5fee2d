"""The platform's tenant model: GPU types, images, profiles, tenants and their ceilings.

Plain frozen dataclasses, built only by :mod:`quotas.loader` after validation.
Everything else (policy, spawners, roles) reads them and never mutates them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from functools import cached_property
from types import MappingProxyType

from i18n import _

TENANT_KINDS = ("startup", "university", "company")


@dataclass(frozen=True)
class GpuType:
    """A kind of GPU (or MIG slice) that profiles may request.

    ``resource`` is the Kubernetes extended resource (``nvidia.com/gpu``,
    ``nvidia.com/mig-1g.10gb``); ``product`` the value of the node label
    ``nvidia.com/gpu.product`` that nodes with this GPU carry.
    """

    name: str
    resource: str = "nvidia.com/gpu"
    product: str = ""
    description: str = ""


@dataclass(frozen=True)
class Image:
    """An entry of ``images/catalog.yaml``."""

    id: str
    display_name: str
    image: str
    description: str = ""
    needs_gpu: bool = False
    cuda: str = ""
    toolchain: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Dataset:
    """A shared, read-only data set (an open data set of the data center) tenants may mount.

    ``claim`` is the PersistentVolumeClaim that holds it in each tenant namespace that
    uses it (created by the platform's storage admins, read-only many); ``mount_path``
    is where workspaces see it.
    """

    name: str
    claim: str
    mount_path: str
    description: str = ""


@dataclass(frozen=True)
class GpuIdle:
    """GPU-idle culling (``gpu_idle:`` of the platform's, a tenant's or a profile's culling): a GPU
    server whose GPUs all stayed under ``threshold`` percent utilization for ``after`` is stopped,
    even if JupyterHub sees activity; its person is warned ``warn_before`` earlier. ``after`` of
    ``timedelta(0)`` turns it off. ``None``: inherited (a tenant's setting wins over the profile's,
    which wins over the platform's, one key at a time)."""

    threshold: Decimal | None = None  # percent, 0-100
    after: timedelta | None = None
    warn_before: timedelta | None = None


PLATFORM_GPU_IDLE = GpuIdle(threshold=Decimal(5), after=timedelta(hours=2), warn_before=timedelta(minutes=30))


@dataclass(frozen=True)
class Profile:
    """A named workspace shape that tenants may be allowed to use."""

    id: str
    display_name: str
    cpu: Decimal
    memory: Decimal
    image: str
    gpu_type: str | None = None
    gpu_count: int = 0
    description: str = ""
    # how long a server of this profile may sit idle before it is stopped (timedelta(0): never);
    # None: the platform's GPU or CPU setting. A tenant's own setting wins over it.
    idle_timeout: timedelta | None = None
    gpu_idle: GpuIdle = GpuIdle()  # its own GPU-idle culling keys; a tenant's own setting wins

    @property
    def gpus(self) -> Mapping[str, int]:
        """GPUs this profile holds, by type (empty for CPU-only profiles)."""
        if self.gpu_type and self.gpu_count:
            return {self.gpu_type: self.gpu_count}
        return {}


@dataclass(frozen=True)
class Quota:
    """A tenant's ceiling. ``None`` means the platform sets no limit on that resource.

    GPU types missing from ``gpus`` are not granted at all (a ceiling of 0).
    """

    gpus: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    servers: int | None = None
    servers_per_user: int | None = None
    cpu: Decimal | None = None
    memory: Decimal | None = None
    storage: Decimal | None = None
    gpu_hours_per_month: Decimal | None = None


@dataclass(frozen=True)
class TenantCulling:
    """A tenant's own culling settings (``culling:`` of a tenant in ``tenants.yaml``).

    An idle timeout set here wins over the profile's and the platform's (it is an agreement
    with this tenant); ``None`` falls back to them; ``timedelta(0)`` means never. With
    ``stop_over_budget``, running GPU servers of the tenant, or of a user or group of it, whose
    GPU-hour budget is used up are warned, then stopped ``over_budget_grace`` later.
    """

    gpu_idle_timeout: timedelta | None = None
    cpu_idle_timeout: timedelta | None = None
    stop_over_budget: bool = False
    over_budget_grace: timedelta = timedelta(minutes=15)
    gpu_idle: GpuIdle = GpuIdle()


@dataclass(frozen=True)
class Culling:
    """The platform's culling settings (top-level ``culling:``): idle timeouts by kind of
    server (``timedelta(0)`` means never), GPU-idle culling, and how often the culler looks."""

    gpu_idle_timeout: timedelta = timedelta(hours=1)
    cpu_idle_timeout: timedelta = timedelta(hours=8)
    interval: timedelta = timedelta(minutes=5)
    gpu_idle: GpuIdle = PLATFORM_GPU_IDLE  # every key set; tenants and profiles may override each


@dataclass(frozen=True)
class Sharing:
    """How a tenant shares GPUs (``sharing:`` of a tenant in ``tenants.yaml``): tenants of one
    ``cohort`` lend each other idle GPUs; ``borrow`` is what it may use beyond its ceiling per GPU
    type (none if left out), ``lend`` what of its ceiling others may borrow (all of it if left out)."""

    cohort: str = "all"
    borrow: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    lend: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class QueuePolicy:
    """A tenant's GPU queue (``queue:`` in ``tenants.yaml``): how long a request may wait before it is
    refused (``timedelta(0)``: no queue) and how many may wait at once."""

    max_wait: timedelta = timedelta(hours=1)
    max_length: int = 100


@dataclass(frozen=True)
class Tenant:
    """An organisation with members, admins, allowed profiles and a ceiling."""

    id: str
    display_name: str
    kind: str
    member_users: frozenset[str]
    member_groups: frozenset[str]
    admins: tuple[str, ...]
    profiles: tuple[str, ...]
    quota: Quota
    datasets: tuple[str, ...] = ()
    culling: TenantCulling = TenantCulling()
    sharing: Sharing = Sharing()
    queue: QueuePolicy = QueuePolicy()
    # identity-provider groups whose members are members / tenant admins (``oidc:`` in tenants.yaml);
    # None: the convention, group ``<id>`` and group ``<id>-admins`` (see authenticators/oidc.py)
    oidc_groups: tuple[str, ...] | None = None
    oidc_admin_groups: tuple[str, ...] | None = None

    @cached_property
    def members_by_name(self) -> frozenset[str]:
        """The people ``tenants.yaml`` lists by name: ``members.users`` and ``admins`` (made once: a
        tenant of thousands is asked about each of its people at every hub start)."""
        return self.member_users | frozenset(self.admins)

    def has_admin(self, user: str, held: Iterable[str] = (), granting: Collection[str] = ()) -> bool:
        """True if ``user`` is a tenant admin of this tenant: listed under ``admins``, or holding
        (``held``) one of ``granting``, what else makes its admins: the identity provider's admin
        groups of the tenant among their provider groups (authenticators/oidc.py), or its
        ``tenant-admin-<id>`` role among their JupyterHub roles (which such a login gives).
        """
        return user in self.admins or any(h in granting for h in held)

    def has_member(
        self, user: str, groups: Iterable[str] = (), *, own_groups: Collection[str] | None = None, admin: bool = False
    ) -> bool:
        """True if ``user`` (in ``groups``) belongs to this tenant: listed by name
        (:attr:`members_by_name`), in one of its ``members.groups`` or of its own groups, or an
        admin of it (``admin``: made one by a grant outside ``tenants.yaml``, see :meth:`has_admin`).
        Tenant admins are members: they may use the tenant's profiles.

        ``own_groups`` stand for the tenant itself: by default its JupyterHub group, named like the
        tenant, which the authenticator keeps in line with this config; for an OIDC login, the
        provider's groups of its ``oidc:`` mapping (authenticators/oidc.py).
        """
        if admin or user in self.members_by_name:
            return True
        own = (self.id,) if own_groups is None else own_groups
        return any(g in own or g in self.member_groups for g in groups)

    def admin_contact(self) -> str:
        """Who to ask for more, as a person reads it: ``"kim"`` or ``"kim, lee"``."""
        return ", ".join(self.admins) if self.admins else _("a platform admin")


@dataclass(frozen=True)
class PlatformConfig:
    """Everything ``tenants.yaml`` declares, validated."""

    gpu_types: Mapping[str, GpuType]
    images: Mapping[str, Image]
    profiles: Mapping[str, Profile]
    tenants: Mapping[str, Tenant]
    source: str = ""
    datasets: Mapping[str, Dataset] = field(default_factory=lambda: MappingProxyType({}))
    culling: Culling = Culling()

    def tenants_of(self, user: str, groups: Iterable[str] = ()) -> list[Tenant]:
        """The tenants ``user`` belongs to (:meth:`Tenant.has_member`), in the order the config declares
        them; from an index, not by asking every tenant (10,000 people x 500 tenants at a hub start)."""
        by_name, by_group, order = self._membership
        ids = set(by_name.get(user, ()))
        for g in groups:
            ids.update(by_group.get(g, ()))
        return [self.tenants[t] for t in sorted(ids, key=order.__getitem__)]

    def tenants_administered_by(self, user: str) -> list[Tenant]:
        """The tenants that list ``user`` under ``admins``, in config order (from the same index)."""
        return [t for t in self.tenants_of(user) if user in t.admins]

    @cached_property
    def _membership(self) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]], dict[str, int]]:
        """Who is in which tenant: by name (members and admins), by group (the tenant's own group, named
        like it, and its ``members.groups``), and the tenants' order in the config."""
        by_name: defaultdict[str, list[str]] = defaultdict(list)
        by_group: defaultdict[str, list[str]] = defaultdict(list)
        for t in self.tenants.values():
            for person in t.members_by_name:
                by_name[person].append(t.id)
            for g in {t.id, *t.member_groups}:
                by_group[g].append(t.id)
        order = {t: i for i, t in enumerate(self.tenants)}
        return (
            {k: tuple(v) for k, v in by_name.items()},
            {k: tuple(v) for k, v in by_group.items()},
            order,
        )

    def profiles_of(self, tenant: Tenant) -> list[Profile]:
        return [self.profiles[p] for p in tenant.profiles]
