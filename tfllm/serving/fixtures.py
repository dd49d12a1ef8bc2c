"""Tiny SavedModels with tfllm's serving signatures, for tests and benchmarks.

They stand in for real exports where only the serving path matters: string
inputs through a TensorFlow Text op, dict outputs with stable names, and a
model-side check that rejects bad values, as the real exports have.
"""

from __future__ import annotations

import os


def _classifier_module(bias: float):
    import tensorflow as tf
    import tensorflow_text as tf_text

    class ToyClassifier(tf.Module):
        """Scores "good" minus "bad" words; `bias` tells versions apart."""

        def __init__(self):
            super().__init__()
            self.bias = tf.Variable(bias)
            self.tokenizer = tf_text.WhitespaceTokenizer()

        def _counts(self, text):
            tokens = self.tokenizer.tokenize(tf.strings.lower(text))
            good = tf.ragged.map_flat_values(tf.equal, tokens, "good")
            bad = tf.ragged.map_flat_values(tf.equal, tokens, "bad")
            count = lambda r: tf.reduce_sum(tf.cast(r, tf.float32), axis=1)  # noqa: E731
            return count(good) - count(bad), tokens.row_lengths()

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def classify(self, text):
            score, _ = self._counts(text)
            logits = tf.stack([-score, score + self.bias], axis=1)
            probabilities = tf.nn.softmax(logits)
            label = tf.gather(tf.constant(["negative", "positive"]),
                              tf.argmax(probabilities, axis=1))
            return {"probabilities": probabilities, "label": label}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def word_count(self, text):
            _, lengths = self._counts(text)
            return {"count": tf.cast(lengths, tf.int32)}

    return ToyClassifier()


def _generator_module():
    import tensorflow as tf

    class ToyGenerator(tf.Module):
        """Appends `max_new_tokens` words to each prompt, refusing empty ones.

        The decoding option is batched like the prompt (shape `[None]`), as
        TF Serving's row format and its batching both need every input to
        have the batch dimension.
        """

        @tf.function(input_signature=[
            tf.TensorSpec([None], tf.string, name="prompt"),
            tf.TensorSpec([None], tf.int32, name="max_new_tokens"),
        ])
        def generate(self, prompt, max_new_tokens):
            checks = [
                tf.debugging.assert_greater(tf.strings.length(prompt), 0,
                                            message="prompt must not be empty"),
                tf.debugging.assert_less_equal(max_new_tokens, 64,
                                               message="max_new_tokens must be <= 64"),
                tf.debugging.assert_greater(max_new_tokens, 0,
                                            message="max_new_tokens must be >= 1"),
            ]
            with tf.control_dependencies(checks):
                steps = tf.ragged.range(max_new_tokens)
            words = tf.ragged.map_flat_values(
                lambda x: tf.fill(tf.shape(x), " la"), steps)
            return {"text": tf.strings.join([prompt, tf.strings.reduce_join(words, axis=1)])}

    return ToyGenerator()


def _ids_module(vocabulary_size: int):
    import tensorflow as tf

    class ToyIdScorer(tf.Module):
        """Sums an embedding of token ids, as a `classify_ids`-style signature does."""

        def __init__(self):
            super().__init__()
            self.table = tf.Variable(tf.range(vocabulary_size, dtype=tf.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="token_ids")])
        def score(self, token_ids):
            # Named as KerasHub's and tfllm's token embeddings are: its refusal names the vocabulary.
            return {"score": tf.reduce_sum(tf.gather(self.table, token_ids, name="token_embedding"), axis=1)}

    return ToyIdScorer()


def save_id_scorer(path: str, vocabulary_size: int = 10) -> str:
    """Saves a toy token-id model (`serving_default(token_ids: int32[-1, -1]) -> score`)."""
    import tensorflow as tf

    module = _ids_module(vocabulary_size)
    tf.saved_model.save(module, path, signatures={"serving_default": module.score})
    return path


def save_classifier(path: str, bias: float = 0.0, warmup: bool = True) -> str:
    """Saves a toy classifier SavedModel (signatures `serving_default`, `word_count`)."""
    import tensorflow as tf

    module = _classifier_module(bias)
    tf.saved_model.save(module, path, signatures={
        "serving_default": module.classify, "word_count": module.word_count})
    if warmup:
        from tfllm.serving.warmup import write_warmup_requests

        write_warmup_requests(path, "reviews", "serving_default",
                              {"text": ["a good film", "a bad film"]})
    return path


def save_generator(path: str) -> str:
    """Saves a toy generator SavedModel (`serving_default` and, as a real export has, `greedy`:
    prompt, max_new_tokens)."""
    import tensorflow as tf

    module = _generator_module()
    tf.saved_model.save(module, path, signatures={"serving_default": module.generate, "greedy": module.generate})
    return path


def build_savedmodels(base_path: str) -> str:
    """Writes `reviews/1` (classifier) and `shakespeare/1` (generator)."""
    save_classifier(os.path.join(base_path, "reviews", "1"))
    save_generator(os.path.join(base_path, "shakespeare", "1"))
    return base_path
