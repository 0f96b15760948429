"""The README's shell commands work as written: each is run, top to bottom, in a fresh folder.

Every command in a ```bash block of README.md is either run (``openset-perception ...`` through the
real entry point, at small sizes: the arguments in SMALLER are appended, and argparse lets the last
value win) or skipped for a stated reason (SKIPPED). Each skip rule must match a README command, so
the list cannot go stale, and a command that is neither run nor skipped fails the test. The commands
run in order in one temporary folder that holds only links to the repository's ``config/`` and
``models/``: a command that needs the output of an earlier one finds it only if the README makes it
first.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from openset_perception.cli.main import main

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

# Command prefix -> why this test does not run it. Each must match at least one README command.
SKIPPED: dict[str, str] = {
    "make demo": "builds .venv and runs the demo: CI runs `make test` in that environment; the demo's "
    "code is run below as `openset-perception demo`-equivalent tests (test/test_demo.py)",
    "make test": "the test suite itself",
    "make install": "CI's own install and test command (.ci/run)",
    "git clone": "needs the network",
    "python3 -m venv .venv": "installs a CPU-only torch from PyTorch's own index (the network)",
    "python3.11 -m venv": "the pip recipe for a venv of its own: checked by hand on a fresh venv (issue 14); "
    "the node it starts is tested from an installed package in test/ros/test_colcon_build.py",
    "cd ~ && segmenter_node": "starts the ROS node, which test/ros runs as a process over DDS",
    "source ": "sources a ROS 2 installation, which this test does not assume",
    "ros2 ": "the ros2 CLI has no pip wheel; the node and eval-live are tested over DDS in test/ros",
    "colcon ": "the colcon build is tested in test/ros (ament layout)",
    "mkdir -p ~/ros_ws": "part of the colcon recipe",
    "cd ~/ros_ws": "part of the colcon recipe",
    "pip install": "installs packages (needs the registries); CI's install covers it",
    "python3 -m pytest": "the test suite itself",
    "export ": "sets the shell environment of the ROS commands that follow",
}
# Arguments that reference a user's own data, which a fresh clone does not have: datasets under /data,
# the authors' checkpoints a user downloads (model_best.pt), what is imported from them, and a user's
# own drive recording; and a config whose datasets are under /data (Cityscapes, ADE20k).
USER_DATA = (
    "/data/",
    "model_best.pt",
    "swiftnet_rn18_cityscapes",
    "bags/drive",
    "cityscapes_swiftnet_densehybrid.yaml",
)
# Appended to the subcommand's arguments so that each runs in seconds.
SMALLER: dict[str, list[str]] = {
    "make-streets": ["--train", "2", "--val", "2", "--test", "2", "--height", "64", "--width", "128"],
    "make-bag": ["--frames", "3", "--height", "64", "--width", "128"],
    "train": [
        word
        for pair in (
            "epochs=1", "steps_per_epoch=1", "data.batch_size=1", "data.crop_size=[64,128]",
            "data.train.num_frames=2", "data.train.height=64", "data.train.width=128",
            "data.val.num_frames=2", "data.val.height=64", "data.val.width=128",
        )
        for word in ("--set", pair)
    ],
    "evaluate": ["--max-frames", "2", "--no-progress"],
    "calibrate": ["--max-frames", "2", "--no-progress"],
    "eval-bag": ["--no-progress"],
    "benchmark": ["--size", "64x128", "--iterations", "1", "--warmup", "0"],
    "demo": ["--frames", "2", "--height", "64", "--width", "128"],
}
# Subcommands that talk to a running ROS graph: covered by test/ros.
ROS_SUBCOMMANDS = {"eval-live": "subscribes to a running node; tested over DDS in test/ros"}


def shell_commands(markdown: str) -> list[str]:
    """The commands of every ```bash block: continuation lines joined, comments and blank lines dropped."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", markdown, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(" ".join(words).rstrip(" &"))
    return commands


def plan(commands: list[str]) -> list[tuple[str, str | None]]:
    """(command, reason it is skipped or None to run it); a command that fits no rule is an error."""
    planned = []
    for command in commands:
        words = shlex.split(command)
        reason = next((why for prefix, why in SKIPPED.items() if command.startswith(prefix)), None)
        if reason is None and words[0] == "openset-perception":
            if len(words) > 1 and words[1] in ROS_SUBCOMMANDS:
                reason = ROS_SUBCOMMANDS[words[1]]
            elif any(marker in word for word in words for marker in USER_DATA):
                reason = "reads a user's own dataset"
        if reason is None and words[0] != "openset-perception":
            raise AssertionError(f"README command neither run nor skipped by test_readme.py: {command}")
        planned.append((command, reason))
    return planned


def run_readme(markdown: str, folder: Path) -> list[str]:
    """Run the README's commands in ``folder``; returns the commands run. Fails on the first broken one."""
    for name in ("config", "models"):
        (folder / name).symlink_to(REPO / name)
    ran = []
    previous = Path.cwd()
    os.chdir(folder)
    try:
        for command, reason in plan(shell_commands(markdown)):
            if reason is not None:
                continue
            argv = shlex.split(command)[1:]
            status = main([*argv, *SMALLER.get(argv[0], [])])
            if status != 0:
                raise AssertionError(f"README command failed with exit status {status}: {command}")
            ran.append(command)
    finally:
        os.chdir(previous)
    return ran


def test_every_skip_rule_matches_a_readme_command() -> None:
    commands = shell_commands(README.read_text())
    unused = [prefix for prefix in SKIPPED if not any(c.startswith(prefix) for c in commands)]
    assert not unused, f"skip rules that match no README command (remove them): {unused}"


def test_every_user_data_marker_matches_a_readme_command() -> None:
    commands = shell_commands(README.read_text())
    unused = [marker for marker in USER_DATA if not any(marker in c for c in commands)]
    assert not unused, f"user-data markers that match no README command (remove them): {unused}"


def test_shell_commands_join_continuations_and_drop_comments() -> None:
    markdown = "text\n```bash\nopenset-perception evaluate --a 1 \\\n    --b 2   # note\n# a comment\n```\n"
    assert shell_commands(markdown) == ["openset-perception evaluate --a 1 --b 2"]


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path: Path) -> None:
    ran = run_readme(README.read_text(), tmp_path)
    assert any(command.startswith("openset-perception evaluate") for command in ran)
    assert any(command.startswith("openset-perception train") for command in ran)


@pytest.mark.slow
def test_a_broken_readme_command_fails(tmp_path: Path) -> None:
    # The data a later command needs is no longer made first: the README test must notice.
    readme = README.read_text()
    broken = readme.replace("openset-perception make-streets", "# openset-perception make-streets")
    assert broken != readme
    with pytest.raises(AssertionError, match="README command failed"):
        run_readme(broken, tmp_path)
