"""GPU use of Kubernetes servers: NVIDIA's DCGM exporter metrics, read through Prometheus.

On a cluster the GPU operator runs NVIDIA's ``dcgm-exporter`` on every GPU node; with its
Kubernetes pod mapping (the operator's default) every GPU's series carries the ``namespace``,
``pod`` and ``container`` of the pod that holds it::

    DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-5fd4...",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",
                         Hostname="node-1",namespace="aidc-lab",pod="jupyter-alice",container="notebook"} 87

The operator's Prometheus scrapes it; :class:`PrometheusSource` asks that Prometheus (its HTTP query
API) for ``DCGM_FI_DEV_GPU_UTIL`` (percent) and ``DCGM_FI_DEV_FB_USED`` (MiB) of the servers' pods,
in two queries for all servers of a round (the readings, and when the utilization was measured),
and answers one :class:`~quotas.gpu_use.GpuSample` per GPU (named by its UUID)::

    source = PrometheusSource("http://prometheus.monitoring:9090")
    await source.sample([ServerGpus(("alice", ""), namespace="aidc-lab", pod="jupyter-alice")])
    # {("alice", ""): [GpuSample(gpu="GPU-5fd4...", utilization=87.0, memory_used_mib=30512.0, read_at=...)]}
    await source.history("aidc-lab", "jupyter-alice", since=now - timedelta(hours=1), step=timedelta(minutes=1))
    # [(datetime(...), 87.0), ...]: the mean utilization of the pod's GPUs, for a chart

When Prometheus scrapes the exporter without ``honor_labels`` (a ServiceMonitor's default), its own
target labels take ``namespace`` and ``pod`` and the exporter's become ``exported_namespace`` and
``exported_pod``: both spellings are read, the ``exported_`` one first.

Nothing is invented: a GPU whose series is absent (stale, the exporter gone), not a number, or
missing one of the two metrics is left out, and an unreachable or failing Prometheus raises
:class:`PrometheusError` (a :class:`~quotas.gpu_use.GpuUseUnavailable`): no data for anyone that
round. The culler never judges a server idle on missing data.
"""
# i18n: operator: Prometheus' errors, for the operator in the culler's log (the culler never stops a server for them)

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from .gpu_use import GpuSample, GpuUseUnavailable, ServerGpus, ServerKey

UTILIZATION = "DCGM_FI_DEV_GPU_UTIL"  # percent, 0-100
MEMORY_USED = "DCGM_FI_DEV_FB_USED"  # MiB
#: the (namespace, pod) labels of the pod holding a GPU: as Prometheus renames them when a target
#: label of the same name wins (scraped without ``honor_labels``), which is then the workload's, and
#: as the exporter names them; the first present wins
SPELLINGS = (("exported_namespace", "exported_pod"), ("namespace", "pod"))
GPU_LABEL = "UUID"
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
_RE2_SPECIAL = set(r"\.+*?()|[]{}^$")


class PrometheusError(GpuUseUnavailable):
    """Prometheus could not be asked, or answered with an error (the message says which, for people)."""


@dataclass(frozen=True)
class Series:
    """One GPU's reading of one metric, from one series of Prometheus' answer (``metric`` is
    ``""`` for a function's result, such as ``timestamp()``)."""

    metric: str
    namespace: str
    pod: str
    gpu: str
    value: float


def escape_regex(text: str) -> str:
    """``text`` as an RE2 regex that matches only itself (Prometheus' ``=~`` is RE2, anchored)."""
    return "".join("\\" + c if c in _RE2_SPECIAL else c for c in text)


def promql_string(text: str) -> str:
    """``text`` as a double-quoted PromQL string literal (Go escapes)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def selector(metrics: Sequence[str], servers: Sequence[ServerGpus]) -> str:
    """The PromQL of ``metrics`` for the pods of ``servers``, in either label spelling (see the module doc)::

    {__name__=~"DCGM_FI_DEV_GPU_UTIL",namespace=~"aidc-lab",pod=~"jupyter-alice|jupyter-bob"}
      or {__name__=~"DCGM_FI_DEV_GPU_UTIL",exported_namespace=~"aidc-lab",exported_pod=~"jupyter-alice|jupyter-bob"}

    It may match a pod of the same name in another of the namespaces: :func:`samples_by_server`
    keeps only the exact (namespace, pod) pairs asked for.
    """
    names = promql_string("|".join(escape_regex(m) for m in metrics))
    namespaces = promql_string("|".join(escape_regex(n) for n in sorted({s.namespace for s in servers})))
    pods = promql_string("|".join(escape_regex(p) for p in sorted({s.pod for s in servers})))
    exported, own = (f"{{__name__=~{names},{ns}=~{namespaces},{pod}=~{pods}}}" for ns, pod in SPELLINGS)
    return f"{own} or {exported}"


def _holder(labels: Mapping[str, Any]) -> tuple[str, str]:
    """The (namespace, pod) that holds a series' GPU, ``("", "")`` for none (see :data:`SPELLINGS`)."""
    for ns, pod in SPELLINGS:
        namespace, name = labels.get(ns), labels.get(pod)
        if isinstance(namespace, str) and isinstance(name, str) and namespace and name:
            return namespace, name
    return "", ""


def _number(value: Any) -> float | None:
    """A sample's value (Prometheus sends ``[time, "87"]``), or None for NaN, infinities and garbage."""
    try:
        number = float(value[1])
    except (TypeError, ValueError, IndexError):
        return None
    return number if math.isfinite(number) else None


def _data(answer: Any, what: str, result_type: str) -> list[Any]:
    """The ``data.result`` list of an API answer of ``result_type``; :class:`PrometheusError` otherwise."""
    if not isinstance(answer, Mapping):
        raise PrometheusError(f"Prometheus answered {what} with something that is not a JSON object")
    if answer.get("status") != "success":
        kind, error = answer.get("errorType", "error"), answer.get("error", "no reason given")
        raise PrometheusError(f"Prometheus refused {what}: {kind}: {error}")
    data = answer.get("data")
    if (
        not isinstance(data, Mapping)
        or data.get("resultType") != result_type
        or not isinstance(data.get("result"), list)
    ):
        got = data.get("resultType") if isinstance(data, Mapping) else None
        raise PrometheusError(f"Prometheus answered {what} with a {got or 'malformed'} result, not a {result_type}")
    return list(data["result"])


def parse_vector(answer: Any, what: str = "the query") -> list[Series]:
    """The per-GPU readings of an instant query's answer (``/api/v1/query``, parsed JSON).

    Raises :class:`PrometheusError` for ``status: error`` or an answer of another shape. Series
    without a pod, namespace or GPU UUID label and values that are not finite numbers are left
    out; a GPU that two exporters report (two series of one metric, pod and UUID) counts once, with
    the higher reading, so that a stale copy never makes a busy GPU look idle (and with the newer
    time, for ``timestamp()``).
    """
    best: dict[tuple[str, str, str, str], Series] = {}
    for item in _data(answer, what, "vector"):
        if not isinstance(item, Mapping) or not isinstance(item.get("metric"), Mapping):
            continue
        labels = item["metric"]
        (namespace, pod), gpu = _holder(labels), labels.get(GPU_LABEL)
        metric = labels.get("__name__", "")
        value = _number(item.get("value"))
        if not (namespace and pod and isinstance(gpu, str) and gpu) or value is None:
            continue
        key = (str(metric), namespace, pod, gpu)
        if key not in best or value > best[key].value:
            best[key] = Series(str(metric), namespace, pod, gpu, value)
    return list(best.values())


def samples_by_server(
    servers: Sequence[ServerGpus], readings: Iterable[Series], measured: Iterable[Series] = ()
) -> dict[ServerKey, list[GpuSample]]:
    """One :class:`GpuSample` per GPU of each server's pod that has both readings (``readings`` of
    :data:`UTILIZATION` and :data:`MEMORY_USED`), sorted by UUID, read at the time ``measured`` gives
    (``timestamp()`` of the utilization; None where absent); servers with none are left out (no data)."""
    value = {(s.metric, s.namespace, s.pod, s.gpu): s.value for s in readings}
    at = {(s.namespace, s.pod, s.gpu): s.value for s in measured}
    by_pod: dict[tuple[str, str], list[GpuSample]] = {}
    for (metric, namespace, pod, gpu), utilization in value.items():
        used = value.get((MEMORY_USED, namespace, pod, gpu))
        if metric != UTILIZATION or used is None:
            continue
        when = at.get((namespace, pod, gpu))
        read_at = datetime.fromtimestamp(when, UTC) if when is not None else None
        by_pod.setdefault((namespace, pod), []).append(GpuSample(gpu, utilization, used, read_at))
    result: dict[ServerKey, list[GpuSample]] = {}
    for server in servers:
        found = by_pod.get((server.namespace, server.pod))
        if found:
            result[server.key] = sorted(found, key=lambda g: g.gpu)
    return result


def parse_matrix(answer: Any, what: str = "the range query") -> list[tuple[datetime, float]]:
    """The points of a range query's answer (``/api/v1/query_range``) of one series, oldest first;
    NaN points are left out, and an empty answer (no data in the range) gives no points."""
    result = _data(answer, what, "matrix")
    points: dict[float, float] = {}
    for item in result:
        for value in item.get("values", []) if isinstance(item, Mapping) else []:
            number = _number(value)
            try:
                at = float(value[0])
            except (TypeError, ValueError, IndexError):
                continue
            if number is not None and math.isfinite(at):
                points[at] = max(number, points.get(at, number))
    return [(datetime.fromtimestamp(at, UTC), points[at]) for at in sorted(points)]


class PrometheusSource:
    """The :class:`~quotas.gpu_use.GpuUseSource` of a Kubernetes platform: DCGM exporter metrics
    from the operator's Prometheus at ``url`` (``http://prometheus.monitoring:9090``, the API's base).

    Each question takes at most ``timeout`` seconds and reads at most ``max_bytes`` of answer.
    ``headers`` go with every request (``{"Authorization": "Bearer ..."}`` for a Prometheus behind
    an authenticating proxy).
    """

    def __init__(
        self,
        url: str,
        timeout: float = 10.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        headers: Mapping[str, str] | None = None,
    ):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.headers = dict(headers or {})

    async def sample(self, servers: Sequence[ServerGpus]) -> dict[ServerKey, list[GpuSample]]:
        """The current use of the GPUs of each server's pod (see :class:`~quotas.gpu_use.GpuUseSource`).

        Servers without a pod are not asked about. Raises :class:`PrometheusError` when Prometheus
        cannot answer: no server has data this round, none is judged idle.
        """
        asked = [s for s in servers if s.namespace and s.pod]
        if not asked:
            return {}
        readings = parse_vector(await self.query(selector((UTILIZATION, MEMORY_USED), asked)), "the GPU use query")
        # when each utilization was measured: a series Prometheus still holds may have stopped updating
        measured = parse_vector(await self.query(f"timestamp({selector((UTILIZATION,), asked)})"), "the time query")
        return samples_by_server(asked, readings, measured)

    async def history(
        self, namespace: str, pod: str, since: datetime, step: timedelta, until: datetime | None = None
    ) -> list[tuple[datetime, float]]:
        """The mean utilization (percent) of the pod's GPUs from ``since`` to ``until`` (now), every
        ``step``, oldest first; times without data have no point. Raises :class:`PrometheusError`."""
        until = until or datetime.now(UTC)
        one = [ServerGpus(("", ""), namespace=namespace, pod=pod)]
        # one reading per GPU (two exporters of one GPU count once), then the mean over the pod's GPUs
        query = f"avg(max by ({GPU_LABEL}) ({selector((UTILIZATION,), one)}))"
        params = {
            "query": query,
            "start": f"{since.timestamp():.3f}",
            "end": f"{until.timestamp():.3f}",
            "step": f"{max(step.total_seconds(), 1):g}s",
        }
        answer = await self._post("/api/v1/query_range", params)
        return parse_matrix(answer, f"the utilization history of pod {namespace}/{pod}")

    async def query(self, promql: str) -> Any:
        """The parsed JSON answer of an instant query (raises :class:`PrometheusError`)."""
        return await self._post("/api/v1/query", {"query": promql})

    async def _post(self, path: str, params: Mapping[str, str]) -> Any:
        # POST with a form body: a round of many servers makes a query too long for a URL
        chunks: list[bytes] = []
        size = 0

        def collect(chunk: bytes) -> None:
            nonlocal size
            size += len(chunk)
            if size <= self.max_bytes:  # the rest is read and dropped (request_timeout bounds the time)
                chunks.append(chunk)

        url = self.url + path
        request = HTTPRequest(
            url,
            method="POST",
            body=urlencode(params),
            headers={**self.headers, "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
            connect_timeout=self.timeout,
            request_timeout=self.timeout,
            streaming_callback=collect,
        )
        try:
            await AsyncHTTPClient().fetch(request, raise_error=True)
        except HTTPClientError as e:
            if e.code == 599:
                raise PrometheusError(
                    f"no answer from Prometheus at {url} within {self.timeout:g} s ({e.message})"
                ) from None
            # Prometheus explains a bad query (400, 422) or its own timeout (503) in a JSON body
            raise PrometheusError(f"{url} answered {e.code} {e.message}{_reason(b''.join(chunks))}") from None
        except OSError as e:
            raise PrometheusError(f"cannot reach Prometheus at {url}: {e}; is the Prometheus URL right?") from None
        if size > self.max_bytes:
            raise PrometheusError(
                f"the answer of {url} is too large (over {self.max_bytes} bytes); is this Prometheus' API?"
            )
        try:
            return json.loads(b"".join(chunks))
        except ValueError:
            raise PrometheusError(f"{url} did not answer with JSON; is this Prometheus' API?") from None


def _reason(body: bytes) -> str:
    """``": bad_data: parse error ..."``: the reason in Prometheus' error answer, if it has one."""
    try:
        answer = json.loads(body)
    except ValueError:
        return ""
    if isinstance(answer, Mapping) and answer.get("status") == "error":
        return f": {answer.get('errorType', 'error')}: {answer.get('error', 'no reason given')}"
    return ""
