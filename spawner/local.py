"""``TenantLocalSpawner`` (entry point ``aidc-local``): the embedded mode's spawner.

JupyterHub's LocalProcessSpawner plus the tenant policy: the profile form from
the user's tenants, admission before anything starts, GPUs allocated exclusively
from this machine's inventory and passed as ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jupyterhub import orm
from jupyterhub.spawner import LocalProcessSpawner, SpawnException
from jupyterhub.utils import random_port
from traitlets import Float, Integer, TraitError, Unicode, default, validate

from i18n import Text, _, translate
from quotas.gpu_queue import may_wait
from quotas.model import Profile
from quotas.policy import Holding
from quotas.quantity import format_gpus
from quotas.store import QueueFull

from . import cgroups
from .accounts import Account, AccountError, account_name, check_reachable, ensure_account, ensure_home
from .gpus import NoFreeGpus
from .profiles import Choice
from .queue_keeper import QueueKeeper
from .start_failures import OWN_SETTINGS, STREAK, StartFailure, judge, own_settings_in
from .tenancy import TenantSpawnerMixin, counted_failure, options_form_html, queue_timeout_message, reason_of, refusal
from .workspaces import (
    MARKER,
    Record,
    is_alive,
    marked_processes,
    new_record,
    orphans,
    process_start,
    stop_processes,
    tell_terminals,
)

STATE_KEY = "aidc"


class TenantLocalSpawner(TenantSpawnerMixin, LocalProcessSpawner):
    """Start workspaces as local processes, inside their tenant's quota."""

    isolation = Unicode(
        help="""How people are kept apart on this machine: ``users`` or ``none``.

        ``users`` (the default when the hub runs as root): each person's workspaces run as their own
        Unix account (``account_template``, made on first use), in a home only they can open, each
        workspace in its own cgroup with its profile's CPU and memory and only the GPUs it holds
        (the devices cgroup), as The Littlest JupyterHub does. Needs root.

        ``none`` (the default when the hub runs as a normal user, e.g. a developer's laptop):
        every workspace runs as the hub's own Unix user with no limits; people can read each
        other's files and use every GPU. The hub says so in its log at every start. For example
        ``c.TenantLocalSpawner.isolation = "none"``.
        """,
    ).tag(config=True)

    @default("isolation")
    def _default_isolation(self) -> str:
        return "users" if os.geteuid() == 0 else "none"

    @validate("isolation")
    def _validate_isolation(self, proposal: Any) -> str:
        value = str(proposal["value"])
        if value not in ("users", "none"):
            message = f"TenantLocalSpawner.isolation is {value!r}; it must be 'users' or 'none'"  # i18n: operator
            raise TraitError(message)
        return value

    account_template = Unicode(
        "jupyter-{username}",
        help="""The Unix account of each person when ``isolation`` is ``users``; ``{username}`` is the
        hub name. Names that are not valid Unix names get a hash suffix (see ``spawner.accounts``).
        For example ``"aidc-{username}"``.
        """,
    ).tag(config=True)

    pids_limit = Integer(
        4096,
        help="""Most processes and threads one workspace may run at once when ``isolation`` is ``users``
        (its cgroup's ``pids.max``): a fork bomb stays inside it. For example ``8192``.
        """,
    ).tag(config=True)

    cgroup_parent = Unicode(
        "aidc-workspaces",
        help="""Folder, under the hub's own cgroup, of the workspaces' cgroups when ``isolation`` is
        ``users``. For example ``"workspaces"``.
        """,
    ).tag(config=True)

    home_dir_template = Unicode(
        help="""Home of each person's workspaces; ``{username}`` (the hub name) and ``{account}`` (the
        Unix account) are expanded.

        Defaults to ``/home/{account}`` when ``isolation`` is ``users`` (made mode 0700, owned by the
        account) and to ``<data_dir>/homes/{username}`` when it is ``none``. For example
        ``"/srv/homes/{username}"``.
        """,
    ).tag(config=True)

    @default("home_dir_template")
    def _default_home_dir_template(self) -> str:
        if self.isolation == "users":
            return "/home/{account}"
        return str(Path(self.data_dir) / "homes" / "{username}")

    @default("options_form")
    def _default_options_form(self) -> Any:
        return _labelled_options_form

    _announced = False

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        if not TenantLocalSpawner._announced:  # once per hub process, at its start or first login
            TenantLocalSpawner._announced = True
            if self.isolation == "none":
                self.log.warning("%s", NOT_ISOLATED)
            else:
                self.log.info(
                    "Workspaces are isolated: each person's run as their own Unix account (%s), confined by cgroups",
                    self.account_template.format(username="<name>"),
                )

    @default("cmd")
    def _default_cmd(self) -> list[str]:
        # the hub's own interpreter, so the workspace finds jupyterhub-singleuser without PATH tricks
        return [sys.executable, "-m", "jupyterhub.singleuser"]

    @property
    def home_dir(self) -> str:
        account = account_name(self.user.name, self.account_template)
        return self.home_dir_template.format(username=self.user.name, account=account)

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
            holding = await self._admit_or_wait()
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
            await self._isolate(self._record, indices, profile)
            await self._check_home()
            # the workspace's sshd (issue 17): a free loopback port, on the server's own address
            self.sshd_port, self.sshd_host = random_port(), _dial_address(self.ip)
            try:
                address = await super().start()
            except OSError as e:  # the interpreter or a folder of the platform is missing or unreadable
                raise self._start_failed(StartFailure("launch", self.name, detail=str(e))) from e  # the system's words
            self._record = self.platform.workspaces.started(self._record, self.proc.pid)
            await self._wait_listening(*address)
            STREAK.clear()
            return address
        except BaseException:
            if self.proc is not None and self.proc.poll() is None:  # never free the GPUs of a live process
                await super().stop(now=True)
            await self._remove_cgroup()
            self._release()
            raise

    _account: Account | None = None
    _cgroup: list[Path] = []

    # -- the GPU queue (issue 14): a GPU request that does not fit now waits instead of being refused

    queue_poll_interval = Float(
        1.0,
        help="""Seconds between two looks at the GPU queue (the hub decides for every waiting spawn at
        once, and at once when a server stops). For example ``0.5``.""",
    ).tag(config=True)

    queue_rejoin_grace = Float(
        300,
        help="""Seconds after the hub starts during which the places in the GPU queue of spawns that
        died with the previous hub process are kept, for their people to start again; then they are
        dropped so that they do not hold up the line. For example ``600``.""",
    ).tag(config=True)

    preemption_grace = Float(
        300,
        help="""Seconds between the warning to a server on borrowed GPUs that their owner needs them
        back (in the workspace's terminals and on the hub's home page) and its stop. For example ``600``.""",
    ).tag(config=True)

    queues_gpus = True  # every GPU spawn of the embedded mode may wait in its tenant's queue

    @property
    def _queue_status(self) -> str | None:
        """Where this spawn waits and why, as the keeper last decided (None: it does not wait)."""
        if self._queue_first is None:
            return None
        position = self.platform.keeper.position(self.server_key) if self.platform.keeper else None
        return position.reason if position is not None else self._queue_first

    _queue_first: str | None = None  # the refusal that sent the spawn to the queue (an i18n.Text)
    _borrowed_note: Text | None = None  # said once admitted on borrowed GPUs

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        """JupyterHub's progress events: while the spawn waits in the GPU queue, its place and why,
        each time they change; then, if it runs on borrowed GPUs, that it may be stopped for them. Said in
        the person's language."""
        locale = self.locale()
        last = None
        while True:
            status = self._queue_status or self._borrowed_note
            if status is not None and status != last:
                yield {"progress": 10 if self._queue_first else 50, "message": translate(status, locale)}
            last = status
            await asyncio.sleep(0.5)

    def _keeper(self) -> QueueKeeper:
        """The hub process's one :class:`~spawner.queue_keeper.QueueKeeper` (made at first use)."""
        platform = self.platform
        if platform.keeper is None:
            platform.keeper = QueueKeeper(
                platform,
                _stop_server,
                _notify_server,
                interval=self.queue_poll_interval,
                grace=timedelta(seconds=self.preemption_grace),
                rejoin_grace=self.queue_rejoin_grace,
                log=self.log,
            )
        return platform.keeper

    async def _admit_once(self, borrowed: dict[str, int] | None = None) -> Holding:
        try:
            return await self.admit_spawn(hold=self._take_gpus, borrowed=borrowed)
        except NoFreeGpus as e:
            raise refusal(reason_of(e), reason="gpus-busy", status=503, locale=self.locale()) from None

    async def _admit_or_wait(self) -> Holding:
        """Admit now, or wait in the tenant's GPU queue when the refusal is one that waiting can
        end (:func:`quotas.gpu_queue.may_wait`); every other refusal is raised at once. While others
        wait for the same GPU type, a request that may wait joins the line behind them (first in,
        first out) instead of taking GPUs that free up before they do."""
        choice = self.resolve_choice()  # what admission will decide on (resolved again there)
        if may_wait(choice.tenant, choice.profile, "gpus", choice.may_borrow):
            if await asyncio.to_thread(self.platform.store.anyone_waiting, choice.profile.gpu_type or ""):
                waiting = _("waiting for {gpus}", gpus=format_gpus(choice.profile.gpus))
                return await self._wait_in_queue(choice, waiting)
        try:
            holding = await self._admit_once()
        except SpawnException as e:
            asked = self.asked
            if asked is None or not may_wait(asked.tenant, asked.profile, _refusal_code(e), asked.may_borrow):
                raise
            return await self._wait_in_queue(asked, e.message or str(e))
        return self._said_if_borrowed(holding)

    async def _wait_in_queue(self, choice: Choice, first: str) -> Holding:
        """Wait in ``choice.tenant``'s GPU queue until the keeper admits this server (on the
        tenant's own GPUs or borrowed ones), then reserve as usual. Raises a refusal when the queue
        is full or ``queue.max_wait`` passes; a cancelled spawn leaves the queue."""
        store, key = self.platform.store, self.server_key
        tenant, profile = choice.tenant, choice.profile
        gpu_type = profile.gpu_type or ""
        try:
            await asyncio.to_thread(
                store.enqueue, tenant, key[0], key[1], profile, choice.may_borrow, datetime.now(UTC)
            )
        except QueueFull as e:
            full = _("{waiting} {full}", waiting=first, full=reason_of(e))
            raise refusal(full, reason="queue-full", status=503, locale=self.locale()) from None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + tenant.queue.max_wait.total_seconds()
        self.log.info("%s waits in tenant %s's GPU queue: %s", self._log_name, tenant.id, first)
        self._queue_first = first
        keeper = self._keeper()
        try:
            while True:
                try:
                    admitted = await asyncio.wait_for(keeper.wait(key), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    raise refusal(
                        queue_timeout_message(tenant, self._queue_status),
                        reason="queue-timeout",
                        status=503,
                        locale=self.locale(),
                    ) from None
                try:
                    holding = await self._admit_once({gpu_type: admitted.borrowed} if admitted.borrowed else None)
                except SpawnException as e:
                    if not may_wait(tenant, profile, _refusal_code(e), choice.may_borrow):
                        raise
                    continue  # another spawn took the GPUs first: keep the place, wait on
                self.log.info("%s leaves the GPU queue: admitted", self._log_name)
                return self._said_if_borrowed(holding)
        finally:
            self._queue_first = None
            await asyncio.to_thread(store.dequeue, key)
            keeper.kick()  # the line moved

    def _said_if_borrowed(self, holding: Holding) -> Holding:
        if holding.borrowed:
            gpus = format_gpus(holding.borrowed)
            self._borrowed_note = _(
                "Starting on borrowed GPUs ({gpus}) of another tenant of {tenant}'s cohort: when their owner needs"
                " them back, this server is stopped after a warning. Save your work often.",
                gpus=gpus,
                tenant=holding.tenant,
            )
            self.log.info("%s runs on borrowed GPUs: %s", self._log_name, gpus)
        return holding

    async def _isolate(self, record: Record, indices: list[str], profile: Profile) -> None:
        """With ``isolation = "users"``: the person's Unix account (made on first use) and the
        workspace's cgroup (its profile's CPU and memory, only the GPUs ``indices``), both before the
        process exists. Both failures are the platform's (counted toward the hub's exit)."""
        if self.isolation != "users":
            return
        if os.geteuid() != 0:
            raise self._start_failed(
                StartFailure(
                    "launch",
                    self.name,
                    detail=_(
                        "TenantLocalSpawner.isolation is 'users', which needs the hub to run as root (or set it to"
                        " 'none' on a one-person machine)"
                    ),
                )
            )
        try:
            self._account = await asyncio.to_thread(
                ensure_account, self.user.name, self.home_dir, self.account_template
            )
            if not self._account.home_moved:
                self.log.warning(
                    "%s: the home of %s in /etc/passwd stays %s while the account runs processes (wanted: %s)",
                    self._log_name,
                    self._account.name,
                    self._account.home,
                    self.home_dir,
                )
            # the workspace's interpreter and its standard library must be open to the account
            for folder in {
                Path(os.path.realpath(shutil.which(self.cmd[0]) or self.cmd[0])).parent,
                Path(sys.base_prefix),
            }:
                check_reachable(self._account, folder)
        except AccountError as e:
            raise self._start_failed(StartFailure("launch", self.name, detail=reason_of(e))) from None
        devices = cgroups.allowed_devices(self.platform.gpus.minors(indices), _proc_devices())
        limits = cgroups.Limits(
            cpu=float(profile.cpu), memory=int(profile.memory), devices=tuple(devices), pids=self.pids_limit
        )
        try:
            self._cgroup = await asyncio.to_thread(workspace_cgroups(self.cgroup_parent).create, record.id, limits)
        except cgroups.CgroupError as e:
            raise self._start_failed(StartFailure("launch", self.name, detail=reason_of(e))) from None

    async def _remove_cgroup(self) -> None:
        """Kill what is left in the workspace's cgroup (programs it started in the background) and
        remove it; the GPUs stay held (and an error logged) while anything survives."""
        if not self._cgroup:
            return
        left = await asyncio.to_thread(cgroups.remove, self._cgroup)
        if left:
            self.log.error("%s: processes %s survived SIGKILL in its cgroup; its GPUs stay held", self._log_name, left)
        else:
            self._cgroup = []

    async def _check_home(self) -> None:
        """Make the home here, where a home that is not a usable directory (the person's doing: a
        file, their own ``chmod``) can be told apart from a platform fault; ``preexec_fn`` would only
        say that it failed."""
        if "{username}" in self.home_dir_template and (
            "/" in self.user.name or self.user.name in (".", "..") or "\0" in self.user.name
        ):
            detail = _(
                "the hub name {name} cannot name a home folder ({template})",
                name=repr(self.user.name),
                template=self.home_dir_template,
            )
            raise self._start_failed(StartFailure("launch", self.name, detail=detail))
        home = Path(self.home_dir)
        account = self._account
        try:
            if account is not None:
                await asyncio.to_thread(ensure_home, account, self.home_dir)
            else:
                home.mkdir(mode=0o700, parents=True, exist_ok=True)
        except AccountError as e:
            raise self._start_failed(StartFailure("launch", self.name, detail=reason_of(e))) from None
        except OSError as e:
            if not (home.is_symlink() or home.exists()):
                detail = _("cannot make the home {home}: {error}", home=str(home), error=e.strerror)
                failure = StartFailure("launch", self.name, detail=detail)
                raise self._start_failed(failure) from None
        if home.is_symlink() or not home.is_dir():  # there, but not a directory
            raise self._start_failed(StartFailure("home", self.name, detail=_("it is not a directory")))
        st = home.stat()
        if account is None:
            usable = os.access(home, os.R_OK | os.W_OK | os.X_OK)
        elif st.st_uid != account.uid:
            detail = _(
                "the home {home} belongs to uid {owner}, not to {account} (uid {uid}): a platform admin can give it"
                " over with chown -R {account}: {home}",
                home=str(home),
                owner=st.st_uid,
                account=account.name,
                uid=account.uid,
            )
            raise self._start_failed(StartFailure("launch", self.name, detail=detail))
        else:
            usable = st.st_mode & 0o700 == 0o700
        if not usable:
            raise self._start_failed(StartFailure("home", self.name, detail=_("the server may not read and write it")))

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
                _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=1)
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
        home = Path(self.home_dir)
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
        locale = self.locale()
        if verdict.own:
            return refusal(verdict.message, reason="own-server", status=500, locale=locale)
        return counted_failure(self.user.name, verdict.message, self.log, locale)

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
        hierarchy = None
        if self.isolation == "users":
            try:
                hierarchy = workspace_cgroups(self.cgroup_parent)
            except cgroups.CgroupError as e:
                self.log.error("Cannot look for orphaned workspaces' cgroups: %s", e)
        for record in lost:
            pids = set(marked.get(record.id, []))
            if record.pid is not None and is_alive(record):  # also when its environment is unreadable
                pids.add(record.pid)
            folders = hierarchy.existing(record.id) if hierarchy is not None else []
            pids |= cgroups.pids(folders)  # everything it started, even with another environment
            left = await stop_processes(pids)
            if not left and folders:
                left = await asyncio.to_thread(cgroups.remove, folders)
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
            await self._remove_cgroup()  # what it started in the background goes with it
        finally:
            self._release()
            if self.platform.keeper is not None:
                self.platform.keeper.kick()  # GPUs are free: someone waiting may start

    async def notify(self, message: str) -> None:
        """Tell the people in this workspace ``message``: on each terminal its processes have (the
        JupyterLab terminals, SSH sessions), as ``wall`` does."""
        if self._record is not None:
            pids = cgroups.pids(self._cgroup) if self._cgroup else set()
            told = await asyncio.to_thread(tell_terminals, self._record.id, message, pids)
            self.log.info("%s: told %d terminal(s): %s", self._log_name, told, message)

    def clear_state(self) -> None:
        """Forget the stopped server; also the path JupyterHub takes when a workspace died
        on its own (poll saw it gone, so ``stop`` is not called): give back GPUs and quota."""
        super().clear_state()
        self.sshd_host, self.sshd_port = "", 0
        self._release()

    def _release(self) -> None:
        if self._cgroup:  # the workspace died on its own (clear_state): its background programs go now
            left = cgroups.remove(self._cgroup, timeout=2)
            if left:
                # its GPUs stay held and its record stays, for the next reconcile to try again
                self.log.error("%s: processes %s survive in its cgroup; its GPUs stay held", self._log_name, left)
                self.release_reservation()
                return
            self._cgroup = []
        freed = self.platform.gpus.release(self.server_key)
        self.release_reservation()
        if self._record is not None:  # only once the process is gone (or never started)
            self.platform.workspaces.remove(self._record.id)
            self._record = None
        if freed:
            self.log.info("Released GPUs [%s] of %s", ",".join(freed), self._log_name)
        self.gpu_indices = []
        self._borrowed_note = None

    def get_state(self) -> dict[str, Any]:
        """LocalProcessSpawner's pid plus what this server holds, so a restarted hub can re-hold it."""
        state = super().get_state()
        held = self.held_state()
        if held is not None:
            state[STATE_KEY] = {**held, "gpus": self.gpu_indices}
        return self.with_sshd(state)

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore after a hub restart: the pid, and re-hold the server's quota and the GPUs its
        process was started with, if that very process still runs (its record says so: a reused pid
        is told apart by its start time). Otherwise the pid is forgotten, so that the hub's check
        finds the server stopped and cleans it up."""
        super().load_state(state)
        self.load_sshd(state)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            # the hub restores every running server (this call) before its first await: the reconcile
            # then runs at once, so processes a crash left behind do not wait for the next spawn
            asyncio.ensure_future(self.platform.reconciled(self._reconcile_workspaces))
            self._keeper().kick()  # preemptions an earlier hub process began go on
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
        if self.isolation == "users":
            try:
                self._cgroup = workspace_cgroups(self.cgroup_parent).existing(record.id)
            except cgroups.CgroupError as e:  # the host lost its cgroups: its spawns say so
                self.log.error("%s: %s", self._log_name, e)

    def get_env(self) -> dict[str, str]:
        """LocalProcessSpawner's environment plus this server's SSH keys and port (:meth:`ssh_env`)."""
        env: dict[str, str] = super().get_env()
        env.update(self.ssh_env())
        return env

    def get_args(self) -> list[str]:
        args = [*super().get_args(), *self.ssh_args()]
        if self.isolation == "none" and os.geteuid() == 0:
            # a hub run by root without isolation runs workspaces as root too
            args.append("--ServerApp.allow_root=True")
        return args

    def make_preexec_fn(self, name: str) -> Any:
        """Run in the child between fork and exec: enter the workspace's cgroup (while still root),
        become the person's account, start in the home."""
        home, account, folders = self.home_dir, self._account, list(self._cgroup)
        if account is None:

            def preexec() -> None:
                os.makedirs(home, 0o700, exist_ok=True)
                os.chdir(home)

            return preexec
        groups = os.getgrouplist(account.name, account.gid)

        def preexec_isolated() -> None:
            cgroups.enter(folders)
            os.setgid(account.gid)
            os.setgroups(groups)
            os.setuid(account.uid)
            os.chdir(home)

        return preexec_isolated

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        account = self._account
        env["USER"] = env["LOGNAME"] = account.name if account is not None else self.user.name
        env["HOME"] = self.home_dir
        env["SHELL"] = "/bin/bash"
        return env

    async def move_certs(self, paths: dict[str, str]) -> dict[str, str]:
        # internal_ssl is not offered in the embedded mode: nothing to hand over
        return paths


NOT_ISOLATED = (
    "TenantLocalSpawner.isolation is 'none': every workspace runs as the hub's own Unix user with no"  # i18n: log
    " CPU, memory or GPU limits; people can read each other's files and use every GPU of this machine."
    " Fit for one developer's machine only; run the hub as root (isolation 'users') to share it."
)


def _labelled_options_form(spawner: TenantLocalSpawner) -> str:
    """The spawn form, which says so on a hub that does not isolate people."""
    form = options_form_html(spawner)
    if spawner.isolation != "none":
        return form
    # markup of the catalogs' own (no value of anyone's in it): not escaped
    notice = _(
        "<strong>Developer mode:</strong> this hub does not isolate people. Everyone's servers run as one Unix"
        " account, so others on this hub can read your files and use any GPU. Do not keep anything private here."
    ).say(spawner.locale())
    return f'<div class="alert alert-danger" id="aidc-not-isolated">{notice}</div>{form}'  # i18n: markup


def _hub_spawner(key: tuple[str, str]) -> tuple[Any, Any] | None:
    """The hub's (user, spawner) of server ``key`` in this process, if it is active."""
    from jupyterhub.app import JupyterHub

    app = JupyterHub.instance()
    try:
        user = app.users[key[0]]
    except KeyError:
        return None
    spawner = user.spawners.get(key[1])  # dict.get: never makes a spawner
    return None if spawner is None or not spawner.active else (user, spawner)


async def _stop_server(key: tuple[str, str]) -> None:
    """Stop server ``key`` the way the hub stops one whose process ended (its route, then the
    spawner, the hub's records and the ledger run, which keeps its ``preempted`` reason)."""
    from jupyterhub.app import JupyterHub

    found = _hub_spawner(key)
    if found is None:
        return
    user, spawner = found
    if spawner.pending:  # starting or stopping already: the next look tries again
        raise RuntimeError(f"{spawner._log_name} is {spawner.pending}; it is stopped once that ends")  # i18n: log
    await JupyterHub.instance().proxy.delete_user(user, key[1])
    await user.stop(key[1])


async def _notify_server(key: tuple[str, str], message: str) -> None:
    found = _hub_spawner(key)
    if found is not None and isinstance(found[1], TenantLocalSpawner):
        await found[1].notify(message)


def _refusal_code(e: SpawnException) -> str:
    """The admission code of a refusal raised by :meth:`admit_spawn` (``quota-gpus`` -> ``gpus``)."""
    return str(getattr(e, "reason", "") or "").removeprefix("quota-")


def _proc_devices() -> str:
    return Path("/proc/devices").read_text()


@functools.cache
def workspace_cgroups(parent: str) -> cgroups.Hierarchy:
    """This host's cgroup hierarchy for workspaces under ``parent`` (found once per hub process)."""
    return cgroups.Hierarchy(parent=parent)


def _dial_address(ip: str) -> str:
    """Where the gateway reaches a server of this machine that listens on ``ip`` (its sshd listens
    on the same address): the loopback address for every-address binds, else ``ip`` itself."""
    ip = ip.strip("[]")
    if ip in ("", "*", "0.0.0.0", "localhost"):
        return "127.0.0.1"
    return "::1" if ip == "::" else ip
