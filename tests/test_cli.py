"""End to end through the CLI's main function: pretrain -> probe fit -> probe test (and fine-tune)."""

import json

import pytest
import torch
import yaml

from ser_ssl.cli import cli_main
from tests.conftest import SMALL_ENCODER, tiny_args
from tests.test_probe_checks import probe_args

pytestmark = pytest.mark.slow


def test_pretrain_writes_a_checkpoint_and_its_config(pretrained):
    assert (pretrained / "pretrain" / "checkpoints" / "last.ckpt").is_file()
    configs = list((pretrained / "pretrain").rglob("config.yaml"))
    assert len(configs) == 1
    saved = yaml.safe_load(configs[0].read_text())
    assert saved["model"]["init_args"]["encoder"]["init_args"]["embed_dim"] == 32


@pytest.mark.parametrize("task", ["probe", "finetune"])
def test_downstream_fit_then_test_evaluates_the_trained_model(pretrained, tiny_data, task):
    root = pretrained / task
    args = [
        *tiny_args(task, root, tiny_data, pretrained / "cache"),
        "--model.init_args.encoder_checkpoint",
        str(pretrained / "pretrain" / "checkpoints" / "last.ckpt"),
        "--trainer.max_epochs",
        "2",
        "--trainer.check_val_every_n_epoch",
        "1",
    ]
    fit = cli_main(["fit", *args])
    val_after_fit = float(fit.trainer.callback_metrics["val/bal_acc"])
    trained_head = fit.model.classifier[-1].weight.detach().clone()
    test = cli_main(["test", *args])
    # the test loads the trained model, not the freshly built head of the new process
    assert torch.equal(test.model.classifier[-1].weight, trained_head)
    metrics = json.loads((root / "test_metrics.json").read_text())
    assert 0.0 <= metrics["test/bal_acc"] <= 1.0 and 0.0 <= metrics["test/acc"] <= 1.0
    validate = cli_main(["validate", *args])
    assert float(validate.trainer.callback_metrics["val/bal_acc"]) == pytest.approx(val_after_fit, abs=1e-6)


def test_test_without_a_trained_model_says_what_to_do(pretrained, tiny_data):
    args = tiny_args("probe", pretrained / "never-trained", tiny_data, pretrained / "cache")
    args += [
        "--model.init_args.encoder_checkpoint",
        str(pretrained / "pretrain" / "checkpoints" / "last.ckpt"),
    ]
    with pytest.raises(FileNotFoundError, match="ser-ssl fit"):
        cli_main(["test", *args])


def test_print_config_is_complete_and_reusable(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", "configs/pretrain.yaml", "--print_config"])
    assert exit_info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["class_path"] == "ser_ssl.tasks.SimCLR"
    assert config["data"]["init_args"]["features"]["n_mels"] == 96
    assert config["checkpoint"]["save_last"] is True
    (tmp_path / "full.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(tmp_path / "full.yaml"), "--print_config"])
    assert exit_info.value.code == 0


def test_unknown_keys_are_rejected(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", "configs/pretrain.yaml", "--model.init_args.temprature", "0.1"])
    assert exit_info.value.code != 0
    assert "temprature" in capsys.readouterr().err


@pytest.mark.parametrize(
    "key, value", [("--model.init_args.temperature", "cold"), ("--data.init_args.batch_size", "1.5")]
)
def test_wrong_types_are_rejected_with_the_key_named(capsys, key, value):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", "configs/pretrain.yaml", key, value])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert f'key "{key.rsplit(".", 1)[-1]}"' in err and value in err


def test_an_encoder_that_does_not_match_the_checkpoint_is_named(pretrained, tiny_data):
    args = tiny_args("probe", pretrained / "mismatch", tiny_data, pretrained / "cache")
    args += [
        "--model.init_args.encoder_checkpoint",
        str(pretrained / "pretrain" / "checkpoints" / "last.ckpt"),
    ]
    args += ["--model.init_args.encoder", "ser_ssl.models.VGGLike"]  # 512-d, the checkpoint's is 32-d
    with pytest.raises(Exception, match="does not match") as info:
        cli_main(["fit", *args])
    assert "encoder" in str(info.value)


def test_user_errors_print_one_line_not_a_traceback(tmp_path, monkeypatch):
    from ser_ssl.cli import main

    missing = tmp_path / "nothing.ckpt"
    monkeypatch.setattr(
        "sys.argv",
        ["ser-ssl", "fit", "--config", "configs/probe.yaml", "--model.encoder_checkpoint", str(missing)],
    )
    with pytest.raises(SystemExit) as exit_info:
        main()
    message = str(exit_info.value.code)
    assert message.startswith("ser-ssl: error: encoder checkpoint") and str(missing) in message
    assert "ser-ssl fit --config configs/pretrain.yaml" in message


def test_a_multilabel_probe_on_the_fsd50k_layout_reports_map(pretrained, tmp_path):
    from tests.data.test_sources import VOCABULARY, wav, write_csv

    root = tmp_path / "FSD50K"
    truth = root / "FSD50K.ground_truth"
    write_csv(truth / "vocabulary.csv", VOCABULARY, None)
    labels = ["Bark,Dog", "Guitar,Music", "Dog", "Music", "Bark", "Guitar"]
    dev = [[100 + i, labels[i % 6], "", "val" if i >= 8 else "train"] for i in range(11)]
    write_csv(truth / "dev.csv", dev, ["fname", "labels", "mids", "split"])
    write_csv(truth / "eval.csv", [[200 + i, labels[i], ""] for i in range(4)], ["fname", "labels", "mids"])
    for row in dev:
        wav(root / "FSD50K.dev_audio" / f"{row[0]}.wav", seed=row[0])
    for i in range(4):
        wav(root / "FSD50K.eval_audio" / f"{200 + i}.wav", seed=200 + i)
    args = tiny_args("probe", tmp_path / "probe", root / "unused.csv", tmp_path / "cache")
    args[args.index("--data.init_args.manifest") : args.index("--data.init_args.manifest") + 2] = []
    args[2:2] = ["--config", "configs/data/fsd50k.yaml"]
    args += ["--data.init_args.source.init_args.root", str(root), "--data.init_args.batch_size", "4"]
    args += [
        "--model.init_args.encoder_checkpoint",
        str(pretrained / "pretrain" / "checkpoints" / "last.ckpt"),
    ]
    args += ["--trainer.max_epochs", "1"]
    cli_main(["fit", *args])
    cli_main(["test", *args])
    metrics = json.loads((tmp_path / "probe" / "test_metrics.json").read_text())
    assert 0.0 <= metrics["test/mAP"] <= 1.0 and 0.0 <= metrics["test/roc_auc"] <= 1.0


def test_pretraining_keeps_the_best_checkpoint_by_the_online_probe(tiny_data, tmp_path):
    args = tiny_args("pretrain", tmp_path / "run", tiny_data, tmp_path / "cache") + SMALL_ENCODER
    args += ["--model.init_args.online_probe", "true", "--trainer.max_epochs", "2"]
    args += ["--checkpoint.monitor", "online/acc", "--checkpoint.mode", "max"]
    cli = cli_main(["fit", *args])
    best = cli.trainer.checkpoint_callback
    assert best.best_model_path and best.best_model_path != best.last_model_path
    assert 0.0 <= float(best.best_model_score) <= 1.0
    assert 0.0 <= float(cli.trainer.callback_metrics["online/acc"]) <= 1.0


def test_a_command_line_given_in_python_brings_no_warning_about_sys_argv(monkeypatch, recwarn, capsys):
    monkeypatch.setattr("sys.argv", ["ser-ssl-folds", "--folds", "1"])  # as the runners leave it
    with pytest.raises(SystemExit):
        cli_main(["fit", "--config", "configs/pretrain.yaml", "--print_config"])
    assert "class_path: ser_ssl.tasks.SimCLR" in capsys.readouterr().out
    assert not [w for w in recwarn if "args parameter" in str(w.message)]


def test_a_probe_that_validates_every_10_epochs_still_saves_every_epoch(pretrained, tiny_data, tmp_path):
    from tests.helpers import RecordLastCheckpoint

    args = probe_args(pretrained, tmp_path / "probe", tiny_data)
    args += ["--trainer.max_epochs", "3", "--trainer.callbacks+=tests.helpers.RecordLastCheckpoint"]
    cli = cli_main(["fit", *args])
    (recorder,) = [c for c in cli.trainer.callbacks if isinstance(c, RecordLastCheckpoint)]
    assert recorder.seen == [None, 0, 1]  # killed in epoch 3, it would resume after epoch 2
    # with a monitor, saves stay at validation (the monitored value is new only there)
    args[args.index(str(tmp_path / "probe"))] = str(tmp_path / "monitored")
    cli = cli_main(["fit", *args, "--checkpoint.monitor", "val/acc", "--checkpoint.mode", "max"])
    (recorder,) = [c for c in cli.trainer.callbacks if isinstance(c, RecordLastCheckpoint)]
    assert recorder.seen == [None, None, None]


def test_resuming_what_is_not_there_or_testing_another_tasks_checkpoint_is_one_line(
    pretrained, tiny_data, tmp_path, capsys
):
    from ser_ssl.errors import CheckpointError, ConfigError

    args = probe_args(pretrained, tmp_path / "probe", tiny_data)
    with pytest.warns(UserWarning, match="--ckpt_path last: there is no .*last.ckpt yet, so this starts"):
        cli_main(["fit", *args, "--ckpt_path", "last", "--trainer.max_epochs", "1"])  # set and forget
    assert (tmp_path / "probe" / "checkpoints" / "last.ckpt").is_file()
    with pytest.raises(CheckpointError, match="--ckpt_path .*nope.ckpt does not exist"):
        cli_main(["test", *args, "--ckpt_path", str(tmp_path / "nope.ckpt")])
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes((pretrained / "pretrain/checkpoints/last.ckpt").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cut.ckpt is not a readable PyTorch checkpoint"):
        cli_main(["test", *args, "--ckpt_path", str(cut)])
    pretraining = pretrained / "pretrain/checkpoints/last.ckpt"
    with pytest.raises(ConfigError, match="is a SimCLR checkpoint and this config runs LinearProbe"):
        cli_main(["test", *args, "--ckpt_path", str(pretraining)])
    assert not (tmp_path / "probe" / "test_metrics.json").exists()
    # the model is built from a --ckpt_path file's settings: a class outside ser-ssl is refused
    ckpt = torch.load(tmp_path / "probe" / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["encoder"] = {"class_path": "evil_mod.Evil", "init_args": {}}
    torch.save(ckpt, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="names the class 'evil_mod.Evil' in its settings"):
        cli_main(["test", *args, "--ckpt_path", str(tmp_path / "evil.ckpt")])


def test_a_fast_dev_run_leaves_no_checkpoint_to_mistake_for_a_trained_run(pretrained, tiny_data, tmp_path):
    args = probe_args(pretrained, tmp_path / "probe", tiny_data)
    cli_main(["fit", *args, "--trainer.fast_dev_run", "true"])
    assert not list((tmp_path / "probe").rglob("*.ckpt"))
    cli_main(["fit", *args, "--trainer.max_epochs", "1"])  # the real run is not refused
    assert (tmp_path / "probe" / "checkpoints" / "last.ckpt").is_file()


def test_a_setting_the_machine_cannot_run_is_one_line(monkeypatch):
    from ser_ssl.cli import main

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr(
        "sys.argv", ["ser-ssl", "fit", "--config", "configs/pretrain.yaml", "--trainer.accelerator", "cuda"]
    )
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert str(exit_info.value.code).startswith("ser-ssl: error: ") and "\n" not in str(exit_info.value.code)


def test_a_wandb_login_missing_for_an_online_run_is_one_line(monkeypatch):
    from wandb.errors import UsageError

    from ser_ssl.cli import exit_on_user_error

    def online_without_a_key() -> None:
        try:
            raise UsageError("No API key configured. Use `wandb login` to log in.")
        except UsageError as err:
            raise RuntimeError("while starting the logger") from err  # as a caller may wrap it

    with pytest.raises(SystemExit) as exit_info:
        exit_on_user_error(online_without_a_key)
    assert exit_info.value.code == "ser-ssl: error: No API key configured. Use `wandb login` to log in."


@pytest.mark.parametrize("task", ["pretrain", "probe"])
def test_predict_with_a_task_that_makes_no_predictions_says_what_does(pretrained, tiny_data, tmp_path, task):
    from ser_ssl.errors import ConfigError

    args = tiny_args(task, tmp_path / "run", tiny_data, pretrained / "cache")
    if task == "probe":
        args += ["--model.init_args.encoder_checkpoint", str(pretrained / "pretrain/checkpoints/last.ckpt")]
    with pytest.raises(ConfigError, match="writes no predictions; `ser-ssl predict --config configs/export"):
        cli_main(["predict", *args])
