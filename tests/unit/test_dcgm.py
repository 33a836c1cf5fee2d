"""quotas.dcgm: DCGM exporter metrics of the servers' pods, from Prometheus' query API answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web

from quotas.dcgm import (
    PrometheusError,
    PrometheusSource,
    Series,
    escape_regex,
    parse_matrix,
    parse_vector,
    promql_string,
    samples_by_server,
    selector,
)
from quotas.gpu_use import GpuSample, GpuUseUnavailable, ServerGpus

UUID_A = "GPU-5fd4b7a0-2c1e-7d3b-9a41-0c6f2e8b1d55"
UUID_B = "GPU-0a9e4c1f-88d2-4b7e-a3c5-6e1f0d2b7c94"
U, FB = "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED"
T0 = 1764720000.0  # 2025-12-03 00:00 UTC
ALICE = ServerGpus(("alice", ""), namespace="aidc-lab", pod="jupyter-alice")
BOB = ServerGpus(("bob", "gpu"), namespace="aidc-lab", pod="jupyter-bob--gpu")


def series(metric: str, uuid: str, value: str, gpu: str = "0", **labels: str) -> dict[str, Any]:
    """One series of an instant query's answer, labelled as dcgm-exporter 3.x with pod mapping, as
    Prometheus returns it (plus its ``instance`` and ``job``)."""
    pod = {"container": "notebook", "namespace": "aidc-lab", "pod": "jupyter-alice"}
    return {
        "metric": {
            "__name__": metric,
            "gpu": gpu,
            "UUID": uuid,
            "pci_bus_id": "00000000:18:00.0",
            "device": f"nvidia{gpu}",
            "modelName": "NVIDIA H100 80GB HBM3",
            "Hostname": "h100-0",
            "DCGM_FI_DRIVER_VERSION": "550.127.05",
            "instance": "10.0.3.7:9400",
            "job": "nvidia-dcgm-exporter",
            **pod,
            **labels,
        },
        "value": [1764720000.123, value],
    }


def vector(*result: dict[str, Any]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": list(result)}}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        pytest.param(
            vector(series("DCGM_FI_DEV_GPU_UTIL", UUID_A, "87"), series("DCGM_FI_DEV_GPU_UTIL", UUID_B, "0", gpu="1")),
            [Series(U, "aidc-lab", "jupyter-alice", UUID_A, 87.0), Series(U, "aidc-lab", "jupyter-alice", UUID_B, 0.0)],
            id="two-gpus",
        ),
        pytest.param(vector(), [], id="no-series: stale or absent"),
        pytest.param(
            vector(series("DCGM_FI_DEV_GPU_UTIL", UUID_A, "NaN"), series("DCGM_FI_DEV_GPU_UTIL", UUID_B, "+Inf")),
            [],
            id="not-a-number",
        ),
        pytest.param(
            vector(
                series("DCGM_FI_DEV_GPU_UTIL", UUID_A, "3", instance="10.0.3.7:9400"),
                series("DCGM_FI_DEV_GPU_UTIL", UUID_A, "91", instance="10.0.3.8:9400"),
            ),
            [Series(U, "aidc-lab", "jupyter-alice", UUID_A, 91.0)],
            id="two-exporters-one-gpu: the higher reading",
        ),
        pytest.param(
            vector(
                series(
                    "DCGM_FI_DEV_GPU_UTIL",
                    UUID_A,
                    "42",
                    namespace="gpu-operator",
                    pod="nvidia-dcgm-exporter-x7k2p",
                    exported_namespace="aidc-lab",
                    exported_pod="jupyter-alice",
                )
            ),
            [Series(U, "aidc-lab", "jupyter-alice", UUID_A, 42.0)],
            id="scraped-without-honor-labels",
        ),
        pytest.param(
            vector(
                series("DCGM_FI_DEV_GPU_UTIL", UUID_A, "0", namespace="", pod="", container=""),
                {"metric": {"__name__": "DCGM_FI_DEV_GPU_UTIL", "gpu": "0"}, "value": [1764720000, "5"]},
                series("DCGM_FI_DEV_GPU_UTIL", UUID_B, "oops"),
                {"metric": "not labels", "value": [1, "1"]},
            ),
            [],
            id="gpus-of-no-pod-and-garbage",
        ),
    ],
)
def test_parse_vector(answer: dict[str, Any], expected: list[Series]) -> None:
    assert parse_vector(answer) == expected


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        pytest.param(
            {"status": "error", "errorType": "bad_data", "error": 'parse error: unexpected "}"'},
            'Prometheus refused the query: bad_data: parse error: unexpected "}"',
            id="status-error",
        ),
        pytest.param(
            {"status": "error", "errorType": "timeout", "error": "query timed out in expression evaluation"},
            "Prometheus refused the query: timeout: query timed out",
            id="prometheus-timeout",
        ),
        pytest.param(
            {"status": "success", "data": {"resultType": "matrix", "result": []}},
            "with a matrix result, not a vector",
            id="range-answer",
        ),
        pytest.param(["not", "an", "object"], "not a JSON object", id="not-an-object"),
        pytest.param({"status": "success"}, "with a malformed result", id="no-data"),
    ],
)
def test_parse_vector_refuses(answer: Any, message: str) -> None:
    with pytest.raises(PrometheusError, match=message.replace("(", r"\(")):
        parse_vector(answer)


def test_samples_join_both_metrics_per_gpu_and_leave_out_servers_without_data() -> None:
    readings = [
        Series(U, "aidc-lab", "jupyter-alice", UUID_A, 87.0),
        Series(U, "aidc-lab", "jupyter-alice", UUID_B, 0.0),
        Series(U, "aidc-other", "jupyter-bob--gpu", UUID_A, 50.0),  # same pod name, namespace not asked for
        Series(FB, "aidc-lab", "jupyter-alice", UUID_A, 30512.0),
        Series(FB, "aidc-lab", "jupyter-alice", UUID_B, 0.0),
        Series(FB, "aidc-other", "jupyter-bob--gpu", UUID_A, 1.0),
    ]
    measured = [Series("", "aidc-lab", "jupyter-alice", UUID_A, T0 - 1.5)]
    assert samples_by_server([ALICE, BOB], readings, measured) == {
        ("alice", ""): [
            GpuSample(UUID_B, 0.0, 0.0, None),
            GpuSample(UUID_A, 87.0, 30512.0, datetime(2025, 12, 2, 23, 59, 58, 500000, tzinfo=UTC)),
        ],
    }


def test_a_gpu_missing_one_metric_is_left_out() -> None:
    readings = [
        Series(U, "aidc-lab", "jupyter-alice", UUID_A, 0.0),
        Series(U, "aidc-lab", "jupyter-alice", UUID_B, 0.0),
        Series(FB, "aidc-lab", "jupyter-alice", UUID_A, 0.0),
        Series(FB, "aidc-lab", "jupyter-bob--gpu", UUID_B, 0.0),
    ]
    # fewer samples than the server's 2 GPUs: incomplete, so never judged idle; bob: no utilization, no data
    assert samples_by_server([ALICE, BOB], readings) == {("alice", ""): [GpuSample(UUID_A, 0.0, 0.0)]}


def test_selector_escapes_and_reads_both_label_spellings() -> None:
    odd = ServerGpus(("eve", "x"), namespace="aidc-lab", pod='jupyter-eve.x|"y"\\')
    pods = '"jupyter-alice|jupyter-eve\\\\.x\\\\|\\"y\\"\\\\\\\\"'
    assert selector([U, FB], [ALICE, odd]) == (
        f'{{__name__=~"{U}|{FB}",namespace=~"aidc-lab",pod=~{pods}}}'
        f' or {{__name__=~"{U}|{FB}",exported_namespace=~"aidc-lab",exported_pod=~{pods}}}'
    )
    assert escape_regex("a.b*c") == "a\\.b\\*c"
    assert promql_string('say "hi"\\') == '"say \\"hi\\"\\\\"'


def test_parse_matrix() -> None:
    answer = {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [{"metric": {}, "values": [[1764720000, "87.5"], [1764720060, "NaN"], [1764720120, "0"]]}],
        },
    }
    assert parse_matrix(answer) == [
        (datetime(2025, 12, 3, 0, 0, tzinfo=UTC), 87.5),
        (datetime(2025, 12, 3, 0, 2, tzinfo=UTC), 0.0),
    ]
    assert parse_matrix({"status": "success", "data": {"resultType": "matrix", "result": []}}) == []


# ------------------------------------------------------------------ the source against a fake Prometheus API


class FakePrometheus(tornado.web.RequestHandler):
    """Answers instant queries from ``answers`` (by metric name in the query), or as ``mode`` says."""

    answers: dict[str, Any] = {}
    mode = "ok"
    queries: list[dict[str, str]] = []

    async def post(self, path: str) -> None:
        form = {k: self.get_body_argument(k) for k in self.request.body_arguments}
        FakePrometheus.queries.append({"path": path, **form})
        if self.mode == "error":
            self.set_status(400)
            self.finish({"status": "error", "errorType": "bad_data", "error": "1:22: parse error"})
        elif self.mode == "huge":
            self.finish(b"[" + b"0," * 200_000 + b"0]")
        elif self.mode == "html":
            self.finish(b"<html>login</html>")
        elif path == "query_range":
            self.finish(
                {
                    "status": "success",
                    "data": {"resultType": "matrix", "result": [{"metric": {}, "values": [[1764720000, "12"]]}]},
                }
            )
        else:
            self.finish(self.answers["timestamp" if form["query"].startswith("timestamp(") else "readings"])


@pytest.fixture
async def prometheus() -> AsyncIterator[str]:
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/api/v1/(.*)", FakePrometheus)]))
    server.add_sockets(sockets)
    FakePrometheus.mode, FakePrometheus.queries = "ok", []
    FakePrometheus.answers = {
        "readings": vector(series(U, UUID_A, "87"), series(FB, UUID_A, "30512")),
        "timestamp": vector(series(U, UUID_A, str(T0), __name__="")),
    }
    yield f"http://127.0.0.1:{sockets[0].getsockname()[1]}/"
    server.stop()


async def test_sample_asks_once_per_metric(prometheus: str) -> None:
    got = await PrometheusSource(prometheus).sample([ALICE, BOB, ServerGpus(("carol", ""))])
    assert got == {("alice", ""): [GpuSample(UUID_A, 87.0, 30512.0, datetime(2025, 12, 3, tzinfo=UTC))]}
    readings, measured = FakePrometheus.queries
    assert readings["path"] == measured["path"] == "query"
    assert readings["query"].startswith(
        f'{{__name__=~"{U}|{FB}",namespace=~"aidc-lab",pod=~"jupyter-alice|jupyter-bob--gpu"}}'
    )
    assert measured["query"].startswith(f'timestamp({{__name__=~"{U}",namespace=~"aidc-lab"')


async def test_no_servers_no_question(prometheus: str) -> None:
    assert await PrometheusSource(prometheus).sample([]) == {}
    assert FakePrometheus.queries == []


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("error", "answered 400 Bad Request: bad_data: 1:22: parse error"),
        ("huge", "is too large (over 100000 bytes)"),
        ("html", "did not answer with JSON"),
    ],
)
async def test_a_failing_prometheus_is_no_data_for_anyone(prometheus: str, mode: str, message: str) -> None:
    FakePrometheus.mode = mode
    with pytest.raises(GpuUseUnavailable) as failed:
        await PrometheusSource(prometheus, max_bytes=100_000).sample([ALICE])
    assert message in str(failed.value)


async def test_an_unreachable_prometheus_is_no_data_for_anyone() -> None:
    port = tornado.netutil.bind_sockets(0, "127.0.0.1")[0]
    url = f"http://127.0.0.1:{port.getsockname()[1]}"
    port.close()
    with pytest.raises(GpuUseUnavailable, match=f"cannot reach Prometheus at {url}/api/v1/query"):
        await PrometheusSource(url, timeout=2).sample([ALICE])


async def test_history(prometheus: str) -> None:
    since = datetime(2025, 12, 3, tzinfo=UTC)
    points = await PrometheusSource(prometheus).history(
        "aidc-lab", "jupyter-alice", since, timedelta(minutes=1), until=since + timedelta(hours=1)
    )
    assert points == [(datetime(2025, 12, 3, tzinfo=UTC), 12.0)]
    (q,) = FakePrometheus.queries
    assert q["query"].startswith(f'avg(max by (UUID) ({{__name__=~"{U}",namespace=~"aidc-lab",pod=~"jupyter-alice"}}')
    assert (q["start"], q["end"], q["step"]) == ("1764720000.000", "1764723600.000", "60s")
    FakePrometheus.mode = "error"
    with pytest.raises(PrometheusError, match="bad_data"):
        await PrometheusSource(prometheus).history("aidc-lab", "jupyter-alice", since, timedelta(minutes=1))
