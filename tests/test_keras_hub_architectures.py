"""KerasHub architectures beyond BERT, GPT-2 and Llama (tests/test_from_preset.py): the places where
tfllm reads a model's internals (its token table, its key/value cache, what an export tracks), checked
on tiny untrained models. A sweep of 16 architectures found each of these failing."""

import functools
import os

import numpy as np
import pytest

import keras
import keras_hub

pytestmark = pytest.mark.slow


def byte_pair_vocabulary(specials):
    """A byte-level BPE vocabulary of single bytes (every text encodes) and two merges."""
    byte_chars = [chr(c) for c in range(33, 127)] + ["Ġ", "Ċ"]
    return {t: i for i, t in enumerate(dict.fromkeys(byte_chars + ["Ġt", "he"] + specials))}, ["Ġ t", "h e"]


def test_distilbert_s_token_table_is_found_under_its_combined_embedding_layer():
    """DistilBERT's token table is `token_and_position_embedding/token_embedding/embeddings`: skipped as
    a "position" table, its training ended in a ValueError after the last epoch (the run's report)."""
    from tfllm.training.reporting import find_token_embedding

    backbone = keras_hub.models.DistilBertBackbone(vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8,
                                                   intermediate_dim=16, max_sequence_length=50)
    table = find_token_embedding(backbone, 50)
    np.testing.assert_array_equal(table, keras.ops.convert_to_numpy(backbone.token_embedding.embeddings))


def test_a_byte_pair_classifier_s_token_id_model_converts(tmp_path):
    """RoBERTa's tokenizer keeps lookup tables, which the export saved with the task and TFLite cannot
    convert: the token-id model was a ConverterError. It now tracks the network alone."""
    from tfllm.export.tflite_classifier import write_classifier_saved_model
    from tfllm.export.tflite_runtime import SIGNATURE, convert_saved_model, load_interpreter, run_signature
    from tfllm.models.text_classifier import class_probabilities

    keras.utils.set_random_seed(0)
    vocabulary, merges = byte_pair_vocabulary(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tokenizer = keras_hub.models.RobertaTokenizer(vocabulary=vocabulary, merges=merges)
    backbone = keras_hub.models.RobertaBackbone(vocabulary_size=len(vocabulary), num_layers=1, num_heads=2,
                                                hidden_dim=8, intermediate_dim=16, max_sequence_length=32)
    model = keras_hub.models.RobertaTextClassifier(
        backbone, num_classes=3, preprocessor=keras_hub.models.RobertaTextClassifierPreprocessor(tokenizer,
                                                                                                 sequence_length=16))
    assert write_classifier_saved_model(model, tokenizer, str(tmp_path / "sm"))
    path = tmp_path / "model.tflite"
    path.write_bytes(convert_saved_model(str(tmp_path / "sm"), [SIGNATURE], "none"))
    inputs = model.preprocessor(["the film was good", "bad"])
    got = run_signature(load_interpreter(str(path)), token_ids=keras.ops.convert_to_numpy(inputs["token_ids"]))
    want = keras.ops.convert_to_numpy(class_probabilities(model, inputs))
    np.testing.assert_allclose(got["probabilities"], want, atol=1e-5)


def test_falcon_s_cache_is_read_from_its_own_names(tmp_path):
    """Falcon names its heads `num_attention_heads`: the cache layout was an AttributeError. Its greedy
    ids through the TFLite prefill/decode loop are the Keras model's."""
    import types

    from tfllm.export.tflite_causal_lm import TFLiteGenerator, write_causal_lm_saved_model
    from tfllm.export.tflite_runtime import convert_saved_model
    from tfllm.generation import Generator

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.FalconBackbone(vocabulary_size=60, num_layers=2, num_attention_heads=2,
                                               hidden_dim=16, intermediate_dim=32)
    vocabulary, merges = byte_pair_vocabulary(["<|endoftext|>"])
    preprocessor = keras_hub.models.FalconCausalLMPreprocessor(
        keras_hub.models.FalconTokenizer(vocabulary=vocabulary, merges=merges), sequence_length=24)
    model = keras_hub.models.FalconCausalLM(backbone, preprocessor=preprocessor)
    write_causal_lm_saved_model(model, str(tmp_path / "sm"))
    path = tmp_path / "model.tflite"
    path.write_bytes(convert_saved_model(str(tmp_path / "sm"), ["prefill", "decode"], "none"))
    # Token ids only: a tokenizer stand-in with the ids the Generator reads (the model's vocabulary is 60).
    tokenizer = types.SimpleNamespace(end_token_id=2, special_token_ids=[2])
    generator = Generator(model, tokenizer, jit_compile=False)
    assert generator.window == 24  # rotary positions: the preprocessor's length
    prompt = [5, 6, 7, 8]
    room = generator.window - len(prompt)
    device = TFLiteGenerator(str(path), slides=False)
    assert device.generate_ids(prompt, room, (2,)) == generator.greedy_ids(prompt, room)


@functools.lru_cache(maxsize=1)
def _sentencepiece_proto():
    """A 150-piece SentencePiece model learned here, with the special pieces F-Net's and ALBERT's tokenizers need.
    Learned once per process (bytes: nothing can change it), for both the F-Net and the ALBERT test."""
    import io

    import sentencepiece as spm

    from tfllm.datasets.text import load_text_corpus

    lines = [line for line in load_text_corpus("shakespeare")[0].splitlines() if line.strip()][:500]
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=proto, vocab_size=150, pad_id=0,
                                   unk_id=1, bos_id=2, eos_id=3, pad_piece="<pad>", unk_piece="<unk>",
                                   bos_piece="[CLS]", eos_piece="[SEP]", user_defined_symbols="[MASK]",
                                   minloglevel=2)
    return proto.getvalue()


def _fnet_classifier(path):
    """A tiny F-Net classifier: its preprocessor gives no padding_mask."""
    tokenizer = keras_hub.models.FNetTokenizer(proto=_sentencepiece_proto())
    backbone = keras_hub.models.FNetBackbone(vocabulary_size=150, num_layers=1, hidden_dim=8, intermediate_dim=16,
                                             max_sequence_length=32)
    keras_hub.models.FNetTextClassifier(backbone, num_classes=2, preprocessor=keras_hub.models.FNetTextClassifierPreprocessor(
        tokenizer, sequence_length=16)).save_to_preset(path)


def _roformer_classifier(path):
    """A tiny RoFormerV2 classifier: its preprocessor gives no padding_mask either (its backbone derives it)."""
    from test_from_preset import WORDS

    vocabulary = list(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
                                    + list("abcdefghijklmnopqrstuvwxyz,.'!") + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]))
    tokenizer = keras_hub.models.RoformerV2Tokenizer(vocabulary=vocabulary, lowercase=True)
    backbone = keras_hub.models.RoformerV2Backbone(vocabulary_size=len(vocabulary), num_layers=1, num_heads=2,
                                                   hidden_dim=8, intermediate_dim=16, head_size=4)
    keras_hub.models.RoformerV2TextClassifier(
        backbone, num_classes=2, preprocessor=keras_hub.models.RoformerV2TextClassifierPreprocessor(
            tokenizer, sequence_length=16)).save_to_preset(path)


@pytest.mark.parametrize("build", [_fnet_classifier, _roformer_classifier])
def test_a_classifier_whose_preprocessor_gives_no_padding_mask_trains_to_a_finished_run_and_explains(
        build, tmp_path, capsys):
    """F-Net's and RoFormerV2's preprocessors give token_ids and segment_ids only: the end-of-training
    TensorBoard explanations read `padding_mask`, a KeyError that left the trained run unfinished (and a
    rerun resumed into it). The run now finishes and `tfllm explain` reads it."""
    import json

    from tfllm import runs
    from tfllm.cli import main

    keras.utils.set_random_seed(0)
    build(str(tmp_path / "preset"))
    run_dir = tmp_path / "run"
    assert main(["train", "--task", "classify", "--data", "rotten_tomatoes", "--from-preset", str(tmp_path / "preset"),
                 "--max-rows", "200", "--epochs", "1", "--run-dir", str(run_dir)]) == 0
    assert runs.is_finished(str(run_dir))
    assert os.listdir(run_dir / "logs" / "explanations")  # the report step did run
    capsys.readouterr()
    for method in ("occlusion", "integrated_gradients"):
        assert main(["explain", str(run_dir), "a good film", "--method", method, "--json"]) == 0
        out = capsys.readouterr().out
        assert json.loads(out[out.index("{"):])["tokens"]


def test_albert_s_shared_blocks_give_one_attention_map_per_layer():
    """ALBERT keeps its `TransformerEncoder` blocks in groups, one block called by several layers:
    `explain --method attention` said its blocks were "neither tfllm's nor KerasHub's Transformer blocks"."""
    from tfllm.explanations import Explainer

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.AlbertBackbone(vocabulary_size=150, num_layers=3, num_heads=2, num_groups=1,
                                               embedding_dim=8, hidden_dim=8, intermediate_dim=16)
    model = keras_hub.models.AlbertTextClassifier(backbone, num_classes=2, preprocessor=keras_hub.models.AlbertTextClassifierPreprocessor(
        keras_hub.models.AlbertTokenizer(proto=_sentencepiece_proto()), sequence_length=16))
    explanation = Explainer(model, ["rotten", "fresh"]).explain("a good film", method="attention", with_attention=True)
    layers = np.array(explanation.attention["layers"])
    n = len(explanation.attention["tokens"])
    assert layers.shape == (3, 2, n, n)  # one map per layer of the three that share the block
    np.testing.assert_allclose(layers.sum(axis=-1), 1, atol=1e-4)
    assert explanation.scores
