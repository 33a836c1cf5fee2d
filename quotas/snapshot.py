"""One platform config per process, swapped whole on reload.

A process (the hub, the quotas service) holds its platform config, ``tenants.yaml`` read against
the image catalog, in one :class:`PlatformHolder`. Every part reads ``holder.config`` when it needs
the config and gets the same :class:`~quotas.model.PlatformConfig` object: a login, an admission
and the quotas API never see two versions. :meth:`PlatformHolder.reload` reads both files again,
validates them whole and swaps, or keeps the snapshot in force and says why (a broken file, or a
change that needs a restart). Nothing re-reads a file behind the holder's back: an edit changes
nothing until a reload (or a restart).

The hub *publishes* what it holds (:meth:`PlatformHolder.publish`): the exact bytes it validated,
in a folder named by their digest, and a state file naming that folder (:func:`write_state`). The
quotas service, which the hub runs, loads what the hub published (:meth:`PlatformHolder.published`),
never the files people edit: it gets the same bytes even if they change again meanwhile, and a
service the hub restarts reads what the hub applied, not an edit nobody reloaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from .loader import ConfigError, Problem, load_platform
from .model import PlatformConfig, Quota, Tenant
from .quantity import exact_bytes, format_duration, format_number

TENANTS_NAME, CATALOG_NAME = "tenants.yaml", "catalog.yaml"
# the folder of the data directory where the hub publishes its config and each process its state
PLATFORM_DIR = "platform"
HUB_STATE, QUOTAS_STATE = "hub.json", "quotas.json"
STATE_VERSION = 1


def platform_dir(data_dir: str | Path) -> Path:
    """``<data_dir>/platform``: the published config and the processes' state files."""
    return Path(data_dir) / PLATFORM_DIR


@dataclass(frozen=True)
class Loaded:
    """The two files as read (their exact bytes) and the config they make."""

    config: PlatformConfig
    tenants: bytes
    catalog: bytes
    tenants_file: str
    catalog_file: str

    @property
    def digest(self) -> str:
        return digest_of(self.tenants, self.catalog)


@dataclass(frozen=True)
class Snapshot:
    """The config in force in this process, and which files it came from."""

    loaded: Loaded
    generation: int  # 1 at start, one more at each reload that applied new files
    since: datetime

    @property
    def config(self) -> PlatformConfig:
        return self.loaded.config

    @property
    def digest(self) -> str:
        return self.loaded.digest


@dataclass(frozen=True)
class ReloadOutcome:
    """What one reload did. ``applied`` False: refused, the snapshot in force stays."""

    applied: bool
    generation: int  # of the snapshot in force after the reload
    digest: str
    tenants_file: str
    at: datetime
    changes: tuple[str, ...] = ()  # what changed, for people (applied and empty: the same files)
    problems: tuple[str, ...] = ()  # why it was refused
    notes: tuple[str, ...] = ()  # what else a person should know (a part that could not follow)
    since: datetime | None = None  # when the snapshot in force was loaded
    read: str = ""  # the digest of the files this reload read ("": they could not be read)

    @property
    def changed(self) -> bool:
        return self.applied and bool(self.changes)

    def lines(self) -> list[str]:
        """The outcome for people (logs, ``aidc reload``)."""
        if not self.applied:
            count = len(self.problems)
            since = f" loaded at {_clock(self.since)}" if self.since else ""
            out = [
                f"Refused {self.tenants_file}: {count} problem{'s' if count != 1 else ''}; the config{since}"
                f" (generation {self.generation}) stays in force. Fix the file and reload again:"
            ]
            out += [f"  - {p}" for p in self.problems]
        elif not self.changes:
            out = [f"Reloaded {self.tenants_file}: nothing changed (generation {self.generation} stays in force)."]
        else:
            out = [f"Reloaded {self.tenants_file}: generation {self.generation} is in force:"]
            out += [f"  - {c}" for c in self.changes]
        return out + [f"Note: {n}" for n in self.notes]

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["at"] = self.at.isoformat()
        out["since"] = self.since.isoformat() if self.since else None
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReloadOutcome:
        return cls(
            applied=bool(data["applied"]),
            generation=int(data["generation"]),
            digest=str(data["digest"]),
            tenants_file=str(data["tenants_file"]),
            at=datetime.fromisoformat(data["at"]),
            changes=tuple(data.get("changes", ())),
            problems=tuple(data.get("problems", ())),
            notes=tuple(data.get("notes", ())),
            since=datetime.fromisoformat(data["since"]) if data.get("since") else None,
            read=str(data.get("read", "")),
        )


def _clock(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "?"


def digest_of(tenants: bytes, catalog: bytes) -> str:
    """The SHA-256 of both files (which files a snapshot is, whatever their paths)."""
    h = hashlib.sha256()
    for part in (tenants, catalog):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Reading the files


def read_files(tenants_file: str | Path, catalog_file: str | Path) -> Loaded:
    """Read both files once and validate exactly those bytes (a copy, so an edit made while it
    reads cannot mix two versions). Raises :class:`ConfigError` naming the files as given, or
    ``OSError`` when one cannot be read."""
    tenants, catalog = Path(tenants_file).read_bytes(), Path(catalog_file).read_bytes()
    with tempfile.TemporaryDirectory(prefix="aidc-platform-") as tmp:
        folder = Path(tmp)
        (folder / TENANTS_NAME).write_bytes(tenants)
        (folder / CATALOG_NAME).write_bytes(catalog)
        return _load(folder, tenants, catalog, str(tenants_file), str(catalog_file))


class InvalidFiles(ConfigError):
    """A :class:`ConfigError` of files read whole; ``digest`` says which bytes were refused."""

    def __init__(self, source: str, problems: list[Problem], digest: str):
        super().__init__(source, problems)
        self.digest = digest


def _load(folder: Path, tenants: bytes, catalog: bytes, tenants_file: str, catalog_file: str) -> Loaded:
    names = {str(folder / TENANTS_NAME): tenants_file, str(folder / CATALOG_NAME): catalog_file}
    try:
        config = load_platform(folder / TENANTS_NAME, folder / CATALOG_NAME)
    except ConfigError as e:
        # the problems of the files people edit, named as they know them
        raise InvalidFiles(names.get(e.source, e.source), e.problems, digest_of(tenants, catalog)) from None
    return Loaded(dataclasses.replace(config, source=tenants_file), tenants, catalog, tenants_file, catalog_file)


def read_published(state_file: str | Path) -> Loaded:
    """The config the hub published (see :func:`write_state`): the folder its state file names.
    Raises ``OSError`` or ``ValueError`` when there is none, :class:`ConfigError` when it does
    not validate here."""
    state = read_state(state_file)
    if state is None:
        raise FileNotFoundError(f"{state_file} does not exist: the hub has published no platform config")
    snapshot = state["snapshot"]
    folder = Path(state_file).parent / snapshot["folder"]
    tenants, catalog = (folder / TENANTS_NAME).read_bytes(), (folder / CATALOG_NAME).read_bytes()
    if digest_of(tenants, catalog) != snapshot["digest"]:
        raise ValueError(f"{folder} does not hold what {state_file} says (digest differs): it was changed by hand")
    return _load(folder, tenants, catalog, snapshot["tenants_file"], snapshot["catalog_file"])


# ---------------------------------------------------------------------------------------------
# The holder


class PlatformHolder:
    """The one platform config of a process; swapped whole by :meth:`reload`.

    Build it with :meth:`from_files` (the hub, a standalone quotas service) or :meth:`published`
    (the quotas service the hub runs). The first load raises :class:`ConfigError` (or ``OSError``):
    a process without a valid config does not start.
    """

    def __init__(self, read: Callable[[], Loaded], clock: Callable[[], datetime] | None = None):
        self._read = read
        self._clock = clock or (lambda: datetime.now(UTC))
        self._snapshot = Snapshot(read(), 1, self._clock())
        self._previous: Snapshot | None = None

    @classmethod
    def from_files(cls, tenants_file: str | Path, catalog_file: str | Path) -> PlatformHolder:
        return cls(lambda: read_files(tenants_file, catalog_file))

    @classmethod
    def published(cls, state_file: str | Path) -> PlatformHolder:
        return cls(lambda: read_published(state_file))

    @property
    def config(self) -> PlatformConfig:
        """The config in force. Read it once per decision (a reload may swap it between two reads
        that an ``await`` separates)."""
        return self._snapshot.config

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def reload(self) -> ReloadOutcome:
        """Read and validate the files again; swap if valid, keep the snapshot in force if not.

        Refused: a file that does not validate (every problem listed), cannot be read, or changes
        what needs a restart (:func:`describe_changes`). The same bytes as in force: applied, with
        no change. Never raises for a bad file.
        """
        old = self._snapshot
        problems: list[str] = []
        read = ""
        try:
            new = self._read()
        except ConfigError as e:
            problems = [f"{e.source}: {p}" for p in e.problems]
            read = e.digest if isinstance(e, InvalidFiles) else ""
        except OSError as e:
            problems = [f"{e.filename or 'the file'} cannot be read: {e.strerror or e}"]
        except ValueError as e:
            problems = [str(e)]
        else:
            read = new.digest
            changes, restart = describe_changes(old.config, new.config)
            if restart:
                problems = [f"{r}; restart the hub to apply it" for r in restart]
            elif new.digest == old.digest:
                return self._outcome(True, read)
            else:
                self._previous = old
                self._snapshot = Snapshot(new, old.generation + 1, self._clock())
                return self._outcome(True, read, tuple(changes) or ("only comments or formatting changed",))
        return self._outcome(False, read, problems=tuple(problems))

    def _outcome(
        self, applied: bool, read: str, changes: tuple[str, ...] = (), problems: tuple[str, ...] = ()
    ) -> ReloadOutcome:
        s = self._snapshot
        return ReloadOutcome(
            applied=applied,
            generation=s.generation,
            digest=s.digest,
            tenants_file=s.loaded.tenants_file,
            at=self._clock(),
            changes=changes,
            problems=problems,
            since=s.since,
            read=read,
        )

    def publish(self, folder: str | Path) -> Path:
        """Write the exact bytes in force to ``folder/<digest>/`` (once: the folder never changes
        after) and remove older ones but the previous snapshot's. Returns that folder."""
        root = Path(folder)
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = root / self._snapshot.digest[:32]
        if not target.is_dir():
            tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=root))
            (tmp / TENANTS_NAME).write_bytes(self._snapshot.loaded.tenants)
            (tmp / CATALOG_NAME).write_bytes(self._snapshot.loaded.catalog)
            os.replace(tmp, target)
        keep = {target.name, *((self._previous.digest[:32],) if self._previous else ())}
        for old in root.iterdir():
            if old.is_dir() and old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)
        return target


_SHARED: dict[tuple[str, str], PlatformHolder] = {}


def shared_holder(tenants_file: str | Path, catalog_file: str | Path) -> PlatformHolder:
    """The process's one holder of these files: loaded at the first call (``ConfigError`` then),
    after that only by :meth:`PlatformHolder.reload`. Everything in the hub (its config file,
    spawners, authenticator) asks for it here, so everything reads the same snapshot."""
    key = (str(Path(tenants_file).resolve()), str(Path(catalog_file).resolve()))
    if key not in _SHARED:
        _SHARED[key] = PlatformHolder.from_files(tenants_file, catalog_file)
    return _SHARED[key]


# ---------------------------------------------------------------------------------------------
# State files: what a process holds and what its last reload did, for the other processes and
# for `aidc reload` (written whole, then renamed into place: a reader never sees half a file)


def write_state(
    path: str | Path, holder: PlatformHolder, reloads: int, last: ReloadOutcome | None, **extra: Any
) -> None:
    """Write ``path``: this process (pid), the snapshot it holds (and the folder the hub published
    it in), how many reloads it was asked for, the outcome of the last one, and ``extra``."""
    s = holder.snapshot
    state = {
        "version": STATE_VERSION,
        "pid": os.getpid(),
        "snapshot": {
            "digest": s.digest,
            "folder": s.digest[:32],
            "generation": s.generation,
            "since": s.since.isoformat(),
            "tenants_file": s.loaded.tenants_file,
            "catalog_file": s.loaded.catalog_file,
            "tenants": list(s.config.tenants),
        },
        "reloads": reloads,
        "last": last.to_json() if last else None,
        **extra,
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".state-", dir=target.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)


def read_state(path: str | Path) -> dict[str, Any] | None:
    """A state file's content, or None when there is none."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        raise ValueError(f"{path} is not a state file of this version of AIDC Hub")
    return data


# ---------------------------------------------------------------------------------------------
# What changed between two snapshots, for people


def describe_changes(old: PlatformConfig, new: PlatformConfig) -> tuple[list[str], list[str]]:
    """``(changes, restart)``: each change in a short line (tenants added and removed, ceilings,
    members, admins, profiles...), and the changes a reload cannot apply. Those are the GPU types:
    the hub sorts this machine's GPUs into types once, at start."""
    changes: list[str] = []
    restart: list[str] = []
    if dict(old.gpu_types) != dict(new.gpu_types):
        restart.append(f"gpu_types changed ({_keyed_diff(old.gpu_types, new.gpu_types)})")
    for tid in new.tenants:
        if tid not in old.tenants:
            changes.append(f"tenant {tid} added ({_ceiling_words(new.tenants[tid].quota)})")
    for tid in old.tenants:
        if tid not in new.tenants:
            changes.append(f"tenant {tid} removed")
        else:
            changes += [f"tenant {tid}: {c}" for c in _tenant_changes(old.tenants[tid], new.tenants[tid])]
    for what, before, after in (
        ("profiles", old.profiles, new.profiles),
        ("images", old.images, new.images),
        ("datasets", old.datasets, new.datasets),
    ):
        if dict(before) != dict(after):
            changes.append(f"{what}: {_keyed_diff(before, after)}")
    if old.culling != new.culling:
        changes.append(
            "culling: "
            + _pairs(
                (f, format_duration(getattr(old.culling, f)), format_duration(getattr(new.culling, f)))
                for f in ("gpu_idle_timeout", "cpu_idle_timeout", "interval")
            )
        )
    return changes, restart


def _tenant_changes(old: Tenant, new: Tenant) -> list[str]:
    out = []
    if old.quota != new.quota:
        before, after = _ceiling(old.quota), _ceiling(new.quota)
        keys = list(dict.fromkeys([*before, *after]))
        out.append("ceiling " + _pairs((k, before.get(k, "0"), after.get(k, "0")) for k in keys))
    for what, o, n in (
        ("members", old.members_by_name, new.members_by_name),
        ("member groups", old.member_groups, new.member_groups),
        ("admins", frozenset(old.admins), frozenset(new.admins)),
        ("profiles", frozenset(old.profiles), frozenset(new.profiles)),
        ("datasets", frozenset(old.datasets), frozenset(new.datasets)),
    ):
        if o != n:
            out.append(f"{what} {_set_diff(o, n)}")
    other = [
        f
        for f in ("display_name", "kind", "culling", "oidc_groups", "oidc_admin_groups")
        if getattr(old, f) != getattr(new, f)
    ]
    if other:
        out.append(f"{', '.join(other)} changed")
    return out


def _ceiling(q: Quota) -> dict[str, str]:
    """A ceiling as ``{what: amount}``; a resource without a limit says so."""
    out = {f"{t} GPUs": str(n) for t, n in sorted(q.gpus.items())}
    amounts: list[tuple[str, Decimal | int | None, Callable[[Any], str]]] = [
        ("servers", q.servers, str),
        ("servers per user", q.servers_per_user, str),
        ("CPUs", q.cpu, format_number),
        ("memory", q.memory, exact_bytes),
        ("storage", q.storage, exact_bytes),
        ("GPU-hours per month", q.gpu_hours_per_month, format_number),
    ]
    for name, value, fmt in amounts:
        out[name] = "no limit" if value is None else fmt(value)
    return out


def _ceiling_words(q: Quota) -> str:
    parts = [f"{v} {k}" for k, v in _ceiling(q).items() if v != "no limit"]
    return ", ".join(parts) or "no limits"


def _pairs(items: Iterable[tuple[str, str, str]]) -> str:
    return "; ".join(f"{k} {a} -> {b}" for k, a, b in items if a != b)


def _set_diff(old: Iterable[str], new: Iterable[str]) -> str:
    o, n = set(old), set(new)
    parts = []
    if n - o:
        parts.append("+" + ", +".join(sorted(n - o)))
    if o - n:
        parts.append("-" + ", -".join(sorted(o - n)))
    return ", ".join(parts)


def _keyed_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    parts = [f"+{k}" for k in new if k not in old]
    parts += [f"-{k}" for k in old if k not in new]
    parts += [f"{k} changed" for k in new if k in old and old[k] != new[k]]
    return ", ".join(parts)
