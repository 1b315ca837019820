import torch
from torch import nn

from ser_ssl.models import VGGLike
from ser_ssl.models.norm import AllReduceBatchNorm, convert_batchnorm, revert_batchnorm
from ser_ssl.tasks import SyncBatchNorm


def _batchnorms(model: nn.Module) -> list[type]:
    return [type(m) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_conversion_keeps_state_and_reverts_to_the_original_classes():
    model = nn.Sequential(VGGLike(channels=[4, 8], embed_dim=16), nn.BatchNorm1d(16))
    model(torch.randn(4, 1, 8, 12))  # moves the running statistics away from their initial values
    before = {k: v.clone() for k, v in model.state_dict().items()}
    classes = _batchnorms(model)
    converted = convert_batchnorm(model)
    assert set(_batchnorms(converted)) == {AllReduceBatchNorm}
    assert all(torch.equal(before[k], v) for k, v in converted.state_dict().items())
    reverted = revert_batchnorm(converted)
    assert _batchnorms(reverted) == classes and nn.BatchNorm1d in classes
    assert all(torch.equal(before[k], v) for k, v in reverted.state_dict().items())


def test_a_frozen_layer_stays_frozen_both_ways():
    model = nn.Sequential(VGGLike(channels=[4, 8], embed_dim=16), nn.BatchNorm1d(16))
    model[0].requires_grad_(False)  # the linear probe's encoder
    converted = convert_batchnorm(model)
    assert [p.requires_grad for p in converted.parameters()] == [False] * len(list(model[0].parameters())) + [
        True
    ] * 2
    reverted = revert_batchnorm(converted)
    assert [p.requires_grad for p in reverted.parameters()] == [
        p.requires_grad for p in converted.parameters()
    ]


def test_in_one_process_it_is_an_ordinary_batchnorm():
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(3)
    synced = convert_batchnorm(nn.Sequential(nn.BatchNorm2d(3)))[0]
    x = torch.randn(5, 3, 4, 6) * 3 + 1
    for mode in (True, False):
        plain.train(mode), synced.train(mode)
        assert torch.allclose(plain(x), synced(x), atol=1e-6)
    assert torch.allclose(plain.running_var, synced.running_var)


def test_the_plugin_uses_the_any_device_layer_off_gpu_and_reverts():
    plugin = SyncBatchNorm()
    model = plugin.apply(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))
    assert _batchnorms(model) == [AllReduceBatchNorm]
    assert _batchnorms(plugin.revert(model)) == [nn.BatchNorm2d]
