"""A classifier run -> TFLite files a phone can run, with a parity report.

The export folder holds:

- `model.tflite`: token ids `int32[batch, sequence_length]` in (and, for a
  model with a character or word view, the text's Unicode code points
  `code_points int32[batch, char_length]`, 0 after its end),
  `probabilities float32[batch, num_classes]` out. Only builtin ops, so any
  TFLite / LiteRT runtime runs it; the app tokenizes with the vocabulary
  shipped beside it.
- `model_text.tflite` (WordPiece runs only): raw strings `string[batch]` in,
  `probabilities` and the `token_ids` (and `code_points`) it used out. It tokenizes with TensorFlow
  Text's TFLite kernels (`FastBertNormalizer` + `FastWordpieceTokenizer`; `Utf8Binarize` for code points), so
  the interpreter needs them registered:
  `ai_edge_litert.interpreter.InterpreterWithCustomOps(custom_op_registerers=
  tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS)`. The plain TF Text ops
  our Keras tokenizer uses would only convert as Flex ops, which neither
  interpreter here can run.
- `tokenizer/` (the run's tokenizer, `tfllm.tokenizers.load_tokenizer`; metadata.json's
  `tokenizer` names its vocabulary file), `vocabulary.json` (the token of each id),
  `labels.json`, `metadata.json` (inputs and their valid ranges, outputs, special ids,
  and the `tokenizing` rules: how a text becomes ids, for tfllm's tokenizers and a KerasHub preset's) and
  `parity.json` (file sizes, and agreement with the Keras model on the test
  split; where the run's data cannot be read, on texts of its vocabulary,
  without accuracies: only int8, which calibrates on training texts, needs it).

Known tokenization difference of `model_text.tflite`: TF Text's TFLite
normalizer can lowercase only together with stripping accents, while the
Keras tokenizer lowercases and keeps them, so texts with accented letters
("café"), "…" or zero-width spaces may get different ids. `parity.json`
counts how many test texts that touches (about 2% of Rotten Tomatoes, most
of them Portuguese or Spanish reviews); the id model has no such difference.
(The code points of the character and word views do not differ: `Utf8Binarize` reads them from
the text as it is.)

Every file is written into a temporary folder that is renamed into place at
the end, so a failed export leaves nothing behind.
"""

import os
import random
import tempfile

import numpy as np

from tfllm import runs
from tfllm.config import TrainConfig
from tfllm.datasets import BUNDLED, split_as_trained
from tfllm.errors import UserInputError
from tfllm.export.tflite_runtime import (SIGNATURE, VOCABULARY_FILE, convert_saved_model, load_interpreter,
                                         quantized_tensors, run_signature, tokenizer_entry, tokenizing_rule,
                                         vocabulary_sources)
from tfllm.export.versioning import TFLITE_TEXT_FILE, write_out

# Full-integer quantization calibrates activation ranges on examples; with
# fewer than this the ranges are guesses and accuracy falls apart.
MIN_CALIBRATION_EXAMPLES = 100
CALIBRATION_EXAMPLES = 300
PARITY_TEXTS = 64  # texts of the vocabulary that parity.json compares on when the run's data cannot be read
IDS_FILE = "model.tflite"
TEXT_FILE = TFLITE_TEXT_FILE


# --------------------------------------------------------------------------- conversion


# --------------------------------------------------------------------------- classifier


def text_tokenizer_ops(tokenizer):
    """TFLite-compatible `(normalizer, wordpiece)` equivalent to a KerasHub WordPiece tokenizer, or None.

    `FastWordpieceTokenizer(no_pretokenization=False)` splits on whitespace,
    punctuation and CJK characters as KerasHub's pre-tokenizer does. The
    normalizer is the one difference: see the module docstring.
    """
    import keras_hub
    import tensorflow as tf
    import tensorflow_text as tf_text

    if not isinstance(tokenizer, keras_hub.tokenizers.WordPieceTokenizer) or not tokenizer.split:
        return None
    normalizer = tf_text.FastBertNormalizer(lower_case_nfd_strip_accents=tokenizer.lowercase)
    wordpiece = tf_text.FastWordpieceTokenizer(
        vocab=tokenizer.get_vocabulary(),
        suffix_indicator=tokenizer.suffix_indicator,
        unknown_token=tokenizer.oov_token,
        no_pretokenization=False,
        token_out_type=tf.int32,
    )
    return normalizer, wordpiece


def write_classifier_saved_model(model, tokenizer, directory, text_input=False):
    """A SavedModel whose `serving_default` takes token ids, or raw strings if `text_input`.

    Returns False (writing nothing) when `text_input` is asked of a tokenizer
    that has no TFLite equivalent.
    """
    import keras
    import tensorflow as tf
    import tensorflow_text as tf_text

    from tfllm.models.text_classifier import class_probabilities

    archive = keras.export.ExportArchive()
    # The task's network without its preprocessor (the same layers and weights): a byte-pair tokenizer's
    # lookup tables (RoBERTa's) would be saved with the task, and TFLite cannot convert hash tables.
    # The string model below builds its tokenizer from TF Text ops of its own.
    archive.track(keras.Model(model.inputs, model.outputs))
    length = model.preprocessor.sequence_length
    start, end, pad = tokenizer.start_token_id, tokenizer.end_token_id, tokenizer.pad_token_id

    chars = model.preprocessor.char_length if "code_points" in model.input else None

    def classify_ids(token_ids, code_points=None):
        inputs = {"token_ids": token_ids, "padding_mask": tf.not_equal(token_ids, pad)}
        if "segment_ids" in model.input:  # BERT-style backbones: one segment
            inputs["segment_ids"] = tf.zeros_like(token_ids)
        if code_points is not None:
            inputs["code_points"] = code_points
        return {"probabilities": class_probabilities(model, inputs)}

    if not text_input:
        specs = [tf.TensorSpec([None, length], tf.int32, name="token_ids")]
        if chars:
            specs.append(tf.TensorSpec([None, chars], tf.int32, name="code_points"))
        archive.add_endpoint(SIGNATURE, classify_ids, input_signature=specs)
    else:
        ops = text_tokenizer_ops(tokenizer)
        if ops is None:
            return False
        normalizer, wordpiece = ops
        archive.track(normalizer)
        archive.track(wordpiece)

        def classify_text(text):
            # Packed like the Keras preprocessor: [start] tokens (truncated) [end], then padding;
            # dense ops only, so the converter keeps to builtins.
            pieces = wordpiece.tokenize(normalizer.normalize(text)).to_tensor(default_value=pad, shape=[None, length - 2])
            lengths = tf.reduce_sum(tf.cast(tf.not_equal(pieces, pad), tf.int32), axis=1, keepdims=True)
            padded = tf.pad(pieces, [[0, 0], [1, 1]], constant_values=pad)
            positions = tf.range(length)[None, :]
            token_ids = tf.where(positions == 0, start, tf.where(positions == lengths + 1, end, padded))
            if not chars:
                return {**classify_ids(token_ids), "token_ids": token_ids}
            # The code points of the character and word views, of the text as it is: TF Text's Utf8Binarize (a TFLite
            # kernel) gives each one's 24 bits, least significant first, 0 after the text's end.
            bits = tf.reshape(tf_text.utf8_binarize(text, word_length=chars, bits_per_char=24), [-1, chars, 24])
            # Summed as integers: float ops here would be quantized by an int8 export.
            code_points = tf.reduce_sum(tf.cast(bits, tf.int32) * tf.bitwise.left_shift(1, tf.range(24)), axis=-1)
            return {**classify_ids(token_ids, code_points), "token_ids": token_ids, "code_points": code_points}

        archive.add_endpoint(SIGNATURE, classify_text, input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    write_out(archive, directory)
    return True


def _accuracy(labels, probabilities):
    return float((np.asarray(labels) == probabilities.argmax(-1)).mean())


def _agreement(labels, keras_probabilities, probabilities):
    """Accuracy against `labels` and its change from the Keras model's; without labels, how often the
    predicted class is the Keras model's."""
    if labels is None:
        return {"same_label_as_keras": _accuracy(keras_probabilities.argmax(-1), probabilities)}
    accuracy = _accuracy(labels, probabilities)
    return {"accuracy": accuracy, "accuracy_change_points": 100 * (accuracy - _accuracy(labels, keras_probabilities))}


# Characters the string model's TF Text ops read unlike the Keras tokenizer (its tokenizing_difference). A
# test split rarely holds any, so parity.json's texts_tokenized_differently stayed 0 while they differ: each is
# checked in a probe text of its own and reported apart.
PROBE_CHARACTERS = {"U+00A0 no-break space": "\u00a0", "U+3000 ideographic space": "\u3000",
                    "U+2028 line separator": "\u2028", "U+200B zero-width space": "\u200b",
                    "U+00AD soft hyphen": "\u00ad", "U+0301 combining accent": "\u0301"}


def probe_texts(tokenizer):
    """{name: text}: a vocabulary word, a PROBE_CHARACTERS character, the word again."""
    words = [t for t in tokenizer.get_vocabulary() if t.isascii() and t.isalpha() and len(t) > 1]
    word = max(words, key=len) if words else "a"
    return {name: f"{word}{ch}{word}" for name, ch in PROBE_CHARACTERS.items()}


def classifier_parity(directory, keras_probabilities, ids_inputs, texts, labels=None, probes=None):
    """Sizes and agreement of the `.tflite` files in `directory` with the Keras model's probabilities
    (and accuracies, given the texts' `labels`); `ids_inputs` are the id model's inputs for `texts`
    (`token_ids`, and `code_points` for a character or word view). `probes` ({name: (text, its id model
    inputs)}) are texts of characters the string model is known to read otherwise, reported apart."""
    report = {"num_examples": len(texts)}
    if labels is not None:
        report["keras_accuracy"] = _accuracy(labels, keras_probabilities)
    ids_out = run_signature(load_interpreter(os.path.join(directory, IDS_FILE), quiet=True), **ids_inputs)["probabilities"]
    report[IDS_FILE] = {
        "bytes": os.path.getsize(os.path.join(directory, IDS_FILE)),
        "max_abs_probability_difference": float(np.abs(ids_out - keras_probabilities).max()),
        **_agreement(labels, keras_probabilities, ids_out),
    }
    if os.path.exists(os.path.join(directory, TEXT_FILE)):
        out = run_signature(load_interpreter(os.path.join(directory, TEXT_FILE), quiet=True),
                            text=np.array(texts, dtype=object))
        # Read alike: the same token ids (and the same code points, for character and word views).
        same_ids = np.logical_and.reduce([(out[k] == v).all(axis=-1) for k, v in ids_inputs.items()])
        report[TEXT_FILE] = {
            "bytes": os.path.getsize(os.path.join(directory, TEXT_FILE)),
            "max_abs_probability_difference": float(np.abs(out["probabilities"] - keras_probabilities).max()),
            **_agreement(labels, keras_probabilities, out["probabilities"]),
            # The string model vs the id model where both tokenized a text alike.
            "max_abs_difference_vs_id_model_same_tokens": float(
                np.abs(out["probabilities"] - ids_out)[same_ids].max(initial=0.0)
            ),
            "texts_tokenized_differently": int((~same_ids).sum()),
        }
        if probes:
            names = list(probes)
            out = run_signature(load_interpreter(os.path.join(directory, TEXT_FILE), quiet=True),
                                text=np.array([probes[n][0] for n in names], dtype=object))
            report[TEXT_FILE]["probe_characters_tokenized_differently"] = [
                n for i, n in enumerate(names)
                if any((out[k][i] != v[0]).any() for k, v in probes[n][1].items())]
            report[TEXT_FILE]["probe_characters_checked"] = names
    return report


def id_model_inputs(model, texts):
    """`model.tflite`'s inputs for `texts`, as the Keras preprocessor makes them: `token_ids`, and the
    `code_points` of the character and word views where the model has them."""
    from tfllm import data as data_lib

    batches = list(data_lib.text_batches(texts, model.preprocessor))
    return {k: np.concatenate([np.asarray(b[k]) for b in batches]) for k in ("token_ids", "code_points")
            if k in model.input}


def export_classifier_files(run_dir, config, directory, quantize):
    """Writes a classifier's TFLite files, assets and `parity.json` into `directory`; returns the parity dict."""
    from tfllm.models.text_classifier import predict_probabilities
    from tfllm.tokenizers import unknown_token_entry

    model, label_names = runs.load_task(run_dir, dtype="float32"), runs.read_labels(run_dir)
    tokenizer = model.preprocessor.tokenizer
    length = model.preprocessor.sequence_length
    start, end, pad = tokenizer.start_token_id, tokenizer.end_token_id, tokenizer.pad_token_id
    # The tokenizer's own config: KerasHub's BertTokenizer has no unk_token_id (its [UNK] read null).
    unknown, vocabulary_size = unknown_token_entry(tokenizer), int(tokenizer.vocabulary_size())
    config = TrainConfig.from_dict(config, strict=False)
    # The data (its test split for the parity report, its training texts to calibrate int8) where it can be
    # read; without it (a run copied to another machine) the export needs only the run, as a translation's.
    try:
        splits = split_as_trained(config, label_names, needs="--quantize int8 (it calibrates on training texts)",
                                  instead=", or use --quantize dynamic or float16")
    except UserInputError:
        if quantize == "int8" or config.data in BUNDLED or os.path.exists(config.data):
            raise  # int8's calibration needs the texts; a file that is there but refused says why
        splits = None
    representative = None
    if quantize == "int8":
        # A seeded sample, not the split's first rows: those are all one class's where the file (or a folder,
        # read label by label) lists its rows by label, and calibrated the activation ranges on that class alone.
        texts = random.Random(config.seed).sample(splits.train.texts,
                                                  min(CALIBRATION_EXAMPLES, len(splits.train.texts)))
        if len(texts) < MIN_CALIBRATION_EXAMPLES:
            raise UserInputError(
                f"--quantize int8 needs at least {MIN_CALIBRATION_EXAMPLES} training examples to calibrate on; "
                f"{run_dir!r} has {len(splits.train)}. Use --quantize dynamic or float16, or train on more data."
            )
        calibration = id_model_inputs(model, texts)
        representative = {
            "ids": lambda: ({k: v[i:i + 1] for k, v in calibration.items()} for i in range(len(texts))),
            "text": lambda: ([np.array([t.encode("utf-8")])] for t in texts),
        }

    has_text_model, counts = False, {}
    for text_input, filename in ((False, IDS_FILE), (True, TEXT_FILE)):
        with tempfile.TemporaryDirectory() as saved_model_dir:
            if not write_classifier_saved_model(model, tokenizer, saved_model_dir, text_input=text_input):
                print(f"No {TEXT_FILE}: TFLite has no kernel for a {type(tokenizer).__name__} (only WordPiece, through "
                      f"TF Text); {IDS_FILE} takes token ids: tokenize with tokenizer/ (tfllm.tokenizers.load_tokenizer) "
                      f"or as metadata.json says, with {VOCABULARY_FILE}.")
                continue
            content = convert_saved_model(
                saved_model_dir,
                [SIGNATURE],
                quantize,
                representative_dataset=representative and representative["text" if text_input else "ids"],
                custom_ops=text_input,
            )
        with open(os.path.join(directory, filename), "wb") as f:
            f.write(content)
        counts[filename] = quantized_tensors(content, quantize, filename)
        has_text_model = has_text_model or text_input

    tokenizer.save_to_preset(os.path.join(directory, "tokenizer"))
    # The token of each id, as the generator and translator exports have it: a character tokenizer's
    # characters are otherwise only inside tokenizer/tokenizer.json.
    runs.write_json(os.path.join(directory, VOCABULARY_FILE), list(tokenizer.get_vocabulary()))
    rule = tokenizing_rule(tokenizer, task="classify")
    runs.write_json(os.path.join(directory, "labels.json"), label_names)
    runs.write_json(
        os.path.join(directory, "metadata.json"),
        {
            "task": "classify",
            "quantize": quantize,
            **({"quantized_tensors": counts} if quantize != "none" else {}),
            "labels": label_names,
            "sequence_length": length,
            "vocabulary_size": vocabulary_size,
            "special_token_ids": {"pad": pad, "start": start, "end": end, **unknown},
            # TFLite checks none of these: a negative id reads out of bounds and returns probabilities anyway.
            "input_ranges": f"token_ids: 0 <= id < {vocabulary_size}"
                            + ("; code_points: 0 <= code point <= 0x10FFFF (Unicode), 0 only after the text's end"
                               if "code_points" in model.input else ""),
            # tfllm predict refuses such a text; the model has no words to read in it. What it returns then is
            # no prior either (a tiny model gave [0.055, 0.945] on balanced data), so nothing is said of it.
            "empty_text": "an empty or whitespace-only text is [start] [end] then pad ids: the models return "
                          "probabilities for it anyway, read from no words, which are not a prediction; refuse it "
                          "in the app, as tfllm predict does (\"Text 1 is empty\")",
            "signature": SIGNATURE,
            IDS_FILE: {
                # How a long text is cut: the model takes exactly these shapes ("BROADCAST_TO failed to invoke"
                # for 321 code points), and an app that kept the tokens' tail or dropped [end] read another text.
                "inputs": {"token_ids": f"int32[batch, {length}]: [start id] + the text's first {length - 2} "
                                        f"token ids (the rest dropped) + [end id], then pad ids up to {length}",
                           **({"code_points": f"int32[batch, {model.preprocessor.char_length}]: the text's first "
                               f"{model.preprocessor.char_length} Unicode code points as they are (not lowercased "
                               f"or stripped; the rest dropped), then 0 up to {model.preprocessor.char_length}; "
                               "longer input fails in the interpreter"} if "code_points" in model.input else {})},
                "outputs": {"probabilities": f"float32[batch, {len(label_names)}]"},
            },
            **(
                {
                    TEXT_FILE: {
                        "inputs": {"text": "string[batch]"},
                        "outputs": {
                            "probabilities": f"float32[batch, {len(label_names)}]",
                            "token_ids": f"int32[batch, {length}]",
                            **({"code_points": f"int32[batch, {model.preprocessor.char_length}]"}
                               if "code_points" in model.input else {}),
                        },
                        "custom_ops": "TF Text: FastBertNormalize, FastWordpieceTokenizeWithOffsets, RaggedTensorToTensor"
                                      + (", Utf8Binarize" if "code_points" in model.input else ""),
                        # tf.lite.Interpreter takes no op registerers: "unresolved custom op: FastBertNormalize".
                        "runtime": "LiteRT with TF Text's ops registered, e.g. ai_edge_litert.interpreter."
                                   "InterpreterWithCustomOps(model_path=..., custom_op_registerers="
                                   "tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS); an Android or iOS app "
                                   "must build and link TensorFlow Text's TFLite kernels for these ops and add them "
                                   "to its op resolver (tensorflow_text's TFLite registrar; TensorFlow Text's guide "
                                   "'Converting TensorFlow Text operators to TensorFlow Lite', "
                                   "https://tensorflow.org/text/guide/text_tf_lite). model.tflite needs only "
                                   "builtin ops",
                        # TF Text's FastBertNormalizer lowercases only together with stripping accents.
                        # TF Text's BERT normalizer and pre-tokenizer, checked on the probe characters.
                        "tokenizing_difference": "unlike tokenizing (the Keras tokenizer's), this model "
                            + ("strips accents (NFD, marks removed) as it lowercases: 'café' reads as 'cafe', "
                               "'e' + U+0301 (combining accent) as 'e'; it lowercases rather than NFKC_Casefold, "
                               "so some letters fold otherwise ('ß', 'İ', 'ǅ'); it folds full-width forms before "
                               "splitting, so '＄' becomes the punctuation word '$'; "
                               if tokenizer.lowercase and not tokenizer.strip_accents else "")
                            + "it splits at every Unicode whitespace character (U+00A0 no-break space, U+3000, "
                              "U+2003, U+2028 line separator ...), where tokenizing keeps them inside the word (an "
                              "unknown word); it removes format characters (U+200B zero-width space, U+200D, soft "
                              "hyphen U+00AD) without splitting there, where tokenizing splits the word in two. "
                              "parity.json's texts_tokenized_differently counts the test texts this touches, and "
                              "probe_characters_tokenized_differently names the characters above found to differ "
                              "in probe texts",
                    }
                }
                if has_text_model
                else {}
            ),
            "tokenizer": tokenizer_entry(directory),
            "token_ids": f"{VOCABULARY_FILE}: the token of each id (id = index)",
            # How the Keras model read its texts, which model.tflite's token_ids must reproduce.
            **({"tokenizing": rule} if rule else {}),
        },
    )

    if splits is not None:
        texts, labels, origin = splits.test.texts, splits.test.labels, {"split": "test"}
    else:  # agreement with the Keras model only: these texts have no labels
        texts, labels = vocabulary_sources(tokenizer, PARITY_TEXTS), None
        origin = {"texts": f"of the run's vocabulary (its data, {config.data!r}, cannot be read)"}
    parity = {
        "quantize": quantize,
        **origin,
        **classifier_parity(directory, predict_probabilities(model, texts), id_model_inputs(model, texts), texts,
                            labels, probes={n: (t, id_model_inputs(model, [t])) for n, t in probe_texts(tokenizer).items()}),
    }
    return parity
