"""Load and validate ``tenants.yaml`` and ``images/catalog.yaml``.

Every problem is collected and reported at once, each with the file, the key
path and what is wrong, so an operator fixes a file in one pass. Nothing is
returned unless the whole file is valid: there is no half-applied config.

The structure of ``tenants.yaml`` is ``tenants.schema.json`` (:mod:`quotas.tenants_schema`),
the same schema the Helm chart validates ``platform:`` with; this module adds the checks a
schema cannot make (references between sections) and builds the model.
"""

from __future__ import annotations

import codecs
import difflib
import re
import unicodedata
from collections.abc import Hashable, Iterable, Mapping
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from yaml._yaml import CParser
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from .model import (
    PLATFORM_GPU_IDLE,
    Culling,
    Dataset,
    GpuIdle,
    GpuType,
    Image,
    PlatformConfig,
    Profile,
    QueuePolicy,
    Quota,
    Sharing,
    Tenant,
    TenantCulling,
)
from .quantity import parse_quantity
from .tenants_schema import MAX_DEPTH, MAX_VALUES, Problem, Verdict, definition_pattern, hours, item_ids, schema
from .tenants_schema import check as check_structure
from .tenants_schema import describe as _kind

ID_PATTERN = definition_pattern("id")
USER_PATTERN = definition_pattern("username")
MAX_ID_LENGTH: int = schema()["definitions"]["id"]["maxLength"]  # tenant ids become namespace names
MAX_FILE_BYTES = 8 * 2**20  # a tenants.yaml of thousands of tenants is a few MB


class ConfigError(ValueError):
    """A config file with one or more problems; ``str()`` lists them all."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        count = len(problems)
        lines = [f"{source}: {count} problem{'s' if count != 1 else ''}; nothing was applied:"]
        lines += [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


MAX_DURATION = timedelta(seconds=schema()["definitions"]["duration"]["anyOf"][0]["maximum"])  # 366 days
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
        return _bounded(value, value)
    text = "".join(value.split()).lower()
    if text.startswith("-"):
        raise DurationError(f"cannot be negative ({value!r}); 0 means never")
    if text.isdigit():
        return _bounded(int(text), value)
    if "." in text:
        raise DurationError(f"must be whole units, such as 90m rather than 1.5h; not {_kind(value)}")
    match = DURATION.match(text)
    if not text or match is None:
        raise DurationError(f"must be {accepted} (units d, h, m, s in that order), not {_kind(value)}")
    return _bounded(sum(int(n) * _UNIT_SECONDS[unit] for unit, n in match.groupdict().items() if n), value)


class PercentError(ValueError):
    """A value that is not a percentage from 0 to 100; ``str()`` says what is accepted."""


def parse_percent(value: Any) -> Decimal:
    """A percentage of ``tenants.yaml``, exactly: ``5``, ``12.5``, ``"5%"`` or ``"12.5%"`` -> Decimal.

    Raises :class:`PercentError` for anything else, and for values under 0 or over 100.
    """
    accepted = "a percentage from 0 to 100, such as 5% or 12.5%"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise PercentError(f"must be {accepted}, not {_kind(value)}")
    text = value.strip().removesuffix("%").strip() if isinstance(value, str) else repr(value)
    try:
        amount = Decimal(text)
    except ArithmeticError:
        raise PercentError(f"must be {accepted}, not {_kind(value)}") from None
    if not amount.is_finite():
        raise PercentError(f"must be {accepted}, not {_kind(value)}")
    if amount < 0:
        raise PercentError(f"cannot be negative ({value!r}); GPU utilization goes from 0 to 100%")
    if amount > 100:
        raise PercentError(f"{value!r} is more than 100%; GPU utilization goes from 0 to 100%")
    return amount


def _bounded(seconds: int, value: Any) -> timedelta:
    if seconds > MAX_DURATION.total_seconds():
        raise DurationError(
            f"{_kind(value)} is longer than {MAX_DURATION.days} days, the longest duration; 0 means never"
        )
    return timedelta(seconds=seconds)


class _BoundedLoader(Composer, CParser, SafeConstructor, Resolver):  # type: ignore[misc]
    """A safe YAML loader whose work is bounded before anything is built: libyaml reads the
    events (fast, with its own limit on flow nesting); this composer counts every value,
    aliases by the size of what they repeat (a "billion laughs" file stops at its first
    :data:`MAX_VALUES`), and refuses nesting deeper than :data:`MAX_DEPTH`, so neither the
    constructor nor the schema ever sees an expanded bomb. Duplicate mapping keys are recorded
    instead of silently keeping the last."""

    def __init__(self, text: str):
        CParser.__init__(self, text)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.duplicates: list[tuple[str, int]] = []
        self.values = 0
        self.path: list[str] = []
        self._sizes: dict[int, int] = {}  # id of an anchored collection -> values it holds

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        label = f"[{index}]" if isinstance(index, int) else f".{index.value}" if isinstance(index, yaml.Node) else ""
        self.path.append(label)
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            anchored = self.anchors.get(event.anchor)
            self._count(self._sizes.get(id(anchored), 1))
            node = Composer.compose_node(self, parent, index)
        else:
            before = self.values
            self._count(1)
            if len(self.path) > MAX_DEPTH and not isinstance(event, yaml.ScalarEvent):
                raise _Refused(self._where(), f"is nested more than {MAX_DEPTH} levels deep")
            node = Composer.compose_node(self, parent, index)
            if not isinstance(node, yaml.ScalarNode):
                self._sizes[id(node)] = self.values - before
        self.path.pop()
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return SafeConstructor.construct_object(self, node, deep)
        except (ValueError, OverflowError) as e:  # a scalar that looks like a number or date but is none
            mark, value = node.start_mark, str(node.value)
            where = f"line {mark.line + 1}, column {mark.column + 1}"
            shown = repr(value) if len(value) <= 60 else f"a value of {len(value):,} characters"
            if node.tag.endswith(":int"):
                raise _Refused(where, f"{shown} is not a whole number a file can hold") from None
            raise _Refused(where, f"{shown} is not a valid {node.tag.rsplit(':', 1)[-1]} ({e})") from None

    def _count(self, values: int) -> None:
        self.values += values
        if self.values > MAX_VALUES:
            raise _Refused(
                self._where(),
                f"the file has more than {MAX_VALUES:,} values (after YAML aliases are expanded); is it the right file?",
            )

    def _where(self) -> str:
        path = "".join(self.path).lstrip(".") or "the top"
        mark = getattr(self.peek_event(), "start_mark", None)
        return f"{path} (line {mark.line + 1}, column {mark.column + 1})" if mark else path


class _Refused(Exception):
    def __init__(self, where: str, message: str):
        super().__init__(message)
        self.problem = Problem(where, message)


def _construct_mapping(loader: _BoundedLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, Hashable):
            continue  # SafeLoader refuses it below, as invalid YAML
        if key in seen:
            loader.duplicates.append((str(key), key_node.start_mark.line + 1))
        seen.add(key)
    return SafeConstructor.construct_mapping(loader, node, deep=deep)


_BoundedLoader.add_constructor(  # type: ignore[type-var]  # the stubs know only yaml's own loaders
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)

# What YAML allows in a file (its "printable" set): no control characters but tab and line
# breaks, no surrogates, no U+FFFE/U+FFFF.
_NOT_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def _line_column(text: str | bytes, index: int) -> str:
    newline = "\n" if isinstance(text, str) else b"\n"
    line = text.count(newline, 0, index) + 1  # type: ignore[arg-type]
    return f"line {line}, column {index - text.rfind(newline, 0, index)}"  # type: ignore[arg-type]


def _decode(raw: bytes) -> str:
    """The text of a config file: UTF-8 (a byte-order mark is allowed), printable as YAML says;
    :class:`_Refused` says where it is not."""
    for mark, encoding in _BYTE_ORDER_MARKS:
        if raw.startswith(mark):
            raise _Refused("", f"is {encoding} text (it starts with a {encoding} byte-order mark); save it as UTF-8")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _Refused(
            _line_column(raw, e.start), f"byte 0x{raw[e.start]:02x} is not UTF-8 text; save the file as UTF-8"
        ) from e
    bad = _NOT_PRINTABLE.search(text)
    if bad:
        char = bad.group()
        name = unicodedata.name(char, "a control character") if ord(char) >= 0x20 else "a control character"
        raise _Refused(
            _line_column(text, bad.start()),
            f"has U+{ord(char):04X} ({name}), which a YAML file cannot hold; remove it (a NUL byte"
            " often means a binary or corrupted file)",
        )
    return text


def _read_yaml(path: Path) -> Any:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(str(path), [Problem("", f"cannot read the file: {e.strerror}")]) from e
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(str(path), [Problem("", f"is larger than {MAX_FILE_BYTES:,} bytes; is it the right file?")])
    try:
        loader = _BoundedLoader(_decode(raw))
    except _Refused as e:
        raise ConfigError(str(path), [e.problem]) from None
    try:
        data = loader.get_single_data()
    except _Refused as e:
        raise ConfigError(str(path), [e.problem]) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        if e.problem and "maximum nesting depth" in e.problem:  # libyaml's own limit, for [[[...
            raise ConfigError(str(path), [Problem(where, f"is nested more than {MAX_DEPTH} levels deep")]) from None
        raise ConfigError(str(path), [Problem("", f"not valid YAML: {e}")]) from e
    except yaml.YAMLError as e:
        raise ConfigError(str(path), [Problem("", f"not valid YAML: {e}")]) from e
    except RecursionError as e:  # not expected: the composer bounds the depth
        raise ConfigError(str(path), [Problem("", "not valid YAML: nested too deeply")]) from e
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ConfigError(
            str(path),
            [Problem(f"line {line}", f"key {key!r} appears twice; keep one") for key, line in loader.duplicates],
        )
    return data


class _Checker:
    """Collects problems while walking plain YAML data (the image catalog)."""

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
    """Validate already-parsed YAML data; see :func:`load_platform`.

    First the structure, against the schema that the Helm chart uses too
    (:mod:`quotas.tenants_schema`); then what a schema cannot say: names that refer to
    something declared elsewhere (profiles, GPU types, images, data sets, tenants), ids given
    twice, and quotas too small for the profiles they allow. Both kinds are reported together.
    """
    verdict = check_structure(data)
    if verdict.fatal:
        raise ConfigError(source, verdict.problems)
    problems = verdict.problems + _cross_references(data, images, verdict)
    if problems:
        raise ConfigError(source, problems)
    return _build(data, images, source)


def _section(data: Mapping[str, Any], key: str, kind: type) -> Any:
    return _as(kind, data.get(key))


def _as(kind: type, value: Any) -> Any:
    """``value`` if it is of ``kind`` (list, dict), else an empty one: the schema reported it."""
    return value if isinstance(value, kind) else kind()


def _identified(items: list[Any], section: str, what: str, problems: list[Problem]) -> dict[str, int]:
    """The id -> index of the items known by their id; an id given again is a problem."""
    first = {ident: i for i, ident in item_ids(items).items()}
    for i, item in enumerate(items):
        ident = item.get("id") if isinstance(item, dict) else None
        if isinstance(ident, str) and first.get(ident, i) != i:
            problems.append(
                Problem(f"{section}[{i}].id", f"duplicate {what} id {ident!r} (first at {section}[{first[ident]}])")
            )
    return first


def _declared(what: str, names: Iterable[str]) -> str:
    return f"is not declared under {what} (declared: {', '.join(names) or 'none'})"


def _cross_references(data: Mapping[str, Any], images: Mapping[str, Image], verdict: Verdict) -> list[Problem]:
    """The problems of names that refer to nothing, of ids given twice, and of ceilings too small
    for a tenant's profiles; parts the schema refused are left alone (their problem is reported)."""
    problems: list[Problem] = []
    sound = verdict.sound

    def add(path: str, message: str) -> None:
        problems.append(Problem(path, message))

    gpu_types = list(_section(data, "gpu_types", dict))
    datasets = list(_section(data, "datasets", dict))
    profile_items = _section(data, "profiles", list)
    profiles = _identified(profile_items, "profiles", "profile", problems)
    for ident, i in profiles.items():
        item, at = profile_items[i], f"profiles[{ident}]"
        image = item.get("image")
        if "image" in item and sound("profiles", i, "image"):
            if image not in images:
                close = difflib.get_close_matches(image, list(images), n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"the catalog has {', '.join(images) or 'no images'}"
                add(f"{at}.image", f"image {image!r} is not in images/catalog.yaml; {hint}")
            elif "gpu" not in item and images[image].needs_gpu:
                add(f"{at}.image", f"image {image!r} needs a GPU, but this profile has none")
        gpu = item.get("gpu")
        if isinstance(gpu, dict) and "type" in gpu and sound("profiles", i, "gpu", "type"):
            if gpu["type"] not in gpu_types:
                add(f"{at}.gpu.type", f"GPU type {gpu['type']!r} {_declared('gpu_types', gpu_types)}")

    def gpus_needed(profile_id: str) -> tuple[str, int] | None:
        i = profiles.get(profile_id)
        gpu = profile_items[i].get("gpu") if i is not None and sound("profiles", i) else None
        return (gpu["type"], int(gpu["count"])) if gpu and gpu["type"] in gpu_types else None

    tenant_items = _section(data, "tenants", list)
    tenants = _identified(tenant_items, "tenants", "tenant", problems)
    for ident, i in tenants.items():
        item, at = tenant_items[i], f"tenants[{ident}]"

        def here(*path: str | int, i: int = i) -> bool:
            return sound("tenants", i, *path)

        allowed = _as(list, item.get("profiles"))
        for j, profile_id in enumerate(allowed):
            if here("profiles", j) and profile_id not in profiles:
                add(f"{at}.profiles[{j}]", f"profile {profile_id!r} {_declared('profiles', profiles)}")
        mounted = _as(list, item.get("datasets"))
        for j, name in enumerate(mounted):
            if here("datasets", j) and name not in datasets:
                add(f"{at}.datasets[{j}]", f"data set {name!r} {_declared('datasets', datasets)}")
        granted = _as(dict, _as(dict, item.get("quota")).get("gpus"))
        for name in granted:
            if here("quota", "gpus", name) and name not in gpu_types:
                add(f"{at}.quota.gpus.{name}", f"GPU type {name!r} {_declared('gpu_types', gpu_types)}")
        if here("quota"):
            for j, profile_id in enumerate(allowed):
                needed = gpus_needed(profile_id) if here("profiles", j) else None
                if needed and granted.get(needed[0], 0) < needed[1]:
                    gpu_type, count = needed
                    add(
                        f"{at}.profiles[{j}]",
                        f"profile {profile_id!r} needs {count} {gpu_type} GPU(s) but the quota grants"
                        f" {granted.get(gpu_type, 0)}; raise quota.gpus.{gpu_type} or remove the profile",
                    )
        sharing = _as(dict, item.get("sharing"))
        for part in ("borrow", "lend"):
            for name, count in _as(dict, sharing.get(part)).items():
                if not here("sharing", part, name):
                    continue
                if name not in gpu_types:
                    add(f"{at}.sharing.{part}.{name}", f"GPU type {name!r} {_declared('gpu_types', gpu_types)}")
                elif part == "lend" and here("quota") and count > granted.get(name, 0):
                    add(
                        f"{at}.sharing.lend.{name}",
                        f"lends {count} {name} GPU(s) but its ceiling is {granted.get(name, 0)}; it can lend at most that",
                    )
        oidc = item.get("oidc")
        if here("oidc") and isinstance(oidc, dict):
            for j, group in enumerate(oidc.get("admin_groups", ())):
                if group in oidc.get("groups", ()):
                    add(
                        f"{at}.oidc.admin_groups[{j}]",
                        f"group {group!r} is in groups too; list it once (tenant admins are members anyway)",
                    )

    people = _section(data, "users", dict) if isinstance(data.get("tenants"), list) else {}
    for user, tenant_ids in people.items():
        for j, tenant_id in enumerate(_as(list, tenant_ids)):
            if sound("users", user, j) and tenant_id not in tenants:
                close = difflib.get_close_matches(tenant_id, list(tenants), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                add(f"users.{user}[{j}]", f"user {user!r} is put in tenant {tenant_id!r}, which does not exist{hint}")
    return problems


def _build(data: Mapping[str, Any], images: Mapping[str, Image], source: str) -> PlatformConfig:
    """The model of a file the schema and the cross-reference checks accepted."""
    also: dict[str, set[str]] = {}  # the users section: tenant -> people listed there
    for user, tenant_ids in data.get("users", {}).items():
        for tenant_id in tenant_ids:
            also.setdefault(tenant_id, set()).add(user)
    return PlatformConfig(
        gpu_types=MappingProxyType({name: GpuType(name, **spec) for name, spec in data["gpu_types"].items()}),
        images=images,
        profiles=MappingProxyType({p["id"]: _profile(p) for p in data["profiles"]}),
        tenants=MappingProxyType({t["id"]: _tenant(t, also.get(t["id"], set())) for t in data["tenants"]}),
        source=source,
        datasets=MappingProxyType({name: Dataset(name, **spec) for name, spec in data.get("datasets", {}).items()}),
        culling=_platform_culling(data.get("culling", {})),
    )


def _platform_culling(culling: Mapping[str, Any]) -> Culling:
    own = _gpu_idle(culling.get("gpu_idle", {}))
    return Culling(
        **{key: parse_duration(value) for key, value in culling.items() if key != "gpu_idle"},
        gpu_idle=GpuIdle(
            threshold=PLATFORM_GPU_IDLE.threshold if own.threshold is None else own.threshold,
            after=PLATFORM_GPU_IDLE.after if own.after is None else own.after,
            warn_before=PLATFORM_GPU_IDLE.warn_before if own.warn_before is None else own.warn_before,
        ),
    )


def _gpu_idle(item: Mapping[str, Any]) -> GpuIdle:
    """The keys of one ``gpu_idle:`` mapping; those left out are None (inherited)."""
    return GpuIdle(
        threshold=parse_percent(item["threshold"]) if "threshold" in item else None,
        after=parse_duration(item["after"]) if "after" in item else None,
        warn_before=parse_duration(item["warn_before"]) if "warn_before" in item else None,
    )


def _profile(item: Mapping[str, Any]) -> Profile:
    gpu = item.get("gpu")
    return Profile(
        id=item["id"],
        display_name=item["display_name"],
        description=item.get("description", ""),
        cpu=parse_quantity(item["cpu"]),
        memory=parse_quantity(item["memory"]),
        image=item["image"],
        gpu_type=gpu["type"] if gpu else None,
        gpu_count=int(gpu["count"]) if gpu else 0,
        idle_timeout=parse_duration(item["idle_timeout"]) if "idle_timeout" in item else None,
        gpu_idle=_gpu_idle(item.get("gpu_idle", {})),
    )


def _tenant(item: Mapping[str, Any], also: set[str]) -> Tenant:
    members = item.get("members", {})
    oidc = item.get("oidc", {})
    sharing = item.get("sharing", {})
    culling: dict[str, Any] = {
        key: value if key == "stop_over_budget" else _gpu_idle(value) if key == "gpu_idle" else parse_duration(value)
        for key, value in item.get("culling", {}).items()
    }
    return Tenant(
        id=item["id"],
        display_name=item["display_name"],
        kind=item["kind"],
        member_users=frozenset(members.get("users", ())) | also,
        member_groups=frozenset(members.get("groups", ())),
        admins=tuple(item.get("admins", ())),
        profiles=tuple(item["profiles"]),
        quota=_quota(item["quota"]),
        datasets=tuple(item.get("datasets", ())),
        culling=TenantCulling(**culling),
        sharing=Sharing(
            cohort=sharing.get("cohort", "all"),
            borrow=MappingProxyType({name: int(n) for name, n in sharing.get("borrow", {}).items()}),
            lend=MappingProxyType({name: int(n) for name, n in sharing.get("lend", {}).items()}),
        ),
        queue=_queue_policy(item.get("queue", {})),
        oidc_groups=tuple(oidc["groups"]) if "groups" in oidc else None,
        oidc_admin_groups=tuple(oidc["admin_groups"]) if "admin_groups" in oidc else None,
    )


def _queue_policy(queue: Mapping[str, Any]) -> QueuePolicy:
    default = QueuePolicy()
    return QueuePolicy(
        max_wait=parse_duration(queue["max_wait"]) if "max_wait" in queue else default.max_wait,
        max_length=int(queue.get("max_length", default.max_length)),
    )


def _quota(quota: Mapping[str, Any]) -> Quota:
    def amount(key: str) -> Decimal | None:
        return parse_quantity(quota[key]) if key in quota else None

    def count(key: str) -> int | None:
        return int(quota[key]) if key in quota else None

    return Quota(
        gpus=MappingProxyType({name: int(n) for name, n in quota.get("gpus", {}).items()}),
        servers=count("servers"),
        servers_per_user=count("servers_per_user"),
        cpu=amount("cpu"),
        memory=amount("memory"),
        storage=amount("storage"),
        gpu_hours_per_month=hours(quota["gpu_hours_per_month"]) if "gpu_hours_per_month" in quota else None,
    )
