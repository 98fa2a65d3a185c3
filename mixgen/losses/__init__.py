"""Contrastive losses whose targets know about MixGen's partial positives.

With MixGen's default the partner ``j`` of a mixed pair stays in the batch, so a plain
contrastive loss counts the mixed image against caption ``j`` (and image ``j`` against
the mixed caption) as negatives, although they partly match. Each loss family has one
class that takes its targets from the :class:`~mixgen.MixGenInfo` that
``MixGen(return_info=True)`` returns:

- :class:`MixGenClipLoss`, open_clip's ``ClipLoss`` (CLIP's softmax cross-entropy),
  in :mod:`mixgen.losses.clip`;
- :class:`MixGenSigLipLoss`, open_clip's ``SigLipLoss`` (SigLIP's binary cross-entropy
  per pair), in :mod:`mixgen.losses.sigmoid`.

What they share, in :mod:`mixgen.losses.targets`: the targets come from an affinity
matrix ``A`` of one rank's output batch, ``A[r, c]`` relating image ``r`` to caption
``c``: 1 on the diagonal (each row's own pair), and for each pair ``k`` with source
``s``, partner ``j``, output row ``t``, image share ``lam`` of the source and caption
share ``mu`` of the source (``mu = lam`` for joined captions; 1 or 0 for
``text_op="select"``):

- ``A[t, j] = 1 - lam`` and ``A[j, t] = 1 - mu``, only where row ``j`` still holds the
  original sample ``j`` (in ``replace`` mode a partner may itself be a mixed row);
- ``append`` mode keeps the source's original row as well: ``A[t, s] = lam``,
  ``A[s, t] = mu``.

Two mixed rows are never related to each other. With ``pairing="previous"`` the partner
is a row of the previous batch (``info.partner_in_batch`` is False): its pair is not in
the batch scored, so it gets no entry; in ``replace`` mode the targets are one-hot.

``targets="soft"``: the softmax loss normalises each row of ``A`` (image to text) and each
column (text to image) to sum to 1; with ``lam = 0.5`` in ``replace`` mode the mixed image
puts 2/3 on its own caption and 1/3 on its partner's, and the partner's image 2/3 on its
own caption and 1/3 on the mixed caption. The sigmoid loss scores each pair on its own
and takes ``A[r, c]`` as the pair's target as it is: 1 for both own pairs, 1/2 for the
mixed image with the partner's caption and for the partner's image with the mixed caption.
``targets="mask"`` keeps one-hot targets and leaves the off-diagonal entries with
``A > 0`` out: out of the softmax denominators, or out of the sigmoid loss's sum.

``mixed_weight=w`` down-weights (or up-weights) the rows that hold a mixed pair, as the
methods that *add* mixed pairs to the clean loss do (Un-Mix, m²-Mix): the loss is
``sum_i w_i * l_i / sum_i w_i`` over the batch's rows (the global rows when features are
gathered), where ``l_i`` is row ``i``'s loss with its targets, ``(image -> text + text ->
image) / 2``: the two cross-entropies of the softmax loss, or the sums of the sigmoid
loss's pair terms over image ``i``'s row and caption ``i``'s column. ``w_i = w`` for a
mixed row, 1 for the others. ``w = 1`` is exactly the unweighted loss; it works with
every ``targets``, in ``replace`` and ``append`` mode.

The losses need no MixGen option: the info carries the pairs, lambdas and ops of the
batch they score. ``A`` is built on the host from the info and copied to the features'
device without waiting for it, so a loss adds no host-device synchronisation to a step.
"""

from mixgen.losses.clip import MixGenClipLoss, target_weights
from mixgen.losses.sigmoid import MixGenSigLipLoss
from mixgen.losses.targets import affinity

__all__ = ["MixGenClipLoss", "MixGenSigLipLoss", "affinity", "target_weights"]
