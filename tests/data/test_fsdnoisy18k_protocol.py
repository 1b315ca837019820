"""The paper's FSDnoisy18k protocols as presets, on a fake official tree: which clips each preset puts
in train, val and test, the seeded stratified 85/15 split of the clean set, and every
``configs/paper`` row parsed by the CLI with the command its header gives (nothing is trained)."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from ser_ssl.cli import cli_main
from ser_ssl.data import Clip, FSDnoisy18k
from ser_ssl.errors import ConfigError

REPO = Path(__file__).parents[2]
PAPER = REPO / "configs" / "paper"
ROWS = sorted(p for p in PAPER.glob("*.yaml") if p.stem != "downstream")
ROOT_ARG = "--data.init_args.source.init_args.root"
ENCODERS = {"vgg": "PaperVGG", "resnet18": "PaperResNet18", "crnn": "PaperCRNN"}

# per class: clean clips, noisy clips (the first `small` of them in the small noisy subset), test clips
SIZES = {"Bark": (20, 30, 10), "Rain": (40, 20, 8), "Wind": (13, 25, 9)}
TEST_PER_CLASS = 4


def write_wav(path: Path, seed: int) -> None:
    """A 10 ms clip: the sources read metadata and check files, never the audio."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, 0.1 * np.random.default_rng(seed).standard_normal(220).astype(np.float32), 22050)


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """FSDnoisy18k's official layout with uneven classes; test clips reuse training file names, so
    only their folder tells them apart."""
    root = tmp_path_factory.mktemp("fsdnoisy") / "FSDnoisy18k"
    train, test = [], []
    for label, (clean, noisy, small) in SIZES.items():
        for i in range(clean):
            train.append([f"{label}_c{i}.wav", label, "/m/x", 1, 0])
        for i in range(noisy):
            train.append([f"{label}_n{i}.wav", label, "/m/x", 0, int(i < small)])
        test += [[f"{label}_c{i}.wav", label, "/m/x"] for i in range(TEST_PER_CLASS)]
    for k, row in enumerate(train):
        write_wav(root / "FSDnoisy18k.audio_train" / row[0], k)
    for k, row in enumerate(test):
        write_wav(root / "FSDnoisy18k.audio_test" / row[0], 1000 + k)
    meta = root / "FSDnoisy18k.meta"
    write_csv(meta / "train.csv", ["fname", "label", "aso_id", "manually_verified", "noisy_small"], train)
    write_csv(meta / "test.csv", ["fname", "label", "aso_id"], test)
    return root


def subset(root: Path, kind: str) -> set[Path]:
    """Paths of the clean, noisy or small noisy training clips, or of the test clips."""
    if kind == "test":
        return {
            root / "FSDnoisy18k.audio_test" / f"{c}_c{i}.wav" for c in SIZES for i in range(TEST_PER_CLASS)
        }
    names = {
        "clean": [f"{c}_c{i}.wav" for c, (n, _, _) in SIZES.items() for i in range(n)],
        "noisy": [f"{c}_n{i}.wav" for c, (_, n, _) in SIZES.items() for i in range(n)],
        "noisy_small": [f"{c}_n{i}.wav" for c, (_, _, n) in SIZES.items() for i in range(n)],
    }[kind]
    return {root / "FSDnoisy18k.audio_train" / name for name in names}


def by_split(clips: list[Clip]) -> dict[str, set[Path]]:
    out: dict[str, set[Path]] = {"train": set(), "val": set(), "test": set()}
    for clip in clips:
        out[clip.split].add(clip.path)
    return out


def preset_args(name: str) -> dict:
    """The source's ``init_args`` in ``configs/data/<name>.yaml``."""
    source = yaml.safe_load((REPO / "configs" / "data" / f"{name}.yaml").read_text())["data"]["init_args"]
    assert source["source"]["class_path"] == "ser_ssl.data.FSDnoisy18k"
    return source["source"]["init_args"]


def preset(root: Path, name: str, **overrides) -> FSDnoisy18k:
    """The source of ``configs/data/<name>.yaml``, pointed at ``root``."""
    return FSDnoisy18k(**{**preset_args(name), "root": str(root), **overrides})


def test_noisy_preset_trains_on_the_noisy_set_and_validates_on_the_whole_clean_set(tree):
    splits = by_split(preset(tree, "fsdnoisy18k_noisy").clips())
    assert splits == {
        "train": subset(tree, "noisy"),
        "val": subset(tree, "clean"),
        "test": subset(tree, "test"),
    }
    small = by_split(preset(tree, "fsdnoisy18k_noisy", train_set="noisy_small").clips())
    assert small == {
        "train": subset(tree, "noisy_small"),
        "val": subset(tree, "clean"),
        "test": subset(tree, "test"),
    }


def test_clean_preset_splits_the_clean_set_85_15_by_class_with_the_official_test_set(tree):
    clips = preset(tree, "fsdnoisy18k_clean").clips()
    splits = by_split(clips)
    assert splits["train"] | splits["val"] == subset(tree, "clean")
    assert not splits["train"] & splits["val"]
    assert splits["test"] == subset(tree, "test")
    assert not (splits["train"] | splits["val"]) & splits["test"]
    n_clean = sum(clean for clean, _, _ in SIZES.values())
    assert len(splits["val"]) == round(0.15 * n_clean)
    per_class = Counter((c.label, c.split) for c in clips)
    for label, (clean, _, _) in SIZES.items():
        assert abs(per_class[label, "val"] - 0.15 * clean) < 1  # stratified: each class gives its share
        assert per_class[label, "train"] + per_class[label, "val"] == clean


def test_the_clean_split_is_seeded(tree):
    def val(seed: int) -> set[Path]:
        return by_split(preset(tree, "fsdnoisy18k_clean", seed=seed).clips())["val"]

    assert val(0) == val(0)
    assert val(1) == val(1)
    assert val(0) != val(1)
    assert len(val(0)) == len(val(1))


def test_the_general_preset_keeps_the_defaults(tree):
    assert preset(tree, "fsdnoisy18k").clips() == FSDnoisy18k(str(tree)).clips()
    splits = by_split(FSDnoisy18k(str(tree)).clips())
    assert splits["train"] | splits["val"] == subset(tree, "noisy")
    assert len(splits["val"]) == round(0.1 * len(subset(tree, "noisy")))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"train_set": "clean", "val_set": "clean", "val_fraction": 0.0},
            "which train_set 'clean' trains on",
        ),
        ({"train_set": "all", "val_set": "clean", "val_fraction": 0.0}, "which train_set 'all' trains on"),
        ({"train_set": "noisy", "val_set": "clean", "val_fraction": 0.1}, "set val_fraction 0"),
        ({"val_set": "test"}, "val_set must be one of"),
    ],
)
def test_val_sets_that_would_overlap_or_split_twice_are_refused(tree, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        FSDnoisy18k(str(tree), **kwargs)


def header_command(path: Path) -> list[str]:
    """The arguments after ``ser-ssl fit`` of the command in a config's header comment."""
    lines = [line[1:].strip() for line in path.read_text().splitlines() if line.startswith("#")]
    start = next(i for i, line in enumerate(lines) if line.startswith("ser-ssl fit "))
    command = []
    for line in lines[start:]:
        command.append(line.removesuffix("\\"))
        if not line.endswith("\\"):
            break
    return " ".join(command).split()[2:]


def printed_config(args: list[str], capsys) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", *args, "--print_config"])
    assert exit_info.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def with_root(args: list[str], root: Path) -> list[str]:
    assert args[-2] == ROOT_ARG, "the command ends by pointing the source at the data set"
    return [*args[:-1], str(root)]


def test_there_is_one_row_per_encoder_and_setting():
    tasks = ["pretrain"] + [f"{t}_{s}" for t in ("probe", "finetune", "scratch") for s in ("noisy", "clean")]
    assert [p.stem for p in ROWS] == sorted(f"{t}_{e}" for t in tasks for e in ENCODERS)


@pytest.mark.parametrize("row", ROWS, ids=lambda p: p.stem)
def test_each_paper_row_parses_with_its_header_command(row, tree, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    args = header_command(row)
    assert args[-3:-2] == [f"configs/paper/{row.name}"], "the row's own file comes last"
    config = printed_config(with_root(args, tree), capsys)
    task, *protocol, encoder = row.stem.split("_")
    model, data = config["model"]["init_args"], config["data"]["init_args"]
    assert config["trainer"]["default_root_dir"] == f"runs/paper/{row.stem}"
    assert data["features"]["window"] == "hamming" and data["features"]["mel_norm"] == "none"
    assert model["optimizer"] == "sgd" and model["momentum"] == 0.9 and model["weight_decay"] == 1e-4
    assert model["schedule"] == "multistep" and model["warmup_epochs"] == 0
    pretraining = f"runs/paper/pretrain_{encoder}/checkpoints/best.ckpt"
    if task == "pretrain":
        assert config["model"]["class_path"] == "ser_ssl.tasks.SimCLR"
        assert model["encoder"]["class_path"] == f"ser_ssl.models.{ENCODERS[encoder]}"
        assert model["mixback"]["init_args"]["shared_lambda"] is True and data["distinct_backgrounds"] is True
        assert (model["lr"], model["milestones"], config["trainer"]["max_epochs"]) == (0.03, [325, 425], 500)
        assert config["checkpoint"]["monitor"] == "knn/bal_acc" and config["checkpoint"]["filename"] == "best"
        assert f"{config['trainer']['default_root_dir']}/checkpoints/best.ckpt" == pretraining
        protocol = ["noisy"]
    else:
        expected = {"probe": "ser_ssl.tasks.LinearProbe", "finetune": "ser_ssl.tasks.FineTune"}
        assert config["model"]["class_path"] == expected.get(task, "ser_ssl.tasks.FineTune")
        assert model["lr"] == (0.1 if task == "probe" else 0.01)
        if task != "probe":
            assert model["encoder_lr"] == 0.01
        if task == "scratch":
            assert model["encoder_checkpoint"] is None
            assert model["encoder"]["class_path"] == f"ser_ssl.models.{ENCODERS[encoder]}"
        else:
            assert model["encoder_checkpoint"] == pretraining
        assert (model["milestones"], config["trainer"]["max_epochs"]) == ([80, 160], 200)
        assert (data["batch_size"], data["eval_hop_frames"]) == (128, 50)
        assert config["checkpoint"]["monitor"] == "val/bal_acc" and config["checkpoint"]["filename"] == "best"
    source = config["data"]["init_args"]["source"]
    assert source["class_path"] == "ser_ssl.data.FSDnoisy18k"
    splits = by_split(FSDnoisy18k(**source["init_args"]).clips())
    assert splits["test"] == subset(tree, "test")
    if protocol == ["noisy"]:
        assert (splits["train"], splits["val"]) == (subset(tree, "noisy"), subset(tree, "clean"))
    else:
        assert splits["train"] | splits["val"] == subset(tree, "clean") and splits["val"]


@pytest.mark.parametrize("task", ["pretrain", "probe", "finetune", "scratch"])
@pytest.mark.parametrize("name", ["fsdnoisy18k_noisy", "fsdnoisy18k_clean"])
def test_the_data_presets_parse_on_each_task_config(task, name, tree, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    args = ["--config", f"configs/{task}.yaml", "--config", f"configs/data/{name}.yaml", ROOT_ARG, str(tree)]
    printed = printed_config(args, capsys)["data"]["init_args"]["source"]["init_args"]
    expected = preset_args(name) | {"root": str(tree)}
    assert {key: printed[key] for key in expected} == expected


def test_the_readme_gives_each_row_the_command_of_its_header():
    readme = (PAPER / "README.md").read_text()
    blocks = re.findall(r"^# (\w+): [^\n]*\n(ser-ssl fit (?:[^\n]*\\\n)*[^\n]*)", readme, flags=re.M)
    commands = {stem: re.findall(r"--config (\S+)", command) for stem, command in blocks}
    assert sorted(commands) == [p.stem for p in ROWS]
    for row in ROWS:
        header = header_command(row)
        assert commands[row.stem] == [header[i + 1] for i, arg in enumerate(header) if arg == "--config"]
    for path in {path for configs in commands.values() for path in configs}:
        assert (REPO / path).is_file(), path
