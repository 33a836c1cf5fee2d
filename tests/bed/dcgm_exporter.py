"""A stand-in for NVIDIA's dcgm-exporter on the bed's KWOK GPU nodes (which have no GPUs).

It serves ``/metrics`` on loopback in the exporter's exact text format, with Kubernetes pod mapping
(the GPU operator's default): one series per metric and GPU of every whole-GPU KWOK node, and the
``container``, ``namespace`` and ``pod`` labels on the GPUs a Running pod holds::

    # HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).
    # TYPE DCGM_FI_DEV_GPU_UTIL gauge
    DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-1f0c...",pci_bus_id="00000000:18:00.0",device="nvidia0",
      modelName="NVIDIA H100 80GB HBM3",Hostname="h100-0",DCGM_FI_DRIVER_VERSION="550.127.05",
      container="notebook",namespace="aidc-lab",pod="jupyter-alice"} 87

Pods and nodes are read from the bed's API server at every scrape; a pod is given the lowest free
GPU indices of its node when first seen (kept while it runs), and every GPU has a stable fake UUID.
Only this lowest layer is simulated: a real Prometheus scrapes it (:mod:`tests.bed.prometheus`).

The test sets what the GPUs do, per pod (all its GPUs) or per GPU of a pod::

    exporter = DcgmExporter(api).start()
    exporter.set("aidc-lab", "jupyter-alice", utilization=87, memory_used_mib=30512)
    exporter.set("aidc-lab", "jupyter-alice", utilization=0, gpu=1)  # the pod's second GPU
    exporter.hide("aidc-lab", "jupyter-bob")  # no series for bob's GPUs (an exporter that misses them)

or over HTTP: ``PUT /pods/<namespace>/<pod>`` with ``{"utilization": 87, "memory_used_mib": 30512}``
(``"gpu": 1`` for one GPU, ``"hidden": true`` to hide). GPUs default to idle: 0 %, 0 MiB.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kubernetes import client

from quotas.quantity import parse_quantity

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
GPU_RESOURCE = "nvidia.com/gpu"
DRIVER_VERSION = "550.127.05"
METRICS = (
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", "utilization"),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", "memory_used_mib"),
)
_UUIDS = uuid.UUID("6f1b7c1e-5d0a-4b8e-9a57-3c2d1e0f9a11")  # the namespace of the fake GPU UUIDs


@dataclass
class Reading:
    utilization: float = 0.0
    memory_used_mib: float = 0.0


def gpu_uuid(node: str, index: int) -> str:
    """The fake, stable UUID of GPU ``index`` of ``node``, shaped like NVIDIA's (``GPU-8-4-4-4-12``)."""
    return f"GPU-{uuid.uuid5(_UUIDS, f'{node}/{index}')}"


def _value(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else repr(float(number))


def _gpus_of(pod: Any) -> tuple[str, int]:
    """The container that holds the pod's GPUs, and how many it holds."""
    for container in pod.spec.containers:
        resources = container.resources
        wanted = (resources.limits or {}).get(GPU_RESOURCE) or (resources.requests or {}).get(GPU_RESOURCE)
        if wanted and int(parse_quantity(wanted)) > 0:
            return container.name, int(parse_quantity(wanted))
    return "", 0


class DcgmExporter:
    """The stand-in exporter: :meth:`start`, then scrape :attr:`url`; :meth:`stop` at the end."""

    def __init__(self, api: client.ApiClient, host: str = "127.0.0.1", port: int = 0):
        self.core = client.CoreV1Api(api)
        self._lock = threading.Lock()
        self._readings: dict[tuple[str, str, int | None], Reading] = {}
        self._hidden: set[tuple[str, str]] = set()
        self._held: dict[str, dict[str, list[int]]] = {}  # node -> pod uid -> GPU indices
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """``host:port``, a Prometheus scrape target."""
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}/metrics"

    def start(self) -> DcgmExporter:
        self._thread = threading.Thread(target=self._server.serve_forever, name="dcgm-exporter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def set(
        self,
        namespace: str,
        pod: str,
        utilization: float | None = None,
        memory_used_mib: float | None = None,
        gpu: int | None = None,
    ) -> None:
        """What the pod's GPUs read from now on (all of them, overriding what was set per GPU), or its
        ``gpu``-th GPU (from 0; the rest as set for the pod); a value left out stays; shows a hidden pod."""
        with self._lock:
            self._hidden.discard((namespace, pod))
            whole = self._readings.setdefault((namespace, pod, None), Reading())
            if gpu is None:
                for key in [k for k in self._readings if k[:2] == (namespace, pod) and k[2] is not None]:
                    del self._readings[key]
            reading = self._readings.setdefault((namespace, pod, gpu), dataclasses.replace(whole))
            if utilization is not None:
                reading.utilization = utilization
            if memory_used_mib is not None:
                reading.memory_used_mib = memory_used_mib

    def hide(self, namespace: str, pod: str) -> None:
        """No series for the pod's GPUs from now on (until :meth:`set`)."""
        with self._lock:
            self._hidden.add((namespace, pod))

    def metrics(self) -> str:
        """The ``/metrics`` page now, read from the API server."""
        series = list(self._series())
        lines = []
        for metric, help_text, field in METRICS:
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
            lines += [f"{metric}{{{labels}}} {_value(getattr(reading, field))}" for labels, reading in series]
        return "\n".join(lines) + "\n"

    def _gpu_nodes(self) -> dict[str, tuple[int, str]]:
        """The KWOK nodes that offer whole GPUs: name -> (GPU count, model name)."""
        found = {}
        node: Any
        for node in self.core.list_node().items:
            count = int(parse_quantity((node.status.allocatable or {}).get(GPU_RESOURCE, "0")))
            if KWOK_ANNOTATION in (node.metadata.annotations or {}) and count > 0:
                product = (node.metadata.labels or {}).get("nvidia.com/gpu.product", "NVIDIA-GPU")
                found[node.metadata.name] = (count, product.replace("-", " "))
        return found

    def _series(self) -> Iterator[tuple[str, Reading]]:
        nodes = self._gpu_nodes()
        running = self.core.list_pod_for_all_namespaces(field_selector="status.phase=Running").items
        with self._lock:
            holders = self._allocate(nodes, running)
            for name, (count, model) in sorted(nodes.items()):
                for index in range(count):
                    labels = (
                        f'gpu="{index}",UUID="{gpu_uuid(name, index)}",pci_bus_id="00000000:{0x18 + index:02X}:00.0",'
                        f'device="nvidia{index}",modelName="{model}",Hostname="{name}",'
                        f'DCGM_FI_DRIVER_VERSION="{DRIVER_VERSION}"'
                    )
                    holder = holders.get((name, index))
                    if holder is None:
                        yield labels, Reading()
                        continue
                    namespace, pod, container, position = holder
                    if (namespace, pod) in self._hidden:
                        continue
                    reading = self._readings.get((namespace, pod, position)) or self._readings.get(
                        (namespace, pod, None), Reading()
                    )
                    yield f'{labels},container="{container}",namespace="{namespace}",pod="{pod}"', reading

    def _allocate(
        self, nodes: dict[str, tuple[int, str]], running: list[Any]
    ) -> dict[tuple[str, int], tuple[str, str, str, int]]:
        """(node, GPU index) -> (namespace, pod, container, position among the pod's GPUs)."""
        gpu_pods = []
        for pod in sorted(running, key=lambda p: (p.metadata.creation_timestamp, p.metadata.uid)):
            container, count = _gpus_of(pod)
            if pod.spec.node_name in nodes and count:
                gpu_pods.append((pod, container, count))
        running_uids = {pod.metadata.uid for pod, _, _ in gpu_pods}
        for held in self._held.values():
            for uid in set(held) - running_uids:
                del held[uid]  # the pod ended: its GPUs are free
        holders = {}
        for pod, container, count in gpu_pods:
            node = pod.spec.node_name
            held = self._held.setdefault(node, {})
            if pod.metadata.uid not in held:
                taken = {i for indices in held.values() for i in indices}
                held[pod.metadata.uid] = [i for i in range(nodes[node][0]) if i not in taken][:count]
            for position, index in enumerate(held[pod.metadata.uid]):
                holders[(node, index)] = (pod.metadata.namespace, pod.metadata.name, container, position)
        return holders

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path != "/metrics":
                    self._reply(404, b"not found\n", "text/plain")
                    return
                try:
                    body = exporter.metrics().encode()
                except Exception as e:  # the API server is gone: an exporter that fails its scrape
                    self._reply(500, f"{e!r}\n".encode(), "text/plain")
                    return
                self._reply(200, body, "text/plain; version=0.0.4; charset=utf-8")

            def do_PUT(self) -> None:
                parts = self.path.strip("/").split("/")
                if len(parts) != 3 or parts[0] != "pods":
                    self._reply(404, b"PUT /pods/<namespace>/<pod>\n", "text/plain")
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if body.get("hidden"):
                    exporter.hide(parts[1], parts[2])
                else:
                    exporter.set(
                        parts[1], parts[2], body.get("utilization"), body.get("memory_used_mib"), body.get("gpu")
                    )
                self._reply(204, b"", "text/plain")

            def _reply(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
