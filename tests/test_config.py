"""MixGenConfig: one frozen dataclass, checked once, taken by every adapter, and the
source of the command-line flags of the scripts that expose MixGen's options."""

import argparse
import dataclasses
import pickle

import pytest
import torch
from helpers import captions, image_batch

import mixgen.wds
from mixgen import MixGen, MixGenCollate, MixGenConfig
from mixgen.hf import BatchTransform

FLAGS = ["lam", "alpha", "ratio", "num-pairs", "pairing", "mode", "p", "image-op",
         "text-op", "sep", "multi-caption"]


def parser_with(prefix=""):
    parser = argparse.ArgumentParser()
    MixGenConfig.add_arguments(parser.add_argument_group("MixGen"), prefix=prefix)
    return parser


def flags_of(parser):
    return [option for action in parser._actions for option in action.option_strings
            if option not in ("-h", "--help")]


@pytest.mark.parametrize("prefix", ["", "mixgen-"])
def test_flags_are_generated_from_the_fields(prefix):
    parser = parser_with(prefix)
    assert flags_of(parser) == [f"--{prefix}{flag}" for flag in FLAGS]
    defaults = MixGenConfig.from_namespace(parser.parse_args([]), prefix=prefix)
    assert defaults == MixGenConfig()
    argv = [f"--{prefix}ratio", "0.5", f"--{prefix}pairing", "permute", f"--{prefix}alpha",
            "0.4", f"--{prefix}image-op", "cutmix", f"--{prefix}sep", " and "]
    config = MixGenConfig.from_namespace(parser.parse_args(argv), prefix=prefix,
                                         return_info=True)
    assert config == MixGenConfig(ratio=0.5, pairing="permute", alpha=0.4, image_op="cutmix",
                                  sep=" and ", return_info=True)


def test_flag_help_and_allowed_values_come_from_the_config():
    text = parser_with("mixgen-").format_help()
    assert "--mixgen-pairing {first,permute,roll,flip,previous}" in text
    assert "--mixgen-image-op {mixup,cutmix,concat}" in text
    help_of = {f.name: f.metadata["help"] for f in dataclasses.fields(MixGenConfig)}
    assert " ".join(help_of["num_pairs"].split()) in " ".join(text.split())


def test_bad_flag_values_raise_the_configs_message():
    args = parser_with().parse_args(["--pairing", "shuffle"])
    with pytest.raises(ValueError, match="pairing must be one of 'first', 'permute'"):
        MixGenConfig.from_namespace(args)
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 0.5\] with pairing='first'"):
        MixGenConfig.from_namespace(parser_with().parse_args(["--ratio", "0.75"]))


def test_frozen_and_replace_checks_again():
    config = MixGenConfig(ratio=0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.ratio = 0.25
    with pytest.raises(ValueError, match="inplace=True cannot be combined with mode='append'"):
        dataclasses.replace(config, mode="append", inplace=True)
    assert pickle.loads(pickle.dumps(config)) == config


def test_resolve_takes_a_config_options_or_both():
    config = MixGenConfig(ratio=0.5, pairing="roll")
    assert MixGenConfig.resolve(config, {}) is config
    assert MixGenConfig.resolve(config, {"mode": "append"}) == MixGenConfig(
        ratio=0.5, pairing="roll", mode="append")
    assert MixGenConfig.resolve(None, {"lam": 0.3}) == MixGenConfig(lam=0.3)
    with pytest.raises(TypeError, match=r"unknown MixGen options \['ration'\]"):
        MixGenConfig.resolve(None, {"ration": 0.5})
    with pytest.raises(TypeError, match="config must be a MixGenConfig, got dict"):
        MixGen({"ratio": 0.5})


def test_every_adapter_mixes_the_same_with_a_config_or_keywords():
    options = {"pairing": "permute", "ratio": 0.5, "alpha": 0.7, "return_info": True}
    config = MixGenConfig(**options)
    images, texts = image_batch(8), captions(8)

    def seeded():
        return torch.Generator().manual_seed(4)

    by_keywords = MixGen(generator=seeded(), **options)(images, texts)
    by_config = MixGen(config, generator=seeded())(images, texts)
    assert torch.equal(by_keywords[0], by_config[0]) and by_keywords[1] == by_config[1]
    samples = list(zip(images, texts, strict=True))
    collated = MixGenCollate(config, generator=seeded())(samples)
    assert torch.equal(collated[0], by_config[0]) and collated[1] == by_config[1]
    (staged,) = mixgen.wds.mixgen(config, generator=seeded())(iter([(images, texts)]))
    assert staged[1] == by_config[1]
    columns = BatchTransform(dataclasses.replace(config, return_info=False),
                             generator=seeded())({"image": images, "text": texts})
    assert columns["text"] == by_config[1]
    assert MixGen(config).config is config and MixGen(config, ratio=0.25).ratio == 0.25
    with pytest.raises(AttributeError, match="MixGen's options are its frozen config"):
        MixGen(config).ratio = 0.25
