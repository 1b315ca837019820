import pytest
import torch

from ser_ssl.data import LabeledDataModule
from ser_ssl.inference import clip_mean
from ser_ssl.models import VGGLike
from ser_ssl.tasks import FineTune, LinearProbe, SimCLR, load_pretrained
from ser_ssl.tasks.checkpoint import CheckpointError, build_module
from tests.conftest import quiet_trainer

SMALL = {"class_path": "ser_ssl.models.VGGLike", "init_args": {"channels": [8, 16], "embed_dim": 32}}


def small_simclr(**kwargs) -> SimCLR:
    return SimCLR(
        encoder=build_module(SMALL), mixback=None, proj_hidden_dim=32, proj_dim=16, n_mels=16, **kwargs
    )


def test_a_few_simclr_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = small_simclr()
    base = torch.randn(16, 1, 16, 24)
    x = torch.stack([base + 0.1 * torch.randn_like(base), base + 0.1 * torch.randn_like(base)], 1).flatten(
        0, 1
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss = model.training_step({"x": x}, 0)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_batch_transfer_mixes_normalises_and_augments_views():
    torch.manual_seed(0)
    model = SimCLR(encoder=build_module(SMALL), n_mels=16)
    model.normalizer.set_stats(torch.full((16,), -2.0), torch.full((16,), 0.5))
    views = torch.full((3, 2, 1, 16, 24), -2.0)
    backgrounds = torch.rand_like(views)  # not constant, so mix-back visibly changes the views
    batch = {"views": views, "backgrounds": backgrounds, "index": torch.arange(3)}
    x = model.on_after_batch_transfer(batch, 0)["x"]
    assert x.shape == (6, 1, 16, 24)
    assert torch.isfinite(x).all() and x.abs().max() < 1.0  # mixed back lightly around the mean 0
    assert (x != 0).any()


class _Loop:
    total_batch_idx = 4


class _RankTrainer:
    fit_loop = _Loop()

    def __init__(self, rank: int) -> None:
        self.global_rank = rank


def test_views_come_from_the_seed_rank_and_batch_and_leave_the_global_rng_alone():
    model = SimCLR(encoder=build_module(SMALL), n_mels=16)
    batch = {"views": torch.randn(4, 2, 1, 16, 24), "backgrounds": torch.randn(4, 2, 1, 16, 24)}

    def views(rank: int, batch_index: int = 4) -> torch.Tensor:
        _Loop.total_batch_idx = batch_index
        model._trainer = _RankTrainer(rank)
        return model.on_after_batch_transfer(batch, 0)["x"]

    state = torch.get_rng_state()
    first = views(rank=0)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)  # whatever else drew from the global RNG in between
    assert torch.equal(views(rank=0), first)
    assert not torch.allclose(views(rank=1), first)
    assert not torch.allclose(views(rank=0, batch_index=5), first)
    model._trainer = None


def test_second_view_pipeline_applies_to_the_second_view_only():
    from ser_ssl.augment import Compression

    squash = Compression(low=0.0, high=0.0)  # every value becomes its patch's mean
    model = SimCLR(
        encoder=build_module(SMALL), n_mels=16, mixback=None, augment=[], second_view_augment=[squash]
    )
    views = torch.randn(3, 2, 1, 16, 24)
    x = model.on_after_batch_transfer({"views": views}, 0)["x"].view(3, 2, 1, 16, 24)
    assert torch.allclose(x[:, 0], views[:, 0])
    assert torch.allclose(x[:, 1], views[:, 1].mean(dim=(1, 2, 3), keepdim=True).expand_as(views[:, 1]))


def test_load_pretrained_errors_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pretrained(tmp_path / "missing.ckpt")
    (tmp_path / "corrupt.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable") as err:
        load_pretrained(tmp_path / "corrupt.ckpt")
    assert "weights_only" not in str(err.value) and "\n" not in str(err.value)  # not torch's advice
    (tmp_path / "text.ckpt").write_text("hello, not a checkpoint\n" * 3)  # torch raises a KeyError here
    with pytest.raises(CheckpointError, match="text.ckpt is not a readable PyTorch checkpoint"):
        load_pretrained(tmp_path / "text.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not a ser-ssl pretraining checkpoint"):
        load_pretrained(tmp_path / "other.ckpt")


def test_clip_mean_averages_windows_per_clip():
    values = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.2, 0.8], [0.6, 0.4], [0.4, 0.6]])
    clip = torch.tensor([0, 0, 1, 2, 2])
    expected = torch.tensor([[0.5, 0.5], [0.2, 0.8], [0.5, 0.5]])
    assert torch.allclose(clip_mean(values, clip, 3), expected)


@pytest.fixture
def pretrained_ckpt(pretrained):
    return pretrained / "pretrain" / "checkpoints" / "last.ckpt"


def test_pretrained_encoder_round_trips_and_probe_checkpoints_are_refused(pretrained_ckpt, tmp_path):
    encoder, stats = load_pretrained(pretrained_ckpt)
    assert isinstance(encoder, VGGLike) and encoder.embed_dim == 32
    ckpt = torch.load(pretrained_ckpt, weights_only=True)
    assert torch.equal(encoder.features[0][0].weight, ckpt["state_dict"]["encoder.features.0.0.weight"])
    assert bool(stats["fitted"]) and stats["mean"].shape == (96, 1)
    random, no_stats = load_pretrained(pretrained_ckpt, load_weights=False)
    assert no_stats == {}
    assert not torch.equal(random.features[0][0].weight, encoder.features[0][0].weight)
    probe_ckpt = dict(ckpt)
    probe_ckpt.pop("ser_ssl_kind")
    torch.save(probe_ckpt, tmp_path / "probe.ckpt")
    with pytest.raises(CheckpointError, match="probe or fine-tune"):
        load_pretrained(tmp_path / "probe.ckpt")


def encoder_state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.encoder.state_dict().items()}


def fit_downstream(model, tiny_data, cache_dir, epochs: int = 2):
    dm = LabeledDataModule(manifest=str(tiny_data), cache_dir=str(cache_dir), batch_size=8, num_workers=0)
    trainer = quiet_trainer(
        max_epochs=epochs,
        num_sanity_val_steps=0,
        default_root_dir=cache_dir.parent / "downstream",  # where the per-class reports go
    )
    trainer.fit(model, datamodule=dm)
    return trainer, dm


def test_probe_leaves_the_encoder_untouched(pretrained_ckpt, tiny_data):
    probe = LinearProbe(encoder_checkpoint=str(pretrained_ckpt), lr=0.1)
    before = encoder_state(probe)
    trainer, dm = fit_downstream(probe, tiny_data, pretrained_ckpt.parents[2] / "cache")
    after = encoder_state(probe)
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == []  # weights and BatchNorm statistics
    assert probe.classifier[-1].out_features == dm.num_classes == 12
    probe.train()
    assert not probe.encoder.training and probe.classifier.training
    assert "val/bal_acc" in trainer.callback_metrics


def test_finetune_changes_the_encoder(pretrained_ckpt, tiny_data):
    model = FineTune(encoder_checkpoint=str(pretrained_ckpt), encoder_lr=0.01, lr=0.01)
    before = encoder_state(model)
    fit_downstream(model, tiny_data, pretrained_ckpt.parents[2] / "cache", epochs=1)
    after = encoder_state(model)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("weight"))


def test_downstream_needs_an_encoder():
    with pytest.raises(ValueError, match="encoder_checkpoint"):
        LinearProbe()


class _FakeTrainer:
    estimated_stepping_batches = 100
    max_epochs = 10


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_optimizer_skips_weight_decay_on_biases_and_norms_and_warms_up(optimizer, monkeypatch):
    model = small_simclr(optimizer=optimizer, lr=0.1, weight_decay=1e-4, warmup_epochs=2)
    monkeypatch.setattr(type(model), "trainer", property(lambda self: _FakeTrainer()))
    config = model.configure_optimizers()
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == (p.ndim > 1), name  # conv/linear weights only
    assert config["lr_scheduler"]["interval"] == "step"
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < 0.001 and max(lrs) == pytest.approx(0.1, rel=0.02)  # 20 warm-up steps to the peak
    assert lrs.index(max(lrs)) in range(19, 22) and lrs[-1] < 0.001  # then cosine decay to ~0


@pytest.mark.parametrize(
    "scaling, devices, accumulate, factor",
    [("none", 4, 1, 1.0), ("linear", 1, 1, 0.25), ("linear", 4, 2, 2.0), ("sqrt", 4, 1, 1.0)],
)
def test_lr_scaling_follows_the_global_batch(scaling, devices, accumulate, factor, monkeypatch):
    class Trainer(_FakeTrainer):
        world_size = devices
        accumulate_grad_batches = accumulate
        datamodule = type("DataModule", (), {"batch_size": 64})()

    model = small_simclr(optimizer="sgd", lr=0.2, lr_scaling=scaling)
    monkeypatch.setattr(type(model), "trainer", property(lambda self: Trainer()))
    opt = model.configure_optimizers()["optimizer"]
    assert all(g["initial_lr"] == pytest.approx(0.2 * factor) for g in opt.param_groups)


def test_pretraining_logs_loss_and_learning_rate(pretrained):
    logs = list((pretrained / "pretrain").rglob("metrics.csv"))
    assert len(logs) == 1
    header = logs[0].read_text().splitlines()[0].split(",")
    assert "train/loss" in header and any(col.startswith("lr-") for col in header)


def test_the_step_loss_is_on_the_progress_bar_only_where_reading_it_costs_no_wait():
    assert small_simclr().loss_on_progress_bar  # CPU: nothing to wait for
    assert not small_simclr(finite_check_every_n_steps=50).to("meta").loss_on_progress_bar  # a device
    assert small_simclr(finite_check_every_n_steps=1).to("meta").loss_on_progress_bar  # waits anyway
