"""KerasHub architectures beyond BERT, GPT-2 and Llama (tests/test_from_preset.py): the places where
tfllm reads a model's internals (its token table, its key/value cache, what an export tracks), checked
on tiny untrained models. A sweep of 16 architectures found each of these failing."""

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
