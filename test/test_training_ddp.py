"""DistributedDataParallel training, as ``torchrun --nproc_per_node 2`` runs it, on the CPU with gloo.

Two processes train a tiny model for a few steps on generated scenes; both must end with the same
weights (gradients are all-reduced, BatchNorm statistics taken from rank 0), and a second launch
with ``resume`` must carry on from the state the first one wrote.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from openset_perception.training.config import load_train_config
from openset_perception.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
WORLD_SIZE = 2


def _config(out: Path, epochs: int):
    return load_train_config(
        REPO / "config/train/streets_smoke.yaml",
        {
            "output_dir": str(out),
            "name": "ddp",
            "epochs": epochs,
            "steps_per_epoch": 2,
            "model.backbone_kwargs": {"width": 0.125},
            "data.batch_size": 2,
            "data.train.num_frames": 8,
            "data.train.height": 32,
            "data.train.width": 64,
            "data.crop_size": [32, 64],
            "data.val": None,
            "device": "cpu",
        },
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _train(rank: int, out: Path, epochs: int, resume: bool, port: int) -> None:
    """One torchrun worker: the environment torchrun sets, then the trainer as the CLI runs it."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        GLOO_SOCKET_IFNAME="lo",
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    try:
        trainer = Trainer(_config(out, epochs))
        assert trainer.world_size == WORLD_SIZE and isinstance(
            trainer.net, torch.nn.parallel.DistributedDataParallel
        )
        result = trainer.fit(resume=resume)
        state = {k: v.detach().contiguous() for k, v in trainer.model.state_dict().items()}
        save_file(state, str(out / f"rank{rank}.safetensors"), metadata={"epochs": str(result.epochs_run)})
    finally:
        dist.destroy_process_group()


def _launch(out: Path, epochs: int, resume: bool) -> list[dict[str, torch.Tensor]]:
    mp.spawn(_train, args=(out, epochs, resume, _free_port()), nprocs=WORLD_SIZE, join=True)
    return [load_file(out / f"rank{rank}.safetensors") for rank in range(WORLD_SIZE)]


def _assert_identical(states: list[dict[str, torch.Tensor]]) -> None:
    first, second = states
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_two_process_ddp_training_agrees_across_ranks_and_resumes(tmp_path: Path) -> None:
    first = _launch(tmp_path, epochs=1, resume=False)
    _assert_identical(first)
    run_dir = tmp_path / "ddp"
    saved = load_file(run_dir / "model.safetensors")
    _assert_identical([first[0], saved])
    initial = Trainer(_config(tmp_path / "single", epochs=1)).model.state_dict()
    assert any(not torch.equal(initial[name], saved[name]) for name in saved)  # it trained

    resumed = _launch(tmp_path, epochs=2, resume=True)
    _assert_identical(resumed)
    state = torch.load(run_dir / "train_state.pt", weights_only=True)
    assert state["epoch"] == 1 and len(json.loads(state["history"])) == 2
    assert any(not torch.equal(first[0][name], resumed[0][name]) for name in saved)
