"""An input method: candidate outputs for sources whose words line up with the target's characters.

Pinyin → characters is what a Chinese input method does, and the classic way
to do it beats a small Transformer trained for 20 minutes on 110k dictionary
entries: a noisy channel (Brown et al. 1990). Each source syllable comes from
one target character with probability P(syllable | character), counted from
the training pairs whose syllables and characters line up one to one, and a
character n-gram model (`tfllm.ngram.NgramLM`, of the run's training targets
and running text such as the bundled `zh_news`) scores the character sequence.
A beam search over each syllable's most frequent characters gives the
candidates; each then gains `corpus_weight` × log(1 + how often it occurs as
a whole in the running text), because a trigram model sees at most three
characters of a word, and a word it has seen whole is likelier than a
homophone it has not (指挥 against 纸灰: 2.0 × that took cedict's validation
split from 0.530 to 0.546 exact match). `tfllm.translation.Translator.translate(
..., input_method=...)` lets the translation model choose among the `k` best
(its log-likelihood plus the candidate's score). NumPy and the n-gram model only.
"""

import collections
import math

import numpy as np

from tfllm.errors import UserInputError

# At least this share of the training pairs must line up word for character, or the run is not this kind of task.
MIN_ALIGNED = 0.5


def syllables(source):
    """A source's units: its whitespace-separated words, lower-cased (`"Bei3 jing1"` → `["bei3", "jing1"]`)."""
    return source.lower().split()


def refuse_unaligned(sources, targets):
    """Refuses, in one line, training pairs that are not an input method's: fewer than MIN_ALIGNED of them line up
    word for character. `InputMethod` checks it; so does `training.seq2seq.run_decoding_aids` before it builds the
    n-gram model the input method scores with, whose warnings (of `--lm`'s corpus) would come first."""
    if len(sources) != len(targets):
        raise UserInputError(f"An input method needs one target per source, got {len(sources)} sources and "
                             f"{len(targets)} targets.")
    aligned = sum(1 for source, target in zip(sources, targets) if 0 < len(syllables(source)) == len(target))
    if aligned < MIN_ALIGNED * max(1, len(sources)):
        raise UserInputError(
            f"An input method needs sources whose words line up one to one with the target's characters "
            f"(pinyin -> characters); {aligned} of {len(sources)} training pairs do. Translate without it.")


class InputMethod:
    """Candidates for a source, syllable by syllable, scored by a channel and an n-gram model.

    Args:
        sources: training sources (pinyin: syllables separated by spaces).
        targets: one training target per source (characters).
        lm: a `tfllm.ngram.NgramLM` in the translation run's token ids.
        token_id: maps one target character to its id in `lm`.
        options: how many characters each syllable may become (its most frequent).
        beam: hypotheses kept after each syllable.
        corpus: lines of running text (the n-gram model's, without the training
            targets) in which whole candidates are counted.
        corpus_weight: the weight of log(1 + that count) in a candidate's score.

    Example:
    >>> from tfllm.ngram import NgramLM
    >>> ids = {"你": 3, "好": 4, "人": 5}
    >>> lm = NgramLM.fit([[3, 4], [4, 5]], vocabulary_size=6, start_id=1, end_id=2)
    >>> im = InputMethod(["ni3 hao3", "hao3 ren2"], ["你好", "好人"], lm, ids.get)
    >>> im.candidates(["ni3 ren2"], k=1)[0][0][0]
    '你人'
    """

    def __init__(self, sources, targets, lm, token_id, options=30, beam=16, corpus=(), corpus_weight=2.0):
        refuse_unaligned(sources, targets)
        counts = collections.defaultdict(collections.Counter)  # syllable -> character -> pairs
        self.example = None  # a training source, to show the form sources must take ("dian4 nao3", not "diàn nǎo")
        for source, target in zip(sources, targets):
            units = syllables(source)
            if units and len(units) == len(target):
                if self.example is None or (len(units) > 1 and len(syllables(self.example)) == 1):
                    self.example = " ".join(units)
                for syllable, character in zip(units, target):
                    counts[syllable][character] += 1
        per_character = collections.Counter()
        for characters in counts.values():
            per_character.update(characters)
        # log P(syllable | character): most characters have one reading, so the n-gram model does most of the choosing.
        self.table = {syllable: [(c, math.log(n / per_character[c])) for c, n in characters.most_common(options)]
                      for syllable, characters in counts.items()}
        self.lm, self.token_id, self.beam = lm, token_id, int(beam)
        self.counts, self.corpus_weight = SubstringCounts(corpus), float(corpus_weight)

    def unread(self, source):
        """The first of `source`'s units that is no syllable of the training sources (None when all are):
        why it has no candidates ("diàn" with tone marks, "zhongguo" run together)."""
        return next((unit for unit in syllables(source) if unit not in self.table), None)

    def candidates(self, sources, k=16):
        """For each source, up to `k` `(characters, log-score)` best first; none when a syllable was never seen."""
        if not isinstance(k, int) or k < 1:
            raise UserInputError(f"k must be a positive integer, got {k!r}.")
        rows = {}  # n-gram distributions by context, shared by all sources

        def next_scores(context):
            if context not in rows:
                rows[context] = self.lm.log_probs([context])[0]
            return rows[context]

        found = []
        for source in sources:
            units = syllables(source)
            if not units or any(unit not in self.table for unit in units):
                found.append([])
                continue
            hypotheses = [(0.0, (self.lm.start_id, self.lm.start_id), "")]
            for unit in units:
                grown = []
                for score, context, text in hypotheses:
                    scores = next_scores(context)
                    for character, channel in self.table[unit]:
                        i = self.token_id(character)
                        # A character the model cannot write scores as the n-gram model's least likely one.
                        lm_score = float(scores[i]) if i < len(scores) else float(scores.min())
                        grown.append((score + channel + lm_score, (context[1], i), text + character))
                hypotheses = sorted(grown, key=lambda h: -h[0])[:max(self.beam, k)]
            texts = [text for _, _, text in hypotheses]
            bonus = self.corpus_weight * np.log1p(self.counts(texts)) if self.corpus_weight else np.zeros(len(texts))
            ended = sorted(((score + float(next_scores(context)[self.lm.end_id]) + float(extra), text)
                            for (score, context, text), extra in zip(hypotheses, bonus)), reverse=True)
            found.append([(text, score) for score, text in ended[:k]])
        return found


class SubstringCounts:
    """How often strings occur in a text, overlaps included: `SubstringCounts(["abab"])(["ab", "x"])` → `[2, 0]`.

    For each string length up to `HASHED`, the rolling hashes of every
    position are computed and sorted once, on first use (8 bytes a character
    of text), so a count is two binary searches; a `str.count` over 1.8 M
    characters of news for each of a test split's 100k candidates would take
    minutes. Longer strings, rare and seldom found, are counted with `str.count`.
    """

    BASE = 1_000_003  # polynomial hash base; sums wrap modulo 2**64
    HASHED = 8

    def __init__(self, lines):
        self.text = "\n".join(lines)
        self.codes = np.frombuffer(self.text.encode("utf-32-le"), np.uint32).astype(np.uint64)  # code points
        self.sorted = {}  # length -> sorted hashes of every substring of that length

    def _hash(self, text):
        value = 0
        for character in text:
            value = (value * self.BASE + ord(character)) % 2 ** 64
        return value

    def _hashes(self, length):
        if length not in self.sorted:
            hashes = np.zeros(max(0, len(self.codes) - length + 1), np.uint64)
            for offset in range(length):  # wrapping uint64 arithmetic, as _hash's modulo
                hashes = hashes * np.uint64(self.BASE) + self.codes[offset:offset + len(hashes)]
            self.sorted[length] = np.sort(hashes)
        return self.sorted[length]

    def __call__(self, texts):
        counts = np.zeros(len(texts), np.int64)
        for i, text in enumerate(texts):
            if len(text) > self.HASHED:  # overlaps included, as the hashed counts do (str.count skips them)
                start = self.text.find(text)
                while start != -1:
                    counts[i] += 1
                    start = self.text.find(text, start + 1)
            elif text and len(text) <= len(self.codes):
                table, key = self._hashes(len(text)), np.uint64(self._hash(text))
                counts[i] = np.searchsorted(table, key, "right") - np.searchsorted(table, key, "left")
        return counts
