"""Training: config validation, exact resume after a kill, and a CPU smoke run that must learn."""

import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from openset_perception.config import ConfigError
from openset_perception.training.config import TrainConfig, load_train_config
from openset_perception.training.trainer import Trainer, TrainingInterrupted

REPO = Path(__file__).resolve().parents[1]


def _tiny_config(tmp_path: Path, **changes) -> TrainConfig:
    config = load_train_config(
        REPO / "config/train/streets_smoke.yaml",
        {
            "output_dir": str(tmp_path),
            "epochs": 2,
            "steps_per_epoch": 3,
            "data.batch_size": 2,
            "data.train.num_frames": 8,
            "data.train.height": 48,
            "data.train.width": 96,
            "data.crop_size": [48, 96],
            "data.val": None,
        },
    )
    return config.model_copy(update=changes)


class Killed(Exception):
    pass


def test_resume_after_kill_gives_identical_weights(tmp_path: Path) -> None:
    straight = Trainer(_tiny_config(tmp_path / "a", name="straight")).fit()

    def kill_in_second_epoch(epoch: int, step: int, parts: dict) -> None:
        if epoch == 1 and step == 1:
            raise Killed

    config = _tiny_config(tmp_path / "b", name="resumed")
    with pytest.raises(Killed):
        Trainer(config).fit(on_step=kill_in_second_epoch)
    assert (config.run_dir / "train_state.pt").is_file()
    resumed = Trainer(config).fit(resume=True)
    assert resumed.epochs_run == 2

    a, b = load_file(straight.checkpoint), load_file(resumed.checkpoint)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text((REPO / "config/train/streets_smoke.yaml").read_text() + "\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate: unknown key"):
        load_train_config(path)


def test_wrong_type_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"optimizer\.lr_head"):
        load_train_config(REPO / "config/train/streets_smoke.yaml", {"optimizer.lr_head": "fast"})


def test_missing_dataset_root_is_named(tmp_path: Path) -> None:
    config = _tiny_config(tmp_path)
    config.data.train.name = "folder"
    config.data.train.root = tmp_path / "no_such_dataset"
    with pytest.raises(FileNotFoundError, match="no_such_dataset"):
        Trainer(config)


def test_stage_requirements(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"negatives\.source"):
        load_train_config(REPO / "config/train/streets_smoke.yaml", {"negatives.source": "none"})
    with pytest.raises(ConfigError, match=r"negatives\.root"):
        load_train_config(REPO / "config/train/streets_smoke.yaml", {"negatives.source": "ade20k"})


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "config/train").glob("*.yaml")))
def test_shipped_configs_validate(name: str) -> None:
    assert isinstance(load_train_config(REPO / "config/train" / name), TrainConfig)


@pytest.mark.slow
def test_smoke_training_learns_to_flag_unknown_objects(tmp_path: Path) -> None:
    """A few minutes of CPU training on procedural scenes must already find the unknown objects."""
    from openset_perception.data.synthetic_streets import SyntheticStreets, split_stream
    from openset_perception.engine import Segmenter
    from openset_perception.evaluation.evaluate import evaluate_dataset

    config = load_train_config(REPO / "config/train/streets_smoke.yaml", {"output_dir": str(tmp_path)})
    result = Trainer(config).fit()
    segmenter = Segmenter.from_checkpoint(result.checkpoint, device="cpu")
    assert segmenter.card.threshold is not None and segmenter.card.threshold_tpr == 0.95

    test_stream = split_stream("test")
    held_out = SyntheticStreets(24, seed=123, height=96, width=192, anomalies=True, stream=test_stream)
    ap = {}
    for method in ("densehybrid", "generative", "discriminative"):
        segmenter.score_method = method
        metrics = evaluate_dataset(segmenter, held_out, tmp_path / method, progress=False)["anomaly"]
        ap[method] = metrics["ap"]
    anomaly_rate = metrics["n_pos"] / (metrics["n_pos"] + metrics["n_neg"])
    print(f"smoke training: AP {ap}, anomaly pixel rate {anomaly_rate:.4f}")
    assert ap["densehybrid"] >= 3 * anomaly_rate
    assert ap["densehybrid"] > ap["generative"]
    assert ap["densehybrid"] > ap["discriminative"]


SMOKE = REPO / "config/train/streets_smoke.yaml"


@pytest.mark.parametrize(
    ("override", "named", "message"),
    [
        ("model.backbone=resnet9000", "model.backbone", "swiftnet_rn18"),
        ("model.backbone_kwargs={widht: 0.25}", "model.backbone_kwargs", "no option 'widht'"),
        ("model.backbone_kwargs={width: -1}", "model.backbone_kwargs", "width must be positive"),
        ("model.backbone_kwargs={width: '0.5'}", "model.backbone_kwargs", "valid number"),
        ("score_method=magic", "score_method", "densehybrid"),
        ("score_method=moose_msp", "<root>", "moose_probes"),
        ("device=gpu", "device", "unknown device 'gpu'"),
        ("data.scale_range=[2.0, 0.5]", "data.scale_range", "0 < low <= high"),
        ("data.scale_range=[0, 2.0]", "data.scale_range", "0 < low <= high"),
        ("optimizer.lr_min=0.1", "optimizer", "lr_min"),
        ("loss.beta1=-1.0", "loss.beta1", "greater than or equal to 0"),
        ("epochs=true", "epochs", "valid integer"),
        ("epochs='3'", "epochs", "valid integer"),
        ("data.train.name=cityscapez", "data.train.name", "known datasets: folder, synthetic_streets"),
    ],
)
def test_bad_values_fail_before_the_run_folder_exists(
    override: str, named: str, message: str, tmp_path: Path, capsys
) -> None:
    from openset_perception.cli.main import main

    out = tmp_path / "runs"
    # Were the value accepted, the run would stay short: tiny data, one step, no validation.
    tiny = ["steps_per_epoch=1", "data.train.num_frames=2", "data.batch_size=1", "data.val=null"]
    command = ["train", "--config", str(SMOKE), "--set", f"output_dir={out}"]
    for setting in [*tiny, override]:
        command += ["--set", setting]
    assert main(command) == 2
    error = capsys.readouterr().err
    assert f"{named}: " in error and message in error, error
    assert not out.exists()


def test_a_dataset_that_cannot_be_opened_leaves_no_run_folder(tmp_path: Path) -> None:
    config = _tiny_config(tmp_path / "runs")
    config.data.train.name = "folder"
    config.data.train.root = tmp_path / "no_such_dataset"
    with pytest.raises(FileNotFoundError, match="no_such_dataset"):
        Trainer(config)
    assert not config.run_dir.exists()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing_entry"])
def test_a_corrupt_training_state_is_a_clear_error(damage: str, tmp_path: Path, capsys) -> None:
    from openset_perception.checkpoint import CheckpointError

    config = _tiny_config(tmp_path, epochs=1, steps_per_epoch=1)
    Trainer(config).fit()
    state_file = config.run_dir / "train_state.pt"
    if damage == "garbage":
        state_file.write_bytes(b"\x00not a torch file" * 10)
    elif damage == "truncated":
        state_file.write_bytes(state_file.read_bytes()[: state_file.stat().st_size // 2])
    else:
        state = torch.load(state_file, weights_only=True)
        del state["optimizer"]
        torch.save(state, state_file)
    with pytest.raises(CheckpointError, match="not a usable training state") as caught:
        Trainer(config).fit(resume=True)
    assert str(state_file) in str(caught.value)
    if damage == "missing_entry":
        assert "missing entry 'optimizer'" in str(caught.value)


def test_temporary_files_of_a_killed_write_are_removed_at_start(tmp_path: Path) -> None:
    """A real kill -9 inside an atomic write leaves its temporary file; the next start removes it."""
    import subprocess
    import sys

    config = _tiny_config(tmp_path)
    config.run_dir.mkdir(parents=True)
    kill_mid_write = (
        "import os, signal, sys\n"
        "from openset_perception.atomic import atomic_write\n"
        "atomic_write(sys.argv[1], lambda tmp: os.kill(os.getpid(), signal.SIGKILL))\n"
    )
    target = config.run_dir / "train_state.pt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed = subprocess.run([sys.executable, "-c", kill_mid_write, str(target)], env=env, check=False)
    assert killed.returncode == -9
    leftovers = [p for p in config.run_dir.iterdir() if p.name != "tensorboard"]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".train_state.pt.")
    Trainer(config)
    assert not leftovers[0].exists() and not target.exists()

def _assert_same_weights(a_path: Path, b_path: Path) -> None:
    a, b = load_file(a_path), load_file(b_path)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_epoch_saves_and_resume_is_bit_exact(tmp_path: Path, stop_signal: int) -> None:
    changes = {"epochs": 2, "steps_per_epoch": 4}
    straight = Trainer(_tiny_config(tmp_path / "a", name="straight").model_copy(update=changes)).fit()

    def signal_inside_second_epoch(epoch: int, step: int, parts: dict) -> None:
        if epoch == 1 and step == 1:
            os.kill(os.getpid(), stop_signal)  # as Ctrl-C or a scheduler's SIGTERM would

    config = _tiny_config(tmp_path / "b", name="stopped").model_copy(update=changes)
    with pytest.raises(TrainingInterrupted, match=r"step 2/4 of epoch 2/2") as stopped:
        Trainer(config).fit(on_step=signal_inside_second_epoch)
    state = torch.load(stopped.value.state_file, weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 2)
    assert signal.getsignal(stop_signal) is not None  # handlers restored after fit

    resumed = Trainer(config).fit(resume=True)
    assert resumed.epochs_run == 2
    _assert_same_weights(straight.checkpoint, resumed.checkpoint)


def test_periodic_save_lets_a_killed_run_resume_mid_epoch(tmp_path: Path) -> None:
    changes = {"epochs": 1, "steps_per_epoch": 5, "save_every_steps": 2}
    straight = Trainer(_tiny_config(tmp_path / "a", name="straight").model_copy(update=changes)).fit()

    def kill_at_step_three(epoch: int, step: int, parts: dict) -> None:
        if step == 3:
            raise Killed  # no chance to save: the step-2 state must be on disk

    config = _tiny_config(tmp_path / "b", name="killed").model_copy(update=changes)
    with pytest.raises(Killed):
        Trainer(config).fit(on_step=kill_at_step_three)
    state = torch.load(config.run_dir / "train_state.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (0, 2)

    seen: list[tuple[int, int]] = []
    resumed = Trainer(config).fit(resume=True, on_step=lambda e, s, p: seen.append((e, s)))
    assert seen == [(0, 2), (0, 3), (0, 4)]  # continues after the saved step, not from the epoch start
    _assert_same_weights(straight.checkpoint, resumed.checkpoint)


def test_resumed_summary_counts_the_whole_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = _tiny_config(tmp_path, name="summary").model_copy(update={"epochs": 1, "steps_per_epoch": 2})

    def stop_after_first(epoch: int, step: int, parts: dict) -> None:
        if step == 0:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        Trainer(config).fit(on_step=stop_after_first)
    state_file = config.run_dir / "train_state.pt"
    state = torch.load(state_file, weights_only=True)
    state["elapsed_s"] = 600.0  # as if the first part had run for ten minutes
    torch.save(state, state_file)
    result = Trainer(config).fit(resume=True)
    assert result.seconds >= 600.0
    out = capsys.readouterr().out
    assert "1 epoch," in out and "1 epochs" not in out
    assert "10." in out.split("finished:")[1]  # "10.x min in all"


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [("epoch", "epochs"), ("optimizer.lr_heads", "lr_head"), ("data.train.num_frame", "num_frames")],
)
def test_misspelt_key_gets_the_nearest_suggestion(key: str, suggestion: str) -> None:
    with pytest.raises(ConfigError, match=rf"{key}: unknown key \(did you mean '{suggestion}'\?\)"):
        load_train_config(REPO / "config/train/streets_smoke.yaml", {key: 1})


def test_unrelated_unknown_key_gets_no_guess() -> None:
    with pytest.raises(ConfigError, match=r"zzzz: unknown key$"):
        load_train_config(REPO / "config/train/streets_smoke.yaml", {"zzzz": 1})


def test_missing_init_checkpoint_names_the_key_and_the_stage_that_writes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)  # the hint names config/train/<run>.yaml as a user would type it
    config = load_train_config(REPO / "config/train/streets_noise_negatives.yaml")
    config.model.init_checkpoint = tmp_path / "streets_closed" / "model.safetensors"
    config.output_dir = tmp_path / "runs"
    with pytest.raises(FileNotFoundError) as error:
        Trainer(config)
    message = str(error.value)
    assert message.startswith("model.init_checkpoint: checkpoint not found")
    assert "openset-perception train --config config/train/streets_closed.yaml" in message


def test_missing_dataset_root_names_the_key(tmp_path: Path) -> None:
    config = _tiny_config(tmp_path)
    config.data.train.name = "folder"
    config.data.train.root = tmp_path / "absent"
    with pytest.raises(FileNotFoundError, match=r"^data\.train\.root: dataset root .*absent does not exist"):
        Trainer(config)
