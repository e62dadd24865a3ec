"""Training augmentation (fedapp.data.augment): the crop/flip definition, seeding, the loader hook."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedapp.config import RunConfig
from fedapp.data.augment import (
    AUTO_AUGMENT,
    BatchAugment,
    build_augment,
    crop_padding,
    random_crop_flip,
    resolve_augment,
)
from fedapp.data.base import ArrayDataset, black_pixel
from fedapp.loops import AugmentedLoader, make_loader


def batch(b: int = 6, c: int = 2, h: int = 5, w: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_crop_is_a_window_of_the_padded_image_at_uniform_offsets() -> None:
    """y_b = pad(x_b)[:, i_b : i_b + H, j_b : j_b + W] with (i_b, j_b) the generator's next draws."""
    images, padding = batch(), 2
    out = random_crop_flip(images, padding, False, torch.Generator().manual_seed(5), pad_value=0.0)
    offsets = torch.randint(0, 2 * padding + 1, (6, 2), generator=torch.Generator().manual_seed(5))
    padded = F.pad(images, (padding,) * 4)
    for b, (i, j) in enumerate(offsets.tolist()):
        torch.testing.assert_close(out[b], padded[b, :, i : i + 5, j : j + 7])
    assert out.shape == images.shape


def test_crop_offsets_cover_every_shift_uniformly() -> None:
    """Offsets are uniform on {0, ..., 2p}: one marked pixel lands at each shift about equally often."""
    images = torch.zeros(4000, 1, 8, 8)
    images[:, 0, 4, 4] = 1.0
    out = random_crop_flip(images, 1, False, torch.Generator().manual_seed(0))
    rows, cols = torch.nonzero(out[:, 0] == 1.0, as_tuple=True)[1:]
    counts = np.bincount(((rows - 3) * 3 + (cols - 3)).numpy(), minlength=9)
    assert len(rows) == 4000 and np.all(np.abs(counts / 4000 - 1 / 9) < 0.02)


def test_padding_uses_the_per_channel_black_pixel() -> None:
    images = torch.ones(200, 3, 4, 4)
    fill = (-1.0, -2.0, -3.0)
    out = random_crop_flip(images, 1, False, torch.Generator().manual_seed(1), pad_value=fill)
    values = set(out.unique().tolist())
    assert values <= {1.0, -1.0, -2.0, -3.0} and {-1.0, -2.0, -3.0} <= values
    for c, value in enumerate(fill):
        assert set(out[:, c].unique().tolist()) <= {1.0, value}
    assert black_pixel((0.5, 0.25), (0.5, 0.25)) == (-1.0, -1.0)  # (0 - mean) / std


def test_flip_mirrors_about_half_the_images() -> None:
    images = batch(b=2000, seed=2)
    out = random_crop_flip(images, 0, True, torch.Generator().manual_seed(3))
    same = (out == images).flatten(1).all(1)
    mirrored = (out == images.flip(-1)).flatten(1).all(1)
    assert bool((same ^ mirrored).all())  # each image is either kept or mirrored
    assert abs(float(mirrored.float().mean()) - 0.5) < 0.04


def test_no_padding_and_no_flip_is_the_identity_and_draws_nothing() -> None:
    images, generator = batch(), torch.Generator().manual_seed(9)
    state = generator.get_state()
    assert random_crop_flip(images, 0, False, generator) is images
    assert torch.equal(generator.get_state(), state)


def test_augmentation_is_seeded() -> None:
    images = batch()
    first = random_crop_flip(images, 1, True, torch.Generator().manual_seed(4))
    assert torch.equal(first, random_crop_flip(images, 1, True, torch.Generator().manual_seed(4)))
    assert not torch.equal(first, random_crop_flip(images, 1, True, torch.Generator().manual_seed(5)))


def test_bad_inputs_name_the_argument() -> None:
    with pytest.raises(ValueError, match="images"):
        random_crop_flip(torch.zeros(3, 4, 4), 1, False, torch.Generator())
    with pytest.raises(ValueError, match="padding"):
        random_crop_flip(batch(), -1, False, torch.Generator())
    with pytest.raises(ValueError, match="pad_value"):
        random_crop_flip(batch(c=3), 1, False, torch.Generator(), pad_value=(0.0, 1.0))
    with pytest.raises(ValueError, match="augment='blur'"):
        resolve_augment("blur", "lt-digits")


def test_auto_and_padding_per_dataset() -> None:
    assert crop_padding(32, 32) == 4 and crop_padding(8, 8) == 1 and crop_padding(224, 224) == 28
    assert resolve_augment("auto", "cifar10-lt") == "crop-flip" == resolve_augment("auto", "cifar100-lt")
    assert resolve_augment("auto", "lt-digits") == AUTO_AUGMENT["lt-digits"]
    assert resolve_augment("auto", "ml-digits") == "none"  # multi-label data: not augmented by default
    assert resolve_augment("crop-flip", "ml-digits") == "crop-flip"
    assert build_augment("none", "cifar10-lt", (3, 32, 32)) is None
    assert build_augment("auto", "cifar10-lt", (3, 32, 32), (-1.0, -2.0, -3.0)) == BatchAugment(4, True, (-1.0, -2.0, -3.0))
    assert build_augment("crop", "lt-digits", (1, 8, 8)) == BatchAugment(1, False, (0.0,))


def test_loader_hook_augments_with_the_loaders_generator() -> None:
    data = ArrayDataset(batch(b=40, seed=6).numpy(), np.arange(40) % 3)
    augment = BatchAugment(1, True)
    plain = [x for x, _ in make_loader(data, 8, shuffle=True, seed=3)]
    reference = [x for x, _ in torch.utils.data.DataLoader(data, batch_size=8, shuffle=True,
                                                           generator=torch.Generator().manual_seed(3))]
    assert all(torch.equal(a, b) for a, b in zip(plain, reference))  # no augment: the loader as before

    loader = make_loader(data, 8, shuffle=True, seed=3, augment=augment)
    assert isinstance(loader, AugmentedLoader) and len(loader) == 5
    first = [(x, y) for x, y in loader]
    again = [(x, y) for x, y in make_loader(data, 8, shuffle=True, seed=3, augment=augment)]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not all(torch.equal(a[0], b) for a, b in zip(first, plain))  # the images were augmented
    # Targets and batch order are the shuffled loader's (the first epoch draws its order first).
    assert torch.equal(first[0][1], next(iter(make_loader(data, 8, shuffle=True, seed=3)))[1])
    with pytest.raises(ValueError, match="shuffled"):
        make_loader(data, 8, shuffle=False, augment=augment)


def test_clients_augment_their_training_data_as_configured() -> None:
    from clients.base import BaseClient, ClientSetup
    from fedapp.registry import get_algorithm
    from flwr.app import RecordDict

    from fedapp.data import federate

    def loader(**changes):
        values = {**RunConfig.default_values(), "dataset": "lt-digits", **changes}
        config = RunConfig.from_kebab(values)
        client = BaseClient(ClientSetup(config, 0, federate(config, 3), torch.device("cpu"), RecordDict(),
                                        get_algorithm(config.algorithm)))
        return client.train_loader({"server-round": 1})

    assert AUTO_AUGMENT["lt-digits"] == "none"  # chosen on the validation split (fedapp.data.augment)
    assert not isinstance(loader(), AugmentedLoader)
    assert loader(augment="crop").augment == BatchAugment(1, False, (0.0,))  # 8x8 digits: padding 1
    assert loader(augment="crop-flip").augment == BatchAugment(1, True, (0.0,))
    assert not isinstance(loader(dataset="ml-digits"), AugmentedLoader)
