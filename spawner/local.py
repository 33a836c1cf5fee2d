"""``TenantLocalSpawner`` (entry point ``aidc-local``): the embedded mode's spawner.

JupyterHub's LocalProcessSpawner plus the tenant policy: the profile form from
the user's tenants, admission before anything starts, GPUs allocated exclusively
from this machine's inventory and passed as ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jupyterhub import orm
from jupyterhub.spawner import LocalProcessSpawner
from tornado import web
from traitlets import Bool, Unicode, default

from quotas.policy import Holding

from .gpus import NoFreeGpus
from .start_failures import OWN_SETTINGS, StartFailure, judge, own_settings_in
from .tenancy import TenantSpawnerMixin, refusal
from .workspaces import (
    MARKER,
    Record,
    is_alive,
    marked_processes,
    new_record,
    orphans,
    process_start,
    stop_processes,
)

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
        """Admit and allocate GPUs (one step), then start the process and wait until it listens.

        Returns ``(ip, port)`` like LocalProcessSpawner. Raises ``SpawnException``
        (400/403/503) without starting anything when options, quota or free GPUs
        say no; whatever was reserved is given back. A process that cannot start,
        exits or stays silent raises what :func:`spawner.start_failures.judge` says:
        ``SpawnException`` for the person's own failure (not counted toward
        ``consecutive_failure_limit``), ``HTTPError`` 500 for the platform's.
        """
        self._gpus_taken = False
        # processes a crash left behind are adopted or stopped before any GPU is handed out
        await self.platform.reconciled(self._reconcile_workspaces)
        try:
            holding = await self.admit_spawn(hold=self._take_gpus)
        except NoFreeGpus as e:
            raise refusal(str(e), reason="gpus-busy", status=503) from None
        except BaseException:
            if self._gpus_taken:  # taken, but the reservation was not written
                self.platform.gpus.release(self.server_key)
                self.gpu_indices = []
            raise
        indices = self.gpu_indices
        profile = self.platform.config.profiles[holding.profile]
        visible = ",".join(indices) if indices else ""
        base_env: dict[str, Any] = dict(self.environment)  # type: ignore[has-type]
        self.environment = {
            **base_env,
            "CUDA_VISIBLE_DEVICES": visible,
            "NVIDIA_VISIBLE_DEVICES": visible or "void",
            **self.tenant_env(),
        }
        # written down before the process exists: a hub killed from here on finds it again
        self._record = new_record(self.user.name, self.name or "", indices, self.run_id)
        self.platform.workspaces.write(self._record)
        self.environment[MARKER] = self._record.id
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
            self._check_home()
            try:
                address = await super().start()
            except OSError as e:  # the interpreter or a folder of the platform is missing or unreadable
                raise self._start_failed(StartFailure("launch", self.name, detail=str(e))) from e
            self._record = self.platform.workspaces.started(self._record, self.proc.pid)
            await self._wait_listening(*address)
            return address
        except BaseException:
            if self.proc is not None and self.proc.poll() is None:  # never free the GPUs of a live process
                await super().stop(now=True)
            self._release()
            raise

    def _check_home(self) -> None:
        """Make the home in this process, where a home that is not a directory (the person's doing)
        can be told apart from a platform fault; ``preexec_fn`` would only say that it failed."""
        if not self.run_as_hub_user:
            return
        home = Path(self.home_dir)
        try:
            home.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            if home.is_symlink() or home.exists():  # there, but not a directory
                raise self._start_failed(StartFailure("home", self.name, detail="it is not a directory")) from None
            failure = StartFailure("launch", self.name, detail=f"cannot make the home {home}: {e.strerror}")
            raise self._start_failed(failure) from None
        if not os.access(home, os.R_OK | os.W_OK | os.X_OK):
            raise self._start_failed(StartFailure("home", self.name, detail="the server may not read and write it"))

    async def _wait_listening(self, ip: str, port: int) -> None:
        """Return once the process accepts connections on its port; if it exits first, or stays
        silent for ``http_timeout`` seconds (then it is stopped), raise the failure :func:`judge` says."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.http_timeout
        host = "127.0.0.1" if ip in ("", "0.0.0.0") else ip
        while True:
            code = self.proc.poll()
            if code is not None:
                raise self._start_failed(StartFailure("exited", self.name, code, self._own_settings()))
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=1)
            except (OSError, TimeoutError):
                pass
            else:
                writer.close()
                return
            if loop.time() > deadline:
                await super().stop(now=True)
                silent = StartFailure("silent", self.name, own_settings=self._own_settings(), timeout=self.http_timeout)
                raise self._start_failed(silent)
            await asyncio.sleep(0.2)

    def _own_settings(self) -> tuple[str, ...]:
        try:
            home = Path(self.home_dir if self.run_as_hub_user else pwd.getpwnam(self.user.name).pw_dir)
        except KeyError:
            return ()
        return own_settings_in(p for p in OWN_SETTINGS if (home / p).exists())

    def _start_failed(self, failure: StartFailure) -> Exception:
        """The exception for ``failure``: a ``SpawnException`` when it is the person's own (JupyterHub
        does not count those toward ``consecutive_failure_limit``), else an ``HTTPError`` 500 that
        counts: a hub that cannot start anybody's server still exits, as z2jh intends."""
        verdict = judge(failure)
        self.log.warning(
            "%s did not start (%s; %s): %s",
            self._log_name,
            failure.stage,
            "the person's own failure, not counted" if verdict.own else "counts toward the hub's exit",
            verdict.message,
        )
        if verdict.own:
            return refusal(verdict.message, reason="own-server", status=500)
        error = web.HTTPError(500, verdict.message)
        error.jupyterhub_message = verdict.message  # type: ignore[attr-defined]
        return error

    _gpus_taken = False
    _record: Record | None = None

    async def _reconcile_workspaces(self) -> None:
        """Once per hub process, before its first allocation: stop every recorded workspace process
        that the hub's database does not list as a running server with that pid (a hub killed while
        starting or stopping it), close its ledger run and forget it. Adopted ones (their spawners
        re-held their GPUs in :meth:`load_state`) stay. A process that cannot be stopped keeps its
        GPUs held, so that they are never handed out twice."""
        platform = self.platform
        records = platform.workspaces.records()
        if not records:
            return
        db = self.user.db  # type: ignore[attr-defined]
        running = {
            (s.user.name, s.name): (s.state or {}).get("pid")
            for s in db.query(orm.Spawner).filter(orm.Spawner.server != None)  # noqa: E711 - SQL
        }
        lost = orphans(records, running)
        marked = marked_processes(r.id for r in lost)
        for record in lost:
            pids = set(marked.get(record.id, []))
            if record.pid is not None and is_alive(record):  # also when its environment is unreadable
                pids.add(record.pid)
            left = await stop_processes(pids)
            if left:
                self.log.error(
                    "Workspace %s/%s (pids %s) is unknown to the hub and could not be stopped; its GPUs [%s] stay held",
                    record.user,
                    record.server,
                    left,
                    ",".join(record.gpus),
                )
                platform.gpus.claim(record.key, record.gpus)
                continue
            if pids:
                self.log.warning(
                    "Stopped workspace %s/%s (pids %s), left running by a hub that stopped while it"
                    " started or stopped; its GPUs [%s] are free",
                    record.user,
                    record.server,
                    sorted(pids),
                    ",".join(record.gpus),
                )
            if record.run is not None:
                platform.store.release_run(record.run, datetime.now(UTC), "orphaned")
            platform.workspaces.remove(record.id)

    def _take_gpus(self, holding: Holding) -> None:
        """Allocate ``holding``'s GPUs, all or nothing (:class:`NoFreeGpus` leaves none taken);
        called by admission inside the reservation's transaction."""
        indices: list[str] = []
        try:
            for gpu_type, count in holding.gpus.items():
                indices += self.platform.gpus.allocate(self.server_key, gpu_type, count)
        except NoFreeGpus:
            # admission allowed the server, so it held no GPU before: what it holds is this call's
            self.platform.gpus.release(self.server_key)
            raise
        self.gpu_indices, self._gpus_taken = indices, True

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
        if self._record is not None:  # only once the process is gone (or never started)
            self.platform.workspaces.remove(self._record.id)
            self._record = None
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
        """Restore after a hub restart: the pid, and re-hold the server's quota and the GPUs its
        process was started with, if that very process still runs (its record says so: a reused pid
        is told apart by its start time). Otherwise the pid is forgotten, so that the hub's check
        finds the server stopped and cleans it up."""
        super().load_state(state)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            # the hub restores every running server (this call) before its first await: the reconcile
            # then runs at once, so processes a crash left behind do not wait for the next spawn
            asyncio.ensure_future(self.platform.reconciled(self._reconcile_workspaces))
        saved = state.get(STATE_KEY)
        pid: int = self.pid  # type: ignore[has-type]
        if not saved or not pid:
            return
        workspaces = self.platform.workspaces
        record = workspaces.find(self.server_key, pid)
        if record is None and workspaces.first_use and process_start(pid) is not None:
            record = new_record(self.user.name, self.name or "", saved.get("gpus", []), saved.get("run"))
            record = workspaces.started(record, pid)
        if record is None:
            self.log.warning("%s: its process %s is gone; forgetting it", self._log_name, pid)
            self.pid = 0
            return
        conflicts = self.platform.gpus.claim(self.server_key, record.gpus)
        if conflicts:
            self.log.error("%s claims GPUs [%s] that another server holds", self._log_name, ",".join(conflicts))
        self.restore_held(saved)
        self.gpu_indices, self._record = list(record.gpus), record

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
