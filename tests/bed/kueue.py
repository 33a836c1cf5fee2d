"""A real Kueue for the `k8s` tier, on a :class:`~tests.bed.cluster.ControlPlane`.

``Kueue(plane, workdir).start()`` runs ``tests/bed/kueue/build.sh`` (which builds, once,
and caches ``kueue`` and its manifests from the Go module proxy), then:

- applies Kueue's CRDs (server-side: the Workload CRD is too big for a client-side apply)
  and waits until they are Established;
- makes a CA and a serving certificate for 127.0.0.1 with ``openssl`` (``workdir/pki``);
- writes a Kueue ``Configuration`` (``workdir/kueue-config.yaml``): webhook server, health
  probes and visibility server on free loopback ports, metrics off, no leader election,
  the ``pod`` integration only, in namespaces labelled ``aidc.io/tenant`` (:data:`TENANT_LABEL`);
- starts ``kueue`` (log: ``workdir/kueue.log``) and waits for its readiness probe;
- points the conversion webhook of the CRDs Kueue converts (v1beta1 <-> v1beta2) at it;
- registers Kueue's webhooks (``kueue-mutating-webhook-configuration`` and
  ``kueue-validating-webhook-configuration``) with ``url: https://127.0.0.1:<port>/...`` and the
  CA as ``caBundle``. Only the webhooks of ``kueue.x-k8s.io`` objects and of the enabled
  integrations are registered; the latter only for :data:`TENANT_LABEL` namespaces, so the
  bed's other namespaces never reach Kueue;
- registers the visibility API (``v1beta2`` and ``v1beta1.visibility.kueue.x-k8s.io``) through a
  Service ``kueue-system/kueue-visibility-server`` of type ExternalName ``localhost``;
- waits until the validating webhook answers (a probe ResourceFlavor is created and deleted)
  and ``/apis/visibility.kueue.x-k8s.io/v1beta2`` answers 200 through the kube-apiserver.

``stop()`` first removes the webhook configurations and the APIServices and sets the CRDs'
conversion back to ``None`` (a dead webhook with ``failurePolicy: Fail`` would block pods, a
dead APIService would stall namespace deletion), then ends kueue's process group. The CRDs,
the ``kueue-system`` namespace and Kueue objects are left in the cluster.

Kueue v0.17.0 reads two certificate pairs from fixed paths that no flag or Configuration
field changes (when ``internalCertManagement`` is off): ``/visibility/tls.{crt,key}`` (the
visibility API server, ``pkg/visibility/server.go``) and ``/etc/kueue/metrics/certs/tls.{crt,key}``
(the metrics server's cert watcher, read at start even with metrics off, ``cmd/kueue/main.go``).
If they are missing or invalid they are created there (self-signed, 127.0.0.1); existing
valid ones are reused, so beds running side by side do not swap them under each other.
That needs write access to ``/`` and ``/etc`` (the test machines run as root).

Run ``python -m tests.bed.kueue`` for a self-check (a fresh ControlPlane, Kueue started and stopped).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.bed.cluster import ControlPlane, free_ports, make_ca, make_cert
from tests.bed.procs import Servers, log_tail, run_build, self_check_main, terminate

REPO = Path(__file__).resolve().parents[2]
BUILD_SH = REPO / "tests" / "bed" / "kueue" / "build.sh"

#: Kueue manages pods (and registers its pod webhooks) only in namespaces with this label.
TENANT_LABEL = "aidc.io/tenant"
#: The label that puts a pod into a LocalQueue.
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
NAMESPACE = "kueue-system"
GROUP = "kueue.x-k8s.io"
VERSION = "v1beta2"
VISIBILITY_GROUP = "visibility.kueue.x-k8s.io"
VISIBILITY_VERSIONS = ("v1beta2", "v1beta1")
VISIBILITY_SERVICE = "kueue-visibility-server"
MUTATING = "kueue-mutating-webhook-configuration"
VALIDATING = "kueue-validating-webhook-configuration"
#: Kueue's fixed certificate paths (see the module docstring).
FIXED_CERT_DIRS = (Path("/visibility"), Path("/etc/kueue/metrics/certs"))

# integration name -> the (API group, resource) its webhooks intercept
FRAMEWORK_RESOURCES: dict[str, tuple[str, str]] = {
    "pod": ("", "pods"),
    "batch/job": ("batch", "jobs"),
    "deployment": ("apps", "deployments"),
    "statefulset": ("apps", "statefulsets"),
}


class KueueError(RuntimeError):
    pass


class _Fatal(Exception):
    """Raised by a readiness check: waiting longer will not help."""


def build(*, quiet: bool = False) -> Path:
    """Run build.sh (a no-op once cached) and return the bin dir it prints last."""
    return run_build(BUILD_SH, bin_env="AIDC_KUEUE_BIN", error=KueueError, quiet=quiet)


SERVING_SANS = "IP:127.0.0.1,DNS:localhost"


def _valid_pair(crt: Path, key: Path) -> bool:
    """crt/key exist, match, name 127.0.0.1 and are good for at least a day."""
    if not (crt.is_file() and key.is_file()):
        return False
    checks = [
        ["x509", "-in", str(crt), "-noout", "-checkend", "86400"],
        ["x509", "-in", str(crt), "-noout", "-checkip", "127.0.0.1"],
    ]
    for args in checks:
        proc = subprocess.run(["openssl", *args], capture_output=True, text=True)
        if proc.returncode != 0 or "does NOT match" in proc.stdout:
            return False
    pubs = [
        subprocess.run(["openssl", *args], capture_output=True).stdout
        for args in (
            ["x509", "-in", str(crt), "-noout", "-pubkey"],
            ["pkey", "-in", str(key), "-pubout"],
        )
    ]
    return bool(pubs[0]) and pubs[0] == pubs[1]


def ensure_fixed_certs(dirs: Sequence[Path] = FIXED_CERT_DIRS) -> None:
    """Make sure each dir holds a valid self-signed tls.crt/tls.key for 127.0.0.1 (see module doc)."""
    for d in dirs:
        try:
            d.mkdir(parents=True, exist_ok=True)
            lock = open(d / ".aidc-lock", "w")
        except OSError as e:
            raise KueueError(
                f"Kueue reads certificates from {d} (a fixed path): cannot create it ({e}); "
                "the bed has to run as root or with that directory writable"
            ) from e
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            crt, key = d / "tls.crt", d / "tls.key"
            if _valid_pair(crt, key):
                continue
            with tempfile.TemporaryDirectory(dir=d, prefix=".new-") as tmp:
                t = Path(tmp)
                make_cert(t, "tls", "/CN=aidc-kueue-test", "serverAuth", SERVING_SANS, ca=None, error=KueueError)
                (t / "tls.key").chmod(0o600)
                os.replace(t / "tls.key", key)
                os.replace(t / "tls.crt", crt)


class Kueue(Servers):
    """kueue (controller manager + webhooks + visibility API server) against a ControlPlane."""

    NAME = "kueue"
    error = KueueError
    what = "Kueue"
    fatal = (_Fatal,)

    def __init__(
        self,
        plane: ControlPlane,
        workdir: Path,
        *,
        bin_dir: Path | None = None,
        frameworks: Sequence[str] = ("pod",),
        tenant_label: str = TENANT_LABEL,
        feature_gates: dict[str, bool] | None = None,
        start_timeout: float = 120.0,
        die_with_parent: bool = True,
    ) -> None:
        unknown = set(frameworks) - set(FRAMEWORK_RESOURCES)
        if unknown:
            raise ValueError(f"unsupported Kueue integrations {sorted(unknown)}: have {sorted(FRAMEWORK_RESOURCES)}")
        self.plane = plane
        self.workdir = Path(workdir).resolve()
        self.bin_dir = Path(bin_dir) if bin_dir else None
        self.frameworks = list(frameworks)
        self.tenant_label = tenant_label
        self.feature_gates = {"VisibilityOnDemand": True, **(feature_gates or {})}
        self.start_timeout = start_timeout
        self.die_with_parent = die_with_parent
        self.pki = self.workdir / "pki"
        self.cert_dir = self.workdir / "webhook-certs"
        self.config_path = self.workdir / "kueue-config.yaml"
        self.ports: dict[str, int] = {}
        self.timings: dict[str, float] = {}
        self.visibility_ready = False
        self.webhooks: dict[str, list[str]] = {}  # configuration name -> webhook names registered
        self.crds: list[str] = []  # names of the CRDs applied
        self.ca_bundle = ""  # base64 of workdir/pki/ca.crt, the webhook server's CA
        self._proc: subprocess.Popen[bytes] | None = None
        self._registered = False

    # ------------------------------------------------------------------ public

    @property
    def manifests(self) -> Path:
        if self.bin_dir is None:
            raise KueueError("Kueue is not built yet (call start())")
        return self.bin_dir.parent

    @property
    def webhook_url(self) -> str:
        return f"https://127.0.0.1:{self.ports['webhook']}"

    @property
    def visibility_url(self) -> str:
        """The visibility API server itself (not through the kube-apiserver)."""
        return f"https://127.0.0.1:{self.ports['visibility']}"

    def start(self) -> Kueue:
        return super().start()

    def _check_startable(self) -> None:
        if self._proc is not None:
            raise KueueError("this Kueue is already started")
        if not self.plane.server or self.plane.bin_dir is None:
            raise KueueError("the ControlPlane is not started")

    def _build(self) -> Path:
        return build()

    def _check_bins(self) -> None:
        assert self.bin_dir is not None
        if not os.access(self.bin_dir / self.NAME, os.X_OK):
            raise KueueError(f"{self.bin_dir / self.NAME} is missing or not executable")

    def _running(self) -> dict[str, subprocess.Popen[bytes]]:
        return {} if self._proc is None else {self.NAME: self._proc}

    def _log_files(self) -> list[Path]:
        return [self.log_path]

    def _tails(self) -> str:
        return self.log_tail()

    def stop(self) -> None:
        """Unregister the webhooks and the visibility API, then end kueue. Safe to call twice."""
        if self._registered:
            self._registered = False
            self.visibility_ready = False
            with contextlib.suppress(Exception):  # the plane may be gone already
                self._conversion(webhook=False)
            for kind, name in [
                ("mutatingwebhookconfiguration", MUTATING),
                ("validatingwebhookconfiguration", VALIDATING),
                *[("apiservice", f"{v}.{VISIBILITY_GROUP}") for v in VISIBILITY_VERSIONS],
                ("service", VISIBILITY_SERVICE),
            ]:
                ns = ["-n", NAMESPACE] if kind == "service" else []
                with contextlib.suppress(Exception):  # the plane may be gone already
                    self.plane.kubectl("delete", kind, name, *ns, "--ignore-not-found", "--wait=false", check=False)
        if self._proc is not None:
            proc, self._proc = self._proc, None
            terminate(proc)

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.NAME}.log"

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return f"--- {self.log_path}: no log"
        return log_tail(self.log_path, self._proc, lines)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def api_get(self, path: str, timeout: float = 10.0) -> requests.Response:
        """GET ``path`` from the kube-apiserver as the admin."""
        return self._request("GET", path, timeout=timeout)

    def pending_workloads(self, namespace: str, local_queue: str) -> list[dict[str, Any]]:
        """The visibility API's pending workloads of a LocalQueue (through the kube-apiserver)."""
        r = self.api_get(
            f"/apis/{VISIBILITY_GROUP}/{VISIBILITY_VERSIONS[0]}/namespaces/{namespace}"
            f"/localqueues/{local_queue}/pendingworkloads"
        )
        if r.status_code != 200:
            raise KueueError(f"pendingworkloads of {namespace}/{local_queue}: {r.status_code} {r.text[:500]}")
        return list(r.json().get("items") or [])

    # --------------------------------------------------------------- internals

    def _request(self, method: str, path: str, timeout: float = 10.0, **kw: Any) -> requests.Response:
        pki = self.plane.pki
        return requests.request(
            method,
            self.plane.server + path,
            cert=(str(pki / "admin.crt"), str(pki / "admin.key")),
            verify=str(pki / "ca.crt"),
            timeout=timeout,
            **kw,
        )

    def _kubectl(self, *args: str, input: str | None = None) -> str:
        proc = self.plane.kubectl(*args, check=False, input=input)
        if proc.returncode != 0:
            raise KueueError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr.strip()}")
        return proc.stdout

    def _apply(self, objs: list[dict[str, Any]]) -> None:
        doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": objs})
        self._kubectl(
            "apply", "--server-side", "--force-conflicts", "--field-manager=aidc-kueue-bed", "-f", "-", input=doc
        )

    def _start_once(self) -> None:
        ports = free_ports(3)
        self.ports = dict(zip(("webhook", "health", "visibility"), ports, strict=True))
        self._phase("crds", self._install_crds)
        self._phase("pki", self._make_pki)
        self._phase("config", self._write_config)
        self._phase("kueue", self._start_kueue)
        self._phase("register", self._register)
        self._phase("webhook", self._wait_webhook)
        self._phase("visibility", self._wait_visibility)

    def conversion_crds(self) -> list[str]:
        """The CRDs Kueue converts between v1beta1 and v1beta2 by its conversion webhook (``/convert``):
        those its kustomization patches (build.sh copies the patches into ``crd-conversion/``)."""
        patches = sorted((self.manifests / "crd-conversion").glob("*.yaml"))
        return [yaml.safe_load(p.read_text())["metadata"]["name"] for p in patches]

    def _conversion(self, webhook: bool) -> None:
        if webhook:
            conversion: dict[str, Any] = {
                "strategy": "Webhook",
                "webhook": {
                    "clientConfig": {"url": f"{self.webhook_url}/convert", "caBundle": self.ca_bundle},
                    "conversionReviewVersions": ["v1"],
                },
            }
        else:
            conversion = {"strategy": "None", "webhook": None}
        for crd in self.conversion_crds():
            self._kubectl("patch", "crd", crd, "--type=merge", "-p", json.dumps({"spec": {"conversion": conversion}}))

    def _install_crds(self) -> None:
        crds = sorted((self.manifests / "crd").glob("*.yaml"))
        if not crds:
            raise KueueError(f"no CRDs under {self.manifests / 'crd'}")
        args = [a for c in crds for a in ("-f", str(c))]
        self._kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=aidc-kueue-bed", *args)
        names = [f"crd/{yaml.safe_load(c.read_text())['metadata']['name']}" for c in crds]
        self._kubectl("wait", "--for=condition=Established", f"--timeout={self.start_timeout:.0f}s", *names)
        self.crds = [n.split("/", 1)[1] for n in names]

    def _make_pki(self) -> None:
        self.pki.mkdir(parents=True, exist_ok=True)
        self.cert_dir.mkdir(parents=True, exist_ok=True)
        p = self.pki
        if not ((p / "ca.crt").exists() and _valid_pair(self.cert_dir / "tls.crt", self.cert_dir / "tls.key")):
            make_ca(p, "ca", "/CN=aidc-kueue-ca", error=KueueError)
            make_cert(p, "webhook", "/CN=kueue-webhook", "serverAuth", SERVING_SANS, error=KueueError)
            for src, dst in (("webhook.crt", "tls.crt"), ("webhook.key", "tls.key")):
                (self.cert_dir / dst).write_bytes((p / src).read_bytes())
            (self.cert_dir / "tls.key").chmod(0o600)
        self.ca_bundle = base64.b64encode((p / "ca.crt").read_bytes()).decode()
        ensure_fixed_certs()

    def configuration(self) -> dict[str, Any]:
        """The Kueue Configuration (config.kueue.x-k8s.io/v1beta2) this bed runs with."""
        return {
            "apiVersion": "config.kueue.x-k8s.io/v1beta2",
            "kind": "Configuration",
            "namespace": NAMESPACE,
            "webhook": {"host": "127.0.0.1", "port": self.ports["webhook"], "certDir": str(self.cert_dir)},
            "health": {"healthProbeBindAddress": f"127.0.0.1:{self.ports['health']}"},
            "metrics": {"bindAddress": "0"},  # "0": no metrics server (its cert files are still read)
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            "clientConnection": {"qps": 100, "burst": 200},
            "manageJobsWithoutQueueName": False,
            "managedJobsNamespaceSelector": {
                "matchExpressions": [{"key": self.tenant_label, "operator": "Exists"}],
            },
            "integrations": {"frameworks": list(self.frameworks)},
            "visibilityServer": {"bindAddress": "127.0.0.1", "bindPort": self.ports["visibility"]},
            "featureGates": dict(self.feature_gates),
            # waitForPodsReady and fairSharing: absent, i.e. off
        }

    def _write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.configuration(), sort_keys=False))

    def _start_kueue(self) -> None:
        assert self.bin_dir is not None
        args = [
            f"--config={self.config_path}",
            f"--kubeconfig={self.plane.kubeconfig}",
            # the flag's value wins over visibilityServer.bindPort only when that is 8082
            f"--visibility-server-port={self.ports['visibility']}",
            "--zap-log-level=info",
        ]
        self._proc = self._spawn(self.NAME, args, self.log_path, env={"KUBECONFIG": str(self.plane.kubeconfig)})
        url = f"http://127.0.0.1:{self.ports['health']}/readyz"
        self._wait(f"kueue {url}", lambda: requests.get(url, timeout=2).status_code == 200)

    # ------------------------------------------------------------ registration

    def webhook_configurations(self) -> list[dict[str, Any]]:
        """Kueue's webhook manifests, pointed at this kueue and cut down to what the bed uses."""
        wanted = {FRAMEWORK_RESOURCES[f] for f in self.frameworks}
        docs = [d for d in yaml.safe_load_all((self.manifests / "webhook" / "manifests.yaml").read_text()) if d]
        out = []
        for doc in docs:
            name = {"MutatingWebhookConfiguration": MUTATING, "ValidatingWebhookConfiguration": VALIDATING}[doc["kind"]]
            hooks = []
            for w in doc["webhooks"]:
                targets = {
                    (g, r.split("/")[0]) for rule in w["rules"] for g in rule["apiGroups"] for r in rule["resources"]
                }
                if all(g == GROUP for g, _ in targets):
                    pass
                elif targets & wanted:
                    w["namespaceSelector"] = {"matchExpressions": [{"key": self.tenant_label, "operator": "Exists"}]}
                else:
                    continue  # an integration that is off (or whose CRDs are not installed)
                path = w["clientConfig"]["service"]["path"]
                w["clientConfig"] = {"url": f"{self.webhook_url}{path}", "caBundle": self.ca_bundle}
                w["timeoutSeconds"] = 10
                hooks.append(w)
            out.append({**doc, "metadata": {"name": name}, "webhooks": hooks})
            self.webhooks[name] = [w["name"] for w in hooks]
        return out

    def visibility_objects(self) -> list[dict[str, Any]]:
        port = self.ports["visibility"]
        objs: list[dict[str, Any]] = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},  # left in place by stop()
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": VISIBILITY_SERVICE, "namespace": NAMESPACE},
                "spec": {
                    "type": "ExternalName",
                    "externalName": "localhost",
                    "ports": [{"name": "https", "port": port, "protocol": "TCP", "targetPort": port}],
                },
            },
        ]
        for v in VISIBILITY_VERSIONS:
            objs.append(
                {
                    "apiVersion": "apiregistration.k8s.io/v1",
                    "kind": "APIService",
                    "metadata": {"name": f"{v}.{VISIBILITY_GROUP}"},
                    "spec": {
                        "group": VISIBILITY_GROUP,
                        "version": v,
                        "groupPriorityMinimum": 100,
                        "versionPriority": 100 if v == "v1beta2" else 90,
                        # the serving pair lives at a fixed path shared by every bed on the machine
                        "insecureSkipTLSVerify": True,
                        "service": {"name": VISIBILITY_SERVICE, "namespace": NAMESPACE, "port": port},
                    },
                }
            )
        return objs

    def _register(self) -> None:
        self._registered = True  # from here on stop() cleans up, whatever fails below
        self._conversion(webhook=True)
        hooks = self.webhook_configurations()
        (self.workdir / "webhooks.yaml").write_text(yaml.safe_dump_all(hooks, sort_keys=False))
        self._apply(hooks)
        vis = self.visibility_objects()
        (self.workdir / "visibility.yaml").write_text(yaml.safe_dump_all(vis, sort_keys=False))
        self._apply(vis)

    def _wait_webhook(self) -> None:
        # ResourceFlavors go through Kueue's mutating and validating webhooks (failurePolicy Fail):
        # a create that succeeds was answered by both.
        name = f"aidc-kueue-probe-{os.getpid()}-{self.ports['webhook']}"
        path = f"/apis/{GROUP}/{VERSION}/resourceflavors"
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ResourceFlavor", "metadata": {"name": name}}

        def created() -> bool:
            r = self._request("POST", path, json=body, timeout=20)
            if r.status_code in (201, 409):
                return True
            if r.status_code >= 500:  # failed calling webhook: not serving yet
                raise KueueError(f"probe ResourceFlavor: {r.status_code} {r.text[:300]}")
            raise _Fatal(f"probe ResourceFlavor: {r.status_code} {r.text[:500]}")

        self._wait("a probe ResourceFlavor created through Kueue's webhooks", created)
        r = self._request("DELETE", f"{path}/{name}", timeout=20)
        if r.status_code not in (200, 202, 404):
            raise KueueError(f"deleting the probe ResourceFlavor: {r.status_code} {r.text[:300]}")

    def _wait_visibility(self) -> None:
        def served() -> bool:
            for v in VISIBILITY_VERSIONS:
                r = self.api_get(f"/apis/{VISIBILITY_GROUP}/{v}", timeout=10)
                if r.status_code != 200:
                    raise KueueError(f"/apis/{VISIBILITY_GROUP}/{v}: {r.status_code} {r.text[:300]}")
            return True

        self._wait(f"/apis/{VISIBILITY_GROUP}/{VISIBILITY_VERSIONS[0]} through the kube-apiserver", served)
        self.visibility_ready = True


# ---------------------------------------------------------------- self-check


@contextlib.contextmanager
def _bed(workdir: Path) -> Iterator[tuple[ControlPlane, Kueue]]:
    with ControlPlane(workdir / "plane") as plane, Kueue(plane, workdir / "kueue") as kueue:
        yield plane, kueue


def _self_check(workdir: Path) -> None:
    t0 = time.monotonic()
    with _bed(workdir) as (plane, kueue):
        print(f"plane + kueue up in {time.monotonic() - t0:.1f}s: ports {kueue.ports}")
        for k, v in kueue.timings.items():
            print(f"  kueue.{k}: {v:.2f}s")
        print("crds:", len(kueue.crds), "webhooks:", kueue.webhooks)
        print("visibility groups:", kueue.api_get(f"/apis/{VISIBILITY_GROUP}").json()["versions"])
    print("self-check passed")


if __name__ == "__main__":
    self_check_main(_self_check, "aidc-kueue-")
