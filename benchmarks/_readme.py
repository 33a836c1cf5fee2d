"""Recorded results in ``benchmarks/README.md``: each script owns the text between its own markers,
and says the same way what machine it ran on.

A script named ``name`` writes between ``<!-- name:begin -->`` and ``<!-- name:end -->``, and
nothing else of the file changes, so several scripts (and people) can record into one README.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), for the "Recorded on" line of every benchmark."""
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    except OSError:
        found = None
    return found.group(1).strip() if found else platform.processor() or platform.machine()


def cpus() -> str:
    """``"<model>, <n> CPUs (nproc)"``."""
    return f"{cpu_model()}, {os.cpu_count()} CPUs (nproc)"


def markers(name: str) -> tuple[str, str]:
    """The begin and end markers of section ``name``: ``("<!-- name:begin -->", "<!-- name:end -->")``."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def write_section(readme: Path, name: str, section: str) -> None:
    """Replace what is between the markers of section ``name`` in ``readme`` by ``section``.

    If the file lacks the markers (or does not exist), the marked section is appended at its end.
    Raises ValueError if the markers are out of order or repeated, rather than guess which
    text to replace.
    """
    begin, end = markers(name)
    text = readme.read_text() if readme.exists() else ""
    block = f"{begin}\n{section.strip(chr(10))}\n{end}"
    if begin not in text and end not in text:
        readme.write_text(text.rstrip("\n") + ("\n\n" if text else "") + block + "\n")
        return
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ValueError(
            f"{readme}: the markers {begin} and {end} must each appear once, in that order;"
            " fix the file by hand, then record again"
        )
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(head + block + tail)
