"""``api/tenants/{tenant}/usage``: GPU- and CPU-hours from the ledger, as JSON or CSV.

Query: ``from`` and ``to`` (``YYYY-MM-DD``, UTC days; ``to`` is exclusive; default this month),
``by`` (``user``, ``group`` or ``tenant``), ``daily=1`` (one row per day), ``user=<name>`` (only
that person's row; ``by=user``), ``format=csv`` or ``Accept: text/csv``. Admins see everybody;
members see their own hours only.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from i18n import _, ngettext

from ..quantity import month_period, report_hours, report_ratio
from ..store import UsageRow
from .api_tenants import TENANT
from .base import ApiError, BaseHandler

MAX_DAYS = 366
BY = ("user", "group", "tenant")
TRUE, FALSE = ("1", "true", "yes"), ("", "0", "false", "no")
DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass(frozen=True)
class UsageQuery:
    start: date
    end: date  # exclusive
    by: str
    daily: bool
    user: str
    csv: bool


def parse_query(args: dict[str, str], accept: str, now: datetime) -> UsageQuery:
    """The report that the query string asks for; 400 with every reason when it is not one."""
    problems: list[str] = []
    month_start, month_end, _period = month_period(now)
    start = _date(args, "from", month_start.date(), problems)
    end = _date(args, "to", month_end.date(), problems)
    if start is not None and end is not None:
        if start >= end:
            problems.append(
                _(
                    "from ({start}) must be before to ({end}); to is exclusive (the day after the last)",
                    start=start.isoformat(),
                    end=end.isoformat(),
                )
            )
        elif (end - start).days > MAX_DAYS:
            problems.append(
                _(
                    "from {start} to {end} is {days} days; a report covers at most {most} days"
                    " (ask for one year at a time)",
                    start=start.isoformat(),
                    end=end.isoformat(),
                    days=(end - start).days,
                    most=MAX_DAYS,
                )
            )
    by = args.get("by", "user")
    if by not in BY:
        problems.append(_("by must be one of {choices}, not {given}", choices=", ".join(BY), given=repr(by)))
    daily_text = args.get("daily", "").lower()
    if daily_text not in TRUE + FALSE:
        problems.append(_("daily must be 1 or 0, not {given}", given=repr(args["daily"])))
    user = args.get("user", "")
    if user and by != "user":
        problems.append(_("user={user} picks one person's row of a by=user report, not of by={by}", user=user, by=by))
    fmt = args.get("format", "")
    if fmt not in ("", "json", "csv"):
        problems.append(_("format must be json or csv, not {given}", given=repr(fmt)))
    unknown = sorted(set(args) - {"from", "to", "by", "daily", "user", "format"})
    if unknown:
        names = ", ".join(unknown)
        problems.append(ngettext("unknown parameter {names}", "unknown parameters {names}", len(unknown), names=names))
    if problems or start is None or end is None:
        reasons = _semicolons(problems)
        raise ApiError(400, _("This usage report cannot be made: {reasons}.", reasons=reasons), problems)
    wants_csv = fmt == "csv" or (fmt == "" and "text/csv" in accept)
    return UsageQuery(start, end, by, daily_text in TRUE, user, wants_csv)


def _date(args: dict[str, str], name: str, default: date, problems: list[str]) -> date | None:
    if name not in args:
        return default
    text = args[name]
    if DATE.fullmatch(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    problems.append(_("{name} must be a date written YYYY-MM-DD (UTC), not {given}", name=name, given=repr(text)))
    return None


def _semicolons(problems: Sequence[str]) -> str:
    """Problems one after the other, separated by semicolons (each said in the reader's language)."""
    if len(problems) == 1:
        return problems[0]
    return _("{first}; {rest}", first=problems[0], rest=_semicolons(problems[1:]))


def row_json(row: UsageRow) -> dict[str, Any]:
    return {
        "subject": row.subject,
        "day": row.day,
        "gpu_hours": report_hours(row.gpu_hours),
        "borrowed_gpu_hours": report_hours(row.borrowed_gpu_hours),
        "gpu_used_hours": report_hours(row.gpu_used_hours),
        "efficiency": report_ratio(row.gpu_used_hours, row.gpu_hours),
        "cpu_hours": report_hours(row.cpu_hours),
        "runs": row.runs,
    }


def usage_csv(rows: Sequence[UsageRow], by: str, daily: bool) -> str:
    """A header row, then one row per (day, subject) or subject: hours to 1/10,000."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*(["day"] if daily else []), by, "gpu_hours", "cpu_hours", "runs", "gpu_used_hours"])
    for row in rows:
        day = [row.day.isoformat() if row.day else ""] if daily else []
        writer.writerow(
            [
                *day,
                row.subject,
                report_hours(row.gpu_hours),
                report_hours(row.cpu_hours),
                row.runs,
                report_hours(row.gpu_used_hours),
            ]
        )
    return out.getvalue()


class UsageHandler(BaseHandler):
    async def get(self, tenant: str) -> None:
        found = self.tenant_to_read(tenant)
        caller = self.caller
        args = {k: self.get_query_argument(k) for k in self.request.query_arguments}
        query = parse_query(args, self.request.headers.get("Accept", ""), self.now())
        user = query.user
        if not caller.can_admin_tenant(found.id):
            if query.by != "user":
                raise ApiError(
                    403,
                    _(
                        "Group and tenant totals of tenant {tenant} are for its admins ({admins});"
                        " you ({name}) can see your own hours with by=user.",
                        tenant=found.id,
                        admins=found.admin_contact(),
                        name=caller.name,
                    ),
                )
            if user and user != caller.name:
                raise ApiError(
                    403,
                    _(
                        "You ({name}) can see your own usage in tenant {tenant}, not {user}'s."
                        " Ask a tenant admin ({admins}).",
                        name=caller.name,
                        tenant=found.id,
                        user=user,
                        admins=found.admin_contact(),
                    ),
                )
            user = caller.name
        rows = await self.blocking(
            self.store.usage_report, found.id, query.start, query.end, self.now(), query.by, query.daily
        )
        if user:
            rows = [r for r in rows if r.subject == user]
        if query.csv:
            self.set_header("Content-Type", "text/csv; charset=UTF-8")  # i18n: HTTP header values
            self.set_header(
                "Content-Disposition",
                f"attachment; filename=usage-{found.id}-{query.start}-{query.end}.csv",  # i18n: HTTP header values
            )
            self.set_header("Cache-Control", "no-store")
            self.finish(usage_csv(rows, query.by, query.daily))
            return
        total_gpu = sum((r.gpu_hours for r in rows), start=Decimal(0))
        total_borrowed = sum((r.borrowed_gpu_hours for r in rows), start=Decimal(0))
        total_used = sum((r.gpu_used_hours for r in rows), start=Decimal(0))
        total_cpu = sum((r.cpu_hours for r in rows), start=Decimal(0))
        self.write_json(
            {
                "tenant": found.id,
                "from": query.start,
                "to": query.end,
                "by": query.by,
                "daily": query.daily,
                "rows": [row_json(r) for r in rows],
                "total": {
                    "gpu_hours": report_hours(total_gpu),
                    "borrowed_gpu_hours": report_hours(total_borrowed),
                    "gpu_used_hours": report_hours(total_used),
                    "efficiency": report_ratio(total_used, total_gpu),
                    "cpu_hours": report_hours(total_cpu),
                    "runs": sum(r.runs for r in rows),
                },
            }
        )


default_handlers = [(rf"api/tenants/{TENANT}/usage", UsageHandler)]  # i18n: a route
