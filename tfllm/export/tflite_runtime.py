"""What every TFLite export shares: converting a SavedModel, and running a file in an interpreter.

`tfllm.export.tflite` (classifiers, and the front door `export_tflite`),
`tfllm.export.tflite_causal_lm` and `tfllm.export.tflite_seq2seq` import this
module and not each other.
"""

import contextlib
import io
import os
import sys
import tempfile
import threading

import numpy as np

from tfllm.errors import UserInputError, require_extra

SIGNATURE = "serving_default"
VOCABULARY_FILE = "vocabulary.json"  # the token of each id, beside the model, for an app that is not Python


def tftext_registerers():
    """TF Text's TFLite kernel registerers (tokenizer ops in `model_text.tflite`)."""
    import tensorflow_text

    return list(tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS)


def require_tflite(what):
    """One line naming the `tflite` extra when its interpreter is missing (checked before converting)."""
    require_extra(what, "tflite", "ai_edge_litert")


_QUIET_LOCK = threading.RLock()  # one capture of file descriptor 2 at a time (a nested one in the same thread is fine)


@contextlib.contextmanager
def quiet_tflite():
    """Keeps what TensorFlow's converter and TFLite's interpreter write to stderr inside the block off the terminal,
    and shows it where the block raises.

    The converter's C++ logs ("fully_quantize: 0, inference_type: 6, ..."), TFLite's "INFO: Created TensorFlow Lite
    XNNPACK delegate for CPU." and the "tf.lite.Interpreter is deprecated" warning that TensorFlow's own int8
    calibrator raises came between the export's own lines, and nothing in them was the user's to act on. C++ writes
    to file descriptor 2, not through Python's `sys.stderr`, so both go to a temporary file (not a pipe, which a
    long log would fill and block on) for the block; Python warnings are written to `sys.stderr` and land there
    without touching the process's warning filters. An exception (a conversion that fails) writes the captured text
    to stderr before it propagates, so TensorFlow's reasons are still read; a KeyboardInterrupt restores stderr and
    propagates alone. Both are process-wide: the lock keeps two threads from swapping them at once, and the
    server, whose request threads write to stderr, never calls it."""
    with _QUIET_LOCK, tempfile.TemporaryFile() as log:
        try:
            saved_fd = os.dup(2)
        except OSError:  # no stderr at all: nothing to keep quiet
            saved_fd = None
        if saved_fd is None:
            yield
            return
        saved_stream = sys.stderr
        if saved_stream is not None:
            saved_stream.flush()
        stream = io.TextIOWrapper(os.fdopen(os.dup(log.fileno()), "wb"), encoding="utf-8", errors="backslashreplace",
                                  line_buffering=True)
        os.dup2(log.fileno(), 2)
        sys.stderr = stream
        failed = False
        try:
            yield
        except Exception:
            failed = True
            raise
        finally:
            try:
                stream.flush()
            finally:
                sys.stderr = saved_stream
                os.dup2(saved_fd, 2)
                os.close(saved_fd)
                stream.close()
                if failed:
                    log.seek(0)
                    captured = log.read().decode("utf-8", errors="backslashreplace")
                    if captured and saved_stream is not None:
                        saved_stream.write(captured)
                        saved_stream.flush()


def load_interpreter(model_path=None, model_content=None, num_threads=None, quiet=False):
    """An `ai_edge_litert` interpreter that also knows TF Text's tokenizer ops. With `quiet` (tfllm's own checks of
    the files it writes, and its loops over them), its tensors are allocated in `quiet_tflite`: that is when TFLite
    applies its default XNNPACK delegate and logs so (once a process)."""
    require_tflite("Running a TFLite file")
    from ai_edge_litert.interpreter import InterpreterWithCustomOps

    with quiet_tflite() if quiet else contextlib.nullcontext():
        interpreter = InterpreterWithCustomOps(
            custom_op_registerers=tftext_registerers(),
            model_path=model_path,
            model_content=model_content,
            num_threads=num_threads,
        )
        if quiet:
            interpreter.allocate_tensors()
    return interpreter


def convert_saved_model(saved_model_dir, signature_keys, quantize, representative_dataset=None, custom_ops=False):
    """Converts signatures of a SavedModel to TFLite flatbuffer bytes.

    Going through a SavedModel (rather than `from_concrete_functions`) matters:
    it freezes the Keras variables into constants; the concrete-function path
    here kept them as resource variables that the interpreter read as NaN.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=list(signature_keys))
    converter.allow_custom_ops = custom_ops
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if custom_ops:
            # Calibration runs the model, so it needs the tokenizer kernels too;
            # the converter only takes them through this private hook.
            # PRIVATE API: `TargetSpec._experimental_custom_op_registerers`, read by
            # `TFLiteConverterBase._quantize` (tensorflow 2.21). No upstream issue asks to
            # make it public; the failure without it is tensorflow/tensorflow#42643
            # ("Failed to initialize op resolver for calibration"). Guarded by
            # tests/test_private_apis.py.
            converter.target_spec._experimental_custom_op_registerers = tftext_registerers()
    with quiet_tflite():  # its logs, and int8 calibration's interpreter warning, shown only if it fails
        return converter.convert()


def quantized_tensors(content, quantize, filename):
    """How many tensors of the converted `content` are in the type `quantize` stores weights in (int8, or
    float16); None for `none`. When none is, prints a note: the converter leaves weights under 1,024
    elements in float32, so a tiny model's "dynamic" export was the float32 file, unsaid."""
    if quantize == "none":
        return None
    narrow = np.float16 if quantize == "float16" else np.int8
    count = sum(detail["dtype"] == narrow for detail in load_interpreter(model_content=content).get_tensor_details())
    if not count:
        print(f"note: --quantize {quantize} quantized nothing in {filename}: the converter keeps weights of under "
              "1,024 elements in float32 and all of this model's are that small, so the file is the float32 "
              "model (metadata.json's quantized_tensors is 0).")
    return int(count)


def run_signature(interpreter, batch_size=64, **inputs):
    """Runs the one signature of `interpreter` over inputs (each with one row per example) in batches;
    dict of stacked numpy outputs."""
    if "token_ids" in inputs and (np.asarray(inputs["token_ids"]) < 0).any():  # TFLite's gather would read out of bounds
        raise UserInputError("token_ids must not be negative; pad with the tokenizer's pad id.")
    runner = interpreter.get_signature_runner(SIGNATURE)
    outputs = {}
    for start in range(0, len(next(iter(inputs.values()))), batch_size):
        for key, value in runner(**{name: values[start:start + batch_size] for name, values in inputs.items()}).items():
            outputs.setdefault(key, []).append(np.array(value))
    return {key: np.concatenate(parts) for key, parts in outputs.items()}


def vocabulary_sources(tokenizer, count):
    """Up to `count` texts of a few ordinary tokens each, spread over the vocabulary (parity sources)."""
    import keras
    import tensorflow as tf

    special = {int(i) for i in tokenizer.special_token_ids if i is not None}
    ordinary = [i for i in range(tokenizer.vocabulary_size()) if i not in special]
    step = max(1, len(ordinary) // (3 * count))
    chosen = ordinary[::step][: 3 * count]
    texts = []
    for start in range(0, len(chosen), 3):
        text = keras.ops.convert_to_numpy(tokenizer.detokenize(tf.constant([chosen[start:start + 3]]))).ravel()[0]
        text = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)
        if text.strip():
            texts.append(text.strip())
    return texts or ["a"]


def tokenizer_entry(directory):
    """metadata.json's `tokenizer`: the preset folder and the vocabulary files in it (a SentencePiece model, a
    WordPiece list), by path, so that an app that is not Python knows which file to read."""
    root = os.path.join(directory, "tokenizer")
    files = sorted(os.path.relpath(os.path.join(folder, name), directory).replace(os.sep, "/")
                   for folder, _, names in os.walk(os.path.join(root, "assets")) for name in names)
    text = "tokenizer/ (a KerasHub tokenizer preset; tfllm.tokenizers.load_tokenizer)"
    if files:
        return f"{text}; its vocabulary: {', '.join(files)}"
    return f"{text}; its vocabulary is in tokenizer/tokenizer.json (the config's list)"


def tokenizing_rule(tokenizer, task="translate"):
    """metadata.json's `tokenizing`: how an app turns a text into ids (and, for a `task` whose output is ids,
    "generate" or "translate", ids into text): with the vocabulary file alone (character and WordPiece
    tokenizers, tfllm's or a KerasHub preset's), with the SentencePiece model file, or a KerasHub byte-pair
    tokenizer's steps; None for another kind. A KerasHub preset's rule also names its class and config.

    A classifier's rule has no `detokenize` (its output is probabilities), and only a generator's speaks of a
    completion after a prompt (a SentencePiece classifier's spoke of both)."""
    rule = _tokenizing_steps(tokenizer, task)
    if rule is None:
        return None
    if task == "classify":
        rule.pop("detokenize", None)
    if not type(tokenizer).__module__.startswith("tfllm."):
        # A preset's tokenizer (the BERT classifier and GPT-2 generator had no section at all): which class
        # reproduces the ids, from which config.
        config = tokenizer.get_config()
        settings = ", ".join(f"{key}={config[key]!r}" for key in ("lowercase", "strip_accents", "split_on_cjk",
                                                                   "suffix_indicator", "oov_token")
                             if key in config)
        rule["keras_hub_class"] = (
            f"{type(tokenizer).__module__}.{type(tokenizer).__name__}, configured by tokenizer/tokenizer.json" + (f" ({settings})" if settings else "") + ", its "
            "vocabulary in the files `tokenizer` names; in Python, tfllm.tokenizers.load_tokenizer(the export's "
            "tokenizer/ folder) gives these ids. It adds no start, end or pad id itself: special_token_ids "
            "(and a generator's prompt_start_ids) say which the model takes")
    return rule


def _tokenizing_steps(tokenizer, task):
    """`tokenizing_rule`'s kinds, each with its steps (KerasHub's classes: tfllm's subclass them)."""
    from keras_hub.tokenizers import BytePairTokenizer, SentencePieceTokenizer, WordPieceTokenizer

    from tfllm.config import CJK_CHARACTERS, SENTENCEPIECE_SPACE
    from tfllm.tokenizers import CharacterTokenizer, unknown_token_id

    unknown = f"the unknown id ({unknown_token_id(tokenizer)})"
    if isinstance(tokenizer, CharacterTokenizer):
        return {"kind": "char", "tokenize": f"one id per Unicode character (code point), its index in "
                f"{VOCABULARY_FILE}, {unknown} for a character not there; case is kept",
                "detokenize": "concatenate the tokens"}
    if isinstance(tokenizer, WordPieceTokenizer):
        # KerasHub's pretokenize and TF Text's FastWordpieceTokenizer, step by step and in their order: an app
        # that lowercased first, split at every Unicode space or counted "€" as punctuation got other ids.
        # tests/test_tflite.py follows these steps in plain Python and compares with the tokenizer.
        steps = []
        if tokenizer.split_on_cjk:
            steps.append("each CJK ideograph (U+4E00-9FFF, 3400-4DBF, 20000-2A6DF, 2A700-2B73F, 2B740-2B81F, "
                         "2B820-2CEAF, F900-FAFF, 2F800-2FA1F) becomes a word of its own")
        if tokenizer.strip_accents:
            steps.append("accents are stripped (NFD, then every Mn mark removed)")
        steps.append("the text is split into words, looking at the characters as they are now (before any "
                     "folding): ASCII whitespace (space, tab, newline, carriage return, form feed) and every "
                     "Unicode control or format character (categories Cc and Cf: \\x00, \\x07, U+200B, soft "
                     "hyphen U+00AD, ...) end a word and are dropped; other spaces (U+00A0, U+3000, U+2028, ...) "
                     "do not split and stay inside the word; each punctuation mark is a word of its own: the "
                     "ASCII characters !-/ :-@ [-` {-~ (so $ + < | ~ ^ ` too) and every character of Unicode "
                     "category P; other symbols (categories S: € © ° 😀 ...) are not punctuation and stay "
                     "inside the word")
        if tokenizer.lowercase:
            steps.append("each word is case-folded with Unicode NFKC_Casefold (ICU's, as TF Text's "
                         "case_fold_utf8; in Python unicodedata.normalize('NFKC', unicodedata.normalize('NFKC', "
                         "word).casefold()), then every Default_Ignorable_Code_Point removed): this is full case "
                         "folding, not lowercasing ('straße' -> 'strasse'), and it also turns full-width and "
                         "compatibility forms into plain ones: '，' -> ',', '１２３' -> '123', 'Ａ' -> 'a', 'ﬁ' -> "
                         "'fi', '²' -> '2', and U+00A0 and U+3000 -> ' ' (a word holding a space has no pieces: "
                         "it is unknown); a word that folds to nothing has no ids")
        else:
            steps.append("case and every character are kept as they are (no Unicode normalization)")
        steps.append(f"a word longer than 100 bytes in UTF-8 is {unknown}")
        steps.append("any other word is cut greedily into the longest pieces in the vocabulary from its start, "
                     f"every piece after the first written with the {tokenizer.suffix_indicator!r} prefix; a word "
                     f"that cannot be cut so is {unknown} (one id for the whole word)")
        return {"kind": "wordpiece",
                "tokenize": "in this order: " + "; ".join(f"({n}) {step}" for n, step in enumerate(steps, 1)),
                "detokenize": f"join the tokens with spaces, gluing a {tokenizer.suffix_indicator!r} piece to the "
                              "one before it without its prefix; then remove each space between two CJK characters "
                              + CJK_CHARACTERS}
    if isinstance(tokenizer, SentencePieceTokenizer):
        # Its ids are SentencePiece's own, and the model file holds its normalization: an app needs the file
        # and the library, not rules (there was no section, and no word of which file or which settings).
        from sentencepiece import sentencepiece_model_pb2

        model = sentencepiece_model_pb2.ModelProto.FromString(tokenizer.proto)
        decode = "SentencePieceProcessor.decode(ids) with the same model file, special ids dropped"
        return {"kind": "sentencepiece",
                "tokenize": "encode the text to ids with the SentencePiece library (sentencepiece in Python, or "
                            "its C++ library on a phone) loading the .spm model file that `tokenizer` names: "
                            "SentencePieceProcessor(model_file=...).encode(text), plain ids, no sampling, no "
                            "start or end id added (special_token_ids says which to add); do not normalize the "
                            "text yourself: the model file applies its own normalization "
                            f"({model.normalizer_spec.name!r}"
                            + (": NFKC with case folding, so '，' -> ',', '１２３' -> '123', 'Ａ' -> 'a'"
                               if model.normalizer_spec.name == "nmt_nfkc_cf" else
                               ": NFKC, so '，' -> ',', '１２３' -> '123'" if model.normalizer_spec.name == "nmt_nfkc"
                               else "")
                            + f") and maps a piece it does not have to {unknown}",
                "detokenize": decode + ("; then, as the completion follows the prompt, " + SENTENCEPIECE_SPACE
                                        + "; as tfllm generate --tflite does" if task == "generate" else "")}
    if isinstance(tokenizer, BytePairTokenizer):
        # Byte-level BPE (GPT-2's): its split pattern is KerasHub's own, so the recipe names where it is rather
        # than restating it.
        kept = [t for t in getattr(tokenizer, "unsplittable_tokens", None) or [] if t]
        return {"kind": "bytepair",
                "tokenize": "KerasHub's byte-level byte-pair encoding (keras_hub/src/tokenizers/byte_pair_tokenizer.py"
                            "): the text is split into words by its SPLIT_PATTERN regexes (a word keeps the space "
                            "before it), each UTF-8 byte of a word becomes GPT-2's printable character for it "
                            "(bytes_to_unicode: 'Ġ' for a space), the merges file's pairs are merged lowest rank "
                            "first, and each resulting token is looked up in the vocabulary file; no lowercasing or "
                            "Unicode normalization; every byte has a token, so there is no unknown id"
                            + (f"; {', '.join(map(repr, kept))} written in the text stay one token each" if kept
                               else ""),
                "detokenize": "concatenate the tokens of the ids (special ids dropped), map each character back "
                              "to its byte (bytes_to_unicode reversed) and decode the bytes as UTF-8"}
    return None
