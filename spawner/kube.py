"""``TenantKubeSpawner`` (entry point ``aidc-kube``): workspaces as pods in their tenant's namespace.

KubeSpawner plus the tenant policy. It stays thin: it admits the request (the same
policy as the embedded mode), turns the profile into KubeSpawner settings with the
pure :func:`spawner.kube_objects.profile_settings`, and lets KubeSpawner make the
API calls. Two refusals only Kubernetes can give are turned into reasons for people
within seconds: the tenant's ResourceQuota (403) and an unschedulable pod.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from jupyterhub.spawner import SpawnException
from jupyterhub.utils import wait_for_http_server
from kubernetes_asyncio.client.rest import ApiException
from kubespawner import KubeSpawner
from traitlets import Float, Unicode, default

from .kube_objects import profile_settings, tenant_namespace
from .start_failures import STREAK
from .tenancy import TenantSpawnerMixin, counted_failure, refusal

STATE_KEY = "aidc"


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

    async def load_user_options(self) -> None:
        """Options are ``tenant`` and ``profile``, resolved by the tenant policy, not
        by KubeSpawner's ``profile_list``: nothing to load here."""

    async def start(self) -> Any:
        """Admit, apply the profile's pod settings, then let KubeSpawner create the pod.

        Returns the server's URL like KubeSpawner. Raises ``SpawnException`` (400/403)
        before any API call when options or quota say no, 403 when the tenant's
        ResourceQuota refuses the pod, and 503 when no node can take it.
        """
        holding = await self.admit_spawn()
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
        for trait, value in settings.items():
            setattr(self, trait, value)
        self.dns_name = self.dns_name_template.format(namespace=self.namespace, name=self.pod_name)
        self.log.info(
            "Starting %s as pod %s/%s (profile %s)", self._log_name, self.namespace, self.pod_name, profile.id
        )
        try:
            url = await self._start_or_refuse()
            await self._wait_answering(url)
        except SpawnException:
            self.release_reservation()
            raise
        except Exception as e:
            self.release_reservation()
            message = getattr(e, "jupyterhub_message", None) or getattr(e, "log_message", None) or str(e)
            raise counted_failure(self.user.name, f"Your server could not be started: {message}", self.log) from e  # type: ignore[attr-defined]
        except BaseException:
            self.release_reservation()
            raise
        STREAK.clear()
        return url

    async def _wait_answering(self, url: str) -> None:
        """Return once the pod's server answers HTTP (as JupyterHub's own check after ``start``,
        done here so that its failure goes through :func:`spawner.tenancy.counted_failure`); after
        ``http_timeout`` seconds the pod is deleted and ``TimeoutError`` raised with a message."""
        base_url = self.server.base_url if self.server is not None else "/"  # type: ignore[attr-defined]
        try:
            await wait_for_http_server(url.rstrip("/") + base_url, timeout=self.http_timeout)
        except TimeoutError:
            await KubeSpawner.stop(self, now=True)
            raise TimeoutError(
                f"its pod {self.namespace}/{self.pod_name} ran but its server did not answer within"
                f" {self.http_timeout:g} seconds, and was stopped. If you changed ~/.jupyter settings, fix or move"
                " them aside and start again; otherwise the platform admins see it in the hub's log."
            ) from None

    async def _start_or_refuse(self) -> Any:
        start = asyncio.ensure_future(super().start())
        watch = asyncio.ensure_future(self._watch_unschedulable())
        try:
            done, _ = await asyncio.wait({start, watch}, return_when=asyncio.FIRST_COMPLETED)
            reason = watch.result() if watch in done else None
            if reason is not None:
                start.cancel()
                await asyncio.gather(start, return_exceptions=True)
                await KubeSpawner.stop(self, now=True)
                raise refusal(reason, reason="unschedulable", status=503)
            return await start
        except ApiException as e:
            body = e.body.decode(errors="replace") if isinstance(e.body, bytes) else str(e.body or "")
            if e.status == 403 and "exceeded quota" in body:
                raise refusal(self._quota_message(e), reason="resourcequota", status=403) from None
            raise
        finally:
            watch.cancel()

    async def _watch_unschedulable(self) -> str | None:
        """The scheduler's reason once the pod has been unschedulable for ``unschedulable_timeout``."""
        ref_key = f"{self.namespace}/{self.pod_name}"
        since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.5)
            reflector = self.__class__.reflectors.get(self._get_reflector_key("pods"))
            pod = reflector.pods.get(ref_key) if reflector else None
            condition = _unschedulable_condition(pod)
            if condition is None:
                since = None
                continue
            since = since or loop.time()
            if loop.time() - since >= self.unschedulable_timeout:
                return (
                    f"No node can run this server now: the cluster has no free capacity for profile"
                    f" {self.held.profile if self.held else '?'} (the scheduler says: {condition}). Try again"
                    " later, pick a smaller profile, or ask a platform admin."
                )

    def _quota_message(self, e: ApiException) -> str:
        try:
            detail = json.loads(e.body or b"{}").get("message", "")
        except (TypeError, ValueError):
            detail = str(e.reason)
        return (
            f"Kubernetes refused the server: namespace {self.namespace} is at its ResourceQuota ({detail})."
            " Pods the hub does not count (created outside it, or still being counted after a retried create)"
            " hold part of it; try again in a minute, stop a server or ask a platform admin."
        )

    async def stop(self, now: bool = False) -> None:
        """Delete the pod (as KubeSpawner) and give back the tenant's quota."""
        try:
            await super().stop(now=now)
        finally:
            self.release_reservation()

    def get_env(self) -> dict[str, str]:
        """KubeSpawner's environment plus the tenant's (:meth:`tenant_env`) and this server's SSH key
        (:meth:`ssh_env`)."""
        env: dict[str, str] = super().get_env()
        env.update(self.tenant_env())
        env.update(self.ssh_env())
        return env

    def clear_state(self) -> None:
        """Forget the stopped server, and give back its quota (also when it stopped on its own)."""
        super().clear_state()
        self.release_reservation()

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        held = self.held_state()
        if held is not None:
            state[STATE_KEY] = held
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        """KubeSpawner's pod name and namespace, and re-hold the server's quota after a hub restart."""
        super().load_state(state)
        saved = state.get(STATE_KEY)
        if saved:
            self.restore_held(saved)


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
