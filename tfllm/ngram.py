"""A token n-gram language model, for shallow fusion and the input method when decoding translations.

A translation model trained on dictionary entries learns slowly which
character sequences are words; plain text in the target language (the bundled
`zh_news`) knows it. `NgramLM` counts token trigrams of such text, in the
translation run's own token ids, and `tfllm.translation.Translator` adds
`lm_weight` times its log-probabilities to the model's at every decoding step
(shallow fusion, Gulcehre et al. 2015); `tfllm.input_method` scores its
candidates with it. Interpolated Kneser-Ney smoothing (Chen & Goodman 1998):
each order's counts less a discount, the rest given to the next shorter
order, whose counts are the number of different contexts a token follows (a
character that only ever ends one common word is not a likely next character
everywhere). On cedict's pinyin validation split it chose the right
characters 1.2 points more often than fixed interpolation weights
(docs/benchmarks.md). Counting is NumPy, so it takes seconds, not a training
run; KerasHub has no n-gram model to reuse.
"""

import itertools

import numpy as np

from tfllm.errors import UserInputError

# The discount where Chen & Goodman's estimate n1 / (n1 + 2 n2) is undefined or extreme: a text so
# short that no n-gram occurs once, or none twice (cedict and zh_news give 0.76 and 0.70).
FALLBACK_DISCOUNT = 0.75
ID_BITS = 21  # token ids below 2**21 (2 M), so that three of them pack into one int64


class NgramLM:
    """An interpolated Kneser-Ney token trigram model over ids `0 .. vocabulary_size - 1`.

    Args:
        vocabulary_size: the ids it scores (the decoder's output size); longer
            ids still serve as context.
        start_id: the id that begins every sequence (the decoder's start token).
        end_id: the id that ends every sequence.

    Example:
    >>> lm = NgramLM.fit([[5, 6, 7], [5, 6]], vocabulary_size=10, start_id=1, end_id=2)
    >>> lm.log_probs(np.array([[1, 5]])).shape
    (1, 10)
    """

    def __init__(self, vocabulary_size, start_id, end_id):
        self.vocabulary_size, self.start_id, self.end_id = int(vocabulary_size), int(start_id), int(end_id)
        self.unigram = np.full(self.vocabulary_size, 1.0 / self.vocabulary_size)
        self.bigram = self.trigram = None  # `_Discounted` tables, after `fit`

    @classmethod
    def fit(cls, sequences, vocabulary_size, start_id, end_id):
        """Counts the n-grams of `sequences` (lists of ids, without start or end tokens)."""
        lm = cls(vocabulary_size, start_id, end_id)
        rows = [[start_id, start_id, *ids, end_id] for ids in sequences]
        if not rows:
            raise UserInputError("The language model's text is empty; give at least one line of text.")
        flat = np.fromiter(itertools.chain.from_iterable(rows), np.int64)
        if flat.min() < 0 or flat.max() >= 2 ** ID_BITS:
            raise UserInputError(f"n-gram token ids must be in 0 .. 2**{ID_BITS} - 1.")
        first = np.ones(len(flat), bool)  # positions that begin a trigram: all but each row's last two
        row_ends = np.cumsum([len(row) for row in rows])
        first[row_ends - 1] = first[row_ends - 2] = False
        at = np.flatnonzero(first)
        # Each n-gram packed into one int64, so np.unique sorts numbers, not rows (20× faster).
        keys, counts = np.unique(_pack(flat[at], flat[at + 1], flat[at + 2]), return_counts=True)
        trigrams = _unpack(keys, 3)
        # The lower orders count contexts, not occurrences: in how many different (u, v) each (v, w) occurs ...
        keys, contexts = np.unique(_pack(trigrams[:, 1], trigrams[:, 2]), return_counts=True)
        bigrams = _unpack(keys, 2)
        # ... and after how many different v each w occurs.
        unigrams = np.bincount(bigrams[:, 1], minlength=lm.vocabulary_size)[:lm.vocabulary_size]
        # A little of every id (add-0.01), so a token never counted is unlikely, not impossible.
        lm.unigram = (unigrams + 0.01) / (unigrams.sum() + 0.01 * lm.vocabulary_size)
        lm.bigram = _Discounted(bigrams, contexts, lm.vocabulary_size)
        lm.trigram = _Discounted(trigrams, counts, lm.vocabulary_size)
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
        p = self.unigram.copy()
        if self.trigram is None:
            return np.log(p)
        # Each longer context seen in the text keeps its discounted counts and passes the rest down.
        for table, context in ((self.bigram, (previous1,)), (self.trigram, (previous2, previous1))):
            row = table.get(context)
            if row is not None:
                ids, probabilities, backoff = row
                p *= backoff
                p[ids] += probabilities
        return np.log(p)

    def score(self, ids):
        """The log-probability of one sequence of ids (without start or end tokens), its end included."""
        ids = [self.start_id, self.start_id, *ids, self.end_id]
        return float(sum(self._distribution(ids[i - 2], ids[i - 1])[ids[i]] for i in range(2, len(ids))))


class _Discounted:
    """One order's counts less the discount, by context: `get(context)` → `(next ids, (count - D) / total,
    D × distinct next ids / total)`, or None for a context never seen.

    Arrays sorted by context (as `np.unique` returns n-grams) and found by
    binary search: no Python object per context, so 2 M characters of text
    count in seconds.
    """

    def __init__(self, grams, counts, vocabulary_size):
        of_count = np.bincount(np.minimum(counts, 3), minlength=4)
        discount = of_count[1] / (of_count[1] + 2 * of_count[2]) if of_count[1] and of_count[2] else FALLBACK_DISCOUNT
        keys = _pack(*grams[:, :-1].T)
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])  # each context's first row
        distinct, totals = np.diff(np.r_[starts, len(keys)]), np.add.reduceat(counts, starts)
        self.keys, self.backoff = keys[starts], discount * distinct / totals
        group = np.repeat(np.arange(len(starts)), distinct)
        scored = grams[:, -1] < vocabulary_size  # ids past the output size count, but are not scored
        self.ids, self.probabilities = grams[scored, -1], ((counts - discount) / totals[group])[scored]
        self.bounds = np.searchsorted(np.flatnonzero(scored), np.r_[starts, len(keys)])  # rows of each context

    def get(self, context):
        key = _pack(*np.asarray(context, np.int64))
        i = np.searchsorted(self.keys, key)
        if i == len(self.keys) or self.keys[i] != key:
            return None
        rows = slice(self.bounds[i], self.bounds[i + 1])
        return self.ids[rows], self.probabilities[rows], self.backoff[i]


def _pack(*columns):
    """One int64 per row of up to three id columns, in the rows' lexicographic order."""
    keys = columns[0]
    for column in columns[1:]:
        keys = (keys << ID_BITS) | column
    return keys


def _unpack(keys, width):
    return np.stack([(keys >> (ID_BITS * (width - 1 - i))) & (2 ** ID_BITS - 1) for i in range(width)], 1)
