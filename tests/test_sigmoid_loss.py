"""MixGenSigLipLoss: open_clip's SigLipLoss with one-hot targets, and against a binary
cross-entropy written out here with plain floats for soft and masked targets and for
mixed_weight; two real gloo ranks against one process on the joined batch."""

import math
import os

import pytest
import torch
import torch.multiprocessing as mp
from helpers import captions, free_port, image_batch, make_info
from helpers import loss_features as features
from open_clip.loss import SigLipLoss

from mixgen import MixGen
from mixgen.losses import MixGenSigLipLoss, affinity

SCALE, BIAS = torch.tensor(3.0), torch.tensor(-1.0)
DIST_IMPLS = ("bidir", "shift", "reduce", "gather")


def sigmoid_loss_by_hand(logits, targets, row_weights, kept=None):
    """``sum_i w_i * l_i / sum_i w_i``, where ``l_i`` is half the sum of the binary
    cross-entropies of image ``i``'s pairs plus half that of caption ``i``'s pairs, each
    pair's with its target ``targets[image][caption]``; a pair not ``kept`` adds 0."""
    z = logits.tolist()
    n = len(z)

    def bce(i, j):
        if kept is not None and not kept[i][j]:
            return 0.0
        t = targets[i][j]  # -log sigmoid(z) = log(1 + e^-z), -log sigmoid(-z) = log(1 + e^z)
        return t * math.log1p(math.exp(-z[i][j])) + (1 - t) * math.log1p(math.exp(z[i][j]))

    rows = [(sum(bce(i, j) for j in range(n)) + sum(bce(j, i) for j in range(n))) / 2
            for i in range(n)]
    return sum(w * loss for w, loss in zip(row_weights, rows, strict=True)) / sum(row_weights)


def targets_of(info, targets):
    """``(targets, kept)`` as plain lists: the affinity (soft), or one-hot with the
    partial positives left out (mask), or one-hot."""
    rows = info.output_size
    eye = torch.eye(rows).tolist()
    block = affinity(info)
    if targets == "soft":
        return block.tolist(), None
    if targets == "mask":
        partial = (block > 0) & ~torch.eye(rows, dtype=torch.bool)
        return eye, (~partial).tolist()
    return eye, None


@pytest.mark.parametrize("weight", [1.0, 0.5])
@pytest.mark.parametrize("mode", ["replace", "append"])
@pytest.mark.parametrize("targets", ["onehot", "soft", "mask"])
def test_equals_the_binary_cross_entropy_by_hand(targets, mode, weight):
    _, _, info = MixGen(num_pairs=2, lam=0.3, mode=mode, return_info=True)(
        image_batch(6), captions(6))
    rows = info.output_size
    image, text = features(rows, seed=3)
    logits = SCALE * image @ text.T + BIAS
    mixed = set(info.target.tolist())
    table, kept = targets_of(info, targets)
    expected = sigmoid_loss_by_hand(logits, table, [weight if r in mixed else 1.0
                                                    for r in range(rows)], kept)
    loss = MixGenSigLipLoss(targets, mixed_weight=weight)
    value = loss(image, text, SCALE, BIAS, mixgen_info=info)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(loss.loss_from_logits(logits, info), value)
    if targets != "onehot" or weight != 1.0:  # the info changes the loss
        plain = SigLipLoss()(image, text, SCALE, BIAS)
        assert value.item() != pytest.approx(plain.item(), rel=1e-4)


def test_soft_targets_of_one_pair_by_hand():
    # B=4, row 0 = mix of 0 (lam 0.5) and 2: image 0 with caption 2 and image 2 with
    # caption 0 are pairs of target 1/2; the own pairs 1; the others 0
    info = make_info([0], [2], [0.5])
    image, text = features(4)
    z = (SCALE * image @ text.T + BIAS).tolist()
    total = 0.0
    for i in range(4):
        for j in range(4):
            t = 1.0 if i == j else 0.5 if {i, j} == {0, 2} else 0.0
            total -= (t * math.log(1 / (1 + math.exp(-z[i][j])))
                      + (1 - t) * math.log(1 / (1 + math.exp(z[i][j]))))
    loss = MixGenSigLipLoss("soft")(image, text, SCALE, BIAS, mixgen_info=info)
    assert loss.item() == pytest.approx(total / 4, rel=1e-6)


@pytest.mark.parametrize("targets", ["soft", "mask", "onehot"])
def test_equals_siglip_loss_when_nothing_is_partly_positive(targets):
    image, text = features(6)
    reference = SigLipLoss()(image, text, SCALE, BIAS)
    loss = MixGenSigLipLoss(targets)
    assert torch.equal(loss(image, text, SCALE, BIAS), reference)
    unmixed = make_info([], [], [], batch_size=6)
    assert torch.equal(loss(image, text, SCALE, BIAS, mixgen_info=unmixed), reference)
    _, _, flipped = MixGen(ratio=1.0, pairing="flip", return_info=True)(
        image_batch(6), captions(6))  # every partner is itself a mixed row
    assert torch.equal(loss(image, text, SCALE, BIAS, mixgen_info=flipped), reference)
    as_dict = loss(image, text, SCALE, BIAS, output_dict=True, mixgen_info=unmixed)
    assert as_dict.keys() == {"contrastive_loss"}
    assert torch.equal(as_dict["contrastive_loss"], reference)
    logits = SCALE * image @ text.T + BIAS
    torch.testing.assert_close(loss.loss_from_logits(logits), reference)


def test_onehot_is_siglip_loss_exactly_and_mixed_weight_one_changes_nothing():
    image, text = features(4)
    info = make_info([0], [2], [0.5])
    reference = SigLipLoss()(image, text, SCALE, BIAS)
    assert torch.equal(MixGenSigLipLoss("onehot")(image, text, SCALE, BIAS, mixgen_info=info),
                       reference)
    for targets in ("soft", "mask"):
        assert torch.equal(
            MixGenSigLipLoss(targets, mixed_weight=1)(image, text, SCALE, BIAS,
                                                      mixgen_info=info),
            MixGenSigLipLoss(targets)(image, text, SCALE, BIAS, mixgen_info=info))


def loss_by_formula(image, text, scale, bias, info, targets, weight):
    """The loss with torch's binary cross-entropy (differentiable): pair (i, j) weighs
    ``(w_i + w_j) / 2``, the sum divided by ``sum_i w_i``."""
    rows = info.output_size
    block = affinity(info)
    eye = torch.eye(rows)
    pair_weights = torch.ones(rows, rows)
    if targets == "mask":
        pair_weights = ((block == 0) | (eye == 1)).float()
    row = torch.ones(rows)
    row[info.target] = weight
    pair_weights = pair_weights * (row[:, None] + row[None, :]) / 2
    logits = scale * image @ text.T + bias
    return torch.nn.functional.binary_cross_entropy_with_logits(
        logits, block if targets == "soft" else eye, weight=pair_weights,
        reduction="sum") / row.sum()


@pytest.mark.parametrize("weight", [1.0, 0.25])
@pytest.mark.parametrize("targets", ["soft", "mask", "onehot"])
def test_gradients_equal_those_of_the_formula(targets, weight):
    _, _, info = MixGen(num_pairs=1, mode="append", return_info=True)(
        image_batch(4), captions(4))
    grads = []
    for loss_fn in (lambda *inputs: MixGenSigLipLoss(targets, mixed_weight=weight)(
                        *inputs, mixgen_info=info),
                    lambda *inputs: loss_by_formula(*inputs, info, targets, weight)):
        image, text = features(5, requires_grad=True)
        scale = torch.tensor(2.0, requires_grad=True)
        bias = torch.tensor(-1.0, requires_grad=True)
        loss_fn(image, text, scale, bias).backward()
        grads.append((image.grad, text.grad, scale.grad, bias.grad))
    for grad, expected in zip(*grads, strict=True):
        torch.testing.assert_close(grad, expected)


def test_bad_input_names_the_argument():
    image, text = features(4)
    with pytest.raises(ValueError, match="targets must be one of"):
        MixGenSigLipLoss("hard")
    with pytest.raises(ValueError, match="mixed_weight must be a finite float > 0"):
        MixGenSigLipLoss("soft", mixed_weight=0.0)
    with pytest.raises(TypeError, match="mixgen_info must be a MixGenInfo"):
        MixGenSigLipLoss()(image, text, SCALE, BIAS, mixgen_info={"source": [0]})
    with pytest.raises(ValueError, match="mixgen_info describes a batch of 5 rows but "
                                         "image_features has 4"):
        MixGenSigLipLoss()(image, text, SCALE, BIAS,
                           mixgen_info=make_info([0], [2], [0.5], mode="append"))
    with pytest.raises(ValueError, match="but logits_per_image has 3"):
        MixGenSigLipLoss().loss_from_logits(torch.zeros(3, 3), make_info([0], [2], [0.5]))


# ------------------------------------------------------------------ two real gloo ranks
def _rank_losses(rank, world_size, port, image, text, infos, out_dir):
    """Each rank's loss and its features' gradients, for every targets, weight and
    dist_impl; written to ``out_dir/rank{rank}.pt``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        rows = image.shape[0] // world_size
        mine = slice(rank * rows, (rank + 1) * rows)
        results = {}
        for impl in DIST_IMPLS:
            for targets in ("soft", "mask", "onehot"):
                for weight in (1.0, 0.5):
                    mine_image = image[mine].clone().requires_grad_(True)
                    mine_text = text[mine].clone().requires_grad_(True)
                    loss = MixGenSigLipLoss(targets, mixed_weight=weight, rank=rank,
                                            world_size=world_size, dist_impl=impl)
                    value = loss(mine_image, mine_text, SCALE, BIAS, mixgen_info=infos[rank])
                    value.backward()
                    results[f"{impl} {targets} {weight}"] = (
                        value.item(), mine_image.grad, mine_text.grad)
            plain = SigLipLoss(rank=rank, world_size=world_size, dist_impl=impl)
            results[f"{impl} open_clip"] = plain(image[mine], text[mine], SCALE, BIAS).item()
        torch.save(results, out_dir / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process_on_the_joined_batch(tmp_path):
    """The mean of the ranks' losses is the loss of the joined batch, whose targets are
    the ranks' blocks on the diagonal (the captions of the other rank are negatives);
    each rank's gradients are those of the sum of the ranks' losses."""
    image, text = features(8)
    infos = [make_info([0], [2], [0.5]), make_info([1], [0], [0.25])]
    joined = make_info([0, 5], [2, 4], [0.5, 0.25], batch_size=8)
    assert torch.equal(affinity(joined), torch.block_diag(*map(affinity, infos)))
    mp.spawn(_rank_losses, args=(2, free_port(), image, text, infos, tmp_path), nprocs=2)
    results = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    for targets in ("soft", "mask", "onehot"):
        for weight in (1.0, 0.5):
            joined_image, joined_text = image.clone().requires_grad_(True), \
                text.clone().requires_grad_(True)
            expected = MixGenSigLipLoss(targets, mixed_weight=weight)(
                joined_image, joined_text, SCALE, BIAS, mixgen_info=joined)
            (2 * expected).backward()  # the ranks' losses summed
            table, kept = targets_of(joined, targets)
            weights = [weight if r in (0, 5) else 1.0 for r in range(8)]
            by_hand = sigmoid_loss_by_hand(SCALE * image @ text.T + BIAS, table, weights, kept)
            assert expected.item() == pytest.approx(by_hand, rel=1e-6)
            for impl in DIST_IMPLS:
                key = f"{impl} {targets} {weight}"
                mean = (results[0][key][0] + results[1][key][0]) / 2
                assert mean == pytest.approx(expected.item(), rel=1e-6), key
                for rank, mine in ((0, slice(0, 4)), (1, slice(4, 8))):
                    torch.testing.assert_close(results[rank][key][1], joined_image.grad[mine])
                    torch.testing.assert_close(results[rank][key][2], joined_text.grad[mine])
    plain = SigLipLoss()(image, text, SCALE, BIAS).item()
    for impl in DIST_IMPLS:
        mean = (results[0][f"{impl} open_clip"] + results[1][f"{impl} open_clip"]) / 2
        assert mean == pytest.approx(plain, rel=1e-6)
        assert results[0][f"{impl} onehot 1.0"][0] == results[0][f"{impl} open_clip"]
