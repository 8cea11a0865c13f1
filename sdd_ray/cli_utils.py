"""Small helpers shared by the stage commands."""

from __future__ import annotations

from rich.console import Console

console = Console(stderr=True)


def parse_list(value: str) -> list[str]:
    """`"a, b,c"` -> `["a", "b", "c"]`."""
    return [item.strip() for item in value.split(",") if item.strip()]
