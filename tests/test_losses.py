import json
import math
import os

import pytest
import torch
import torch.multiprocessing as mp
from helpers import captions, free_port, image_batch, make_info
from helpers import loss_features as features
from open_clip.loss import ClipLoss

from mixgen import MixGen
from mixgen.losses import MixGenClipLoss, affinity, target_weights


def soft_cross_entropy_by_hand(logits, targets):
    """Mean over rows of -sum_c p_c * log softmax(logits)_c, in plain Python floats."""
    total = 0.0
    for row, probs in zip(logits.tolist(), targets, strict=True):
        log_norm = math.log(sum(math.exp(x) for x in row))
        total -= sum(p * (x - log_norm) for x, p in zip(row, probs, strict=True) if p)
    return total / len(targets)


def test_soft_targets_of_one_pair_by_hand():
    # B=4, row 0 = mix of 0 (lam 0.5) and 2: image 0 <-> caption 2 and image 2 <-> caption 0
    # are partial positives of weight 0.5 beside 1 for the own pair: 2/3 and 1/3 per row.
    info = make_info([0], [2], [0.5])
    image, text = features(4)
    scale = torch.tensor(3.0)
    third = 1 / 3
    targets = [[2 * third, 0, third, 0], [0, 1, 0, 0], [third, 0, 2 * third, 0], [0, 0, 0, 1]]
    logits = scale * image @ text.T
    expected = (soft_cross_entropy_by_hand(logits, targets)
                + soft_cross_entropy_by_hand(logits.T, targets)) / 2
    loss = MixGenClipLoss()(image, text, scale, mixgen_info=info)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert loss.item() != pytest.approx(ClipLoss()(image, text, scale).item(), rel=1e-3)


@pytest.mark.parametrize("targets", ["soft", "mask", "onehot"])
@pytest.mark.parametrize("info", [make_info([0], [2], [0.5]), None])
def test_loss_from_logits_equals_the_loss_of_features(targets, info):
    """A model that computes its own logits (transformers' CLIPOutput) gets the same loss."""
    image, text = features(4)
    scale = torch.tensor(3.0)
    loss = MixGenClipLoss(targets)
    logits = scale * image @ text.T
    expected = loss(image, text, scale, mixgen_info=info)
    torch.testing.assert_close(loss.loss_from_logits(logits, logits.T, info), expected)
    with pytest.raises(ValueError, match="describes a batch of 4 rows but logits_per_image "
                                         "has 3"):
        MixGenClipLoss().loss_from_logits(logits[:3, :3], logits[:3, :3], make_info(
            [0], [2], [0.5]))


def test_affinity_replace_first_from_mixgen():
    _, _, info = MixGen(num_pairs=2, lam=0.25, return_info=True)(image_batch(5), captions(5))
    expected = torch.eye(5)
    expected[0, 2] = expected[2, 0] = expected[1, 3] = expected[3, 1] = 0.75
    assert torch.equal(affinity(info), expected)


def test_affinity_append_mode_source_row_is_a_partial_positive_too():
    _, _, info = MixGen(num_pairs=1, lam=0.3, mode="append", return_info=True)(
        image_batch(4), captions(4))
    expected = torch.eye(5)
    expected[4, 1] = expected[1, 4] = 0.7      # partner 1 (pair 0 with 0 + M = 1)
    expected[4, 0] = expected[0, 4] = 0.3      # source 0 keeps its original row
    torch.testing.assert_close(affinity(info), expected)
    image, text = features(5)
    targets = (expected / expected.sum(1, keepdim=True)).tolist()
    targets_t = (expected.T / expected.T.sum(1, keepdim=True)).tolist()
    logits = 2.0 * image @ text.T
    by_hand = (soft_cross_entropy_by_hand(logits, targets)
               + soft_cross_entropy_by_hand(logits.T, targets_t)) / 2
    loss = MixGenClipLoss()(image, text, torch.tensor(2.0), mixgen_info=info)
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)


def test_overwritten_partners_are_not_counted():
    # roll: pairs (0, 3) and (1, 0); row 0 is itself mixed, so only pair (0, 3) counts
    _, _, info = MixGen(num_pairs=2, pairing="roll", return_info=True)(
        image_batch(4), captions(4))
    assert info.source.tolist() == [0, 1] and info.partner.tolist() == [3, 0]
    expected = torch.eye(4)
    expected[0, 3] = expected[3, 0] = 0.5
    assert torch.equal(affinity(info), expected)


def test_caption_select_weighs_the_caption_by_whose_it_is():
    keep = torch.tensor([True, False])
    info = make_info([0, 1], [2, 3], [0.75, 0.25], batch_size=4, mode="append",
                     keep_source_text=keep)
    a = affinity(info)
    # pair 0 (row 4) kept the source caption: image 2 shares nothing with caption 4,
    # image 0 is fully described by it; pair 1 (row 5) carries caption 3
    assert a[4, 2].item() == 0.25 and a[2, 4].item() == 0.0
    assert a[4, 0].item() == 0.75 and a[0, 4].item() == 1.0
    assert a[5, 3].item() == 0.75 and a[3, 5].item() == 1.0
    assert a[5, 1].item() == 0.25 and a[1, 5].item() == 0.0


@pytest.mark.parametrize("targets", ["soft", "mask", "onehot"])
def test_equals_clip_loss_when_nothing_is_partly_positive(targets):
    image, text = features(6)
    scale, bias = torch.tensor(4.0), torch.tensor(-1.0)
    reference = ClipLoss()(image, text, scale)
    loss = MixGenClipLoss(targets)
    assert torch.equal(loss(image, text, scale), reference)
    unmixed = make_info([], [], [], batch_size=6)
    assert torch.equal(loss(image, text, scale, mixgen_info=unmixed), reference)
    # flip over the whole batch in replace mode: every partner is itself a mixed row
    _, _, flipped = MixGen(ratio=1.0, pairing="flip", return_info=True)(
        image_batch(6), captions(6))
    assert torch.equal(loss(image, text, scale, mixgen_info=flipped), reference)
    with_bias = loss(image, text, scale, bias, output_dict=True, mixgen_info=unmixed)
    assert torch.equal(with_bias["contrastive_loss"], ClipLoss()(image, text, scale, bias))


def test_onehot_ignores_the_info():
    image, text = features(4)
    info = make_info([0], [2], [0.5])
    scale = torch.tensor(3.0)
    assert torch.equal(MixGenClipLoss("onehot")(image, text, scale, mixgen_info=info),
                       ClipLoss()(image, text, scale))


def test_mask_removes_partial_positives_from_the_denominators():
    info = make_info([0], [2], [0.5])
    image, text = features(4)
    logits = 3.0 * image @ text.T
    total = 0.0
    for matrix in (logits.tolist(), logits.T.tolist()):
        for r, row in enumerate(matrix):
            kept = [x for c, x in enumerate(row) if {r, c} != {0, 2}]
            total += math.log(sum(math.exp(x) for x in kept)) - row[r]
    loss = MixGenClipLoss("mask")(image, text, torch.tensor(3.0), mixgen_info=info)
    assert loss.item() == pytest.approx(total / 8, rel=1e-6)


def loss_by_formula(image, text, scale, weights, targets):
    """The soft or masked loss written out with plain torch ops (differentiable)."""
    logits = scale * image @ text.T
    if targets == "soft":
        return -sum((w / w.sum(1, keepdim=True) * x.log_softmax(1)).sum(1).mean()
                    for x, w in ((logits, weights), (logits.T, weights.T))) / 2
    partial = (weights > 0) & ~torch.eye(len(weights), dtype=torch.bool)
    labels = torch.arange(len(weights))
    return sum(torch.nn.functional.cross_entropy(x.masked_fill(m, -torch.inf), labels)
               for x, m in ((logits, partial), (logits.T, partial.T))) / 2


@pytest.mark.parametrize("targets", ["soft", "mask"])
def test_gradients_equal_those_of_the_formula(targets):
    _, _, info = MixGen(num_pairs=1, mode="append", return_info=True)(
        image_batch(4), captions(4))
    grads = []
    for loss_fn in (lambda *inputs: MixGenClipLoss(targets)(*inputs, mixgen_info=info),
                    lambda *inputs: loss_by_formula(*inputs, affinity(info), targets)):
        image, text = features(5, requires_grad=True)
        scale = torch.tensor(2.0, requires_grad=True)
        loss_fn(image, text, scale).backward()
        grads.append((image.grad, text.grad, scale.grad))
    for grad, expected in zip(*grads, strict=True):
        torch.testing.assert_close(grad, expected)


def weighted_loss_by_hand(logits, targets, row_weights):
    """sum_i w_i * (CE(image row i) + CE(text row i)) / 2 / sum_i w_i, in plain floats;
    ``targets[r][c]`` relates image r to caption c (rows normalised here)."""
    def row_losses(matrix, rows):
        losses = []
        for row, probs in zip(matrix, rows, strict=True):
            total = sum(probs)
            log_norm = math.log(sum(math.exp(x) for x in row if x != -math.inf))
            losses.append(-sum(p / total * (x - log_norm)
                               for x, p in zip(row, probs, strict=True) if p))
        return losses
    columns = [list(col) for col in zip(*targets, strict=True)]
    image = row_losses(logits.tolist(), targets)
    text = row_losses(logits.T.tolist(), columns)
    return (sum(w * (i + t) / 2 for w, i, t in zip(row_weights, image, text, strict=True))
            / sum(row_weights))


@pytest.mark.parametrize("mode", ["replace", "append"])
@pytest.mark.parametrize("targets", ["onehot", "soft", "mask"])
def test_mixed_weight_is_a_weighted_mean_over_rows(targets, mode):
    _, _, info = MixGen(num_pairs=2, lam=0.3, mode=mode, return_info=True)(
        image_batch(6), captions(6))
    rows = info.output_size
    image, text = features(rows, seed=3)
    scale = torch.tensor(2.5)
    logits = scale * image @ text.T
    mixed = set(info.target.tolist())
    weights = [0.5 if r in mixed else 1.0 for r in range(rows)]
    if targets == "soft":
        table = affinity(info).tolist()
    else:
        table = torch.eye(rows).tolist()
        if targets == "mask":  # partial positives leave the denominators
            partial = (affinity(info) > 0) & ~torch.eye(rows, dtype=torch.bool)
            logits = logits.masked_fill(partial, -math.inf)
    expected = weighted_loss_by_hand(logits, table, weights)
    loss = MixGenClipLoss(targets, mixed_weight=0.5)(image, text, scale, mixgen_info=info)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    unweighted = MixGenClipLoss(targets)(image, text, scale, mixgen_info=info)
    assert loss.item() != pytest.approx(unweighted.item(), rel=1e-4)
    assert torch.equal(MixGenClipLoss(targets, mixed_weight=1)(image, text, scale,
                                                               mixgen_info=info), unweighted)


def test_mixed_weight_needs_a_positive_finite_float():
    for bad, error in ((0.0, ValueError), (-1, ValueError), (math.inf, ValueError),
                       (True, TypeError), ("0.5", TypeError)):
        with pytest.raises(error, match="mixed_weight must be"):
            MixGenClipLoss("onehot", mixed_weight=bad)


def test_rank_offsets_the_columns():
    info = make_info([0], [2], [0.5])
    block = affinity(info)
    image_rows, text_rows = target_weights(info, rank=1, world_size=3)
    assert image_rows.shape == text_rows.shape == (4, 12)
    assert torch.equal(image_rows[:, 4:8], block) and torch.equal(text_rows[:, 4:8], block.T)
    assert image_rows[:, :4].abs().sum() == 0 and image_rows[:, 8:].abs().sum() == 0
    single, _ = target_weights(info)
    assert torch.equal(single, block)


def test_bad_input_names_the_argument():
    image, text = features(4)
    scale = torch.tensor(1.0)
    with pytest.raises(ValueError, match="targets must be one of"):
        MixGenClipLoss("hard")
    with pytest.raises(TypeError, match="mixgen_info must be a MixGenInfo"):
        MixGenClipLoss()(image, text, scale, mixgen_info={"source": [0]})
    with pytest.raises(ValueError, match="mixgen_info describes a batch of 5 rows"):
        MixGenClipLoss()(image, text, scale,
                         mixgen_info=make_info([0], [2], [0.5], mode="append"))
    with pytest.raises(ValueError, match="rank must be in"):
        target_weights(make_info([0], [2], [0.5]), rank=2, world_size=2)


# ------------------------------------------------------------------ two real gloo ranks
def _rank_losses(rank, world_size, port, image, text, infos, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        rows = image.shape[0] // world_size
        mine = slice(rank * rows, (rank + 1) * rows)
        scale = torch.tensor(3.0)
        results = {}
        for name, options in (("global", {}), ("local", {"local_loss": True}),
                              ("with_grad", {"local_loss": True, "gather_with_grad": True})):
            for targets in ("soft", "mask", "onehot"):
                for weight in (1.0, 0.5):
                    loss = MixGenClipLoss(targets, mixed_weight=weight, rank=rank,
                                          world_size=world_size, **options)
                    results[f"{name} {targets} {weight}"] = loss(
                        image[mine], text[mine], scale, mixgen_info=infos[rank]).item()
        (out_dir / f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process_on_the_joined_batch(tmp_path):
    image, text = features(8)
    infos = [make_info([0], [2], [0.5]), make_info([1], [0], [0.25])]
    joined = make_info([0, 5], [2, 4], [0.5, 0.25], batch_size=8)
    mp.spawn(_rank_losses, args=(2, free_port(), image, text, infos, tmp_path), nprocs=2)
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    scale = torch.tensor(3.0)
    for targets in ("soft", "mask", "onehot"):
        for weight in (1.0, 0.5):
            expected = MixGenClipLoss(targets, mixed_weight=weight)(
                image, text, scale, mixgen_info=joined).item()
            for rank in (0, 1):  # the global rows, weighted across both ranks
                assert results[rank][f"global {targets} {weight}"] == pytest.approx(
                    expected, rel=1e-6)
        expected = MixGenClipLoss(targets)(image, text, scale, mixgen_info=joined).item()
        for name in ("local", "with_grad"):
            mean = (results[0][f"{name} {targets} 1.0"] + results[1][f"{name} {targets} 1.0"]) / 2
            assert mean == pytest.approx(expected, rel=1e-6)
