"""The embedded mode's GPU queue keeper: one loop per hub process decides for everyone (issue 14).

Every ``interval`` seconds, for each GPU type someone waits for, the keeper asks
:func:`quotas.gpu_queue.decide` who starts (on their tenant's own GPUs or on GPUs borrowed from
its cohort), where everyone else waits and why, and which borrowing servers must give their GPUs
back. It then

- writes each waiting request's place to the quotas store (what the REST API, ``aidc`` and the
  quotas page show) and hands the waiting spawn its place (the spawn page's progress);
- wakes the spawns it admits, which then reserve as usual (a spawn that loses a race for the
  GPUs keeps its place and waits on);
- preempts: marks the borrower's run ``preempted`` with the time it stops and why
  (:meth:`quotas.store.Store.mark_preempted`), warns its person in the workspace (``notify``) and
  on the hub's home page (which reads the mark), and after ``grace`` stops the server
  (``stop``), unless no one of the reclaiming tenant waits any more: then the preemption is called
  off and its person told so.

Marks live in the store, so a preemption survives a restart of the hub: the first look after the
restart finds the marked runs and stops them when their time comes. The loop runs while anyone
waits or any preemption is pending, and is started again by :meth:`QueueKeeper.kick`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from i18n import DEFAULT_LOCALE, Duration, Moment, _, translate
from quotas.gpu_queue import Admission, Plan, Position, Running, Waiting, decide, shares_for
from quotas.quantity import format_duration
from quotas.store import PREEMPTED, Queued, Run

from .platform import Platform

Key = tuple[str, str]  # (user, server name)
Stop = Callable[[Key], Awaitable[None]]
Notify = Callable[[Key, str], Awaitable[None]]


@dataclass
class _Waiter:
    admitted: asyncio.Future[Admission]
    position: Position | None = None


@dataclass
class _Preemption:
    run: Run
    by_tenant: str | None  # None: found marked after a restart (who asked is not known any more)
    task: asyncio.Task[None] | None = field(default=None, repr=False)  # held: the loop keeps no reference


class QueueKeeper:
    """The hub process's one decider of the GPU queue (see the module's doc)."""

    def __init__(
        self,
        platform: Platform,
        stop: Stop,
        notify: Notify,
        *,
        interval: float = 1.0,
        grace: timedelta = timedelta(minutes=5),
        rejoin_grace: float = 300.0,
        log: logging.Logger | None = None,
    ):
        self.platform, self.stop, self.notify = platform, stop, notify
        self.interval, self.grace, self.rejoin_grace = interval, grace, rejoin_grace
        self.log = log or logging.getLogger("aidc.queue")
        self._born = time.monotonic()
        self.waiters: dict[Key, _Waiter] = {}
        self.preemptions: dict[Key, _Preemption] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # -- what spawns call ------------------------------------------------------------------------

    async def wait(self, key: Key) -> Admission:
        """Wait until the keeper admits ``key`` (queued in the store already); its place meanwhile is
        :meth:`position`. Cancelling (the person cancels, ``max_wait`` passes) leaves the line here;
        the caller takes the request out of the store."""
        waiter = _Waiter(asyncio.get_running_loop().create_future())
        self.waiters[key] = waiter
        self.kick()
        try:
            return await waiter.admitted
        finally:
            if self.waiters.get(key) is waiter:
                del self.waiters[key]

    def position(self, key: Key) -> Position | None:
        waiter = self.waiters.get(key)
        return None if waiter is None else waiter.position

    def kick(self) -> None:
        """Look again now (a server stopped, someone joined the line), starting the loop if it ended."""
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._loop())

    # -- the loop --------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                busy = await self.look()
            except Exception:
                self.log.exception("The GPU queue keeper's look failed; it looks again in %ss", self.interval)
                busy = True
            if not busy:
                return
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except TimeoutError:
                pass

    async def look(self) -> bool:
        """One look at every GPU type (see the module's doc). True while anyone waits or a preemption
        is pending (the loop goes on)."""
        store = self.platform.store
        queued, runs = await asyncio.gather(asyncio.to_thread(store.queued), asyncio.to_thread(store.open_runs))
        queued = await self._drop_abandoned(queued)
        for run in runs:  # marked by an earlier hub process, or by this one
            if run.end_reason == PREEMPTED and run.stop_at is not None:
                self._follow(run, None)
        types = {q.gpu_type for q in queued if q.gpu_type}
        places: dict[Key, tuple[int, int, str]] = {}
        for gpu_type in sorted(types):
            plan = self.plan(gpu_type, queued, runs)
            for key, position in plan.waiting.items():
                places[key] = (position.position, position.length, position.reason)
                if (waiter := self.waiters.get(key)) is not None:
                    waiter.position = position
            for admission in plan.admit:
                waiter = self.waiters.get(admission.key)
                if waiter is not None and not waiter.admitted.done():
                    waiter.admitted.set_result(admission)
            if plan.preempt:
                await self._preempt(plan, runs, gpu_type)
        await asyncio.to_thread(store.place, places)
        return bool(self.waiters or queued or self.preemptions)

    def plan(self, gpu_type: str, queued: list[Queued], runs: list[Run]) -> Plan:
        """:func:`quotas.gpu_queue.decide` for ``gpu_type`` on this machine: the tenants' shares, the
        servers holding that type (being preempted: about to be free) and everyone waiting for it."""
        platform = self.platform
        running = [
            Running(
                (r.holding.user, r.holding.server),
                r.holding.tenant,
                r.holding.gpus.get(gpu_type, 0),
                r.started.timestamp(),
                stopping=r.end_reason == PREEMPTED,
            )
            for r in runs
            if r.holding.gpus.get(gpu_type, 0)
        ]
        waiting = [Waiting(q.key, q.tenant, q.gpu_count, q.id, q.may_borrow) for q in queued if q.gpu_type == gpu_type]
        return decide(
            shares_for(platform.config, gpu_type), running, waiting, platform.gpus.capacity(gpu_type), gpu_type
        )

    async def _drop_abandoned(self, queued: list[Queued]) -> list[Queued]:
        """Requests whose spawn died with an earlier hub keep their places for ``rejoin_grace`` after
        this hub started (for their people to start again), then leave the line."""
        if time.monotonic() - self._born <= self.rejoin_grace:
            return queued
        kept = []
        for q in queued:
            if q.key in self.waiters:
                kept.append(q)
            else:
                await asyncio.to_thread(self.platform.store.dequeue, q.key)
        return kept

    # -- preemption ------------------------------------------------------------------------------

    async def _preempt(self, plan: Plan, runs: list[Run], gpu_type: str) -> None:
        of = {(r.holding.user, r.holding.server): r for r in runs}
        now = datetime.now(UTC)
        stop_at = now + self.grace
        for key in plan.preempt:
            run = of.get(key)
            if run is None or key in self.preemptions:
                continue
            by_tenant = plan.reclaimed_by[key]
            # for its person and their tenant's admins: not which other tenant reclaims (the log says)
            note = _(
                "it runs on {gpu} GPUs that tenant {tenant} borrowed from another tenant of its cohort, which needs"
                " them back",
                gpu=gpu_type,
                tenant=run.holding.tenant,
            )
            if not await asyncio.to_thread(self.platform.store.mark_preempted, key, stop_at, note):
                continue  # stopped meanwhile, or marked by the culler
            self.log.info(
                "Preempting %s in %s for tenant %s: %s", _label(key), format_duration(self.grace), by_tenant, note
            )
            marked = Run(run.id, run.holding, run.started, None, PREEMPTED, stop_at, note)
            self._follow(marked, by_tenant)

    def _follow(self, run: Run, by_tenant: str | None) -> None:
        key = (run.holding.user, run.holding.server)
        if key in self.preemptions:
            return
        preemption = _Preemption(run, by_tenant)
        self.preemptions[key] = preemption
        preemption.task = asyncio.ensure_future(self._carry_out(key, preemption))

    async def _carry_out(self, key: Key, preemption: _Preemption) -> None:
        run = preemption.run
        assert run.stop_at is not None
        try:
            left = (run.stop_at - datetime.now(UTC)).total_seconds()
            if left > 0:
                await self._tell(
                    key,
                    _(
                        "AIDC Hub: this server ({server}) will be stopped at {when}, in {left}: {why}. Save your work"
                        " now; you can start it again when GPUs are free.",
                        server=_label(key),
                        when=Moment(run.stop_at, "time"),
                        left=Duration(timedelta(seconds=round(left))),
                        why=run.stop_note,
                    ),
                )
                await asyncio.sleep(left)
            store = self.platform.store
            by = preemption.by_tenant
            if by is not None and not any(q.tenant == by for q in await asyncio.to_thread(store.queued)):
                if await asyncio.to_thread(store.call_off_preemption, key):
                    self.log.info("Preemption of %s called off: no one of tenant %s waits any more", _label(key), by)
                    await self._tell(
                        key, _("AIDC Hub: this server ({server}) will not be stopped after all.", server=_label(key))
                    )
                return
            self.log.info("Stopping %s (preempted): %s", _label(key), run.stop_note)
            await self.stop(key)
        except Exception:
            self.log.exception("The preemption of %s failed", _label(key))
        finally:
            self.preemptions.pop(key, None)
            self.kick()

    async def _tell(self, key: Key, message: str) -> None:
        """Tell the people in server ``key``'s workspace ``message``, in its person's saved language."""
        try:
            locale = await asyncio.to_thread(self.platform.store.locale_of, key[0])
            await self.notify(key, translate(message, locale or DEFAULT_LOCALE))
        except Exception:
            self.log.exception("Could not warn %s in its workspace", _label(key))


def _label(key: Key) -> str:
    return f"{key[0]}/{key[1]}" if key[1] else key[0]
