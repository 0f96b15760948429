"""Reading dataset image files: colour frames and single-channel label / disparity / depth PNGs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def read_rgb(path: Path) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB (OpenCV decodes to BGR)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"missing or unreadable image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_png(path: Path, dtype: type[np.generic] = np.uint8) -> np.ndarray:
    """A single-channel PNG (labels: uint8, disparity or depth: uint16), exactly as stored."""
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise FileNotFoundError(f"missing or unreadable annotation {path}")
    if array.ndim != 2 or array.dtype != dtype:
        raise ValueError(
            f"{path}: expected a single-channel {np.dtype(dtype)} PNG, got shape {array.shape} {array.dtype}"
        )
    return array
