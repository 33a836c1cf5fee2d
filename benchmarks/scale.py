"""Steady state at data-center size: one hub holding thousands of running servers on KWOK.

For each size (by default 1/10, 1/3 and all of: 1,000 GPU nodes, 500 tenants, 10,000 users,
3,000 running servers) the script starts a fresh test control plane (``tests/bed/cluster.py``)
with KWOK GPU nodes of 8 GPUs each (H100, A100, L40S, and A100s split in MIG 1g.10gb slices),
writes a tenants.yaml of long-tailed tenants (one big tenant holding a tenth of the people; one
person in 50 in three tenants), and measures:

- a full ``aidc reconcile`` of every tenant (the CLI, first pass and no-op pass);
- the production hub (``spawner_class = aidc-kube``, configurable-http-proxy, the quotas service
  that runs the culler, the SSH gateway) reaching S running servers through its REST API, 50
  spawns in flight at a time, homes bound already; every pod answered by ``spawn_k8s.py``'s
  responder;
- at rest for ``--rest`` seconds (default 300): every server posts its activity once with its own
  token (``JUPYTERHUB_API_TOKEN`` of its pod), spread evenly, as jupyterhub-singleuser does every
  5 minutes; the hub's own route checks and activity sweep and the culler's rounds run as in
  production. Sampled: CPU and RSS of the hub, the proxy and the quotas service (``/proc``);
- ``GET /hub/api/users`` pages, one round of the culler (``quotas.culler.Culler.run_once``, the
  code the service runs, called here against the hub with a platform admin's token), the spawn
  form of a person in three tenants, and the first paint in Chromium of the hub's admin page and of
  the quotas page of the biggest tenant;
- a hub restart (SIGKILL of the hub alone, then start): time until ``/hub/health`` answers and
  until ``GET /hub/api/users?state=ready`` lists all S; pods lost or restarted (their UIDs).

    .venv/bin/python -P benchmarks/scale.py --custom 30:20:300:100 --rest 60     # a quick small run
    .venv/bin/python -P benchmarks/scale.py --rest-small 180 --write benchmarks/README.md   # make bench-scale

``--reflector``: ``cluster`` (the default) is TenantKubeSpawner as it ships, with one watch of pods
and one of events for all tenant namespaces (``watch_all_namespaces``); ``namespace`` turns that
off, for KubeSpawner's watches per tenant namespace: past about 50 namespaces with servers they
hold every connection of the hub's Kubernetes client and spawns stall (docs/scale.md).

Targets (full size, this machine): hub CPU at rest < 0.3 core, hub RSS < 1.5 GiB, restart to
serving < 60 s, quotas page first paint < 1.5 s, no-op reconcile < 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import aiohttp
import requests
import yaml
from kubernetes import client

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the test bed lives in tests/bed, not in an installed package
    sys.path.insert(0, str(REPO))

from benchmarks._readme import cpus, write_section  # noqa: E402
from benchmarks._stats import nearest_rank  # noqa: E402
from benchmarks.spawn_k8s import (  # noqa: E402
    HOME_CAPACITY,
    HOME_CLASS,
    HUB_NAMESPACE,
    Responder,
    check_through_proxy,
    cpu_seconds,
    create_homes,
    memory_kib,
    our_processes,
    wait_for,
)
from quotas.culler import Culler  # noqa: E402
from quotas.loader import load_platform  # noqa: E402
from quotas.store import Store  # noqa: E402
from tests.bed.cluster import A100, H100, ControlPlane, _gpu_labels, _node  # noqa: E402
from tests.bed.hub import Client, Hub  # noqa: E402
from tests.bed.podrunner import SELECTOR  # noqa: E402

SECTION = "scale"
CATALOG = REPO / "images" / "catalog.yaml"
PRODUCTION_CONFIG = REPO / "hub_config" / "jupyterhub_config.py"
FULL = {"nodes": 1000, "tenants": 500, "users": 10000, "servers": 3000}
TARGETS = {"hub_cpu": 0.3, "hub_rss_gib": 1.5, "restart": 60.0, "quotas_fcp": 1.5, "noop_reconcile": 30.0}
ADMIN_PASSWORD = "admin-password-1"
PERSON_PASSWORD = "person-password-1"
IN_FLIGHT = 50  # spawns in flight at a time
ACTIVITY_INTERVAL = 300  # seconds between two activity posts of one server (jupyterhub-singleuser)
L40S = "NVIDIA-L40S"
# (gpu type, profile, share of the nodes)
GPU_KINDS = [
    ("H100", "h100-x1", 0.4),
    ("A100", "a100-x1", 0.25),
    ("L40S", "l40s-x1", 0.2),
    ("A100-1g.10gb", "a100-mig", 0.15),
]
CHROMIUM = Path(os.environ.get("AIDC_CHROMIUM", "/usr/bin/chromium"))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the data center


@dataclass(frozen=True)
class Size:
    nodes: int
    tenants: int
    users: int
    servers: int

    @property
    def label(self) -> str:
        return f"{self.nodes:,} nodes / {self.tenants} tenants / {self.users:,} users / {self.servers:,} servers"


def gpu_nodes(count: int) -> list[dict[str, Any]]:
    """``count`` KWOK GPU nodes of 8 GPUs each: H100, A100, L40S, and A100s split in 7 MIG slices each."""
    nodes = []
    made = 0
    for i, (kind, _, share) in enumerate(GPU_KINDS):
        n = count - made if i == len(GPU_KINDS) - 1 else round(count * share)
        made += n
        for j in range(n):
            name = f"{kind.lower().replace('.', '-')}-{j}"
            if kind == "A100-1g.10gb":
                labels = _gpu_labels(
                    A100, 8, **{"nvidia.com/mig.strategy": "mixed", "nvidia.com/mig-1g.10gb.count": "56"}
                )
                extra = {"nvidia.com/mig-1g.10gb": "56"}
            else:
                product = {"H100": H100, "A100": A100, "L40S": L40S}[kind]
                labels, extra = _gpu_labels(product, 8), {"nvidia.com/gpu": "8"}
            nodes.append(_node(name, cpu="128", memory="2Ti", labels=labels, extra=extra, gpu=True))
    return nodes


@dataclass
class Platform:
    yaml_text: str
    tenant_of: dict[str, str]  # each server's user -> the tenant it spawns in
    profile_of_tenant: dict[str, str]
    servers: list[str]  # users that run a server
    big_tenant: str
    big_members: int
    multi: str  # a person in three tenants without a server (the spawn form)
    multi_tenants: list[str]


def make_platform(size: Size) -> Platform:
    """Tenants of long-tailed sizes: ``t000`` holds a tenth of the people, the rest are spread over
    the others; one person in 50 also belongs to two more tenants. Servers: every (users/servers)-th
    person, in their first tenant, on the GPU profile of that tenant."""
    users = [f"u{i:05d}" for i in range(size.users)]
    tenants = [f"t{i:03d}" for i in range(size.tenants)]
    big = max(1, size.users // 10)
    members: dict[str, list[str]] = {t: [] for t in tenants}
    first: dict[str, str] = {}
    for i, u in enumerate(users):
        t = tenants[0] if i < big or size.tenants == 1 else tenants[1 + (i - big) % (size.tenants - 1)]
        members[t].append(u)
        first[u] = t
    multi_people = [u for i, u in enumerate(users) if i % 50 == 7]
    for k, u in enumerate(multi_people):
        for step in (1, 2):
            other = tenants[(tenants.index(first[u]) + step * (k + 1)) % size.tenants]
            if u not in members[other]:
                members[other].append(u)
    profile_of = {t: GPU_KINDS[i % len(GPU_KINDS)][1] for i, t in enumerate(tenants)}
    every = size.users / size.servers
    server_users = [users[int(k * every)] for k in range(size.servers)]
    server_set = set(server_users)
    multi = next(u for u in multi_people if u not in server_set)
    multi_tenants = sorted(t for t, m in members.items() if multi in m)
    gpu_types = {
        "H100": {"resource": "nvidia.com/gpu", "product": H100},
        "A100": {"resource": "nvidia.com/gpu", "product": A100},
        "L40S": {"resource": "nvidia.com/gpu", "product": L40S},
        "A100-1g.10gb": {"resource": "nvidia.com/mig-1g.10gb", "product": A100},
    }
    profiles = [{"id": "cpu-small", "display_name": "CPU only", "cpu": "2", "memory": "8Gi", "image": "base"}] + [
        {
            "id": profile,
            "display_name": f"1 × {kind}",
            "gpu": {"type": kind, "count": 1},
            "cpu": "4",
            "memory": "32Gi",
            "image": "pytorch",
        }
        for kind, profile, _ in GPU_KINDS
    ]
    kind_of = {profile: kind for kind, profile, _ in GPU_KINDS}
    data = {
        "gpu_types": gpu_types,
        "profiles": profiles,
        "tenants": [
            {
                "id": t,
                "display_name": f"Tenant {t}" + (" (the big one)" if t == tenants[0] else ""),
                "kind": "company",
                "members": {"users": members[t]},
                "admins": members[t][:1],
                "profiles": ["cpu-small", profile_of[t]],
                "quota": {
                    "gpus": {kind_of[profile_of[t]]: 2 * len(members[t]) + 8},
                    "servers": 2 * len(members[t]) + 8,
                    "servers_per_user": 2,
                    "cpu": str(8 * (len(members[t]) + 4)),
                    "memory": f"{64 * (len(members[t]) + 4)}Gi",
                    "storage": f"{20 * (len(members[t]) + 4)}Gi",
                    "gpu_hours_per_month": 1000 * (len(members[t]) + 4),
                },
            }
            for t in tenants
        ],
        # nothing is idle long enough to be stopped during a run; the rounds themselves run
        "culling": {"gpu_idle_timeout": "8h", "cpu_idle_timeout": "8h", "interval": "2m"},
    }
    return Platform(
        yaml_text=yaml.safe_dump(data, sort_keys=False),
        tenant_of={u: first[u] for u in server_users},
        profile_of_tenant=profile_of,
        servers=server_users,
        big_tenant=tenants[0],
        big_members=len(members[tenants[0]]),
        multi=multi,
        multi_tenants=multi_tenants,
    )


REFLECTORS = {
    "cluster": "one pod and one event watch for all tenant namespaces (TenantKubeSpawner as it ships)",
    "namespace": "one pod and one event watch per tenant namespace (`watch_all_namespaces = False`)",
}


def hub_config(spawn_limit: int, reflector: str) -> str:
    """The production config, then what the benchmark needs (written to the work directory).

    ``reflector="namespace"``: KubeSpawner's watches per tenant namespace instead of the hub's one
    watch of pods and one of events for all of them (:data:`REFLECTORS`).
    """
    return "\n".join(
        [
            "# written by benchmarks/scale.py",
            "c = get_config()  # noqa: F821",
            f"load_subconfig({str(PRODUCTION_CONFIG)!r})  # noqa: F821",
            'c.JupyterHub.spawner_class = "aidc-kube"',
            f"c.JupyterHub.concurrent_spawn_limit = {spawn_limit}",
            "c.Spawner.consecutive_failure_limit = 0",
            # the benchmark tears the whole cluster down; S pod deletions at hub exit are not measured
            "c.JupyterHub.cleanup_servers = False",
            # POST .../server answers 201 when the server is ready, so nothing has to poll the hub
            'c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 900}',
            f"c.TenantKubeSpawner.home_storage_class = {HOME_CLASS!r}",
            f"c.TenantKubeSpawner.home_capacity = {HOME_CAPACITY!r}",
            *(["c.TenantKubeSpawner.watch_all_namespaces = False"] if reflector == "namespace" else []),
            "",
        ]
    )


# ------------------------------------------------------------------ cluster set-up


def reconcile(tenants: Path, kubeconfig: Path) -> tuple[float, str]:
    """One ``aidc reconcile`` (the CLI, in its own process); its wall time and first output line."""
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "aidc", "reconcile", "--file", str(tenants), "--kubeconfig", str(kubeconfig)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "AIDC_CATALOG": str(CATALOG)},
    )
    took = time.monotonic() - t0
    if out.returncode:
        raise RuntimeError(f"aidc reconcile failed ({out.returncode}): {out.stderr[-2000:]}")
    return took, (out.stdout.splitlines() or [""])[0]


def prepare_cluster(plane: ControlPlane, tenants: Path, workdir: Path, plat: Platform, result: Result) -> None:
    api = plane.api_client()
    core: Any = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": HUB_NAMESPACE}})
    core.create_namespaced_service_account(HUB_NAMESPACE, {"metadata": {"name": "hub"}})
    result.load_reconcile = os.getloadavg()[0]
    result.reconcile_first, result.reconcile_objects = reconcile(tenants, plane.kubeconfig)
    result.reconcile_noop, _ = reconcile(tenants, plane.kubeconfig)
    log(
        f"reconcile: first {result.reconcile_first:.1f}s ({result.reconcile_objects}),"
        f" no-op {result.reconcile_noop:.1f}s"
    )
    namespaces = {f"aidc-{t}" for t in plat.tenant_of.values()}

    def settled() -> bool:
        quotas = core.list_resource_quota_for_all_namespaces().items
        accounts = core.list_service_account_for_all_namespaces(field_selector="metadata.name=default").items
        with_status = {q.metadata.namespace for q in quotas if q.status and q.status.hard}
        return namespaces <= with_status and namespaces <= {a.metadata.namespace for a in accounts}

    # quota admission refuses PVCs and pods until the quota controller has written a status
    wait_for("every tenant's ResourceQuota status and default service account", settled, timeout=600)
    homes = {u: f"aidc-{t}" for u, t in plat.tenant_of.items()}
    create_homes(core, workdir / "volumes", list(homes), existing=True, namespace_of=homes.__getitem__)
    api.close()


# ------------------------------------------------------------------ the hub


class ScaleHub(Hub):
    """The bed's hub, started with the config :func:`hub_config` wrote."""

    def __init__(self, workdir: Path, config: Path, **kwargs: Any):
        super().__init__(workdir, **kwargs)
        self.config_file = config

    def proxy_pid(self) -> int | None:
        try:
            return int((self.data_dir / "proxy.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def service_pid(self, word: str) -> int | None:
        """The hub's child process whose command line has ``word`` (``quotas.service``)."""
        assert self.proc is not None
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, IndexError, ValueError):
                continue
            if ppid == self.proc.pid and word in cmd:
                return int(entry.name)
        return None


@dataclass
class Spawns:
    ready: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    codes: Counter[int] = field(default_factory=Counter)
    throttled: int = 0
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)
    hub_cpu: float = 0.0


async def spawn_all(hub: ScaleHub, token: str, plat: Platform) -> Spawns:
    """Every server's POST, ``IN_FLIGHT`` at a time; each answers 201 once its server is ready."""
    result = Spawns()
    assert hub.proc is not None
    limit = asyncio.Semaphore(IN_FLIGHT)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, force_close=True),
        headers={"Authorization": f"token {token}"},
        timeout=aiohttp.ClientTimeout(total=900),
    )
    done = 0

    async def spawn(user: str) -> None:
        nonlocal done
        tenant = plat.tenant_of[user]
        body = {"tenant": tenant, "profile": plat.profile_of_tenant[tenant]}
        async with limit:
            t0 = time.monotonic()
            while True:
                try:
                    async with session.post(f"{hub.url}/hub/api/users/{user}/server", json=body) as r:
                        text = await r.text()
                except (aiohttp.ClientError, TimeoutError) as e:
                    result.failed[user] = f"POST failed: {e!r}"
                    return
                if r.status == 429:
                    result.throttled += 1
                    await asyncio.sleep(float(r.headers.get("Retry-After", "2")))
                    continue
                result.codes[r.status] += 1
                if r.status == 201:
                    result.ready += 1
                    result.latencies.append(time.monotonic() - t0)
                else:
                    result.failed[user] = f"POST answered {r.status}: {text[:300]}"
                break
        done += 1
        if done % 500 == 0:
            log(f"  {done}/{len(plat.servers)} spawns answered")

    async with session:
        cpu0, t0 = cpu_seconds(hub.proc.pid), time.monotonic()
        await asyncio.gather(*(spawn(u) for u in plat.servers))
        result.wall = time.monotonic() - t0
        result.hub_cpu = cpu_seconds(hub.proc.pid) - cpu0
    return result


def list_users(url: str, token: str, params: dict[str, str]) -> tuple[list[dict[str, Any]], list[float]]:
    """Every page of ``GET /hub/api/users`` (the pagination the hub offers); the users and each page's time."""
    users: list[dict[str, Any]] = []
    times = []
    offset: int | None = 0
    with requests.Session() as s:
        s.headers.update({"Authorization": f"token {token}", "Accept": "application/jupyterhub-pagination+json"})
        while offset is not None:
            t0 = time.monotonic()
            r = s.get(f"{url}/hub/api/users", params={**params, "offset": str(offset)}, timeout=120)
            times.append(time.monotonic() - t0)
            r.raise_for_status()
            page = r.json()
            users += page["items"]
            following = page["_pagination"].get("next")
            offset = following["offset"] if following else None
    return users, times


def ready_count(url: str, token: str) -> int:
    users, _ = list_users(url, token, {"state": "ready"})
    return sum(1 for u in users for s in u.get("servers", {}).values() if s.get("ready"))


# ------------------------------------------------------------------ at rest


@dataclass
class Proc:
    cpu: float = 0.0  # cores, on average over the window
    peak_cpu_30s: float = 0.0  # cores, the busiest 30 s
    rss_mib: float = 0.0  # at the end
    peak_rss_mib: float = 0.0


@dataclass
class Rest:
    seconds: float = 0.0
    load: float = 0.0
    hub: Proc = field(default_factory=Proc)
    proxy: Proc = field(default_factory=Proc)
    quotas: Proc = field(default_factory=Proc)
    posts: Counter[int] = field(default_factory=Counter)
    post_p50: float = math.nan
    post_p99: float = math.nan
    routes: int = 0


def server_tokens(api: Any) -> list[tuple[str, str, str]]:
    """(user, server name, API token) of every workspace pod: what its singleuser server would post with."""
    core: Any = client.CoreV1Api(api)
    out = []
    for pod in core.list_pod_for_all_namespaces(label_selector=SELECTOR).items:
        labels = pod.metadata.labels or {}
        env = {e.name: e.value for e in pod.spec.containers[0].env or []}
        token = env.get("JUPYTERHUB_API_TOKEN")
        user = env.get("JUPYTERHUB_USER") or labels.get("hub.jupyter.org/username")
        if token and user:
            out.append((user, env.get("JUPYTERHUB_SERVER_NAME") or "", token))
    return out


async def at_rest(hub: ScaleHub, tokens: Sequence[tuple[str, str, str]], seconds: float) -> Rest:
    """``seconds`` of steady state: each server posts its activity once, spread evenly; /proc sampled."""
    assert hub.proc is not None
    pids = {"hub": hub.proc.pid, "proxy": hub.proxy_pid(), "quotas": hub.service_pid("quotas.service")}
    result = Rest(seconds=seconds, load=os.getloadavg()[0])
    samples: dict[str, list[tuple[float, float, int]]] = {k: [] for k in pids}
    latencies: list[float] = []
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))

    def sample() -> None:
        now = time.monotonic()
        for name, pid in pids.items():
            if pid is None:
                continue
            try:
                samples[name].append((now, cpu_seconds(pid), memory_kib(pid).get("VmRSS", 0)))
            except OSError:
                pass

    async def post(user: str, server: str, token: str) -> None:
        stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        body = {"last_activity": stamp, "servers": {server: {"last_activity": stamp}}}
        t0 = time.monotonic()
        try:
            async with session.post(
                f"{hub.url}/hub/api/users/{user}/activity", json=body, headers={"Authorization": f"token {token}"}
            ) as r:
                await r.read()
                result.posts[r.status] += 1
        except aiohttp.ClientError:
            result.posts[0] += 1
        latencies.append(time.monotonic() - t0)

    async with session:
        start = time.monotonic()
        sample()
        tasks = []
        step = ACTIVITY_INTERVAL / max(1, len(tokens))  # each server once every 5 minutes, as in production
        next_sample = start + 5
        for i, item in enumerate(tokens):
            at = start + i * step
            if at >= start + seconds:
                break
            while time.monotonic() < at:
                await asyncio.sleep(min(at - time.monotonic(), 0.05))
                if time.monotonic() >= next_sample:
                    sample()
                    next_sample += 5
            tasks.append(asyncio.ensure_future(post(*item)))
        while time.monotonic() < start + seconds:
            await asyncio.sleep(min(start + seconds - time.monotonic(), 1))
            if time.monotonic() >= next_sample:
                sample()
                next_sample += 5
        await asyncio.gather(*tasks)
        sample()
    for name, rows in samples.items():
        if len(rows) < 2:
            continue
        proc = getattr(result, name)
        (t0, c0, _), (t1, c1, r1) = rows[0], rows[-1]
        proc.cpu = (c1 - c0) / (t1 - t0)
        proc.rss_mib = r1 / 1024
        proc.peak_rss_mib = max(r for _, _, r in rows) / 1024
        for a in rows:
            b = next((b for b in rows if b[0] >= a[0] + 30), None)
            if b is not None:
                proc.peak_cpu_30s = max(proc.peak_cpu_30s, (b[1] - a[1]) / (b[0] - a[0]))
    latencies.sort()
    result.post_p50, result.post_p99 = nearest_rank(latencies, 0.5), nearest_rank(latencies, 0.99)
    return result


# ------------------------------------------------------------------ the browser


def first_paints(hub: ScaleHub, tenant: str, user_shown: str) -> dict[str, float]:
    """Seconds to first contentful paint in Chromium, and until the admin page lists its first users."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    from tests.browser.conftest import CHROMIUM_ARGS

    out: dict[str, float] = {}
    paint = """() => {
        const p = performance.getEntriesByName('first-contentful-paint')[0];
        const n = performance.getEntriesByType('navigation')[0];
        return [p ? p.startTime : -1, n ? n.responseStart : -1, n ? n.loadEventEnd : -1];
    }"""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(120_000)
            page.goto(f"{hub.url}/hub/login?next=%2Fhub%2Fhome")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", ADMIN_PASSWORD)
            page.click("#login_submit, form [type=submit]")
            page.wait_for_url(re.compile(r"/hub/home$"))
            quotas = f"{hub.url}/services/quotas/?tenant={tenant}"
            page.goto(quotas)  # the first visit logs in to the service through the hub's OAuth
            for name, url in (("admin", f"{hub.url}/hub/admin"), ("quotas", quotas)):
                t0 = time.monotonic()
                page.goto(url, wait_until="load")
                if name == "admin":
                    page.wait_for_function(f"() => document.body.innerText.includes({user_shown!r})")
                    out["admin_users_shown"] = time.monotonic() - t0
                # the paint may come after the load event: wait for its entry (none within 10 s: no paint)
                try:
                    page.wait_for_function(
                        "() => performance.getEntriesByName('first-contentful-paint').length > 0", timeout=10_000
                    )
                except PlaywrightTimeout:
                    pass
                fcp, first_byte, loaded = page.evaluate(paint)
                out[f"{name}_fcp"] = fcp / 1000 if fcp >= 0 else math.nan
                out[f"{name}_first_byte"] = first_byte / 1000
                out[f"{name}_load"] = loaded / 1000
        finally:
            browser.close()
    return out


# ------------------------------------------------------------------ one size


@dataclass
class Result:
    size: Size
    load_reconcile: float = 0.0
    reconcile_first: float = math.nan
    reconcile_noop: float = math.nan
    reconcile_objects: str = ""
    control_plane: float = 0.0
    hub_start: float = 0.0
    hub_rss_empty_mib: float = 0.0
    spawns: Spawns = field(default_factory=Spawns)
    rest: Rest = field(default_factory=Rest)
    page_first: float = math.nan  # GET /hub/api/users, first page (default limit)
    page_count: int = 0
    pages_all: float = math.nan  # every page of ?state=ready
    page_hub_cpu_ms: float = math.nan  # hub CPU per page
    culler_pass: float = math.nan
    culler_servers: int = 0
    spawn_form: float = math.nan
    spawn_form_tenants: int = 0
    browser: dict[str, float] = field(default_factory=dict)
    load_restart: float = 0.0
    restart_health: float = math.nan
    restart_ready: float = math.nan
    restart_lost: int = -1
    restart_changed: int = -1
    restart_through_proxy: int = 0
    hub_rss_after_restart_mib: float = math.nan
    notes: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    leftovers: list[str] = field(default_factory=list)


def pod_uids(api: Any) -> dict[str, str]:
    core: Any = client.CoreV1Api(api)
    pods = core.list_pod_for_all_namespaces(label_selector=SELECTOR).items
    return {f"{p.metadata.namespace}/{p.metadata.name}": p.metadata.uid for p in pods if p.status.phase == "Running"}


def run_size(size: Size, workdir: Path, rest_seconds: float, browser: bool, reflector: str) -> Result:
    result = Result(size)
    mark = time.monotonic()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        result.phases[name] = now - mark
        mark = now

    workdir.mkdir(parents=True)
    plat = make_platform(size)
    tenants = workdir / "tenants.yaml"
    tenants.write_text(plat.yaml_text)
    config = workdir / "scale_config.py"
    config.write_text(hub_config(IN_FLIGHT + 10, reflector))
    plane = ControlPlane(workdir / "cluster", nodes=gpu_nodes(size.nodes))
    hub: ScaleHub | None = None
    responder: Responder | None = None
    pids: list[int] = []
    try:
        log(f"[{size.label}] starting the control plane")
        plane.start()
        phase("control plane")
        result.control_plane = result.phases["control plane"]
        prepare_cluster(plane, tenants, workdir, plat, result)
        responder = Responder(plane.kubeconfig, plane.pod_cidr, workdir / "responder.log")
        pids.append(responder.proc.pid)
        phase("reconcile and homes")
        hub = ScaleHub(
            workdir / "hub",
            config,
            accounts={"admin": ADMIN_PASSWORD, plat.multi: PERSON_PASSWORD},
            fake_gpus="",
            tenants=tenants,
            env={"KUBECONFIG": str(plane.kubeconfig), "AIDC_CATALOG": str(CATALOG)},
        )
        t0 = time.monotonic()
        hub.start(timeout=600)
        result.hub_start = time.monotonic() - t0
        assert hub.proc is not None
        pids.append(hub.proc.pid)
        admin = hub.login("admin", ADMIN_PASSWORD)
        r = admin.api("POST", "/users", json={"usernames": [f"u{i:05d}" for i in range(size.users)]})
        if r.status_code not in (201, 409):  # 409: load_groups made them all already
            raise RuntimeError(f"creating users answered {r.status_code}: {r.text[:300]}")
        result.hub_rss_empty_mib = memory_kib(hub.proc.pid)["VmRSS"] / 1024
        phase("hub")
        log(f"hub up in {result.hub_start:.1f}s, RSS {result.hub_rss_empty_mib:.0f} MiB; spawning {size.servers}")
        result.spawns = asyncio.run(spawn_all(hub, admin.token, plat))
        phase("spawns")
        log(
            f"{result.spawns.ready}/{size.servers} ready in {result.spawns.wall:.0f}s"
            f" ({len(result.spawns.failed)} failed: {list(result.spawns.failed.values())[:2]})"
        )
        api = plane.api_client()
        tokens = server_tokens(api)
        log(f"at rest for {rest_seconds:.0f}s ({len(tokens)} servers posting activity)")
        result.rest = asyncio.run(at_rest(hub, tokens, rest_seconds))
        phase("at rest")
        log(
            f"at rest: hub {result.rest.hub.cpu:.3f} cores, {result.rest.hub.peak_rss_mib:.0f} MiB;"
            f" proxy {result.rest.proxy.cpu:.3f} cores, {result.rest.proxy.peak_rss_mib:.0f} MiB"
        )
        measure_api(hub, admin, plat, tenants, result)
        phase("pages, culler, spawn form")
        if browser:
            result.browser = first_paints(hub, plat.big_tenant, plat.servers[0])
            log(f"browser: {result.browser}")
            phase("browser")
        restart(hub, api, admin, plat, result)
        phase("restart")
        api.close()
    finally:
        mark = time.monotonic()
        if responder is not None:
            responder.stop()
        if hub is not None:
            hub.stop()
            shutil.rmtree(hub.homes, ignore_errors=True)
        plane.stop()
        phase("teardown")
        result.leftovers = our_processes(str(workdir), pids)
        if result.leftovers:
            log(f"processes left after teardown: {result.leftovers}")
    return result


def measure_api(hub: ScaleHub, admin: Client, plat: Platform, tenants: Path, result: Result) -> None:
    assert hub.proc is not None
    with requests.Session() as s:
        s.headers["Authorization"] = f"token {admin.token}"
        times = []
        for _ in range(5):
            t0 = time.monotonic()
            s.get(f"{hub.url}/hub/api/users", timeout=120).raise_for_status()
            times.append(time.monotonic() - t0)
        result.page_first = sorted(times)[2]
    cpu0 = cpu_seconds(hub.proc.pid)
    t0 = time.monotonic()
    users, pages = list_users(hub.url, admin.token, {"state": "ready"})
    result.pages_all = time.monotonic() - t0
    result.page_count = len(pages)
    result.page_hub_cpu_ms = (cpu_seconds(hub.proc.pid) - cpu0) / max(1, len(pages)) * 1000
    log(
        f"GET /users: first page {result.page_first * 1000:.0f} ms; {len(pages)} pages of ready in {result.pages_all:.1f}s"
    )

    culler = Culler(
        load_platform(tenants, CATALOG),
        Store(f"sqlite:///{hub.data_dir / 'quotas.sqlite'}", migrate=False),
        f"{hub.url}/hub/api",
        admin.token,
    )

    async def passes() -> list[float]:
        out = []
        for _ in range(3):
            t0 = time.monotonic()
            actions = await culler.run_once()
            out.append(time.monotonic() - t0)
            if actions:
                result.notes.append(f"the culler acted on {len(actions)} servers")
        users = await culler._active_users()
        result.culler_servers = sum(len(u.get("servers", {})) for u in users)
        return out

    result.culler_pass = sorted(asyncio.run(passes()))[1]
    log(f"culler pass over {result.culler_servers} servers: {result.culler_pass:.2f}s")

    person = hub.login(plat.multi, PERSON_PASSWORD)
    times = []
    for _ in range(5):
        t0 = time.monotonic()
        r = person.session.get(f"{hub.url}/hub/spawn", timeout=120)
        times.append(time.monotonic() - t0)
        r.raise_for_status()
    result.spawn_form = sorted(times)[2]
    result.spawn_form_tenants = sum(1 for t in plat.multi_tenants if t in r.text)
    log(f"spawn form of {plat.multi} ({', '.join(plat.multi_tenants)}): {result.spawn_form * 1000:.0f} ms")


def restart(hub: ScaleHub, api: Any, admin: Client, plat: Platform, result: Result) -> None:
    """SIGKILL the hub alone, start it again: until /hub/health, then until every server is ready."""
    before = pod_uids(api)
    result.load_restart = os.getloadavg()[0]
    hub.kill()
    t0 = time.monotonic()
    with open(hub.log_path, "ab") as f:
        f.write(b"\n===== restart after SIGKILL =====\n")
        f.flush()
        hub.proc = hub._popen(f)
    deadline = t0 + 600
    while time.monotonic() < deadline:
        if hub.proc.poll() is not None:
            raise RuntimeError(f"the hub exited on restart; log:\n{hub.log_tail()}")
        try:
            if requests.get(f"{hub.url}/hub/health", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.2)
    result.restart_health = time.monotonic() - t0
    count = 0
    while time.monotonic() < deadline:
        try:
            count = ready_count(hub.url, admin.token)
        except requests.RequestException:
            count = 0
        if count >= len(before):
            break
        time.sleep(1)
    result.restart_ready = time.monotonic() - t0
    log(f"restart: health {result.restart_health:.1f}s, {count} ready after {result.restart_ready:.1f}s")
    result.hub_rss_after_restart_mib = memory_kib(hub.proc.pid)["VmRSS"] / 1024
    after = pod_uids(api)
    result.restart_lost = len(set(before) - set(after))
    result.restart_changed = sum(1 for k, uid in before.items() if k in after and after[k] != uid)

    async def through_proxy() -> int:
        async with aiohttp.ClientSession(headers={"Authorization": f"token {admin.token}"}) as session:
            answers = await check_through_proxy(session, hub.url, plat.servers)
        return sum(answers.values())

    result.restart_through_proxy = asyncio.run(through_proxy())


# ------------------------------------------------------------------ report


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpus()}, {mem:.0f} GiB, Python {platform.python_version()}, {platform.system()} {platform.release()}"


def _f(value: float, digits: int = 1, scale: float = 1.0) -> str:
    return "—" if value is None or math.isnan(value) else f"{value * scale:,.{digits}f}"


def verdicts(full: Result) -> list[str]:
    checks = [
        ("hub CPU at rest", full.rest.hub.cpu, TARGETS["hub_cpu"], "cores"),
        ("hub RSS (peak at rest)", full.rest.hub.peak_rss_mib / 1024, TARGETS["hub_rss_gib"], "GiB"),
        ("restart to serving (all ready)", full.restart_ready, TARGETS["restart"], "s"),
        ("quotas page first paint", full.browser.get("quotas_fcp", math.nan), TARGETS["quotas_fcp"], "s"),
        ("no-op reconcile", full.reconcile_noop, TARGETS["noop_reconcile"], "s"),
    ]
    return [
        f"- {what}: {value:.2f} {unit} (target < {target} {unit}): "
        + ("meets it" if value < target else "**MISSES it**" if not math.isnan(value) else "not measured")
        for what, value, target, unit in checks
    ]


def report(results: Sequence[Result], started_on: str, command: str, runtime: float) -> str:
    results = sorted(results, key=lambda r: r.size.servers)
    rows: list[tuple[str, Callable[[Result], str]]] = [
        (
            "nodes / tenants / users / running servers",
            lambda r: f"{r.size.nodes:,} / {r.size.tenants} / {r.size.users:,} / {r.spawns.ready:,}",
        ),
        ("`aidc reconcile`, first pass (s)", lambda r: _f(r.reconcile_first)),
        ("`aidc reconcile`, no-op pass (s)", lambda r: _f(r.reconcile_noop)),
        ("hub start, empty (s)", lambda r: _f(r.hub_start)),
        ("hub RSS, no server (MiB)", lambda r: _f(r.hub_rss_empty_mib, 0)),
        ("spawning all, 50 in flight (s)", lambda r: _f(r.spawns.wall, 0)),
        (
            "spawn p50 / p95 (s)",
            lambda r: (
                f"{_f(nearest_rank(sorted(r.spawns.latencies), 0.5))} / {_f(nearest_rank(sorted(r.spawns.latencies), 0.95))}"
            ),
        ),
        ("hub CPU per spawn (ms)", lambda r: _f(r.spawns.hub_cpu / max(1, r.spawns.ready), 0, 1000)),
        ("rest window (s) / load at its start", lambda r: f"{r.rest.seconds:.0f} / {r.rest.load:.2f}"),
        ("**hub CPU at rest (cores)**", lambda r: _f(r.rest.hub.cpu, 3)),
        ("hub CPU, busiest 30 s (cores)", lambda r: _f(r.rest.hub.peak_cpu_30s, 3)),
        ("**hub RSS at rest, peak (MiB)**", lambda r: _f(r.rest.hub.peak_rss_mib, 0)),
        ("proxy CPU at rest (cores)", lambda r: _f(r.rest.proxy.cpu, 3)),
        ("proxy RSS, peak (MiB)", lambda r: _f(r.rest.proxy.peak_rss_mib, 0)),
        ("quotas service CPU at rest (cores)", lambda r: _f(r.rest.quotas.cpu, 3)),
        ("quotas service RSS, peak (MiB)", lambda r: _f(r.rest.quotas.peak_rss_mib, 0)),
        ("activity POST p50 / p99 (ms)", lambda r: f"{_f(r.rest.post_p50, 0, 1000)} / {_f(r.rest.post_p99, 0, 1000)}"),
        ("activity POST answers", lambda r: ", ".join(f"{c} ×{n}" for c, n in sorted(r.rest.posts.items()))),
        ("`GET /hub/api/users`, first page (ms)", lambda r: _f(r.page_first, 0, 1000)),
        (
            "`?state=ready`, every page: pages / s / hub CPU ms per page",
            lambda r: f"{r.page_count} / {_f(r.pages_all)} / {_f(r.page_hub_cpu_ms, 0)}",
        ),
        ("culler round over all servers (s)", lambda r: f"{_f(r.culler_pass, 2)} ({r.culler_servers:,} servers)"),
        ("spawn form, person in 3 tenants (ms)", lambda r: _f(r.spawn_form, 0, 1000)),
        (
            "admin page: first paint / users shown (s)",
            lambda r: (
                f"{_f(r.browser.get('admin_fcp', math.nan), 2)} / {_f(r.browser.get('admin_users_shown', math.nan), 2)}"
            ),
        ),
        (
            "**quotas page of the biggest tenant: first paint (s)**",
            lambda r: _f(r.browser.get("quotas_fcp", math.nan), 2),
        ),
        (
            "quotas page: first byte / load (s)",
            lambda r: (
                f"{_f(r.browser.get('quotas_first_byte', math.nan), 2)} / {_f(r.browser.get('quotas_load', math.nan), 2)}"
            ),
        ),
        ("restart: load at the kill", lambda r: f"{r.load_restart:.2f}"),
        ("restart: `/hub/health` answers (s)", lambda r: _f(r.restart_health)),
        ("**restart: all servers ready in the API (s)**", lambda r: _f(r.restart_ready)),
        (
            "restart: pods lost / restarted; answering through the proxy",
            lambda r: f"{r.restart_lost} / {r.restart_changed}; {r.restart_through_proxy:,}",
        ),
        ("hub RSS after the restart (MiB)", lambda r: _f(r.hub_rss_after_restart_mib, 0)),
    ]
    lines = [
        f"Recorded {date.today().isoformat()} on {started_on} with `{command}` (whole run {runtime / 60:.0f} min).",
        "",
        "Load: the 1-minute load average as each reconcile, rest window and restart began (the control plane"
        " and KWOK of the same size run on the same 2 CPUs).",
        "",
        "| | " + " | ".join(f"size {i + 1}" for i in range(len(results))) + " |",
        "|---|" + "---:|" * len(results),
    ]
    for name, cell in rows:
        lines.append(f"| {name} | " + " | ".join(cell(r) for r in results) + " |")
    lines.append("")
    full = max(results, key=lambda r: r.size.servers)
    lines += [f"Targets at the largest size ({full.size.label}):", "", *verdicts(full), ""]
    for r in results:
        failed = len(r.spawns.failed)
        lines.append(
            f"- {r.size.label}: reconcile load {r.load_reconcile:.2f}; {failed} spawns failed"
            + (f" (first: {next(iter(r.spawns.failed.values()))[:200]})" if failed else "")
            + f"; 429s {r.spawns.throttled}; phases (s): "
            + ", ".join(f"{k} {v:.0f}" for k, v in r.phases.items())
            + (f"; {'; '.join(r.notes)}" if r.notes else "")
            + f"; processes left after teardown: {len(r.leftovers)}."
        )
    return "\n".join(lines)


def parse_sizes(args: argparse.Namespace) -> list[Size]:
    if args.custom:
        out = []
        for item in args.custom.split(","):
            n, t, u, s = (int(x) for x in item.split(":"))
            out.append(Size(n, t, u, s))
        return out
    sizes = []
    for item in args.scale.split(","):
        num, _, den = item.partition("/")
        f = float(num) / float(den or 1)
        sizes.append(Size(*(max(1, round(FULL[k] * f)) for k in ("nodes", "tenants", "users", "servers"))))
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--scale", default="1/10,1/3,1", help="sizes as fractions of the full one (default 1/10,1/3,1)")
    parser.add_argument("--custom", help="sizes as nodes:tenants:users:servers[,...] (instead of --scale)")
    parser.add_argument("--rest", type=float, default=300, help="seconds at rest (default 300)")
    parser.add_argument(
        "--rest-small", type=float, default=300, help="seconds at rest at the sizes below the largest (default 300)"
    )
    parser.add_argument(
        "--reflector",
        choices=sorted(REFLECTORS),
        default="cluster",
        help="how the hub watches pods: " + "; ".join(f"{k}: {v}" for k, v in REFLECTORS.items()),
    )
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium first paints")
    parser.add_argument("--keep", action="store_true", help="keep the work directory with every log")
    parser.add_argument("--write", metavar="PATH", type=Path, help="record the results in this README")
    args = parser.parse_args(argv)
    sizes = parse_sizes(args)
    started_on, t0 = machine(), time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="aidc-scale-"))
    log(f"work directory {workdir}")
    results: list[Result] = []
    failures: list[str] = []
    try:
        for i, size in enumerate(sizes):
            try:
                rest = args.rest if size.servers == max(z.servers for z in sizes) else min(args.rest, args.rest_small)
                results.append(run_size(size, workdir / f"size-{i}", rest, not args.no_browser, args.reflector))
            except Exception as e:  # record the sizes that ran; say why this one did not
                log(f"[{size.label}] failed: {e!r}")
                failures.append(f"{size.label}: {e!r}"[:500])
                continue
            print(report(results, started_on, "(partial)", time.monotonic() - t0), flush=True)
    finally:
        if args.keep:
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    command = " ".join(["benchmarks/scale.py", *(argv if argv is not None else sys.argv[1:])])
    if not results:
        return 1
    section = report(results, started_on, command, time.monotonic() - t0)
    if failures:
        section += "\n\nSizes that did not complete: " + "; ".join(failures)
    print(section)
    if args.write:
        write_section(args.write, SECTION, section)
        log(f"recorded in {args.write}")
    ok = not failures and all(
        r.spawns.ready == r.size.servers and r.restart_lost == 0 and r.restart_changed == 0 for r in results
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
