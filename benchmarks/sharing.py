"""Sharing GPUs between tenants: a seeded day of demand replayed against a real Kueue, twice.

A day of GPU requests (tenants with different peak hours; Poisson arrivals at a rate that
follows each tenant's day; lognormal session lengths; 1 or 2 GPUs each; more demand than the
cluster's GPUs for part of the day) is generated from a seed, then replayed in compressed time
against the test control plane with KWOK GPU nodes (``tests/bed/cluster.py``) and Kueue v0.17
(``tests/bed/kueue.py``), with the tenants' ClusterQueues and LocalQueues made by the production
``TenantReconciler``, in two modes in the same run:

- ``static``: every tenant ``sharing.borrow`` 0 (no borrowing: a tenant uses its own ceiling only);
- ``sharing``: every tenant of one cohort may borrow up to the rest of the cluster, and gets its own
  GPUs back by preemption (``reclaimWithinCohort``).

Each request is a plain pod as the hub makes it (queue and priority labels, GPU toleration and
node selector, Pod Security "restricted"). Its session clock starts when Kueue admits it; a request
still waiting after its tenant's ``queue.max_wait`` is withdrawn and counted as a refusal (and
whether it fit its tenant's ceiling at some moment while it waited). Reported per mode, per tenant
and overall: GPU utilization while demand (GPUs admitted + GPUs waiting) is at or above the
cluster's GPUs, median and p95 wait, refusals, preemptions; and how quickly Kueue's visibility API
(what the spawn page shows) reflects a change of a queued request's position.

    .venv/bin/python -P benchmarks/sharing.py --quick                          # 2 tenants, ~5 min
    .venv/bin/python -P benchmarks/sharing.py                                  # the day, ~13 min
    .venv/bin/python -P benchmarks/sharing.py --write benchmarks/README.md     # and record it

Targets: utilization >= 0.9 while demand exceeds supply with sharing; no refusal of a request
that fits its tenant's ceiling within the maximum wait; the position shown within 2 s of a change.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import platform
import queue
import random
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# `python benchmarks/sharing.py` puts benchmarks/ first on sys.path, where benchmarks/quotas.py
# would shadow the `quotas` package; the repository root holds it, `benchmarks._readme` and the bed.
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != HERE]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from benchmarks._readme import cpus, write_section  # noqa: E402
from benchmarks._stats import nearest_rank  # noqa: E402

SECTION = "sharing"
GPU = "nvidia.com/gpu"
GPU_TYPE = "H100"
COHORT = "bench"
BENCH_LABEL = "aidc.io/bench"
HOUR = 3600.0
TARGET_UTILIZATION = 0.9
TARGET_POSITION_S = 2.0
HUB_QUEUE_POLL_S = 1.0  # TenantKubeSpawner.queue_poll_interval's default
HUB_PROGRESS_TICK_S = 0.5  # TenantKubeSpawner.progress looks at the queue status this often

# Sessions: lognormal, median 1.5 h (sigma 0.7: a quarter under 55 min, one in twenty over 4.7 h),
# kept within 15 min and 8 h; 1 GPU for two requests in three, 2 for the others.
SESSION_MEDIAN_H = 1.5
SESSION_SIGMA = 0.7
SESSION_MIN_H = 0.25
SESSION_MAX_H = 8.0
GPU_SHARES = ((1, 0.65), (2, 0.35))


# -- the day -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TenantSpec:
    """A tenant of the day: its ceiling (H100 GPUs) and the GPUs its people would keep busy if
    nothing held them back (the offered load), ``base_load`` off peak rising to ``peak_load`` at
    ``peak_hour`` (a Gaussian bump ``width_h`` wide, on the 24-hour circle)."""

    id: str
    ceiling: int
    peak_hour: float
    peak_load: float
    base_load: float
    width_h: float = 2.5

    def offered_load(self, hour: float) -> float:
        d = abs((hour - self.peak_hour + 12) % 24 - 12)
        return self.base_load + (self.peak_load - self.base_load) * math.exp(-(d * d) / (2 * self.width_h**2))

    def rate(self, hour: float) -> float:
        """Requests per hour at ``hour`` (Little's law: load = rate x mean session x mean GPUs)."""
        return self.offered_load(hour) / (mean_session_h() * mean_gpus())


@dataclass(frozen=True)
class Request:
    """One spawn: ``arrival`` and ``duration`` in simulated seconds (from the window's start)."""

    id: str
    tenant: str
    arrival: float
    gpus: int
    duration: float


@dataclass(frozen=True)
class Day:
    seed: int
    tenants: tuple[TenantSpec, ...]
    start_h: float
    hours: float
    requests: tuple[Request, ...]

    @property
    def capacity(self) -> int:
        return sum(t.ceiling for t in self.tenants)

    def expected_demand(self, hour: float) -> float:
        return sum(t.offered_load(hour) for t in self.tenants)

    def overloaded_hours(self, step_h: float = 0.25) -> list[float]:
        """Hours of the window (on a ``step_h`` grid) when the expected offered load exceeds the GPUs."""
        steps = int(round(self.hours / step_h))
        hours = (self.start_h + i * step_h for i in range(steps))
        return [h for h in hours if self.expected_demand(h) > self.capacity]


def mean_session_h() -> float:
    """The mean of the session-length law (the lognormal's; clipping moves it by under 2 %)."""
    return SESSION_MEDIAN_H * math.exp(SESSION_SIGMA**2 / 2)


def mean_gpus() -> float:
    return sum(n * p for n, p in GPU_SHARES)


def make_day(seed: int, tenants: Sequence[TenantSpec], start_h: float = 0.0, hours: float = 24.0) -> Day:
    """The requests of ``hours`` from ``start_h``: per tenant an inhomogeneous Poisson process of rate
    :meth:`TenantSpec.rate` (thinning), each with its own random stream, so a tenant's requests do not
    change when another tenant is added."""
    out: list[Request] = []
    for spec in tenants:
        rng = random.Random(f"{seed}:{spec.id}")
        top = max(spec.rate(h / 4) for h in range(96))
        t, n = 0.0, 0
        while True:
            t += rng.expovariate(top)
            if t >= hours:
                break
            if rng.random() * top > spec.rate(start_h + t):
                continue
            gpus = rng.choices([g for g, _ in GPU_SHARES], [p for _, p in GPU_SHARES])[0]
            length = min(
                SESSION_MAX_H, max(SESSION_MIN_H, rng.lognormvariate(math.log(SESSION_MEDIAN_H), SESSION_SIGMA))
            )
            out.append(Request(f"{spec.id}-{n:03d}", spec.id, t * HOUR, gpus, length * HOUR))
            n += 1
    out.sort(key=lambda r: (r.arrival, r.id))
    return Day(seed, tuple(tenants), start_h, hours, tuple(out))


FULL_TENANTS = (
    TenantSpec("morning", 4, 9.0, 9.0, 1.0),
    TenantSpec("midday", 4, 12.0, 9.0, 1.0),
    TenantSpec("afternoon", 4, 15.0, 9.0, 1.0),
    TenantSpec("evening", 4, 20.0, 9.0, 1.0),
)
QUICK_TENANTS = (
    TenantSpec("early", 8, 10.0, 14.0, 2.0),
    TenantSpec("late", 8, 14.0, 14.0, 2.0),
)


# -- what a replay records, and the figures computed from it -------------------------------------


@dataclass
class Outcome:
    """What happened to one request; times are wall-clock (``time.monotonic``)."""

    request: Request
    created: float | None = None
    admitted: float | None = None
    ended: float | None = None  # the replay deleted its pod at the end of its session
    preempted: float | None = None
    refused: float | None = None  # withdrawn after max_wait
    fit: bool = False  # at some look while it waited, it fit its tenant's ceiling
    fit_at: float | None = None  # the first such look

    @property
    def waiting(self) -> bool:
        return self.created is not None and self.admitted is None and self.refused is None

    @property
    def holding(self) -> bool:
        return self.admitted is not None and self.ended is None and self.preempted is None


@dataclass(frozen=True)
class Sample:
    """One look at the cluster: GPUs per tenant on a node (``held``), admitted by Kueue (``admitted``,
    placed or not yet) and waiting for admission (``waiting``)."""

    at: float
    held: Mapping[str, int]
    admitted: Mapping[str, int]
    waiting: Mapping[str, int]

    @property
    def demand(self) -> int:
        return sum(self.admitted.values()) + sum(self.waiting.values())


def fits_ceiling(tenant_admitted: int, ahead: int, gpus: int, ceiling: int) -> bool:
    """Whether a waiting request fits its tenant's ceiling now: the GPUs the tenant holds, those of
    its requests ahead in its queue (first in, first out) and its own, within the ceiling."""
    return tenant_admitted + ahead + gpus <= ceiling


@dataclass(frozen=True)
class Overload:
    """The samples where demand >= capacity: how many, the mean utilization, per tenant mean GPUs held."""

    samples: int
    total: int
    utilization: float
    held: Mapping[str, float]
    unplaced: float  # mean GPUs admitted by Kueue but not (yet) on a node


def overload(samples: Sequence[Sample], capacity: int, tenants: Iterable[str]) -> Overload:
    busy = [s for s in samples if s.demand >= capacity]
    names = list(tenants)
    if not busy:
        return Overload(0, len(samples), math.nan, {t: math.nan for t in names}, math.nan)
    util = sum(sum(s.held.values()) for s in busy) / (capacity * len(busy))
    held = {t: sum(s.held.get(t, 0) for s in busy) / len(busy) for t in names}
    unplaced = sum(sum(s.admitted.values()) - sum(s.held.values()) for s in busy) / len(busy)
    return Overload(len(busy), len(samples), util, held, unplaced)


@dataclass(frozen=True)
class Row:
    tenant: str
    requests: int
    gpu_hours: float  # asked, simulated
    admitted: int
    wait_p50_min: float  # simulated minutes, admitted requests
    wait_p95_min: float
    refused: int
    refused_fit: int
    preempted: int


def rows(outcomes: Iterable[Outcome], tenants: Sequence[str], compression: float) -> list[Row]:
    """Per tenant, then ``all``."""
    groups: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        groups[o.request.tenant].append(o)
        groups["all"].append(o)
    out = []
    for name in [*tenants, "all"]:
        group = groups.get(name, [])
        waits = [(o.admitted - o.created) * compression / 60 for o in group if o.admitted is not None and o.created]
        out.append(
            Row(
                name,
                len(group),
                sum(o.request.gpus * o.request.duration for o in group) / HOUR,
                sum(o.admitted is not None for o in group),
                nearest_rank(waits, 0.5),
                nearest_rank(waits, 0.95),
                sum(o.refused is not None for o in group),
                sum(o.refused is not None and o.fit for o in group),
                sum(o.preempted is not None for o in group),
            )
        )
    return out


@dataclass(frozen=True)
class Poll:
    """One answer of the visibility API for a LocalQueue: workload name -> position in it."""

    queue: str
    start: float
    end: float
    positions: Mapping[str, int]


@dataclass(frozen=True)
class Admission:
    queue: str
    workload: str
    at: float  # when the Workload watch saw it Admitted


@dataclass(frozen=True)
class Lag:
    seen: float  # from the admission to the first answer without it (others moved up)
    stale: float  # longest an answer begun after the admission still listed it (0: none)


def position_lags(admissions: Iterable[Admission], polls: Iterable[Poll]) -> list[Lag]:
    """For every admission of a workload the visibility API had listed with others behind it (so
    their positions change): how long until an answer no longer listed it, and how long answers
    begun after it still did."""
    by_queue: dict[str, list[Poll]] = defaultdict(list)
    for p in polls:
        by_queue[p.queue].append(p)
    for qp in by_queue.values():
        qp.sort(key=lambda p: p.start)
    out = []
    for a in admissions:
        qp = by_queue.get(a.queue, [])
        before = [p for p in qp if p.end <= a.at]
        if not before or a.workload not in before[-1].positions:
            continue
        mine = before[-1].positions[a.workload]
        if not any(pos > mine for pos in before[-1].positions.values()):
            continue
        i = next((i for i, p in enumerate(qp) if p.end >= a.at and a.workload not in p.positions), None)
        if i is None:
            continue
        # answers before that one still listed it; later ones may list it again (preempted: queued anew)
        stale = max((p.end - a.at for p in qp[:i] if p.start > a.at), default=0.0)
        out.append(Lag(max(0.0, qp[i].end - a.at), stale))
    return out


# -- the bed -------------------------------------------------------------------------------------


def tenants_file(specs: Sequence[TenantSpec], sharing: bool, max_wait: str, path: Path) -> Path:
    """tests/hub/tenants.yaml with these tenants: ceiling ``H100: n``, one cohort, and with ``sharing``
    each may borrow the rest of the cluster (else nothing)."""
    data = yaml.safe_load((REPO / "tests" / "hub" / "tenants.yaml").read_text())
    capacity = sum(s.ceiling for s in specs)
    data.pop("datasets", None)
    data["tenants"] = [
        {
            "id": s.id,
            "display_name": f"Tenant {s.id}",
            "kind": "university",
            "members": {"users": [f"{s.id}-user"]},
            "admins": [f"{s.id}-admin"],
            "profiles": ["h100-x1", "h100-x2"],
            "quota": {"gpus": {GPU_TYPE: s.ceiling}, "servers": 200, "servers_per_user": 200},
            "sharing": {"cohort": COHORT, "borrow": {GPU_TYPE: capacity - s.ceiling if sharing else 0}},
            "queue": {"max_wait": max_wait, "max_length": 200},
        }
        for s in specs
    ]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# what Pod Security "restricted" asks of a container (the tenant namespaces enforce it)
RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def pod_for(request: Request, name: str, mode: str, product: str, grace: int) -> dict[str, Any]:
    """The pod of a request, shaped like the hub's (queue and priority labels, GPU toleration and node
    selector, Pod Security "restricted"); nothing runs in it (KWOK)."""
    from spawner.kube_objects import (
        GPU_PRODUCT_LABEL,
        GPU_TAINT_KEY,
        LOCAL_QUEUE,
        PRIORITY_CLASS,
        PRIORITY_LABEL,
        QUEUE_LABEL,
        TENANT_LABEL,
    )

    resources = {GPU: str(request.gpus), "cpu": "1", "memory": "1Gi"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {
                QUEUE_LABEL: LOCAL_QUEUE,
                PRIORITY_LABEL: PRIORITY_CLASS,
                TENANT_LABEL: request.tenant,
                BENCH_LABEL: mode,
            },
        },
        "spec": {
            "terminationGracePeriodSeconds": grace,
            "automountServiceAccountToken": False,
            "nodeSelector": {GPU_PRODUCT_LABEL: product},
            "tolerations": [{"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [
                {
                    "name": "notebook",
                    "image": "registry.invalid/aidc/pytorch:bench",
                    "resources": {"requests": dict(resources), "limits": dict(resources)},
                    "securityContext": dict(RESTRICTED),
                }
            ],
        },
    }


class Api:
    """The kube-apiserver as the admin, one ``requests.Session`` per thread."""

    def __init__(self, server: str, pki: Path) -> None:
        self.server = server
        self.cert = (str(pki / "admin.crt"), str(pki / "admin.key"))
        self.verify = str(pki / "ca.crt")
        self._local = threading.local()

    def session(self) -> Any:
        import requests

        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def call(self, method: str, path: str, timeout: float | tuple[float, float] = 20, **kw: Any) -> Any:
        # cert and CA per call: a Session's own are overridden by REQUESTS_CA_BUNDLE and the like
        return self.session().request(
            method, self.server + path, timeout=timeout, cert=self.cert, verify=self.verify, **kw
        )

    def json(self, path: str, **kw: Any) -> dict[str, Any]:
        r = self.call("GET", path, **kw)
        r.raise_for_status()
        return dict(r.json())


def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for c in obj.get("status", {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return dict(c)
    return None


def _owner_pod(wl: Mapping[str, Any]) -> str | None:
    return next((o["name"] for o in wl["metadata"].get("ownerReferences", []) if o.get("kind") == "Pod"), None)


def watch_workloads(api: Api, stop: threading.Event, events: queue.Queue[tuple[str, float, str, str, str]]) -> None:
    """Put ``(kind, at, namespace, pod, workload)`` for every Workload first seen Admitted
    (``admitted``) or evicted by preemption (``preempted``), from a list then a watch, until ``stop``."""
    from spawner.kube_objects import KUEUE_API

    seen: set[tuple[str, str]] = set()

    def handle(wl: Mapping[str, Any]) -> None:
        meta = wl["metadata"]
        pod = _owner_pod(wl)
        if pod is None or not meta["namespace"].startswith("aidc-"):
            return
        now = time.monotonic()
        evicted = _condition(wl, "Evicted")
        kinds = {
            "admitted": _condition(wl, "Admitted") is not None,
            "preempted": _condition(wl, "Preempted") is not None
            or (evicted is not None and evicted.get("reason") == "Preempted"),
        }
        for kind, yes in kinds.items():
            if yes and (kind, meta["uid"]) not in seen:
                seen.add((kind, meta["uid"]))
                events.put((kind, now, meta["namespace"], pod, meta["name"]))

    path = f"/apis/{KUEUE_API}/workloads"
    while not stop.is_set():
        try:
            listed = api.json(path)
            for wl in listed.get("items", []):
                handle(wl)
            params = {"watch": "1", "resourceVersion": listed["metadata"]["resourceVersion"], "timeoutSeconds": "5"}
            with api.call("GET", path, params=params, stream=True, timeout=(10, 30)) as r:
                buf = b""
                for chunk in r.raw.stream(None, decode_content=True):
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        event = json.loads(line)
                        if event.get("type") in ("ADDED", "MODIFIED"):
                            handle(event["object"])
                    if stop.is_set():
                        break
        except Exception:  # noqa: BLE001 - a dropped watch is listed again
            stop.wait(0.5)


def poll_positions(api: Api, namespaces: Sequence[str], period: float, stop: threading.Event, out: list[Poll]) -> None:
    """Ask the visibility API for every LocalQueue's pending workloads in turn, each every ``period`` s."""
    from spawner.kube_objects import LOCAL_QUEUE
    from tests.bed.kueue import VISIBILITY_GROUP, VISIBILITY_VERSIONS

    gap = period / max(1, len(namespaces))
    while not stop.is_set():
        for ns in namespaces:
            path = (
                f"/apis/{VISIBILITY_GROUP}/{VISIBILITY_VERSIONS[0]}/namespaces/{ns}"
                f"/localqueues/{LOCAL_QUEUE}/pendingworkloads"
            )
            start = time.monotonic()
            try:
                items = api.json(path, timeout=10).get("items") or []
            except Exception:  # noqa: BLE001 - a failed look is just missing
                items = None
            end = time.monotonic()
            if items is not None:
                positions = {i["metadata"]["name"]: int(i.get("positionInLocalQueue", 0)) for i in items}
                out.append(Poll(ns, start, end, positions))
            if stop.wait(max(0.0, gap - (end - start))):
                return


# -- one replay ----------------------------------------------------------------------------------


@dataclass
class ModeResult:
    mode: str
    outcomes: list[Outcome]
    samples: list[Sample]
    polls: list[Poll]
    admissions: list[Admission]
    wall: float
    load_before: float
    load_after: float
    problems: list[str] = field(default_factory=list)


class Replay:
    """Replays ``day`` in one mode: ``compression`` simulated seconds per wall second."""

    def __init__(
        self,
        api: Api,
        day: Day,
        mode: str,
        compression: float,
        max_wait_s: float,
        product: str,
        log: Callable[[str], None],
        sample_every: float = 0.5,
        position_period: float = 0.5,
    ) -> None:
        self.api, self.day, self.mode = api, day, mode
        self.compression = compression
        self.max_wait = max_wait_s / compression  # wall seconds
        self.product = product
        self.log = log
        self.sample_every = sample_every
        self.position_period = position_period
        self.ceiling = {t.id: t.ceiling for t in day.tenants}
        self.ns = {t.id: f"aidc-{t.id}" for t in day.tenants}
        self.outcomes = {self.pod_name(r): Outcome(r) for r in day.requests}
        self.samples: list[Sample] = []
        self.polls: list[Poll] = []
        self.admissions: list[Admission] = []
        # the hub's preemption grace (5 min), compressed like everything else
        self.grace = max(1, round(300 / compression))

    def pod_name(self, r: Request) -> str:
        return f"{self.mode}-{r.id}"

    def run(self) -> ModeResult:
        stop = threading.Event()
        events: queue.Queue[tuple[str, float, str, str, str]] = queue.Queue()
        threads = [
            threading.Thread(target=watch_workloads, args=(self.api, stop, events), daemon=True),
            threading.Thread(
                target=poll_positions,
                args=(self.api, list(self.ns.values()), self.position_period, stop, self.polls),
                daemon=True,
            ),
        ]
        for t in threads:
            t.start()
        load_before = os.getloadavg()[0]
        t0 = time.monotonic() + 1.0
        end = t0 + self.day.hours * HOUR / self.compression
        arrivals = [(t0 + r.arrival / self.compression, self.pod_name(r)) for r in self.day.requests]
        arrivals.reverse()
        ends: list[tuple[float, str]] = []
        next_sample = t0
        last_log = t0
        try:
            while (now := time.monotonic()) < end:
                while arrivals and arrivals[-1][0] <= now:
                    self.create(arrivals.pop()[1])
                self.drain(events, ends)
                now = time.monotonic()
                while ends and ends[0][0] <= now:
                    _, name = heapq.heappop(ends)
                    o = self.outcomes[name]
                    if o.holding:
                        o.ended = time.monotonic()
                        self.delete(name, o.request.tenant)
                for name, o in self.outcomes.items():
                    if o.waiting and o.created is not None and now - o.created >= self.max_wait:
                        o.refused = now
                        self.delete(name, o.request.tenant)
                if now >= next_sample:
                    self.sample(now)
                    next_sample += self.sample_every
                if now - last_log >= 30:
                    last_log = now
                    s = self.samples[-1] if self.samples else None
                    hour = self.day.start_h + (now - t0) * self.compression / HOUR
                    self.log(
                        f"  {self.mode} {hour % 24:05.2f} h: "
                        + (f"{sum(s.held.values())} GPUs held, demand {s.demand}" if s else "")
                    )
                wake = min([arrivals[-1][0] if arrivals else end, ends[0][0] if ends else end, next_sample, end])
                time.sleep(max(0.0, min(0.1, wake - time.monotonic())))
            self.drain(events, ends)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=15)
        problems = [f"{name}: never created" for name, o in self.outcomes.items() if o.created is None]
        return ModeResult(
            self.mode,
            list(self.outcomes.values()),
            self.samples,
            self.polls,
            self.admissions,
            end - t0,
            load_before,
            os.getloadavg()[0],
            problems,
        )

    def create(self, name: str) -> None:
        o = self.outcomes[name]
        body = pod_for(o.request, name, self.mode, self.product, self.grace)
        o.created = time.monotonic()
        r = self.api.call("POST", f"/api/v1/namespaces/{self.ns[o.request.tenant]}/pods", json=body)
        if r.status_code != 201:
            raise RuntimeError(f"creating pod {name}: {r.status_code} {r.text[:500]}")

    def delete(self, name: str, tenant: str) -> None:
        r = self.api.call(
            "DELETE", f"/api/v1/namespaces/{self.ns[tenant]}/pods/{name}", params={"gracePeriodSeconds": "0"}
        )
        if r.status_code not in (200, 202, 404):
            raise RuntimeError(f"deleting pod {name}: {r.status_code} {r.text[:500]}")

    def drain(self, events: queue.Queue[tuple[str, float, str, str, str]], ends: list[tuple[float, str]]) -> None:
        while True:
            try:
                kind, at, ns, pod, workload = events.get_nowait()
            except queue.Empty:
                return
            o = self.outcomes.get(pod)
            if o is None:
                continue
            if kind == "admitted":
                self.admissions.append(Admission(ns, workload, at))
                self.admit(o, pod, at, ends)
            elif kind == "preempted" and o.admitted is not None and o.ended is None and o.preempted is None:
                o.preempted = at

    def admit(self, o: Outcome, pod: str, at: float, ends: list[tuple[float, str]]) -> None:
        if o.admitted is not None or o.refused is not None:
            return
        o.admitted = at
        heapq.heappush(ends, (at + o.request.duration / self.compression, pod))

    def sample(self, now: float) -> None:
        from spawner.kube_objects import TENANT_LABEL

        pods = self.api.json("/api/v1/pods", params={"labelSelector": f"{BENCH_LABEL}={self.mode}"})["items"]
        held: dict[str, int] = defaultdict(int)
        admitted: dict[str, int] = defaultdict(int)
        present = set()
        for p in pods:
            name = p["metadata"]["name"]
            o = self.outcomes.get(name)
            if o is None or p["metadata"].get("deletionTimestamp"):
                continue
            present.add(name)
            if p["spec"].get("schedulingGates"):
                continue
            tenant = p["metadata"]["labels"][TENANT_LABEL]
            if o.admitted is None and o.refused is None:  # the watch has not said so yet
                o.admitted = now
            if o.preempted is None and o.ended is None:
                admitted[tenant] += o.request.gpus
                if p["spec"].get("nodeName"):
                    held[tenant] += o.request.gpus
        for name, o in self.outcomes.items():  # gone without our deleting it: preempted
            if o.holding and name not in present and o.created is not None:
                o.preempted = now
        waiting: dict[str, int] = defaultdict(int)
        for o in sorted((o for o in self.outcomes.values() if o.waiting), key=lambda o: o.created or 0.0):
            t = o.request.tenant
            if fits_ceiling(admitted[t], waiting[t], o.request.gpus, self.ceiling[t]):
                o.fit = True
                o.fit_at = now if o.fit_at is None else o.fit_at
            waiting[t] += o.request.gpus
        self.samples.append(Sample(now, dict(held), dict(admitted), dict(waiting)))

    def clean_up(self, timeout: float = 120) -> None:
        """Delete every pod of this mode and wait until Kueue holds nothing for them."""
        from spawner.kube_objects import KUEUE_API

        for ns in self.ns.values():
            self.api.call(
                "DELETE",
                f"/api/v1/namespaces/{ns}/pods",
                params={"labelSelector": f"{BENCH_LABEL}={self.mode}", "gracePeriodSeconds": "0"},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pods = self.api.json("/api/v1/pods", params={"labelSelector": BENCH_LABEL})["items"]
            wls = [w for w in self.api.json(f"/apis/{KUEUE_API}/workloads")["items"] if _owner_pod(w)]
            if not pods and not wls:
                return
            time.sleep(0.5)
        raise RuntimeError(f"{self.mode}: pods or workloads left {timeout:.0f} s after the replay")


# -- the run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    seed: int = 2026
    quick: bool = False
    minutes: float = 6.0  # wall minutes per mode
    max_wait: str = "1h"
    modes: tuple[str, ...] = ("static", "sharing")

    def day(self) -> Day:
        if self.quick:
            return make_day(self.seed, QUICK_TENANTS, start_h=8.0, hours=8.0)
        return make_day(self.seed, FULL_TENANTS)


def parse_wait(text: str) -> float:
    from quotas.loader import parse_duration

    return parse_duration(text).total_seconds()


def run(options: Options, workdir: Path, log: Callable[[str], None]) -> tuple[Day, list[ModeResult], dict[str, Any]]:
    from quotas.loader import load_platform
    from spawner.reconciler import TenantReconciler
    from tests.bed.cluster import H100, ControlPlane
    from tests.bed.kueue import Kueue

    day = options.day()
    compression = day.hours * HOUR / (options.minutes * 60)
    info: dict[str, Any] = {"compression": compression, "started": datetime.now(UTC), "load": os.getloadavg()[0]}
    info["other_planes"] = other_control_planes(str(workdir))
    t_start = time.monotonic()
    log(f"sharing: {len(day.requests)} requests over {day.hours:g} h, compressed {compression:.0f}x; starting the bed")
    with ControlPlane(workdir / "plane") as plane, Kueue(plane, workdir / "kueue") as kueue:
        info["bed_s"] = time.monotonic() - t_start
        api_client = plane.api_client()
        api = Api(plane.server, plane.pki)
        api.call("POST", "/api/v1/namespaces", json={"metadata": {"name": "aidc"}})
        results = []
        for mode in options.modes:
            path = tenants_file(day.tenants, mode == "sharing", options.max_wait, workdir / f"tenants-{mode}.yaml")
            config = load_platform(path, REPO / "images" / "catalog.yaml")
            TenantReconciler(api_client, config, hub_namespace="aidc", kueue=True).reconcile()
            _wait_queues_active(api, [t.id for t in day.tenants])
            replay = Replay(api, day, mode, compression, parse_wait(options.max_wait), H100, log)
            log(f"sharing: replaying the day, {mode} ({options.minutes:g} min)")
            results.append(replay.run())
            replay.clean_up()
            records = {"outcomes": [asdict(o) for o in results[-1].outcomes], "samples": results[-1].samples}
            (workdir / f"replay-{mode}.json").write_text(json.dumps(records, default=asdict))
        info["kueue_log"] = str(kueue.log_path)
    info["wall"] = time.monotonic() - t_start
    return day, results, info


def _wait_queues_active(api: Api, tenants: Sequence[str], timeout: float = 60) -> None:
    from spawner.kube_objects import KUEUE_API, cluster_queue_name

    deadline = time.monotonic() + timeout
    for t in tenants:
        while _condition(api.json(f"/apis/{KUEUE_API}/clusterqueues/{cluster_queue_name(t)}"), "Active") is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"ClusterQueue of {t} not Active after {timeout:.0f} s")
            time.sleep(0.3)


def other_control_planes(marker: str) -> int:
    """kube-apiservers on this machine that are not ours: a colleague's beds share the CPUs."""
    count = 0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmd = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        count += "/kube-apiserver " in cmd and marker not in cmd
    return count


# -- report --------------------------------------------------------------------------------------


def _f(value: float, digits: int = 1) -> str:
    return "—" if math.isnan(value) else f"{value:.{digits}f}"


def _hm(hour: float) -> str:
    """``9.5`` -> ``"09:30"``; the day's end is ``"24:00"``."""
    minutes = round(hour * 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _spans(hours: Sequence[float], step: float = 0.25) -> str:
    if not hours:
        return "never"
    spans, first, last = [], hours[0], hours[0]
    for h in hours[1:]:
        if h - last > step + 1e-9:
            spans.append((first, last + step))
            first = h
        last = h
    spans.append((first, last + step))
    return ", ".join(f"{_hm(a)}-{_hm(b)}" for a, b in spans)


def report(options: Options, day: Day, results: Sequence[ModeResult], info: Mapping[str, Any], command: str) -> str:
    compression = float(info["compression"])
    names = [t.id for t in day.tenants]
    lines = [
        f"Recorded {info['started']:%Y-%m-%d} on {cpus()}, {platform.system()} {platform.release()}, load average"
        f" {info['load']:.2f} at the start, {info['other_planes']} other control plane(s) running;"
        f" Python {platform.python_version()}, Kueue v0.17.0 and the KWOK control plane of the test bed"
        f" (2 nodes x 8 H100). Bed up in {info['bed_s']:.0f} s; whole run {info['wall']:.0f} s."
        f" Command: `{command}`.",
        "",
        f"Day (seed {day.seed}): {len(day.tenants)} tenants of {', '.join(str(t.ceiling) for t in day.tenants)} H100"
        f" ({day.capacity} = the cluster's H100s), peaks at "
        + ", ".join(f"{t.id} {_hm(t.peak_hour)}" for t in day.tenants)
        + f"; {len(day.requests)} requests ({sum(r.gpus == 2 for r in day.requests)} for 2 GPUs),"
        f" {sum(r.gpus * r.duration for r in day.requests) / HOUR:.0f} GPU-hours asked over"
        f" {_hm(day.start_h)}-{_hm(day.start_h + day.hours)}; expected demand above {day.capacity} GPUs"
        f" {_spans(day.overloaded_hours())}. Replayed {compression:.0f}x faster ({options.minutes:g} min a mode:"
        f" 1 s = {compression / 60:.1f} min); median session {SESSION_MEDIAN_H * HOUR / compression:.0f} s of wall"
        f" time; max_wait {options.max_wait} ({parse_wait(options.max_wait) / compression:.0f} s).",
        "",
        "| mode | tenant | requests | GPU-h asked | admitted | wait p50 (min) | wait p95 (min) | refused"
        " | refused that fit the ceiling | preempted | GPUs held while demand ≥ supply |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    summary: dict[str, Overload] = {}
    for res in results:
        ov = overload(res.samples, day.capacity, names)
        summary[res.mode] = ov
        for row in rows(res.outcomes, names, compression):
            if row.tenant == "all":
                held = f"**{_f(ov.utilization * day.capacity)} of {day.capacity} = {_f(ov.utilization, 2)}**"
            else:
                held = f"{_f(ov.held[row.tenant])} of {dict((t.id, t.ceiling) for t in day.tenants)[row.tenant]}"
            lines.append(
                f"| {res.mode} | {row.tenant} | {row.requests} | {row.gpu_hours:.0f} | {row.admitted} |"
                f" {_f(row.wait_p50_min)} | {_f(row.wait_p95_min)} | {row.refused} | {row.refused_fit} |"
                f" {row.preempted} | {held} |"
            )
    lines.append("")
    for res in results:
        ov = summary[res.mode]
        share = ov.samples / ov.total if ov.total else math.nan
        lines.append(
            f"{res.mode}: demand ≥ supply in {ov.samples} of {ov.total} looks ({_f(share * 100, 0)} % of the day,"
            f" {_f(share * day.hours)} h); meanwhile {_f(ov.unplaced, 2)} GPUs on average admitted by Kueue but"
            f" not yet on a node. Replay {res.wall:.0f} s, load average {res.load_before:.2f} before,"
            f" {res.load_after:.2f} after."
        )
    lines.append("")
    lag_max = math.nan
    for res in results:
        lags = position_lags(res.admissions, res.polls)
        answers = [p.end - p.start for p in res.polls]
        seen = [x.seen for x in lags]
        stale = [x.stale for x in lags]
        if seen:
            lag_max = max(seen) if math.isnan(lag_max) else max(lag_max, *seen)
        lines.append(
            f"Position ({res.mode}): {len(lags)} admissions with others queued behind; a look at every queue every"
            f" 0.5 s saw the positions move up {_f(nearest_rank(seen, 0.5), 2)} s after the admission (median),"
            f" {_f(nearest_rank(seen, 0.95), 2)} s (p95), {_f(max(seen, default=math.nan), 2)} s (max);"
            f" answers begun after an admission still listing it: {sum(s > 0 for s in stale)}"
            f" (longest {_f(max(stale, default=0.0), 2)} s). Visibility API answers ({len(answers)}):"
            f" p50 {_f(nearest_rank(answers, 0.5) * 1000, 0)} ms, p95 {_f(nearest_rank(answers, 0.95) * 1000, 0)} ms,"
            f" max {_f(max(answers, default=math.nan) * 1000, 0)} ms."
        )
    lines.append("")
    static = summary.get("static")
    sharing = summary.get("sharing")
    if sharing is not None:
        u = sharing.utilization
        ok = not math.isnan(u) and u >= TARGET_UTILIZATION
        lines.append(
            f"Target utilization ≥ {TARGET_UTILIZATION} while demand exceeds supply, with sharing:"
            f" {'meets it' if ok else 'MISSES it'} ({_f(u, 2)}; static partition {_f(static.utilization, 2) if static else '—'})."
        )
    fit = {res.mode: sum(o.refused is not None and o.fit for o in res.outcomes) for res in results}
    early = {
        res.mode: sorted(
            (o.refused - o.fit_at) * compression / 60
            for o in res.outcomes
            if o.refused is not None and o.fit_at is not None
        )
        for res in results
    }
    lines.append(
        "Target no refusal of a request that fit its tenant's ceiling within the maximum wait: "
        + ("meets it" if not any(fit.values()) else "MISSES it")
        + " ("
        + ", ".join(
            f"{m} {n}" + (f": first fit {', '.join(_f(x) for x in early[m])} min before it was withdrawn" if n else "")
            for m, n in fit.items()
        )
        + ")."
    )
    answers_all = [p.end - p.start for res in results for p in res.polls]
    stale_all = [x.stale for res in results for x in position_lags(res.admissions, res.polls)]
    bound = max(stale_all, default=0.0) + HUB_QUEUE_POLL_S + HUB_PROGRESS_TICK_S + 2 * max(answers_all, default=0.0)
    ok = not math.isnan(lag_max) and lag_max <= TARGET_POSITION_S and bound <= TARGET_POSITION_S
    lines.append(
        f"Target position shown within {TARGET_POSITION_S:g} s of a change: {'meets it' if ok else 'MISSES it'}"
        f" (seen at most {_f(lag_max, 2)} s after an admission; the spawn page, which asks every"
        f" {HUB_QUEUE_POLL_S:g} s (two GETs) and refreshes every {HUB_PROGRESS_TICK_S:g} s, at worst"
        f" {_f(bound, 2)} s)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    defaults = Options()
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--quick", action="store_true", help="2 tenants of 8 H100, 08:00-16:00, 2 min a mode")
    parser.add_argument("--minutes", type=float, help="wall minutes per mode (default 6; 2 with --quick)")
    parser.add_argument("--max-wait", default=defaults.max_wait, help="the tenants' queue.max_wait (default 1h)")
    parser.add_argument("--modes", default="static,sharing", help="static,sharing (default both, in that order)")
    parser.add_argument("--workdir", type=Path, help="where the bed's files go (default: a temporary directory)")
    parser.add_argument("--write", metavar="PATH", type=Path, help="record the results in this README")
    args = parser.parse_args(argv)
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    if not modes or set(modes) - {"static", "sharing"}:
        parser.error(f"modes are static and sharing, separated by commas, not {args.modes!r}")
    minutes = args.minutes if args.minutes is not None else (2.0 if args.quick else defaults.minutes)
    if minutes <= 0:
        parser.error("--minutes must be positive")
    parse_wait(args.max_wait)
    options = Options(args.seed, args.quick, minutes, args.max_wait, modes)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    command = " ".join([".venv/bin/python -P benchmarks/sharing.py", *argv])
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        day, results, info = run(options, args.workdir.resolve(), log)
    else:
        with tempfile.TemporaryDirectory(prefix="aidc-bench-sharing-") as tmp:
            day, results, info = run(options, Path(tmp), log)
    problems = [p for r in results for p in r.problems]
    if problems:
        print("sharing benchmark: the replay went wrong, nothing recorded:\n" + "\n".join(problems), file=sys.stderr)
        return 1
    section = report(options, day, results, info, command)
    print(section)
    if args.write:
        write_section(args.write, SECTION, section)
        log(f"recorded in {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
