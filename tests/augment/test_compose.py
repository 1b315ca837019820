import pytest
import torch
import torchaudio
from torch import nn

from ser_ssl.augment import (
    Augmentations,
    Compression,
    GaussianBlur,
    GaussianNoise,
    RandomResizedCrop,
    RandomShift,
    SpecAugment,
    Stage,
)


def randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def paper_pipeline() -> list[nn.Module]:
    return [RandomResizedCrop(), Compression(), GaussianNoise(max_std=0.5)]


@pytest.mark.parametrize("transforms", [None, []])
def test_an_empty_pipeline_is_the_identity(transforms):
    x = randn(4, 1, 16, 24)
    augment = Augmentations(transforms)
    assert len(augment) == 0
    assert torch.equal(augment(x), x)
    stages = augment.stages(x)
    assert [s.name for s in stages] == ["input"] and torch.equal(stages[0].output, x)


def test_the_pipeline_applies_its_transforms_in_order_as_by_hand():
    x = randn(6, 1, 16, 24)
    transforms = [RandomShift(), SpecAugment(), GaussianBlur(), *paper_pipeline()]
    augment = Augmentations(transforms)
    assert len(augment) == 6
    torch.manual_seed(3)
    composed = augment(x)
    torch.manual_seed(3)
    by_hand = x
    for transform in transforms:
        by_hand = transform(by_hand)
    assert torch.equal(composed, by_hand)
    torch.manual_seed(3)
    reversed_order = x
    for transform in reversed(transforms):
        reversed_order = transform(reversed_order)
    assert not torch.equal(composed, reversed_order)


def test_stages_name_every_step_and_end_with_the_forward_output():
    x = randn(5, 1, 16, 24)
    augment = Augmentations([*paper_pipeline(), GaussianNoise()])
    with torch.random.fork_rng():
        torch.manual_seed(11)
        expected = augment(x)
    torch.manual_seed(11)
    stages = augment.stages(x)
    assert all(isinstance(s, Stage) for s in stages)
    names = [s.name for s in stages]
    assert names == ["input", "RandomResizedCrop", "Compression", "GaussianNoise", "GaussianNoise#2"]
    assert stages[0].output is x and stages[0].params is None and stages[0].transform is None
    assert torch.equal(stages[-1].output, expected)
    for stage, transform in zip(stages[1:], augment.transforms, strict=True):
        assert stage.transform is transform
        assert stage.params is not None and stage.params["applied"].shape == (5,)
        assert stage.output.shape == x.shape
        assert isinstance(transform.describe(stage.params, 0), str)
    # every stage is the previous one transformed with the reported parameters
    for before, after in zip(stages[:-1], stages[1:], strict=True):
        assert torch.equal(after.transform.apply(before.output, after.params), after.output)


@pytest.mark.parametrize(
    "other",
    [nn.Identity(), torchaudio.transforms.FrequencyMasking(freq_mask_param=4)],
    ids=["identity", "torchaudio"],
)
def test_modules_that_are_not_batch_transforms_fit_in(other):
    x = randn(4, 1, 16, 24)
    augment = Augmentations([Compression(), other, GaussianNoise()])
    torch.manual_seed(5)
    expected = augment(x)
    torch.manual_seed(5)
    stages = augment.stages(x)
    assert [s.name for s in stages] == ["input", "Compression", type(other).__name__, "GaussianNoise"]
    assert stages[2].params is None and stages[2].transform is other
    assert stages[1].params is not None and stages[3].params is not None
    assert torch.equal(stages[-1].output, expected)
    assert expected.shape == x.shape and torch.isfinite(expected).all()


def test_transforms_are_registered_submodules():
    augment = Augmentations(paper_pipeline())
    assert len(list(augment.children())[0]) == 3
    assert "RandomResizedCrop" in repr(augment)


def test_the_pipeline_of_a_yaml_config_equals_the_same_transforms_by_hand():
    """configs/pretrain.yaml's augment list, parsed and built as the CLI does, against hand-made ones."""
    from pathlib import Path

    import yaml
    from jsonargparse import ArgumentParser

    from ser_ssl.augment import Compression, GaussianNoise, RandomResizedCrop

    config = yaml.safe_load(Path("configs/pretrain.yaml").read_text())["model"]["init_args"]["augment"]
    parser = ArgumentParser()
    parser.add_argument("--augment", type=list[nn.Module])
    built = parser.instantiate_classes(parser.parse_object({"augment": config})).augment
    by_hand = [RandomResizedCrop((0.8, 1.0), (0.75, 1.3333333)), Compression(0.75, 1.0), GaussianNoise(0.01)]
    assert [type(t) for t in built] == [type(t) for t in by_hand]
    x = torch.randn(6, 1, 16, 24)
    torch.manual_seed(3)
    from_yaml = Augmentations(built)(x)
    torch.manual_seed(3)
    for t in by_hand:
        x = t(x)
    assert torch.equal(from_yaml, x)
