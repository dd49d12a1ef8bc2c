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

import collections

import numpy as np

from tfllm.errors import UserInputError

# The discount where Chen & Goodman's estimate n1 / (n1 + 2 n2) is undefined or extreme: a text so
# short that no n-gram occurs once, or none twice (cedict and zh_news give 0.76 and 0.70).
FALLBACK_DISCOUNT = 0.75


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
        self.bigram, self.trigram = {}, {}  # context -> (next ids, discounted probabilities, backoff weight)

    @classmethod
    def fit(cls, sequences, vocabulary_size, start_id, end_id):
        """Counts the n-grams of `sequences` (lists of ids, without start or end tokens)."""
        lm = cls(vocabulary_size, start_id, end_id)
        trigrams = collections.Counter()
        for ids in sequences:
            ids = [start_id, start_id, *ids, end_id]
            trigrams.update(zip(ids, ids[1:], ids[2:]))
        if not trigrams:
            raise UserInputError("The language model's text is empty; give at least one line of text.")
        # The lower orders count contexts, not occurrences: in how many different (u, v) each (v, w) occurs ...
        bigrams = collections.Counter((v, w) for _, v, w in trigrams)
        # ... and after how many different v each w occurs.
        unigrams = np.zeros(lm.vocabulary_size)
        for (_, w), n in collections.Counter((v, w) for v, w in bigrams).items():
            if w < lm.vocabulary_size:
                unigrams[w] += n
        # A little of every id (add-0.01), so a token never counted is unlikely, not impossible.
        lm.unigram = (unigrams + 0.01) / (unigrams.sum() + 0.01 * lm.vocabulary_size)
        lm.bigram = _discounted(bigrams, lm.vocabulary_size)
        lm.trigram = _discounted(trigrams, lm.vocabulary_size)
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


def _discounted(counts, vocabulary_size):
    """{context: (next ids, (count - D) / total, D × distinct next ids / total)} from {(context..., next): count}."""
    of_count = collections.Counter(n for n in counts.values() if n <= 2)
    discount = of_count[1] / (of_count[1] + 2 * of_count[2]) if of_count[1] and of_count[2] else FALLBACK_DISCOUNT
    rows = collections.defaultdict(list)
    for gram, n in counts.items():
        rows[gram[:-1]].append((gram[-1], n))
    table = {}
    for context, pairs in rows.items():
        ids, n = (np.array(column) for column in zip(*pairs))
        total, scored = n.sum(), ids < vocabulary_size  # ids past the output size count, but are not scored
        table[context] = (ids[scored], (n[scored] - discount) / total, discount * len(n) / total)
    return table
