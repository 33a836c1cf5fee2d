"""Generate the aidc-hub chart's values.schema.json from its documented values.schema.yaml.

Helm validates values against values.schema.json only; people read and edit the YAML (as in
z2jh's tools/generate-json-schema.py). Before writing, the schema is checked: every object must
say ``additionalProperties: false`` (so a typo'd key fails ``helm install`` with its name), or,
for a mapping keyed by names, constrain its keys with ``propertyNames`` and describe its values
in an ``additionalProperties`` schema; every property must have a ``description``.

A ``$ref`` to a file (``platform: {$ref: ../../quotas/tenants.schema.json}``) is inlined, since
Helm does not follow references to files reliably: the file's schema takes the place of the
reference (the referring node's own keys, such as its description, win), and its
``definitions`` join the chart's as ``<file stem>.<name>`` (``tenants.quantity``). This is how
the structure of tenants.yaml is written once, for the hub's loader and the chart alike.

    python helm/tools/generate_json_schema.py            # write values.schema.json
    python helm/tools/generate_json_schema.py --check    # exit 1 if it is out of date

Standard library and PyYAML only; no network.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "aidc-hub"


def problems(node: Any, path: str = "") -> Iterator[str]:
    """Every object without ``additionalProperties: false`` and every undocumented property."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from problems(item, f"{path}[{i}]")
        return
    if not isinstance(node, dict):
        return
    is_object = node.get("type") == "object"
    closed = node.get("additionalProperties") is False
    named = isinstance(node.get("propertyNames"), dict) and isinstance(node.get("additionalProperties"), dict)
    if is_object and not (closed or named):
        yield f"{path or '/'}: an object without additionalProperties: false (typos would pass silently)"
    if named:
        if not node["additionalProperties"].get("description"):
            yield f"{path}.<*>: no description"
        yield from problems(node["additionalProperties"], f"{path}.<*>")
    for group in ("properties", "patternProperties"):
        for key, sub in (node.get(group) or {}).items():
            where = f"{path}.{key}" if group == "properties" else f"{path}.<{key}>"
            if not isinstance(sub, dict) or not sub.get("description"):
                yield f"{where}: no description"
            yield from problems(sub, where)
    for key in ("items", "definitions", "oneOf", "anyOf", "allOf", "not"):
        if key in node:
            sub = node[key]
            if key == "definitions":
                for name, definition in sub.items():
                    yield from problems(definition, f"#/definitions/{name}")
            else:
                yield from problems(sub, f"{path}.{key}")


def inline_files(schema: dict[str, Any], base: Path) -> dict[str, Any]:
    """``schema`` with each ``$ref`` to a file replaced by that file's schema; see the module's doc."""
    added: dict[str, Any] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            own = {k: walk(v) for k, v in node.items() if k != "$ref"}
            return {**included(base / ref), **own}
        return {k: walk(v) for k, v in node.items()}

    def included(path: Path) -> dict[str, Any]:
        loaded = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
        prefix = path.name.split(".")[0] + "."

        def rename(node: Any) -> Any:
            if isinstance(node, list):
                return [rename(item) for item in node]
            if not isinstance(node, dict):
                return node
            out = {k: rename(v) for k, v in node.items()}
            if isinstance(out.get("$ref"), str) and out["$ref"].startswith("#/definitions/"):
                out["$ref"] = "#/definitions/" + prefix + out["$ref"].removeprefix("#/definitions/")
            return out

        for name, definition in loaded.pop("definitions", {}).items():
            added[prefix + name] = rename(definition)
        # a subschema must not carry $schema, and an $id would change what its "#/..." refs mean
        return {k: rename(v) for k, v in loaded.items() if k not in ("$schema", "$id")}

    out: dict[str, Any] = walk(schema)
    clash = sorted(set(added) & set(out.get("definitions", {})))
    if clash:
        raise SystemExit(f"definitions {', '.join(clash)} are in the chart's schema already")
    out["definitions"] = {**out.get("definitions", {}), **added}
    return out


def render(schema_yaml: Path) -> str:
    schema = inline_files(yaml.safe_load(schema_yaml.read_text()), schema_yaml.parent)
    found = list(problems(schema))
    if found:
        raise SystemExit(f"{schema_yaml} is not documented enough ({len(found)} problems):\n  " + "\n  ".join(found))
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schema", type=Path, default=CHART / "values.schema.yaml")
    parser.add_argument("--output", type=Path, default=CHART / "values.schema.json")
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if the output is out of date")
    args = parser.parse_args(argv)
    text = render(args.schema)
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(
                f"{args.output} is out of date with {args.schema}: run python helm/tools/generate_json_schema.py",
                file=sys.stderr,
            )
            return 1
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
