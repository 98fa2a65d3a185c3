"""Checkpoint selection: the evaluated epochs and the best validation point."""

import pytest

from mixgen_bench.selection import best_point, eval_epochs, save_every, validation_score


@pytest.mark.parametrize(("epochs", "expected"), [
    (1, [1]),
    (5, [1, 2, 3, 4, 5]),  # fewer epochs than points: every epoch
    (8, [1, 2, 3, 4, 5, 6, 7, 8]),
    (20, [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]),
    (30, [3, 6, 9, 12, 15, 18, 21, 24, 27, 30]),
    (64, [8, 16, 24, 32, 40, 48, 56, 64]),
    (67, [8, 16, 24, 32, 40, 48, 56, 64, 67]),  # the last epoch always
])
def test_eval_epochs_are_evenly_spaced_and_end_at_the_last(epochs, expected):
    assert eval_epochs(epochs, 8) == expected
    # open_clip_train saves every save_every-th epoch and the last: exactly these
    every = save_every(epochs, 8)
    assert [e for e in range(1, epochs + 1) if e % every == 0 or e == epochs] == expected


def test_best_point_takes_the_highest_score_and_the_earliest_of_a_tie():
    curve = [{"epoch": e, "val_score": s} for e, s in ((1, 10.0), (2, 30.0), (3, 30.0),
                                                          (4, 20.0))]
    assert best_point(curve)["epoch"] == 2
    assert best_point(curve[2:])["epoch"] == 3
    assert validation_score({"i2t_R@1": 20.0, "t2i_R@1": 31.0, "i2t_R@5": 99.0}) == 25.5
    with pytest.raises(ValueError, match="curve must hold"):
        best_point([])
