"""An input method: candidate outputs for sources whose words line up with the target's characters.

Pinyin → characters is what a Chinese input method does, and the classic way
to do it beats a small Transformer trained for 20 minutes on 110k dictionary
entries: a noisy channel (Brown et al. 1990). Each source syllable comes from
one target character with probability P(syllable | character), counted from
the training pairs whose syllables and characters line up one to one, and a
character n-gram model (`tfllm.ngram.NgramLM`, of the run's training targets
and running text such as the bundled `zh_news`) scores the character sequence.
A beam search over each syllable's most frequent characters gives the `k` best
candidates, and `tfllm.translation.Translator.translate(..., input_method=...)`
lets the translation model choose among them (its log-likelihood plus the
candidate's score). The standard library and the n-gram model only.
"""

import collections
import math

from tfllm.errors import UserInputError

# At least this share of the training pairs must line up word for character, or the run is not this kind of task.
MIN_ALIGNED = 0.5


def syllables(source):
    """A source's units: its whitespace-separated words, lower-cased (`"Bei3 jing1"` → `["bei3", "jing1"]`)."""
    return source.lower().split()


class InputMethod:
    """Candidates for a source, syllable by syllable, scored by a channel and an n-gram model.

    Args:
        sources: training sources (pinyin: syllables separated by spaces).
        targets: one training target per source (characters).
        lm: a `tfllm.ngram.NgramLM` in the translation run's token ids.
        token_id: maps one target character to its id in `lm`.
        options: how many characters each syllable may become (its most frequent).
        beam: hypotheses kept after each syllable.

    Example:
    >>> from tfllm.ngram import NgramLM
    >>> ids = {"你": 3, "好": 4, "人": 5}
    >>> lm = NgramLM.fit([[3, 4], [4, 5]], vocabulary_size=6, start_id=1, end_id=2)
    >>> im = InputMethod(["ni3 hao3", "hao3 ren2"], ["你好", "好人"], lm, ids.get)
    >>> im.candidates(["ni3 ren2"], k=1)[0][0][0]
    '你人'
    """

    def __init__(self, sources, targets, lm, token_id, options=30, beam=16):
        if len(sources) != len(targets):
            raise UserInputError(f"An input method needs one target per source, got {len(sources)} sources and "
                                 f"{len(targets)} targets.")
        counts = collections.defaultdict(collections.Counter)  # syllable -> character -> pairs
        aligned = 0
        for source, target in zip(sources, targets):
            units = syllables(source)
            if units and len(units) == len(target):
                aligned += 1
                for syllable, character in zip(units, target):
                    counts[syllable][character] += 1
        if aligned < MIN_ALIGNED * max(1, len(sources)):
            raise UserInputError(
                f"An input method needs sources whose words line up one to one with the target's characters "
                f"(pinyin -> characters); {aligned} of {len(sources)} training pairs do. Translate without it.")
        per_character = collections.Counter()
        for characters in counts.values():
            per_character.update(characters)
        # log P(syllable | character): most characters have one reading, so the n-gram model does most of the choosing.
        self.table = {syllable: [(c, math.log(n / per_character[c])) for c, n in characters.most_common(options)]
                      for syllable, characters in counts.items()}
        self.lm, self.token_id, self.beam = lm, token_id, int(beam)

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
            ended = sorted(((score + float(next_scores(context)[self.lm.end_id]), text)
                            for score, context, text in hypotheses), reverse=True)
            found.append([(text, score) for score, text in ended[:k]])
        return found
