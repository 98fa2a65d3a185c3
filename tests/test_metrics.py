"""Retrieval metrics against a hand-computed example and a brute-force reference;
confidence intervals against scipy."""

import math

import pytest
import torch

from mixgen_bench.metrics import (
    mean_confidence_interval,
    paired_difference,
    rank_metrics,
    retrieval_metrics,
    retrieval_ranks,
    student_t_quantile,
)

# 3 images, 4 captions: image 0 owns captions 0 and 1, image 1 caption 2, image 2 caption 3.
SCORES = torch.tensor([[0.90, 0.10, 0.80, 0.30],
                       [0.20, 0.70, 0.60, 0.50],
                       [0.40, 0.95, 0.30, 0.10]])
OWNER = torch.tensor([0, 0, 1, 2])


def test_ranks_of_the_hand_computed_example():
    image_ranks, text_ranks = retrieval_ranks(SCORES, OWNER)
    # image 0: best own caption 0.90 beats every other caption -> 1
    # image 1: own 0.60, beaten by caption 1 (0.70) -> 2
    # image 2: own 0.10, beaten by all three others -> 4
    assert image_ranks.tolist() == [1, 2, 4]
    # caption 0: image 0 best (0.90) -> 1; caption 1: 0.10 < 0.70, 0.95 -> 3
    # caption 2: 0.60 < 0.80 -> 2; caption 3: 0.10 < 0.30, 0.50 -> 3
    assert text_ranks.tolist() == [1, 3, 2, 3]


def test_metrics_of_the_hand_computed_example():
    image_ranks, text_ranks = retrieval_ranks(SCORES, OWNER)
    i2t, t2i = rank_metrics(image_ranks, "i2t"), rank_metrics(text_ranks, "t2i")
    assert i2t == pytest.approx({"i2t_R@1": 100 / 3, "i2t_R@5": 100.0, "i2t_R@10": 100.0,
                                 "i2t_mean_rank": 7 / 3, "i2t_median_rank": 2.0})
    assert t2i == pytest.approx({"t2i_R@1": 25.0, "t2i_R@5": 100.0, "t2i_R@10": 100.0,
                                 "t2i_mean_rank": 2.25, "t2i_median_rank": 2.5})


def test_ranks_match_a_brute_force_reference():
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand((7, 15), generator=generator)
    owner = torch.cat([torch.arange(7), torch.randint(7, (8,), generator=generator)])
    image_ranks, text_ranks = retrieval_ranks(scores, owner)
    for image in range(7):  # position of the first own caption in the sorted list
        order = scores[image].argsort(descending=True).tolist()
        first = min(order.index(t) for t in range(15) if owner[t] == image)
        assert image_ranks[image] == first + 1
    for text in range(15):
        order = scores[:, text].argsort(descending=True).tolist()
        assert text_ranks[text] == order.index(int(owner[text])) + 1


def test_retrieval_metrics_uses_cosine_similarity_and_recall_at_k():
    image_features = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    text_features = torch.tensor([[5.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])  # 3rd is opposite
    metrics = retrieval_metrics(image_features, text_features)
    # image 2 at 45 degrees: captions 0 and 1 (cos 0.707) beat its own (cos -1) -> rank 3
    assert metrics["i2t_R@1"] == pytest.approx(200 / 3)
    assert metrics["i2t_mean_rank"] == pytest.approx(5 / 3)
    assert metrics["t2i_R@1"] == pytest.approx(200 / 3)


def test_ties_count_against_the_true_match():
    image_ranks, text_ranks = retrieval_ranks(torch.zeros(4, 4), torch.arange(4))
    assert image_ranks.tolist() == [4] * 4 and text_ranks.tolist() == [4] * 4


@pytest.mark.parametrize(("owner", "message"), [
    (torch.tensor([0, 0, 1]), "4 image indices"),
    (torch.tensor([0, 0, 1, 5]), "indices in"),
    (torch.tensor([0, 0, 1, 1]), "without a caption"),
])
def test_bad_text_to_image_raises(owner, message):
    with pytest.raises(ValueError, match=message):
        retrieval_ranks(SCORES, owner)


def test_student_t_quantile_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 4, 30):
        for probability in (0.9, 0.975):
            assert student_t_quantile(probability, df) == pytest.approx(
                stats.t.ppf(probability, df), rel=1e-5)


def test_mean_confidence_interval_by_hand():
    stats = mean_confidence_interval([1.0, 2.0, 3.0])
    half = 4.302653 / math.sqrt(3)  # t(0.975, 2) * std 1 / sqrt(n)
    assert stats["mean"] == 2.0 and stats["std"] == 1.0 and stats["n"] == 3
    assert stats["ci_low"] == pytest.approx(2 - half, abs=1e-5)
    assert stats["ci_high"] == pytest.approx(2 + half, abs=1e-5)
    assert mean_confidence_interval([4.0]) == {"mean": 4.0, "std": None, "ci_low": None,
                                               "ci_high": None, "n": 1}


def test_paired_difference_is_per_pair():
    stats = paired_difference([3.0, 5.0, 4.0], [1.0, 2.0, 3.0])
    assert stats["differences"] == [2.0, 3.0, 1.0]
    assert stats["mean"] == 2.0 and stats["std"] == 1.0
    with pytest.raises(ValueError, match="pairs need one of each"):
        paired_difference([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="values must not be empty"):
        mean_confidence_interval([])
