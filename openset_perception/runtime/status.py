"""Diagnostic status records, shaped like diagnostic_msgs/DiagnosticStatus but free of ROS types."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class Level(IntEnum):
    """The byte levels of diagnostic_msgs/DiagnosticStatus."""

    OK = 0
    WARN = 1
    ERROR = 2
    STALE = 3


@dataclass(frozen=True)
class StatusRecord:
    name: str
    level: Level
    message: str
    hardware_id: str = ""
    values: dict[str, str] = field(default_factory=dict)


def format_number(value: float | None, digits: int = 3) -> str:
    """Key/value text for a number; ``None`` (nothing measured) becomes ``nan``, which still parses."""
    if value is None:
        return "nan"
    return f"{value:.{digits}f}"
