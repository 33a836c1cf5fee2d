"""Load and validate ``tenants.yaml`` and ``images/catalog.yaml``.

Every problem is collected and reported at once, each with the file, the key
path and what is wrong, so an operator fixes a file in one pass. Nothing is
returned unless the whole file is valid: there is no half-applied config.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from .model import (
    TENANT_KINDS,
    Culling,
    Dataset,
    GpuType,
    Image,
    PlatformConfig,
    Profile,
    Quota,
    Tenant,
    TenantCulling,
)
from .quantity import QuantityError, parse_quantity

ID_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
GPU_TYPE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
USER_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._@+-]*$")
# a group as an identity provider names it: "snu-ai", "/snu-ai/admins", an Azure AD object id, an LDAP DN
IDP_GROUP_PATTERN = re.compile(r"^[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]{0,254}[^\s\x00-\x1f\x7f])?$")
MAX_ID_LENGTH = 40  # tenant ids become namespace names ("aidc-<id>"), which have 63


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(ValueError):
    """A config file with one or more problems; ``str()`` lists them all."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        count = len(problems)
        lines = [f"{source}: {count} problem{'s' if count != 1 else ''}; nothing was applied:"]
        lines += [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


DURATION = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


class DurationError(ValueError):
    """A value that is not a duration; ``str()`` says what is accepted."""


def parse_duration(value: Any) -> timedelta:
    """A duration of ``tenants.yaml``: whole seconds (``90``) or a string of days, hours, minutes
    and seconds in that order (``"90s"``, ``"30m"``, ``"1h"``, ``"1h30m"``, ``"2d"``).

    Raises :class:`DurationError` for anything else, negative durations included.
    """
    accepted = "a duration such as 90s, 30m, 1h or 1h30m, or whole seconds"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DurationError(f"must be {accepted}, not {_kind(value)}")
    if isinstance(value, float):
        if not value.is_integer():
            raise DurationError(f'must be whole seconds, or a string such as "90s"; {value!r} is fractional')
        value = int(value)
    if isinstance(value, int):
        if value < 0:
            raise DurationError(f"cannot be negative ({value!r}); 0 means never")
        return timedelta(seconds=value)
    text = "".join(value.split()).lower()
    if text.startswith("-"):
        raise DurationError(f"cannot be negative ({value!r}); 0 means never")
    if text.isdigit():
        return timedelta(seconds=int(text))
    if "." in text:
        raise DurationError(f"must be whole units, such as 90m rather than 1.5h; not {_kind(value)}")
    match = DURATION.match(text)
    if not text or match is None:
        raise DurationError(f"must be {accepted} (units d, h, m, s in that order), not {_kind(value)}")
    return timedelta(seconds=sum(int(n) * _UNIT_SECONDS[unit] for unit, n in match.groupdict().items() if n))


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that records duplicate mapping keys instead of silently keeping the last."""

    duplicates: list[tuple[str, int]]


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, Hashable):
            continue  # SafeLoader refuses it below, as invalid YAML
        if key in seen:
            loader.duplicates.append((str(key), key_node.start_mark.line + 1))
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(str(path), [Problem("", f"cannot read the file: {e.strerror}")]) from e
    loader = _UniqueKeyLoader(text)
    loader.duplicates = []
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as e:
        raise ConfigError(str(path), [Problem("", f"not valid YAML: {e}")]) from e
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ConfigError(
            str(path),
            [Problem(f"line {line}", f"key {key!r} appears twice; keep one") for key, line in loader.duplicates],
        )
    return data


class _Checker:
    """Collects problems while walking plain YAML data."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def mapping(
        self, value: Any, path: str, required: tuple[str, ...], optional: tuple[str, ...]
    ) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.add(path, f"must be a mapping with keys {', '.join(required + optional)}, not {_kind(value)}")
            return None
        known = required + optional
        for key in value:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
                self.add(_join(path, str(key)), f"unknown key{hint}")
        for key in required:
            if value.get(key) is None:
                self.add(_join(path, key), "is required")
        return value

    def string(self, value: Any, path: str, pattern: re.Pattern[str] | None = None, what: str = "") -> str | None:
        """A non-empty string. ``None`` is a key that :meth:`mapping` reported as required already."""
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.add(path, f"must be a non-empty string, not {_kind(value)}")
            return None
        if pattern and not pattern.match(value):
            self.add(path, f"{value!r} is not a valid {what}")
            return None
        if pattern is ID_PATTERN and len(value) > MAX_ID_LENGTH:
            self.add(path, f"{value!r} is longer than {MAX_ID_LENGTH} characters")
            return None
        return value

    def count(self, value: Any, path: str, what: str) -> int | None:
        """A whole, non-negative number (GPUs, servers)."""
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            self.add(path, f"{what} must be a whole number, not {_kind(value)}")
            return None
        if isinstance(value, str):
            self.add(path, f"{what} must be a whole number written without quotes, not the string {value!r}")
            return None
        if isinstance(value, float) and not value.is_integer():
            self.add(path, f"{what} must be a whole number; {value!r} is fractional")
            return None
        if value < 0:
            self.add(path, f"{what} cannot be negative ({value!r})")
            return None
        return int(value)

    def quantity(self, value: Any, path: str, what: str) -> Decimal | None:
        if isinstance(value, float):
            self.add(path, f'{what} {value!r}: write it as a string such as "{value}" so it is read exactly')
            return None
        try:
            amount = parse_quantity(value)
        except QuantityError as e:
            self.add(path, str(e))
            return None
        if amount < 0:
            self.add(path, f"{what} cannot be negative ({value!r})")
            return None
        return amount

    def duration(self, value: Any, path: str) -> timedelta | None:
        try:
            return parse_duration(value)
        except DurationError as e:
            self.add(path, str(e))
            return None

    def boolean(self, value: Any, path: str) -> bool | None:
        if not isinstance(value, bool):
            self.add(path, f"must be true or false, not {_kind(value)}")
            return None
        return value

    def string_list(self, value: Any, path: str, pattern: re.Pattern[str], what: str) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.add(path, f"must be a list of {what}s, not {_kind(value)}")
            return []
        out: list[str] = []
        for i, item in enumerate(value):
            if item is None:
                self.add(f"{path}[{i}]", f"is empty; write a {what} or remove the line")
                continue
            checked = self.string(item, f"{path}[{i}]", pattern, what)
            if checked is None:
                continue
            if checked in out:
                self.add(f"{path}[{i}]", f"{what} {checked!r} is listed twice")
                continue
            out.append(checked)
        return out

    def unique_ids(self, items: Any, path: str, what: str) -> list[tuple[str, str, dict[str, Any]]]:
        """Validate a list of mappings with an ``id``; return (id, path, item) for the usable ones."""
        if items is None:
            return []
        if not isinstance(items, list):
            self.add(path, f"must be a list of {what}s, not {_kind(items)}")
            return []
        seen: dict[str, int] = {}
        out = []
        for i, item in enumerate(items):
            item_path = f"{path}[{i}]"
            if not isinstance(item, dict):
                self.add(item_path, f"must be a mapping describing a {what}, not {_kind(item)}")
                continue
            if item.get("id") is None:
                self.add(f"{item_path}.id", "is required")
                continue
            ident = self.string(
                item.get("id"), f"{item_path}.id", ID_PATTERN, f"{what} id (lower-case letters, digits and '-')"
            )
            if ident is None:
                continue
            if ident in seen:
                self.add(f"{item_path}.id", f"duplicate {what} id {ident!r} (first at {path}[{seen[ident]}])")
                continue
            seen[ident] = i
            out.append((ident, f"{path}[{ident}]", item))
        return out


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: f"the string {value!r}", bool: f"{value!r}"}.get(
        type(value), f"{type(value).__name__} {value!r}"
    )


# ---------------------------------------------------------------------------
# images/catalog.yaml


def load_catalog(path: str | Path) -> Mapping[str, Image]:
    """Load the image catalog; raise :class:`ConfigError` listing every problem."""
    path = Path(path)
    data = _read_yaml(path)
    check = _Checker()
    images = _parse_catalog(data, check)
    if check.problems:
        raise ConfigError(str(path), check.problems)
    return images


BUILD_DIR_PATTERN = re.compile(r"^(?!/)(?!.*(?:^|/)\.\.(?:/|$))[A-Za-z0-9._/-]+$")
_BUILD_KEYS = ("build", "from")


def _parse_catalog(data: Any, check: _Checker) -> Mapping[str, Image]:
    root = check.mapping(data, "", ("images",), ("platform",))
    images: dict[str, Image] = {}
    if root is None:
        return images
    parents: dict[str, tuple[str, str]] = {}  # id -> (path of its `from`, the id it is built from)
    listed = check.unique_ids(root.get("images"), "images", "image")
    for ident, path, item in listed:
        fields = check.mapping(
            item,
            path,
            ("id", "display_name", "image"),
            ("description", "needs_gpu", "cuda", "toolchain", "dockerfile") + _BUILD_KEYS,
        )
        if fields is None:
            continue
        display = check.string(fields.get("display_name"), f"{path}.display_name")
        ref = check.string(fields.get("image"), f"{path}.image")
        needs_gpu = fields.get("needs_gpu", False)
        if not isinstance(needs_gpu, bool):
            check.add(f"{path}.needs_gpu", f"must be true or false, not {_kind(needs_gpu)}")
        toolchain = _parse_toolchain(fields.get("toolchain"), f"{path}.toolchain", check)
        _parse_build(fields, ident, path, parents, check)
        if display and ref:
            images[ident] = Image(
                id=ident,
                display_name=display,
                image=ref,
                description=str(fields.get("description", "")),
                needs_gpu=bool(needs_gpu),
                cuda=str(fields.get("cuda", "")),
                toolchain=toolchain,
            )
    workspace_ids = {ident for ident, _, _ in listed}
    # Images the platform itself runs (the hub): validated like workspace images, never a profile's.
    for ident, path, item in check.unique_ids(root.get("platform"), "platform", "platform image"):
        if ident in workspace_ids:
            check.add(f"{path}.id", f"{ident!r} is already a workspace image id under images; ids are shared")
            continue
        fields = check.mapping(
            item, path, ("id", "display_name", "image", "build"), ("description", "toolchain", "from")
        )
        if fields is None:
            continue
        check.string(fields.get("display_name"), f"{path}.display_name")
        check.string(fields.get("image"), f"{path}.image")
        _parse_toolchain(fields.get("toolchain"), f"{path}.toolchain", check)
        _parse_build(fields, ident, path, parents, check)
    for ident, (path, parent) in parents.items():
        if parent not in workspace_ids:
            hint = f"the images are {', '.join(sorted(workspace_ids)) or 'none'}"
            check.add(path, f"{ident!r} is built from {parent!r}, which is not an image of this catalog; {hint}")
            continue
        chain = [ident, parent]
        while chain[-1] in parents and parents[chain[-1]][1] in workspace_ids:
            chain.append(parents[chain[-1]][1])
            if chain[-1] in chain[:-1]:
                check.add(path, f"images are built from each other in a circle: {' -> '.join(chain)}")
                break
    return MappingProxyType(images)


def _parse_toolchain(value: Any, path: str, check: _Checker) -> Mapping[str, str]:
    toolchain = value or {}
    if not isinstance(toolchain, dict) or not all(isinstance(v, (str, int, float)) for v in toolchain.values()):
        check.add(path, "must map tool names to version strings")
        toolchain = {}
    return MappingProxyType({str(k): str(v) for k, v in toolchain.items()})


def _parse_build(
    fields: dict[str, Any], ident: str, path: str, parents: dict[str, tuple[str, str]], check: _Checker
) -> None:
    """``build`` (the Dockerfile's folder, relative to the repository) and ``from`` (the id it is built on)."""
    if fields.get("build") is not None:
        check.string(
            fields["build"],
            f"{path}.build",
            BUILD_DIR_PATTERN,
            "folder relative to the repository (such as images/base)",
        )
    if fields.get("from") is not None:
        parent = check.string(fields["from"], f"{path}.from", ID_PATTERN, "image id")
        if parent == ident:
            check.add(f"{path}.from", f"{ident!r} cannot be built from itself")
        elif parent is not None:
            parents[ident] = (f"{path}.from", parent)


# ---------------------------------------------------------------------------
# tenants.yaml


def load_platform(tenants_path: str | Path, catalog_path: str | Path) -> PlatformConfig:
    """Load ``tenants.yaml`` against the image catalog.

    Returns the validated :class:`PlatformConfig`, or raises :class:`ConfigError`
    listing every problem of both files at once.
    """
    images = load_catalog(catalog_path)
    return parse_platform(_read_yaml(Path(tenants_path)), images, source=str(tenants_path))


def parse_platform(data: Any, images: Mapping[str, Image], source: str = "tenants.yaml") -> PlatformConfig:
    """Validate already-parsed YAML data; see :func:`load_platform`."""
    check = _Checker()
    root = check.mapping(data, "", ("gpu_types", "profiles", "tenants"), ("users", "datasets", "culling"))
    if root is None:
        raise ConfigError(source, check.problems)
    culling = _parse_culling(root.get("culling"), check)
    gpu_types = _parse_gpu_types(root.get("gpu_types"), check)
    profiles = _parse_profiles(root.get("profiles"), gpu_types, images, check)
    datasets = _parse_datasets(root.get("datasets"), check)
    tenants = _parse_tenants(root.get("tenants"), gpu_types, profiles, datasets, check)
    _apply_user_memberships(root.get("users"), tenants, check)
    if check.problems:
        raise ConfigError(source, check.problems)
    return PlatformConfig(
        gpu_types=MappingProxyType(gpu_types),
        images=images,
        profiles=MappingProxyType(profiles),
        tenants=MappingProxyType({t: _freeze_tenant(v) for t, v in tenants.items() if v is not None}),
        source=source,
        datasets=MappingProxyType(datasets),
        culling=culling,
    )


_CULLING_KEYS = ("gpu_idle_timeout", "cpu_idle_timeout", "interval")
_TENANT_CULLING_KEYS = ("gpu_idle_timeout", "cpu_idle_timeout", "stop_over_budget", "over_budget_grace")


def _parse_culling(value: Any, check: _Checker) -> Culling:
    """``culling: {gpu_idle_timeout: 1h, cpu_idle_timeout: 8h, interval: 5m}``, each optional."""
    defaults = Culling()
    if value is None:
        return defaults
    fields = check.mapping(value, "culling", (), _CULLING_KEYS)
    if fields is None:
        return defaults
    out: dict[str, timedelta] = {}
    for key in _CULLING_KEYS:
        if fields.get(key) is None:
            continue
        parsed = check.duration(fields[key], f"culling.{key}")
        if parsed is None:
            continue
        if key == "interval" and parsed < timedelta(seconds=1):
            check.add("culling.interval", "must be at least 1s: it is how often the culler looks for servers to stop")
            continue
        out[key] = parsed
    return Culling(**out)


def _parse_tenant_culling(value: Any, path: str, check: _Checker) -> TenantCulling | None:
    """A tenant's ``culling:``; None when it has problems (they are reported)."""
    if value is None:
        return TenantCulling()
    fields = check.mapping(value, path, (), _TENANT_CULLING_KEYS)
    if fields is None:
        return None
    before = len(check.problems)
    out: dict[str, Any] = {}
    for key in ("gpu_idle_timeout", "cpu_idle_timeout", "over_budget_grace"):
        if fields.get(key) is not None:
            out[key] = check.duration(fields[key], f"{path}.{key}")
    if fields.get("stop_over_budget") is not None:
        out["stop_over_budget"] = check.boolean(fields["stop_over_budget"], f"{path}.stop_over_budget")
    return TenantCulling(**out) if len(check.problems) == before else None


MOUNT_PATH = re.compile(r"^/[A-Za-z0-9._/-]*$")


def _parse_datasets(value: Any, check: _Checker) -> dict[str, Dataset]:
    """``datasets: {imagenet: {claim: open-imagenet, mount_path: /datasets/imagenet}}``."""
    out: dict[str, Dataset] = {}
    if value is None:
        return out
    if not isinstance(value, dict):
        check.add("datasets", f"must map data set names to their claim and mount path, not {_kind(value)}")
        return out
    for name, spec in value.items():
        path = f"datasets.{name}"
        if not isinstance(name, str) or not ID_PATTERN.match(name):
            check.add(path, f"{name!r} is not a valid data set name (lower-case letters, digits and '-')")
            continue
        fields = check.mapping(spec, path, ("claim", "mount_path"), ("description",))
        if fields is None:
            continue
        claim = check.string(fields.get("claim"), f"{path}.claim", ID_PATTERN, "PersistentVolumeClaim name")
        mount = check.string(fields.get("mount_path"), f"{path}.mount_path", MOUNT_PATH, "absolute path")
        if mount in ("/", "/home", "/home/jovyan", "/dev/shm"):
            check.add(f"{path}.mount_path", f"{mount!r} would hide part of the workspace; use e.g. /datasets/{name}")
            mount = None
        if claim and mount:
            out[name] = Dataset(name, claim, mount, str(fields.get("description", "")))
    return out


def _parse_gpu_types(value: Any, check: _Checker) -> dict[str, GpuType]:
    out: dict[str, GpuType] = {}
    if value is None:
        return out
    if not isinstance(value, dict):
        check.add("gpu_types", f"must map GPU type names (such as H100) to their description, not {_kind(value)}")
        return out
    for name, spec in value.items():
        path = f"gpu_types.{name}"
        if not isinstance(name, str) or not GPU_TYPE_PATTERN.match(name):
            check.add(path, f"{name!r} is not a valid GPU type name (letters, digits, '.', '-', '_')")
            continue
        spec = {} if spec is None else spec
        fields = check.mapping(spec, path, (), ("resource", "product", "description"))
        if fields is None:
            continue
        resource = fields.get("resource", "nvidia.com/gpu")
        if not isinstance(resource, str) or "/" not in resource:
            check.add(f"{path}.resource", f"{resource!r} is not an extended resource name such as nvidia.com/gpu")
            continue
        out[name] = GpuType(
            name=name,
            resource=resource,
            product=str(fields.get("product", "")),
            description=str(fields.get("description", "")),
        )
    return out


def _parse_profiles(
    value: Any, gpu_types: Mapping[str, GpuType], images: Mapping[str, Image], check: _Checker
) -> dict[str, Profile]:
    out: dict[str, Profile] = {}
    for ident, path, item in check.unique_ids(value, "profiles", "profile"):
        fields = check.mapping(
            item, path, ("id", "display_name", "cpu", "memory", "image"), ("gpu", "description", "idle_timeout")
        )
        if fields is None:
            continue
        display = check.string(fields.get("display_name"), f"{path}.display_name")
        idle_ok, idle_timeout = True, None
        if fields.get("idle_timeout") is not None:
            idle_timeout = check.duration(fields["idle_timeout"], f"{path}.idle_timeout")
            idle_ok = idle_timeout is not None
        cpu = check.quantity(fields.get("cpu"), f"{path}.cpu", "cpu")
        memory = check.quantity(fields.get("memory"), f"{path}.memory", "memory")
        image = check.string(fields.get("image"), f"{path}.image")
        if image is not None and image not in images:
            close = difflib.get_close_matches(image, list(images), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; the catalog has {', '.join(images) or 'no images'}"
            check.add(f"{path}.image", f"image {image!r} is not in images/catalog.yaml{hint}")
            image = None
        gpu_type, gpu_count, gpu_ok = None, 0, True
        if fields.get("gpu") is not None:
            gpu = check.mapping(fields["gpu"], f"{path}.gpu", ("type", "count"), ())
            if gpu is None:
                gpu_ok = False
            else:
                gpu_type = check.string(gpu.get("type"), f"{path}.gpu.type")
                if gpu_type is not None and gpu_type not in gpu_types:
                    check.add(
                        f"{path}.gpu.type",
                        f"GPU type {gpu_type!r} is not declared under gpu_types (declared: {', '.join(gpu_types) or 'none'})",
                    )
                    gpu_type = None
                counted = check.count(gpu.get("count"), f"{path}.gpu.count", "a GPU count")
                if counted == 0:
                    check.add(f"{path}.gpu.count", "must be at least 1; leave out 'gpu' for a CPU-only profile")
                    counted = None
                gpu_ok = gpu_type is not None and counted is not None
                gpu_count = counted or 0
        if image and not fields.get("gpu") and images[image].needs_gpu:
            check.add(f"{path}.image", f"image {image!r} needs a GPU, but this profile has none")
            image = None
        if display and cpu is not None and memory is not None and image and gpu_ok and idle_ok:
            out[ident] = Profile(
                id=ident,
                display_name=display,
                description=str(fields.get("description", "")),
                cpu=cpu,
                memory=memory,
                image=image,
                gpu_type=gpu_type,
                gpu_count=gpu_count,
                idle_timeout=idle_timeout,
            )
        else:
            out[ident] = None  # type: ignore[assignment]  # declared but invalid: tenants may still name it
    return out


_USER_WHAT = "username (lower case, as JupyterHub stores it)"


def _parse_tenants(
    value: Any,
    gpu_types: Mapping[str, GpuType],
    profiles: Mapping[str, Profile | None],
    datasets: Mapping[str, Dataset],
    check: _Checker,
) -> dict[str, dict[str, Any] | None]:
    out: dict[str, dict[str, Any] | None] = {}
    for ident, path, item in check.unique_ids(value, "tenants", "tenant"):
        fields = check.mapping(
            item,
            path,
            ("id", "display_name", "kind", "profiles", "quota"),
            ("members", "admins", "description", "datasets", "culling", "oidc"),
        )
        if fields is None:
            continue
        display = check.string(fields.get("display_name"), f"{path}.display_name")
        kind = fields.get("kind")
        if kind not in TENANT_KINDS:
            check.add(f"{path}.kind", f"{kind!r} is not a tenant kind; use one of {', '.join(TENANT_KINDS)}")
        users: list[str] = []
        groups: list[str] = []
        members = fields.get("members")
        if members is not None:
            m = check.mapping(members, f"{path}.members", (), ("users", "groups"))
            if m is not None:
                users = check.string_list(m.get("users"), f"{path}.members.users", USER_PATTERN, _USER_WHAT)
                groups = check.string_list(m.get("groups"), f"{path}.members.groups", ID_PATTERN, "group name")
        admins = check.string_list(fields.get("admins"), f"{path}.admins", USER_PATTERN, _USER_WHAT)
        allowed = check.string_list(fields.get("profiles"), f"{path}.profiles", ID_PATTERN, "profile id")
        for i, profile_id in enumerate(allowed):
            if profile_id not in profiles:
                check.add(
                    f"{path}.profiles[{i}]",
                    f"profile {profile_id!r} is not declared under profiles (declared: {', '.join(profiles) or 'none'})",
                )
        mounted = check.string_list(fields.get("datasets"), f"{path}.datasets", ID_PATTERN, "data set name")
        for i, name in enumerate(mounted):
            if name not in datasets:
                check.add(
                    f"{path}.datasets[{i}]",
                    f"data set {name!r} is not declared under datasets (declared: {', '.join(datasets) or 'none'})",
                )
        quota = _parse_quota(fields.get("quota"), f"{path}.quota", gpu_types, check)
        culling = _parse_tenant_culling(fields.get("culling"), f"{path}.culling", check)
        oidc = _parse_tenant_oidc(fields.get("oidc"), f"{path}.oidc", check)
        for i, profile_id in enumerate(allowed):
            profile = profiles.get(profile_id)
            if quota is None or profile is None or not profile.gpu_type:
                continue
            granted = quota.gpus.get(profile.gpu_type, 0)
            if granted < profile.gpu_count:
                check.add(
                    f"{path}.profiles[{i}]",
                    f"profile {profile_id!r} needs {profile.gpu_count} {profile.gpu_type} GPU(s) but the quota grants"
                    f" {granted}; raise quota.gpus.{profile.gpu_type} or remove the profile",
                )
        if not (display and kind in TENANT_KINDS and quota is not None and culling is not None and oidc is not None):
            out[ident] = None  # declared but invalid: the users section may still name it
        else:
            out[ident] = {
                "id": ident,
                "display_name": display,
                "kind": kind,
                "member_users": set(users),
                "member_groups": set(groups),
                "admins": tuple(admins),
                "profiles": tuple(allowed),
                "quota": quota,
                "datasets": tuple(mounted),
                "culling": culling,
                "oidc": oidc,
            }
    return out


_IDP_GROUP_WHAT = "group name (as the identity provider sends it)"


def _parse_tenant_oidc(
    value: Any, path: str, check: _Checker
) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None] | None:
    """A tenant's ``oidc: {groups: [...], admin_groups: [...]}``: the identity provider's groups
    whose members are members, and tenant admins, of the tenant. A key left out keeps its
    convention (None here): group ``<id>``, and group ``<id>-admins``. None when it has problems."""
    if value is None:
        return (None, None)
    fields = check.mapping(value, path, (), ("groups", "admin_groups"))
    if fields is None:
        return None
    before = len(check.problems)
    out: list[tuple[str, ...] | None] = []
    for key in ("groups", "admin_groups"):
        if key not in fields:
            out.append(None)
            continue
        if fields[key] is None:
            check.add(f"{path}.{key}", "is empty; write [] for no group, or leave the key out for the convention")
            out.append(None)
            continue
        out.append(tuple(check.string_list(fields[key], f"{path}.{key}", IDP_GROUP_PATTERN, _IDP_GROUP_WHAT)))
    members, admins = out
    for i, group in enumerate(admins or ()):
        if group in (members or ()):
            check.add(
                f"{path}.admin_groups[{i}]",
                f"group {group!r} is in groups too; list it once (tenant admins are members anyway)",
            )
    return (members, admins) if len(check.problems) == before else None


def _parse_quota(value: Any, path: str, gpu_types: Mapping[str, GpuType], check: _Checker) -> Quota | None:
    fields = check.mapping(
        value,
        path,
        (),
        ("gpus", "servers", "servers_per_user", "cpu", "memory", "storage", "gpu_hours_per_month"),
    )
    if fields is None:
        return None
    before = len(check.problems)
    gpus: dict[str, int] = {}
    raw_gpus = fields.get("gpus") or {}
    if not isinstance(raw_gpus, dict):
        check.add(f"{path}.gpus", f"must map GPU types to counts (such as H100: 8), not {_kind(raw_gpus)}")
        raw_gpus = {}
    for name, amount in raw_gpus.items():
        if name not in gpu_types:
            check.add(
                f"{path}.gpus.{name}",
                f"GPU type {name!r} is not declared under gpu_types (declared: {', '.join(gpu_types) or 'none'})",
            )
            continue
        counted = check.count(amount, f"{path}.gpus.{name}", "a GPU count")
        if counted is not None:
            gpus[name] = counted

    def optional(key: str, parse: Callable[[Any, str, str], Any], what: str) -> Any:
        return None if fields.get(key) is None else parse(fields[key], f"{path}.{key}", what)

    quota = Quota(
        gpus=MappingProxyType(gpus),
        servers=optional("servers", check.count, "a server count"),
        servers_per_user=optional("servers_per_user", check.count, "a server count"),
        cpu=optional("cpu", check.quantity, "cpu"),
        memory=optional("memory", check.quantity, "memory"),
        storage=optional("storage", check.quantity, "storage"),
        gpu_hours_per_month=optional("gpu_hours_per_month", check.quantity, "GPU-hours"),
    )
    return quota if len(check.problems) == before else None


def _apply_user_memberships(value: Any, tenants: dict[str, dict[str, Any] | None], check: _Checker) -> None:
    """The optional ``users:`` section: ``alice: [snu-ai, nova-labs]`` for people in several tenants."""
    if value is None:
        return
    if not isinstance(value, dict):
        check.add("users", f"must map usernames to lists of tenant ids, not {_kind(value)}")
        return
    for user, tenant_ids in value.items():
        path = f"users.{user}"
        if not isinstance(user, str) or not USER_PATTERN.match(user):
            check.add(path, f"{user!r} is not a valid {_USER_WHAT}")
            continue
        for i, tenant_id in enumerate(check.string_list(tenant_ids, path, ID_PATTERN, "tenant id")):
            if tenant_id not in tenants:
                close = difflib.get_close_matches(tenant_id, list(tenants), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                check.add(f"{path}[{i}]", f"user {user!r} is put in tenant {tenant_id!r}, which does not exist{hint}")
                continue
            fields = tenants[tenant_id]
            if fields is not None:
                fields["member_users"].add(user)


def _freeze_tenant(fields: dict[str, Any]) -> Tenant:
    return Tenant(
        id=fields["id"],
        display_name=fields["display_name"],
        kind=fields["kind"],
        member_users=frozenset(fields["member_users"]),
        member_groups=frozenset(fields["member_groups"]),
        admins=fields["admins"],
        profiles=fields["profiles"],
        quota=fields["quota"],
        datasets=fields["datasets"],
        culling=fields["culling"],
        oidc_groups=fields["oidc"][0],
        oidc_admin_groups=fields["oidc"][1],
    )


_CACHE: dict[tuple[str, str, float, float], PlatformConfig] = {}


def load_platform_cached(tenants_path: str | Path, catalog_path: str | Path) -> PlatformConfig:
    """:func:`load_platform`, read once per process for each version of the two files."""
    t, c = Path(tenants_path).resolve(), Path(catalog_path).resolve()
    key = (str(t), str(c), t.stat().st_mtime if t.exists() else 0.0, c.stat().st_mtime if c.exists() else 0.0)
    if key not in _CACHE:
        _CACHE[key] = load_platform(t, c)
    return _CACHE[key]
