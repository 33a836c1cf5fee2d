"""What the hub's pages tell a person about their servers' stops (issue 14): a server about to be
stopped (preempted to give borrowed GPUs back, or its GPUs idle: when, why, and how to keep it)
and why recent ones stopped.

Pure functions of the ledger's runs (:meth:`quotas.store.Store.runs_of`); the hub's page template
shows them on every page, the home page included, through ``JupyterHub.template_vars``
(:func:`notices_var`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .quantity import format_duration, format_gpus
from .store import PREEMPTED, Run, Store

RECENT = timedelta(hours=24)  # how long a stop's reason stays on the person's pages
# why a server ended, for its person, by the ledger's end_reason (those a person did not choose)
ENDED_BECAUSE = {
    PREEMPTED: "its GPUs were borrowed and their owner needed them back",
    "culled-idle": "it was idle longer than its profile allows",
    "over-budget": "a GPU-hour budget it counts against was used up",
    "idle-gpu": (
        "its GPUs sat idle (under the platform's utilization threshold) longer than allowed; start it again"
        " when you need a GPU, or use a CPU-only profile"
    ),
}


@dataclass(frozen=True)
class Notice:
    level: str  # "warning" (about to happen) or "info" (happened)
    text: str


def _name(run: Run) -> str:
    return f"Your server {run.holding.server!r}" if run.holding.server else "Your default server"


def server_notices(runs: Sequence[Run], now: datetime) -> list[Notice]:
    """The notices of one person's ``runs`` (open ones and those ended lately), most urgent first."""
    notices = []
    for run in runs:
        if run.ended is None and run.stop_at is not None:
            left = max(timedelta(0), run.stop_at - now)
            notices.append(
                Notice(
                    "warning",
                    f"{_name(run)} will be stopped at {run.stop_at:%H:%M:%S} UTC (in"
                    f" {format_duration(timedelta(seconds=round(left.total_seconds())))}): {run.stop_note}."
                    + (
                        " Save your work now; you can start it again when GPUs are free."
                        if run.end_reason == PREEMPTED
                        else " Save your work now."
                    ),
                )
            )
        elif run.ended is None and run.holding.borrowed:
            gpus = format_gpus(run.holding.borrowed)
            notices.append(
                Notice(
                    "info",
                    f"{_name(run)} runs on GPUs borrowed from another tenant ({gpus}): when their owner needs"
                    " them back, it is stopped after a warning. Save your work often.",
                )
            )
    shown = set()
    for run in sorted(runs, key=lambda r: r.ended or now, reverse=True):
        key = (run.holding.user, run.holding.server)
        if run.ended is None or key in shown or now - run.ended > RECENT or run.end_reason not in ENDED_BECAUSE:
            continue
        shown.add(key)
        why = run.stop_note if run.end_reason == PREEMPTED and run.stop_note else ENDED_BECAUSE[run.end_reason]
        notices.append(Notice("info", f"{_name(run)} was stopped at {run.ended:%Y-%m-%d %H:%M} UTC: {why}."))
    return notices


def notices_var(db_url: str) -> Callable[[Any], list[Notice]]:
    """``JupyterHub.template_vars["aidc_notices"]``: called with the page's user (None when no one
    is logged in); reads the quotas store at ``db_url`` (opened at first use)."""
    stores: list[Store] = []

    def notices(user: Any) -> list[Notice]:
        if user is None or getattr(user, "kind", "user") != "user":
            return []
        if not stores:
            stores.append(Store(db_url))
        now = datetime.now(UTC)
        return server_notices(stores[0].runs_of(user.name, now - RECENT), now)

    return notices
