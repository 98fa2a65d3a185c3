"""TrainOptions: the trainer's MixGen options, their flags and their checks."""

import argparse

import pytest

from mixgen import MixGenConfig
from mixgen.train_options import LOSSES, TrainOptions


def parse(argv: list[str]) -> TrainOptions:
    parser = argparse.ArgumentParser()
    TrainOptions.add_arguments(parser)
    return TrainOptions.from_namespace(parser.parse_args(argv))


@pytest.mark.parametrize("options", [
    TrainOptions(),
    TrainOptions(MixGenConfig(ratio=0.5, pairing="permute"), loss="soft", off_epoch=3),
    TrainOptions(MixGenConfig(alpha=0.4, num_pairs=2, mode="append", sep=" - ",
                              image_op="cutmix", text_op="select", p=0.3),
                 loss="mask", mixed_weight=0.25, off_epoch=0),
    TrainOptions(MixGenConfig(pairing="previous", ratio=1.0, lam=0.7, sep="-",
                              multi_caption="pick_one"), mixed_weight=2.0),
])
def test_argv_round_trip(options):
    argv = options.to_argv()
    assert parse(argv) == options
    assert len(argv) == len(set(argv))


def test_to_argv_lists_only_options_off_their_defaults():
    assert TrainOptions().to_argv() == []
    assert TrainOptions(MixGenConfig(lam=0.3), mixed_weight=0.5).to_argv() == [
        "--mixgen-lam=0.3", "--mixgen-mixed-weight=0.5"]
    assert TrainOptions(MixGenConfig(ratio=0.5)).to_argv(prefix="mg-") == ["--mg-ratio=0.5"]


def test_targets_and_mixing_epochs():
    assert TrainOptions().targets is None  # open_clip's own loss
    assert TrainOptions(mixed_weight=0.5).targets == "onehot"
    assert TrainOptions(loss="mask").targets == "mask"
    assert LOSSES == ("clip", "soft", "mask")
    assert [TrainOptions(off_epoch=2).mixing(e) for e in range(4)] == [True, True, False, False]
    assert all(TrainOptions().mixing(e) for e in range(4))


@pytest.mark.parametrize(("fields", "error", "message"), [
    ({"loss": "onehot"}, ValueError,
     "loss (--mixgen-loss) must be one of 'clip', 'soft', 'mask'; got 'onehot'"),
    ({"mixed_weight": 0.0}, ValueError,
     "mixed_weight (--mixgen-mixed-weight) must be a finite float > 0, got 0.0"),
    ({"mixed_weight": float("inf")}, ValueError,
     "mixed_weight (--mixgen-mixed-weight) must be a finite float > 0, got inf"),
    ({"mixed_weight": "1"}, TypeError,
     "mixed_weight (--mixgen-mixed-weight) must be a float > 0, got str"),
    ({"off_epoch": -1}, ValueError, "off_epoch (--mixgen-off-epoch) must be an int >= 0, got -1"),
    ({"off_epoch": 1.5}, ValueError,
     "off_epoch (--mixgen-off-epoch) must be an int >= 0, got 1.5"),
    ({"off_epoch": True}, ValueError,
     "off_epoch (--mixgen-off-epoch) must be an int >= 0, got True"),
    ({"config": {"ratio": 0.5}}, TypeError, "config must be a MixGenConfig, got dict"),
])
def test_each_bad_value_is_one_error_naming_its_flag(fields, error, message):
    with pytest.raises(error) as raised:
        TrainOptions(**fields)
    assert str(raised.value) == message


def test_bad_flags_fail_when_the_options_are_built():
    with pytest.raises(ValueError, match=r"loss \(--mixgen-loss\) must be one of"):
        parse(["--mixgen-loss", "hard"])
    with pytest.raises(ValueError, match="ratio must be in"):
        parse(["--mixgen-ratio", "2"])
