"""Where the embedded default checkpoint lives: the source tree's ``models/`` or the installed share dir."""

from __future__ import annotations

import sys
from pathlib import Path

EMBEDDED_MODEL_NAME = "streets_swiftnet_small.safetensors"


def embedded_model_path() -> Path:
    """The shipped model; FileNotFoundError naming every place looked at when it is missing."""
    candidates = [
        Path(__file__).resolve().parents[1] / "models" / EMBEDDED_MODEL_NAME,
        Path(sys.prefix) / "share" / "openset_perception" / "models" / EMBEDDED_MODEL_NAME,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"embedded model not found (looked at {', '.join(map(str, candidates))})")
