"""A token n-gram language model, for shallow fusion when decoding translations.

A translation model trained on dictionary entries learns slowly which
character sequences are words; plain text in the target language (the bundled
`zh_news`) knows it. `NgramLM` counts token trigrams of such text, in the
translation run's own token ids, and `tfllm.translation.Translator` adds
`lm_weight` times its log-probabilities to the model's at every decoding step
(shallow fusion, Gulcehre et al. 2015). Interpolated trigram, bigram and
unigram estimates (Jelinek-Mercer); a context never seen gives its weight to
the shorter ones. Counting is NumPy, so it takes seconds, not a training run;
KerasHub has no n-gram model to reuse.
"""

import collections

import numpy as np

from tfllm.errors import UserInputError


class NgramLM:
    """An interpolated token trigram model over ids `0 .. vocabulary_size - 1`.

    Args:
        vocabulary_size: the ids it scores (the decoder's output size); longer
            ids still serve as context.
        start_id: the id that begins every sequence (the decoder's start token).
        end_id: the id that ends every sequence.
        weights: interpolation weights of the trigram, bigram and unigram
            estimates.

    Example:
    >>> lm = NgramLM.fit([[5, 6, 7], [5, 6]], vocabulary_size=10, start_id=1, end_id=2)
    >>> lm.log_probs(np.array([[1, 5]])).shape
    (1, 10)
    """

    def __init__(self, vocabulary_size, start_id, end_id, weights=(0.5, 0.4, 0.1)):
        if len(weights) != 3 or min(weights) < 0 or not np.isclose(sum(weights), 1):
            raise UserInputError(f"n-gram weights must be three non-negative numbers summing to 1, got {weights!r}.")
        self.vocabulary_size, self.start_id, self.end_id = int(vocabulary_size), int(start_id), int(end_id)
        self.weights = tuple(float(w) for w in weights)
        self.unigram = np.full(self.vocabulary_size, 1.0 / self.vocabulary_size, np.float32)
        self.bigram, self.trigram = {}, {}  # context -> (next ids, probabilities)

    @classmethod
    def fit(cls, sequences, vocabulary_size, start_id, end_id, weights=(0.5, 0.4, 0.1)):
        """Counts the n-grams of `sequences` (lists of ids, without start or end tokens)."""
        lm = cls(vocabulary_size, start_id, end_id, weights)
        uni, bi, tri = collections.Counter(), collections.Counter(), collections.Counter()
        for ids in sequences:
            ids = [start_id, start_id, *ids, end_id]
            uni.update(ids[2:])
            bi.update(zip(ids[1:], ids[2:]))
            tri.update(zip(ids, ids[1:], ids[2:]))
        if not uni:
            raise UserInputError("The language model's text is empty; give at least one line of text.")
        counts = np.zeros(lm.vocabulary_size, np.float64)
        for token, n in uni.items():
            if token < lm.vocabulary_size:
                counts[token] = n
        # Add-0.1 smoothing: every output id keeps some probability.
        lm.unigram = ((counts + 0.1) / (counts.sum() + 0.1 * lm.vocabulary_size)).astype(np.float32)
        lm.bigram = _conditional(bi, lm.vocabulary_size)
        lm.trigram = _conditional(tri, lm.vocabulary_size)
        return lm

    def log_probs(self, contexts):
        """`[rows, vocabulary_size]` next-token log-probabilities after each row's two last ids `[rows, 2]`."""
        contexts = np.asarray(contexts, np.int64).reshape(-1, 2)
        out = np.empty((len(contexts), self.vocabulary_size), np.float32)
        cache = {}
        for row, (previous2, previous1) in enumerate(contexts.tolist()):
            key = (previous2, previous1)
            if key not in cache:
                cache[key] = self._distribution(previous2, previous1)
            out[row] = cache[key]
        return out

    def _distribution(self, previous2, previous1):
        w3, w2, w1 = self.weights
        trigram, bigram = self.trigram.get((previous2, previous1)), self.bigram.get((previous1,))
        if trigram is None:  # an unseen context gives its weight to the shorter ones
            w2, w3 = w2 + w3, 0.0
        if bigram is None:
            w1, w2 = w1 + w2, 0.0
        p = self.unigram * w1
        for weight, table in ((w2, bigram), (w3, trigram)):
            if table is not None and weight:
                p[table[0]] += weight * table[1]
        return np.log(p)

    def score(self, ids):
        """The log-probability of one sequence of ids (without start or end tokens), its end included."""
        ids = [self.start_id, self.start_id, *ids, self.end_id]
        return float(sum(self._distribution(ids[i - 2], ids[i - 1])[ids[i]] for i in range(2, len(ids))))


def _conditional(counts, vocabulary_size):
    """{context: (next ids, probabilities)} from {(context..., next): count}, scoring ids below the size."""
    totals, rows = collections.Counter(), collections.defaultdict(list)
    for gram, n in counts.items():
        totals[gram[:-1]] += n
        if gram[-1] < vocabulary_size:
            rows[gram[:-1]].append((gram[-1], n))
    table = {}
    for context, pairs in rows.items():
        ids, n = zip(*pairs)
        table[context] = (np.array(ids, np.int64), np.array(n, np.float32) / totals[context])
    return table
