"""The paper's published MixGen loops, as its repository ships them: the reference the
library is tested against (``tests/``) and timed against (``python -m benchmarks.throughput``).
Both mutate their arguments and loop over rows in Python."""

import numpy as np


def published_mixgen(image, text, num, lam=0.5):
    """The paper's published default: the first ``num`` samples mixed with samples
    ``num..2num-1``, in place (it mutates its arguments), one row at a time in Python."""
    for i in range(num):
        image[i, :] = lam * image[i, :] + (1 - lam) * image[i + num, :]
        text[i] = text[i] + " " + text[i + num]
    return image, text


def published_mixgen_batch(image, text, num, lam=0.5):
    """The paper's whole-batch variant: each sample mixed with ``permutation[i]``, in
    place, reading partners that may already be mixed; ``num`` is ignored."""
    batch_size = image.size(0)
    index = np.random.permutation(batch_size)
    for i in range(batch_size):
        image[i, :] = lam * image[i, :] + (1 - lam) * image[index[i], :]
        text[i] = text[i] + " " + text[index[i]]
    return image, text
