"""Generate the aidc-hub chart's values.schema.json from its documented values.schema.yaml.

Helm validates values against values.schema.json only; people read and edit the YAML (as in
z2jh's tools/generate-json-schema.py). Before writing, the schema is checked: every object must
say ``additionalProperties: false`` (so a typo'd key fails ``helm install`` with its name) and
every property must have a ``description``.

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
    if is_object and node.get("additionalProperties") is not False:
        yield f"{path or '/'}: an object without additionalProperties: false (typos would pass silently)"
    for group in ("properties", "patternProperties"):
        for key, sub in (node.get(group) or {}).items():
            where = f"{path}.{key}" if group == "properties" else f"{path}.<{key}>"
            if not isinstance(sub, dict) or not sub.get("description"):
                yield f"{where}: no description"
            yield from problems(sub, where)
    for key in ("items", "definitions", "oneOf", "anyOf", "allOf"):
        if key in node:
            sub = node[key]
            if key == "definitions":
                for name, definition in sub.items():
                    yield from problems(definition, f"#/definitions/{name}")
            else:
                yield from problems(sub, f"{path}.{key}")


def render(schema_yaml: Path) -> str:
    schema = yaml.safe_load(schema_yaml.read_text())
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
