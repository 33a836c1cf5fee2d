"""How busy each running server's GPUs are: the sources the GPU-idle culler reads.

A :class:`GpuUseSource` answers, for the running servers it is given (:class:`ServerGpus`: where
each one's GPUs are), the current utilization and memory use of each GPU (:class:`GpuSample`).
Two sources exist: :class:`NvidiaSmiSource` in the embedded mode (``nvidia-smi --query-gpu`` for
the indices each server holds), and on Kubernetes ``quotas.dcgm.PrometheusSource`` (NVIDIA's DCGM
exporter metrics, read through Prometheus).

A source never invents data: a server it cannot read is left out of its answer (or given fewer
samples than GPUs it holds), and the culler never judges such a server idle. A value nvidia-smi
cannot give (``[N/A]``, ``[Not Supported]``: a MIG-enabled GPU has no utilization of its own) is
no data, never 0 %.

The helpers that read nvidia-smi's CSV (:func:`smi_fields`, :func:`smi_number`) are shared with
the embedded GPU inventory (``spawner/gpus.py``).
"""
# i18n: operator: nvidia-smi's errors, for the operator in the culler's log (no data never stops a server)

from __future__ import annotations

import asyncio
import math
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

ServerKey = tuple[str, str]  # (user, server name; "" for the default server)

# what the source asks nvidia-smi: one line per GPU, in this order
SMI_USE_QUERY = ("index", "uuid", "utilization.gpu", "memory.used")
SMI_TIMEOUT = 10.0  # seconds: a hung driver must not hang the culler's round
SMI_MAX_OUTPUT = 1 << 20  # bytes: a machine has at most a few dozen GPUs, about 100 bytes each


@dataclass(frozen=True)
class GpuSample:
    """One GPU of one server, read once."""

    gpu: str  # the GPU as the source names it: the index (nvidia-smi, embedded) or the UUID (DCGM)
    utilization: float  # percent 0-100 (nvidia-smi utilization.gpu; DCGM_FI_DEV_GPU_UTIL)
    memory_used_mib: float  # nvidia-smi memory.used; DCGM_FI_DEV_FB_USED (MiB)
    # when the value was measured (Prometheus: the sample's timestamp); None: now, as it was read.
    # The culler takes a sample measured before its previous round for no data.
    read_at: datetime | None = None


@dataclass(frozen=True)
class ServerGpus:
    """Where a source finds one running server's GPUs (from the hub's server model and state)."""

    key: ServerKey
    indices: tuple[str, ...] = ()  # embedded: the CUDA_VISIBLE_DEVICES indices the spawner gave it (its state)
    namespace: str = ""  # Kubernetes: the pod's namespace and name (KubeSpawner's state)
    pod: str = ""


class GpuUseSource(Protocol):
    async def sample(self, servers: Sequence[ServerGpus]) -> dict[ServerKey, list[GpuSample]]:
        """The current use of each server's GPUs. A server missing from the result, or with fewer
        samples than GPUs it holds, has no (complete) data: it is never judged idle on that round."""
        ...


def used_gpu_ms(
    samples: Sequence[GpuSample] | None, gpu_count: int, since: datetime | None, now: datetime, cap: timedelta
) -> int:
    """GPU-milliseconds used (weighted by utilization) from the previous reading ``since`` to this
    one at ``now``: each of the server's GPUs read this time (at most ``gpu_count``) adds its
    utilization/100 times the time elapsed, which counts at most ``cap`` (a gap in the readings, a
    culler that was down, is not use). No data (None, no samples) or no previous reading adds 0;
    a GPU read twice counts once (its mean)."""
    if not samples or since is None or gpu_count <= 0 or now <= since:
        return 0
    by_gpu: dict[str, list[float]] = {}
    for sample in samples:
        if math.isfinite(sample.utilization):
            by_gpu.setdefault(sample.gpu, []).append(min(100.0, max(0.0, sample.utilization)))
    means = sorted((sum(values) / len(values) for values in by_gpu.values()), reverse=True)[:gpu_count]
    elapsed = min(now - since, cap) / timedelta(milliseconds=1)
    return int(sum(means) / 100 * elapsed)


def mean_utilization(samples: Sequence[GpuSample] | None) -> float | None:
    """The mean utilization (percent) of the GPUs read, or None without data."""
    values = [s.utilization for s in samples or () if math.isfinite(s.utilization)]
    return sum(values) / len(values) if values else None


class GpuUseUnavailable(RuntimeError):
    """A source could not be read at all this round; ``str()`` says why, for an operator."""


# ---------------------------------------------------------------------------
# nvidia-smi's CSV (``--format=csv,noheader[,nounits]``)


def smi_fields(line: str) -> list[str]:
    """One line of nvidia-smi's CSV as its fields, without the spaces around them
    (``"0, NVIDIA H100 80GB HBM3, 00000000:17:00.0"``); [] for a blank line. nvidia-smi quotes
    nothing: no value it prints holds a comma."""
    if not line.strip():
        return []
    return [part.strip() for part in line.split(",")]


def smi_number(field: str, unit: str = "") -> float | None:
    """A number nvidia-smi printed (``"37"``; ``"37 %"`` or ``"1024 MiB"`` without ``nounits``
    when ``unit`` is given), or None where it has none: ``[N/A]``, ``[Not Supported]``,
    ``[Unknown Error]``, anything else that is not a finite number 0 or more."""
    text = field.strip()
    if unit and text.endswith(unit):
        text = text[: -len(unit)].strip()
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


@dataclass(frozen=True)
class SmiGpu:
    """One line of ``nvidia-smi --query-gpu=index,uuid,utilization.gpu,memory.used``."""

    index: str
    uuid: str
    utilization: float | None  # None: nvidia-smi has no figure (MIG enabled, not supported)
    memory_used_mib: float | None


def parse_smi_use(output: str) -> list[SmiGpu]:
    """The GPUs of ``nvidia-smi --query-gpu=index,uuid,utilization.gpu,memory.used
    --format=csv,noheader,nounits`` output. A line that is not four fields with an index of digits
    (a warning, a header, a truncated line) is left out; a value that is not a number is None."""
    gpus = []
    for line in output.splitlines():
        fields = smi_fields(line)
        if len(fields) != len(SMI_USE_QUERY) or not fields[0].isdigit():
            continue
        index, uuid, utilization, memory = fields
        util = smi_number(utilization, "%")
        gpus.append(SmiGpu(index, uuid, util if util is None or util <= 100 else None, smi_number(memory, "MiB")))
    return gpus


def samples_of(
    servers: Iterable[ServerGpus], gpus: Sequence[SmiGpu], now: datetime
) -> dict[ServerKey, list[GpuSample]]:
    """Each server's samples: the GPUs of ``gpus`` its ``indices`` name (by index, or by UUID, which
    CUDA_VISIBLE_DEVICES may hold too), those with both figures only. A server none of whose GPUs
    has figures is left out."""
    by_name = {g.index: g for g in gpus} | {g.uuid: g for g in gpus if g.uuid}
    out: dict[ServerKey, list[GpuSample]] = {}
    for server in servers:
        found = []
        for name in server.indices:
            gpu = by_name.get(name)
            if gpu is not None and gpu.utilization is not None and gpu.memory_used_mib is not None:
                found.append(GpuSample(name, gpu.utilization, gpu.memory_used_mib, now))
        if found:
            out[server.key] = found
    return out


class NvidiaSmiSource:
    """The embedded mode's :class:`GpuUseSource`: one ``nvidia-smi --query-gpu`` per round for the
    whole machine, each server given the GPUs of its ``indices``.

    ``command`` is the nvidia-smi to run (default: the one on ``PATH``, looked up at each round,
    so that one installed later is found). Raises :class:`GpuUseUnavailable` when it is missing,
    fails, or does not answer within ``timeout`` seconds.
    """

    def __init__(self, command: str = "nvidia-smi", timeout: float = SMI_TIMEOUT):
        self.command = command
        self.timeout = timeout

    async def sample(self, servers: Sequence[ServerGpus]) -> dict[ServerKey, list[GpuSample]]:
        if not any(s.indices for s in servers):
            return {}
        output = await self.query()
        return samples_of(servers, parse_smi_use(output), datetime.now(UTC))

    async def query(self) -> str:
        """nvidia-smi's answer to the use query (at most :data:`SMI_MAX_OUTPUT` bytes of it)."""
        smi = shutil.which(self.command)
        if smi is None:
            raise GpuUseUnavailable(f"{self.command} is not on PATH: no GPU use can be read on this machine")
        args = [f"--query-gpu={','.join(SMI_USE_QUERY)}", "--format=csv,noheader,nounits"]
        proc = await asyncio.create_subprocess_exec(
            smi, *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            assert proc.stdout is not None and proc.stderr is not None
            out, err = await asyncio.wait_for(
                asyncio.gather(_read_bounded(proc.stdout, SMI_MAX_OUTPUT), _read_bounded(proc.stderr, 4096)),
                self.timeout,
            )
            code = await asyncio.wait_for(proc.wait(), self.timeout)
        except TimeoutError:
            raise GpuUseUnavailable(f"{smi} did not answer within {self.timeout:g}s") from None
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if code != 0:
            said = (err or out).decode(errors="replace").strip()[:300]
            raise GpuUseUnavailable(f"{smi} {' '.join(args)} failed with exit code {code}: {said}")
        return out.decode(errors="replace")


async def _read_bounded(stream: asyncio.StreamReader, limit: int) -> bytes:
    """What ``stream`` gives until its end, keeping the first ``limit`` bytes (the rest is read and
    dropped, so that the writer never blocks on a full pipe)."""
    kept = bytearray()
    while chunk := await stream.read(65536):
        if len(kept) < limit:
            kept += chunk[: limit - len(kept)]
    return bytes(kept)
