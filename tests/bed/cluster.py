"""A real Kubernetes control plane for the `k8s` tier.

``ControlPlane(workdir).start()`` runs ``tests/bed/controlplane/build.sh`` (which
builds, once, and caches kube-apiserver, kube-controller-manager, kube-scheduler,
kubectl, etcd and kwok from the Go module proxy), makes a CA and certificates with
``openssl``, and starts on free loopback ports:

- etcd (data in ``workdir/etcd``),
- kube-apiserver (RBAC + Node authorization, ServiceAccount and ResourceQuota admission, ...),
- kube-controller-manager (service accounts and their tokens, resource quotas, namespaces, ...),
- kube-scheduler (the real one: it places pods on the nodes below),
- kwok, which plays the kubelet of fake nodes: it marks them Ready, keeps their leases,
  and runs pods bound to them (``Running``, with a pod IP from a free loopback /16, ``ControlPlane.pod_cidr``).

It then creates the fake GPU data center of :data:`NODES` (two H100 nodes with 8 GPUs
each, one A100 node cut into seven ``mig-1g.10gb`` slices, two CPU nodes) and waits
until they are Ready. ``stop()`` ends every process group it started.

Every component logs to ``workdir/<name>.log``; a start-up failure raises
:class:`ControlPlaneError` with the tails of those logs.

Run ``python -m tests.bed.cluster`` for a self-check (quota + scheduling + admission).
"""

from __future__ import annotations

import copy
import functools
import ipaddress
import json
import os
import random
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests
from urllib3.exceptions import InsecureRequestWarning

from tests.bed.procs import Servers, log_tail, run_build, self_check_main, terminate

REPO = Path(__file__).resolve().parents[2]
BUILD_SH = REPO / "tests" / "bed" / "controlplane" / "build.sh"

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
H100 = "NVIDIA-H100-80GB-HBM3"
A100 = "NVIDIA-A100-SXM4-80GB"
# ClusterIPs are allocated on paper only (no kube-proxy), but from loopback too, so that a
# stray connection to one can never leave the machine.
SERVICE_CIDR = "127.2.0.0/16"


def _node(
    name: str, *, cpu: str, memory: str, labels: dict[str, str], extra: dict[str, str], gpu: bool
) -> dict[str, Any]:
    resources = {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "1Ti", **extra}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                **labels,
            },
        },
        "spec": {"taints": [dict(GPU_TAINT)] if gpu else []},
        "status": {"capacity": dict(resources), "allocatable": dict(resources)},
    }


def _gpu_labels(product: str, count: int, **more: str) -> dict[str, str]:
    return {
        "nvidia.com/gpu.product": product,
        "nvidia.com/gpu.count": str(count),
        "nvidia.com/gpu.present": "true",
        **more,
    }


#: The fake data center every ControlPlane starts with (pass ``nodes=`` for another).
NODES: list[dict[str, Any]] = [
    *(
        _node(f"h100-{i}", cpu="96", memory="1Ti", labels=_gpu_labels(H100, 8), extra={"nvidia.com/gpu": "8"}, gpu=True)
        for i in range(2)
    ),
    _node(
        "a100-mig-0",
        cpu="96",
        memory="1Ti",
        labels=_gpu_labels(A100, 1, **{"nvidia.com/mig.strategy": "mixed", "nvidia.com/mig-1g.10gb.count": "7"}),
        extra={"nvidia.com/mig-1g.10gb": "7"},
        gpu=True,
    ),
    *(_node(f"cpu-{i}", cpu="32", memory="256Gi", labels={}, extra={}, gpu=False) for i in range(2)),
]


class ControlPlaneError(RuntimeError):
    pass


def free_ports(n: int) -> list[int]:
    """n distinct free loopback TCP ports (all held open while picking, so no duplicates)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def build(*, quiet: bool = False) -> Path:
    """Run build.sh (a no-op once cached) and return the bin dir it prints last."""
    return run_build(BUILD_SH, bin_env="AIDC_CONTROLPLANE_BIN", error=ControlPlaneError, quiet=quiet)


def free_pod_cidr() -> str:
    """A /16 of 127.0.0.0/8 (loopback only) that is not the services' range and has nothing
    listening on its first addresses (another bed on this machine would)."""
    taken = {ipaddress.ip_network(SERVICE_CIDR), ipaddress.ip_network("127.0.0.0/16")}
    for second in random.Random().sample(range(16, 250), 60):
        net = ipaddress.ip_network(f"127.{second}.0.0/16")
        if net not in taken and all(_port_free(str(net[i]), 8888) for i in range(1, 4)):
            return str(net)
    raise ControlPlaneError("no free /16 in 127.0.0.0/8 for pod IPs")


def _port_free(ip: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((ip, port))
        except OSError:
            return False
    return True


# ------------------------------------------------------------------- PKI (openssl)


def openssl(cwd: Path, *args: str, error: type[Exception] = ControlPlaneError) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise error(f"openssl {' '.join(args)} failed:\n{proc.stderr}")


def make_ca(pki: Path, name: str, subject: str, *, error: type[Exception] = ControlPlaneError) -> None:
    """``pki/<name>.key`` (EC P-256) and the self-signed CA certificate ``pki/<name>.crt``."""
    o = functools.partial(openssl, pki, error=error)
    o("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{name}.key")
    o(
        "req", "-x509", "-new", "-key", f"{name}.key", "-sha256", "-days", "3650", "-subj", subject,
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        "-out", f"{name}.crt",
    )  # fmt: skip


def make_cert(
    pki: Path,
    name: str,
    subject: str,
    usage: str,
    sans: str | None = None,
    *,
    ca: str | None = "ca",
    error: type[Exception] = ControlPlaneError,
) -> None:
    """``pki/<name>.key`` (EC P-256) and ``pki/<name>.crt`` for ``usage`` (``serverAuth``,
    ``clientAuth``), signed by ``pki/<ca>.{crt,key}``, or self-signed when ``ca`` is None."""
    o = functools.partial(openssl, pki, error=error)
    o("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{name}.key")
    ext = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={usage}",
    ]
    if sans:
        ext.append(f"subjectAltName={sans}")
    if ca is None:
        addext = [*(a for e in ext for a in ("-addext", e)), "-out", f"{name}.crt"]
        o("req", "-x509", "-new", "-key", f"{name}.key", "-sha256", "-days", "3650", "-subj", subject, *addext)
        return
    o("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr")
    (pki / f"{name}.ext").write_text("\n".join(ext) + "\n")
    o(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
        "-sha256", "-days", "3650", "-extfile", f"{name}.ext", "-out", f"{name}.crt",
    )  # fmt: skip


class ControlPlane(Servers):
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok on loopback."""

    COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
    error = ControlPlaneError
    what = "control plane"

    def __init__(
        self,
        workdir: Path,
        *,
        bin_dir: Path | None = None,
        nodes: Sequence[dict[str, Any]] | None = None,
        start_timeout: float = 120.0,
        die_with_parent: bool = True,
        pod_cidr: str | None = None,
    ) -> None:
        """``pod_cidr``: the loopback /16 KWOK hands pod IPs out of; default: a free one
        (:func:`free_pod_cidr`), so two beds on one machine never give two pods one address."""
        self.workdir = Path(workdir).resolve()
        self.pod_cidr = pod_cidr or free_pod_cidr()
        if not ipaddress.ip_network(self.pod_cidr).subnet_of(ipaddress.ip_network("127.0.0.0/8")):
            raise ValueError(f"pod CIDR {self.pod_cidr} is not loopback: test traffic must stay on 127.0.0.0/8")
        self.bin_dir = Path(bin_dir) if bin_dir else None
        self.nodes = [copy.deepcopy(n) for n in (NODES if nodes is None else nodes)]
        self.start_timeout = start_timeout
        self.die_with_parent = die_with_parent
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.pki = self.workdir / "pki"
        self.ports: dict[str, int] = {}
        self.server = ""
        self.timings: dict[str, float] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # ------------------------------------------------------------------ public

    def start(self) -> ControlPlane:
        """Build (cached), then start a fresh cluster: etcd data from an earlier start is wiped."""
        return super().start()

    def _check_startable(self) -> None:
        if self._procs:
            raise ControlPlaneError("this ControlPlane is already started")

    def _build(self) -> Path:
        return build()

    def _running(self) -> dict[str, subprocess.Popen[bytes]]:
        return self._procs

    def _log_files(self) -> list[Path]:
        return [self.log_path(n) for n in self.COMPONENTS]

    def _tails(self) -> str:
        return self.log_tails()

    def _start_once(self) -> None:
        shutil.rmtree(self.workdir / "etcd", ignore_errors=True)
        ports = free_ports(5)
        self.ports = dict(
            zip(
                ("etcd", "etcd-peer", "kube-apiserver", "kube-controller-manager", "kube-scheduler"), ports, strict=True
            )
        )
        self.server = f"https://127.0.0.1:{self.ports['kube-apiserver']}"
        self._phase("pki", self._make_pki)
        self._phase("kubeconfigs", self._write_kubeconfigs)
        self._phase("etcd", self._start_etcd)
        self._phase("kube-apiserver", self._start_apiserver)
        self._phase("controllers", self._start_controllers)
        self._phase("nodes", self._create_nodes)
        self._phase("service-account", lambda: self.wait_for_service_account("default"))

    def stop(self) -> None:
        """End every process group started, newest first. Safe to call twice."""
        for name in reversed(list(self._procs)):
            terminate(self._procs.pop(name))

    def api_client(self) -> Any:
        """A kubernetes.client.ApiClient authenticated as the admin (system:masters)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        assert self.bin_dir is not None
        cmd = [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, input=input)

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def log_tails(self, lines: int = 25) -> str:
        out = []
        for name in self.COMPONENTS:
            path = self.log_path(name)
            if not path.exists():
                continue
            out.append(log_tail(path, self._procs.get(name), lines))
        return "\n".join(out)

    def alive(self) -> dict[str, bool]:
        return {name: proc.poll() is None for name, proc in self._procs.items()}

    def wait_for_service_account(self, name: str, namespace: str = "default", timeout: float = 60.0) -> None:
        self._wait(
            f"service account {namespace}/{name}",
            lambda: self._get(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}").status_code == 200,
            timeout,
        )

    # --------------------------------------------------------------- internals

    def _check_bins(self) -> None:
        assert self.bin_dir is not None
        for b in (*self.COMPONENTS, "kubectl"):
            if not os.access(self.bin_dir / b, os.X_OK):
                raise ControlPlaneError(f"{self.bin_dir / b} is missing or not executable")
        stages = self.bin_dir.parent / "kwok-stages"
        if not sorted(stages.glob("*/*/*.yaml")):
            raise ControlPlaneError(f"no kwok stage definitions under {stages}")

    def _make_pki(self) -> None:
        self.pki.mkdir(parents=True, exist_ok=True)
        o = functools.partial(openssl, self.pki)
        make_ca(self.pki, "ca", "/CN=aidc-test-ca")
        # Service-account tokens: RSA, as every OIDC/JWT consumer takes RS256.
        o("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key")
        o("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub")
        sans = ",".join(
            [
                "IP:127.0.0.1",
                f"IP:{ipaddress.ip_network(SERVICE_CIDR)[1]}",
                "DNS:localhost",
                "DNS:kubernetes",
                "DNS:kubernetes.default",
                "DNS:kubernetes.default.svc",
                "DNS:kubernetes.default.svc.cluster.local",
            ]
        )
        self._cert("apiserver", "/CN=kube-apiserver", "serverAuth", sans)
        self._cert("admin", "/O=system:masters/CN=aidc-admin", "clientAuth")
        self._cert("kube-controller-manager", "/CN=system:kube-controller-manager", "clientAuth")
        self._cert("kube-scheduler", "/CN=system:kube-scheduler", "clientAuth")
        # The front proxy (aggregated APIs): without it every component logs a missing
        # requestheader CA bundle forever.
        make_ca(self.pki, "front-proxy-ca", "/CN=aidc-front-proxy-ca")
        self._cert("front-proxy-client", "/CN=front-proxy-client", "clientAuth", ca="front-proxy-ca")
        # kwok writes node and pod status and node leases: admin rights, as kwokctl gives it.
        self._cert("kwok", "/O=system:masters/CN=kwok-controller", "clientAuth")

    def _cert(self, name: str, subject: str, usage: str, sans: str | None = None, ca: str = "ca") -> None:
        make_cert(self.pki, name, subject, usage, sans, ca=ca)

    def _kubeconfig(self, path: Path, user: str) -> None:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "aidc", "cluster": {"server": self.server, "certificate-authority": str(self.pki / "ca.crt")}}
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate": str(self.pki / f"{user}.crt"),
                        "client-key": str(self.pki / f"{user}.key"),
                    },
                }
            ],
            "contexts": [{"name": "aidc", "context": {"cluster": "aidc", "user": user, "namespace": "default"}}],
            "current-context": "aidc",
        }
        path.write_text(json.dumps(cfg, indent=2) + "\n")  # JSON is YAML
        path.chmod(0o600)

    def _write_kubeconfigs(self) -> None:
        self._kubeconfig(self.kubeconfig, "admin")
        for user in ("kube-controller-manager", "kube-scheduler", "kwok"):
            self._kubeconfig(self.workdir / f"{user}.kubeconfig", user)

    def _start(self, name: str, args: list[str]) -> None:
        self._procs[name] = self._spawn(name, args, self.log_path(name))

    def _start_etcd(self) -> None:
        client = f"http://127.0.0.1:{self.ports['etcd']}"
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        self._start(
            "etcd",
            [
                "--name=aidc",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=aidc={peer}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",  # a throw-away test store
                "--quota-backend-bytes=2147483648",
                "--log-level=warn",
            ],
        )
        self._wait("etcd /health", lambda: requests.get(f"{client}/health", timeout=2).json().get("health") == "true")

    def _get(self, path: str, timeout: float = 5.0) -> requests.Response:
        return requests.get(
            self.server + path,
            cert=(str(self.pki / "admin.crt"), str(self.pki / "admin.key")),
            verify=str(self.pki / "ca.crt"),
            timeout=timeout,
        )

    def _start_apiserver(self) -> None:
        p = self.pki
        self._start(
            "kube-apiserver",
            [
                f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.ports['kube-apiserver']}",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
                f"--client-ca-file={p / 'ca.crt'}",
                f"--requestheader-client-ca-file={p / 'front-proxy-ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={p / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={p / 'front-proxy-client.key'}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins="
                + ",".join(
                    [
                        "NamespaceLifecycle",
                        "LimitRanger",
                        "ServiceAccount",
                        "NodeRestriction",
                        "TaintNodesByCondition",
                        "Priority",
                        "DefaultTolerationSeconds",
                        "DefaultStorageClass",
                        "StorageObjectInUseProtection",
                        "PersistentVolumeClaimResize",
                        "RuntimeClass",
                        "PodSecurity",
                        "CertificateApproval",
                        "CertificateSigning",
                        "CertificateSubjectRestriction",
                        "DefaultIngressClass",
                        "MutatingAdmissionPolicy",
                        "MutatingAdmissionWebhook",
                        "ValidatingAdmissionPolicy",
                        "ValidatingAdmissionWebhook",
                        "ResourceQuota",
                    ]
                ),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={p / 'sa.pub'}",
                f"--service-account-signing-key-file={p / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
                "--event-ttl=10m",
                "--v=1",
            ],
        )
        self._wait("kube-apiserver /readyz", lambda: self._get("/readyz", timeout=3).status_code == 200)

    def _start_controllers(self) -> None:
        p = self.pki
        kcm_kc = str(self.workdir / "kube-controller-manager.kubeconfig")
        self._start(
            "kube-controller-manager",
            [
                f"--kubeconfig={kcm_kc}",
                f"--authentication-kubeconfig={kcm_kc}",
                f"--authorization-kubeconfig={kcm_kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['kube-controller-manager']}",
                # Everything on by default except what needs a cloud or a node IPAM (no CNI here).
                "--controllers=*,-cloud-node-lifecycle-controller,-service-lb-controller,-node-route-controller,-node-ipam-controller",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={p / 'sa.key'}",
                f"--root-ca-file={p / 'ca.crt'}",
                f"--cluster-signing-cert-file={p / 'ca.crt'}",
                f"--cluster-signing-key-file={p / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ],
        )
        sched_kc = str(self.workdir / "kube-scheduler.kubeconfig")
        self._start(
            "kube-scheduler",
            [
                f"--kubeconfig={sched_kc}",
                f"--authentication-kubeconfig={sched_kc}",
                f"--authorization-kubeconfig={sched_kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['kube-scheduler']}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ],
        )
        stages = sorted((self.bin_dir or Path()).parent.joinpath("kwok-stages").glob("*/*/*.yaml"))
        kwok_cfg = self.workdir / "kwok.yaml"
        kwok_cfg.write_text("\n---\n".join(s.read_text().strip() for s in stages) + "\n")
        self._start(
            "kwok",
            [
                f"--kubeconfig={self.workdir / 'kwok.kubeconfig'}",
                f"--config={kwok_cfg}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
                f"--cidr={self.pod_cidr}",
                "--node-ip=127.0.0.1",
                "--node-lease-duration-seconds=40",
            ],
        )
        for name in ("kube-controller-manager", "kube-scheduler"):
            url = f"https://127.0.0.1:{self.ports[name]}/healthz"
            self._wait(f"{name} {url}", functools.partial(_healthy_self_signed, url))

    def _create_nodes(self) -> None:
        from kubernetes import client

        with self.api_client() as api:
            core: Any = client.CoreV1Api(api)  # takes plain dicts as bodies
            for node in self.nodes:
                core.create_node(node)
            names = {n["metadata"]["name"] for n in self.nodes}

            def all_ready() -> bool:
                ready = set()
                for n in core.list_node().items:
                    for c in n.status.conditions or []:
                        if c.type == "Ready" and c.status == "True":
                            ready.add(n.metadata.name)
                return names <= ready

            self._wait(f"nodes {sorted(names)} Ready", all_ready)


def _healthy_self_signed(url: str) -> bool:
    # kube-controller-manager and kube-scheduler self-sign their serving certificates in
    # memory: there is nothing to verify them against.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureRequestWarning)
        return requests.get(url, verify=False, timeout=2).status_code == 200


# ---------------------------------------------------------------- self-check


def _self_check(workdir: Path) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    marks: dict[str, float] = {}
    t0 = time.monotonic()
    plane = ControlPlane(workdir)
    plane.start()
    marks["start (build check + pki + 5 components + 5 Ready nodes)"] = time.monotonic() - t0
    try:
        with plane.api_client() as api:
            core: Any = client.CoreV1Api(api)  # takes plain dicts as bodies
            ns = "selfcheck"
            t = time.monotonic()
            core.create_namespace({"metadata": {"name": ns}})
            core.create_namespaced_resource_quota(
                ns, {"metadata": {"name": "gpus"}, "spec": {"hard": {"requests.nvidia.com/gpu": "8"}}}
            )
            plane._wait(
                "quota status from the resourcequota controller",
                lambda: bool(
                    (core.read_namespaced_resource_quota("gpus", ns).status.hard or {}).get("requests.nvidia.com/gpu")
                ),
            )
            plane.wait_for_service_account("default", ns)
            marks["namespace + quota synced + default SA"] = time.monotonic() - t

            def pod(name: str, gpus: int) -> dict[str, Any]:
                return {
                    "metadata": {"name": name},
                    "spec": {
                        "nodeSelector": {"nvidia.com/gpu.product": H100},
                        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                        "containers": [
                            {
                                "name": "main",
                                "image": "registry.invalid/notebook:latest",
                                "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                            }
                        ],
                    },
                }

            t = time.monotonic()
            core.create_namespaced_pod(ns, pod("one-gpu", 1))
            plane._wait(
                "pod one-gpu Running", lambda: core.read_namespaced_pod("one-gpu", ns).status.phase == "Running", 60
            )
            p = core.read_namespaced_pod("one-gpu", ns)
            marks["pod scheduled + Running"] = time.monotonic() - t
            assert p.spec.node_name in ("h100-0", "h100-1"), p.spec.node_name
            assert p.status.pod_ip and ipaddress.ip_address(p.status.pod_ip) in ipaddress.ip_network(plane.pod_cidr)
            assert p.spec.service_account_name == "default"
            print(f"pod one-gpu: node={p.spec.node_name} ip={p.status.pod_ip} phase={p.status.phase}")
            core.patch_namespaced_pod("one-gpu", ns, {"metadata": {"labels": {"app": "one-gpu"}}})
            svc = core.create_namespaced_service(
                ns,
                {"metadata": {"name": "one-gpu"}, "spec": {"selector": {"app": "one-gpu"}, "ports": [{"port": 8888}]}},
            )
            assert ipaddress.ip_address(svc.spec.cluster_ip) in ipaddress.ip_network(SERVICE_CIDR), svc.spec.cluster_ip
            print(f"service one-gpu: clusterIP={svc.spec.cluster_ip}")
            used = core.read_namespaced_resource_quota("gpus", ns).status
            print(f"quota gpus: hard={used.hard} used={used.used}")

            t = time.monotonic()
            try:
                core.create_namespaced_pod(ns, pod("too-many", 8))
            except ApiException as e:
                body = e.body or ""
                assert e.status == 403, (e.status, body)
                assert "exceeded quota" in body, body
                print(f"pod too-many: rejected {e.status}: {json.loads(body)['message']}")
            else:
                raise AssertionError("a pod over the GPU quota was admitted")
            marks["over-quota rejection"] = time.monotonic() - t

            t = time.monotonic()
            core.delete_namespaced_pod("one-gpu", ns)  # default 30s grace: kwok plays the kubelet's part

            def gone() -> bool:
                try:
                    core.read_namespaced_pod("one-gpu", ns)
                except ApiException as e:
                    return e.status == 404
                return False

            plane._wait("pod one-gpu deleted", gone, 60)
            marks["pod deleted"] = time.monotonic() - t
            version = plane.kubectl("version", "-o", "json").stdout
            print("server version:", json.loads(version)["serverVersion"]["gitVersion"])
    finally:
        t = time.monotonic()
        pids = [proc.pid for proc in plane._procs.values()]
        plane.stop()
        plane.stop()
        marks["stop"] = time.monotonic() - t
    left = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert not left, f"processes left behind: {left}"
    for k, v in plane.timings.items():
        print(f"  plane.{k}: {v:.2f}s")
    for k, v in marks.items():
        print(f"{k}: {v:.2f}s")
    print("self-check passed")


if __name__ == "__main__":
    self_check_main(_self_check, "aidc-controlplane-")
