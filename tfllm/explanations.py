"""Why a model says what it says: per-token attributions and attention maps (`tfllm.explain`).

Three methods, for tfllm's classifiers, KerasHub classifiers fine-tuned by
tfllm (BERT, DistilBERT, ...) and, for generation runs, the next token after a
prompt:

- `integrated_gradients` (Sundararajan et al., 2017): the gradient of the
  target's probability, averaged along the straight path from a baseline to
  the text's token embeddings (trapezoid rule, `steps` intervals, all points in
  one batch of one compiled call), times (embedding - baseline), summed over
  the embedding's width. The baseline is the padding token's embedding at every
  text position; special tokens ([CLS], [SEP], start/end) keep their own
  embedding, since every input has them. tfllm's `default` classifier also
  reads hashed bigrams and a naive-Bayes "wide" path from the token ids, beside
  the encoder; those lookups are interpolated too (their baseline is zero, the
  weight a padding token has there), and a bigram's share goes half to each of
  its two tokens. Its character and word n-gram views read the raw text, not
  the tokens: each is interpolated from zero as a whole and gets one score for
  the whole text (Explanation.views), text past the token window included. So
  the attributions cover the whole model, the baseline is the same for every
  text of a length, and the completeness check (Explanation.completeness)
  holds: tokens and views sum to score(text) - score(baseline), up to the
  integration error it reports.
- `attention`: every layer's and head's attention probabilities, and attention
  rollout (Abnar & Zuidema, 2020: heads averaged, the residual added as 0.5 I,
  layers multiplied). A token's score is the rollout attention the pooled
  output pays to it (the mean over real positions for tfllm's mean-pooled
  classifier, the first position for [CLS]-pooled KerasHub classifiers, the
  last position for a generator). Not signed, not class-specific, and blind to
  anything beside the encoder (the n-gram paths).
- `occlusion`: drop each token in turn (the text re-packed without it) and
  see the target's probability move: score = p(text) - p(text without it).
  The character and word views still read the token there (they read the
  raw text); each gets one score, p(text) - p(text without that view).

Example:
>>> explanation = tfllm.explain("runs/reviews", "a gorgeous, witty film")
>>> explanation.label, [(t["token"], round(t["score"], 3)) for t in explanation.to_json()["tokens"]]
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import html
import json
import os
import re
import threading
import time
import unicodedata
import warnings

import numpy as np

from tfllm import runs
from tfllm.config import byte_decoder, read_escapes
from tfllm.datasets.text import unix_newlines
from tfllm.errors import UserInputError

METHODS = ("integrated_gradients", "attention", "occlusion")
# tfllm's TextClassifier layers that read the raw text's code points, not the tokens -> the view's name.
VIEWS = {"char_ngrams": "character n-grams", "word_ngrams": "word n-grams"}
DEFAULT_STEPS = 50
# An Explainer runs each of its model functions (probabilities, integrated gradients, attention) eagerly for its
# first EAGER_CALLS calls, then traced. On `make demo`'s run tracing integrated gradients took ~1.5 s and an eager
# call ~0.2 s more than a traced one, so 8 calls are about where the two break even: `tfllm explain RUN TEXT`, and a
# notebook's first `tfllm.explain` calls, answer 3-9x sooner; a process that explains many texts pays ~1.5 s more,
# once (benchmarks/bench_explain.py, docs/benchmarks.md).
EAGER_CALLS = 8
# The least a score must be, as a share of the explained probability, to be shown as ±1.00 at full colour.
SCALE_FLOOR = 0.05
MAX_STEPS = 1000


@dataclasses.dataclass
class Explanation:
    """One text's explanation.

    Attributes:
        text: the input text (the prompt for a generator).
        method: one of `METHODS`.
        kind: "classifier" or "generator".
        label: the predicted label (a generator: the predicted next token).
        target: the label (or next token) the scores explain; None for `attention`, which is the same for
            every label (the prediction is `label`).
        probabilities: `{label: probability}` (a generator: its 10 likeliest next tokens).
        tokens: the text's tokens as the model saw them (no special tokens; at most the model's length:
            a classifier's text its first tokens, a generator's prompt its last, as generation reads it).
        scores: one score per token (positive: evidence for `target`).
        completeness: integrated gradients only: `{"sum", "difference", "score", "baseline_score",
            "error", "steps"}`: the attributions' sum against score(text) - score(baseline).
        attention: `{"tokens": every real position's token (specials included), "layers":
            [layers][heads][query][key], "rollout": [query][key]}` where the model has attention maps.
        seconds: time the method took (after the first call compiled it).
        tokens_left_out: how many of the text's tokens lie beyond the model's window and are not attributed
            (a classifier: after `tokens`; a generator: before them).
        views: integrated gradients and occlusion of a classifier with views of the raw text (the `default`
            recipe's character and word n-grams): `{view: score}`, one score each for the whole text (the
            tokens past the window too), on the tokens' scale; an ensemble's (occlusion): each view silenced in every
            member at once, the mean of its members' scores.
        spans: `(start, end)` per token, the characters of `text` it covers (None where it cannot be placed,
            or covers none: SentencePiece's lone '▁' before a first word, shown '␣'): what the outputs show, so a
            lowercased, accent-stripped, case-folded ('ß' as 'ss') or unknown ([UNK]: its whole word) token reads
            as written. Spans are in order and never overlap; of several tokens from one character ('ﬁ' -> 'f',
            '##i') the first covers it and the rest an empty span.
        target_probability: the explained label's (or next token's) probability: what the scores of
            integrated gradients and occlusion are changes of, and what the shown scale is tied to (`scale`).
        views_note: where the views carry more than half of the explained score (`views_share`), a line
            saying the token scores cover only the rest; else None.
        attention_note: where attention maps were asked for (`with_attention`) and the model has none that
            tfllm reads (an ensemble: one per member), why; else None.
    """

    text: str
    method: str
    kind: str
    label: str
    target: str | None
    probabilities: dict
    tokens: list
    scores: list
    completeness: dict | None = None
    attention: dict | None = None
    seconds: float = 0.0
    tokens_left_out: int = 0
    views: dict | None = None
    spans: list | None = None
    target_probability: float | None = None
    attention_note: str | None = None

    def _repr_html_(self):
        """Jupyter shows an explanation as `tfllm explain --html` draws it (one section, inline styles)."""
        legend = "" if self.method == "attention" else f'<p style="{_STYLES["note"]}">{_LEGEND}</p>'
        return f"<div>{_section_html(self)}{legend}</div>"

    def to_json(self, with_attention=False):
        """`{"label", "probabilities", "method", "target", "tokens": [{"token", "text", "score"}, ...]}` ("token"
        as the vocabulary spells it, "text" the slice of the input it covers, "" where it covers none, so the
        texts join back to the input as written), and where they apply `"completeness"`
        (integrated gradients' sum check), `"attention"` (`with_attention`) and `"tokens_left_out"` (tokens past
        the model's window) and `"views"` (the whole text's views)."""
        out = {
            "label": self.label,
            "probabilities": {k: float(v) for k, v in self.probabilities.items()},
            "method": self.method,
            "target": self.target,
            "tokens": [{"token": t, "text": covered, "score": float(s)}
                       for t, covered, s in zip(self.tokens, self.covered_texts, self.scores)],
        }
        if self.completeness is not None:
            out["completeness"] = self.completeness
        if with_attention and self.attention is not None:
            out["attention"] = self.attention
        if self.tokens_left_out:
            out["tokens_left_out"] = self.tokens_left_out
        if self.views:
            out["views"] = self.views
        if self.views_note:
            out["views_note"] = self.views_note
        return out

    @property
    def shown_tokens(self):
        """Each token as the text has it (its span; a whitespace token made visible, e.g. '␣'), else as the
        vocabulary spells it."""
        return [piece for _, piece in _pieces(self)]

    @property
    def covered_texts(self):
        """Each token's slice of the input ("" where it covers none), for machines: a generator's space token
        was '␣', the terminal's symbol, so its JSON texts no longer joined back to the prompt. Without spans
        (an explanation made by hand), the tokens as shown."""
        if not self.spans or not any(self.spans):
            return self.shown_tokens
        return [self.text[span[0]:span[1]] if span else "" for span in self.spans]

    @property
    def scale(self):
        """(the score shown as ±1.00 and at full colour, it and what it is in words): the largest |score|, but for integrated
        gradients and occlusion at least `SCALE_FLOOR` of the explained probability. Each text's scores were
        divided by its largest, so a model that learned nothing (scores ~1e-6) showed full-strength evidence."""
        peak = max((abs(s) for s in self.scores), default=0.0)
        if self.method == "attention":
            return peak, f"{peak:.3g}, the most attended token's rollout attention"
        probability = self.target_probability
        if probability is None:  # made by hand, not by an Explainer
            return peak, f"{peak:.3g}, the largest score"
        floor = SCALE_FLOOR * probability
        if peak >= floor:
            return peak, f"{peak:.3g}, the largest score (a change in p({self.target!r}))"
        return floor, (f"{floor:.3g}, {SCALE_FLOOR:.0%} of p({self.target!r}) ({probability:.3g}): no token "
                       f"moved it that much (the largest score is {peak:.2g})")

    @property
    def views_share(self):
        """|sum of the views| / (|sum of the views| + |sum of the token scores|), or None without views."""
        if not self.views:
            return None
        views, tokens = abs(sum(self.views.values())), abs(sum(self.scores))
        return views / (views + tokens) if views + tokens > 0 else 0.0

    @property
    def views_note(self):
        # A view-heavy model's token scores are ~0 while deleting a word flips its label (its n-grams go too):
        # the views' share was printed, but nothing said the token scores miss most of the score.
        share = self.views_share
        if share is None or share <= 0.5:
            return None
        return (f"the views carry {share:.0%} of the explained score (views {sum(self.views.values()):+.4f}, "
                f"tokens {sum(self.scores):+.4f}); the token scores cover only the token paths' share, and "
                "deleting a word also changes the views")


# --- running a model with some layers' outputs given -------------------------------------------


# Replacements are per thread: the layer's `call` becomes a dispatcher (installed while any thread needs
# it) that runs the calling thread's replacement, if any, else the layer's own call. Before, the instance
# attribute itself was the replacement, so an explanation in one thread silenced a view, or recorded
# embeddings, in another thread's model call or trace (a wrong traced function kept for good), and two
# threads' `del layer.call` raised AttributeError.
_replacing = threading.local()
_installed_lock = threading.Lock()
_installed = {}  # id(layer) -> [layer, the original call, how many blocks in any thread use it]


@contextlib.contextmanager
def _replaced_calls(replacements):
    """Inside the block, `layer(...)` in this thread runs `fn(original_call, *args, **kwargs)` for each
    `{layer: fn}`; other threads' calls of the layer run as before.

    Integrated gradients needs the model's output at embeddings between the
    baseline and the text's, which no token id has; attention maps need each
    attention layer's scores, which the encoder blocks do not return. Rather
    than re-implementing each architecture's forward pass, the model's own call
    runs with those layers' calls replaced (an instance attribute shadows the
    class's `call`; PRIVATE BEHAVIOUR: Keras's `Operation.__call__` looks up
    `self.call` on every call). A function traced inside the block keeps what
    the replacement did; the model object is left as it was.
    """
    mine = _replacing.__dict__.setdefault("fns", {})
    with _installed_lock:
        for layer in replacements:
            entry = _installed.get(id(layer))
            if entry is None:
                entry = _installed[id(layer)] = [layer, layer.call, 0]
                layer.call = functools.partial(_dispatch, id(layer), entry[1])
            entry[2] += 1
    outer = {id(layer): mine.get(id(layer)) for layer in replacements}
    mine.update({id(layer): fn for layer, fn in replacements.items()})
    try:
        yield
    finally:
        for key, fn in outer.items():
            if fn is None:
                mine.pop(key, None)
            else:
                mine[key] = fn
        with _installed_lock:
            for layer in replacements:
                entry = _installed[id(layer)]
                entry[2] -= 1
                if not entry[2]:
                    del _installed[id(layer)]
                    del layer.call


def _dispatch(key, original, *args, **kwargs):
    fn = _replacing.__dict__.get("fns", {}).get(key)
    return original(*args, **kwargs) if fn is None else fn(original, *args, **kwargs)


_EAGER_LOCK = threading.RLock()


class _EagerFirst:
    """A `tf.function` run as plain Python (eagerly) for its first `EAGER_CALLS` calls, then traced as usual."""

    def __init__(self, function):
        self.function, self.eager_calls_left = function, EAGER_CALLS

    def __call__(self, *args):
        if self.eager_calls_left <= 0:
            return self.function(*args)
        import tensorflow as tf

        self.eager_calls_left -= 1
        # One thread at a time: `catch_warnings` swaps the process's filter list, and two threads interleaving it
        # could leave the filter below on for good (as versioning.write_out's docstring says).
        with _EAGER_LOCK, warnings.catch_warnings():
            # Keras warns of a softmax over an axis of size 1 when it sees the shape: a one-token prompt's attention
            # over its one position, which is right (the traced function, of unknown shapes, never warned).
            warnings.filterwarnings("ignore", message="You are using a softmax over axis -1", category=UserWarning)
            # As the traced function receives them: tensors (the gradient tape watches tensors, not NumPy arrays).
            return self.function.python_function(*tf.nest.map_structure(tf.convert_to_tensor, args))


def _forward_only(fn):
    """A replacement that leaves reverse calls of a tied `ReversibleEmbedding` (the LM head) alone."""
    def call(original, *args, **kwargs):
        if kwargs.get("reverse"):
            return original(*args, **kwargs)
        return fn(original, *args, **kwargs)
    return call


def _attention_layers(backbone):
    """The layers that give each block's attention probabilities when called with
    `return_attention_scores=True`: tfllm's `FusedDecoderBlock`s themselves, or the self-attention layer
    of each KerasHub `TransformerEncoder` or `TransformerDecoder` block."""
    import keras_hub

    from tfllm.models.causal_lm import FusedDecoderBlock

    blocks = getattr(backbone, "transformer_layers", None) or []
    # ALBERT keeps its blocks in groups (a list per group), each block called by several layers in turn.
    blocks = [b for group in blocks for b in (group if isinstance(group, list) else [group])]
    if blocks and all(isinstance(b, FusedDecoderBlock) for b in blocks):
        return blocks
    kinds = (keras_hub.layers.TransformerEncoder, keras_hub.layers.TransformerDecoder)
    if not blocks or not all(isinstance(b, kinds) for b in blocks):
        return None
    # PRIVATE API: KerasHub's `TransformerEncoder._self_attention_layer` (and TransformerDecoder's; keras-hub
    # 0.32). A block's `call(return_attention_scores=True)` is public (keras-team/keras-hub#1644), but backbones
    # call their blocks without it; so the attention layer inside, a `keras.layers.MultiHeadAttention`, is asked.
    return [b._self_attention_layer for b in blocks]


class Explainer:
    """Explains a loaded KerasHub task's predictions; holds its compiled functions for reuse.

    Args:
        model: a text classifier task (tfllm's `TextClassifier`, or a KerasHub one whose
            outputs are probabilities or logits) or a `CausalLM` task, with its preprocessor.
        label_names: the classes' names (classifiers; default the model's own `label_names`, which a tfllm
            classifier saves with its run, else "0", "1", ...).

    Example:
    >>> task, labels, _ = tfllm.load_run("runs/reviews")
    >>> explainer = Explainer(task, labels)
    >>> explainer.explain("a gorgeous, witty film", method="occlusion").scores
    """

    def __init__(self, model, label_names=None):
        import keras_hub

        if isinstance(model, (str, os.PathLike)):  # was an AttributeError ('str' object has no attribute ...)
            raise UserInputError(f"Explainer takes a loaded task; for a run directory use "
                                 f"tfllm.explanations.load_explainer({os.fspath(model)!r}), or explain(run_dir, text).")
        self.model = model
        self.generator = isinstance(model, keras_hub.models.CausalLM)
        if not self.generator and not isinstance(model, keras_hub.models.TextClassifier):
            raise UserInputError(f"Cannot explain a {type(model).__name__}: explain works on text classifiers and "
                                 "text generators (causal LMs), e.g. keras_hub.models.TextClassifier.from_preset(run_dir).")
        self.preprocessor = model.preprocessor
        if self.preprocessor is None:
            raise UserInputError("This model has no preprocessor; explain needs one to tokenize the text.")
        self.tokenizer = self.preprocessor.tokenizer
        self.kind = "generator" if self.generator else "classifier"
        backbone = model.backbone
        # An ensemble has one token embedding per member: occlusion, which only runs the model, explains it;
        # integrated gradients and attention need one embedding and one stack of blocks (`explain` says so).
        token_embedding = getattr(backbone, "token_embedding", None)
        self.pad_id = int(getattr(self.tokenizer, "pad_token_id", None) or 0)
        # Special tokens carry no evidence about the text; an unknown word's [UNK] does, so it stays.
        self.special_ids = {int(i) for i in (getattr(self.tokenizer, "special_token_ids", None) or [])}
        for name in ("unk_token_id", "oov_token_id"):
            self.special_ids.discard(getattr(self.tokenizer, name, None))
        self.never_generated = set()
        if self.generator:
            from tfllm.generation import never_emitted_ids  # lazy, as this module's others: TensorFlow

            self.never_generated = {int(i) for i in never_emitted_ids(model, self.tokenizer)}
        self.num_outputs = int(model.output.shape[-1]) if not self.generator else None
        if not self.generator:
            num_classes = 2 if self.num_outputs == 1 else self.num_outputs
            # A tfllm classifier knows its classes' names (task.json), also when loaded with `from_preset` alone.
            label_names = label_names or getattr(model, "label_names", None)
            self.label_names = list(label_names) if label_names else [str(i) for i in range(num_classes)]
            if len(self.label_names) != num_classes:
                raise UserInputError(f"{len(self.label_names)} label names for a model with {num_classes} classes.")
        # What integrated gradients interpolates: (layer, kind). "token": one vector per position;
        # "bigram": one per position, for the pair ending there; "wide": unigrams then bigrams; a view's
        # name (VIEWS): its n-grams of the whole raw text, one score in all.
        self._embeddings = [(token_embedding, "token")] if token_embedding is not None else None
        from tfllm.models.ensemble import EnsembleClassifier
        from tfllm.models.text_classifier import TextClassifier

        self._mean_pooled = isinstance(model, TextClassifier)
        # tfllm's classifiers (an ensemble's mean of its members' too) output probabilities; KerasHub's, logits.
        self._outputs_probabilities = isinstance(model, (TextClassifier, EnsembleClassifier))
        names = {layer.name: layer for layer in model.layers} if self._mean_pooled else {}
        # An ensemble averages its members' probabilities: its view is that view of every member, silenced
        # together by occlusion (only a single model's were found, so an ensemble showed no views at all).
        members = model.members if isinstance(model, EnsembleClassifier) else None
        owners = [{layer.name: layer for layer in m.layers} for m in members] if members else [names]
        self._views = [(o[layer], view) for o in owners for layer, view in VIEWS.items() if layer in o]
        if self._mean_pooled and self._embeddings:
            if "bigram_embedding" in names:
                self._embeddings.append((names["bigram_embedding"], "bigram"))
            if "wide_ngrams" in names:
                self._embeddings.append((names["wide_ngrams"], "wide"))
            self._embeddings += self._views
        self._attention = _attention_layers(backbone)
        # Why a page asked for attention maps (--html) has none: it was written without them, saying nothing.
        self.no_attention = None
        if self._attention is None:
            self.no_attention = (
                f"an ensemble has no single attention map (each of its {len(members)} members has its own); "
                "explain a member (RUN_DIR/members/*) for its maps" if members else
                f"this {self.kind}'s blocks are neither tfllm's nor KerasHub's Transformer blocks, whose attention "
                "maps tfllm reads")
        self._fns = {}

    # --- inputs -----------------------------------------------------------------------------

    def as_trained(self, text):
        """A generator's prompt with its line breaks as training read them ("\r\n" and "\r" as "\n"), as
        `generate` reads it: a Windows prompt's "\r" was refused here as a character the tokenizer never saw."""
        return unix_newlines(text) if self.generator and isinstance(text, str) else text

    def encode(self, text):
        """The text's model inputs (numpy, `[1, n]`, trimmed to its real positions) and its tokens."""
        if not isinstance(text, str):
            raise UserInputError(f"Explainer.explain takes one text (a string), got {type(text).__name__}; "
                                 "tfllm.explain(run, [text, ...]) takes a list.")
        # A generator's spaces are tokens (`tfllm generate RUN "   "` continues them); a classifier's are not.
        if not (text if self.generator else text.strip()):
            raise UserInputError("The text is empty; " + empty_text_message(self.generator))
        if self.generator:
            from tfllm.generation import refuse_unseen  # as `tfllm generate` refuses it: it would never continue it

            refuse_unseen(self.tokenizer, text, np.asarray(self.tokenizer.tokenize(text)))
            x = self.preprocessor.generate_preprocess([text])
        else:
            x = self.preprocessor([text])
            if isinstance(x, tuple):
                x = x[0]
        x = {k: np.asarray(v) for k, v in x.items()}
        # F-Net's and RoFormerV2's preprocessors give no padding_mask (their backbones take none): packing
        # pads after the text, so the real positions are those before the tokenizer's pad id.
        mask = x["padding_mask"] if "padding_mask" in x else x["token_ids"] != self.pad_id
        n = int(np.asarray(mask).astype(bool)[0].sum())
        # The code points stay whole: explanations hold the character and word views fixed (their share is in the
        # baseline), and attribute to the token paths.
        x = {k: v if k == "code_points" else v[:, :n] for k, v in x.items()}
        if self.generator and set(x) == {"token_ids", "padding_mask"}:
            x = self._prompt_tail(x, text)
        ids = x["token_ids"][0].astype(int)
        is_text = np.array([i not in self.special_ids for i in ids])
        if not is_text.any():
            raise UserInputError(f"The text {text[:60]!r} has no tokens for this model to read.")
        return x, ids, is_text

    def _prompt_tail(self, x, text):
        """A prompt longer than the window as generation reads it: its last tokens (after the start token, if
        the model has one). Packing kept its first ones, so the next token explained was one in the middle of
        the prompt, not the one `tfllm generate` continues with."""
        packed = x["token_ids"][0]
        prompt = np.asarray(self.tokenizer(text)).astype(packed.dtype).ravel()
        starts = 0  # a start token the packing put first
        while starts < len(packed) and int(packed[starts]) in self.special_ids:
            starts += 1
        room = len(packed) - starts
        if len(prompt) <= room or len(packed) < self.preprocessor.sequence_length:
            return x  # not cut
        ids = np.concatenate([packed[:starts], prompt[-room:]])[None, :]
        return {"token_ids": ids, "padding_mask": np.ones_like(ids, dtype=x["padding_mask"].dtype)}

    def token_strings(self, ids):
        return [str(self.tokenizer.id_to_token(int(i))) for i in ids]

    def _probabilities_of(self, outputs, inputs):
        """`[batch, K]` class probabilities (classifier) or next-token probabilities (generator)."""
        import keras
        import tensorflow as tf

        outputs = tf.cast(outputs, tf.float32)
        if self.generator:
            last = tf.cast(tf.reduce_sum(tf.cast(inputs["padding_mask"], tf.int32), axis=1), tf.int32) - 1
            logits = tf.gather(outputs, last, axis=1, batch_dims=1)
            return tf.nn.softmax(logits, axis=-1)
        if outputs.shape[-1] == 1:
            return tf.concat([1.0 - outputs, outputs], axis=-1)
        activation = getattr(self.model, "activation", None)
        activation = keras.activations.get(activation) if activation is not None else None
        if not self._outputs_probabilities and activation in (None, keras.activations.linear):
            return tf.nn.softmax(outputs, axis=-1)  # KerasHub classifiers output logits by default
        return outputs

    def _spec(self, x):
        import tensorflow as tf

        return {k: tf.TensorSpec([None, None], tf.as_dtype(v.dtype), name=k) for k, v in x.items()}

    # --- compiled functions -----------------------------------------------------------------

    def _probabilities_fn(self, x):
        if "probabilities" not in self._fns:
            import tensorflow as tf

            # autograph=False: no Python control flow on tensors here (see tfllm.generation.decode_function).
            @tf.function(input_signature=[self._spec(x)], autograph=False)
            def fn(inputs):
                return self._probabilities_of(self.model(inputs, training=False), inputs)
            self._fns["probabilities"] = _EagerFirst(fn)
        return self._fns["probabilities"]

    def _ig_fn(self, x):
        if "ig" in self._fns:
            return self._fns["ig"]
        import tensorflow as tf

        embeddings = self._embeddings
        pad_id = self.pad_id

        @tf.function(input_signature=[self._spec(x), tf.TensorSpec([None], tf.float32, name="alphas"),
                                      tf.TensorSpec([None], tf.float32, name="weights"),
                                      tf.TensorSpec([], tf.int32, name="target"),
                                      tf.TensorSpec([1, None], tf.bool, name="is_text")], autograph=False)
        def fn(inputs, alphas, weights, target, is_text):
            recorded = {}

            def record(i):
                def call(original, *args, **kwargs):
                    recorded[i] = original(*args, **kwargs)
                    return recorded[i]
                return _forward_only(call)

            with _replaced_calls({layer: record(i) for i, (layer, _) in enumerate(embeddings)}):
                self.model(inputs, training=False)
            # Which positions move from the baseline: text tokens; a bigram when either of its tokens is text.
            previous = tf.pad(is_text[:, :-1], [[0, 0], [1, 0]])
            bigram_text = tf.logical_or(is_text, previous)
            deltas, bases = [], []
            for i, (layer, kind) in enumerate(embeddings):
                actual = tf.cast(recorded[i], tf.float32)
                if kind == "token":
                    base = tf.cast(tf.gather(layer.embeddings, pad_id), tf.float32)[None, None, :]
                    moving = is_text
                elif kind == "bigram":
                    base, moving = tf.zeros_like(actual), bigram_text
                elif kind == "wide":  # unigrams, then the bigrams ending at each position
                    base, moving = tf.zeros_like(actual), tf.concat([is_text, bigram_text], axis=1)
                else:  # a view of the raw text: every n-gram of it moves
                    base, moving = tf.zeros_like(actual), tf.ones_like(actual[:, :, 0], tf.bool)
                base = tf.where(moving[:, :, None], base, actual)
                bases.append(base)
                deltas.append(actual - base)
            steps = tf.shape(alphas)[0]
            tiled = {k: tf.repeat(v, steps, axis=0) for k, v in inputs.items()}
            with tf.GradientTape() as tape:
                points = [base + alphas[:, None, None] * delta for base, delta in zip(bases, deltas)]
                tape.watch(points)

                def give(i):
                    return _forward_only(lambda original, *args, **kwargs: tf.cast(points[i], recorded[i].dtype))

                with _replaced_calls({layer: give(i) for i, (layer, _) in enumerate(embeddings)}):
                    probabilities = self._probabilities_of(self.model(tiled, training=False), tiled)
                scores = probabilities[:, target]
                weighted = tf.reduce_sum(scores * weights)
            gradients = tape.gradient(weighted, points)
            # Sum over the batch of weighted gradients = the path integral; times the displacement.
            per_position = [tf.reduce_sum(tf.reduce_sum(g, axis=0) * d[0], axis=-1)
                            for g, d in zip(gradients, deltas)]
            return per_position, scores, probabilities[-1]

        self._fns["ig"] = _EagerFirst(fn)
        return self._fns["ig"]

    def _attention_fn(self, x):
        if "attention" in self._fns:
            return self._fns["attention"]
        import tensorflow as tf

        layers = self._attention

        @tf.function(input_signature=[self._spec(x)], autograph=False)
        def fn(inputs):
            maps = []  # in call order: one per layer, also where a block is shared by several (ALBERT)

            def record(original, *args, **kwargs):
                kwargs["return_attention_scores"] = True
                output, scores = original(*args, **kwargs)
                maps.append(scores)
                return output

            with _replaced_calls({layer: record for layer in layers}):
                probabilities = self._probabilities_of(self.model(inputs, training=False), inputs)
            return tf.stack([tf.cast(m, tf.float32) for m in maps], axis=1), probabilities

        self._fns["attention"] = _EagerFirst(fn)
        return self._fns["attention"]

    # --- public -----------------------------------------------------------------------------

    def target_index(self, target):
        if target is None:
            return None
        if self.generator:
            index = self._token_id(target)
            if index is None and isinstance(target, str) and read_escapes(target) != target:
                target = read_escapes(target)  # `--target '\n'`, as a shell passes a newline (as --stop reads it)
                index = self._token_id(target)
            if index is None and self._byte_level():  # as explain lists it: ' good', not 'Ġgood'
                encoder = {b: c for c, b in byte_decoder().items()}
                index = self._token_id("".join(encoder[b] for b in target.encode("utf-8")))
            if index is None:
                raise UserInputError(f"--target {target!r} is not a token of this model's vocabulary; pass one "
                                     "token as the vocabulary spells it (as explain lists the next tokens), e.g. "
                                     "a character for a character-level model.")
            if index in self.never_generated:  # [UNK], [PAD], [MASK] were explained with a probability
                raise UserInputError(f"--target {target!r} is a special token this model never generates (its "
                                     "sampler never emits it); pass a token it can say, as explain lists the next "
                                     "tokens.")
            return index
        if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
            target = str(target)  # labels are text: 2 names the label "2" (it was refused as "not one of 0, 1, 2")
        if target not in self.label_names:
            raise unknown_label(target, self.label_names)
        return self.label_names.index(target)

    def _token_id(self, token):
        try:
            index = int(self.tokenizer.token_to_id(token))
            # SentencePiece (and others) give an unknown piece the unknown token's id: that was explained
            # as '<unk>' without a word, so the id must give the target back.
            return None if index < 0 or self.token_strings([index])[0] != token else index
        except Exception:  # noqa: BLE001 - each tokenizer signals an unknown token its own way
            return None

    def _byte_level(self):
        import keras_hub

        return isinstance(self.tokenizer, keras_hub.tokenizers.BytePairTokenizer)

    def next_token_strings(self, ids):
        """A generator's next tokens as text: a byte-level BPE's decoded (' good', not 'Ġgood'; a token that is
        part of a character's bytes as the vocabulary spells it)."""
        tokens = self.token_strings(ids)
        if not self._byte_level():
            return tokens
        return [t if _bytes_surface(t) is None else _bytes_surface(t) for t in tokens]

    def probabilities(self, x):
        return np.asarray(self._probabilities_fn(x)(x))

    def removal_probabilities(self, x, keep_rows, target=None):
        """Probabilities of the text re-packed with only the positions `keep_rows[j]` (bool `[n]`) kept.

        Returns `[len(keep_rows), K]` (or `[len(keep_rows)]` of `target`'s probability for a generator's
        vocabulary-wide output, when `target` is given).
        """
        probabilities = self.probabilities(self._removal_rows(x, keep_rows))
        return probabilities if target is None else probabilities[:, target]

    def _removal_rows(self, x, keep_rows, width=None):
        """The model inputs of `removal_probabilities`: one row per `keep_rows[j]`, padded to `width` positions
        (default the longest row's). The models read only the positions their padding mask marks."""
        keep_rows = np.asarray(keep_rows, bool)
        lengths = keep_rows.sum(axis=1)
        width = width or max(1, int(lengths.max()))
        batch = {}
        for k, v in x.items():
            if k == "code_points":  # held fixed, as in `encode`
                batch[k] = np.repeat(v, len(keep_rows), axis=0)
                continue
            fill = self.pad_id if k == "token_ids" else 0
            out = np.full((len(keep_rows), width), fill, dtype=v.dtype)
            for j, keep in enumerate(keep_rows):
                out[j, :lengths[j]] = v[0][keep]
            batch[k] = out
        return batch

    def prepare(self, text):
        """(inputs, token ids, text-token mask, probabilities): the parts the methods share."""
        x, ids, is_text = self.encode(text)
        return x, ids, is_text, self.probabilities(x)[0]

    def _top(self, probabilities, count=1):
        """The likeliest `count` outputs' indices; a generator's only among the tokens it can say (its sampler
        never picks a special token but the end): its label, and the next token explained by default (that was
        the plain argmax, a special token where one was likeliest, not the label shown)."""
        order = np.argsort(-probabilities)
        if self.generator:
            order = [i for i in order if i not in self.never_generated]
        return [int(i) for i in order[:count]]

    def _label_and_probabilities(self, probabilities):
        if self.generator:
            top = self._top(probabilities, 10)
            return (self.next_token_strings([top[0]])[0],
                    {s: float(probabilities[i]) for s, i in zip(self.next_token_strings(top), top)})
        return self.label_names[int(np.argmax(probabilities))], dict(zip(self.label_names, map(float, probabilities)))

    def default_method(self, steps=None):
        """Integrated gradients, or occlusion (with a warning) for an ensemble: the README's plain
        `tfllm explain RUN "text"` was an error on an ensemble run. With `steps` (integrated gradients' own
        option) an ensemble is refused in its own words: it warned of occlusion, then refused --steps for
        "--method occlusion", a method the user never chose."""
        if self._embeddings is not None:
            return "integrated_gradients"
        if steps is not None:
            raise UserInputError(f"An ensemble is explained by occlusion (integrated gradients needs one model's "
                                 f"token embedding, and this {type(self.model).__name__} has one per member), so "
                                 "--steps does not apply: drop it, or explain one member (RUN_DIR/members/*).")
        from tfllm.errors import warn

        warn(f"explaining by occlusion: integrated gradients (the default) needs one token embedding, and this "
             f"{type(self.model).__name__} has one per member.")
        return "occlusion"

    def explain(self, text, method=None, target=None, steps=None, with_attention=False):
        """Explains one text; returns an `Explanation`.

        Args:
            text: the text (a generator: the prompt whose next token is explained).
            method: "integrated_gradients" (default), "attention" or "occlusion" (an ensemble's default, with a
                warning: it has no one token embedding to integrate along).
            target: the label to explain (a generator: the next token); default the predicted one.
            steps: integrated gradients' number of intervals (the batch holds steps + 1 points; default
                `DEFAULT_STEPS`); the other methods take none.
            with_attention: also attach the attention maps (for an HTML page), whatever the method.
        """
        method = method or self.default_method(steps)
        if method not in METHODS:
            raise UserInputError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")
        # Options a method would ignore are refused: they were accepted, and the output looked as if they counted.
        if steps is not None and method != "integrated_gradients":
            raise UserInputError(f"--steps is integrated gradients' number of intervals; --method {method} takes "
                                 "none. Drop --steps.")
        if target is not None and method == "attention":
            raise UserInputError("--method attention shows where the model looks, the same for every label: it "
                                 "takes no --target. Use --method integrated_gradients or occlusion to explain one.")
        steps = DEFAULT_STEPS if steps is None else steps
        if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS:
            raise UserInputError(f"--steps must be an integer from 1 to {MAX_STEPS}, got {steps!r}.")
        if method != "occlusion" and self._embeddings is None:
            # Attention attributes to no embedding: it reads the blocks' attention maps, one stack per member.
            needs = ("one token embedding to attribute to" if method == "integrated_gradients"
                     else "one stack of attention blocks to read")
            raise UserInputError(f"--method {method} needs {needs}, and this {type(self.model).__name__} has one "
                                 "per member: use --method occlusion, or explain one of its members (an "
                                 "ensemble's RUN_DIR/members/*).")
        if method == "attention" and self._attention is None:
            raise UserInputError(f"This {self.kind} has no attention maps tfllm can read (its blocks are neither "
                                 "tfllm's nor KerasHub's Transformer blocks); use --method integrated_gradients or "
                                 "occlusion.")
        target_index = self.target_index(target)
        text = self.as_trained(text)
        x, ids, is_text, probabilities = self.prepare(text)
        if method == "occlusion" and self.generator and len(ids) < 2:
            # Without its one token the prompt is empty: nothing to predict a next token from (it was a
            # TensorFlow traceback, a gather at position -1).
            raise UserInputError(f"The prompt {text[:60]!r} is one token, and occlusion drops each token in turn: "
                                 "without it the generator has nothing to predict from. Use --method "
                                 "integrated_gradients, or a longer prompt.")
        if target_index is None:  # the label shown: for a generator, the likeliest token it can say
            target_index = self._top(probabilities)[0]
        start = time.perf_counter()
        completeness = attention = views = None
        if method == "integrated_gradients":
            per_token, completeness, views = self._integrated_gradients(x, is_text, target_index, steps)
        elif method == "occlusion":
            per_token = self.occlusion(x, is_text, target_index, probabilities)
            views = self.view_occlusion(x, target_index, probabilities)
        else:
            attention = self.attention(x, ids)
            per_token = np.asarray(attention["token_scores"])
        seconds = time.perf_counter() - start
        if with_attention and attention is None and self._attention is not None:
            attention = self.attention(x, ids)
        if attention is not None:
            attention = {k: v for k, v in attention.items() if k != "token_scores"}
        explanation = self._explanation(text, method, ids, is_text, probabilities, target_index, per_token,
                                        seconds, completeness, attention)
        explanation.tokens_left_out = self._tokens_left_out(text, is_text)
        explanation.views = views or None
        explanation.spans = self.spans(text, explanation.tokens)
        if with_attention and attention is None:
            explanation.attention_note = self.no_attention
        return explanation

    def _tokens_left_out(self, text, is_text):
        """How many of `text`'s tokens the model's window cut off (the explanation covers the rest)."""
        ids = np.asarray(self.tokenizer(text)).ravel()
        return max(0, int(sum(int(i) not in self.special_ids for i in ids)) - int(is_text.sum()))

    def spans(self, text, tokens):
        """`(start, end)` in `text` of each of `tokens` (the explanation's, a classifier's first ones or a
        generator's last ones), or None where one cannot be placed. The outputs showed vocabulary pieces:
        '[UNK]' for words the vocabulary lacks, WordPiece's lowercase, GPT-2's 'Ġ' for a space; the spans
        show the text as written."""
        ids = [int(i) for i in np.asarray(self.tokenizer(text)).ravel() if int(i) not in self.special_ids]
        every = self.token_strings(ids)
        where = (slice(len(every) - len(tokens), None) if self.generator else slice(0, len(tokens)))
        if every[where] != list(tokens):  # not the tokenization the model read: place the tokens themselves
            ids = [self.tokenizer.token_to_id(t) for t in tokens]
            every, where = list(tokens), slice(None)
        import keras_hub

        from tfllm.tokenizers import unknown_token_id  # lazy, as this module's others: TensorFlow

        unknown = unknown_token_id(self.tokenizer)
        surfaces = [None if i == unknown else self._surface(t) for i, t in zip(ids, every)]
        word_starts = None
        if isinstance(self.tokenizer, keras_hub.tokenizers.WordPieceTokenizer):  # one [UNK] a whole word
            suffix = getattr(self.tokenizer, "suffix_indicator", None) or "##"
            word_starts = [not (t.startswith(suffix) and len(t) > len(suffix)) for t in every]
        return token_spans(text, surfaces, word_starts)[where]

    def _surface(self, token):
        """The text a vocabulary token stands for: WordPiece's '##' dropped, SentencePiece's '▁' and byte-level
        BPE's bytes (GPT-2's 'Ġ') decoded; None where it is no whole text (part of a character's bytes)."""
        if self._byte_level():
            return _bytes_surface(token)
        suffix = getattr(self.tokenizer, "suffix_indicator", None) or "##"
        if token.startswith(suffix) and len(token) > len(suffix):
            return token[len(suffix):]
        return token.replace("\u2581", " ")

    def _explanation(self, text, method, ids, is_text, probabilities, target_index, per_token, seconds,
                     completeness=None, attention=None):
        label, shown = self._label_and_probabilities(probabilities)
        if method == "attention":  # it explains no label: it named the predicted one, and refused --target
            target = None
        else:
            target = (self.next_token_strings([target_index])[0] if self.generator
                      else self.label_names[target_index])
        tokens = self.token_strings(ids)
        return Explanation(
            text=text, method=method, kind=self.kind, label=label, target=target, probabilities=shown,
            tokens=[t for t, keep in zip(tokens, is_text) if keep],
            scores=[float(s) for s, keep in zip(per_token, is_text) if keep],
            completeness=completeness, attention=attention, seconds=seconds,
            target_probability=float(probabilities[target_index]),
        )

    def occlusions(self, texts):
        """Occlusion explanations of `texts`, each for its predicted label (a generator: its likeliest next
        token), from one eager call of the model on all their rows: each text whole, then without each of its
        tokens in turn. The scores and views are `explain(text, method="occlusion")`'s, to float rounding; a
        text with no tokens this model reads (a generator's prompt: fewer than two) is left out.

        For a few texts this is the cheaper way: `explain` traces the model once (~1 s for a tiny classifier),
        one eager call of a few dozen rows takes tens of milliseconds (stop 62, docs/benchmarks.md). Training
        explains a few validation texts in TensorBoard this way.
        """
        prepared = []
        for text in map(self.as_trained, texts):
            try:
                x, ids, is_text = self.encode(text)
            except UserInputError:
                continue
            if not self.generator or len(ids) > 1:
                prepared.append((text, x, ids, is_text))
        if not prepared:
            return []
        start = time.perf_counter()
        width = max(len(ids) for _, _, ids, _ in prepared)
        parts, token_positions = [], []
        for _, x, ids, is_text in prepared:
            positions, keep = self._without_each_token(is_text)
            whole = np.ones((1, len(ids)), bool)  # row 0: the whole text
            parts.append(self._removal_rows(x, np.concatenate([whole, keep]), width))
            token_positions.append(positions)
        batch = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
        rows = np.asarray(self._probabilities_of(self.model(batch, training=False), batch))
        starts = np.cumsum([0] + [1 + len(positions) for positions in token_positions[:-1]])  # the whole rows
        targets = [self._top(rows[first])[0] for first in starts]
        # The views as `explain` scores them: without them TensorBoard showed a view-heavy model's ~0 token
        # scores with no word that the views carried the label. One eager call per view for every text.
        views = self.view_occlusions({k: v[starts] for k, v in batch.items()}, targets, rows[starts])
        seconds = (time.perf_counter() - start) / len(prepared)
        explanations = []
        for (text, x, ids, is_text), positions, first, target_index, text_views in zip(
                prepared, token_positions, starts, targets, views):
            probabilities, dropped = rows[first], rows[first + 1:first + 1 + len(positions)]
            per_token = np.zeros(len(ids))
            per_token[positions] = probabilities[target_index] - dropped[:, target_index]
            explanation = self._explanation(text, "occlusion", ids, is_text, probabilities, target_index,
                                            per_token, seconds)
            explanation.tokens_left_out = self._tokens_left_out(text, is_text)
            explanation.spans = self.spans(text, explanation.tokens)
            explanation.views = text_views or None
            explanations.append(explanation)
        return explanations

    def integrated_gradients(self, x, is_text, target_index, steps=DEFAULT_STEPS):
        """Per-position attributions `[n]` (0 at special tokens), the completeness record and the views'
        attributions (`{view: score}`)."""
        return self._integrated_gradients(x, is_text, target_index, steps)

    def _integrated_gradients(self, x, is_text, target_index, steps):
        alphas = np.linspace(0.0, 1.0, steps + 1, dtype="float32")
        weights = np.full(steps + 1, 1.0 / steps, dtype="float32")
        weights[[0, -1]] *= 0.5  # trapezoid rule
        fn = self._ig_fn(x)
        per_layer, scores, _ = fn(x, alphas, weights, np.int32(target_index), is_text[None, :])
        n = len(is_text)
        per_token, views = np.zeros(n), {}
        for (_, kind), values in zip(self._embeddings, per_layer):
            values = np.asarray(values, "float64")
            if kind == "token":
                per_token += values
            elif kind == "bigram":
                per_token += self._bigram_shares(values, is_text)
            elif kind == "wide":
                per_token += values[:n] + self._bigram_shares(values[n:], is_text)
            else:
                views[kind] = float(values.sum())
        scores = np.asarray(scores, "float64")
        total, difference = float(per_token.sum()) + sum(views.values()), float(scores[-1] - scores[0])
        return per_token, {"sum": total, "difference": difference, "score": float(scores[-1]),
                           "baseline_score": float(scores[0]), "error": abs(total - difference), "steps": steps}, views

    @staticmethod
    def _bigram_shares(values, is_text):
        """A bigram's attribution (the pair ending at each position) split over its two tokens' text ones."""
        out = np.zeros(len(values))
        for i in range(1, len(values)):
            owners = [j for j in (i - 1, i) if is_text[j]]
            for j in owners:
                out[j] += values[i] / len(owners)
        return out

    def occlusion(self, x, is_text, target_index, probabilities):
        """Per-position scores `[n]`: the target's probability minus its probability without that token."""
        positions, keep = self._without_each_token(is_text)
        dropped = self.removal_probabilities(x, keep)[:, target_index]
        scores = np.zeros(len(is_text))
        scores[positions] = probabilities[target_index] - dropped
        return scores

    def view_occlusion(self, x, target_index, probabilities):
        """`{view: score}`: the target's probability minus its probability with that view of the raw text
        left out (its n-grams' weights zero, as for a text without n-grams)."""
        return self.view_occlusions(x, [target_index], np.asarray(probabilities)[None])[0]

    def view_occlusions(self, x, target_indices, probabilities):
        """`view_occlusion` of each row of the batch `x` (one eager call per view): a `{view: score}` a row."""
        import keras

        out = [{} for _ in target_indices]
        rows = np.arange(len(target_indices))
        silent = _forward_only(lambda original, *args, **kwargs: keras.ops.zeros_like(original(*args, **kwargs)))
        for view in dict.fromkeys(view for _, view in self._views):  # an ensemble: every member's layer of it
            with _replaced_calls({layer: silent for layer, v in self._views if v == view}):  # eager: nothing traced
                without = np.asarray(self._probabilities_of(self.model(x, training=False), x))
            scores = probabilities[rows, target_indices] - without[rows, target_indices]
            for row, score in zip(out, scores):
                row[view] = float(score)
        return out

    @staticmethod
    def _without_each_token(is_text):
        """The positions of the text's tokens, and the keep masks `[len(positions), n]` that drop each in turn."""
        positions = np.flatnonzero(is_text)
        keep = np.ones((len(positions), len(is_text)), bool)
        keep[np.arange(len(positions)), positions] = False
        return positions, keep

    def attention(self, x, ids):
        """`{"tokens", "layers": [L][H][n][n], "rollout": [n][n], "token_scores": [n]}` for one text."""
        maps, _ = self._attention_fn(x)(x)
        maps = np.asarray(maps[0], "float64")  # [layers, heads, n, n]
        n = maps.shape[-1]
        rollout = np.eye(n)
        for layer in maps:
            a = 0.5 * layer.mean(axis=0) + 0.5 * np.eye(n)
            a /= a.sum(axis=-1, keepdims=True)
            rollout = a @ rollout
        if self.generator:
            pooled = rollout[-1]
        elif self._mean_pooled:
            pooled = rollout.mean(axis=0)
        else:
            pooled = rollout[0]  # [CLS]
        return {"tokens": self.token_strings(ids), "layers": maps.round(5).tolist(), "rollout": rollout.round(5).tolist(),
                "token_scores": pooled.tolist()}


def _bytes_surface(token):
    decoder = byte_decoder()
    if not all(c in decoder for c in token):
        return token  # a special token, as written
    try:
        return bytes(decoder[c] for c in token).decode("utf-8")
    except UnicodeDecodeError:  # part of a character's bytes (an emoji over two tokens)
        return None


def _fold(text):
    """`text` case-folded, without accents, with where each character came from: what a WordPiece vocabulary
    that lowercases and strips accents turned 'Café' into. Case folding, not `lower`: the tokenizer's folds
    'ß' to 'ss' (and NFKD 'ﬁ' to 'fi'), so a folded text is longer than its original, and each folded
    character keeps the index of the one it came from (searching the folded token in the original text
    showed "Straße" as 'Strassße' and "ﬁne" as 'ﬁ', 'ﬁne')."""
    folded, origin = [], []
    for i, c in enumerate(text):
        for f in unicodedata.normalize("NFKD", c.casefold()):
            if not unicodedata.combining(f):
                folded.append(f)
                origin.append(i)
    return "".join(folded), origin


def _is_word_break(c):
    """Whether WordPiece's pre-split makes `c` a word of its own: punctuation (ASCII's non-letters and
    non-digits, Unicode's P* classes) and CJK ideographs. Symbols (emoji, '€') are not: they stay in their word,
    as one [UNK] covers "gr😀eat"."""
    if c.isascii():
        return not c.isalnum() and not c.isspace()
    return unicodedata.category(c).startswith("P") or unicodedata.name(c, "").startswith("CJK ")


def _words(gap):
    """`(start, end)` in `gap` of each word as WordPiece splits it (one [UNK] each). Python's `\\w+|\\S` made an
    emoji a word of its own, so "gr😀eat" was three: in a text's middle the last unknown token took the gap's
    rest anyway, but at its end (where nothing after may be taken) it covered 'gr'."""
    words, start = [], None
    for i, c in enumerate(gap + " "):
        space = c.isspace() or unicodedata.category(c) in ("Cc", "Cf")  # WordPiece's whitespace
        if space or _is_word_break(c):
            if start is not None:
                words.append((start, i))
            start = None
            if not space:
                words.append((i, i + 1))
        elif start is None:
            start = i
    return words


def token_spans(text, surfaces, word_starts=None):
    """`(start, end)` in `text` for each token's surface text (None: an unknown token), in order.

    A token is found where the text goes on with it (case and accents aside, whitespace between tokens
    skipped); a whitespace token (a character model's space) is the whitespace right there, or, after a
    token that could not be placed, the next whitespace. Unknown tokens share the text between the tokens
    found around them: one word, else one character, each (as WordPiece gives one [UNK] per word, or per CJK
    character). A token not found anywhere, or a whitespace token with none there (SentencePiece's lone '▁'
    before a text's first word), gets None.

    Spans are of the original text and never overlap: where several tokens come from one character ('ﬁ' ->
    'f', '##i'), the first covers it and the rest get an empty span. `word_starts` (WordPiece: True where a
    token begins a word, no '##') places a word's first token after the words the unknown tokens before it
    replaced, one word each: "Café ﬁne" with 'café' unknown placed 'f' in "Café".
    """
    folded, origin = _fold(text)
    # Where each original character's text ends: at the next character that has a folded one, so a combining
    # accent the folding dropped belongs to the character before it.
    after, produced, following = [len(text)] * len(text), set(origin), len(text)
    for i in range(len(text) - 1, -1, -1):
        after[i] = following
        if i in produced:
            following = i

    def original(a, b):  # folded [a, b) -> text's; a character an earlier token began is that token's
        if b <= a:
            return None
        start = origin[a] if a == 0 or origin[a - 1] != origin[a] else after[origin[a]]
        return (start, max(start, after[origin[b - 1]]))

    def word_start(k):  # whether folded[k] begins a word as WordPiece splits the text
        return (k == 0 or folded[k - 1].isspace() or _is_word_break(folded[k - 1]) or _is_word_break(folded[k])
                or unicodedata.category(folded[k - 1]) in ("Cc", "Cf"))

    # lost: a token since the cursor last moved was not found, so text it stood for may lie ahead.
    spans, pending, cursor, lost = [None] * len(surfaces), [], 0, False

    def place_pending(limit):
        if not pending:
            return
        gap = folded[cursor:limit]
        pieces = _words(gap)
        if len(pieces) < len(pending):
            pieces = [m.span() for m in re.finditer(r"\S", gap)]
        for k, i in enumerate(pending[:len(pieces)]):
            last = k == len(pending) - 1 and limit < len(folded)  # the rest of the gap is the last one's
            a, b = pieces[k][0], (pieces[-1][1] if last else pieces[k][1])
            spans[i] = original(cursor + a, cursor + b)
        pending.clear()

    for i, surface in enumerate(surfaces):
        if surface is None:
            pending.append(i)
            continue
        piece = _fold(surface)[0]
        if piece and not piece.strip():  # a whitespace token: the whitespace at the cursor
            # Only where tokens before it were not placed (unknown ones, or ones not found) may text lie
            # between, so only then the next whitespace. SentencePiece puts a lone '▁' before a text's first
            # word where its first letter has no '▁' piece ("ROMEO" -> '▁', 'R', 'O', ...): the next
            # whitespace was a later word's space, and the tokens after it were found in the words after that.
            whitespace = re.compile(r"\s")
            space = whitespace.search(folded, cursor) if pending or lost else whitespace.match(folded, cursor)
            if space is None:
                continue
            place_pending(space.start())
            cursor = space.start()
            width = len(piece) if folded[cursor:cursor + len(piece)] == piece else 1
            spans[i], cursor, lost = original(cursor, cursor + width), cursor + width, False
            continue
        piece = piece.strip()
        if not piece:
            continue
        found = folded.find(piece, cursor)
        if pending and word_starts is not None and word_starts[i]:
            # Each unknown token before it replaced a whole word: it begins the word after them.
            while found >= 0 and not (word_start(found) and len(_words(folded[cursor:found])) >= len(pending)):
                found = folded.find(piece, found + 1)
        if found < 0:
            lost = True
            continue
        place_pending(found)
        spans[i], cursor, lost = original(found, found + len(piece)), found + len(piece), False
    place_pending(len(folded))
    return spans


def unknown_label(target, label_names):
    """The error for a classifier's --target that names none of its labels. Labels are text ("2" names the
    label '2', whatever its place), so a number is not read as an index where no label has its name: that
    would make --target 1 a label on one model and an index on another. `--target 1` on labels rotten, fresh
    only listed the labels; it now says that --target takes a name."""
    index = str(target).strip().lstrip("+-").isdigit()
    return UserInputError(f"Unknown --target {target!r}; "
                          + ("--target takes a label's name, not its index: " if index else "")
                          + f"this model's labels are {', '.join(label_names)}.")


def empty_text_message(generator, run_dir="RUN_DIR"):
    """What to pass instead of an empty text: a generator's example is a prompt, not a review."""
    if generator:
        # `tfllm generate RUN ""` starts a new document; its next token follows no prompt token to attribute to.
        # No literal example: "Once upon a" was refused by runs whose text has no capitals.
        return ("a generator's next token is explained by the prompt's tokens, and an empty prompt (a new "
                "document, for tfllm generate) has none; pass a prompt in the run's alphabet (the first words of "
                "a line of its training text, say).")
    # In backticks: a command that `errors.python_spelling` shows a Python caller as the call.
    return f"pass the texts to explain, e.g. `tfllm explain {run_dir} \"a joyous, moving film\"`."


def load_explainer(run_dir):
    """An `Explainer` for a finished classification or generation run."""
    from tfllm import runs
    from tfllm.runs import loading

    task = runs.explainable_task(run_dir)
    with loading(run_dir):
        model = runs.load_task(run_dir)
    return Explainer(model, runs.read_labels(run_dir) if task == "classify" else None)


_LOADED = {}  # real path of a run directory -> (its files' signature, Explainer)


_BY_MODEL = {}  # the last few loaded tasks explained -> their Explainers (runs.cached_for_model)


def cached_explainer(run_dir):
    """The `Explainer` of `run_dir`, loaded once per process and kept with its compiled functions: a
    notebook's second `explain(run_dir, ...)` does not reload (again only when the run's files change)."""
    from tfllm import runs

    return runs.load_cached(_LOADED, run_dir, load_explainer)


@runs.takes_named_options
def explain(model, text, method=None, target=None, steps=None, label_names=None,
            with_attention=False):
    """Explains a prediction: per-token attributions for the predicted class (or `target`).

    Args:
        model: a run directory (classification or generation; loaded once per process), a loaded
            task (its Explainer is kept for the next call), or an `Explainer`.
        text: the text to explain (a generator: the prompt; its next token is explained), or a list of them.
        method: "integrated_gradients" (default; an ensemble's: "occlusion"), "attention" or "occlusion".
        target: the label (a generator: the next token) to explain; default the predicted one.
        steps: integrated gradients' number of intervals (default `DEFAULT_STEPS`).
        label_names: class names when `model` is a loaded classifier.
        with_attention: also attach the attention maps whatever the method.

    Returns:
        An `Explanation` (`.to_json()`: `{"label", "probabilities", "method", "target", "tokens"}`, see there);
        for a list of texts, a list of them in the texts' order.
    """
    from tfllm import runs

    if isinstance(model, (str, os.PathLike)):
        explainer = cached_explainer(runs.run_dir_argument(model, "explain"))
    elif isinstance(model, Explainer):
        explainer = model
    else:  # a loaded task: one Explainer per model (a new one each call traced its functions again)
        label_names = tuple(label_names) if label_names else None
        explainer = runs.cached_for_model(_BY_MODEL, model, lambda m: Explainer(m, label_names), extra=label_names)
    if isinstance(text, (list, tuple)):  # as `tfllm explain RUN TEXT...` takes many (a list was refused)
        if not text:
            raise UserInputError("explain got an empty list; pass a text or a list of texts.")
        method = method or explainer.default_method(steps)  # an ensemble's warning once, not once a text
        return [explainer.explain(t, method=method, target=target, steps=steps, with_attention=with_attention)
                for t in text]
    return explainer.explain(text, method=method, target=target, steps=steps, with_attention=with_attention)


# --- output ---------------------------------------------------------------------------------


def _joined(tokens):
    """Tokens back to display pieces: WordPiece's `##` continuations glued, SentencePiece's `▁` a space."""
    pieces = []
    for i, token in enumerate(tokens):
        if token.startswith("##"):
            pieces.append(("", token[2:]))
        elif token in ("\u2581", "\u0120"):  # a lone space piece (SentencePiece's before "ROMEO"): visible, not ""
            pieces.append(("", "\u2423"))
        elif token.startswith("\u2581") or token.startswith("\u0120"):  # SentencePiece / byte-level BPE
            pieces.append((" " if i else "", token[1:]))
        elif len(token) == 1 and not token.isalnum() and token not in "([{\"'" and i:
            pieces.append(("", token))
        else:
            pieces.append((" " if i else "", token))
    return pieces


_VISIBLE = str.maketrans({" ": "\u2423", "\n": "\u21b5", "\t": "\u21e5", "\r": "\u240d"})


def _pieces(explanation):
    """(what goes before, the token) for display: the text between the tokens and each token's span, as the
    input has them (a whitespace token shown as '␣', '↵'), or where the tokens have no spans (or one cannot be
    placed) the vocabulary pieces (`_joined`)."""
    spans = explanation.spans or [None] * len(explanation.tokens)
    if not any(spans):
        return _joined(explanation.tokens)
    joined, out, end = _joined(explanation.tokens), [], None
    for (space, vocabulary_piece), span in zip(joined, spans):
        if span is None:
            out.append((space, vocabulary_piece))
            continue
        start, stop = span
        piece = explanation.text[start:stop]
        before = explanation.text[end:start] if end is not None else ""
        out.append((before.replace("\n", " "), piece.translate(_VISIBLE) if not piece.strip() else piece))
        end = stop
    return out


def _scale(explanation):
    peak, _ = explanation.scale
    return [max(-1.0, min(1.0, s / peak)) if peak > 0 else 0.0 for s in explanation.scores]


def _scale_line(explanation):
    return f"[±1.00] and full colour = {explanation.scale[1]}"


_GREENS = (255, 194, 157, 120, 83, 46)
_REDS = (255, 224, 217, 210, 203, 196)


def render_terminal(explanation, color=True):
    """A few lines for a terminal: the label and probabilities, the text coloured by score."""
    lines = []
    generator = explanation.kind == "generator"
    # A generator's next tokens are quoted (a newline or a space printed raw would break the line).
    shown = ", ".join(f"{repr(k) if generator else k} {v:.3f}" for k, v in explanation.probabilities.items())
    head = "next token" if generator else "label"
    lines.append(f"{head}: {explanation.label!r}  ({shown})" if generator else f"{head}: {explanation.label}  ({shown})")
    if explanation.method == "attention":
        lines.append(f"attention rollout (the same for every label); predicted {explanation.label!r}")
    else:
        lines.append(f"{explanation.method} for {explanation.target!r} (green: for it, red: against it)")
    text = []
    for (space, piece), s in zip(_pieces(explanation), _scale(explanation)):
        if color:
            palette = _GREENS if s >= 0 else _REDS
            code = palette[min(5, int(round(abs(s) * 5)))]
            text.append(f"{space}\x1b[30;48;5;{code}m{piece}\x1b[0m")
        else:
            text.append(f"{space}{piece}[{s:+.2f}]")
    lines.append("".join(text))
    lines.append(_scale_line(explanation))
    if explanation.views:
        lines.append(_views_line(explanation))
    if explanation.views_note:
        lines.append("note: " + explanation.views_note)
    if explanation.tokens_left_out:
        lines.append("note: " + _left_out_line(explanation))
    top = sorted(zip(explanation.shown_tokens, explanation.scores), key=lambda p: -abs(p[1]))[:5]
    # Significant digits: a model that learned nothing had every score printed as -0.0000.
    lines.append("strongest: " + ", ".join(f"{t} {s:+.3g}" for t, s in top))
    if explanation.completeness:
        c = explanation.completeness
        lines.append(f"completeness: attributions sum {c['sum']:+.4f}, score {c['score']:.4f} - baseline "
                     f"{c['baseline_score']:.4f} = {c['difference']:+.4f} (error {c['error']:.4f}, {c['steps']} steps)")
    return "\n".join(lines)


def _views_line(explanation):
    return ("the whole text's views (they read the raw text, not the tokens): "
            + ", ".join(f"{view} {score:+.4f}" for view, score in explanation.views.items()))


def _left_out_line(explanation):
    which = ("the last", "before") if explanation.kind == "generator" else ("the first", "after")
    n = explanation.tokens_left_out
    # One token was "the 1 after them are not attributed".
    left_out = f"the 1 token {which[1]} them is" if n == 1 else f"the {n} tokens {which[1]} them are"
    seen = (" (the views above read it)" if n == 1 else " (the views above read them)") if explanation.views else ""
    return (f"the model's window holds {which[0]} {len(explanation.tokens)} tokens; {left_out} not "
            f"attributed{seen}")


def _rgba(s):
    return f"rgba(22,163,74,{abs(s):.3f})" if s >= 0 else f"rgba(220,38,38,{abs(s):.3f})"


def _heatmap_svg(matrix, tokens, title, cell=None, style=""):
    n = len(tokens)
    cell = cell or max(6, min(18, 480 // max(n, 1)))
    label_w = 100
    size = label_w + n * cell
    peak = max((max(row) for row in matrix), default=1.0) or 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size + 16}" role="img" style="{style}">'
             f'<title>{html.escape(title)}</title>'
             f'<text x="0" y="12" font-size="12" font-weight="bold">{html.escape(title)}</text>']
    for i, row in enumerate(matrix):
        y = 16 + label_w + i * cell
        if cell >= 10:
            parts.append(f'<text x="{label_w - 3}" y="{y + cell - 2}" font-size="{min(11, cell - 3)}" text-anchor="end">'
                         f'{html.escape(tokens[i][:12])}</text>')
        for j, value in enumerate(row):
            opacity = min(1.0, value / peak)
            parts.append(f'<rect x="{label_w + j * cell}" y="{y}" width="{cell}" height="{cell}" '
                         f'fill="rgb(37,99,235)" fill-opacity="{opacity:.3f}"><title>{html.escape(tokens[i])} → '
                         f'{html.escape(tokens[j])}: {value:.3f}</title></rect>')
    if cell >= 10:
        for j, token in enumerate(tokens):
            x = label_w + j * cell + cell - 2
            parts.append(f'<text x="{x}" y="{16 + label_w - 3}" font-size="{min(11, cell - 3)}" '
                         f'transform="rotate(-90 {x} {16 + label_w - 3})">{html.escape(token[:12])}</text>')
    parts.append("</svg>")
    return "".join(parts)


MAX_HEATMAPS = 48


# Inline styles, not a <style> sheet: a notebook shows `Explanation._repr_html_` inside its own page, where
# a sheet's rules (.tok, .note, section) would restyle every other cell.
_STYLES = {
    "section": "border-bottom:1px solid #ddd;padding-bottom:1em",
    "tok": "padding:1px 2px;border-radius:3px",
    "text": "font-size:1.3em;line-height:2",
    "bar": "background:#2563eb;height:10px",
    "probs": "border-spacing:8px 0",
    "note": "color:#555",
    "svg": "margin:4px;vertical-align:top",
}


def _section_html(e):
    """One explanation as a self-contained <section> (inline styles and SVG, no scripts or external files)."""
    st = _STYLES
    # A generator's next tokens quoted, as in the terminal: a space or a newline showed as nothing.
    shown = repr if e.kind == "generator" else str
    probs = "".join(f"<tr><td>{html.escape(shown(k))}</td><td>{v:.4f}</td>"
                    f'<td><div class="bar" style="{st["bar"]};width:{200 * v:.0f}px"></div></td></tr>'
                    for k, v in e.probabilities.items())
    spans = []
    for (space, piece), s, raw, token in zip(_pieces(e), _scale(e), e.scores, e.tokens):
        spans.append(f'{html.escape(space)}<span class="tok" style="{st["tok"]};background:{_rgba(s)}" '
                     f'title="{html.escape(token)}: {raw:+.5f}" data-score="{raw:.6g}">{html.escape(piece)}</span>')
    note = f'<p class="note" style="{st["note"]}">'
    head = "Next token" if e.kind == "generator" else "Label"
    section = [f'<section style="{st["section"]}"><h2>{html.escape(e.text[:120])}</h2>',
               f"<p><b>{head}:</b> {html.escape(shown(e.label))} &nbsp; <b>method:</b> {html.escape(e.method)} "
               + (" &nbsp; <b>explaining:</b> where the model looks (attention rollout, the same for every label)"
                  if e.target is None else f" &nbsp; <b>explaining:</b> {html.escape(shown(e.target))}") + "</p>",
               f'<table class="probs" style="{st["probs"]}">{probs}</table>',
               f'<p class="text" style="{st["text"]}">{"".join(spans)}</p>',
               f'{note}Full colour = {html.escape(e.scale[1])}.</p>']
    if e.views:
        section.append(f'{note}{html.escape(_views_line(e))}.</p>')
    if e.views_note:
        section.append(f'{note}Note: {html.escape(e.views_note)}.</p>')
    if e.tokens_left_out:
        section.append(f'{note}Note: {html.escape(_left_out_line(e))}.</p>')
    if e.completeness:
        c = e.completeness
        section.append(f"{note}Completeness: attributions sum {c['sum']:+.4f}; score(text) "
                       f"{c['score']:.4f} − score(baseline) {c['baseline_score']:.4f} = {c['difference']:+.4f} "
                       f"(error {c['error']:.4f}, {c['steps']} steps).</p>")
    if e.attention_note:
        section.append(f"{note}No attention maps: {html.escape(e.attention_note)}.</p>")
    if e.attention:
        tokens = e.attention["tokens"]
        maps = e.attention["layers"]
        section.append("<h3>Attention</h3><div class=\"maps\">")
        section.append(_heatmap_svg(e.attention["rollout"], tokens, "rollout", style=st["svg"]))
        count = 0
        for li, layer in enumerate(maps):
            for hi, head_map in enumerate(layer):
                if count >= MAX_HEATMAPS:
                    break
                section.append(_heatmap_svg(head_map, tokens, f"layer {li + 1} head {hi + 1}", style=st["svg"]))
                count += 1
        section.append("</div>")
        total = sum(len(layer) for layer in maps)
        if total > count:
            section.append(f"{note}{total - count} more heads not drawn.</p>")
    section.append("</section>")
    return "".join(section)


_LEGEND = "Green: evidence for the explained label; red: against it."


def render_html(explanations):
    """A self-contained page (inline CSS and SVG, no scripts or external files) for some explanations."""
    body = "".join(_section_html(e) for e in explanations)
    style = "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}"
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>tfllm explain</title>"
            f"<style>{style}</style></head><body><h1>tfllm explain</h1>{body}"
            f'<p class="note" style="{_STYLES["note"]}">{_LEGEND}</p></body></html>')


def to_json_line(explanation):
    return json.dumps(explanation.to_json(), ensure_ascii=False)


# --- TensorBoard ----------------------------------------------------------------------------


def explanation_markdown(explanation, top=3):
    """One explanation as a Markdown paragraph (TensorBoard's Text tab): the label, then each token with its
    score, the `top` strongest in bold."""
    strongest = set(sorted(range(len(explanation.scores)), key=lambda i: -abs(explanation.scores[i]))[:top])
    tokens = " ".join(f"**{t}**&nbsp;({s:+.3f})" if i in strongest else f"{t}&nbsp;({s:+.3f})"
                      for i, (t, s) in enumerate(zip(explanation.shown_tokens, explanation.scores)))
    probability = explanation.probabilities.get(explanation.label, 0.0)
    # The lines `tfllm explain` prints after the text, in its order.
    notes = [_views_line(explanation)] if explanation.views else []
    if explanation.views_note:
        notes.append("note: " + explanation.views_note)
    if explanation.tokens_left_out:
        notes.append(f"({_left_out_line(explanation)})")
    explaining = ("attention rollout (the same for every label)" if explanation.target is None
                  else f"{explanation.method} for **{explanation.target}**")
    return (f"label **{explanation.label}** (p = {probability:.3f}); {explaining}:\n\n{tokens}"
            + "".join(f"\n\n{line}" for line in notes))


def write_tensorboard_explanations(log_dir, model, label_names, texts, step=0):
    """Writes a few texts' explanations to `log_dir/explanations` (TensorBoard's Text tab, tags `explanations/N`).

    Occlusion (`Explainer.occlusions`): as faithful as integrated gradients on the benchmark
    (docs/benchmarks.md), and with no gradient graph and nothing traced it adds one eager forward pass to a
    training run. A text with no tokens this model reads is left out. Returns the number of texts written.
    """
    import tensorflow as tf

    from tfllm.training.reporting import once_writer

    explanations = Explainer(model, label_names).occlusions(texts)
    # A resumed finish writes them again: its file replaces the earlier one, no tag twice.
    with once_writer(os.path.join(log_dir, "explanations"), "explanations"):
        for i, explanation in enumerate(explanations):
            tf.summary.text(f"explanations/{i}", f"> {explanation.text}\n\n" + explanation_markdown(explanation),
                            step=step)
    return len(explanations)
