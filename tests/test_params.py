import pytest
import torch

from mixgen import MixGenConfig
from mixgen.params import (
    count_pairs,
    sample_boxes,
    sample_lambdas,
    sample_pairs,
    sample_params,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(("batch", "ratio", "expected"),
                         [(64, None, 16), (10, None, 2), (3, None, 0), (1, 0.5, 0),
                          (9, 0.5, 4), (10, 1.0, 10)])
def test_count_pairs_rounds_down(batch, ratio, expected):
    pairing = "first" if (ratio or 0) <= 0.5 else "permute"
    assert count_pairs(batch, ratio=ratio, num_pairs=None, pairing=pairing) == expected


def test_count_pairs_flip_leaves_out_middle_of_odd_batch():
    assert count_pairs(7, ratio=1.0, num_pairs=None, pairing="flip") == 6
    assert len(sample_pairs(7, 6, "flip")[0]) == 6


def test_num_pairs_too_large_names_the_batch():
    with pytest.raises(ValueError, match=r"num_pairs=5 with pairing='first' needs a batch "
                                         r"of at least 10 samples, got a batch of 8"):
        count_pairs(8, ratio=None, num_pairs=5, pairing="first")
    assert count_pairs(8, ratio=None, num_pairs=8, pairing="permute") == 8


def test_first_pairs_i_with_i_plus_m():
    source, partner = sample_pairs(16, 4, "first")
    assert source.tolist() == [0, 1, 2, 3] and partner.tolist() == [4, 5, 6, 7]


@pytest.mark.parametrize("batch", [2, 3, 8, 33])
def test_permute_is_a_cycle_without_self_pairs(batch):
    source, partner = sample_pairs(batch, batch, "permute", gen(batch))
    assert sorted(source.tolist()) == list(range(batch))
    assert sorted(partner.tolist()) == list(range(batch))
    assert bool((source != partner).all())


def test_permute_subset_has_distinct_sources_and_partners():
    source, partner = sample_pairs(32, 8, "permute", gen())
    assert len(set(source.tolist())) == 8 and len(set(partner.tolist())) == 8
    assert bool((source != partner).all())


def test_roll_and_flip_pairs():
    assert sample_pairs(5, 5, "roll")[1].tolist() == [4, 0, 1, 2, 3]
    source, partner = sample_pairs(5, 4, "flip")
    assert source.tolist() == [0, 1, 3, 4] and partner.tolist() == [4, 3, 1, 0]


def test_same_seed_same_pairs_other_seed_other_pairs():
    a = sample_pairs(64, 64, "permute", gen(1))[1]
    b = sample_pairs(64, 64, "permute", gen(1))[1]
    c = sample_pairs(64, 64, "permute", gen(2))[1]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_beta_lambdas_come_from_the_generator_only():
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    a = sample_lambdas(1000, lam=0.5, alpha=0.4, generator=gen(3))
    assert torch.equal(torch.random.get_rng_state(), before)  # global stream untouched
    b = sample_lambdas(1000, lam=0.5, alpha=0.4, generator=gen(3))
    assert torch.equal(a, b)
    assert bool(((a >= 0) & (a <= 1)).all())
    # Beta(0.4, 0.4) is U-shaped and symmetric: mean 0.5, variance 1/(4*(2*0.4+1)) = 0.139
    assert abs(a.mean().item() - 0.5) < 0.05 and abs(a.var().item() - 0.139) < 0.02


def test_fixed_lambda():
    assert sample_lambdas(3, lam=0.7, alpha=None).tolist() == pytest.approx([0.7] * 3)


def test_cutmix_boxes_fit_and_lambda_is_the_exact_area_share():
    lam = torch.tensor([0.5, 0.25, 0.9, 1.0, 0.0])
    boxes, exact = sample_boxes(lam, 20, 30, gen())
    top, left, h, w = boxes.T
    assert bool(((top >= 0) & (left >= 0) & (top + h <= 20) & (left + w <= 30)).all())
    assert torch.allclose(exact, 1 - (h * w).float() / 600)
    assert torch.allclose(exact, lam, atol=0.08)
    assert (h * w)[3] == 0 and (h * w)[4] == 600


def test_probability_p():
    draws = [sample_params(8, (4, 4), p=0.3, generator=gen(s)).num_pairs for s in range(400)]
    applied = sum(d > 0 for d in draws) / len(draws)
    assert set(draws) == {0, 2} and 0.22 < applied < 0.38
    assert sample_params(8, (4, 4), p=0.0).num_pairs == 0


def test_select_keeps_the_larger_weight_and_breaks_ties_by_coin():
    info = sample_params(64, (4, 4), alpha=1.0, ratio=1.0, pairing="permute",
                         text_op="select", generator=gen())
    assert torch.equal(info.keep_source_text, info.lam > 0.5)
    ties = [sample_params(64, (4, 4), ratio=0.5, text_op="select", generator=gen(s))
            .keep_source_text for s in range(4)]
    kept = torch.cat(ties).float().mean().item()
    assert 0.35 < kept < 0.65


def test_append_targets_follow_the_batch():
    info = sample_params(8, (4, 4), mode="append")
    assert info.target.tolist() == [8, 9] and info.output_size == 10
    replace = sample_params(8, (4, 4))
    assert replace.target.tolist() == [0, 1] and replace.output_size == 8


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"lam": 1.5}, ValueError, r"lam must be in \[0, 1\], got 1.5"),
    ({"lam": "half"}, TypeError, r"lam must be a float in \[0, 1\], got str"),
    ({"p": -0.1}, ValueError, r"p must be in \[0, 1\], got -0.1"),
    ({"ratio": 0.6}, ValueError, r"ratio must be in \[0, 0.5\] with pairing='first'"),
    ({"ratio": 1.2, "pairing": "permute"}, ValueError, r"ratio must be in \[0, 1\]"),
    ({"ratio": 0.2, "num_pairs": 3}, ValueError, r"give either ratio or num_pairs"),
    ({"num_pairs": -1}, ValueError, r"num_pairs must be >= 0"),
    ({"num_pairs": 2.0}, TypeError, r"num_pairs must be an int"),
    ({"alpha": 0.0}, ValueError, r"alpha must be a positive finite float"),
    ({"pairing": "random"}, ValueError, r"pairing must be one of 'first', 'permute'"),
    ({"mode": "grow"}, ValueError, r"mode must be one of 'replace', 'append'"),
    ({"image_op": "blend"}, ValueError, r"image_op must be one of 'mixup'"),
    ({"text_op": "join"}, ValueError, r"text_op must be one of 'concat', 'select'"),
])
def test_bad_options_name_the_argument(options, error, message):
    with pytest.raises(error, match=message):
        MixGenConfig(**options)
