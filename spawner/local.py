"""``TenantLocalSpawner`` (entry point ``aidc-local``): the embedded mode's spawner.

JupyterHub's LocalProcessSpawner plus the tenant policy: the profile form from
the user's tenants, admission before anything starts, GPUs allocated exclusively
from this machine's inventory and passed as ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from jupyterhub.spawner import LocalProcessSpawner
from traitlets import Bool, Unicode, default

from .gpus import NoFreeGpus
from .tenancy import TenantSpawnerMixin, refusal

STATE_KEY = "aidc"


class TenantLocalSpawner(TenantSpawnerMixin, LocalProcessSpawner):
    """Start workspaces as local processes, inside their tenant's quota."""

    run_as_hub_user = Bool(
        True,
        help="""Run every workspace as the hub's own Unix user, in a home under ``data_dir/homes``.

        The default suits one trusted machine (a workstation, a demo, CI): no Unix
        accounts are needed. Set to False to run each workspace as the Unix user of
        the same name, as JupyterHub's LocalProcessSpawner does (the hub then runs
        as root and the accounts must exist).
        """,
    ).tag(config=True)

    home_dir_template = Unicode(
        help="""Home of each workspace when ``run_as_hub_user`` is True; ``{username}`` is expanded.

        Defaults to ``<data_dir>/homes/{username}``.
        """,
    ).tag(config=True)

    @default("home_dir_template")
    def _default_home_dir_template(self) -> str:
        return str(Path(self.data_dir) / "homes" / "{username}")

    @default("cmd")
    def _default_cmd(self) -> list[str]:
        # the hub's own interpreter, so the workspace finds jupyterhub-singleuser without PATH tricks
        return [sys.executable, "-m", "jupyterhub.singleuser"]

    @property
    def home_dir(self) -> str:
        return self.home_dir_template.format(username=self.user.name)

    gpu_indices: list[str] = []

    async def start(self) -> Any:
        """Admit, allocate GPUs, then start the process.

        Returns ``(ip, port)`` like LocalProcessSpawner. Raises ``SpawnException``
        (400/403/503) without starting anything when options, quota or free GPUs
        say no; whatever was reserved is given back.
        """
        holding = await self.admit_spawn()
        try:
            indices: list[str] = []
            for gpu_type, count in holding.gpus.items():
                indices += self.platform.gpus.allocate(self.server_key, gpu_type, count)
        except NoFreeGpus as e:
            self._release()
            raise refusal(str(e), reason="gpus-busy", status=503) from None
        self.gpu_indices = indices
        profile = self.platform.config.profiles[holding.profile]
        visible = ",".join(indices) if indices else ""
        base_env: dict[str, Any] = dict(self.environment)  # type: ignore[has-type]
        self.environment = {
            **base_env,
            "CUDA_VISIBLE_DEVICES": visible,
            "NVIDIA_VISIBLE_DEVICES": visible or "void",
            **self.tenant_env(),
        }
        self.cpu_limit = float(profile.cpu)
        self.mem_limit = int(profile.memory)
        self.log.info(
            "Starting %s for tenant %s with profile %s, GPUs [%s]",
            self._log_name,
            holding.tenant,
            holding.profile,
            visible,
        )
        try:
            return await super().start()
        except BaseException:
            self._release()
            raise

    async def stop(self, now: bool = False) -> None:
        """Stop the process (as LocalProcessSpawner) and give back GPUs and quota."""
        try:
            await super().stop(now=now)
        finally:
            self._release()

    def clear_state(self) -> None:
        """Forget the stopped server; also the path JupyterHub takes when a workspace died
        on its own (poll saw it gone, so ``stop`` is not called): give back GPUs and quota."""
        super().clear_state()
        self._release()

    def _release(self) -> None:
        freed = self.platform.gpus.release(self.server_key)
        self.release_reservation()
        if freed:
            self.log.info("Released GPUs [%s] of %s", ",".join(freed), self._log_name)
        self.gpu_indices = []

    def get_state(self) -> dict[str, Any]:
        """LocalProcessSpawner's pid plus what this server holds, so a restarted hub can re-hold it."""
        state = super().get_state()
        held = self.held_state()
        if held is not None:
            state[STATE_KEY] = {**held, "gpus": self.gpu_indices}
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore after a hub restart: the pid, and re-hold the server's quota and GPUs."""
        super().load_state(state)
        saved = state.get(STATE_KEY)
        if not saved or not self.pid:
            return
        indices = [str(i) for i in saved.get("gpus", [])]
        conflicts = self.platform.gpus.claim(self.server_key, indices)
        if conflicts:
            self.log.error("%s claims GPUs [%s] that another server holds", self._log_name, ",".join(conflicts))
        self.restore_held(saved)
        self.gpu_indices = indices

    def get_env(self) -> dict[str, str]:
        """LocalProcessSpawner's environment plus this server's SSH key (:meth:`ssh_env`)."""
        env: dict[str, str] = super().get_env()
        env.update(self.ssh_env())
        return env

    def get_args(self) -> list[str]:
        args = super().get_args()
        if self.run_as_hub_user and os.geteuid() == 0:
            # a hub run by root (CI, containers) runs workspaces as root too in this mode
            args.append("--ServerApp.allow_root=True")
        return args

    def make_preexec_fn(self, name: str) -> Any:
        if not self.run_as_hub_user:
            return super().make_preexec_fn(name)
        home = self.home_dir

        def preexec() -> None:
            os.makedirs(home, 0o700, exist_ok=True)
            os.chdir(home)

        return preexec

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        if not self.run_as_hub_user:
            return super().user_env(env)
        env["USER"] = self.user.name
        env["HOME"] = self.home_dir
        env["SHELL"] = "/bin/bash"
        return env

    async def move_certs(self, paths: dict[str, str]) -> dict[str, str]:
        if not self.run_as_hub_user:
            return await super().move_certs(paths)
        return paths
