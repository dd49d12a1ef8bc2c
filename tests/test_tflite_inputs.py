"""TFLite inputs are checked before the interpreter runs: TFLite's gather does not check indices."""

import numpy as np
import pytest

from tfllm.errors import UserInputError


@pytest.fixture(scope="module")
def tflite_generator(tmp_path_factory):
    """An untrained one-layer generator over 30 ids, converted: what is checked is its inputs, not its layers (one
    layer is less to write and convert than lm_utils.tiny_lm's two)."""
    import keras

    from tfllm.export.tflite_runtime import convert_saved_model
    from tfllm.export.tflite_causal_lm import TFLiteGenerator, write_causal_lm_saved_model
    from tfllm.models import CausalLM

    folder = tmp_path_factory.mktemp("tflite")
    keras.utils.set_random_seed(0)
    model = CausalLM.from_args(vocabulary_size=30, sequence_length=8, hidden_dim=16, num_layers=1, num_heads=2,
                               intermediate_dim=32, use_bias=False)
    write_causal_lm_saved_model(model, str(folder / "saved_model"))
    content = convert_saved_model(str(folder / "saved_model"), ["prefill", "decode"], "none")
    (folder / "model.tflite").write_bytes(content)
    return TFLiteGenerator(str(folder / "model.tflite"))


@pytest.mark.parametrize("prompt", [[5, -400, 6], [5, 30], []])
def test_out_of_range_prompt_ids_are_refused(tflite_generator, prompt):
    with pytest.raises(UserInputError, match=r"ids in \[0, 30\)"):
        tflite_generator.generate_ids(prompt, 3, stop_token_ids=())


def test_valid_ids_still_generate(tflite_generator):
    assert len(tflite_generator.generate_ids([5, 6, 7], 4, stop_token_ids=())) == 4
    with pytest.raises(UserInputError, match="max_new_tokens"):
        tflite_generator.generate_ids([5, 6], 0, stop_token_ids=())


def test_negative_classifier_ids_are_refused():
    from tfllm.export.tflite import run_signature

    with pytest.raises(UserInputError, match="must not be negative"):
        run_signature(None, token_ids=np.array([[5, -3, 0]], "int32"))
