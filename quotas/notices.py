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

from i18n import N_, Duration, Moment, Text, _

from .quantity import format_gpus
from .store import PREEMPTED, Run, Store

RECENT = timedelta(hours=24)  # how long a stop's reason stays on the person's pages
# why a server ended, for its person, by the ledger's end_reason (those a person did not choose)
ENDED_BECAUSE = {
    PREEMPTED: N_("its GPUs were borrowed and their owner needed them back"),
    "culled-idle": N_("it was idle longer than its profile allows"),
    "over-budget": N_("a GPU-hour budget it counts against was used up"),
    "idle-gpu": N_(
        "its GPUs sat idle (under the platform's utilization threshold) longer than allowed; start it again"
        " when you need a GPU, or use a CPU-only profile"
    ),
}


@dataclass(frozen=True)
class Notice:
    level: str  # "warning" (about to happen) or "info" (happened)
    text: str  # an i18n.Text: a page says it in its reader's language (``{{ notice.text|say }}``)


def _name(run: Run) -> Text:
    if run.holding.server:
        return _("Your server {server}", server=repr(run.holding.server))
    return _("Your default server")


def server_notices(runs: Sequence[Run], now: datetime) -> list[Notice]:
    """The notices of one person's ``runs`` (open ones and those ended lately), most urgent first."""
    notices = []
    for run in runs:
        if run.ended is None and run.stop_at is not None:
            left = max(timedelta(0), run.stop_at - now)
            values = {
                "server": _name(run),
                "when": Moment(run.stop_at, "time"),
                "left": Duration(timedelta(seconds=round(left.total_seconds()))),
                "why": run.stop_note,
            }
            if run.end_reason == PREEMPTED:
                text = _(
                    "{server} will be stopped at {when} (in {left}): {why}. Save your work now; you can start it"
                    " again when GPUs are free.",
                    **values,
                )
            else:
                text = _("{server} will be stopped at {when} (in {left}): {why}. Save your work now.", **values)
            notices.append(Notice("warning", text))
        elif run.ended is None and run.holding.borrowed:
            notices.append(
                Notice(
                    "info",
                    _(
                        "{server} runs on GPUs borrowed from another tenant ({gpus}): when their owner needs them"
                        " back, it is stopped after a warning. Save your work often.",
                        server=_name(run),
                        gpus=format_gpus(run.holding.borrowed),
                    ),
                )
            )
    shown = set()
    for run in sorted(runs, key=lambda r: r.ended or now, reverse=True):
        key = (run.holding.user, run.holding.server)
        if run.ended is None or key in shown or now - run.ended > RECENT or run.end_reason not in ENDED_BECAUSE:
            continue
        shown.add(key)
        why = run.stop_note if run.end_reason == PREEMPTED and run.stop_note else _(ENDED_BECAUSE[run.end_reason])
        when = f"{run.ended:%Y-%m-%d %H:%M}"
        notices.append(
            Notice("info", _("{server} was stopped at {when} UTC: {why}.", server=_name(run), when=when, why=why))
        )
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
