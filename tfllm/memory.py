"""A translation memory: the training pairs whose sources look most like a new source.

Dictionary-style data (cedict's headwords and glosses) is where a small
translation model trained for 20 minutes is weakest and a lookup is strong:
the gloss of the training headword that shares the most characters beats the
model's own output. `TranslationMemory` finds such neighbours, and
`tfllm.translation.Translator.translate(..., memory=...)` returns the best
neighbour's target, with the model's likelihood breaking near-ties among the
best few (the translation industry's "fuzzy matches", rescored); a source
that shares nothing with the memory gets the model's own translation.

Sources are compared as units: each CJK character is a unit, other text is
split into lower-cased words. What a neighbour shares with the source is the
inverse document frequency of the units they share, plus half the frequency of
each pair of adjacent source units it holds in the same order, so that
"电脑" finds "电脑游戏" before "脑电"; its match score is that over the weight of
the source itself (what the source shares with itself), from 0 to 1 (every unit
and pair found), so that a weak match reads as weak whatever else matches. Ties
go to the source closest in length: the same source first. The standard library only.
"""

import collections
import heapq
import math
import re

from tfllm.datasets.text import CJK_IDEOGRAPHS
from tfllm.errors import UserInputError

_UNIT = re.compile(CJK_IDEOGRAPHS + r"|[^\W_]+", re.UNICODE)


def units(text):
    """The units a source is matched by: CJK characters one by one, other words lower-cased."""
    return _UNIT.findall(text.lower())


class TranslationMemory:
    """Source/target pairs, searchable by shared units of the source.

    Args:
        sources: source texts.
        targets: one target text per source.

    Example:
    >>> memory = TranslationMemory(["电脑", "电视", "大脑"], ["computer", "television", "brain"])
    >>> memory.lookup(["电脑游戏"], k=2)
    [['computer', 'television']]
    """

    def __init__(self, sources, targets):
        if len(sources) != len(targets):
            raise UserInputError(f"A translation memory needs one target per source, got {len(sources)} sources "
                                 f"and {len(targets)} targets.")
        if not sources:
            raise UserInputError("A translation memory needs at least one source/target pair.")
        self.sources = [units(s) for s in sources]
        self.targets = list(targets)
        self._bigrams = [set(zip(u, u[1:])) for u in self.sources]
        self._index = collections.defaultdict(list)  # unit -> the pairs whose source holds it
        for i, source in enumerate(self.sources):
            for unit in set(source):
                self._index[unit].append(i)
        # Smoothed so that a unit in every source still counts a little (a match always scores above 0).
        self._idf = {u: math.log((len(self.sources) + 1) / len(rows)) for u, rows in self._index.items()}

    def _weight(self, source):
        """What `source` would share with itself: its units' idf and half of its adjacent pairs'. A unit no
        source holds weighs as the rarest (as if one source held it)."""
        idf = lambda unit: self._idf.get(unit, math.log(len(self.sources) + 1))  # noqa: E731
        return (sum(idf(u) for u in set(source))
                + 0.5 * sum(idf(a) + idf(b) for a, b in set(zip(source, source[1:]))))

    def __len__(self):
        return len(self.targets)

    def neighbours(self, source, k):
        """`(index, match score)` of the `k` pairs whose sources best match `source`, best first.

        The match score is the weight of what a pair's source shares with `source` over `source`'s own, from 0
        (nothing shared) to 1 (all of its units and adjacent pairs). Ties: the source closest in length (the
        same source first), then the earlier pair.
        """
        query = units(source)
        score = collections.Counter()
        for unit in set(query):
            for i in self._index.get(unit, ()):
                score[i] += self._idf[unit]
        closest = lambda i: (-score[i], abs(len(self.sources[i]) - len(query)), i)  # noqa: E731
        # The order bonus only reorders the best matches by shared units (it adds at most as much again).
        # Their ties by length too: by score alone, 人 came after hundreds of cedict's headwords holding 人,
        # off the list.
        shortlist = heapq.nsmallest(max(200, 4 * k), score, key=closest)  # = sorted(...)[:n], without sorting all
        pairs = set(zip(query, query[1:]))
        for i in shortlist:
            score[i] += 0.5 * sum(self._idf[a] + self._idf[b] for a, b in pairs if (a, b) in self._bigrams[i])
        whole = self._weight(query)
        return [(i, min(score[i] / whole, 1.0)) for i in sorted(shortlist, key=closest)[:k]]

    def lookup(self, sources, k=8, scores=False):
        """For each source, the targets of its `k` best-matching pairs (distinct, best first; may be fewer). A source the memory holds as it is gets the targets of its own pairs alone:
        平板电脑 holds all of 电脑 and scores as high, and its "tablet computer" was chosen for 电脑.

        With `scores`, each target comes as `(target, match score)`.
        """
        if not isinstance(k, int) or k < 1:
            raise UserInputError(f"k must be a positive integer, got {k!r}.")
        if isinstance(sources, str):  # its characters would each be looked up as a source
            raise UserInputError("sources must be a list of strings, got a single string; wrap it in a list.")
        found = []
        for source in sources:
            matches = self.neighbours(source, k)
            if matches and self.sources[matches[0][0]] == units(source):  # ties put the same source first
                matches = [(i, score) for i, score in matches if self.sources[i] == self.sources[matches[0][0]]]
            targets = {}
            for i, score in matches:
                targets.setdefault(self.targets[i], score)
            found.append(list(targets.items()) if scores else list(targets))
        return found
