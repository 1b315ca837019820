import pytest
import torch

from ser_ssl.models import ProjectionHead, VGGLike


@pytest.mark.parametrize("shape", [(96, 101), (64, 50), (96, 300), (40, 16)])
def test_vgglike_any_patch_size(shape):
    enc = VGGLike().eval()
    out = enc(torch.randn(3, 1, *shape))
    assert out.shape == (3, 512) and enc.embed_dim == 512
    assert torch.isfinite(out).all()


def test_vgglike_size_and_frames():
    enc = VGGLike()
    n = sum(p.numel() for p in enc.parameters())
    assert 0.255e6 <= n <= 0.345e6  # "about 0.3 M parameters", within 15%
    seq = enc.frames(torch.randn(2, 1, 96, 101))
    assert seq.shape[:2] == (2, 512) and seq.shape[2] == 7
    assert VGGLike(channels=(8, 16), embed_dim=32)(torch.randn(2, 1, 96, 101)).shape == (2, 32)


def test_vgglike_gradients_reach_every_parameter():
    enc = VGGLike(channels=(8, 16, 16), embed_dim=32)
    enc(torch.randn(4, 1, 32, 40)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())


def test_projection_head_outputs_unit_vectors():
    head = ProjectionHead(512)
    z = head(torch.randn(10, 512) * 30)
    assert z.shape == (10, 512)
    assert torch.allclose(z.norm(dim=1), torch.ones(10), atol=1e-5)
