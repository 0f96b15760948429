"""glibc keeps freed blocks for reuse after ``keep_freed_memory``: a frame's buffers stop page-faulting.

Each case runs in a subprocess of its own (the setting is process-wide and cannot be undone): a
"frame" allocates, touches and frees tensors of 8, 32 and 128 MB (PyTorch's CPU allocator asks
glibc; numpy would ask for huge pages), six frames in a row, and the minor page faults of the last
two frames are counted: 42,000 pages of 4 KiB, every one a fault when glibc gives the blocks back.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ROUNDS = """
import resource, sys
import torch
from openset_perception.host_memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.empty(megabytes << 20, dtype=torch.uint8) for megabytes in (8, 32, 128)]
    for block in blocks:
        block[::4096] = 1
    del blocks, block
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(max(faults[-2:]))
"""


def _faults_per_round(mode: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", ROUNDS, mode], cwd=REPO, capture_output=True, text=True, check=True
    )
    return int(result.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    assert _faults_per_round("default") > 10_000  # glibc's default: the block goes back to the OS
    assert _faults_per_round("keep") < 100
