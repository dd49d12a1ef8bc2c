"""Sources in, translations out: a trained `Seq2SeqLM` decoding with KerasHub's samplers.

`Translator` pairs a translation run's `Seq2SeqLM` with its preprocessor. The
decoding loop is the model's `generate_step` (the source is encoded once, each
new token is one cached decoder step) driven by a sampler: KerasHub's greedy
and beam samplers, and for top-k and top-p generation's `OptionSampler`, whose
noise is per row (a source's seeded translation depends on its seed and
source only, not on the batch). Sources are decoded in batches of up to `batch_size`,
padded to power-of-two batch sizes so that one compiled function serves every
call with the same settings.

`greedy_without_cache` is the reference decoder the tests and benchmarks
compare with: the keras.io translation example's loop, which runs the whole
model (encoder and decoder over the whole prefix) again for every new token.
"""

import inspect
import os
import zlib

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from tfllm import errors, runs
from tfllm.config import refuse_unread_at_temperature_0
from tfllm.data import preprocess
from tfllm.errors import UserInputError
from tfllm.generation import (
    OptionSampler,
    call_for_any_batch,
    check_sampler_options,
    generate_step,
    is_number,
    refuse_unread_options,
    shown,
)
from tfllm.models.seq2seq_lm import output_text
from tfllm.ngram import NgramLM

SAMPLERS = ("greedy", "beam", "top_k", "top_p")
TRANSLATE_BEAMS, TRANSLATE_TOP_K, TRANSLATE_TOP_P = 4, 10, 0.9  # unless told (an unread one is refused)
MAX_SOURCES = 100_000
# Translation memory: the best matches the model chooses among, and the weight of its log-likelihood per token
# beside the match score (relative to the best match's). Chosen on cedict's validation split (6,000+ pairs):
# 4, 8 or 16 matches and weights 0.02-0.1 all scored within 0.1 chrF of each other.
MEMORY_SIZE = 8
MEMORY_WEIGHT = 0.05
# No lowest match score: a weak match's target still beats the model's own output on average here. On cedict's
# zh-en test split against the training pairs, 2,330 of 6,122 sources match below half of their weight, and the
# memory's best match alone scores chrF 15.9 on them (above 0.5: 43.6; below 0.3, 145 sources: 12.8), against
# 13.6 for the Transformer alone on every source (stop 27's 20-minute run, docs/benchmarks.md);
# benchmarks/probe_memory_floor.py -> benchmarks/results/memory_floor.json.
# Input method: its best candidates the model chooses among, and the weight of the model's log-likelihood
# beside the candidate's own score (both sums over the output). Chosen on cedict's first 1,000 validation pairs
# (pinyin, stop 29): weights 0 / 0.1 / 0.25 / 0.5 / 1 / 2 scored 0.608 / 0.613 / 0.615 / 0.613 / 0.602 / 0.558.
INPUT_METHOD_SIZE = 16
INPUT_METHOD_WEIGHT = 0.25
# The largest lm_weight. At 100 the n-gram model's log-probabilities already outweigh the model's a hundredfold
# (a weight of 20 makes a certain n-gram model's one sentence come out whatever the source), so a larger one
# chooses nothing new; and past ~1e36 the weighted scores overflow float32 to -inf, every token ties and each
# translation came out empty with exit status 0 (inf and 1e300 were accepted).
MAX_LM_WEIGHT = 100


def _padded_rows(values):
    """A NumPy array's rows, the last repeated up to a power of two, as `_padded` pads the texts beside them."""
    return np.concatenate([values, np.repeat(values[-1:], (1 << (len(values) - 1).bit_length()) - len(values), 0)])


def _padded(texts):
    """`texts` as a string tensor, the last repeated up to a power of two (one compiled program per size)."""
    return tf.constant(_padded_rows(np.array(list(texts), dtype=object)))


# The fewest sources one call decodes (or scores) under XLA. For a `default`-sized model, compiling the
# decoding loop took 1.2-1.7 s more than tracing it alone (2.7-3.2 s against 1.5 s for one source), and each
# 2,048 sources after that took 2.6-2.7 s against 3.5-4.0 s (`benchmarks/probe_xla_decoding.py`): XLA pays
# from about 4,000 sources a call (a cedict run's validation and test splits, ~6,000 each), not for a few
# sentences to translate, nor for the tests' tiny runs.
XLA_MIN_SOURCES = 4096


class Translator:
    """A translation model and its preprocessor, ready to turn sources into translations.

    Args:
        model: a trained `tfllm.models.Seq2SeqLM` with its preprocessor attached.
        jit_compile: XLA-compile the decoding loop (and the scoring of `rerank`) where a call
            decodes at least `XLA_MIN_SOURCES` sources.

    Example:
    >>> translator = load_translator("runs/cedict")
    >>> translator.translate(["你好", "中国"], sampler="beam", num_beams=4)
    ['hello', 'China']
    """

    def __init__(self, model, jit_compile=True):
        self.model = model
        self.preprocessor = model.preprocessor
        self.tokenizer = self.preprocessor.tokenizer
        self.jit_compile = jit_compile
        self.end_id = int(self.tokenizer.end_token_id)
        self.start_id = int(self.tokenizer.start_token_id)
        # The decoder scores the first `output_size` ids (translation targets come first in the vocabulary).
        self.output_size = int(getattr(model.backbone, "target_vocabulary_size", None)
                               or self.tokenizer.vocabulary_size())
        self.unk_id = getattr(self.tokenizer, "unk_token_id", None)
        self.encoder_length = int(self.preprocessor.encoder_sequence_length)
        # The decoder prompt ([BOS], or BART's two start tokens) comes first in the decoder buffer.
        decoder_length = int(self.preprocessor.decoder_sequence_length)
        if hasattr(model.backbone, "decoder_sequence_length"):
            decoder_length = min(decoder_length, int(model.backbone.decoder_sequence_length))
        prompt = self.preprocessor.generate_preprocess(tf.constant([""]), decoder_sequence_length=decoder_length)
        self.prompt_length = int(np.sum(keras.ops.convert_to_numpy(prompt["decoder_padding_mask"])[0]))
        self.max_new_tokens = decoder_length - self.prompt_length
        self.batch_size = 256
        self._compiled = {}

    @staticmethod
    def _sampler(sampler, num_beams, options):
        """The sampler of one decoding call (`options`: the call's inputs, whose per-row sampling options
        top_k and top_p read)."""
        if sampler == "greedy":
            return keras_hub.samplers.GreedySampler()
        if sampler == "beam":
            return keras_hub.samplers.BeamSampler(num_beams=num_beams)
        # top_k and top_p: generation's sampler, its options (temperature, k, p, seed) per-row tensors. Its noise
        # is a counter-based hash of a row's seed and position, so a row's translation depends on its source and
        # seed only: not on batch_size, the other sources or the row's place among them (KerasHub's samplers drew
        # from one random state per call, which every row and batch advanced).
        return OptionSampler(options["temperature"], options["top_k"], options["top_p"], options["seed"])

    def _xla(self, sources):
        return bool(self.jit_compile) and len(sources) >= XLA_MIN_SOURCES

    def _function(self, key, lm=None, lm_weight=0.0, jit_compile=False):
        """The compiled decoding function of `key` (a sampler and its beams): `decode(inputs)`, `inputs` the
        preprocessor's tensors and, for top_k and top_p, the sampler's per-row `temperature`, `top_k`, `top_p`
        and `seed`, so one function serves every setting and seed."""
        cached = (key, id(lm), lm_weight, jit_compile)
        if cached not in self._compiled:
            sampler_name, num_beams = key
            model, stop = self.model, [self.end_id]
            adjust = self._fusion(lm, lm_weight) if lm is not None else None

            # The language model's scores come from NumPy, which XLA cannot compile.
            @tf.function(jit_compile=jit_compile and lm is None, reduce_retracing=True, autograph=False)
            def decode(inputs):
                sampler = self._sampler(sampler_name, num_beams, inputs)
                inputs = {k: inputs[k] for k in ("encoder_token_ids", "encoder_padding_mask", "decoder_token_ids",
                                                 "decoder_padding_mask")}
                if adjust is not None:
                    return model.generate_step(inputs, stop, sampler, adjust_logits=adjust)["decoder_token_ids"]
                # tfllm's Seq2SeqLM takes the sampler as an argument; KerasHub's own (BART) get it for the call.
                return generate_step(model, inputs, stop, sampler)["decoder_token_ids"]

            self._compiled[cached] = decode
        return self._compiled[cached]

    def _fusion(self, lm, weight):
        """Shallow fusion: the model's log-probabilities plus `weight` times the n-gram model's."""
        if "adjust_logits" not in inspect.signature(self.model.generate_step).parameters:
            raise UserInputError("A language model can only be fused with tfllm's own translation models, "
                                 f"not {type(self.model).__name__}; translate without --lm.")
        if lm.vocabulary_size != self.output_size or lm.start_id != self.start_id:
            raise UserInputError("This language model was counted for another tokenizer; build it with "
                                 "Translator.language_model(texts).")

        unk_id = self.unk_id if self.unk_id is not None and self.unk_id < lm.vocabulary_size else None

        def previous_two(prompt, index):
            context = prompt[:, max(int(index) - 2, 0):int(index)]  # the start token is at position 0
            if context.shape[1] == 1:
                context = np.concatenate([np.full_like(context, lm.start_id), context], axis=1)
            scores = lm.log_probs(context)
            if unk_id is not None:
                # The language model never votes for [UNK]: a corpus the output vocabulary covers half of
                # (zh_news for a pinyin-to-Chinese run: 46% [UNK]) made [UNK], then the end, the likeliest
                # start, and every translation came out empty ([UNK] is dropped from the text) without a word.
                scores[:, unk_id] = scores.min(axis=-1)
            return scores

        def adjust(logits, prompt, index):
            scores = tf.numpy_function(previous_two, [prompt, index], tf.float32, stateful=False)
            scores = tf.reshape(scores, tf.shape(logits))
            return tf.nn.log_softmax(tf.cast(logits, tf.float32)) + weight * scores

        return adjust

    def language_model(self, texts, corpus=(), corpus_name=None):
        """An `NgramLM` counted on `texts` and `corpus` (target-language text) in this model's output token ids.

        `corpus` (the lines of `--lm corpus_name`) is warned about where most of its tokens are ones the
        decoder never outputs: text in another language (the source's, zh_news for a Chinese-to-English
        run) made every translation empty without a word.
        """
        # Through `preprocess`, so the tokenizer runs TensorFlow Text's ops: called as it is, KerasHub's WordPiece
        # takes its pure-Python path (13 s for cedict's targets and zh_news).
        texts = list(texts)
        ids = preprocess(texts + list(corpus), self.tokenizer)
        rows = ids.to_list() if isinstance(ids, tf.RaggedTensor) else ids.numpy().tolist()
        tokens = [i for row in rows[len(texts):] for i in row]
        foreign = sum(i == self.unk_id or i >= self.output_size for i in tokens) / max(len(tokens), 1)
        if foreign > 0.5:
            errors.warn(f"{foreign:.0%} of the tokens of --lm {corpus_name} are ones this model never outputs "
                        "(not in its training targets), so its language model favours ending each translation at "
                        "once. --lm takes text in the target language, in words the training targets use.")
        return NgramLM.fit(rows, self.output_size, self.start_id, self.end_id)

    def score(self, sources, targets):
        """The model's log-likelihood of each target given its source: `(sum over tokens, tokens)` arrays.

        Targets are tokenized as in training (up to the decoder's length, the end token counted). A token the
        decoder never outputs (one of the vocabulary's source-only tokens: a memory's gloss with Chinese in it)
        is scored as the unknown token, as training reads it in a target.
        """
        key = ("score", self._xla(sources))
        if key not in self._compiled:
            model, output_size = self.model, self.output_size
            # Beyond the decoder's softmax, tf.gather failed ("indices[0,4] = 97 is not in [0, 97)").
            unk_id = self.unk_id if self.unk_id is not None and self.unk_id < output_size else 0

            @tf.function(jit_compile=key[1], reduce_retracing=True, autograph=False)
            def token_log_probs(x, y, weight):
                log_probs = tf.nn.log_softmax(tf.cast(model(x, training=False), tf.float32))
                y = tf.cast(y, tf.int32)
                y = tf.where(y < output_size, y, unk_id)
                picked = tf.gather(log_probs, y, batch_dims=2)
                weight = tf.cast(weight, tf.float32)
                return tf.reduce_sum(picked * weight, -1), tf.reduce_sum(weight, -1)

            self._compiled[key] = token_log_probs
        totals, counts = [], []
        for start in range(0, len(sources), self.batch_size):
            rows = len(sources[start:start + self.batch_size])
            batch = {"encoder_text": _padded(sources[start:start + rows]),
                     "decoder_text": _padded(targets[start:start + rows])}
            total, count = call_for_any_batch(self._compiled[key], *self.preprocessor(batch))
            totals.append(total.numpy()[:rows])
            counts.append(count.numpy()[:rows])
        return np.concatenate(totals), np.concatenate(counts)

    def _choose(self, sources, found, texts, weight, per_token):
        """Sets each `texts[i]` still None whose source has candidates `found[i]` (`(text, prior)`) to the best."""
        matched = [i for i, options in enumerate(found) if options and texts[i] is None]
        chosen = self.rerank([sources[i] for i in matched], [[t for t, _ in found[i]] for i in matched],
                             priors=[[prior for _, prior in found[i]] for i in matched], weight=weight,
                             per_token=per_token)
        for i, text in zip(matched, chosen):
            texts[i] = text

    def rerank(self, sources, candidates, priors=None, weight=1.0, per_token=True):
        """For each source, the candidate with the best `prior + weight * log-likelihood` (per token by default).

        Args:
            sources: the texts to translate.
            candidates: per source, a list of translations to choose from.
            priors: per source, one score per candidate (default: 0).
            weight: how much the model's log-likelihood counts.
            per_token: the log-likelihood per token (else its sum over the target).
        """
        priors = priors or [[0.0] * len(options) for options in candidates]
        # zip would silently drop what has no partner: a source without candidates, a candidate without a prior.
        if not len(sources) == len(candidates) == len(priors):
            raise UserInputError(f"rerank needs one candidate list (and one prior list) per source; got "
                                 f"{len(sources)} sources, {len(candidates)} candidate lists, {len(priors)} prior lists.")
        uneven = [i for i, (options, prior) in enumerate(zip(candidates, priors), 1) if len(options) != len(prior)]
        if uneven:
            raise UserInputError(f"Source {uneven[0]} has {len(candidates[uneven[0] - 1])} candidates but "
                                 f"{len(priors[uneven[0] - 1])} priors; give one prior per candidate.")
        flat = [(i, c, p) for i, (options, prior) in enumerate(zip(candidates, priors))
                for c, p in zip(options, prior) if c.strip()]
        best = {}
        if flat:
            total, count = self.score([sources[i] for i, _, _ in flat], [c for _, c, _ in flat])
            for (i, candidate, prior), value in zip(flat, total / np.maximum(count, 1) if per_token else total):
                value = prior + weight * value
                if i not in best or value > best[i][0]:
                    best[i] = (value, candidate)
        return [best[i][1] if i in best else (options[0] if options else "") for i, options in enumerate(candidates)]

    def check_sources(self, sources, warn=True, notes=None, numbers=None, note=True):
        """`sources` as a list, refusing what cannot be translated; with `warn` (the interactive path: tokenizing every source costs),
        also texts the tokenizer makes nothing of, and warns about truncated sources and unseen characters
        (`note_sources`; not with `note=False`, as `translate` notes only the sources the model decodes).

        With `notes` (a `SourceNotes`), what would be warned about is added to it instead, so that sources
        checked a batch at a time (`tfllm translate --file`, 256 lines at a time) are warned about once, with
        their totals (`notes.warn()`). `numbers`: each source's number in refusals (its line of a --file, blank
        lines counted), 1, 2, ... by default."""
        runs.texts_argument(sources, "sources")
        sources = list(sources)
        runs.refuse_non_strings(sources, "Text {} to translate")
        if not sources or len(sources) > MAX_SOURCES:
            raise UserInputError(f"Give between 1 and {MAX_SOURCES} texts to translate, got {len(sources)}.")
        numbers = list(numbers) if numbers is not None else list(range(1, len(sources) + 1))
        empty = [numbers[i] for i, s in enumerate(sources) if not s.strip()]
        if empty:
            raise UserInputError(f"Text {empty[0]} to translate is empty; give at least one character.")
        # As training, scoring and --file read them: a space before or after a source ("你好 " pasted) was
        # decoded as part of it, into another translation than "你好"'s.
        sources = [s.strip() for s in sources]
        if not warn:
            return sources
        ids = token_rows(self.tokenizer, sources)
        lengths = np.array([len(row) for row in ids])
        wordless = np.flatnonzero(lengths == 0)
        if len(wordless):  # decoded from [BOS] [EOS] alone: an empty line or a made-up translation, exit status 0
            raise UserInputError(f"Text {numbers[wordless[0]]} to translate ({shown(sources[wordless[0]])}) has nothing this "
                                 "model reads (only control, invisible or space characters); give the text to translate.")
        if note:
            found = SourceNotes() if notes is None else notes
            self.note_sources(sources, found, ids)
            if notes is None:
                found.warn()
        return sources

    def note_sources(self, sources, notes, ids=None):
        """Adds to `notes` (a `SourceNotes`) the `sources` longer than the encoder reads and those holding text
        read as unknown; `ids`: their token rows where the caller has them."""
        notes.room = self.encoder_length - 2  # [BOS] ... [EOS]
        if not sources:
            return
        ids = token_rows(self.tokenizer, sources) if ids is None else ids
        lengths = np.array([len(row) for row in ids])
        long = np.flatnonzero(lengths > notes.room)
        notes.add_long(len(long), *((sources[long[0]], lengths[long[0]]) if len(long) else (None, None)))
        if self.unk_id is not None:
            unseen = np.flatnonzero([(row == self.unk_id).any() for row in ids])
            notes.add_unseen(len(unseen), sources[unseen[0]] if len(unseen) else None)

    def decode_ids(self, sources, sampler="greedy", num_beams=TRANSLATE_BEAMS, max_new_tokens=None, top_k=TRANSLATE_TOP_K,
                   top_p=TRANSLATE_TOP_P,
                   temperature=1.0, seed=None, lm=None, lm_weight=0.0):
        """Decoded `[n, prompt_length + max_new_tokens]` token ids (the decoder prompt first), batch by batch."""
        key = (sampler, num_beams if sampler == "beam" else None)
        function = self._function(key, lm, lm_weight, self._xla(sources))
        options = self._sampling_options(sources, sampler, top_k, top_p, temperature, seed)
        width = self.prompt_length + max_new_tokens
        outputs = []
        for start in range(0, len(sources), self.batch_size):
            rows = len(sources[start:start + self.batch_size])
            inputs = self.preprocessor.generate_preprocess(_padded(sources[start:start + rows]),
                                                           decoder_sequence_length=width)
            inputs = {k: tf.cast(v, tf.int32) for k, v in inputs.items()}
            inputs.update({k: _padded_rows(v[start:start + rows]) for k, v in options.items()})
            # Any length too: another max_new_tokens (another decoder width) would otherwise trace the loop again.
            outputs.append(keras.ops.convert_to_numpy(call_for_any_batch(function, inputs, any_length=True))[:rows])
        return np.concatenate(outputs)

    @staticmethod
    def _sampling_options(sources, sampler, top_k, top_p, temperature, seed):
        """Per-row options of `OptionSampler` for `sources` (none for greedy and beam search).

        A row's seed is a hash of the call's seed and its source (CRC-32), not `seed + row` as `generate` gives
        its prompts: a source's translation is then the same wherever it stands among the sources and whatever
        else is decoded beside it, and copies of one source translate alike. (The call's seed itself for every
        row gave every row the same noise: sources whose next-token distributions were alike, as an
        undertrained model's are, drew the same tokens.) Without a seed, each row draws its own.
        """
        if sampler not in ("top_k", "top_p"):
            return {}
        n = len(sources)
        if seed is None:
            seeds = np.random.default_rng().integers(0, 2**32, size=n, dtype="uint32")
        else:
            seeds = np.array([zlib.crc32(source.encode("utf-8"), int(seed) & 0xFFFFFFFF) for source in sources],
                             "uint32")
        return {"temperature": np.full([n], temperature, "float32"),
                "top_k": np.full([n], top_k if sampler == "top_k" else 0, "int32"),
                "top_p": np.full([n], top_p if sampler == "top_p" else 1.0, "float32"),
                "seed": seeds.view("int32")}

    def translate(self, sources, sampler=None, num_beams=None, max_new_tokens=None, top_k=None, top_p=None,
                  temperature=None, seed=None, batch_size=256, warn=True, lm=None, lm_weight=0.5, memory=None,
                  memory_size=MEMORY_SIZE, memory_weight=MEMORY_WEIGHT, input_method=None,
                  input_method_size=INPUT_METHOD_SIZE, input_method_weight=INPUT_METHOD_WEIGHT, notes=None):
        """Translates each source; returns one string per source.

        Args:
            sources: list of strings.
            sampler: "greedy", "beam" (KerasHub's samplers), "top_k" or "top_p" (`OptionSampler`). By default,
                as `tfllm translate --num-beams N` chooses it: "beam" with `num_beams` above 1, else "greedy".
            num_beams: beams for "beam" (default 4); above 1 without a sampler, beam search.
            max_new_tokens: longest translation in tokens (default and upper
                bound: the model's decoder length minus one).
            top_k, top_p, temperature, seed: for the sampling samplers (top_k 10, top_p 0.9, temperature 1.0;
                `temperature=0` alone is greedy decoding, the default sampler). Each source
                samples with a seed made of `seed` and its own text, so a seeded call gives a source the same
                translation whatever else is translated beside it, in whatever order and batch_size.
                An option the sampler does not read is refused, as `generate` refuses it.
            batch_size: sources decoded together.
            warn: print a warning for truncated sources and unseen text.
            lm: an `NgramLM` of target-language text (`language_model`) to
                fuse with the model's scores at every step; `lm_weight` (0 to 100) scales it.
            memory: a `tfllm.memory.TranslationMemory`. A source found in it
                as it is gets its target (the model choosing among several);
                one sharing text with its sources gets the target of one of its
                `memory_size` best matches: the best by match score (relative
                to the first) plus `memory_weight` times the model's
                log-likelihood per token (`rerank`). Other sources are decoded.
            input_method: a `tfllm.input_method.InputMethod` (pinyin -> characters).
                A source whose syllables it knows gets the best of its
                `input_method_size` candidates by their score plus
                `input_method_weight` times the model's log-likelihood. Other
                sources are decoded, and warned about (with `warn`): not in the
                input method's form, they mostly come out empty.
            notes: a `SourceNotes` to add what would be warned about to (warned
                about once by its caller), whatever `warn` says.
        """
        if sampler is None:  # as the command: `num_beams=4` alone was refused ("num_beams is for sampler='beam'")
            if num_beams is None or (is_number(num_beams) and num_beams == 1):
                sampler, num_beams = "greedy", None
                if is_number(temperature) and temperature == 0:  # greedy, as asked (`tfllm translate --temperature 0`)
                    temperature = None
            else:  # a num_beams of the wrong kind or range is then refused as beam search's
                sampler = "beam"
        if sampler not in SAMPLERS:
            raise UserInputError(f"Unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}.")
        refuse_unread_options(sampler, {"top_k": top_k, "top_p": top_p, "num_beams": num_beams})
        # Greedy and beam search draw nothing: a temperature or seed given to them was ignored without a word, where
        # the command and `generate` refuse it. (config's SAMPLER_OF_OPTION also names generation's 'random'.)
        for name, value in (("temperature", temperature), ("seed", seed)):
            if value is not None and sampler not in ("top_k", "top_p"):
                raise UserInputError(f"{name} is for sampler='top_k' or 'top_p', and the sampler is {sampler!r}; use "
                                     f"sampler='top_k' or leave {name} out.")
        temperature = 1.0 if temperature is None else temperature
        if sampler in ("top_k", "top_p"):  # greedily at temperature 0, as `generate` refuses them there too
            refuse_unread_at_temperature_0(temperature, {"top_k": top_k, "top_p": top_p, "seed": seed})
        top_k, top_p = TRANSLATE_TOP_K if top_k is None else top_k, TRANSLATE_TOP_P if top_p is None else top_p
        num_beams = TRANSLATE_BEAMS if num_beams is None else num_beams
        check_sampler_options(sampler, temperature, top_k, top_p, num_beams, seed)
        if sampler == "top_k":
            top_k = min(int(top_k), self.output_size)  # as `tfllm generate`: at most every token the decoder scores
        if sampler in ("top_k", "top_p") and temperature == 0:  # as `tfllm generate`: greedy
            sampler = "greedy"
        if not is_number(batch_size, whole=True) or batch_size < 1:
            raise UserInputError(f"batch_size must be a whole number of at least 1, got {batch_size!r}.")
        for name, value, kind in (
                ("memory", memory, "tfllm.memory.TranslationMemory (tfllm.training.seq2seq.run_memory(run_dir, 'train'))"),
                ("lm", lm, "tfllm.ngram.NgramLM (tfllm.training.seq2seq.run_decoding_aids)"),
                ("input_method", input_method, "tfllm.input_method.InputMethod (tfllm.training.seq2seq.run_decoding_aids)")):
            if value is not None and isinstance(value, (str, bool, int, float)):  # the CLI's spellings are not objects
                raise UserInputError(f"{name} must be a {kind}, got {value!r}.")
        max_new_tokens = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        if (not isinstance(max_new_tokens, (int, np.integer)) or isinstance(max_new_tokens, bool)
                or not 0 < max_new_tokens <= self.max_new_tokens):
            raise UserInputError(f"--max-new-tokens must be an integer from 1 to {self.max_new_tokens} (this model's "
                                 f"longest output), got {max_new_tokens!r}.")
        # Noted after the memory and the input method have answered: a source the memory translates was warned
        # "its translation may be wrong" for text the model would have read as unknown, yet the model never read it.
        sources = self.check_sources(sources, warn=warn, note=False)
        self.batch_size = max(1, int(batch_size))
        if lm is not None and not (is_number(lm_weight) and 0 <= lm_weight <= MAX_LM_WEIGHT):
            raise UserInputError(f"--lm-weight must be a number from 0 to {MAX_LM_WEIGHT} (0.5 by default), "
                                 f"got {lm_weight!r}.")
        texts = [None] * len(sources)
        if memory is not None:
            # The memory's best matches (a source it holds: its own targets alone), scored relative to the first as
            # MEMORY_WEIGHT was chosen; the model's likelihood breaks near-ties. (On cedict's validation split,
            # choosing by the model's likelihood alone did worse than the memory's first match, and the model's
            # own output as a further candidate did not help.)
            found = memory.lookup(sources, k=memory_size, scores=True)
            found = [[(t, score / options[0][1]) for t, score in options] for options in found]
            self._choose(sources, found, texts, memory_weight, per_token=True)
        unread = []  # sources the input method has no candidates for (and the memory gave nothing)
        if input_method is not None:
            # Candidate scores and the model's likelihood are both sums over the output.
            offered = input_method.candidates(sources, k=input_method_size)
            unread = [i for i, options in enumerate(offered) if not options and texts[i] is None]
            self._choose(sources, offered, texts, input_method_weight, per_token=False)
        rest = [i for i, text in enumerate(texts) if text is None]
        if rest:
            ids = self.decode_ids([sources[i] for i in rest], sampler, num_beams, max_new_tokens, top_k, top_p,
                                  temperature, seed, lm=lm, lm_weight=float(lm_weight) if lm is not None else 0.0)
            for i, text in zip(rest, output_text(self.tokenizer, ids, self.prompt_length).numpy()):
                texts[i] = text.decode("utf-8", errors="replace")
        if warn or notes is not None:
            found = SourceNotes() if notes is None else notes
            self.note_sources([sources[i] for i in rest], found)
            if unread:
                # "diàn nǎo" (tone marks) or "zhongguo" (run together) printed an empty line, exit status 0, no word.
                found.add_unread(input_method, [sources[i] for i in unread], sum(not texts[i].strip() for i in unread))
            if notes is None:
                found.warn()
        return texts



def token_rows(tokenizer, texts):
    """Each text's token ids (an int64 array a text), as the model's tokenizer reads it (no [BOS]/[EOS])."""
    ids = tokenizer(tf.constant(list(texts)))
    if isinstance(ids, tf.RaggedTensor):
        ids = ids.to_list()
    elif not isinstance(ids, list):  # eager KerasHub tokenizers hand back Python lists; a dense tensor is padded
        ids = [[i for i in row if i != 0] for row in keras.ops.convert_to_numpy(ids).tolist()]
    return [np.asarray(row, "int64") for row in ids]


class SourceNotes:
    """What `Translator.check_sources` found to warn about (truncated sources, text read as unknown), added up
    over the batches it checked, and warned about once (`warn`), with the totals and the first of each."""

    def __init__(self, room=None):
        self.room = room  # source tokens the encoder reads ([BOS] ... [EOS] in its length): the first check's
        self.long, self.first_long = 0, None  # (source, its length in tokens)
        self.unseen, self.first_unseen = 0, None
        self.unread, self.unread_empty, self.first_unread = 0, 0, None  # (source, its unit, the method's example)

    def add_unread(self, input_method, sources, empty):
        if sources and self.first_unread is None:
            self.first_unread = (sources[0], input_method.unread(sources[0]), input_method.example)
        self.unread += len(sources)
        self.unread_empty += empty

    def add_long(self, count, source, length):
        if count and self.first_long is None:
            self.first_long = (source, length)
        self.long += count

    def add_unseen(self, count, source):
        if count and self.first_unseen is None:
            self.first_unseen = source
        self.unseen += count

    def warn(self):
        """Warns of what was found (nothing when nothing was), and starts over."""
        if self.long:
            errors.warn(f"{self.long} source(s) are longer than the model's {self.room} tokens (first: "
                        f"{shown(self.first_long[0])}, {self.first_long[1]} tokens); only their first {self.room} "
                        "tokens are translated.")
        if self.unseen:
            # Not "never seen in training" alone: a small vocabulary_size (`--preset tiny`'s) leaves out
            # characters that training had plenty of, as generation and prediction say.
            errors.warn(f"{self.unseen} source(s) hold text the model's vocabulary has no token for (never seen "
                        f"in training, or left out of its vocabulary_size; first: {shown(self.first_unseen)}); "
                        "it is read as unknown and its translation may be wrong.")
        if self.unread:
            source, unit, example = self.first_unread
            numbered = " with tone numbers" if any(c.isdigit() for c in example) else ""
            empty = f", and {self.unread_empty} came out empty" if self.unread_empty else ""
            errors.warn(f"--input-method has no candidates for {self.unread} source(s) (first: {shown(source)}, whose "
                        f"{unit!r} is no syllable of the training sources): it reads syllables{numbered} separated by "
                        f"spaces, as the training sources write them, e.g. {example!r}; those sources were translated "
                        f"without it (by the model, and --lm where given){empty}.")
        self.__init__(self.room)


def greedy_without_cache(model, inputs, max_new_tokens, end_id):
    """Greedy ids decoded by re-running the whole model for every new token (no cache; a reference).

    `inputs` as `Seq2SeqLMPreprocessor.generate_preprocess` gives them with a
    decoder width of `1 + max_new_tokens`. Each step runs the encoder and the
    decoder over the whole buffer and reads the logits of the last filled
    position, as the keras.io English-to-Spanish example does.
    """

    @tf.function(jit_compile=True, autograph=False)
    def decode(inputs):
        ids = tf.cast(inputs["decoder_token_ids"], tf.int32)
        batch = tf.shape(ids)[0]
        done = tf.zeros([batch], tf.bool)

        def body(i, ids, done):
            logits = model({**inputs, "decoder_token_ids": ids,
                            "decoder_padding_mask": tf.cast(tf.range(1 + max_new_tokens)[None, :] < i, tf.int32)
                            + tf.zeros_like(ids)}, training=False)
            token = tf.argmax(logits[:, i - 1], axis=-1, output_type=tf.int32)
            token = tf.where(done, tf.zeros_like(token), token)
            ids = tf.tensor_scatter_nd_update(ids, tf.stack([tf.range(batch), tf.fill([batch], i)], -1), token)
            return i + 1, ids, done | tf.equal(token, end_id)

        _, ids, _ = tf.while_loop(lambda i, ids, done: (i <= max_new_tokens) & ~tf.reduce_all(done), body,
                                  (tf.constant(1), ids, done))
        return ids

    return keras.ops.convert_to_numpy(decode({k: tf.cast(v, tf.int32) for k, v in inputs.items()}))


def load_translator(run_dir, jit_compile=True):
    """The `Translator` of a finished translation run directory."""
    task = runs.task_of(run_dir)
    if task != "translate":
        how = errors.spelled("`tfllm train --task translate`",  # a notebook trains with a function, not a command
                             python="tfllm.training.seq2seq.train_seq2seq(TrainConfig(task=\"translate\", ...))")
        raise UserInputError(f"{run_dir!r} holds {runs.TASK_NAMES.get(task, task)}, not a translation model; "
                             f"train one with {how}.")
    # No `warnings.catch_warnings()`: not thread-safe, it left "ignore" on for the process (`load_generator`).
    with runs.loading(run_dir):
        model = runs.load_translation_task(run_dir)
    return Translator(model, jit_compile=jit_compile)


_LOADED = {}  # real path of a run directory -> (its files' signature, Translator)


_BY_MODEL = {}  # the last few loaded models translate() was given -> their Translators (runs.decoder_of)


def cached_translator(run_dir):
    """The `Translator` of `run_dir`, loaded once per process and kept with its compiled decoding functions
    (loaded again only when the run directory's files change: a retrained run)."""
    return runs.load_cached(_LOADED, run_dir, load_translator)


def translate(model_or_run_dir, sources, **options):
    """Translates `sources` with a `Translator`, the model of a run directory (loaded once per process) or a
    loaded KerasHub `Seq2SeqLM` (`keras_hub.models.Seq2SeqLM.from_preset(run_dir)`; its Translator is kept).

    See `Translator.translate` for the options. With a run directory, `memory`, `lm` and `input_method`
    also take what `tfllm.evaluate` and `tfllm translate` take: `memory="train"` (the run's training
    pairs) or a file of pairs, `lm=CORPUS` (a bundled text or a file in the target language) and
    `input_method=True`, built for each call (for many calls, build them once with
    `tfllm.training.seq2seq.run_memory` and `run_decoding_aids`).

    Example:
    >>> translate("runs/cedict", ["你好"], sampler="beam", num_beams=4)
    >>> translate("runs/cedict", ["nihao"], input_method=True, lm="zh_news")
    """
    takes = [name for name in inspect.signature(Translator.translate).parameters if name not in ("self", "sources")]
    runs.refuse_unknown_options("translate", options, takes)  # was Python's TypeError, after loading the run
    translator = runs.decoder_of(model_or_run_dir, "translate", Translator, keras_hub.models.Seq2SeqLM, _BY_MODEL,
                                 Translator, cached_translator)
    if isinstance(model_or_run_dir, (str, os.PathLike)):
        options = _named_aids(translator, runs.run_dir_argument(model_or_run_dir, "translate"), options)
    return translator.translate(sources, **options)


def _named_aids(translator, run_dir, options):
    """`options` with the decoding aids named as the command names them (`--memory train|PAIRS`, `--lm CORPUS`,
    `--input-method`) made from the run, as `tfllm translate` makes them."""
    from tfllm.training.seq2seq import run_decoding_aids, run_memory  # a task module beside this one

    named = lambda value: isinstance(value, (str, os.PathLike))
    memory, corpus, method = options.get("memory"), options.get("lm"), options.get("input_method")
    options = dict(options)
    if named(memory):
        options["memory"] = run_memory(run_dir, os.fspath(memory))
    if named(corpus) or method is True:
        lm, built = run_decoding_aids(translator, run_dir, os.fspath(corpus) if named(corpus) else None, method is True)
        if named(corpus):  # --input-method alone scores candidates with the LM, but decodes without it
            options["lm"] = lm
        if method is True:
            options["input_method"] = built
    return options
