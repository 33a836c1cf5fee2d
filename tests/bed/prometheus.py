"""A real Prometheus (Debian's ``prometheus`` package) for the beds: it scrapes the given targets
every second, keeps its data in ``workdir`` and listens on a free loopback port::

    with Prometheus(tmp_path, targets=[exporter.address]) as prom:
        PrometheusSource(prom.url)  # the quotas service's view of it

``python -m tests.bed.prometheus`` starts one scraping itself and checks that it answers a query.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import requests

from tests.bed.cluster import free_ports
from tests.bed.procs import log_tail, self_check_main, spawn, terminate, wait_until

BINARY = "/usr/bin/prometheus"
INSTALL = "install it with `bash tests/bed/debian-packages.sh prometheus` (Debian's package; `make test` does)"


class PrometheusError(RuntimeError):
    pass


def config(targets: Sequence[str], interval: str = "1s") -> str:
    """The scrape config: one job of ``targets`` (``host:port``), keeping their labels as they are
    (``honor_labels``), as the GPU operator's ServiceMonitor of the DCGM exporter can be set to."""
    quoted = ", ".join(f'"{t}"' for t in targets)
    return (
        "global:\n"
        f"  scrape_interval: {interval}\n"
        f"  evaluation_interval: {interval}\n"
        "scrape_configs:\n"
        "  - job_name: dcgm-exporter\n"
        "    honor_labels: true\n"
        f"    scrape_timeout: {interval}\n"
        f"    static_configs:\n      - targets: [{quoted}]\n"
    )


class Prometheus:
    """``/usr/bin/prometheus`` scraping ``targets``; :meth:`start` waits until it is ready."""

    def __init__(self, workdir: Path, targets: Sequence[str], interval: str = "1s", start_timeout: float = 60.0):
        self.workdir = workdir
        self.targets = list(targets)
        self.interval = interval
        self.start_timeout = start_timeout
        self.port = 0
        self.log_path = workdir / "prometheus.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        if not Path(BINARY).is_file():
            raise PrometheusError(f"no Prometheus at {BINARY}: {INSTALL}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "prometheus.yml").write_text(config(self.targets, self.interval))
        (self.workdir / "data").mkdir(exist_ok=True)
        for attempt in range(3):  # another process may take the free port first
            self.port = free_ports(1)[0]
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._proc = spawn(
                Path(BINARY),
                [
                    f"--config.file={self.workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                    "--log.level=warn",
                ],
                log_path=self.log_path,
                cwd=self.workdir,
            )
            try:
                wait_until(
                    f"Prometheus ready at {self.url}",
                    lambda: requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200,
                    self.start_timeout,
                    procs={"prometheus": self._proc},
                    error=PrometheusError,
                )
                return self
            except PrometheusError as e:
                tail = log_tail(self.log_path, self._proc, 30)
                self.stop()
                with self.log_path.open("rb") as f:
                    f.seek(offset)
                    if b"address already in use" in f.read() and attempt < 2:
                        continue
                raise PrometheusError(f"{e}\n{tail}") from None
        raise AssertionError("unreachable")

    def stop(self) -> None:
        if self._proc is not None:
            terminate(self._proc)
            self._proc = None

    def query(self, promql: str) -> list[dict[str, object]]:
        """The result of an instant query (for checks in tests)."""
        r = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        r.raise_for_status()
        result: list[dict[str, object]] = r.json()["data"]["result"]
        return result


def _self_check(workdir: Path) -> None:
    import time

    with Prometheus(workdir, targets=[]) as prom:
        # scrape itself: its own metrics appear within a few intervals
        prom.targets = [f"127.0.0.1:{prom.port}"]
        (workdir / "prometheus.yml").write_text(config(prom.targets))
        requests.post(f"{prom.url}/-/reload", timeout=10).raise_for_status()
        deadline = time.monotonic() + 30
        while not prom.query('up{job="dcgm-exporter"} == 1'):
            assert time.monotonic() < deadline, log_tail(prom.log_path, None, 30)
            time.sleep(0.5)
        print(f"Prometheus at {prom.url} scrapes and answers")


if __name__ == "__main__":
    self_check_main(_self_check, "prometheus-bed-")
