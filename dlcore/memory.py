"""How much memory there is, and a refusal that says so before a large array is allocated.

A data file is refused only if loading it would not fit: ``require(...)`` compares what a
reader computed from the file's headers with ``available_memory()``. Tests replace
``available_memory`` (``monkeypatch.setattr(memory, "available_memory", lambda: 10**6)``),
so every caller looks it up through this module, never by importing the function itself.
"""

from __future__ import annotations

import os
from pathlib import Path


def available_memory() -> int | None:
    """Bytes this process can still allocate without swapping, or None if unknown.

    The smaller of the kernel's MemAvailable (/proc/meminfo) and the room left under this
    process's cgroup limit (a container's memory.max), falling back to the free physical pages.
    """
    known = [value for value in (_mem_available(), _cgroup_room()) if value is not None]
    return min(known) if known else _free_pages()


def require(name: str, needed: int, what: str, advice: str = "") -> None:
    """Raise ValueError if ``needed`` bytes will not fit in the available memory.

    name: the file's name; what: what the bytes are for, e.g. "60,000 × 784 values as float64
    plus their standardised float32 copy"; advice: a remedy to offer first, e.g. "train in
    float32".
    """
    available = available_memory()
    if available is not None and needed > available:
        remedies = ", ".join(filter(None, ["close other programs", advice]))
        raise ValueError(
            f"{name}: loading it needs about {format_size(needed)} of memory ({what}), but only "
            f"{format_size(available)} is available; {remedies}, or use a smaller file"
        )


def format_size(n_bytes: int) -> str:
    for unit, scale in (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} bytes"


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the kernel writes kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """memory.max − memory.current of this process's cgroup (v2, or v1's names), if limited."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:  # "max" or a huge v1 number: no limit
            return max(0, int(limit) - usage)
    return None


def _free_pages() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
