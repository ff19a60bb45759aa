"""Config fields described once: TrainConfig's checks, the CLI's flags and the Train form read FIELDS."""

import dataclasses

import pytest

from collab_core.cli import CONFIG_FIELDS, build_parser
from collab_core.config import FIELDS, TrainConfig
from collab_core.errors import ConfigError


def test_every_config_field_is_described_once_and_has_its_flag():
    assert tuple(FIELDS) == tuple(f.name for f in dataclasses.fields(TrainConfig)) == CONFIG_FIELDS
    unset = build_parser().parse_args(["train"])
    assert all(getattr(unset, name) is None for name in FIELDS)  # an unset flag leaves the preset's value
    flagged = build_parser().parse_args(["train", "--factors", "8", "--y-range", "1", "5", "--sparse"])
    assert (flagged.n_factors, flagged.y_range, flagged.sparse) == (8, [1.0, 5.0], True)


@pytest.mark.parametrize("name", [n for n, f in FIELDS.items() if f.low is not None])
def test_bounds_are_the_ones_validation_enforces(name):
    f = FIELDS[name]
    step = 1 if f.kind is int else 1e-9
    for value, ok in ((f.low, not f.open_low), (f.high, not f.open_high), (f.low - step, False),
                      (f.high + step, False)):  # fmt: skip
        if ok:
            TrainConfig(**{name: value})
        else:
            with pytest.raises(ConfigError, match=f"^{name} must be"):
                TrainConfig(**{name: value})


@pytest.mark.parametrize("name", [n for n, f in FIELDS.items() if f.choices])
def test_choices_are_the_ones_validation_enforces(name):
    for choice in FIELDS[name].choices:
        TrainConfig(**{name: choice})
    with pytest.raises(ConfigError, match=f"unknown {name} 'nope'; choose one of"):
        TrainConfig(**{name: "nope"})
