"""The structure of ``tenants.yaml``, written once in ``tenants.schema.json``, and its verdict
on a file in people's words.

The same JSON Schema is the ``platform`` section of the Helm chart's ``values.schema.json``
(``helm/tools/generate_json_schema.py`` inlines it), so ``helm install`` and the hub accept and
refuse the same files. :mod:`quotas.loader` runs :func:`check` first and then only the checks a
schema cannot express: references between sections (a tenant's profiles, a profile's GPU type
and image), duplicate ids, and ceilings that fit the profiles.

Each jsonschema error becomes a :class:`Problem` with the key path an operator reads in the
file (``tenants[snu-ai].quota.gpus.H100``: list items by their id where it is valid and first,
by index otherwise) and a message that says what was found: ``unknown key; did you mean
'admins'?``, ``a GPU count must be a whole number; 1.5 is fractional``. The schema names values
with ``title`` and may set a message with ``errorMessage`` (see its ``$comment``).

Hostile input is bounded before the schema sees it: at most :data:`MAX_VALUES` values (after
YAML aliases are expanded, so a "billion laughs" file stops early), :data:`MAX_DEPTH` levels, and
:data:`MAX_PROBLEMS` problems reported.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from .quantity import QuantityError, parse_quantity

SCHEMA_FILE = Path(__file__).with_name("tenants.schema.json")
MAX_VALUES = 100_000  # hundreds of tenants listing thousands of users; a file of aliases, billions
MAX_DEPTH = 32  # tenants.yaml nests 6 levels deep
MAX_PROBLEMS = 200

PathTuple = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def describe(value: Any) -> str:
    """The kind of a value found in a file, for messages: ``the string 'x'``, ``a list``, ``int 5``."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, str):
        return f"the string {_short(value)}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {_short(value)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}… ({len(text)} characters)"


@functools.cache
def schema() -> Mapping[str, Any]:
    """The JSON Schema of tenants.yaml, as parsed from :data:`SCHEMA_FILE`."""
    loaded: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())
    return loaded


def definition_pattern(name: str) -> re.Pattern[str]:
    """The ``pattern`` of one of the schema's definitions, compiled as the schema reads it."""
    return _regex(schema()["definitions"][name]["pattern"])


@functools.cache
def _regex(pattern: str) -> re.Pattern[str]:
    # JSON Schema patterns are ECMA 262 (Helm: Go's RE2), where "$" is the end of the text; in
    # Python it also matches before a final newline, which would let "snu-ai\n" be a tenant id.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _pattern(validator: Any, pattern: str, instance: Any, _schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _regex(pattern).search(instance):
        yield ValidationError(f"{_short(instance)} does not match {pattern!r}")


def _same_key(item: Any) -> Any:
    """A hashable stand-in, equal where JSON Schema calls two values equal (1 == 1.0, True != 1)."""
    if isinstance(item, bool):
        return ("bool", item)
    if isinstance(item, (str, int, float)) or item is None:
        return ("value", item)
    return ("json", json.dumps(item, sort_keys=True, default=repr))


def _unique_items(validator: Any, unique: bool, instance: Any, _schema: Any) -> Iterator[ValidationError]:
    # jsonschema's own check compares unsortable items pairwise; this one is linear, and points
    # at each repeated item rather than at the whole list.
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Any] = set()
    for i, item in enumerate(instance):
        key = _same_key(item)
        if key in seen:
            yield ValidationError("is listed twice", path=[i], instance=item)
        seen.add(key)


_MAXIMUM = jsonschema.Draft7Validator.VALIDATORS["maximum"]


_NUMBER = re.compile("^[0-9]+([.][0-9]+)?$")
_DURATION_PARTS = re.compile("([0-9]+)([dhms]?)")
_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1, "": 1}


def _maximum(validator: Any, maximum: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    # Helm compares numbers only; the hub also compares what is written as a string, exactly:
    # a duration ("3650d", where the node describes strings) or else a number or quantity
    # ("12.5", "2000", "2Ki"), so cpu: "1e30" is refused with the same words as cpu: 1000000.
    if isinstance(instance, str):
        if schema.get("type") == "string" and not _NUMBER.match(instance):
            amount = Decimal(sum(int(n) * _SECONDS[unit] for n, unit in _DURATION_PARTS.findall(instance)))
        else:
            try:
                amount = parse_quantity(instance)
            except QuantityError:
                return  # the pattern says what is wrong with it
        if amount > maximum:
            yield ValidationError(f"{_short(instance)} is more than {maximum}")
        return
    yield from _MAXIMUM(validator, maximum, instance, schema)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft7Validator, validators={"pattern": _pattern, "uniqueItems": _unique_items, "maximum": _maximum}
)


@functools.cache
def _validator() -> Any:
    return _Validator(schema())


# ---------------------------------------------------------------------------------------------
# the verdict


@dataclass(frozen=True)
class Verdict:
    """What the schema found: the problems, and which parts of the data are sound."""

    problems: list[Problem]
    fatal: bool  # the data cannot be read further (not a mapping, too large, keys that are not names)
    at: frozenset[PathTuple]  # where the problems are, as keys and list indexes
    _around: frozenset[PathTuple]  # and every path that holds one of them

    def sound(self, *path: str | int) -> bool:
        """Whether the value at ``path`` (keys and list indexes) is as the schema says: no problem
        at it, inside it, or in a value that holds it."""
        return path not in self._around and not any(path[:n] in self.at for n in range(len(path)))


def check(data: Any) -> Verdict:
    """Validate plain YAML data against the schema; every problem, in people's words."""
    found: dict[PathTuple, str] = {}
    fatal = _check_bounds(data, found)
    stopped = False
    if not fatal:
        errors = _validator().iter_errors(data)
        for error in itertools.islice(errors, MAX_PROBLEMS):
            for path, message in _translate(error):
                found.setdefault(path, message)
        stopped = next(errors, None) is not None
        fatal = not isinstance(data, dict)
    # a problem inside a value that has one already (a key that is not a name, say) adds nothing
    kept = {p: m for p, m in found.items() if not any(p[:n] in found for n in range(len(p)))}
    labels = _Labels(None if fatal else data)
    problems = [Problem(labels.path(p), m) for p, m in kept.items()]
    if stopped:
        problems.append(Problem("", f"(stopped after {MAX_PROBLEMS} problems; fix these first)"))
    return Verdict(problems, fatal, frozenset(kept), frozenset(p[:n] for p in kept for n in range(len(p) + 1)))


def _check_bounds(data: Any, found: dict[PathTuple, str]) -> bool:
    """Size, depth, keys that are not strings, and numbers that are not numbers; True if fatal."""
    stack: list[tuple[PathTuple, Any]] = [((), data)]
    count = 1  # values seen, counted before they are walked: the stack never holds more
    fatal = False
    while stack:
        path, value = stack.pop()
        if isinstance(value, (dict, list)):
            count += len(value)
            if count > MAX_VALUES:
                found.clear()
                found[()] = (
                    f"has more than {MAX_VALUES:,} values (after YAML aliases are expanded); is it the right file?"
                )
                return True
            if len(path) >= MAX_DEPTH:
                found[path] = f"is nested more than {MAX_DEPTH} levels deep"
                return True
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    found[(*path, str(key))] = f"the key {describe(key)} must be a name; quote it"
                    fatal = True
                    continue
                stack.append(((*path, key), item))
        elif isinstance(value, list):
            stack.extend(((*path, i), item) for i, item in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value) and len(found) < MAX_PROBLEMS:
            found[path] = f"{value!r} is not a number a file can hold; write a number"
    return fatal


class _Labels:
    """Key paths as people read them: ``tenants[snu-ai].quota``, ``profiles[3].id``."""

    def __init__(self, data: Any):
        self.data = data
        self._ids: dict[int, dict[int, str]] = {}

    def path(self, path: PathTuple) -> str:
        out = ""
        node = self.data
        for part in path:
            if isinstance(part, int):
                label: str | int = part
                if isinstance(node, list):
                    if id(node) not in self._ids:
                        self._ids[id(node)] = item_ids(node)
                    label = self._ids[id(node)].get(part, part)
                out += f"[{label}]"
            else:
                out = f"{out}.{part}" if out else part
            try:
                node = node[part]
            except (LookupError, TypeError):
                node = None
        return out


def item_ids(items: list[Any]) -> dict[int, str]:
    """The index -> id of the items of a list that are known by their id: a valid id, first
    of its value (a repeated id is reported at its index)."""
    valid = definition_pattern("id")
    longest = schema()["definitions"]["id"]["maxLength"]
    out: dict[int, str] = {}
    seen: set[str] = set()
    for i, item in enumerate(items):
        ident = item.get("id") if isinstance(item, dict) else None
        if isinstance(ident, str) and valid.search(ident) and len(ident) <= longest and ident not in seen:
            out[i] = ident
            seen.add(ident)
    return out


# ---------------------------------------------------------------------------------------------
# one jsonschema error -> (path, message)


@dataclass
class _Place:
    """The schema nodes that describe the failing value, and where it sits."""

    frames: list[Mapping[str, Any]]  # outermost first: the property's node, then what it refers to
    refs: list[str]  # definitions reached on the way, by name
    parent: Mapping[str, Any] | None  # the object schema whose property the value is
    key: str | None  # that property's name
    kind: str  # "root", "property", "item", "map value" or "key"

    def first(self, name: str) -> Any:
        return next((f[name] for f in self.frames if name in f), None)

    def title(self) -> str | None:
        title: str | None = self.first("title")
        return title

    def custom(self, keyword: str) -> str | None:
        return next((f["errorMessage"][keyword] for f in self.frames if keyword in f.get("errorMessage", {})), None)


def _place(schema_path: list[Any], keyword: str) -> _Place:
    root = schema()
    node: Mapping[str, Any] = root
    place = _Place([root], [], None, None, "root")

    def follow(until: str) -> None:
        nonlocal node
        while "$ref" in node and until not in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            place.refs.append(name)
            node = root["definitions"][name]
            place.frames.append(node)

    steps = schema_path[:-1]  # the last is the failing keyword
    i = 0
    while i < len(steps):
        step = steps[i]
        follow(str(step))
        if step == "properties":
            place.parent, place.key = node, steps[i + 1]
            node = node["properties"][steps[i + 1]]
            place.frames, place.refs, place.kind = [node], [], "property"
            i += 2
        elif step in ("items", "additionalProperties", "propertyNames"):
            node = node[step]
            kind = {"items": "item", "additionalProperties": "map value", "propertyNames": "key"}[step]
            place.frames, place.refs, place.kind = [node], [], kind
            i += 1
        elif step in ("anyOf", "allOf", "oneOf"):
            node = node[step][steps[i + 1]]
            place.frames.append(node)
            i += 2
        elif step == "not":
            node = node["not"]
            place.frames.append(node)
            i += 1
        else:  # a keyword this schema does not use: describe the value by what is known
            break
    follow(keyword)
    return place


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1].lower() in "aeio" else f"a {noun}"


def _expected(place: _Place) -> str:
    """What the value must be, as a noun phrase: ``a mapping with keys id, cpu``, ``a list of usernames``."""
    node = next((f for f in place.frames if "type" in f or "anyOf" in f or "enum" in f), {})
    if node.get("type") == "object" and "properties" in node:
        return f"a mapping with keys {', '.join(node['properties'])}"
    title = place.title()
    if title:
        return _a(title)
    return {
        "object": "a mapping",
        "array": "a list",
        "string": "a string",
        "integer": "a whole number",
        "number": "a number",
        "boolean": "true or false",
    }.get(str(node.get("type")), "a value")


def _fill(template: str, value: Any) -> str:
    return template.replace("{value}", _short(value)).replace("{kind}", describe(value))


def _translate(error: ValidationError) -> list[tuple[PathTuple, str]]:
    keyword = str(error.validator)
    value = error.instance
    path: PathTuple = tuple(error.absolute_path)
    place = _place(list(error.absolute_schema_path), keyword)
    if place.kind == "key":
        path = (*path, str(value))

    if keyword == "required":
        return [((*path, key), "is required") for key in error.validator_value if key not in value]
    if keyword == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        out = []
        for key in value:
            if key in known:
                continue
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
            out.append(((*path, key), f"unknown key; {hint}"))
        return out
    if value is None and keyword in ("type", "anyOf", "enum"):
        return [(path, _empty(place))]
    for name, message in (("quantity", _quantity), ("duration", _duration), ("hours", _hours), ("percent", _percent)):
        if name in place.refs and keyword in ("anyOf", "type", "minimum", "pattern", "minLength"):
            return [(path, message(value, str(path[-1]) if path else ""))]
    custom = place.custom(keyword)
    if custom and not (keyword == "minimum" and value < 0):  # "cannot be negative" says more
        return [(path, _fill(custom, value))]
    return [(path, _message(keyword, error, place))]


def _empty(place: _Place) -> str:
    custom = place.custom("null")
    if custom:
        return str(custom)
    title = place.title()
    expected = _a(title) if title else _expected(place)
    if place.kind == "property":
        if place.parent is not None and place.key in place.parent.get("required", ()):
            return "is required"
        return f"is empty; write {expected}, or leave the key out"
    if place.kind == "item":
        return f"is empty; write {expected} or remove the line"
    if place.kind == "map value":
        return f"is empty; write {expected}, or remove the key"
    return f"is empty; it must be {_expected(place)}"


def _message(keyword: str, error: ValidationError, place: _Place) -> str:
    value = error.instance
    title = place.title()
    subject = f"{_a(title)} " if title else ""
    if keyword == "type":
        wanted = error.validator_value
        if wanted == "integer":
            if isinstance(value, str):
                return f"{subject}must be a whole number written without quotes, not the string {_short(value)}"
            if isinstance(value, float) and not isinstance(value, bool) and math.isfinite(value):
                return f"{subject}must be a whole number; {value!r} is fractional"
            return f"{subject}must be a whole number, not {describe(value)}"
        if wanted == "boolean":
            return f"must be true or false, not {describe(value)}"
        return f"must be {_expected(place)}, not {describe(value)}"
    if keyword == "minimum":
        if value < 0:
            return f"{subject}cannot be negative ({value!r})"
        return f"{subject}must be at least {error.validator_value}"
    if keyword == "maximum":
        return f"{subject}must be at most {error.validator_value:,} (the largest sensible value), not {_short(value)}"
    if keyword == "pattern":
        return f"{_short(value)} is not a valid {title or 'value'}"
    if keyword == "maxLength":
        return f"{_short(value)} is longer than {error.validator_value} characters"
    if keyword == "enum":
        found = _short(value) if isinstance(value, (str, int, float)) else describe(value)
        return f"{found} is not {_a(title or 'allowed value')}; use one of {', '.join(map(str, error.validator_value))}"
    if keyword == "uniqueItems":
        items = place.frames[0].get("items", {})
        noun = items.get("title") or schema()["definitions"].get(items.get("$ref", "").rsplit("/", 1)[-1], {}).get(
            "title", "item"
        )
        found = _short(value) if isinstance(value, (str, int, float)) else describe(value)
        return f"{noun} {found} is listed twice"
    return f"{describe(value)} is not allowed here"


_QUANTITY_EXAMPLES = '(examples: "8Gi", "2", "500m")'


def _quantity(value: Any, key: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return f"must be a quantity {_QUANTITY_EXAMPLES}, not {describe(value)}"
    if isinstance(value, (int, float)) and value < 0:
        return f"{key} cannot be negative ({value!r})"
    if isinstance(value, float):
        return f'{key} {value!r}: write it as a string such as "{value}" so it is read exactly'
    if len(str(value)) > 64:  # parse_quantity's message is for typos, not for pages of text
        return f"{_short(value)} is not a quantity {_QUANTITY_EXAMPLES}"
    try:
        amount = parse_quantity(value)
    except QuantityError as e:
        return str(e)
    if amount < 0:
        return f"{key} cannot be negative ({value!r})"
    return f"{_short(value)} is not a quantity as Kubernetes writes it {_QUANTITY_EXAMPLES}, without spaces"


def _duration(value: Any, key: str) -> str:
    from .loader import DurationError, parse_duration  # the loader imports this module

    if isinstance(value, str) and len(value) > 64:  # parse_duration's message is for typos
        return f"must be a duration such as 90s, 30m, 1h or 1h30m, or whole seconds, not {describe(value)}"
    try:
        parse_duration(value)
    except DurationError as e:
        return str(e)
    return f"must be whole seconds or a duration in lower case without spaces, such as 1h30m; not {describe(value)}"


def _percent(value: Any, key: str) -> str:
    from .loader import PercentError, parse_percent  # the loader imports this module

    if isinstance(value, str) and len(value) > 64:
        return f"must be a percentage from 0 to 100, such as 5% or 12.5%, not {describe(value)}"
    try:
        parse_percent(value)
    except PercentError as e:
        return str(e)
    return f"must be a percentage written as 5% or 12.5% (no space), or a number; not {describe(value)}"


def _hours(value: Any, key: str) -> str:
    most = schema()["definitions"]["hours"]["anyOf"][0]["maximum"]
    accepted = f"a number of hours such as 2000 or 12.5 (no unit), at most {most:,}"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        return f"GPU-hours cannot be negative ({value!r})"
    if isinstance(value, str):
        try:
            if Decimal(value) < 0:
                return f"GPU-hours cannot be negative ({_short(value)})"
        except (InvalidOperation, ValueError):
            pass
    return f"must be {accepted}, not {describe(value)}"


def hours(value: int | float | str) -> Decimal:
    """A number of hours the schema accepted, exactly: a float by its shortest repr (12.5, not
    12.4999...)."""
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
