"""Target names as Cloud TPU and GPU users write them, and the facts each carries."""

import pytest

from experiments.targets import catalog
from pixel_rnn_jax.errors import ConfigError


@pytest.mark.parametrize(
    "name, canonical, chips, hosts, topology",
    [
        ("v5e-8", "v5e-8", 8, 1, "v5e:2x4"),  # one 8-chip host
        ("v5litepod-16", "v5e-16", 16, 4, "v5e:4x4"),  # Cloud's own name; 4 chips a host
        ("v5e-256", "v5e-256", 256, 64, "v5e:16x16"),
        ("v4-32", "v4-32", 16, 4, "v4:2x2x4"),  # v4 counts TensorCores: 2 a chip
        ("v5p-128", "v5p-128", 64, 16, "v5p:4x4x4"),
        ("2xv5e-256", "2xv5e-256", 512, 128, "v5e:16x16"),  # multi-slice
        ("h100", "h100", 1, 1, "1x1x1"),
        ("h100x8", "h100x8", 8, 1, "1x1x8"),
        ("H100x16", "h100x16", 16, 2, "1x2x8"),  # two 8-GPU hosts
    ],
)
def test_names_give_chips_hosts_and_topology(name, canonical, chips, hosts, topology):
    target = catalog.parse(name)
    assert (target.name, target.chips, target.hosts, target.topology) == (
        canonical,
        chips,
        hosts,
        topology,
    )
    assert target.chips % target.hosts == 0


def test_megacore_chips_and_their_clock_from_the_mxus():
    v4 = catalog.parse("v4-16")
    assert v4.megacore and v4.platform == "tpu"
    assert v4.chip.clock_hz == pytest.approx(1.05e9, rel=0.01)  # Google's published clock
    assert catalog.parse("v5e-1").chip.clock_hz == pytest.approx(1.5e9, rel=0.01)
    assert catalog.parse("h100x8").platform == "gpu"


@pytest.mark.parametrize("name, suggestion", [("v5e-9", "v5e-8"), ("h1OO", "h100"), ("v5-8", "")])
def test_unknown_names_name_the_nearest_and_the_list(name, suggestion):
    with pytest.raises(ConfigError, match="--target=list") as error:
        catalog.parse(name)
    assert suggestion in str(error.value)


def test_the_listing_names_every_target_with_a_source():
    text = catalog.listing()
    for name in catalog.all_names():
        assert text.count(f"\n{name}:") + text.startswith(f"{name}:") == 1
    for chip in catalog.CHIPS.values():
        assert chip.source in text
