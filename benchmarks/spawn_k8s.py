"""Spawn storm on Kubernetes: N people start a server at the same moment. How fast does the hub
get them all running with TenantKubeSpawner (`aidc-kube`), compared with stock KubeSpawner?

For each variant (stock KubeSpawner first, then TenantKubeSpawner) the script starts a fresh
test control plane (``tests/bed/cluster.py``: etcd, kube-apiserver, controller-manager,
scheduler, KWOK nodes, with extra KWOK CPU nodes of the bed's CPU node shape so that N pods
fit, and a pod CIDR of its own), one tenant ``bench`` holding all N people (its namespace,
ResourceQuota, ... from the production ``TenantReconciler``), N static home volumes (``--homes
new``: the storm creates and binds the home PVCs; ``existing``: they are bound already), and
the production hub config plus
``benchmarks/k8s_baseline_config.py`` (``concurrent_spawn_limit = N``; for ``stock`` the static
profile). It logs in as ``admin`` once, creates the N users and fires N
``POST /hub/api/users/<name>/server`` at once (profile ``cpu``: 1 CPU, 2Gi, a home PVC; N GPU
pods would not fit the bed's 16 GPUs). Measured per spawn: from its POST to the server being
``ready`` in the REST API, which is the POST's own 201 answer: the benchmark config sets
``slow_spawn_timeout`` beyond any spawn, so the hub answers each POST when the server is ready
(instead of 202 after 10 s), and nothing has to poll the hub (polling the user list of N people
several times a second would cost the hub more CPU than some spawns do; the script measures it).

Workspace pods do not run containers here: KWOK marks them Running with a loopback pod IP and
one light responder process (this script with ``--responder``) listens on every Running pod's
IP and port and answers any HTTP request with 200 and a small JSON body, which is all the hub
needs to call a server ready. ``--real-servers`` runs real ``jupyterhub-singleuser`` processes
instead (``tests/bed/podrunner.py``), for a small N only.

    .venv/bin/python benchmarks/spawn_k8s.py                                # N=200, new homes, print
    .venv/bin/python benchmarks/spawn_k8s.py --homes new,existing --rounds 2 --write benchmarks/README.md
    .venv/bin/python benchmarks/spawn_k8s.py --users 10 --real-servers

Targets (issue 15): every spawn ready, TenantKubeSpawner reaches at least the spawns per second of
stock KubeSpawner (whose failed spawns count as not ready), with at most 3 ms more hub CPU per spawn.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import ipaddress
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from kubernetes import client

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the test bed lives in tests/bed, not in an installed package
    sys.path.insert(0, str(REPO))

from benchmarks._readme import cpus, write_section  # noqa: E402
from benchmarks._stats import nearest_rank  # noqa: E402
from quotas.loader import load_platform  # noqa: E402
from quotas.quantity import parse_quantity  # noqa: E402
from spawner.reconciler import TenantReconciler  # noqa: E402
from tests.bed.cluster import NODES, ControlPlane  # noqa: E402
from tests.bed.hub import Hub  # noqa: E402
from tests.bed.podrunner import SELECTOR, PodRunner  # noqa: E402

SECTION = "spawn_k8s"
CONFIG = REPO / "benchmarks" / "k8s_baseline_config.py"
CATALOG = REPO / "images" / "catalog.yaml"
TARGET_RATIO = 1.0  # issue 15: at least stock's throughput (its failed spawns count as not ready)
TARGET_CPU_MS = 3.0  # and at most 3 ms more hub CPU per spawn than stock
TENANT, PROFILE, NAMESPACE = "bench", "cpu", "aidc-bench"  # k8s_baseline_config.py names the same
PROFILE_CPU, PROFILE_MEMORY = "1", "2Gi"
HOME_CLASS, HOME_CAPACITY = "aidc-home", "10Gi"
HUB_NAMESPACE = "aidc"
ADMIN_PASSWORD = "admin-password-1"
VARIANTS = {"stock": "stock KubeSpawner", "aidc": "TenantKubeSpawner (`aidc-kube`)"}
SPAWN_LOG = re.compile(r"User (\S+) took ([\d.]+) seconds to start")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ the platform


def user_names(count: int) -> list[str]:
    return [f"u{i:04d}" for i in range(count)]


def tenants_yaml(users: Sequence[str]) -> str:
    """One tenant holding everyone, with ceilings twice what the storm needs.

    Not just N: a pod create that KubeSpawner abandons after its client timeout (3 s) and
    sends again is charged to the ResourceQuota twice until the quota controller recounts,
    and with a ceiling of N those double charges turn into ``exceeded quota`` refusals
    (the report counts these retries).
    """
    ceiling = 2 * len(users)
    cpu, memory = parse_quantity(PROFILE_CPU), parse_quantity(PROFILE_MEMORY)
    data = {
        "gpu_types": {"H100": {"resource": "nvidia.com/gpu", "product": "NVIDIA-H100-80GB-HBM3"}},
        "profiles": [
            {"id": PROFILE, "display_name": "CPU only", "cpu": PROFILE_CPU, "memory": PROFILE_MEMORY, "image": "base"}
        ],
        "tenants": [
            {
                "id": TENANT,
                "display_name": "Spawn benchmark",
                "kind": "company",
                "members": {"users": list(users)},
                "profiles": [PROFILE],
                "quota": {
                    "servers": ceiling,
                    "servers_per_user": 1,
                    "cpu": str(int(cpu * ceiling)),
                    "memory": f"{int(memory * ceiling / 2**30)}Gi",
                    "storage": f"{int(parse_quantity(HOME_CAPACITY) * ceiling / 2**30)}Gi",
                },
            }
        ],
    }
    return yaml.safe_dump(data, sort_keys=False)


def cpu_nodes_for(pods: int) -> list[dict[str, Any]]:
    """The bed's nodes plus copies of its CPU node, enough for ``pods`` pods of the profile."""
    shape = next(n for n in NODES if n["metadata"]["name"] == "cpu-0")
    alloc = shape["status"]["allocatable"]
    per_node = int(
        min(
            parse_quantity(alloc["pods"]),
            parse_quantity(alloc["cpu"]) / parse_quantity(PROFILE_CPU),
            parse_quantity(alloc["memory"]) / parse_quantity(PROFILE_MEMORY),
        )
    )
    have = sum(1 for n in NODES if n["metadata"]["name"].startswith("cpu-"))
    extra = []
    for i in range(have, max(have, math.ceil(pods / per_node))):
        node = copy.deepcopy(shape)
        node["metadata"]["name"] = f"cpu-{i}"
        node["metadata"]["labels"]["kubernetes.io/hostname"] = f"cpu-{i}"
        extra.append(node)
    return [*copy.deepcopy(NODES), *extra]


def create_homes(
    core: Any,
    workdir: Path,
    users: Sequence[str],
    *,
    existing: bool,
    namespace_of: Callable[[str], str] = lambda _user: NAMESPACE,
) -> None:
    """A static hostPath volume per person (the bed has no provisioner), as tests/k8s does.

    ``existing``: people who have spawned before, whose home PVCs ``home-<user>`` exist (in
    ``namespace_of(user)``, their tenant's namespace) and are bound already (KubeSpawner then finds
    the claim instead of creating it). They are written bound, as the controller-manager leaves
    them, instead of being bound by it at ~5 per second.
    """

    def one(i: int, user: str) -> None:
        path = workdir / f"pv-{i}"
        path.mkdir(parents=True)
        pv, pvc = f"home-pv-{i}", f"home-{user}"
        access, size = ["ReadWriteOnce"], {"storage": HOME_CAPACITY}
        claim_ref: dict[str, Any] = {}
        namespace = namespace_of(user)
        if existing:
            created = _retry_conflict(
                core.create_namespaced_persistent_volume_claim,
                namespace,
                {
                    "metadata": {
                        "name": pvc,
                        "annotations": {
                            "pv.kubernetes.io/bind-completed": "yes",
                            "pv.kubernetes.io/bound-by-controller": "yes",
                        },
                    },
                    "spec": {
                        "accessModes": access,
                        "storageClassName": HOME_CLASS,
                        "volumeName": pv,
                        "resources": {"requests": size},
                    },
                },
            )
            claim_ref = {
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": namespace,
                    "name": pvc,
                    "uid": created.metadata.uid,
                }
            }
        core.create_persistent_volume(
            {
                "metadata": {"name": pv},
                "spec": {
                    "capacity": size,
                    "accessModes": access,
                    "storageClassName": HOME_CLASS,
                    "persistentVolumeReclaimPolicy": "Retain",
                    "hostPath": {"path": str(path)},
                    **claim_ref,
                },
            }
        )
        if existing:
            core.patch_persistent_volume_status(pv, {"status": {"phase": "Bound"}})
            core.patch_namespaced_persistent_volume_claim_status(
                pvc, namespace, {"status": {"phase": "Bound", "accessModes": access, "capacity": size}}
            )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(len(users)), users))


def _retry_conflict(call: Callable[..., Any], *args: Any) -> Any:
    """Call again on 409: eight concurrent creates in one namespace race on its ResourceQuota's
    status, and the API server gives up on some of them after its own few retries."""
    for attempt in range(10):
        try:
            return call(*args)
        except client.ApiException as e:
            if e.status != 409 or "resourcequotas" not in str(e.body) or attempt == 9:
                raise
            time.sleep(0.05 * (attempt + 1))


def wait_for(what: str, ready: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def prepare_cluster(api: client.ApiClient, tenants: Path, workdir: Path, users: Sequence[str], homes: str) -> None:
    """Hub namespace, the tenant's objects from the production reconciler, N homes; all settled."""
    core: Any = client.CoreV1Api(api)  # takes plain dicts as bodies
    core.create_namespace({"metadata": {"name": HUB_NAMESPACE}})
    core.create_namespaced_service_account(HUB_NAMESPACE, {"metadata": {"name": "hub"}})
    TenantReconciler(api, load_platform(tenants, CATALOG), hub_namespace=HUB_NAMESPACE).reconcile()
    create_homes(core, workdir, users, existing=homes == "existing")
    # The quota admission refuses pods until the quota controller has written a status, and the
    # ServiceAccount admission until the namespace's default account exists: not part of a spawn.
    wait_for(
        "the tenant's ResourceQuota status",
        lambda: bool(core.read_namespaced_resource_quota("aidc-tenant-ceiling", NAMESPACE).status.hard),
    )
    wait_for("the default service account", lambda: bool(core.list_namespaced_service_account(NAMESPACE).items))
    n = len(users)
    if homes == "existing":
        wait_for(
            f"{n} bound home claims",
            lambda: (
                sum(c.status.phase == "Bound" for c in core.list_namespaced_persistent_volume_claim(NAMESPACE).items)
                >= n
            ),
            timeout=300,
        )
    else:
        wait_for(
            f"{n} Available volumes",
            lambda: sum(pv.status.phase == "Available" for pv in core.list_persistent_volume().items) >= n,
        )


# ------------------------------------------------------------------ processes


class BenchHub(Hub):
    """The bed's hub, started with k8s_baseline_config.py (which loads the production config first)."""

    config_file = CONFIG

    def proxy_pid(self) -> int | None:
        try:
            return int((self.data_dir / "proxy.pid").read_text().strip())
        except (OSError, ValueError):
            return None


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its own threads, not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


class Responder:
    """The stand-in for containers: one process (``--responder``) answering HTTP on every Running
    pod's IP and port. Records when it started listening for each user's pod."""

    def __init__(self, kubeconfig: Path, pod_cidr: str, log: Path):
        self.listening: dict[str, float] = {}  # user -> time.monotonic() (system-wide on Linux)
        self.requests = 0
        self._log = open(log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--responder", str(kubeconfig), "--pod-cidr", pod_cidr],
            stdin=subprocess.PIPE,  # closed when this process dies: the responder then exits
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, name="responder-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            event = json.loads(raw)
            if event.get("listening"):
                self.listening.setdefault(event["user"], event["t"])
            if "requests" in event:
                self.requests = event["requests"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._reader.join(5)
        if self.proc.stdin:
            self.proc.stdin.close()
        self._log.close()


async def respond(kubeconfig: str, pod_cidr: str) -> None:
    """Listen on (pod IP, port) of every Running workspace pod; answer any request with 200 JSON."""
    from jupyterhub import __version__ as hub_version
    from kubernetes_asyncio import client as aclient
    from kubernetes_asyncio import config as aconfig
    from kubernetes_asyncio import watch

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(sys.stdin.fileno(), 1) else None)
    cidr = ipaddress.IPv4Network(pod_cidr)
    if not cidr.subnet_of(ipaddress.IPv4Network("127.0.0.0/8")):
        raise RuntimeError(f"pod CIDR {pod_cidr} is not loopback")
    servers: dict[str, asyncio.Server] = {}
    served = 0

    def emit(**event: Any) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode(errors="replace") if head.count(b" ") >= 2 else "/"
            body = json.dumps({"stand_in": "benchmarks/spawn_k8s.py responder", "path": path}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                # as jupyterhub-singleuser does: the hub warns about servers without it
                + f"X-JupyterHub-Version: {hub_version}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            served += 1
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    async def sync(pod: Any, deleted: bool) -> None:
        uid, ip = pod.metadata.uid, pod.status.pod_ip
        running = not deleted and pod.status.phase == "Running" and ip and not pod.metadata.deletion_timestamp
        if running and uid not in servers:
            if ipaddress.ip_address(ip) not in cidr:  # only ever loopback
                raise RuntimeError(f"pod {pod.metadata.name} has IP {ip}, outside {pod_cidr}")
            ports = [p.container_port for p in pod.spec.containers[0].ports or []]
            try:
                servers[uid] = await asyncio.start_server(answer, ip, ports[0] if ports else 8888)
            except OSError as e:  # tried again at the pod's next event
                print(f"cannot listen for pod {pod.metadata.name} on {ip}: {e}", file=sys.stderr)
                return
            user = (pod.metadata.labels or {}).get("hub.jupyter.org/username", pod.metadata.name)
            emit(listening=True, user=user, pod=f"{pod.metadata.namespace}/{pod.metadata.name}", t=time.monotonic())
        elif not running and uid in servers:
            servers.pop(uid).close()

    async def watch_pods() -> None:
        await aconfig.load_kube_config(config_file=kubeconfig)
        async with aclient.ApiClient() as api:
            core = aclient.CoreV1Api(api)
            while True:
                pods = await core.list_pod_for_all_namespaces(label_selector=SELECTOR)
                for pod in pods.items:
                    await sync(pod, deleted=False)
                w = watch.Watch()
                try:
                    async for event in w.stream(
                        core.list_pod_for_all_namespaces,
                        label_selector=SELECTOR,
                        resource_version=pods.metadata.resource_version,
                        timeout_seconds=300,
                    ):
                        await sync(event["object"], deleted=event["type"] == "DELETED")
                except aclient.ApiException as e:  # 410 Gone: list again
                    print(f"watch restarted: {e.status}", file=sys.stderr)

    task = asyncio.ensure_future(watch_pods())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raise what ended it
    task.cancel()
    for server in servers.values():
        server.close()
    emit(requests=served)


# ------------------------------------------------------------------ the storm


@dataclass
class Storm:
    posted: dict[str, float] = field(default_factory=dict)  # first POST, time.monotonic()
    ready: dict[str, float] = field(default_factory=dict)  # its 201 answer: the server is ready
    codes: Counter[int] = field(default_factory=Counter)
    throttled: int = 0  # 429 answers (retried after Retry-After)
    failed: dict[str, str] = field(default_factory=dict)
    listed_ready: int = 0  # users GET /users?state=ready lists once the storm is over
    hub_cpu: float = 0.0  # CPU seconds of the hub process from the first POST to the last answer
    proxy_cpu: float = math.nan  # the same for configurable-http-proxy
    peak_rss_kib: int = 0
    started: float = 0.0
    ended: float = 0.0


async def storm(
    hub: BenchHub, token: str, users: Sequence[str], body: dict[str, str], timeout: float
) -> tuple[Storm, dict[str, bool]]:
    """Fire every POST at once; each answers 201 when its server is ready (the benchmark config
    sets ``slow_spawn_timeout`` beyond any spawn), or an error when its spawn failed.

    Returns the storm and, per ready user, whether its server answered through the proxy afterwards.
    """
    api = f"{hub.url}/hub/api"
    result = Storm()
    assert hub.proc is not None
    pid = hub.proc.pid
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, force_close=True),
        headers={"Authorization": f"token {token}"},
        timeout=aiohttp.ClientTimeout(total=timeout),
    )

    async def spawn(name: str) -> None:
        while True:
            result.posted.setdefault(name, time.monotonic())
            async with session.post(f"{api}/users/{name}/server", json=body) as r:
                text = await r.text()
                if r.status == 429:
                    result.throttled += 1
                    await asyncio.sleep(float(r.headers.get("Retry-After", "5")))
                    continue
                result.codes[r.status] += 1
                if r.status == 201:
                    result.ready[name] = time.monotonic()
                else:  # 202 would mean the config's slow_spawn_timeout did not apply
                    result.failed[name] = f"POST answered {r.status}: {text[:300]}"
                return

    async def sample_rss() -> None:
        while True:
            result.peak_rss_kib = max(result.peak_rss_kib, memory_kib(pid).get("VmRSS", 0))
            await asyncio.sleep(0.25)

    proxy_pid = hub.proxy_pid()
    async with session:
        sampler = asyncio.ensure_future(sample_rss())
        cpu0, proxy0 = cpu_seconds(pid), cpu_seconds(proxy_pid) if proxy_pid else math.nan
        result.started = time.monotonic()
        outcomes = await asyncio.gather(*(spawn(name) for name in users), return_exceptions=True)
        result.ended = time.monotonic()
        result.hub_cpu = cpu_seconds(pid) - cpu0
        result.proxy_cpu = cpu_seconds(proxy_pid) - proxy0 if proxy_pid else math.nan
        sampler.cancel()
        for name, outcome in zip(users, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                result.failed.setdefault(name, f"POST failed: {outcome!r}")
        async with session.get(f"{api}/users", params={"state": "ready", "limit": str(len(users))}) as r:
            result.listed_ready = sum(1 for m in await r.json() if m["name"] in result.ready)
        answers = await check_through_proxy(session, hub.url, sorted(result.ready))
    return result, answers


async def check_through_proxy(session: aiohttp.ClientSession, url: str, users: Sequence[str]) -> dict[str, bool]:
    """Every ready server answers ``/user/<name>/api/status`` through configurable-http-proxy."""
    limit = asyncio.Semaphore(50)

    async def one(name: str) -> bool:
        async with limit, session.get(f"{url}/user/{name}/api/status", allow_redirects=False) as r:
            return r.status == 200

    return dict(zip(users, await asyncio.gather(*(one(n) for n in users)), strict=True))


async def observer_cost(hub: BenchHub, token: str, users: int, polls: int = 20) -> float:
    """Hub CPU seconds of one ``GET /users?state=ready`` with every server ready: what our polling adds."""
    assert hub.proc is not None
    async with aiohttp.ClientSession(headers={"Authorization": f"token {token}"}) as session:
        before = cpu_seconds(hub.proc.pid)
        for _ in range(polls):
            async with session.get(f"{hub.url}/hub/api/users", params={"state": "ready", "limit": str(users)}) as r:
                await r.read()
        return (cpu_seconds(hub.proc.pid) - before) / polls


# ------------------------------------------------------------------ one variant


@dataclass
class Variant:
    name: str
    round: int
    homes: str  # "new": the storm creates every home PVC; "existing": they are bound already
    users: int
    storm: Storm
    answered: int  # ready servers that answered through the proxy afterwards
    pods_created: float | None  # seconds after the first POST: the hub's last pod create request
    create_retries: int  # pod create requests sent again after KubeSpawner's client timeout
    all_serving: float | None  # seconds after the first POST: every pod Running and answering HTTP
    hub_rss_before_kib: int
    hub_hwm_kib: int
    poll_cost: float  # hub CPU seconds of one GET /users?state=ready with everyone ready
    hub_reported: list[float]  # "User x took N seconds to start" (hub side, before the proxy route)
    pod: dict[str, Any]
    log_notes: Counter[str]  # hub warnings and errors during the storm, by level and source line
    phases: dict[str, float]
    load: float  # 1-minute load average as the storm began
    other_planes: int  # kube-apiservers of other beds running on this machine as the storm began
    leftovers: list[str] = field(default_factory=list)

    @property
    def latencies(self) -> list[float]:
        return sorted(t - self.storm.posted[u] for u, t in self.storm.ready.items())

    @property
    def wall(self) -> float:
        return max(self.storm.ready.values()) - self.storm.started if self.storm.ready else math.nan

    @property
    def throughput(self) -> float:
        return len(self.storm.ready) / self.wall if self.storm.ready else 0.0

    @property
    def ok(self) -> bool:
        return len(self.storm.ready) == self.users == self.answered and not self.leftovers


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def pod_shape(pod: Any) -> dict[str, Any]:
    """What must be equal between the variants' pods (names, IPs, tokens and node aside)."""
    raw = client.ApiClient().sanitize_for_serialization(pod)
    spec, container = raw["spec"], raw["spec"]["containers"][0]
    return {
        "labels": raw["metadata"].get("labels"),
        "image": container["image"],
        "resources": container.get("resources"),
        "container securityContext": container.get("securityContext"),
        "volumeMounts": container.get("volumeMounts"),
        "volumes": spec.get("volumes"),
        "pod securityContext": spec.get("securityContext"),
        "automountServiceAccountToken": spec.get("automountServiceAccountToken"),
        "nodeSelector": spec.get("nodeSelector"),
        "tolerations": spec.get("tolerations"),
        "env names": sorted(e["name"] for e in container.get("env", [])),
        "args": container.get("args"),
    }


def _processes() -> list[tuple[int, str]]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.append((int(entry.name), cmdline))
    return out


def our_processes(marker: str, pids: Sequence[int]) -> list[str]:
    """Processes still alive that we started: by pid, or with our work dir in their command line."""
    return [f"{pid} {cmd[:120]}" for pid, cmd in _processes() if pid in pids or marker in cmd]


def other_control_planes(marker: str) -> int:
    """kube-apiservers on this machine that are not ours (a colleague's k8s tier): they share the CPUs."""
    return sum(1 for _, cmd in _processes() if "/kube-apiserver " in cmd and marker not in cmd)


def _log_time(line: str) -> float | None:
    m = re.match(r"\[\w (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) ", line)
    return datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S.%f").timestamp() if m else None


def run_variant(
    variant: str,
    round_: int,
    homes: str,
    users: Sequence[str],
    workdir: Path,
    *,
    real_servers: bool,
    timeout: float,
    log: Callable[[str], None],
) -> Variant:
    """A fresh control plane, tenant and hub; the storm; everything torn down again."""
    phases: dict[str, float] = {}
    mark = time.monotonic()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        phases[name] = now - mark
        mark = now

    workdir.mkdir(parents=True)
    tenants = workdir / "tenants.yaml"
    tenants.write_text(tenants_yaml(users))
    nodes = cpu_nodes_for(len(users))
    plane = ControlPlane(workdir / "cluster", nodes=nodes)  # on a free pod CIDR of its own
    pod_cidr = plane.pod_cidr
    hub: BenchHub | None = None
    runner: PodRunner | None = None
    responder: Responder | None = None
    pids: list[int] = []
    result: Variant | None = None
    tag = f"[{homes} homes, round {round_}, {variant}]"
    try:
        plane.start()
        phase("control plane")
        log(f"{tag} control plane up ({len(nodes)} nodes, pods in {pod_cidr}) in {phases['control plane']:.1f}s")
        api = plane.api_client()
        prepare_cluster(api, tenants, workdir / "volumes", users, homes)
        if real_servers:
            runner = PodRunner(api, workdir / "pods").start()
        else:
            responder = Responder(plane.kubeconfig, pod_cidr, workdir / "responder.log")
            pids.append(responder.proc.pid)
        phase("tenant and volumes")
        env = {"AIDC_BENCH_SPAWNER": variant, "AIDC_BENCH_USERS": str(len(users)), "KUBECONFIG": str(plane.kubeconfig)}
        traits = {
            "JupyterHub.spawner_class": "aidc-kube",
            "TenantKubeSpawner.home_storage_class": HOME_CLASS,
            "TenantKubeSpawner.home_capacity": HOME_CAPACITY,
        }
        hub = BenchHub(
            workdir / "hub", accounts={"admin": ADMIN_PASSWORD}, fake_gpus="", tenants=tenants, env=env, traits=traits
        )
        hub.start(timeout=120)
        assert hub.proc is not None
        pids.append(hub.proc.pid)
        admin = hub.login("admin", ADMIN_PASSWORD)
        r = admin.api("POST", "/users", json={"usernames": list(users)})
        if r.status_code not in (201, 409):  # 409: load_groups made them all already
            raise RuntimeError(f"creating users answered {r.status_code}: {r.text}")
        proxy_pid = hub.proxy_pid()
        if proxy_pid:
            pids.append(proxy_pid)
        phase("hub")
        rss0 = memory_kib(hub.proc.pid)["VmRSS"]
        log_offset = hub.log_path.stat().st_size
        body = {"tenant": TENANT, "profile": PROFILE} if variant == "aidc" else {"profile": PROFILE}
        load, others = os.getloadavg()[0], other_control_planes(str(workdir))
        log(f"{tag} {len(users)} spawns at once (load {load:.2f}, other control planes running: {others})")
        wall_clock = time.time() - time.monotonic()  # to place the hub log's timestamps
        outcome, answers = asyncio.run(storm(hub, admin.token, users, body, timeout))
        hwm = memory_kib(hub.proc.pid)["VmHWM"]
        phase("storm")
        log(
            f"{tag} {len(outcome.ready)}/{len(users)} ready in {outcome.ended - outcome.started:.1f}s,"
            f" {sum(answers.values())} answered through the proxy, {len(outcome.failed)} failed"
        )
        poll_cost = asyncio.run(observer_cost(hub, admin.token, len(users)))
        core: Any = client.CoreV1Api(api)
        pods = core.list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items
        first = next((p for p in pods if p.metadata.labels.get("hub.jupyter.org/username") == users[0]), None)
        with hub.log_path.open("rb") as f:
            f.seek(log_offset)
            text = f.read().decode(errors="replace")
        names = set(users)
        reported = [float(t) for u, t in SPAWN_LOG.findall(text) if u in names]
        notes = Counter(f"{m[1]} {m[2]}" for m in re.finditer(r"^\[([WEC]) \S+ \S+ JupyterHub (\S+)\] ", text, re.M))
        attempts = [line for line in text.splitlines() if "Attempting to create pod" in line]
        created = [t for t in map(_log_time, attempts) if t is not None]
        listening = responder.listening if responder else {}
        serving = [listening[u] for u in outcome.ready if u in listening]
        result = Variant(
            name=variant,
            round=round_,
            homes=homes,
            users=len(users),
            storm=outcome,
            answered=sum(answers.values()),
            pods_created=max(created) - wall_clock - outcome.started if len(created) >= len(users) else None,
            create_retries=len(attempts) - len({a.rsplit("create pod ", 1)[1].split(",")[0] for a in attempts}),
            all_serving=max(serving) - outcome.started if len(serving) == len(users) else None,
            hub_rss_before_kib=rss0,
            hub_hwm_kib=hwm,
            poll_cost=poll_cost,
            hub_reported=reported,
            pod=pod_shape(first) if first is not None else {},
            log_notes=notes,
            phases=phases,
            load=load,
            other_planes=others,
        )
    finally:
        mark = time.monotonic()
        if runner is not None:
            runner.stop()
        if responder is not None:
            responder.stop()
        if hub is not None:
            hub.stop()
        plane.stop()
        phases["teardown"] = time.monotonic() - mark
        left = our_processes(str(workdir), pids)
        if left:
            log(f"{tag} processes left after teardown: {left}")
    assert result is not None
    result.leftovers = left
    return result


# ------------------------------------------------------------------ report


def machine() -> str:
    return f"{cpus()}, Python {platform.python_version()}, {platform.system()} {platform.release()}"


def _s(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.1f}"


HOMES = {
    "new": "new homes (the storm creates and binds every home PVC)",
    "existing": "existing homes (every home PVC is bound already, as for people coming back)",
}


def _ratio_line(runs: Sequence[Variant]) -> str:
    """AIDC / stock over the rounds of one scenario (medians), or '' without both variants."""
    stock, aidc = [v for v in runs if v.name == "stock"], [v for v in runs if v.name == "aidc"]
    if not stock or not aidc:
        return ""

    def ratio(metric: Callable[[Variant], float]) -> float:
        return median([metric(v) for v in aidc]) / median([metric(v) for v in stock])

    throughput = ratio(lambda v: v.throughput)
    p95 = ratio(lambda v: nearest_rank(v.latencies, 0.95))
    cpu = ratio(lambda v: v.storm.hub_cpu)
    extra_ms = (median([v.storm.hub_cpu for v in aidc]) - median([v.storm.hub_cpu for v in stock])) / aidc[0].users
    per_round = [
        f"{a.throughput / s.throughput:.2f}x" for a in aidc for s in stock if a.round == s.round and s.throughput
    ]
    verdict = "meets" if throughput >= TARGET_RATIO else "MISSES"
    cpu_verdict = "meets" if extra_ms * 1000 <= TARGET_CPU_MS else "MISSES"
    rounds = len({v.round for v in runs})
    return (
        f"**{HOMES[runs[0].homes].split(' (')[0].capitalize()}, AIDC / stock"
        f" (median{'s' if rounds > 1 else ''} of {rounds} round{'s' if rounds > 1 else ''}):"
        f" throughput {throughput:.2f}x** (target ≥ {TARGET_RATIO}x: {verdict} it; per round {', '.join(per_round)}),"
        f" p95 latency {p95:.2f}x, hub CPU {cpu:.2f}x ({extra_ms * 1000:+.1f} ms of hub CPU per spawn; target"
        f" ≤ +{TARGET_CPU_MS:g} ms: {cpu_verdict} it)."
    )


def report(runs: Sequence[Variant], *, real_servers: bool, started_on: str, runtime: float, command: str) -> str:
    """The Markdown results section."""
    n = runs[0].users
    cpu_nodes = sum(1 for node in cpu_nodes_for(n) if node["metadata"]["name"].startswith("cpu-"))
    stand_in = (
        "real `jupyterhub-singleuser` processes (`tests/bed/podrunner.py`)"
        if real_servers
        else "the light responder (one process answering HTTP 200 on every Running pod's IP and port; no container runs)"
    )
    order = ", ".join(f"{v.homes}/{v.name}" for v in runs)
    lines = [
        f"Recorded {date.today().isoformat()} on {started_on} with `{command}`.",
        "",
        f"N = {n} people of one tenant spawning at once: profile `{PROFILE}` ({PROFILE_CPU} CPU, {PROFILE_MEMORY},"
        f" a {HOME_CAPACITY} home PVC each) on {cpu_nodes} KWOK CPU nodes; servers: {stand_in}. A fresh control"
        f" plane and hub for every run, in this order: {order}. Latency: from a user's POST to its 201 answer"
        " (the server is `ready`). *Pods created*: the hub's last pod create request; *serving*: every pod"
        " Running and answering HTTP; *wall*: the last server ready; all in seconds after the first POST."
        " *Create retries*: pod creates sent again (stock KubeSpawner: after its 3 s client timeout;"
        " TenantKubeSpawner: only after reading back that the first did not create the pod). *Load*: 1-minute"
        " load average as the storm began; *other planes*: other test control planes running on the machine then.",
        "",
        "| homes | round | spawner | ready | pods created | serving | wall | spawns/s | p50 | p95 | max |"
        " hub CPU (s) | hub peak RSS (MiB) | proxy CPU (s) | 429s | create retries | load | other planes |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v in runs:
        lat = v.latencies
        lines.append(
            f"| {v.homes} | {v.round} | {VARIANTS[v.name]} | {len(v.storm.ready)}/{v.users} | {_s(v.pods_created)} |"
            f" {_s(v.all_serving)} | {_s(v.wall)} | {v.throughput:.2f} | {_s(nearest_rank(lat, 0.5))} |"
            f" {_s(nearest_rank(lat, 0.95))} | {_s(max(lat, default=math.nan))} | {v.storm.hub_cpu:.1f} |"
            f" {v.hub_hwm_kib / 1024:.0f} | {_s(v.storm.proxy_cpu)} | {v.storm.throttled} | {v.create_retries} |"
            f" {v.load:.2f} |"
            f" {v.other_planes} |"
        )
    lines.append("")
    for homes in HOMES:
        line = _ratio_line([v for v in runs if v.homes == homes])
        if line:
            lines += [line, ""]
    shapes = [v.pod for v in runs]
    diff = sorted(
        {key for shape in shapes for key in set(shape) | set(shapes[0]) if shape.get(key) != shapes[0].get(key)}
    )
    lines += [
        "Pods of every run are the same (labels, image, resources, security contexts, volumes, selectors,"
        " tolerations, env names, args)."
        if not diff
        else f"Pods differ between the runs in: {', '.join(diff)}.",
        f"Hub RSS before the storm: {median([v.hub_rss_before_kib for v in runs]) / 1024:.0f} MiB. One"
        f" `GET /hub/api/users?state=ready` listing all {n} costs the hub"
        f" {median([v.poll_cost for v in runs]) * 1000:.0f} ms of CPU (why nothing polls during the storm).",
        "",
    ]
    for v in runs:
        codes = ", ".join(f"{code} ×{k}" for code, k in sorted(v.storm.codes.items())) or "none"
        notes = ", ".join(f"{k} ×{c}" for k, c in v.log_notes.most_common()) or "none"
        lines.append(
            f"- {v.homes} homes, round {v.round}, {VARIANTS[v.name]}: POST answers {codes};"
            f" {len(v.storm.failed)} failed; {v.answered} answered `/user/<name>/api/status` through the proxy"
            f" afterwards, `GET /users?state=ready` listed {v.storm.listed_ready}. The hub's own \"took N seconds"
            f' to start" (before the proxy route): p50 {_s(nearest_rank(v.hub_reported, 0.5))},'
            f" p95 {_s(nearest_rank(v.hub_reported, 0.95))}. Hub warnings/errors: {notes}. Phases (s): "
            + ", ".join(f"{k} {t:.0f}" for k, t in v.phases.items())
            + "."
        )
        for name, reason in list(v.storm.failed.items())[:3]:
            lines.append(f"  - {name}: {reason}")
    lines += [
        "",
        f"Whole run {runtime:.0f} s; processes of ours left after teardown: {sum(len(v.leftovers) for v in runs)}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200, help="people spawning at once (default 200)")
    parser.add_argument("--variants", default="stock,aidc", help="spawners, in this order (default stock,aidc)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat; even rounds run the variants in reverse order (default 1)"
    )
    parser.add_argument(
        "--homes",
        default="new",
        help="new (the storm creates the home PVCs), existing (bound already), or both as new,existing (default new)",
    )
    parser.add_argument("--real-servers", action="store_true", help="real jupyterhub-singleuser per pod (small N)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for all servers (default 300)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory with every log")
    parser.add_argument(
        "--write", metavar="PATH", type=Path, help="record the results in this README, between the markers"
    )
    parser.add_argument("--responder", metavar="KUBECONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--pod-cidr", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.responder:
        asyncio.run(respond(args.responder, args.pod_cidr))
        return 0

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(VARIANTS)
    if unknown or not variants:
        parser.error(f"--variants takes {', '.join(VARIANTS)}, not {args.variants!r}")
    scenarios = [h.strip() for h in args.homes.split(",") if h.strip()]
    if set(scenarios) - set(HOMES) or not scenarios:
        parser.error(f"--homes takes {', '.join(HOMES)}, not {args.homes!r}")
    users = user_names(args.users)
    started_on = machine()
    t0 = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="aidc-spawn-k8s-"))
    log(f"work directory {workdir}")
    runs: list[Variant] = []
    try:
        for homes, round_ in ((h, r) for h in scenarios for r in range(1, args.rounds + 1)):
            for variant in variants if round_ % 2 else variants[::-1]:
                runs.append(
                    run_variant(
                        variant,
                        round_,
                        homes,
                        users,
                        workdir / f"{homes}-{round_}-{variant}",
                        real_servers=args.real_servers,
                        timeout=args.timeout,
                        log=log,
                    )
                )
    finally:
        if args.keep:
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    command = " ".join(["benchmarks/spawn_k8s.py", *(argv if argv is not None else sys.argv[1:])])
    section = report(
        runs, real_servers=args.real_servers, started_on=started_on, runtime=time.monotonic() - t0, command=command
    )
    print(section)
    if args.write:
        # the storm of 200 (new and existing homes) and the one of 1,000 are recorded side by side
        write_section(args.write, SECTION if args.users == 200 else f"{SECTION}_{args.users}", section)
        log(f"recorded in {args.write}")
    return 0 if all(v.ok for v in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
