"""The quotas store under load: concurrent reservations, and usage reports over a year of ledger.

Both on SQLite (a file in WAL mode, as the embedded hub uses it) and on a real PostgreSQL 15
server that this script starts itself (``tests/bed/postgres.py``), in the same run:

1. Reservations. One client alone (the cost without contention), then 50 clients (5 processes x
   10 threads, and 1 process x 50 threads as inside one hub), each process with its own
   ``Store(url, migrate=False)``, reserve servers in 50 generated tenants and release them again,
   for a fixed time. Reported: reserve calls per second, the p50/p99/max latency of ``reserve``
   and ``release``, CPU per call, and what PostgreSQL's backends wait for. Then the ledger is checked: every granted
   reservation is exactly one run and every refusal one count, and at no instant did a tenant's
   open runs exceed its ceiling or a delegated limit. Target: p99 of reserve < 20 ms on PostgreSQL.
2. Usage reports. A tenant of 1,000 people with a year (2026) of ledger, loaded in bulk as the
   rows ``Store`` writes (runs, and roll-ups computed with the store's own ``_split``; a sample is
   replayed through ``Store.record_run`` and must give identical rows). Timed: the year's report
   per person, one month per person and day, ``Store.usage`` (what every admission reads), and an
   admission in that tenant. Every report is checked against sums computed from the runs
   themselves. Target: a year's report < 200 ms.

    .venv/bin/python benchmarks/quotas.py                                   # print the results
    .venv/bin/python benchmarks/quotas.py --write benchmarks/README.md      # and record them
    .venv/bin/python benchmarks/quotas.py --backends sqlite --duration 5    # a quick look

If a check fails the script exits 1 and records nothing: numbers of a store that double-books
GPUs or miscounts hours are worthless.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import math
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# `python benchmarks/quotas.py` puts benchmarks/ first on sys.path, where this very file would
# shadow the `quotas` package; the repository root holds `benchmarks._readme` and the test bed.
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != HERE]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
import sqlalchemy  # noqa: E402
from sqlalchemy import func, insert, select, text  # noqa: E402

from benchmarks._readme import cpus, write_section  # noqa: E402
from quotas.limits import parse_limit  # noqa: E402
from quotas.model import Profile, Quota, Tenant  # noqa: E402
from quotas.policy import Holding, Limit, Request  # noqa: E402
from quotas.schema import refusals, runs, usage_rollups  # noqa: E402
from quotas.store import MS_PER_HOUR, Store, UsageRow, _run_values, _split  # noqa: E402
from tests.bed.postgres import PostgresError, PostgresServer  # noqa: E402

SECTION = "quotas"
TARGET_RESERVE_P99_MS = 20.0  # on PostgreSQL
TARGET_YEAR_REPORT_MS = 200.0
GiB = Decimal(2**30)
BASE = datetime(2026, 11, 17, 12, 0, tzinfo=UTC)  # the reservation clients' clock starts here
REPORT_NOW = datetime(2026, 12, 31, 16, 0, tzinfo=UTC)  # "now" of the year of ledger
YEAR = (date(2026, 1, 1), date(2027, 1, 1))
MONTH = (date(2026, 11, 1), date(2026, 12, 1))
GPU_TYPES = ("H100", "A100", "L40S")
KINDS = ("startup", "university", "company")
BACKENDS = ("sqlite", "postgres")


def _profiles() -> dict[str, Profile]:
    out = {
        "cpu-small": Profile("cpu-small", "CPU only, small", Decimal(2), 8 * GiB, "base"),
        "cpu-large": Profile("cpu-large", "CPU only, large", Decimal(16), 64 * GiB, "base"),
    }
    for gpu in GPU_TYPES:
        for n in (1, 2, 4, 8):
            ident = f"{gpu.lower()}-x{n}"
            out[ident] = Profile(ident, f"{n} x {gpu}", Decimal(8 * n), 64 * n * GiB, "pytorch", gpu, n)
    return out


PROFILES = _profiles()


# -- statistics and the machine ----------------------------------------------------------------


def summarize(samples_ns: Sequence[int]) -> dict[str, float]:
    """n, p50, p99, max and mean in milliseconds (nearest-rank percentiles)."""
    if not samples_ns:
        return {"n": 0, "p50": math.nan, "p99": math.nan, "max": math.nan, "mean": math.nan}
    ordered = sorted(samples_ns)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] / 1e6

    return {
        "n": len(ordered),
        "p50": rank(0.50),
        "p99": rank(0.99),
        "max": ordered[-1] / 1e6,
        "mean": sum(ordered) / len(ordered) / 1e6,
    }


def machine() -> str:
    return f"{cpus()}, {platform.system()} {platform.release()}"


def load() -> float:
    return os.getloadavg()[0]


def busy_cpu() -> float:
    """CPU seconds the whole machine has been busy (``/proc/stat``: all but idle and iowait)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return math.nan
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def filesystem_of(path: Path) -> str:
    """The file system type of ``path`` (from /proc/mounts), e.g. "ext4"; "?" if unknown."""
    best, kind = "", "?"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and str(path.resolve()).startswith(parts[1]) and len(parts[1]) >= len(best):
                best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


# -- the ledger in bulk ------------------------------------------------------------------------


@dataclass(frozen=True)
class PastRun:
    """One run to load: ``ended`` None is a server running now (an open run, a reservation)."""

    holding: Holding
    started: datetime
    ended: datetime | None


def holding_of(tenant: str, user: str, server: str, profile: Profile, groups: tuple[str, ...]) -> Holding:
    return Holding(tenant, user, server, profile.id, dict(profile.gpus), profile.cpu, profile.memory, groups)


def not_at_midnight(ended: datetime) -> datetime:
    """``ended``, or a second later if it is exactly midnight (UTC): ``Store`` does not count in
    its roll-ups' ``runs`` a run that ends exactly at midnight (reported; not what is measured)."""
    return ended + timedelta(seconds=1) if ended.time() == datetime.min.time() else ended


def ledger_rows(past: Iterable[PastRun], ids: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The ``runs`` rows ``Store`` writes for these runs (``reserve``, then ``release`` if ended)."""
    for r in past:
        row = _run_values(next(ids), r.holding, r.started)
        if r.ended is not None:
            row["ended"] = max(r.ended, r.started)
            row["end_reason"] = "stopped"
        yield row


RollupKey = tuple[str, str, date, str, str]  # tenant, period, start, kind, subject


def rollups_of(past: Iterable[PastRun]) -> dict[RollupKey, list[int]]:
    """The ``usage_rollups`` rows (gpu_ms, cpu_milli_ms, runs) that ``Store`` adds when these runs
    end: the same split in UTC days and months (``quotas.store._split``), the same subjects."""
    out: dict[RollupKey, list[int]] = {}
    shapes: dict[int, tuple[str, int, int, list[tuple[str, str]]]] = {}  # per Holding (they are shared)
    for r in past:
        if r.ended is None:
            continue
        h, ended = r.holding, max(r.ended, r.started)
        shape = shapes.get(id(h))
        if shape is None:
            subjects = [("tenant", h.tenant), ("user", h.user), *(("group", g) for g in h.groups)]
            shape = shapes[id(h)] = (h.tenant, sum(h.gpus.values()), int(h.cpu * 1000), subjects)
        tenant, gpu_count, cpu_milli, subjects = shape
        last_day = ended.date()
        last_month = last_day.replace(day=1)
        for period, start, ms in _split(r.started, ended):
            ended_here = int(start == (last_day if period == "day" else last_month))
            gpu, cpu = gpu_count * ms, cpu_milli * ms
            for kind, subject in subjects:
                key = (tenant, period, start, kind, subject)
                cell = out.get(key)
                if cell is None:
                    out[key] = [gpu, cpu, ended_here]
                else:
                    cell[0] += gpu
                    cell[1] += cpu
                    cell[2] += ended_here
    return out


def run_ids(seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    while True:
        yield uuid.UUID(int=rng.getrandbits(128), version=4).hex


def bulk_load(
    store: Store,
    past: Sequence[PastRun],
    seed: int,
    rollups: dict[RollupKey, list[int]] | None = None,
    batch: int = 20_000,
) -> tuple[int, int]:
    """Insert ``past`` as ``Store`` would have written it, in big transactions; (runs, roll-up rows).

    ``rollups`` is ``rollups_of(past)`` if the caller has it already. The tables must not yet
    hold roll-ups of these tenants (they are inserted, not added to).
    """
    ids = run_ids(seed)
    rows = ledger_rows(past, ids)
    written = 0
    while True:
        chunk = [row for _, row in zip(range(batch), rows, strict=False)]
        if not chunk:
            break
        with store.engine.begin() as conn:
            conn.execute(insert(runs), chunk)
        written += len(chunk)
    cells = [
        {
            "tenant": k[0],
            "period": k[1],
            "start": k[2],
            "kind": k[3],
            "subject": k[4],
            "gpu_ms": v[0],
            "cpu_milli_ms": v[1],
            "runs": v[2],
        }
        for k, v in (rollups_of(past) if rollups is None else rollups).items()
    ]
    for i in range(0, len(cells), batch):
        with store.engine.begin() as conn:
            conn.execute(insert(usage_rollups), cells[i : i + batch])
    return written, len(cells)


def verify_bulk(store: Store, sample: Sequence[PastRun]) -> None:
    """Replay ``sample`` through ``Store.record_run`` into ``store`` (an empty database) and check
    that it writes exactly the rows :func:`bulk_load` writes for them."""
    for r in sample:
        assert r.ended is not None
        store.record_run(r.holding, r.started, r.ended)
    with store.engine.connect() as conn:
        got_rollups = {
            (r.tenant, r.period, r.start, r.kind, r.subject): [r.gpu_ms, r.cpu_milli_ms, r.runs]
            for r in conn.execute(select(usage_rollups))
        }
        got_runs = sorted(_comparable(r._mapping) for r in conn.execute(select(runs)))
    want_runs = sorted(_comparable(row) for row in ledger_rows(sample, run_ids(0)))
    if got_runs != want_runs:
        raise AssertionError(
            f"bulk-loaded runs differ from what Store.record_run writes (first: {want_runs[0]} vs {got_runs[0]})"
        )
    want_rollups = rollups_of(sample)
    if got_rollups != want_rollups:
        got_cells = {(k, tuple(v)) for k, v in got_rollups.items()}
        want_cells = {(k, tuple(v)) for k, v in want_rollups.items()}
        diff = sorted(got_cells ^ want_cells, key=str)
        raise AssertionError(f"bulk roll-ups differ from Store.record_run's on {len(diff)} rows, e.g. {diff[:3]}")


def _comparable(row: Any) -> tuple[Any, ...]:
    return tuple(
        json.dumps(row[c], sort_keys=True) if c in ("groups", "gpus") else row[c]
        for c in (
            "tenant",
            "user",
            "server",
            "profile",
            "groups",
            "gpus",
            "gpu_count",
            "cpu_milli",
            "memory_bytes",
            "started",
            "ended",
            "end_reason",
        )
    )


# -- part 1: the platform the reservation clients work on --------------------------------------


@dataclass
class Platform:
    """Generated tenants, who may spawn where, delegated limits and this month's GPU-hours so far."""

    tenants: dict[str, Tenant]
    weights: list[float]  # share of the spawn requests, in the order of ``tenants``
    people: dict[str, tuple[str, ...]]  # tenant -> everybody who may spawn in it
    groups_of: dict[str, tuple[str, ...]]
    limits: list[Limit]
    history: list[PastRun] = field(default_factory=list)  # this month before BASE

    def draw(self, rng: random.Random, server: str) -> tuple[Tenant, Request]:
        """One spawn request: a tenant by its share of traffic, one of its people, a profile it allows."""
        tenant = self.tenants[rng.choices(list(self.tenants), self.weights)[0]]
        user = rng.choice(self.people[tenant.id])
        return tenant, Request(user, server, pick_profile(rng, tenant), self.groups_of[user])


def pick_profile(rng: random.Random, tenant: Tenant) -> Profile:
    """What people ask for: mostly one GPU, sometimes 2, 4 or 8; one request in ten CPU-only."""
    if rng.random() < 0.1:
        return PROFILES[rng.choice(("cpu-small", "cpu-large"))]
    gpu_profiles = [PROFILES[p] for p in tenant.profiles if PROFILES[p].gpu_type]
    count = rng.choices((1, 2, 4, 8), (60, 25, 12, 3))[0]
    return rng.choice([p for p in gpu_profiles if p.gpu_count == count] or gpu_profiles)


def make_platform(seed: int = 2026, tenants: int = 50) -> Platform:
    """``tenants`` tenants of long-tailed sizes (4 to ~100 people), ceilings tight enough that the
    clients' traffic is refused now and then, limits on some people and groups, and a month of
    history in which about one tenant in ten has spent its GPU-hour budget."""
    rng = random.Random(seed)
    ids = [f"t{i:02d}-{rng.choice(KINDS)[:3]}" for i in range(tenants)]
    sizes = [1 / (rank + 1) ** 0.8 for rank in range(tenants)]
    rng.shuffle(sizes)
    built: dict[str, Tenant] = {}
    people: dict[str, tuple[str, ...]] = {}
    groups_of: dict[str, tuple[str, ...]] = {}
    delegated: list[Limit] = []
    history: list[PastRun] = []
    for t, size in zip(ids, sizes, strict=True):
        n = max(4, round(100 * size))
        names = tuple(f"{t}-u{i:03d}" for i in range(n))
        types = rng.sample(GPU_TYPES, rng.randint(1, 2))
        gpus = {g: min(64, max(4, round(n * rng.uniform(0.15, 0.4) / len(types)))) for g in types}
        full = sum(gpus.values())
        allowed = ("cpu-small", "cpu-large") + tuple(
            p.id for p in PROFILES.values() if p.gpu_type in gpus and p.gpu_count <= gpus[p.gpu_type]
        )
        quota = Quota(
            gpus=MappingProxyType(gpus),
            servers=max(4, n // 3 + 2),
            servers_per_user=rng.choice((1, 2, 2, 3)),
            cpu=Decimal(8 * full + 2 * n),
            memory=(64 * full + 8 * n) * GiB,
            gpu_hours_per_month=Decimal(rng.choice((250, 500, 1000)) * max(1, round(n / 10))),
        )
        member_users, member_groups = set(names), frozenset[str]()
        for user in names:
            groups_of[user] = ()
        if rng.random() < 0.25:  # a lab or a class admitted as a JupyterHub group
            member_groups = frozenset({f"{t}-lab"})
            for user in rng.sample(names, max(1, n // 3)):
                member_users.discard(user)
                groups_of[user] = (f"{t}-lab",)
        kind = rng.choice(KINDS)
        tenant = Tenant(t, f"Tenant {t}", kind, frozenset(member_users), member_groups, names[:1], allowed, quota)
        built[t], people[t] = tenant, names
        for group in sorted(member_groups):  # the group may hold two GPUs of the first type at once
            delegated.append(parse_limit(tenant, "group", group, {"gpus": {types[0]: 2}}))
        if rng.random() < 0.4:  # a person the tenant's admins hold back
            body: dict[str, Any] = rng.choice(
                ({"servers": 1}, {"gpus": {types[0]: 1}}, {"gpus": {types[0]: 2}, "cpu": "16"})
            )
            delegated.append(parse_limit(tenant, "user", rng.choice(names), body))
        budget = quota.gpu_hours_per_month or Decimal(0)
        share = rng.uniform(1.05, 1.3) if rng.random() < 0.1 else rng.uniform(0.0, 0.8)
        history += _month_so_far(rng, tenant, names, groups_of, budget * Decimal(f"{share:.3f}"))
    weights = [len(people[t]) for t in ids]  # traffic in proportion to the tenant's size
    return Platform(built, [float(w) for w in weights], people, groups_of, delegated, history)


def _month_so_far(
    rng: random.Random, tenant: Tenant, names: Sequence[str], groups_of: dict[str, tuple[str, ...]], hours: Decimal
) -> list[PastRun]:
    """Runs between the 1st of BASE's month and BASE that add up to about ``hours`` GPU-hours."""
    out: list[PastRun] = []
    month_start = BASE.replace(day=1, hour=0)
    gpu_profiles = [PROFILES[p] for p in tenant.profiles if PROFILES[p].gpu_count]
    left = float(hours)
    while left > 0.5:
        profile = rng.choice(gpu_profiles)
        length = min(rng.uniform(2, 24), left / profile.gpu_count)
        started = month_start + timedelta(seconds=rng.randrange(0, int((BASE - month_start).total_seconds()) - 86_400))
        user = rng.choice(names)
        holding = holding_of(tenant.id, user, f"h{len(out)}", profile, groups_of[user])
        ended = not_at_midnight(started + timedelta(seconds=max(1, round(length * 3600))))
        out.append(PastRun(holding, started, ended))
        left -= profile.gpu_count * length
    return out


def prepare_reservations(store: Store, plat: Platform, seed: int) -> None:
    """An empty database gets the month's history and the delegated limits."""
    bulk_load(store, plat.history, seed)
    for limit in plat.limits:
        store.set_limit(limit, "benchmark", BASE)


# -- part 1: the clients -----------------------------------------------------------------------


def sim_time(t0_ns: int, t_ns: int) -> datetime:
    """The clients' clock: BASE at ``t0_ns`` (wall clock, shared by every process), then real time."""
    return BASE + timedelta(microseconds=(t_ns - t0_ns) // 1000)


def client(spec: dict[str, Any], ready: Callable[[], int]) -> dict[str, Any]:
    """One client process: ``spec["threads"]`` threads sharing one Store (as a hub's spawners do),
    each reserving and releasing until ``duration`` after the start that ``ready()`` returns.

    Each thread keeps up to ``hold`` servers: after a granted reserve, once it holds that many,
    it releases the oldest. Every operation is recorded with its wall-clock start (ns from the
    start) and duration (perf_counter ns).
    """
    plat = make_platform(spec["seed"], spec["tenants"])
    store = Store(spec["url"], migrate=False)
    store.holdings(next(iter(plat.tenants)))  # the engine and the schema are warm before the start
    start_ns = ready()
    cpu_before = time.process_time()
    warm_ns = start_ns + int(spec["warmup"] * 1e9)
    end_ns = warm_ns + int(spec["duration"] * 1e9)
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def thread(k: int) -> None:
        rng = random.Random(f"{spec['seed']}/{spec['process']}/{k}")
        held: list[tuple[str, str]] = []
        reserves: list[list[Any]] = []
        releases: list[list[int]] = []
        n, next_ns, pace = 0, start_ns, spec["pace"]
        time.sleep(max(0.0, (start_ns - time.time_ns()) / 1e9))
        while True:
            if pace:  # a person arriving now and then (Poisson), not a client that never pauses
                next_ns += int(rng.expovariate(pace) * 1e9)
                time.sleep(max(0.0, (next_ns - time.time_ns()) / 1e9))
            t = time.time_ns()
            if t >= end_ns:
                break
            n += 1
            tenant, request = plat.draw(rng, f"p{spec['process']}t{k}n{n}")
            c0 = time.perf_counter_ns()
            decision, run_id = store.reserve(tenant, request, sim_time(start_ns, t))
            c1 = time.perf_counter_ns()
            reserves.append([t - start_ns, c1 - c0, decision.code, run_id, time.time_ns() - start_ns, t >= warm_ns])
            if run_id is not None:
                held.append((request.user, request.server))
            if len(held) >= spec["hold"]:
                t = time.time_ns()
                c0 = time.perf_counter_ns()
                store.release(held.pop(0), sim_time(start_ns, t))
                releases.append([t - start_ns, time.perf_counter_ns() - c0, int(warm_ns <= t < end_ns)])
        for key in held:  # the end: everything still held is stopped
            store.release(key, sim_time(start_ns, time.time_ns()))
        with lock:
            results.append({"reserves": reserves, "releases": releases})

    threads = [threading.Thread(target=thread, args=(k,)) for k in range(spec["threads"])]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    cpu = time.process_time() - cpu_before
    store.close()
    return {
        "cpu": cpu,
        "reserves": [r for res in results for r in res["reserves"]],
        "releases": [r for res in results for r in res["releases"]],
    }


def _client_main() -> int:
    """``--client``: the spec as one JSON line on stdin; "ready" out, the start time (ns) in; results out."""
    spec = json.loads(sys.stdin.readline())

    def ready() -> int:
        print("ready", flush=True)
        return int(sys.stdin.readline())

    print(json.dumps(client(spec, ready)), flush=True)
    return 0


@dataclass
class Reservations:
    """What one layout (processes x threads, at a pace) did on one backend, and what the ledger says."""

    backend: str
    processes: int
    threads: int
    duration: float
    reserve_ns: list[int]
    granted: int  # in the measured window
    codes: Counter[str]
    release_ns: list[int]
    load_before: float
    load_after: float
    pace: float = 0.0  # reserve calls a second per client thread; 0: no pause
    client_cpu: float = 0.0  # seconds, all client processes, start to end
    server_cpu: float | None = None  # seconds, the PostgreSQL server (None: SQLite, in the clients)
    activity: Counter[str] = field(default_factory=Counter)  # pg_stat_activity samples of backends in a transaction
    others_cpu: float = math.nan  # share of the machine's CPUs that other processes used meanwhile
    total_reserves: int = 0
    total_releases: int = 0
    total_granted: int = 0
    ledger_runs: int = 0
    peak_open: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return len(self.reserve_ns) / self.duration

    @property
    def label(self) -> str:
        return layout_label(self.processes, self.threads, self.pace)


def layout_label(processes: int, threads: int, pace: float = 0.0) -> str:
    """ "5 processes x 10 threads", with ", 1 reserve/s each" for a paced layout."""
    text = f"{processes} process{'es' if processes > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}"
    return text + (f", {pace:g} reserve/s each" if pace else "")


def measure_reservations(
    url: str,
    backend: str,
    plat: Platform,
    seed: int,
    tenants: int,
    processes: int,
    threads: int,
    duration: float,
    warmup: float,
    hold: int = 3,
    server: PostgresServer | None = None,
    pace: float = 0.0,
) -> Reservations:
    """Run ``processes`` client processes of ``threads`` threads against the empty database ``url``
    (on ``server``, whose CPU time and backends' waits are then recorded too)."""
    store = Store(url)
    prepare_reservations(store, plat, seed)
    spent = {t: store.usage(tenant, BASE).gpu_hours for t, tenant in plat.tenants.items()}
    with store.engine.connect() as conn:
        history_ids = {r.id for r in conn.execute(select(runs.c.id))}
    store.close()

    procs = []
    for p in range(processes):
        spec = {
            "url": url,
            "seed": seed,
            "tenants": tenants,
            "process": p,
            "threads": threads,
            "duration": duration,
            "warmup": warmup,
            "hold": hold,
            "pace": pace,
        }
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--client"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(spec) + "\n")
        proc.stdin.flush()
        procs.append(proc)
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a client process failed to start (exit code {proc.wait()}); see its error above")
        load_before = load()
        start_ns = time.time_ns() + 300_000_000
        sampler = ActivitySampler(server, url, start_ns + int(warmup * 1e9), duration) if server else None
        server_cpu = postgres_cpu(server) if server else 0.0
        machine_cpu, wall = busy_cpu(), time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"{start_ns}\n")
            proc.stdin.flush()
        outputs = []
        for proc in procs:
            out, _ = proc.communicate(timeout=duration + warmup + 600)
            if proc.returncode != 0:
                raise RuntimeError(f"a client process exited with {proc.returncode}; see its error above")
            outputs.append(json.loads(out))
        machine_cpu, wall = busy_cpu() - machine_cpu, time.perf_counter() - wall
        if server:
            server_cpu = postgres_cpu(server) - server_cpu
        if sampler:
            sampler.join()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    load_after = load()

    reserves = [r for o in outputs for r in o["reserves"]]
    releases = [r for o in outputs for r in o["releases"]]
    window = [r for r in reserves if r[5]]
    result = Reservations(
        backend=backend,
        processes=processes,
        threads=threads,
        duration=duration,
        pace=pace,
        reserve_ns=[r[1] for r in window],
        granted=sum(1 for r in window if r[3] is not None),
        codes=Counter(r[2] for r in window),
        release_ns=[r[1] for r in releases if r[2]],
        load_before=load_before,
        load_after=load_after,
        total_reserves=len(reserves),
        total_granted=sum(1 for r in reserves if r[3] is not None),
        total_releases=len(releases),
        client_cpu=sum(o["cpu"] for o in outputs),
        server_cpu=server_cpu if server else None,
        activity=sampler.counts if sampler else Counter(),
    )
    ours = result.client_cpu + (server_cpu if server else 0.0)
    result.others_cpu = max(0.0, machine_cpu - ours) / (wall * (os.cpu_count() or 1))
    check_ledger(url, plat, start_ns, reserves, history_ids, spent, result)
    return result


def postgres_cpu(server: PostgresServer) -> float:
    """CPU seconds the PostgreSQL server has used: the postmaster, its exited children (reaped, so
    counted in its cumulative times) and its running ones (backends, WAL writer, ...)."""
    tick = os.sysconf("SC_CLK_TCK")

    def fields(pid: int) -> list[str]:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return []

    master = int((server.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
    own = fields(master)
    total = sum(int(own[i]) for i in (11, 12, 13, 14)) if own else 0  # utime stime cutime cstime
    for entry in Path("/proc").glob("[0-9]*"):
        child = fields(int(entry.name))
        if child and int(child[1]) == master:
            total += int(child[11]) + int(child[12])
    return total / tick


class ActivitySampler(threading.Thread):
    """Every 50 ms of the measured window, what each PostgreSQL backend of the database that is
    inside a transaction is doing (``pg_stat_activity``): running, waiting for a lock, for I/O,
    or for the client (``idle in transaction``: the Python side computing or waiting for a CPU)."""

    def __init__(self, server: PostgresServer, url: str, begin_ns: int, duration: float):
        super().__init__(daemon=True)
        self.server, self.database = server, url.rsplit("/", 1)[1]
        self.begin_ns, self.end_ns = begin_ns, begin_ns + int(duration * 1e9)
        self.counts: Counter[str] = Counter()
        self.samples = 0
        self.start()

    def run(self) -> None:
        query = (
            "SELECT state, wait_event_type, wait_event FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction')"
        )
        port = self.server.port
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
            time.sleep(max(0.0, (self.begin_ns - time.time_ns()) / 1e9))
            while time.time_ns() < self.end_ns:
                for state, wait_type, wait in conn.execute(query, [self.database]):
                    self.counts[_activity(state, wait_type, wait)] += 1
                self.samples += 1
                time.sleep(0.05)


def _activity(state: str, wait_type: str | None, wait: str | None) -> str:
    if state == "idle in transaction":
        return "waiting for the client"
    if wait_type == "Lock":
        return f"waiting for a lock ({wait})"
    if wait_type in ("IO", "LWLock"):
        return f"{wait_type} {wait}"
    return "running" if not wait_type else f"{wait_type} {wait}"


def check_ledger(
    url: str,
    plat: Platform,
    start_ns: int,
    reserves: Sequence[Sequence[Any]],
    history_ids: set[str],
    spent: dict[str, Decimal],
    result: Reservations,
) -> None:
    """Read the ledger back: counts match, and no tenant ever held more than its ceiling or limits.

    A run certainly held its resources from the moment its ``reserve`` call returned (the row was
    committed) to its ``ended`` time (taken before the ``release`` call, so before that commit).
    If at any instant these certain holds of a tenant add up to more than its ceiling, two
    transactions granted the same GPU: no false alarms from the clients' clocks, and a double
    booking that lasts longer than one reserve call is caught.
    """
    store = Store(url, migrate=False)
    with store.engine.connect() as conn:
        rows = [r for r in conn.execute(select(runs)) if r.id not in history_ids]
        refused_counted = sum(r._mapping["count"] for r in conn.execute(select(refusals)))
        rolled = conn.execute(
            select(func.coalesce(func.sum(usage_rollups.c.runs), 0)).where(
                usage_rollups.c.kind == "tenant", usage_rollups.c.period == "month"
            )
        ).scalar_one()
    store.close()
    problems = result.problems
    granted = {r[3]: r for r in reserves if r[3] is not None}
    ledger = {r.id: r for r in rows}
    refused = sum(1 for r in reserves if r[3] is None)
    result.ledger_runs = len(ledger)
    if set(granted) != set(ledger):
        problems.append(
            f"{len(granted)} reservations granted but {len(ledger)} runs written"
            f" ({len(set(granted) - set(ledger))} granted without a run, {len(set(ledger) - set(granted))} runs nobody got)"
        )
    if refused_counted != refused:
        problems.append(f"{refused} reservations refused but the refusal counts say {refused_counted}")
    if any(r.ended is None for r in rows):
        problems.append(f"{sum(r.ended is None for r in rows)} runs still open after every client released")
    if rolled != len(rows) + len(history_ids):
        problems.append(f"the monthly roll-ups count {rolled} ended runs, the ledger {len(rows) + len(history_ids)}")

    limits_of: dict[str, list[Limit]] = defaultdict(list)
    for limit in plat.limits:
        limits_of[limit.tenant].append(limit)
    events: dict[str, list[tuple[datetime, int, Any]]] = defaultdict(list)
    for run_id, row in ledger.items():
        if run_id not in granted or row.ended is None:
            continue
        held_from = sim_time(0, granted[run_id][4])  # when reserve returned, on the clients' clock
        if row.started > held_from:
            problems.append(f"run {run_id} started {row.started} after its reserve call returned ({held_from})")
        if row.ended > held_from:
            events[row.tenant].append((held_from, 1, row))
            events[row.tenant].append((row.ended, 0, row))  # releases first at equal times
        tenant = plat.tenants[row.tenant]
        budget = tenant.quota.gpu_hours_per_month
        if row.gpu_count and budget is not None and spent[row.tenant] >= budget:
            problems.append(
                f"tenant {row.tenant} had spent {spent[row.tenant]:.1f} of {budget} GPU-hours, yet {row.user} got {row.profile}"
            )
    peak = 0
    for tenant_id, evs in events.items():
        evs.sort(key=lambda e: (e[0], e[1]))
        open_now: dict[str, Any] = {}
        for at, kind, row in evs:
            if kind == 0:
                open_now.pop(row.id, None)
                continue
            open_now[row.id] = row
            peak = max(peak, len(open_now))
            for broken in _over(plat.tenants[tenant_id], limits_of[tenant_id], list(open_now.values())):
                problems.append(f"{at.isoformat()}: tenant {tenant_id} held {broken}")
                if len(problems) > 20:
                    return
    result.peak_open = peak


def _over(tenant: Tenant, limits: Sequence[Limit], held: Sequence[Any]) -> Iterator[str]:
    """What ``held`` (ledger rows open at once) exceeds of the tenant's ceiling and delegated limits."""
    quota = tenant.quota

    def totals(rows: Sequence[Any]) -> tuple[Counter[str], int, Decimal, Decimal]:
        gpus: Counter[str] = Counter()
        for r in rows:
            gpus.update(r.gpus)
        cpu = sum((Decimal(r.cpu_milli) / 1000 for r in rows), Decimal(0))
        memory = sum((Decimal(r.memory_bytes) for r in rows), Decimal(0))
        return gpus, len(rows), cpu, memory

    def excess(
        what: str,
        rows: Sequence[Any],
        caps: dict[str, int],
        servers: int | None,
        cpu: Decimal | None,
        memory: Decimal | None,
    ) -> Iterator[str]:
        gpus, count, used_cpu, used_memory = totals(rows)
        for gpu_type, n in gpus.items():
            if gpu_type in caps and n > caps[gpu_type]:
                yield f"{n} {gpu_type} GPUs, over {what} of {caps[gpu_type]}"
        if servers is not None and count > servers:
            yield f"{count} servers, over {what} of {servers}"
        if cpu is not None and used_cpu > cpu:
            yield f"{used_cpu} CPUs, over {what} of {cpu}"
        if memory is not None and used_memory > memory:
            yield f"{used_memory} bytes of memory, over {what} of {memory}"

    granted = {g: quota.gpus.get(g, 0) for r in held for g in r.gpus}
    yield from excess("its ceiling", held, granted, quota.servers, quota.cpu, quota.memory)
    per_user: dict[str, list[Any]] = defaultdict(list)
    for r in held:
        per_user[r.user].append(r)
    for user, rows in per_user.items():
        if quota.servers_per_user is not None and len(rows) > quota.servers_per_user:
            yield f"{len(rows)} servers of {user}, over {quota.servers_per_user} per person"
    for limit in limits:
        covered = [r for r in held if (r.user == limit.subject if limit.kind == "user" else limit.subject in r.groups)]
        if covered:
            yield from excess(
                f"the {limit.kind} limit of {limit.subject}",
                covered,
                dict(limit.gpus),
                limit.servers,
                limit.cpu,
                limit.memory,
            )


# -- part 2: a year of ledger of one big tenant ------------------------------------------------


@dataclass
class Year:
    tenant: Tenant
    closed: list[PastRun]
    open: list[PastRun]
    groups_of: dict[str, tuple[str, ...]]

    @property
    def runs(self) -> list[PastRun]:
        return self.closed + self.open


def make_year(seed: int = 2026, users: int = 1000, active: float = 0.6) -> Year:
    """A university tenant of ``users`` people in labs (and two classes) with its 2026 ledger.

    On each working day (Monday to Friday, 2026-01-01 to 12-30) each person works with
    probability ``active`` on average (their own rate is drawn around it), and then runs 1 to 3
    servers of 1 to 10 hours, starting between 07:00 and 21:00 UTC (late ones cross midnight);
    seven runs in ten hold 1-8 GPUs. On 12-31 at REPORT_NOW one person in ten has a server running.
    Times are whole seconds, and no run ends exactly at midnight (see the report on
    ``Store._add_rollups``).
    """
    rng = random.Random(seed)
    tid = "uni-1000"
    names = [f"u{i:04d}" for i in range(users)]
    labs = [f"lab{i:02d}" for i in range(max(1, users // 25))]
    groups_of: dict[str, tuple[str, ...]] = {}
    for user in names:
        mine = {rng.choice(labs)} if rng.random() < 0.9 else set()
        if rng.random() < 0.15:
            mine.add(rng.choice(("course-ml", "course-hpc")))
        groups_of[user] = tuple(sorted(mine))
    profile_ids = (
        "cpu-small",
        "cpu-large",
        "h100-x1",
        "h100-x2",
        "h100-x4",
        "h100-x8",
        "a100-x1",
        "a100-x2",
        "a100-x4",
    )
    profile_weights = (20, 10, 28, 12, 6, 2, 14, 6, 2)
    quota = Quota(
        gpus=MappingProxyType({"H100": 256, "A100": 128}),
        servers=2 * users,
        servers_per_user=3,
        cpu=Decimal(16 * users),
        memory=Decimal(128 * users) * GiB,
        gpu_hours_per_month=Decimal(400_000),
    )
    tenant = Tenant(
        tid,
        "A university of 1,000",
        "university",
        frozenset(),
        frozenset([*labs, "course-ml", "course-hpc"]),
        (names[0],),
        profile_ids,
        quota,
    )
    cache: dict[tuple[str, str, str], Holding] = {}

    def holding(user: str, server: str, profile_id: str) -> Holding:
        key = (user, server, profile_id)
        if key not in cache:
            cache[key] = holding_of(tid, user, server, PROFILES[profile_id], groups_of[user])
        return cache[key]

    rate = [min(1.0, max(0.05, rng.gauss(active, 0.2))) for _ in names]
    cumulative = list(itertools.accumulate(profile_weights))
    closed: list[PastRun] = []
    day = datetime(2026, 1, 1, tzinfo=UTC)
    second, draw = timedelta(seconds=1), rng.random
    while day < datetime(2026, 12, 31, tzinfo=UTC):
        if day.weekday() < 5:
            for i, user in enumerate(names):
                if draw() >= rate[i]:
                    continue
                for j in range(1 + int(draw() * 3)):
                    started = day + second * (7 * 3600 + int(draw() * 14 * 3600))
                    ended = not_at_midnight(started + second * (3600 + int(draw() * 9 * 3600)))
                    profile_id = profile_ids[bisect.bisect(cumulative, draw() * cumulative[-1])]
                    closed.append(PastRun(holding(user, "" if j == 0 else f"s{j}", profile_id), started, ended))
        day += timedelta(days=1)
    running = []
    morning = REPORT_NOW.replace(hour=8)
    for user in rng.sample(names, max(1, users // 10)):
        started = morning + timedelta(seconds=rng.randrange(0, int((REPORT_NOW - morning).total_seconds())))
        running.append(PastRun(holding(user, "", rng.choices(profile_ids, profile_weights)[0]), started, None))
    return Year(tenant, closed, running, groups_of)


def year_sample(year: Year, people: int = 2, edges: int = 60) -> list[PastRun]:
    """Runs to replay through ``Store.record_run``: every run of a few people (one of them in two
    groups) and runs that cross a month's end."""
    chosen = [u for u in sorted(year.groups_of) if len(year.groups_of[u]) == 2][:1]
    chosen += [u for u in sorted(year.groups_of) if u not in chosen][: people - len(chosen)]
    sample = [r for r in year.closed if r.holding.user in chosen]
    crossing = [
        r
        for r in year.closed
        if r.ended is not None and r.ended.month != r.started.month and r.holding.user not in chosen
    ]
    return sample + crossing[:edges]


def expected_report(
    year: Year, start: date, end: date, now: datetime, daily: bool
) -> dict[tuple[str, date | None], tuple[Decimal, Decimal, int]]:
    """Per person (and day): GPU-hours, CPU-hours and runs ended, summed from the runs themselves
    (the overlap of each run with the range, or with each day), independently of the roll-ups."""
    gpu: dict[tuple[str, date | None], int] = defaultdict(int)
    cpu: dict[tuple[str, date | None], int] = defaultdict(int)
    ended: dict[tuple[str, date | None], int] = defaultdict(int)
    lo = datetime(start.year, start.month, start.day, tzinfo=UTC)
    hi = min(now, datetime(end.year, end.month, end.day, tzinfo=UTC))
    one_day = timedelta(days=1)
    for r in year.runs:
        stop = r.ended if r.ended is not None else now
        if r.started >= hi or stop <= lo:
            continue
        h = r.holding
        gpus, cpu_milli = sum(h.gpus.values()), int(h.cpu * 1000)
        if r.ended is not None and r.ended < hi:
            ended[(h.user, r.ended.date() if daily else None)] += 1
        begin, finish = max(r.started, lo), min(stop, hi)
        if not daily:
            ms = int((finish - begin).total_seconds()) * 1000
            gpu[(h.user, None)] += gpus * ms
            cpu[(h.user, None)] += cpu_milli * ms
            continue
        day = begin.replace(hour=0, minute=0, second=0)
        while day < finish:
            ms = int((min(finish, day + one_day) - max(begin, day)).total_seconds()) * 1000
            if ms > 0:
                gpu[(h.user, day.date())] += gpus * ms
                cpu[(h.user, day.date())] += cpu_milli * ms
            day += one_day
    keys = set(gpu) | set(ended)
    return {k: (Decimal(gpu[k]) / MS_PER_HOUR, Decimal(cpu[k]) / MS_PER_HOUR / 1000, ended[k]) for k in keys}


def check_report(
    rows: Sequence[UsageRow], want: dict[tuple[str, date | None], tuple[Decimal, Decimal, int]], what: str
) -> None:
    got = {(r.subject, r.day): (r.gpu_hours, r.cpu_hours, r.runs) for r in rows}
    if got != want:
        wrong = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
        k = wrong[0]
        raise AssertionError(
            f"{what}: {len(wrong)} of {len(want)} rows are wrong, e.g. {k}: store {got.get(k)}, runs say {want.get(k)}"
        )


@dataclass
class Reports:
    backend: str
    runs: int
    rollups: int
    load_seconds: float
    size_bytes: int
    timings: list[tuple[str, list[int]]]
    load_avg: float
    sample: int


def measure_reports(
    store: Store,
    backend: str,
    year: Year,
    rollups: dict[RollupKey, list[int]],
    seed: int,
    repeats: int,
    verify_store: Store,
    log: Callable[[str], None],
) -> Reports:
    """Load the year (and its ``rollups``) into ``store`` (empty), check it, and time the reports
    and the admission reads."""
    sample = year_sample(year)
    verify_bulk(verify_store, sample)
    log(f"  {backend}: {len(sample)} sample runs through Store.record_run give the bulk loader's rows")
    t0 = time.perf_counter()
    written, rollup_rows = bulk_load(store, year.runs, seed, rollups)
    if store.is_postgres:
        with store.engine.begin() as conn:
            conn.execute(text("ANALYZE"))  # what autovacuum would have done long before a year had passed
    load_seconds = time.perf_counter() - t0
    log(f"  {backend}: loaded {written:,} runs and {rollup_rows:,} roll-up rows in {load_seconds:.0f} s")

    tenant, tid = year.tenant, year.tenant.id
    check_report(
        store.usage_report(tid, *YEAR, REPORT_NOW, by="user"),
        expected_report(year, *YEAR, REPORT_NOW, False),
        "the year's report",
    )
    check_report(
        store.usage_report(tid, *MONTH, REPORT_NOW, by="user", daily=True),
        expected_report(year, *MONTH, REPORT_NOW, True),
        "the month's daily report",
    )
    want_hours = sum(
        sum(r.holding.gpus.values())
        * (((r.ended or REPORT_NOW) - max(r.started, REPORT_NOW.replace(day=1, hour=0))).total_seconds())
        for r in year.runs
        if (r.ended or REPORT_NOW) > REPORT_NOW.replace(day=1, hour=0)
    )
    got_hours = store.usage(tenant, REPORT_NOW).gpu_hours
    if abs(got_hours * 3600 - Decimal(want_hours)) > 1:
        raise AssertionError(f"usage: the store says {got_hours} GPU-hours in December, the runs {want_hours / 3600}")

    person = sorted(u for u, g in year.groups_of.items() if g)[0]
    groups = year.groups_of[person]
    store.set_limit(
        parse_limit(tenant, "user", person, {"gpus": {"H100": 4}, "gpu_hours": 500}), "benchmark", REPORT_NOW
    )
    store.set_limit(
        parse_limit(tenant, "group", groups[0], {"gpus": {"H100": 32}, "gpu_hours": 20000}), "benchmark", REPORT_NOW
    )
    cpu_request = Request(person, "bench", PROFILES["cpu-small"], groups)

    def admission() -> None:
        decision, run_id = store.reserve(tenant, cpu_request, REPORT_NOW)
        if run_id is None:
            raise AssertionError(f"the admission in the big tenant was refused: {decision.reason}")
        store.release_run(run_id, REPORT_NOW)

    calls: list[tuple[str, Callable[[], object], int]] = [
        (
            f"`usage_report` {YEAR[0]}..{YEAR[1]}, by user",
            lambda: store.usage_report(tid, *YEAR, REPORT_NOW, by="user"),
            repeats,
        ),
        (
            f"`usage_report` {YEAR[0]}..{YEAR[1]}, by group",
            lambda: store.usage_report(tid, *YEAR, REPORT_NOW, by="group"),
            repeats,
        ),
        (
            f"`usage_report` {MONTH[0]}..{MONTH[1]}, by user, daily",
            lambda: store.usage_report(tid, *MONTH, REPORT_NOW, by="user", daily=True),
            repeats,
        ),
        ("`usage(tenant, now)`", lambda: store.usage(tenant, REPORT_NOW), repeats * 2),
        (
            "`usage(tenant, now, user, groups)` (with limits)",
            lambda: store.usage(tenant, REPORT_NOW, person, groups),
            repeats * 2,
        ),
        ("`reserve` + `release_run` (CPU profile, one thread)", admission, repeats),
    ]
    timings = []
    for label, call, n in calls:
        call()  # warm-up
        samples = []
        for _ in range(n):
            c0 = time.perf_counter_ns()
            call()
            samples.append(time.perf_counter_ns() - c0)
        timings.append((label, samples))
    return Reports(backend, written, rollup_rows, load_seconds, database_size(store), timings, load(), len(sample))


def database_size(store: Store) -> int:
    if store.is_postgres:
        with store.engine.connect() as conn:
            return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one())
    path = Path(store.url.split("///", 1)[1])
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Options:
    seed: int = 2026
    tenants: int = 50
    layouts: tuple[tuple[int, int, float], ...] = ((1, 1, 0.0), (5, 10, 0.0), (1, 50, 0.0), (5, 10, 1.0))
    duration: float = 15.0
    warmup: float = 2.0
    hold: int = 3
    users: int = 1000
    active: float = 0.6
    repeats: int = 50
    backends: tuple[str, ...] = BACKENDS


class Databases:
    """Fresh empty databases: SQLite files in a work directory, and a PostgreSQL server of our own."""

    def __init__(self, workdir: Path, backends: Sequence[str]):
        self.workdir = workdir
        self.count = 0
        self.postgres: PostgresServer | None = None
        if "postgres" in backends:
            self.postgres = PostgresServer(workdir / "postgres").start()

    def new(self, backend: str, name: str) -> str:
        self.count += 1
        if backend == "sqlite":
            return f"sqlite:///{self.workdir / f'{self.count:02d}-{name}' / 'quotas.sqlite'}"
        assert self.postgres is not None
        return self.postgres.create_database(f"b{self.count:02d}_{name}")

    def versions(self) -> dict[str, str]:
        out = {"sqlite": f"SQLite {sqlite_version()} (file on {filesystem_of(self.workdir)}, WAL, synchronous=FULL)"}
        if self.postgres is not None:
            with psycopg.connect(host="127.0.0.1", port=self.postgres.port, user="postgres", dbname="postgres") as conn:
                row = conn.execute("SHOW server_version").fetchone()
            version = row[0].split()[0] if row else "?"
            out["postgres"] = (
                f"PostgreSQL {version} (started by the script, default durability; psycopg {psycopg.__version__})"
            )
        return out

    def close(self) -> None:
        if self.postgres is not None:
            self.postgres.stop()


def sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def run(options: Options, workdir: Path, log: Callable[[str], None] = print) -> tuple[str, bool]:
    """Measure everything; return the Markdown section and whether every target was met."""
    began = time.perf_counter()
    load_start = load()
    plat = make_platform(options.seed, options.tenants)
    dbs = Databases(workdir, options.backends)
    try:
        versions = dbs.versions()
        reservations: list[Reservations] = []
        for backend in options.backends:
            for processes, threads, pace in options.layouts:
                url = dbs.new(backend, f"reserve_{processes}x{threads}")
                log(
                    f"reservations on {backend}, {layout_label(processes, threads, pace)},"
                    f" {options.warmup + options.duration:.0f} s"
                )
                res = measure_reservations(
                    url,
                    backend,
                    plat,
                    options.seed,
                    options.tenants,
                    processes,
                    threads,
                    options.duration,
                    options.warmup,
                    options.hold,
                    dbs.postgres if backend == "postgres" else None,
                    pace,
                )
                if res.problems:
                    raise AssertionError(f"{backend}, {res.label}: " + "; ".join(res.problems))
                s = summarize(res.reserve_ns)
                log(
                    f"  {res.rate:.0f} reserves/s, p50 {s['p50']:.1f} ms, p99 {s['p99']:.1f} ms; ledger checked ({res.ledger_runs} runs)"
                )
                reservations.append(res)
        log(f"generating a year of ledger for {options.users} people")
        t0 = time.perf_counter()
        year = make_year(options.seed, options.users, options.active)
        rollups = rollups_of(year.runs)
        log(
            f"  {len(year.closed):,} runs, {len(year.open)} running servers and {len(rollups):,} roll-up rows"
            f" in {time.perf_counter() - t0:.0f} s"
        )
        reports = []
        for backend in options.backends:
            store = Store(dbs.new(backend, "year"))
            verify_store = Store(dbs.new(backend, "replay"))
            try:
                reports.append(
                    measure_reports(store, backend, year, rollups, options.seed, options.repeats, verify_store, log)
                )
            finally:
                store.close()
                verify_store.close()
    finally:
        dbs.close()
    elapsed = time.perf_counter() - began
    return render(options, plat, year, versions, reservations, reports, load_start, elapsed)


def render(
    options: Options,
    plat: Platform,
    year: Year,
    versions: dict[str, str],
    reservations: Sequence[Reservations],
    reports: Sequence[Reports],
    load_start: float,
    elapsed: float,
) -> tuple[str, bool]:
    people = sum(len(p) for p in plat.people.values())
    gpus = sum(n for t in plat.tenants.values() for n in t.quota.gpus.values())
    sizes = sorted(len(p) for p in plat.people.values())
    spent = sum(1 for t in plat.tenants.values() if _history_hours(plat, t.id) >= (t.quota.gpu_hours_per_month or 0))
    lines = [
        f"Recorded {date.today().isoformat()} on {machine()}, load average {load_start:.2f} at the start;"
        f" Python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__};"
        f" {'; '.join(versions[b] for b in options.backends)}. Whole run {elapsed:.0f} s.",
        "",
        f"**Reservations.** {len(plat.tenants)} tenants (seed {options.seed}) of {sizes[0]} to {sizes[-1]} people"
        f" ({people:,} in all), {gpus} GPUs granted over H100, A100 and L40S, {len(plat.limits)} delegated limits,"
        f" {len(plat.history):,} runs earlier this month ({spent} tenants over their GPU-hour budget). Each client thread"
        f" asks for a random person's profile (tenants in proportion to their size) and holds up to {options.hold}"
        f" servers, releasing the oldest, without a pause (a paced layout: arrivals at random, on average at the"
        f" rate given); {options.warmup:.0f} s of warm-up, then {options.duration:.0f} s measured.",
        "",
        "| backend | clients | reserve calls/s | granted | reserve p50 (ms) | p99 (ms) | max (ms) | mean (ms)"
        " | release p50 (ms) | p99 (ms) | CPU per operation (ms) | load before/after | others' CPU |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for r in reservations:
        s, rel = summarize(r.reserve_ns), summarize(r.release_ns)
        operations = max(1, r.total_reserves + r.total_releases)
        cpu = f"{r.client_cpu / operations * 1000:.1f} client"
        if r.server_cpu is not None:
            cpu += f" + {r.server_cpu / operations * 1000:.1f} server"
        lines.append(
            f"| {r.backend} | {r.label} | {r.rate:,.0f} | {r.granted / max(1, len(r.reserve_ns)):.0%}"
            f" | {s['p50']:.1f} | {s['p99']:.1f} | {s['max']:.0f} | {s['mean']:.1f} | {rel['p50']:.1f}"
            f" | {rel['p99']:.1f} | {cpu} | {r.load_before:.1f} / {r.load_after:.1f} | {r.others_cpu:.0%} |"
        )
    codes: Counter[str] = Counter()
    for r in reservations:
        codes.update(r.codes)
    lines += [
        "",
        "Refusals by code (all runs): " + ", ".join(f"{c} {n:,}" for c, n in codes.most_common() if c != "ok") + ".",
        "Ledger checked after every run: "
        + "; ".join(
            f"{r.backend} {r.label}: {r.total_granted:,} granted = {r.ledger_runs:,} runs" for r in reservations
        )
        + ". Every refusal counted once, every run closed and rolled up once, and at no instant"
        " did a tenant's open runs exceed its ceiling (GPUs per type, servers, servers per person, CPU, memory)"
        " or a delegated limit, nor did a tenant over its GPU-hour budget get a GPU"
        f" (up to {max((r.peak_open for r in reservations), default=0)} servers open in one tenant at once).",
        "",
    ]
    for r in reservations:
        seen = sum(r.activity.values())
        if not seen:
            continue
        shares = ", ".join(f"{what} {n / seen:.0%}" for what, n in r.activity.most_common(6))
        lines.append(f"PostgreSQL backends inside a transaction, {r.label} (`pg_stat_activity` every 50 ms): {shares}.")
    lines.append("")
    met = True
    for r in reservations:
        if r.backend != "postgres":
            continue
        p99 = summarize(r.reserve_ns)["p99"]
        ok = p99 < TARGET_RESERVE_P99_MS
        met &= ok
        clients = r.processes * r.threads
        calls = (len(r.reserve_ns) + len(r.release_ns)) / r.duration
        cpu_per_call = (r.client_cpu + (r.server_cpu or 0.0)) / max(1, r.total_reserves + r.total_releases)
        why = ""
        if clients > 1 and not r.pace and calls and cpu_per_call:
            why = (
                f" {clients} clients that never pause and {calls:,.0f} reserve and release calls a second:"
                f" {clients / calls * 1000:,.0f} ms a call on average (Little's law); at {cpu_per_call * 1000:.1f} ms of CPU"
                f" a call, {os.cpu_count()} CPUs serve at most {(os.cpu_count() or 1) / cpu_per_call:,.0f} calls a second."
            )
        lines.append(
            f"Target p99 reserve < {TARGET_RESERVE_P99_MS:.0f} ms on PostgreSQL, {r.label}:"
            f" {'meets' if ok else 'MISSES'} it ({p99:.1f} ms).{why}"
        )
    if reports:
        first = reports[0]
        lines += [
            "",
            f"**Usage reports.** Tenant `{year.tenant.id}`: {options.users:,} people in"
            f" {len(year.tenant.member_groups)} groups, {len(year.closed):,} runs in 2026 (working days, 1-3 runs of"
            f" 1-10 h, 70 % with 1-8 GPUs) and {len(year.open)} servers running at {REPORT_NOW:%Y-%m-%d %H:%M} UTC:"
            f" {first.runs:,} `runs` and {first.rollups:,} `usage_rollups` rows, loaded in bulk as `Store` writes them"
            f" ({first.sample} runs replayed through `Store.record_run` gave identical rows); every report below was"
            " checked against sums computed from the runs.",
            "",
            "| backend | call | calls | p50 (ms) | p99 (ms) | max (ms) |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for rep in reports:
            for label, samples in rep.timings:
                s = summarize(samples)
                lines.append(
                    f"| {rep.backend} | {label} | {s['n']} | {s['p50']:.1f} | {s['p99']:.1f} | {s['max']:.1f} |"
                )
        lines.append("")
        lines.append(
            "Loading: "
            + "; ".join(
                f"{rep.backend} {rep.load_seconds:.0f} s, database {rep.size_bytes / 2**20:,.0f} MiB, load average after {rep.load_avg:.1f}"
                for rep in reports
            )
            + "."
        )
        lines.append("")
        for rep in reports:
            p99 = summarize(rep.timings[0][1])["p99"]
            ok = p99 < TARGET_YEAR_REPORT_MS
            met &= ok
            lines.append(
                f"Target a year's report < {TARGET_YEAR_REPORT_MS:.0f} ms, {rep.backend}: {'meets' if ok else 'MISSES'} it"
                f" (p99 {p99:.1f} ms)."
            )
    return "\n".join(lines), met


def _history_hours(plat: Platform, tenant: str) -> Decimal:
    ms = sum(
        sum(r.holding.gpus.values()) * int((r.ended - r.started).total_seconds() * 1000)
        for r in plat.history
        if r.holding.tenant == tenant and r.ended is not None
    )
    return Decimal(ms) / MS_PER_HOUR


def _layouts(value: str) -> tuple[tuple[int, int, float], ...]:
    out = []
    for part in value.split(","):
        found = re.fullmatch(r"\s*(\d+)x(\d+)(?:@(\d+(?:\.\d+)?))?\s*", part)
        if not found or int(found.group(1)) < 1 or int(found.group(2)) < 1:
            raise argparse.ArgumentTypeError(
                "layouts are PROCESSESxTHREADS[@RESERVES_PER_SECOND_EACH] separated by commas"
                f" (like 5x10,1x50,5x10@1), not {part!r}"
            )
        out.append((int(found.group(1)), int(found.group(2)), float(found.group(3) or 0)))
    return tuple(out)


def _backends(value: str) -> tuple[str, ...]:
    out = tuple(b.strip() for b in value.split(",") if b.strip())
    unknown = [b for b in out if b not in BACKENDS]
    if unknown or not out:
        raise argparse.ArgumentTypeError(f"backends are {' and '.join(BACKENDS)}, separated by commas, not {value!r}")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--client"]:
        return _client_main()
    defaults = Options()
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--tenants", type=int, default=defaults.tenants, help="tenants the clients spawn in (default 50)"
    )
    parser.add_argument(
        "--layouts",
        type=_layouts,
        default=defaults.layouts,
        help="client processes x threads[@reserves a second each] (default 1x1,5x10,1x50,5x10@1)",
    )
    parser.add_argument(
        "--duration", type=float, default=defaults.duration, help="seconds measured per layout and backend (default 15)"
    )
    parser.add_argument(
        "--warmup", type=float, default=defaults.warmup, help="seconds before that, not measured (default 2)"
    )
    parser.add_argument("--users", type=int, default=defaults.users, help="people of the report tenant (default 1000)")
    parser.add_argument(
        "--active",
        type=float,
        default=defaults.active,
        help="share of working days a person runs servers (default 0.6)",
    )
    parser.add_argument("--repeats", type=int, default=defaults.repeats, help="calls timed per report (default 50)")
    parser.add_argument("--backends", type=_backends, default=defaults.backends, help="sqlite,postgres (default both)")
    parser.add_argument(
        "--workdir", type=Path, help="where the databases go (default: a new temporary directory, removed)"
    )
    parser.add_argument(
        "--write", metavar="PATH", type=Path, help="record the results in this README, between the quotas markers"
    )
    args = parser.parse_args(argv)
    options = Options(
        args.seed,
        args.tenants,
        args.layouts,
        args.duration,
        args.warmup,
        defaults.hold,
        args.users,
        args.active,
        args.repeats,
        args.backends,
    )

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            section, _ = run(options, args.workdir.resolve(), log)
        else:
            with tempfile.TemporaryDirectory(prefix="aidc-bench-quotas-") as tmp:
                section, _ = run(options, Path(tmp), log)
    except AssertionError as e:
        print(f"quotas benchmark: the store gave a wrong answer, nothing recorded: {e}", file=sys.stderr)
        return 1
    except PostgresError as e:
        print(
            f"quotas benchmark: PostgreSQL did not start, nothing recorded: {e}\n"
            "Measure SQLite alone with --backends sqlite.",
            file=sys.stderr,
        )
        return 2
    print(section)
    if args.write:
        write_section(args.write, SECTION, section)
        print(f"recorded in {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
