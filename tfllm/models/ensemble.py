"""An ensemble of text classifiers as one KerasHub task: the members' probabilities, averaged.

The members share one tokenizer, so one preprocessor feeds them all, and the
ensemble is an ordinary KerasHub `TextClassifier`: `TextClassifier.from_preset`
loads it, and every classifier path of tfllm (predict, evaluate, the SavedModel
and TFLite exports) takes it as it is. Its backbone holds the members, so the
preset's `model.weights.h5` holds all their weights.
"""

import keras
import keras_hub

from tfllm.models.preprocessors import TextClassifierPreprocessor
from tfllm.models.text_classifier import compile_probability_head, label_names_property


@keras.saving.register_keras_serializable(package="tfllm")
class EnsembleBackbone(keras_hub.models.Backbone):
    """Runs N classifier tasks (without their preprocessors) on the same inputs.

    Output: `[batch, N, units]`, each member's probabilities (`units` is 1 for
    a binary sigmoid head, else the number of classes).

    Args:
        members: classifier models (or their serialized configs) that take the
            same inputs (e.g. `{"token_ids", "padding_mask"}`) and have the same
            output size; their names must differ.
    """

    def __init__(self, members, dtype=None, **kwargs):
        if not members:
            raise ValueError("An ensemble needs at least one member.")
        # The ensemble computes in one dtype policy, its members' by default. One given at load time
        # (`from_preset(..., dtype="float32")`, as the exports load) reaches the members too: their
        # backbones' saved policies would otherwise win, and a mixed_bfloat16 ensemble exported a
        # bfloat16 graph that TFLite cannot convert.
        members = [m if isinstance(m, keras.Model) else keras.saving.deserialize_keras_object(_with_dtype(m, dtype))
                   for m in members]
        dtype = dtype if dtype is not None else members[0].dtype_policy
        # === Functional model ===
        first = members[0]
        inputs = {name: keras.Input(shape=tensor.shape[1:], dtype=tensor.dtype, name=name)
                  for name, tensor in first.input.items()}
        outputs = keras.ops.stack([keras.ops.cast(member(inputs), "float32") for member in members], axis=1)
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)

        # === Config ===
        self.members = members

    def get_config(self):
        config = super().get_config()
        # Without their compile settings: members are never trained inside the ensemble, and a
        # custom compile() in a saved config makes every load warn (KerasHub's preset saver strips
        # them from nested dicts, but not from this list).
        config["members"] = [{k: v for k, v in keras.saving.serialize_keras_object(m).items() if k != "compile_config"}
                             for m in self.members]
        return config


def _with_dtype(member_config, dtype):
    """A member task's config with its backbone's dtype policy set to `dtype` (unchanged when None)."""
    if dtype is None:
        return member_config
    backbone = member_config["config"]["backbone"]
    policy = keras.dtype_policies.serialize(keras.dtype_policies.get(dtype))
    return {**member_config, "config": {**member_config["config"],
                                         "backbone": {**backbone, "config": {**backbone["config"], "dtype": policy}}}}


@keras.saving.register_keras_serializable(package="tfllm")
class EnsembleClassifier(keras_hub.models.TextClassifier):
    """The mean of its members' probabilities (soft voting), as a KerasHub `TextClassifier`.

    Outputs probabilities shaped like one member's (one sigmoid unit for two
    classes), so `class_probabilities` and the exports treat it as any tfllm
    classifier.

    Args:
        label_names: the classes' names, in id order, saved in the task's config as tfllm's
            `TextClassifier` saves them, so that `from_preset` alone names the predictions
            (`tfllm.Explainer(model)`); `None` where unknown.

    Example:
    >>> ensemble = EnsembleClassifier.from_members([model_a, model_b], preprocessor=model_a.preprocessor)
    >>> ensemble.predict(["a fine film"])  # [[p]]: the average of the two members' p
    """

    backbone_cls = EnsembleBackbone
    preprocessor_cls = TextClassifierPreprocessor

    def __init__(self, backbone, num_classes, preprocessor=None, label_names=None, **kwargs):
        if label_names is not None and len(label_names) != num_classes:
            label_names = None  # another head's names (as tfllm's TextClassifier: not an error at load time)
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor

        # === Functional model ===
        inputs = backbone.input
        outputs = keras.ops.mean(backbone(inputs), axis=1)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.num_classes = num_classes
        self.label_names = label_names

    label_names = label_names_property()

    @classmethod
    def from_members(cls, members, preprocessor):
        """An ensemble of trained classifier tasks; they are copied (weights included) under unique names."""
        copies = []
        for i, member in enumerate(members):
            config = member.get_config()
            config.update(name=f"member_{i}", preprocessor=None)
            copy = type(member).from_config(config)
            copy.set_weights(member.get_weights())
            copies.append(copy)
        return cls(EnsembleBackbone(copies), num_classes=members[0].num_classes, preprocessor=preprocessor,
                   label_names=getattr(members[0], "label_names", None))

    @property
    def members(self):
        return self.backbone.members

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes)
        if self.label_names:  # only then: an ensemble saved before it stays loadable by older tfllm
            config["label_names"] = list(self.label_names)
        return config

    def compile(self, optimizer="auto", loss="auto", *, metrics="auto", **kwargs):
        """As tfllm's `TextClassifier`: the outputs are probabilities, not logits."""
        compile_probability_head(self, optimizer, loss, metrics, **kwargs)
