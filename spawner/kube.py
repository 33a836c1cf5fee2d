"""``TenantKubeSpawner`` (entry point ``aidc-kube``): workspaces as pods in their tenant's namespace.

KubeSpawner plus the tenant policy. It stays thin: it admits the request (the same
policy as the embedded mode), turns the profile into KubeSpawner settings with the
pure :func:`spawner.kube_objects.profile_settings`, and lets KubeSpawner make the
API calls. Two refusals only Kubernetes can give are turned into reasons for people
within seconds: the tenant's ResourceQuota (403) and an unschedulable pod.

With ``kueue`` (issue 14) every pod goes through its tenant's LocalQueue: the hub keeps deciding
limits, servers per person and budgets, and Kueue the GPU ceiling, the queue, borrowing and
reclaim. While Kueue holds a pod back (its scheduling gate), the request is in the quotas store's
GPU queue with its place from Kueue's visibility API and why from its Workload, shown in the
spawn's progress; it is refused after the tenant's ``queue.max_wait``; its run (GPU-hours) starts
when Kueue admits it; a pod Kueue preempts to give GPUs back ends its run ``preempted``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from jupyterhub.spawner import SpawnException
from jupyterhub.utils import wait_for_http_server
from kubernetes_asyncio.client.rest import ApiException
from kubespawner import KubeSpawner
from traitlets import Bool, Float, Integer, Unicode, default

from i18n import N_, Text, _, ngettext, translate
from quotas.gpu_queue import may_wait, waiting_reason
from quotas.store import QueueFull

from .kube_objects import (
    LOCAL_QUEUE,
    PRIORITY_CLASS,
    PRIORITY_LABEL,
    QUEUE_LABEL,
    WORKSPACE_SSHD_PORT,
    profile_settings,
    tenant_namespace,
)
from .pacing import Pacer, backoff, retry_after
from .profiles import Choice
from .start_failures import STREAK
from .tenancy import TenantSpawnerMixin, counted_failure, queue_timeout_message, reason_of, refusal

STATE_KEY = "aidc"
# admission's allowance beyond a tenant's GPU ceiling for a request that may wait in Kueue's queue:
# any, since its ClusterQueue keeps the ceiling (running and queued pods counted there, not here)
KUEUE_KEEPS_THE_CEILING = 1_000_000
# every pod and home volume a spawn creates is marked with that spawn's id: a create whose answer was
# lost (timed out) but which succeeded is recognised as this spawn's own, never created twice
SPAWN_ANNOTATION = "aidc.io/spawn"
# a create is given this many times the recent 90th-percentile answer time (issue 15)
TIMEOUT_FACTOR = 4.0
# the hub process's one line of creates (spawner.pacing); made on first use with k8s_creates_in_flight
_PACER: Pacer | None = None


def pacer(slots: int) -> Pacer:
    """The hub process's line of Kubernetes creates, shared by all its spawners."""
    global _PACER
    if _PACER is None:
        _PACER = Pacer(slots)
    return _PACER


class TenantKubeSpawner(TenantSpawnerMixin, KubeSpawner):
    """Start workspaces as pods in ``aidc-<tenant>``, inside the tenant's quota."""

    namespace_template = Unicode(
        "aidc-{tenant}",
        help="""Namespace of a tenant's workspaces; ``{tenant}`` is the tenant id, e.g. ``jhub-{tenant}``.
        The tenant namespace reconciler creates them with the same template.""",
    ).tag(config=True)

    unschedulable_timeout = Float(
        5,
        help="""Seconds a pod may stay unschedulable (no node with the GPUs it asks for) before
        the spawn is refused with the scheduler's reason, instead of waiting for start_timeout;
        e.g. 30 where a cluster autoscaler adds GPU nodes.""",
    ).tag(config=True)

    kueue = Bool(
        False,
        help="""Send every pod through its tenant's Kueue LocalQueue (``aidc reconcile --kueue`` makes the
        queues): GPU requests that do not fit now wait in the tenant's queue, may borrow idle GPUs of its
        cohort and are reclaimed by preemption. Needs Kueue v0.17 in the cluster.""",
    ).tag(config=True)

    preemption_grace = Float(
        300,
        help="""Seconds a preempted workspace keeps running after Kueue asks for its GPUs back (its pod's
        termination grace; the hub's pages warn its person meanwhile). For example ``600``.""",
    ).tag(config=True)

    queue_poll_interval = Float(
        1.0,
        help="""Seconds between two looks at a queued pod's place in its tenant's Kueue queue. For example ``2``.""",
    ).tag(config=True)

    watch_all_namespaces = Bool(
        True,
        help="""Watch the workspace pods (and their events) of every tenant namespace with one watch each,
        instead of one per namespace. KubeSpawner's per-namespace watches each hold one of the Kubernetes
        client's 100 connections: beyond about 50 tenant namespaces with servers, creates and reads wait
        for a connection and spawns stall (docs/scale.md). Needs ``list`` and ``watch`` of pods and events
        in all namespaces (the chart's ClusterRole ``<release>-hub-watch``). ``False`` for a hub that may
        only read its tenant namespaces.""",
    ).tag(config=True)

    k8s_creates_in_flight = Integer(
        16,
        help="""At most this many creates (pods, home volumes) sent to the Kubernetes API at once by the
        hub, for all spawns together; the others wait their turn, first come first served, and their
        progress says how many servers are ahead. Bounds the load a spawn storm puts on the API server
        (each create is admitted, validated and written to etcd). For example ``32`` for a larger
        control plane.""",
    ).tag(config=True)

    home_capacity = Unicode(
        "10Gi",
        help="""Size of each person's home volume (a PVC ``home-<user>`` in the tenant namespace,
        shared by their default and named servers, kept when servers stop), e.g. ``50Gi``.
        It counts against the tenant's storage ceiling (the ResourceQuota's ``requests.storage``).""",
    ).tag(config=True)

    home_storage_class = Unicode(
        "",
        help="""StorageClass of home volumes, e.g. ``ceph-rbd``; empty means the cluster's default class.""",
    ).tag(config=True)

    home_mount_path = Unicode(
        "/home/jovyan",
        help="""Where the home volume is mounted in the workspace, e.g. ``/home/user`` for an image whose
        non-root user is ``user`` (the AIDC images' user is ``jovyan``).""",
    ).tag(config=True)

    @default("storage_pvc_ensure")
    def _default_storage_pvc_ensure(self) -> bool:
        return True

    @default("pvc_name_template")
    def _default_pvc_name_template(self) -> str:
        return "home-{username}"

    @default("storage_capacity")
    def _default_storage_capacity(self) -> str:
        return self.home_capacity

    @default("storage_class")
    def _default_storage_class(self) -> str:
        return self.home_storage_class

    @default("slug_scheme")
    def _default_slug_scheme(self) -> str:
        return "safe"

    @default("automount_service_account_token")
    def _default_automount(self) -> bool:
        return False

    @default("uid")
    def _default_uid(self) -> int:
        return 1000

    @default("fs_gid")
    def _default_fs_gid(self) -> int:
        return 100

    @default("allow_privilege_escalation")
    def _default_allow_privilege_escalation(self) -> bool:
        return False

    @default("container_security_context")
    def _default_container_security_context(self) -> dict[str, Any]:
        return {
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }

    @default("pod_security_context")
    def _default_pod_security_context(self) -> dict[str, Any]:
        return {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}

    def _get_reflector_key(self, kind: str) -> tuple[str, str | None]:
        return (kind, None) if self.watch_all_namespaces else (kind, self.namespace)

    async def _start_reflector(self, kind: str, reflector_class: Any, replace: bool = False, **kwargs: Any) -> Any:
        """KubeSpawner's watches (pods, events), for all tenant namespaces at once with
        :attr:`watch_all_namespaces` (KubeSpawner does so only with ``enable_user_namespaces``)."""
        if self.watch_all_namespaces:
            kwargs["omit_namespace"] = True
        return await super()._start_reflector(kind, reflector_class, replace=replace, **kwargs)

    @property
    def events(self) -> list[dict[str, Any]]:
        """KubeSpawner's events of this server's pod (it matches them by pod name alone), of its own
        namespace only: with one watch for all namespaces, a person's pod of the same name in another
        tenant is not this one."""
        return [e for e in super().events if e["involvedObject"].get("namespace") == self.namespace]

    async def load_user_options(self) -> None:
        """Options are ``tenant`` and ``profile``, resolved by the tenant policy, not
        by KubeSpawner's ``profile_list``: nothing to load here."""

    async def start(self) -> Any:
        """Admit, apply the profile's pod settings, then let KubeSpawner create the pod.

        Returns the server's URL like KubeSpawner. Raises ``SpawnException`` (400/403)
        before any API call when options or quota say no, 403 when the tenant's
        ResourceQuota refuses the pod, and 503 when no node can take it.
        """
        holding = await self.admit_spawn(borrowed=self._queued_by_kueue())
        config = self.platform.config
        tenant, profile = config.tenants[holding.tenant], config.profiles[holding.profile]
        gpu_type = config.gpu_types.get(profile.gpu_type) if profile.gpu_type else None
        settings = profile_settings(
            tenant_namespace(tenant.id, self.namespace_template),
            tenant,
            profile,
            gpu_type,
            config.images[profile.image],
            tuple(config.datasets[d] for d in tenant.datasets),
        )
        settings["volumes"] = [
            {"name": "home", "persistentVolumeClaim": {"claimName": self.pvc_name}},
            *settings["volumes"],
        ]
        settings["volume_mounts"] = [{"name": "home", "mountPath": self.home_mount_path}, *settings["volume_mounts"]]
        if self.kueue:
            settings["extra_labels"] = {
                **settings["extra_labels"],
                QUEUE_LABEL: LOCAL_QUEUE,
                PRIORITY_LABEL: PRIORITY_CLASS,
            }
            settings["extra_pod_config"] = {
                **(self.extra_pod_config or {}),  # type: ignore[has-type]
                "terminationGracePeriodSeconds": int(self.preemption_grace) + 30,
            }
            # a preempted workspace keeps running for the grace, while the hub's pages warn its person
            settings["lifecycle_hooks"] = {"preStop": {"exec": {"command": ["sleep", str(int(self.preemption_grace))]}}}
        for trait, value in settings.items():
            setattr(self, trait, value)
        self.dns_name = self.dns_name_template.format(namespace=self.namespace, name=self.pod_name)
        self.log.info(
            "Starting %s as pod %s/%s (profile %s)", self._log_name, self.namespace, self.pod_name, profile.id
        )
        self._spawn_id = uuid.uuid4().hex
        self._admission_recorded = False
        self.sshd_port = WORKSPACE_SSHD_PORT
        try:
            # JupyterHub cancels a start after start_timeout and answers a bare 500; this ends it just
            # before, saying where it was
            async with asyncio.timeout(max(1.0, float(self.start_timeout) - 2)):
                try:
                    url = await self._start_or_refuse()
                except TimeoutError as e:  # one of KubeSpawner's requests or waits timed out on its own
                    raise _KubernetesSlow(self._where(), str(e)) from e
                pod = self._pod() or {}
                self._pod_uid = (pod.get("metadata") or {}).get("uid")
                # the gateway dials the pod's own address; the NetworkPolicy opens the port to it alone
                self.sshd_host = str((pod.get("status") or {}).get("podIP") or "")
                await self._wait_answering(url)
        except TimeoutError:  # start_timeout's
            self.release_reservation()
            raise refusal(
                _(
                    "Your server did not start within {seconds} seconds: it was {where}, and was stopped. {busy}",
                    seconds=f"{float(self.start_timeout):g}",
                    where=self._where(),
                    busy=_(BUSY),
                ),
                reason="timeout",
                status=503,
                locale=self.locale(),
            ) from None
        except _KubernetesSlow as e:
            self.release_reservation()
            self.log.warning(
                "%s: Kubernetes timed out while %s: %s", self._log_name, e.where, e.detail or "(no detail)"
            )
            raise refusal(
                _(
                    "Your server could not be started: Kubernetes did not answer in time while it was {where}. {busy}",
                    where=e.where,
                    busy=_(BUSY),
                ),
                reason="kubernetes-busy",
                status=503,
                locale=self.locale(),
            ) from None
        except SpawnException:
            self.release_reservation()
            raise
        except Exception as e:
            self.release_reservation()
            message = getattr(e, "jupyterhub_message", None) or getattr(e, "log_message", None) or reason_of(e)
            failed = _("Your server could not be started: {why}", why=message)
            raise counted_failure(self.user.name, failed, self.log, self.locale()) from e  # type: ignore[attr-defined]
        except BaseException:
            self.release_reservation()
            raise
        STREAK.clear()
        return url

    def _where(self) -> Text:
        """Where a start is, for a person: in the hub's line, creating its pod, or its pod's phase."""
        pod = self._pod()
        if self._pace_status is not None:
            return _("still waiting for its turn at the hub ({status})", status=self._pace_status)
        name = f"{self.namespace}/{self.pod_name}"
        if pod is None:
            return _("still creating its pod {pod}", pod=name)
        phase = pod.get("status", {}).get("phase") or "Pending"  # Kubernetes' word for it
        return _("waiting for its pod {pod}, created and {phase}", pod=name, phase=phase)

    # -- creates, paced (issue 15) -------------------------------------------------------------------

    _spawn_id: str = ""
    _pace_status: Text | None = None

    async def get_pod_manifest(self) -> Any:
        pod = await super().get_pod_manifest()
        pod.metadata.annotations = {**(pod.metadata.annotations or {}), SPAWN_ANNOTATION: self._spawn_id}
        return pod

    def get_pvc_manifest(self) -> Any:
        pvc = super().get_pvc_manifest()
        pvc.metadata.annotations = {**(pvc.metadata.annotations or {}), SPAWN_ANNOTATION: self._spawn_id}
        return pvc

    async def _make_create_pod_request(self, pod: Any, request_timeout: float) -> bool:
        """Create the pod through the hub's line of creates (replaces KubeSpawner's single try, which its
        caller repeats): retried after a timeout or a refusal for load only once a read shows that it
        does not exist; one that exists from an earlier spawn is deleted first, as KubeSpawner does."""
        name = pod.metadata.name
        await self._create_paced(
            _("pod {pod}", pod=f"{self.namespace}/{name}"),
            lambda: self.api.create_namespaced_pod(self.namespace, pod),
            lambda: self.api.read_namespaced_pod(name, self.namespace),
            stale=lambda: KubeSpawner.stop(self, now=True),
        )
        return True

    async def _make_create_pvc_request(self, pvc: Any, request_timeout: float) -> bool:
        """Create the home volume claim through the hub's line of creates; one that exists already (from
        an earlier spawn, or this one's create that timed out) is the person's home: kept."""
        name = pvc.metadata.name
        await self._create_paced(
            _("home volume claim {claim}", claim=f"{self.namespace}/{name}"),
            lambda: self.api.create_namespaced_persistent_volume_claim(namespace=self.namespace, body=pvc),
            lambda: self.api.read_namespaced_persistent_volume_claim(name=name, namespace=self.namespace),
            stale=None,
        )
        return True

    async def _create_paced(
        self,
        what: Text,
        create: Callable[[], Awaitable[Any]],
        read: Callable[[], Awaitable[Any]],
        stale: Callable[[], Awaitable[Any]] | None,
    ) -> None:
        """Send ``create`` in its turn, with a timeout that follows the API server's load, until it is
        answered or a read shows the object exists: as this spawn's own (its ``aidc.io/spawn``), or for
        a home volume at all. An object of an earlier spawn is removed with ``stale`` first (None: it
        is kept as created). Refusals for load (429, 5xx) and timeouts are retried with backoff for
        ``k8s_api_request_retry_timeout`` seconds of asking (the time in the hub's line not counted);
        then the spawn is refused (503) with what failed."""
        line = pacer(self.k8s_creates_in_flight)
        loop = asyncio.get_running_loop()
        asking, attempt = 0.0, 0
        last: Text | None = None
        while True:
            attempt += 1
            wait: float | None = None
            timeout = line.timeout(self.k8s_api_request_timeout, self.k8s_api_request_retry_timeout, TIMEOUT_FACTOR)
            async with line.slot(lambda ahead: self._waiting_turn(ahead, line.slots)):
                self._pace_status = None
                self.log.info("Attempting to create %s, with timeout %.1f", what, timeout)  # as KubeSpawner logs it
                began = loop.time()
                try:
                    await asyncio.wait_for(create(), timeout)
                    line.answered(loop.time() - began)
                    return
                except TimeoutError:
                    line.answered(timeout)
                    last, exists = (
                        _("no answer within {seconds} s", seconds=f"{timeout:.0f}"),
                        await self._existing(read, timeout),
                    )
                except ApiException as e:
                    line.answered(loop.time() - began)
                    if e.status == 409 or (e.status == 403 and stale is None):
                        # 403: a home volume over the storage quota may exist already (KubeSpawner's check)
                        exists = await self._existing(read, timeout)
                        if exists is None and e.status == 403:
                            raise
                        last = _("it exists already")
                    elif e.status == 429 or e.status >= 500:
                        exists, wait = None, retry_after(e.headers)
                        last = (
                            _("the API server answered {status} {reason}", status=e.status, reason=e.reason)
                            if e.reason
                            else _("the API server answered {status}", status=e.status)
                        )
                    else:
                        raise
                finally:
                    asking += loop.time() - began
            if exists is not None:
                annotations = getattr(exists.metadata, "annotations", None) or {}
                if stale is None or annotations.get(SPAWN_ANNOTATION) == self._spawn_id:
                    if attempt > 1 or last:
                        self.log.info("%s: %s was created (%s; not sent again)", self._log_name, what, last)
                    return
                self.log.info("%s: %s exists from an earlier spawn; removing it", self._log_name, what)
                await stale()
            if asking >= self.k8s_api_request_retry_timeout:
                self.log.warning("%s: could not create %s after %d tries: %s", self._log_name, what, attempt, last)
                raise refusal(
                    _(
                        "The hub could not create your server's {what}: the Kubernetes API server is overloaded or"
                        " failing ({last}; {tries} tries in {seconds} seconds). Nothing was started. {busy}",
                        what=what,
                        last=last or "",
                        tries=attempt,
                        seconds=f"{asking:.0f}",
                        busy=_(BUSY),
                    ),
                    reason="kubernetes-busy",
                    status=503,
                    locale=self.locale(),
                )
            delay = min(backoff(attempt, wait), max(0.0, self.k8s_api_request_retry_timeout - asking))
            asking += delay
            self.log.info("%s: %s not created yet (%s); trying again in %.1f s", self._log_name, what, last, delay)
            await asyncio.sleep(delay)

    async def _existing(self, read: Callable[[], Awaitable[Any]], timeout: float) -> Any:
        """The object as the API server has it, or None when it does not exist or cannot be read now."""
        try:
            return await asyncio.wait_for(read(), timeout)
        except TimeoutError:
            return None
        except ApiException as e:
            if e.status != 404:
                self.log.info("%s: could not read back what it created: %s %s", self._log_name, e.status, e.reason)
            return None

    def _waiting_turn(self, ahead: int, slots: int) -> None:
        self._pace_status = ngettext(
            "Starting: {count} server ahead of you at the hub, which sends Kubernetes {slots} at a time",
            "Starting: {count} servers ahead of you at the hub, which sends Kubernetes {slots} at a time",
            ahead,
            slots=slots,
        )

    async def _wait_answering(self, url: str) -> None:
        """Return once the pod's server answers HTTP (as JupyterHub's own check after ``start``,
        done here so that its failure goes through :func:`spawner.tenancy.counted_failure`); after
        ``http_timeout`` seconds the pod is deleted and :class:`_NotAnswering` raised with a message."""
        base_url = self.server.base_url if self.server is not None else "/"  # type: ignore[attr-defined]
        try:
            await wait_for_http_server(url.rstrip("/") + base_url, timeout=self.http_timeout)
        except TimeoutError:
            await KubeSpawner.stop(self, now=True)
            raise _NotAnswering(
                _(
                    "its pod {pod} ran but its server did not answer within {seconds} seconds, and was stopped. If"
                    " you changed ~/.jupyter settings, fix or move them aside and start again; otherwise the"
                    " platform admins see it in the hub's log.",
                    pod=f"{self.namespace}/{self.pod_name}",
                    seconds=f"{self.http_timeout:g}",
                )
            ) from None

    async def _start_or_refuse(self) -> Any:
        start = asyncio.ensure_future(super().start())
        watch = asyncio.ensure_future(self._watch_unschedulable())
        queue = asyncio.ensure_future(self._follow_queue()) if self.kueue else None
        try:
            watchers = {watch} | ({queue} if queue else set())
            done, _pending = await asyncio.wait({start} | watchers, return_when=asyncio.FIRST_COMPLETED)
            failed = next((w for w in watchers if w in done and w.result() is not None), None)
            if failed is not None:
                code, reason = failed.result() or ("", "")
                start.cancel()
                await asyncio.gather(start, return_exceptions=True)
                await KubeSpawner.stop(self, now=True)
                raise refusal(reason, reason=code, status=503, locale=self.locale())
            url = await start
            if queue is not None:
                # the pod may run before the queue's next look saw Kueue admit it: its run starts now,
                # not at the request (which would charge the wait)
                queue.cancel()
                await asyncio.gather(queue, return_exceptions=True)
                if not self._admission_recorded:
                    await self._kueue_admitted(self._queued_choice)
            return url
        except ApiException as e:
            body = e.body.decode(errors="replace") if isinstance(e.body, bytes) else str(e.body or "")
            if e.status == 403 and "exceeded quota" in body:
                raise refusal(
                    self._quota_message(e), reason="resourcequota", status=403, locale=self.locale()
                ) from None
            raise
        finally:
            watch.cancel()
            if queue is not None:
                queue.cancel()
                await asyncio.gather(queue, return_exceptions=True)

    async def _watch_unschedulable(self) -> tuple[str, Text] | None:
        """The scheduler's reason once the pod has been unschedulable for ``unschedulable_timeout``."""
        key = f"{self.namespace}/{self.pod_name}"
        # looked up at every round: KubeSpawner starts the pod watch in this same start (the hub's first
        # spawn), and replaces it when it breaks
        condition = await _UNSCHEDULABLE.watch(key, self._pods_watched, self.unschedulable_timeout)
        return "unschedulable", _(
            "No node can run this server now: the cluster has no free capacity for profile {profile} (the scheduler"
            " says: {condition}). Try again later, pick a smaller profile, or ask a platform admin.",
            profile=self.held.profile if self.held else "?",
            condition=condition,
        )

    # -- the GPU queue with Kueue ------------------------------------------------------------------

    _queue_status: str | None = None  # an i18n.Text where the quotas store makes one
    _queued_choice: Choice | None = None

    def _queued_by_kueue(self) -> dict[str, int] | None:
        """With Kueue, a GPU request that may wait is not held to the tenant's GPU ceiling here: its
        pod waits in the tenant's Kueue queue instead (its ClusterQueue keeps the ceiling); the other
        checks (limits, servers, budgets, a request larger than the tenant could ever hold) stay."""
        self._queued_choice = None
        if not self.kueue:
            return None
        choice = self.resolve_choice()
        gpu_type = choice.profile.gpu_type
        if not gpu_type or not may_wait(choice.tenant, choice.profile, "gpus", True):
            return None
        self._queued_choice = choice
        return {gpu_type: KUEUE_KEEPS_THE_CEILING}

    @property
    def queues_gpus(self) -> bool:
        return bool(self.kueue)

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        """KubeSpawner's events, and while the pod waits in the tenant's queue its place and why (in the
        person's language; KubeSpawner's own events are its words, in English)."""
        locale = self.locale()
        events = super().progress().__aiter__()
        pending: asyncio.Future[Any] | None = None
        last = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(events.__anext__())
                done, _pending = await asyncio.wait({pending}, timeout=0.5)
                if pending in done:
                    try:
                        event = pending.result()
                    except StopAsyncIteration:
                        return
                    pending = None
                    yield event
                status = self._queue_status or self._pace_status
                if status is not None and status != last:
                    last = status
                    yield {"progress": 10, "message": translate(status, locale)}
        finally:
            if pending is not None:
                pending.cancel()

    def _pods_watched(self) -> Mapping[str, Any]:
        """The pods KubeSpawner's pod watch holds now, by ``namespace/name`` (none before it starts)."""
        reflector = self.__class__.reflectors.get(self._get_reflector_key("pods"))
        return reflector.pods if reflector else {}

    def _pod(self) -> dict[str, Any] | None:
        pod: dict[str, Any] | None = self._pods_watched().get(f"{self.namespace}/{self.pod_name}")
        return pod

    async def _follow_queue(self) -> tuple[str, str] | None:
        """While Kueue holds the pod back: its place and why (the quotas store's GPU queue and the
        spawn's progress); once admitted, the run starts (and says what is borrowed). Returns a
        refusal (code, message) when the tenant's ``queue.max_wait`` passes or its queue is full."""
        choice = self._queued_choice
        store, key = self.platform.store, self.server_key
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (choice.tenant.queue.max_wait.total_seconds() if choice else 0)
        queued = False
        try:
            while True:
                await asyncio.sleep(self.queue_poll_interval)
                pod = self._pod()
                if pod is None:
                    continue
                if not _gated(pod):
                    await self._kueue_admitted(choice)
                    return None
                if choice is None:
                    continue  # within the ceiling: Kueue admits it as soon as reclaim frees its GPUs
                if not queued:
                    try:
                        await asyncio.to_thread(
                            store.enqueue, choice.tenant, key[0], key[1], choice.profile, True, datetime.now(UTC)
                        )
                    except QueueFull as e:
                        return "queue-full", reason_of(e)
                    queued = True
                position, length, why = await self._place_in_queue(choice, pod["metadata"]["uid"])
                self._queue_status = waiting_reason(
                    choice.profile.gpu_count, choice.profile.gpu_type or "", why, position, length
                )
                await asyncio.to_thread(store.place, {key: (position or 0, length, self._queue_status)})
                if loop.time() >= deadline:
                    return "queue-timeout", queue_timeout_message(choice.tenant, self._queue_status)
        finally:
            self._queue_status = None
            if queued:
                await asyncio.to_thread(store.dequeue, key)

    async def _place_in_queue(self, choice: Choice, pod_uid: str) -> tuple[int | None, int, str]:
        """(position, length, why) of this pod's Workload (Kueue labels it with the pod's UID) in its
        LocalQueue, from Kueue's visibility API and the Workload's ``QuotaReserved`` condition."""
        path = (
            f"/apis/visibility.kueue.x-k8s.io/v1beta2/namespaces/{self.namespace}"  # i18n: a URL
            f"/localqueues/{LOCAL_QUEUE}/pendingworkloads"
        )
        why: str = _("tenant {tenant}'s GPUs are in use", tenant=choice.tenant.id)
        try:
            pending = await self._kube_get(path)
            workloads = await self._kube_get(
                f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{self.namespace}/workloads",  # i18n: a URL
                [("labelSelector", f"kueue.x-k8s.io/job-uid={pod_uid}")],  # i18n: a label selector
            )
        except ApiException as e:
            self.log.warning("Could not read %s's place in the Kueue queue: %s", self._log_name, e.reason)
            return None, 0, why
        mine = next(iter(workloads.get("items", [])), None)
        items = pending.get("items", [])
        position = None
        if mine is not None:
            name = mine["metadata"]["name"]
            position = next(
                (int(i.get("positionInLocalQueue", 0)) + 1 for i in items if i["metadata"]["name"] == name), None
            )
            for condition in mine.get("status", {}).get("conditions", []):
                if condition.get("type") == "QuotaReserved" and condition.get("status") == "False":
                    why = str(condition.get("message") or why)  # Kueue's words, in English
        return position, len(items), why

    async def _kube_get(self, path: str, query: list[tuple[str, str]] | None = None) -> dict[str, Any]:
        data = await self.api.api_client.call_api(
            path,
            "GET",
            query_params=query or [],
            header_params={"Accept": "application/json"},
            response_types_map={200: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
        )
        return dict(data or {})

    _admission_recorded = False

    async def _kueue_admitted(self, choice: Choice | None) -> None:
        """Kueue admitted the pod: its run starts now, with what it borrows beyond the tenant's own."""
        held = self.held
        if held is None or choice is None:
            return
        self._admission_recorded = True
        store = self.platform.store
        gpu_type = choice.profile.gpu_type or ""
        waiting = {q.key for q in await asyncio.to_thread(store.queued, held.tenant)} - {self.server_key}
        in_use = sum(
            r.holding.gpus.get(gpu_type, 0)
            for r in await asyncio.to_thread(store.open_runs, held.tenant)
            if (r.holding.user, r.holding.server) not in waiting
        )
        beyond = min(held.gpus.get(gpu_type, 0), in_use - choice.tenant.quota.gpus.get(gpu_type, 0))
        borrowed = {gpu_type: beyond} if beyond > 0 else {}
        await asyncio.to_thread(store.admitted, self.server_key, datetime.now(UTC), borrowed)
        self.log.info("Kueue admitted %s%s", self._log_name, f" on borrowed GPUs {borrowed}" if borrowed else "")

    _pod_uid: str | None = None

    async def poll(self) -> int | None:
        """KubeSpawner's poll; a pod Kueue preempts (to give borrowed GPUs back) is marked in the
        ledger (when it stops and why, shown on the hub's pages), and its run ends ``preempted``.
        Kueue marks the pod (``TerminationTarget``) and records a ``Stopped`` event on it before
        deleting it; the event outlives the pod, so a pod gone between two polls is still known."""
        status: int | None = await super().poll()
        if not self.kueue or self.held is None:
            return status
        pod = self._pod()
        if pod is not None:
            self._pod_uid = pod["metadata"].get("uid")
        preempted = pod is not None and _preempted(pod)
        if not preempted and status is not None:
            preempted = await self._stopped_by_kueue()
        if preempted:
            stop_at = datetime.now(UTC) + (timedelta(seconds=self.preemption_grace) if status is None else timedelta(0))
            note = _(
                "it runs on GPUs that tenant {tenant} borrowed from another tenant of its cohort, which needs them back",
                tenant=self.held.tenant,
            )
            if await asyncio.to_thread(self.platform.store.mark_preempted, self.server_key, stop_at, note):
                self.log.info("%s is preempted by Kueue: %s", self._log_name, note)
        return status

    async def _stopped_by_kueue(self) -> bool:
        """Whether Kueue stopped this server's pod to preempt it (its ``Stopped`` event says so)."""
        if self._pod_uid is None:
            return False
        try:
            events = await self.api.list_namespaced_event(
                self.namespace,
                field_selector=f"involvedObject.uid={self._pod_uid},reason=Stopped",  # i18n: a selector
            )
        except ApiException as e:
            self.log.warning("Could not read the events of %s's pod: %s", self._log_name, e.reason)
            return False
        return any("Preempted" in (e.message or "") for e in events.items)

    def _quota_message(self, e: ApiException) -> Text:
        try:
            detail = json.loads(e.body or b"{}").get("message", "")
        except (TypeError, ValueError):
            detail = str(e.reason)
        return _(
            "Kubernetes refused the server: namespace {namespace} is at its ResourceQuota ({detail}). Pods the hub"
            " does not count (created outside it, or still being counted after a retried create) hold part of it;"
            " try again in a minute, stop a server or ask a platform admin.",
            namespace=self.namespace,
            detail=detail,
        )

    async def stop(self, now: bool = False) -> None:
        """Delete the pod (as KubeSpawner) and give back the tenant's quota."""
        try:
            await super().stop(now=now)
        finally:
            self.release_reservation()

    def get_env(self) -> dict[str, str]:
        """KubeSpawner's environment plus the tenant's (:meth:`tenant_env`) and this server's SSH keys
        and port (:meth:`ssh_env`)."""
        env: dict[str, str] = super().get_env()
        env.update(self.tenant_env())
        env.update(self.ssh_env())
        return env

    def clear_state(self) -> None:
        """Forget the stopped server, and give back its quota (also when it stopped on its own)."""
        super().clear_state()
        self.sshd_host, self.sshd_port = "", 0
        self.release_reservation()

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        held = self.held_state()
        if held is not None:
            state[STATE_KEY] = held
        return self.with_sshd(state)

    def load_state(self, state: dict[str, Any]) -> None:
        """KubeSpawner's pod name and namespace, where its sshd listens, and re-hold the server's
        quota after a hub restart."""
        super().load_state(state)
        self.load_sshd(state)
        saved = state.get(STATE_KEY)
        if saved:
            self.restore_held(saved)


class _UnschedulableWatch:
    """One loop per hub process over the pods of every starting spawn, instead of one per spawn (a
    storm of a thousand spawns would wake the hub a thousand times each :attr:`interval`): a pod
    that stayed unschedulable for its spawn's timeout gives that spawn the scheduler's reason."""

    interval = 0.5

    def __init__(self) -> None:
        self._spawns: dict[str, tuple[Callable[[], Mapping[str, Any]], float, asyncio.Future[str]]] = {}
        self._since: dict[str, float] = {}
        self._task: asyncio.Future[None] | None = None

    async def watch(self, key: str, pods: Callable[[], Mapping[str, Any]], timeout: float) -> str:
        """Wait until pod ``key`` (``namespace/name`` in ``pods()``, a pod reflector's) has been
        unschedulable for ``timeout`` seconds; returns the scheduler's message. Cancel it to stop."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._spawns[key] = (pods, timeout, future)
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = asyncio.ensure_future(self._run())
        try:
            return await future
        finally:
            if self._spawns.get(key, (None, None, None))[2] is future:
                del self._spawns[key]
            self._since.pop(key, None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._spawns:
            await asyncio.sleep(self.interval)
            now = loop.time()
            for key, (pods, timeout, future) in list(self._spawns.items()):
                condition = _unschedulable_condition(pods().get(key))
                if condition is None:
                    self._since.pop(key, None)
                    continue
                since = self._since.setdefault(key, now)
                if now - since >= timeout and not future.done():
                    future.set_result(condition)


_UNSCHEDULABLE = _UnschedulableWatch()


# what a person is told to do when the platform was too busy to start their server
BUSY = N_(
    "The platform is busy; try again in a few minutes. If it keeps happening, tell the platform admins"
    " (the hub's log has the details)."
)


class _KubernetesSlow(Exception):
    """One of KubeSpawner's own requests or waits timed out (not ``start_timeout``): the API server is
    too busy; ``where`` the start was then (for a person), ``detail`` the timeout's text (for the log)."""

    def __init__(self, where: Text, detail: str) -> None:
        super().__init__(where)
        self.where, self.detail = where, detail


class _NotAnswering(Exception):
    """The pod ran but its server did not answer within ``http_timeout``: a failure of the start."""


def _gated(pod: dict[str, Any]) -> bool:
    """Kueue still holds the pod back (its ``kueue.x-k8s.io/admission`` scheduling gate)."""
    return any(g.get("name") == "kueue.x-k8s.io/admission" for g in pod.get("spec", {}).get("schedulingGates") or [])


def _preempted(pod: dict[str, Any]) -> bool:
    """Kueue evicts a preempted pod with a ``TerminationTarget`` (or ``DisruptionTarget``) condition."""
    return any(
        c.get("type") in ("TerminationTarget", "DisruptionTarget") and c.get("status") == "True"
        for c in pod.get("status", {}).get("conditions") or []
    )


def _unschedulable_condition(pod: dict[str, Any] | None) -> str | None:
    if not pod or pod.get("status", {}).get("phase") not in (None, "Pending"):
        return None
    for condition in pod.get("status", {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            message = str(condition.get("message") or "unschedulable")
            # a volume still being bound or provisioned is worth waiting for; missing capacity is not
            if condition.get("reason") == "Unschedulable" and "unbound" not in message:
                return message
    return None
