"""tfllm.explain and `tfllm explain`: integrated gradients, attention maps, occlusion, their outputs and refusals."""

import csv
import html
import html.parser
import json
import os
import random
import subprocess
import sys

import keras
import keras_hub
import numpy as np
import pytest

from tfllm.cli import main
from tfllm.errors import UserInputError
from tfllm.explanations import Explainer, load_explainer, render_html, render_terminal

TEXT = "a gorgeous, witty and moving film that never drags"


@pytest.fixture(scope="module")
def explainer(tiny_classifier_run):
    return load_explainer(tiny_classifier_run)


def _probability(explainer, text, label):
    x, _, _ = explainer.encode(text)
    return float(explainer.probabilities(x)[0][explainer.label_names.index(label)])


@pytest.mark.slow
@pytest.mark.parametrize("target", [None, "rotten"])
def test_integrated_gradients_are_complete(explainer, target):
    """The attributions sum to score(text) - score(baseline); the tiny preset has the bigram and wide paths too."""
    e = explainer.explain(TEXT, method="integrated_gradients", target=target, steps=64)
    c = e.completeness
    assert len(e.tokens) == len(e.scores) >= 5
    assert set(e.views) == {"character n-grams", "word n-grams"}  # the tiny preset reads the raw text too
    assert abs(sum(e.scores) + sum(e.views.values()) - c["sum"]) < 1e-9
    assert c["score"] == pytest.approx(_probability(explainer, TEXT, e.target), abs=1e-5)
    assert abs(c["difference"]) > 1e-3  # the check means something only if the baseline scores differently
    assert c["error"] < 0.01 * abs(c["difference"]) + 2e-4, c
    if target:
        assert e.target == target


@pytest.mark.slow  # 3.8 s in stop 60's last fresh clone: over make test-fast's 3 s line
def test_the_baseline_is_padding_with_the_n_gram_paths_off(tiny_classifier_run):
    """Completeness holds whatever is interpolated; this checks *what* is: the baseline must be the model with
    padding embeddings at the text's positions and nothing from the bigram and naive-Bayes paths or the
    character and word views."""
    explainer = load_explainer(tiny_classifier_run)  # its own copy: the weights change below
    e = explainer.explain(TEXT)
    x, _, is_text = explainer.encode(TEXT)
    target = explainer.label_names.index(e.target)
    before = explainer.probabilities(x)[0][target]
    bigrams = explainer.model.get_layer("bigram_embedding")
    bigrams.set_weights([np.zeros_like(w) for w in bigrams.get_weights()])
    wide = explainer.model.get_layer("wide_ngrams")
    table = np.zeros_like(wide.get_weights()[0])
    specials = sorted(explainer.special_ids)  # start/end are not perturbed: their unigram weights stay
    table[specials] = wide.get_weights()[0][specials]
    wide.set_weights([table])
    # The views of the raw text: before, they kept their weights in the baseline, so it depended on the text
    # ("a awful film" and "a dull film" had baselines 0.82 and 0.69).
    for name in ("char_ngrams", "word_ngrams"):
        view = explainer.model.get_layer(name)
        view.set_weights([np.zeros_like(w) for w in view.get_weights()])
    assert abs(explainer.probabilities(x)[0][target] - before) > 1e-3  # those paths matter in this model
    baseline = {k: v.copy() for k, v in x.items()}
    baseline["token_ids"][0][is_text] = explainer.pad_id  # the mask stays: same positions, padding embeddings
    expected = explainer.probabilities(baseline)[0][target]
    assert e.completeness["baseline_score"] == pytest.approx(expected, abs=1e-5)


def test_texts_of_one_length_share_a_baseline_and_the_views_score_the_whole_text(explainer):
    """The character and word views read the raw text, past the token window too: held fixed, they made the
    baseline depend on the text and left their share of the score unexplained."""
    # Two texts of as many tokens (which ones depends on the tiny vocabulary learned).
    length = lambda text: len(explainer.encode(text)[1])  # noqa: E731
    other = next(text for text in ("a awful film", "a great film", "a bad film", "a good film", "a weak film",
                                   "a sad film", "a fun film") if length(text) == length("a dull film"))
    target = explainer.label_names[0]  # one label's baseline for both (their predicted labels may differ)
    dull, awful = explainer.explain("a dull film", target=target), explainer.explain(other, target=target)
    assert len(dull.tokens) == len(awful.tokens)
    assert dull.completeness["baseline_score"] == pytest.approx(awful.completeness["baseline_score"], abs=1e-6)
    window = explainer.preprocessor.sequence_length
    short, long = "the music soars " * window, "the music soars " * window + "dull boring awful " * 20
    e_short, e_long = explainer.explain(short), explainer.explain(long)
    assert e_short.tokens == e_long.tokens and e_long.tokens_left_out > 0
    assert e_long.views != pytest.approx(e_short.views, abs=1e-4)  # the words past the window count there
    for e in (e_short, e_long):
        assert e.completeness["error"] < 0.01 * abs(e.completeness["difference"]) + 2e-4
    # Occlusion: a view's score is the target's probability without that view.
    e = explainer.explain("a dull film", method="occlusion")
    x, _, _ = explainer.encode("a dull film")
    target = explainer.label_names.index(e.target)
    layer = explainer.model.get_layer("word_ngrams")
    saved = layer.get_weights()
    layer.set_weights([np.zeros_like(w) for w in saved])
    try:
        without = explainer.model(x, training=False)
    finally:
        layer.set_weights(saved)
    p_without = np.asarray(explainer._probabilities_of(without, x))[0][target]
    assert e.views["word n-grams"] == pytest.approx(e.probabilities[e.target] - p_without, abs=1e-5)
    assert "whole text's views" in render_terminal(e_long, color=False)
    page = render_html([e_long])
    assert "not attributed (the views above read them)" in page and "word n-grams" in page


@pytest.mark.slow
def test_a_note_says_when_the_views_carry_most_of_the_score(tiny_classifier_run, capsys):
    """With a model its n-gram views decide, the token scores were ~0 while deleting a word flipped the label,
    and nothing said the token scores covered only the token paths' share."""
    texts = [TEXT, "a dull film", "tedious and overlong", "the movie was awful"]
    notes = {}
    for method in ("occlusion", "integrated_gradients"):
        assert main(["explain", tiny_classifier_run, *texts, "--method", method, "--json"]) == 0
        for shown in map(json.loads, capsys.readouterr().out.splitlines()):
            views, tokens = abs(sum(shown["views"].values())), abs(sum(t["score"] for t in shown["tokens"]))
            if views > tokens:
                assert shown["views_note"].startswith(f"the views carry {views / (views + tokens):.0%} of"), shown
                notes[method] = notes.get(method, 0) + 1
            else:
                assert "views_note" not in shown
    assert notes.get("occlusion")  # the tiny preset's views decide most of these texts
    assert main(["explain", tiny_classifier_run, *texts, "--method", "occlusion"]) == 0
    assert capsys.readouterr().out.count("note: the views carry") == notes["occlusion"]


def test_one_token_past_the_window_is_named_in_the_singular(explainer):
    """It read "the 1 after them are not attributed"."""
    word = next(w for w in ("a", "the", "film", "and", "i") if len(np.asarray(explainer.tokenizer(w)).ravel()) == 1)
    fits = len(explainer.explain(f"{word} " * 200, method="occlusion").tokens)
    e = explainer.explain(f"{word} " * (fits + 1), method="occlusion")
    assert e.tokens_left_out == 1
    assert f"holds the first {fits} tokens; the 1 token after them is not attributed" in render_terminal(e, False)


def test_explain_takes_a_list_of_texts_as_the_cli_does(tiny_classifier_run):
    """`tfllm.explain(run, [t1, t2])` was refused ("explain takes one text ... call it once a text") while
    `tfllm explain RUN T1 T2` takes many: a list gives a list, in order; one string still gives one."""
    import tfllm

    texts = ["a dull film", TEXT]
    both = tfllm.explain(tiny_classifier_run, texts, method="occlusion")
    one = tfllm.explain(tiny_classifier_run, TEXT, method="occlusion")
    assert [e.text for e in both] == texts and one.text == TEXT
    assert both[1].scores == pytest.approx(one.scores, abs=1e-6)
    with pytest.raises(UserInputError, match="empty list"):
        tfllm.explain(tiny_classifier_run, [])


def test_integrated_gradients_converge_with_steps(explainer):
    coarse = explainer.explain(TEXT, steps=2).completeness
    fine = explainer.explain(TEXT, steps=200).completeness
    assert fine["difference"] == pytest.approx(coarse["difference"], abs=1e-6)  # same end points
    assert fine["error"] <= coarse["error"] + 1e-6


def test_occlusion_is_the_drop_in_probability(explainer):
    e = explainer.explain(TEXT, method="occlusion")
    x, ids, is_text = explainer.encode(TEXT)
    first = int(np.flatnonzero(is_text)[0])
    keep = np.ones(len(ids), bool)
    keep[first] = False
    without = explainer.removal_probabilities(x, [keep])[0][explainer.label_names.index(e.target)]
    expected = _probability(explainer, TEXT, e.target) - without
    assert e.scores[0] == pytest.approx(expected, abs=1e-5)


@pytest.mark.slow
def test_the_first_calls_run_eagerly_and_explain_as_the_traced_functions_do(tiny_classifier_run, monkeypatch):
    """An Explainer runs its model functions eagerly for its first `EAGER_CALLS` calls (tracing one took 2-5 s,
    most of a one-off `tfllm explain`), then traced: the same explanations either way, every method."""
    from tfllm import explanations

    model = load_explainer(tiny_classifier_run).model
    eager = Explainer(model)
    got = {method: eager.explain(TEXT, method=method) for method in explanations.METHODS}
    assert set(eager._fns) == {"probabilities", "ig", "attention"}
    assert all(f.function.experimental_get_tracing_count() == 0 for f in eager._fns.values())  # nothing traced
    monkeypatch.setattr(explanations, "EAGER_CALLS", 0)
    traced = Explainer(model)
    for method, e in got.items():
        t = traced.explain(TEXT, method=method)
        assert (e.label, e.target, e.tokens) == (t.label, t.target, t.tokens)
        np.testing.assert_allclose(e.scores, t.scores, atol=1e-5)
        np.testing.assert_allclose(list(e.probabilities.values()), list(t.probabilities.values()), atol=1e-6)
    assert all(f.function.experimental_get_tracing_count() == 1 for f in traced._fns.values())
    ig = eager._fns["ig"]  # past its eager calls, the function is traced once for every later text
    for text in [TEXT] * ig.eager_calls_left + ["dull", "an overlong, tedious and joyless affair"]:
        eager.explain(text)
    assert ig.function.experimental_get_tracing_count() == 1


@pytest.mark.slow
def test_occlusions_of_several_texts_are_explains_from_one_untraced_call(explainer, tiny_classifier_run,
                                                                        generator_run):
    """`Explainer.occlusions` (training's TensorBoard explanations): texts of different lengths in one padded
    eager batch give what `explain` gives each alone; texts it cannot explain are left out, and nothing is traced."""
    texts = [TEXT, "", "dull", "an overlong, tedious and joyless affair", "\U0001F600 \U0001F3AC"]
    batched = load_explainer(tiny_classifier_run)
    explanations = batched.occlusions(texts)
    assert batched._fns == {}  # no tf.function was built
    assert [e.text for e in explanations] == [t for t in texts if t]  # the empty one left out
    assert len({len(e.tokens) for e in explanations}) > 2
    for e in explanations:
        alone = explainer.explain(e.text, method="occlusion")
        assert (e.label, e.target, e.tokens, e.method) == (alone.label, alone.target, alone.tokens, "occlusion")
        np.testing.assert_allclose(e.scores, alone.scores, atol=1e-5)
        assert e.probabilities == pytest.approx(alone.probabilities, abs=1e-6)
        assert e.views and e.views == pytest.approx(alone.views, abs=1e-5)  # the tiny preset has n-gram views
    generator = load_explainer(generator_run)
    [e] = generator.occlusions(["B", "Before we"])  # a one-token prompt has nothing left to predict from
    alone = generator.explain("Before we", method="occlusion")
    assert (e.text, e.target, e.tokens) == ("Before we", alone.target, alone.tokens)
    np.testing.assert_allclose(e.scores, alone.scores, atol=1e-5)


@pytest.mark.slow
def test_threads_explaining_at_once_get_what_one_thread_gets(tiny_classifier_run):
    """Each occlusion silences a view for one eager call, and integrated gradients traces with embeddings
    replaced: per thread. Before, four threads at once raised AttributeError ('Embedding' object has no
    attribute 'call') and could see each other's silenced views."""
    from concurrent.futures import ThreadPoolExecutor

    explainer = load_explainer(tiny_classifier_run)
    assert explainer._views  # what is silenced
    texts = [f"{TEXT} {i}" for i in range(8)]
    jobs = [(text, "occlusion") for text in texts] + [(TEXT, "integrated_gradients")] * 2
    alone = [explainer.explain(text, method=method).to_json() for text, method in jobs]
    for _ in range(2):
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(lambda job: explainer.explain(job[0], method=job[1]).to_json(), jobs))
        for a, b in zip(alone, together):
            assert (a["label"], [t["token"] for t in a["tokens"]]) == (b["label"], [t["token"] for t in b["tokens"]])
            np.testing.assert_allclose([t["score"] for t in a["tokens"]], [t["score"] for t in b["tokens"]], atol=1e-5)
            assert a.get("views", {}) == pytest.approx(b.get("views", {}), abs=1e-6)


def test_attention_maps_have_one_row_per_position_summing_to_one(explainer, tiny_classifier_run):
    e = explainer.explain(TEXT, method="attention")
    backbone = explainer.model.backbone
    maps = np.array(e.attention["layers"])
    n = len(e.attention["tokens"])
    assert maps.shape == (backbone.num_layers, backbone.num_heads, n, n)
    assert n == len(e.tokens) + 2  # the start and end tokens are in the maps, not among the scored tokens
    np.testing.assert_allclose(maps.sum(axis=-1), 1.0, atol=1e-3)
    rollout = np.array(e.attention["rollout"])
    np.testing.assert_allclose(rollout.sum(axis=-1), 1.0, atol=1e-3)
    assert all(s > 0 for s in e.scores)


@pytest.mark.slow  # two explain commands
def test_attention_names_no_target_it_would_refuse(tiny_classifier_run, tmp_path, capsys):
    """Attention is the same for every label and refuses --target, yet it said "attention for 'rotten'" and
    gave "target": "rotten"."""
    assert main(["explain", tiny_classifier_run, TEXT, "--method", "attention", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["target"] is None and out["label"] in out["probabilities"]
    page = tmp_path / "why.html"
    assert main(["explain", tiny_classifier_run, TEXT, "--method", "attention", "--html", str(page)]) == 0
    lines = capsys.readouterr().out.splitlines()
    label = lines[0].split()[1]
    assert lines[1] == f"attention rollout (the same for every label); predicted {label!r}"
    assert "<b>explaining:</b> where the model looks" in page.read_text() and "None" not in page.read_text()


@pytest.mark.slow
def test_training_logs_explained_held_out_texts(tiny_classifier_run, explainer):
    import os

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tfllm.training.classifier import EXPLAINED_VAL_TEXTS, run_data

    accumulator = EventAccumulator(os.path.join(tiny_classifier_run, "logs", "explanations"),
                                   size_guidance={"tensors": 0})
    accumulator.Reload()
    tags = sorted(accumulator.Tags()["tensors"])
    assert tags == [f"explanations/{i}" for i in range(EXPLAINED_VAL_TEXTS)]
    # The n-gram tables refitted on the validation split know its texts (explained saturated, p = 1.000, every
    # token 0): the test split's are explained then.
    with open(os.path.join(tiny_classifier_run, "metrics.json"), encoding="utf-8") as f:
        refit = "val" in json.load(f).get("ngram_tables_from", [])
    assert refit  # the tiny preset refits, as the default recipe does
    val_texts = run_data(tiny_classifier_run).test.texts[:EXPLAINED_VAL_TEXTS]
    for tag, text in zip(tags, val_texts):
        markdown = accumulator.Tensors(tag)[0].tensor_proto.string_val[0].decode()
        assert markdown.startswith(f"> {text}\n") and "occlusion for **" in markdown
        assert any(f"label **{label}**" in markdown for label in ("rotten", "fresh"))
        # The views' scores and, where they carry most of the score, the note `tfllm explain` prints.
        alone = explainer.explain(text, method="occlusion")
        assert alone.views
        assert "\n\nthe whole text's views (they read the raw text, not the tokens): " in markdown
        assert all(f"{view} " in markdown.split("views (they read", 1)[1] for view in alone.views)
        if alone.views_note:
            assert "\n\nnote: the views carry " in markdown
        else:
            assert "note: the views carry" not in markdown


# --- a model where one token decides the label ------------------------------------------------

FILLER = ["the", "movie", "was", "long", "and", "plot", "had", "some", "scenes", "music"]


@pytest.fixture(scope="module")
def marker_run(tmp_path_factory):
    """A tiny classifier trained on texts whose label is 'yes' exactly when the word 'zebra' is in them."""
    from tfllm.config import TrainConfig
    from tfllm.training.classifier import train_classifier

    folder = tmp_path_factory.mktemp("marker")
    rng = random.Random(0)
    rows = []
    for i in range(600):
        words = [rng.choice(FILLER) for _ in range(rng.randint(4, 8))]
        label = "yes" if i % 2 else "no"
        if label == "yes":
            words.insert(rng.randrange(len(words) + 1), "zebra")
        rows.append({"text": " ".join(words), "label": label})
    data = folder / "marker.csv"
    with open(data, "w", newline="") as f:
        writer = csv.DictWriter(f, ["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    run_dir = str(folder / "run")
    metrics = train_classifier(TrainConfig(data=str(data), preset="tiny", epochs=4, labels=["no", "yes"],
                                           overrides={"vocabulary_size": 100},
                                           run_dir=run_dir), verbose=0)
    assert metrics["test"]["accuracy"] > 0.95, metrics["test"]
    return run_dir


@pytest.mark.slow  # trains a model (~40 s)
@pytest.mark.parametrize("method", ["integrated_gradients", "occlusion"])
def test_the_deciding_token_gets_the_largest_attribution(marker_run, method):
    explainer = load_explainer(marker_run)
    e = explainer.explain("the plot had zebra some long scenes", method=method)
    assert e.label == "yes" and "zebra" in e.tokens
    best = int(np.argmax(e.scores))
    assert e.tokens[best] == "zebra", list(zip(e.tokens, e.scores))
    others = [s for t, s in zip(e.tokens, e.scores) if t != "zebra"]
    assert e.scores[best] > 3 * max(abs(s) for s in others)
    # The control: without the marker no token stands out like that, and none pushes towards "yes".
    control = explainer.explain("the plot had some long scenes", method=method, target="yes")
    assert control.label == "no"
    assert max(control.scores) < 0.5 * e.scores[best]


# --- KerasHub's own models and generators ------------------------------------------------------


@pytest.mark.slow
def test_an_ensemble_of_three_classes_is_explained_with_its_own_probabilities():
    """An ensemble's outputs are its members' mean probabilities, not logits: explain applied a softmax to them
    (0.69 / 0.02 / 0.29 shown as 0.46 / 0.23 / 0.31) and its occlusion scores shrank with them. A target given
    as a number names the label that spells it."""
    from tfllm.models import EncoderBackbone, TextClassifier, TextClassifierPreprocessor
    from tfllm.models.ensemble import EnsembleClassifier
    from tfllm.tokenizers import train_tokenizer

    keras.utils.set_random_seed(0)
    tokenizer = train_tokenizer(["a good film", "a bad film", "dull and long"] * 5, "wordpiece", 30)
    preprocessor = TextClassifierPreprocessor(tokenizer, sequence_length=8)
    members = [TextClassifier(EncoderBackbone(vocabulary_size=tokenizer.vocabulary_size(), sequence_length=8,
                                              hidden_dim=8, num_layers=1, num_heads=2, intermediate_dim=8), 3,
                              preprocessor=preprocessor) for _ in range(2)]
    for member in members:  # far from uniform, so that a second softmax shows
        kernel = member.layers[-1].kernel
        kernel.assign(np.random.default_rng(1).normal(0, 3, kernel.shape))
    ensemble = EnsembleClassifier.from_members(members, preprocessor)
    expected = ensemble.predict(["a good film"], verbose=0)[0]
    shown = Explainer(ensemble, ["0", "1", "2"]).explain("a good film", method="occlusion", target=2)
    assert [shown.probabilities[name] for name in "012"] == pytest.approx(expected.tolist(), abs=1e-5)
    assert shown.target == "2"  # a number names the label it spells (2 was "not one of 0, 1, 2")


@pytest.mark.slow
def test_a_keras_hub_bert_classifier(tmp_path):
    keras.utils.set_random_seed(0)
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + FILLER + ["zebra", "f", "##i", "##n", "##e"]
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=len(vocabulary), num_layers=2, num_heads=2,
                                             hidden_dim=16, intermediate_dim=32, max_sequence_length=16)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=16)
    model = keras_hub.models.BertTextClassifier(backbone, num_classes=3, preprocessor=preprocessor,
                                                activation="softmax")
    assert Explainer(model).label_names == ["0", "1", "2"]  # KerasHub's classifiers name no classes
    explainer = Explainer(model, ["a", "b", "c"])
    text = "the movie had zebra music"
    e = explainer.explain(text, steps=100, with_attention=True)
    assert e.tokens == text.split()
    assert e.completeness["error"] < 0.01 * abs(e.completeness["difference"]) + 2e-4
    assert np.array(e.attention["layers"]).shape == (2, 2, 7, 7)  # [CLS] ... [SEP]
    assert explainer.explain(text, method="attention").scores  # rollout from the [CLS] row
    # "Café" is unknown: its [UNK] was 'Ca', and "ﬁne"'s 'f' was Café's f. [UNK] is the word; 'ﬁ' is 'f''s.
    shown = explainer.explain("Café ﬁne", method="occlusion").to_json()["tokens"]
    assert [(t["token"], t["text"]) for t in shown] == [("[UNK]", "Café"), ("f", "ﬁ"), ("##i", ""), ("##n", "n"),
                                                        ("##e", "e")]


@pytest.mark.slow
def test_a_classifier_loaded_with_keras_hub_alone_names_its_labels(tiny_classifier_run, tmp_path):
    """`keras_hub.models.TextClassifier.from_preset(run)` explained without label_names said '0' and '1': the
    run's names were only in tfllm/labels.json. Its task.json now holds them; a run saved before that loads
    as it was, and tfllm's own loader names its labels from labels.json."""
    import shutil

    from tfllm import runs

    names = runs.read_labels(tiny_classifier_run)
    model = keras_hub.models.TextClassifier.from_preset(tiny_classifier_run)
    assert list(model.label_names) == names
    assert Explainer(model).label_names == names
    assert Explainer(model, ["x", "y"]).label_names == ["x", "y"]  # label_names= still wins
    assert Explainer(model).explain("a fine film", method="occlusion").label in names
    # A new head over other classes (KerasHub's `from_preset(..., num_classes=3)`) takes none of the old names.
    assert keras_hub.models.TextClassifier.from_preset(tiny_classifier_run, num_classes=3).label_names is None

    old = tmp_path / "old"
    shutil.copytree(tiny_classifier_run, old)
    task = runs.read_json(old / "task.json")
    del task["config"]["label_names"]
    runs.write_json(old / "task.json", task)
    assert keras_hub.models.TextClassifier.from_preset(str(old)).label_names is None
    assert list(runs.load_task(old).label_names) == names
    assert load_explainer(old).label_names == names


@pytest.fixture(scope="module")
def generator_run(tmp_path_factory):
    from lm_utils import tiny_generator, write_run_dir

    return write_run_dir(tiny_generator(sequence_length=16), tmp_path_factory.mktemp("gen") / "run")


@pytest.mark.slow
def test_a_generator_attributes_its_next_token_to_the_prompt(generator_run, capsys):
    assert main(["explain", generator_run, "Before we", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [t["token"] for t in out["tokens"]] == list("Before we")
    assert len(out["probabilities"]) == 10 and out["label"] in out["probabilities"]
    assert out["target"] == out["label"]
    from tfllm.explanations import load_explainer

    # Only tokens the generator can say are listed, however likely a special one is ([PAD], [MASK] and [BOS]
    # were, where generation never picks them).
    explainer = load_explainer(generator_run)
    never = sorted(explainer.never_generated)
    # The end token too: trained on running text, the run never learnt it, and generation never emits it.
    assert never and explainer.tokenizer.end_token_id in never
    probabilities = np.full(explainer.model.backbone.vocabulary_size, 1e-3)
    probabilities[never] = 0.5
    label, listed = explainer._label_and_probabilities(probabilities)
    assert len(listed) == 10 and not set(listed) & set(explainer.token_strings(never)) and label in listed
    c = out["completeness"]
    assert c["error"] < 0.01 * abs(c["difference"]) + 2e-4
    # A prompt with characters the generator never saw is refused, as tfllm generate refuses it (explain
    # explained a next token after [UNK]s that generation would never make).
    assert main(["explain", generator_run, "Before 鑫e"]) == 2
    err = capsys.readouterr().err
    assert "contains characters '鑫' the tokenizer has no token for" in err and err.count("\n") == 1, err
    assert main(["explain", generator_run, "Before we", "--method", "occlusion", "--target", "e", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["target"] == "e"
    assert main(["explain", generator_run, "Before we", "--target", "zz"]) == 2  # not one token of its vocabulary
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--target 'zz'" in err
    # In the terminal the next tokens are quoted: a newline among them printed raw broke the line.
    from tfllm.explanations import Explanation, render_terminal

    explained = Explanation("Be", "occlusion", "generator", "\n", " ", {"\n": 0.6, " ": 0.4}, ["B", "e"], [0.1, -0.2])
    shown = render_terminal(explained, color=False)
    assert shown.splitlines()[0].endswith("('\\n' 0.600, ' ' 0.400)")
    # And on the HTML page, where they showed as nothing.
    from tfllm.explanations import render_html

    page = render_html([explained])
    quoted = {token: html.escape(repr(token)) for token in ("\n", " ")}
    assert f"<b>Next token:</b> {quoted[chr(10)]}" in page and f"<b>explaining:</b> {quoted[' ']}" in page
    assert f"<td>{quoted[' ']}</td>" in page


class _StrictHTML(html.parser.HTMLParser):
    """Fails on a closing tag that does not close the open element, or elements left open."""

    VOID = {"br", "img", "meta", "hr", "input", "link"}

    def __init__(self):
        super().__init__()
        self.open = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, (tag, self.open)
        self.open.pop()

    def close(self):
        super().close()
        assert not self.open, self.open


def test_a_notebook_shows_an_explanation_as_its_html_section():
    # A notebook showed an Explanation as its dataclass repr (every field, the attention maps too).
    from tfllm.explanations import Explanation

    tokens = ["a", "<script>alert(1)</script>", "witty", "&", "film"]
    e = Explanation("a <script>alert(1)</script> witty & film", "occlusion", "classifier", "fresh <b>",
                    "fresh <b>", {"fresh <b>": 0.8, "rotten": 0.2}, tokens, [0.1, -0.3, 0.5, 0.0, 0.2])
    page = e._repr_html_()
    parser = _StrictHTML()
    parser.feed(page)
    parser.close()
    for token in tokens:
        assert f">{html.escape(token)}</span>" in page, token
    assert "<script" not in page and "<b>fresh" not in page
    assert f"<b>Label:</b> {html.escape('fresh <b>')}" in page and "<b>method:</b> occlusion" in page
    # Inline styles only: a <style> sheet would restyle the notebook's other cells.
    assert "<style" not in page and "<html" not in page and 'style="padding:1px 2px' in page


@pytest.mark.slow
def test_an_explanations_html_in_a_notebook_is_its_section_of_the_page(explainer):
    e = explainer.explain(TEXT, method="attention", with_attention=True)
    section = e._repr_html_()
    assert section.count("<section") == 1 and section.count("<svg") >= 2
    assert section[len("<div>"):].split("</section>")[0] + "</section>" in render_html([e])


# --- the command line --------------------------------------------------------------------------


@pytest.mark.slow
def test_json_output(tiny_classifier_run, explainer, capsys):
    texts = [TEXT, "dull and far too long"]
    assert main(["explain", tiny_classifier_run, *texts, "--json", "--method", "occlusion", "--target", "fresh"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line, text in zip(lines, texts):
        out = json.loads(line)
        assert set(out) >= {"label", "probabilities", "method", "tokens"}
        assert out["method"] == "occlusion" and out["target"] == "fresh"
        assert set(out["probabilities"]) == {"rotten", "fresh"}
        assert sum(out["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert out["label"] == max(out["probabilities"], key=out["probabilities"].get)
        _, ids, is_text = explainer.encode(text)
        assert [t["token"] for t in out["tokens"]] == [t for t, k in zip(explainer.token_strings(ids), is_text) if k]


@pytest.mark.slow
def test_terminal_and_html_outputs(tiny_classifier_run, explainer, tmp_path, capsys):
    page = tmp_path / "why.html"
    assert main(["explain", tiny_classifier_run, TEXT, "--html", str(page)]) == 0
    out = capsys.readouterr().out
    assert "label:" in out and "completeness:" in out and f"Wrote {page}" in out
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>")
    for word in ("gorgeous", "witty", "integrated_gradients", "rollout"):
        assert word in text
    # Self-contained: no scripts, no external files; one heatmap per layer and head, plus the rollout.
    assert "<script" not in text and "src=" not in text and "href=" not in text and "http" not in text.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    backbone = explainer.model.backbone  # the module's explainer of the same run (its traces shared)
    assert text.count("<svg") == backbone.num_layers * backbone.num_heads + 1
    assert text.count('class="tok"') == len(explainer.explain(TEXT).tokens)


@pytest.mark.parametrize("args,message", [
    (["--method", "lime"], "Unknown --method 'lime'"),
    (["--target", "meh"], "Unknown --target 'meh'"),
    (["--steps", "0"], "--steps"),
    # Options the method would ignore: accepted, and the output read as if they counted.
    (["--method", "occlusion", "--steps", "10"], "--method occlusion takes none"),
    (["--method", "attention", "--target", "fresh"], "takes no --target"),
])
def test_bad_options_are_one_line(tiny_classifier_run, capsys, args, message):
    assert main(["explain", tiny_classifier_run, TEXT, *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_a_target_that_looks_like_an_index_is_told_that_target_takes_a_name(tiny_classifier_run, explainer, capsys):
    """`--target 1` on labels rotten, fresh only listed the labels. Labels are text (2 names the label '2'), so a
    number is not read as an index: the line says --target takes a label's name, not its index."""
    from tfllm import runs

    labels = ", ".join(runs.read_labels(tiny_classifier_run))
    for target in ("1", "0"):
        assert main(["explain", tiny_classifier_run, TEXT, "--target", target]) == 2
        assert capsys.readouterr().err == (f"tfllm: error: Unknown --target {target!r}; --target takes a label's "
                                           f"name, not its index: this model's labels are {labels}.\n")
    with pytest.raises(UserInputError, match=f"Unknown target='1'; target takes a label's name, not its index: "
                                             f"this model's labels are {labels}\\.$"):
        explainer.explain(TEXT, target=1)
    assert main(["explain", tiny_classifier_run, TEXT, "--target", "meh"]) == 2  # a name: as it was
    assert "index" not in capsys.readouterr().err


def test_a_list_of_texts_is_not_called_empty(tiny_classifier_run):
    with pytest.raises(UserInputError, match="explain takes one text \\(a string\\), got list"):
        load_explainer(tiny_classifier_run).explain(["a fine film", "a dull one"])


def test_explain_of_a_run_directory_loads_it_once(tiny_classifier_run, monkeypatch):
    """`tfllm.explain(run_dir, text)` in a notebook loop reloaded the model (and recompiled) on every call."""
    import os

    from tfllm import explanations

    monkeypatch.setattr(explanations, "_LOADED", {})
    first = explanations.explain(tiny_classifier_run, "a fine film", method="occlusion")
    loaded = explanations._LOADED[os.path.realpath(tiny_classifier_run)][1]
    second = explanations.explain(tiny_classifier_run, TEXT, method="occlusion")
    assert explanations._LOADED[os.path.realpath(tiny_classifier_run)][1] is loaded
    assert first.tokens != second.tokens  # each text explained, not the first one's answer again


@pytest.mark.slow
def test_explain_of_a_loaded_task_keeps_its_explainer(tiny_classifier_run, monkeypatch):
    """`tfllm.explain(TextClassifier.from_preset(run), text)` in a loop built a new Explainer, traced its
    functions again (seconds a call) and set off TensorFlow's retracing warning."""
    import keras_hub

    from tfllm import explanations

    monkeypatch.setattr(explanations, "_BY_MODEL", {})
    built = []
    monkeypatch.setattr(explanations.Explainer, "__init__", lambda self, *a, __init__=Explainer.__init__:
                        (built.append(a[0]), __init__(self, *a))[1])
    model = keras_hub.models.TextClassifier.from_preset(tiny_classifier_run)
    first = explanations.explain(model, "a fine film", method="occlusion", label_names=["fresh", "rotten"])
    second = explanations.explain(model, TEXT, method="occlusion", label_names=["fresh", "rotten"])
    assert built == [model] and first.tokens != second.tokens
    assert explanations.explain(model, TEXT, method="occlusion").label in ("fresh", "rotten")  # its own: another one
    assert len(built) == 2
    # A run directory or a backbone given to Explainer: one line, not an AttributeError.
    with pytest.raises(UserInputError, match="Explainer takes a loaded task; for a run directory use "
                       "tfllm.explanations.load_explainer"):
        Explainer(tiny_classifier_run)
    with pytest.raises(UserInputError, match="Cannot explain a EncoderBackbone"):
        Explainer(model.backbone)


def test_an_empty_text_is_one_line(tiny_classifier_run, capsys):
    assert main(["explain", tiny_classifier_run, TEXT, "  "]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Text 2 is empty" in err
    # A Python caller is shown the call, not the command (it read `tfllm explain RUN_DIR "..."`).
    from tfllm import explain

    with pytest.raises(UserInputError, match=r'e\.g\. `tfllm\.explain\(RUN_DIR, "a joyous, moving film"\)`\.$'):
        explain(tiny_classifier_run, "")


def test_an_empty_prompt_for_a_generator_gets_a_prompt_for_an_example(generator_run, capsys):
    """It said 'pass the texts to explain, e.g. tfllm explain RUN "a joyous, moving film"': a review; then
    'e.g. tfllm explain RUN "Once upon a"', a prompt refused by runs whose text has no capitals."""
    assert main(["explain", generator_run, ""]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Text 1 is empty" in err and "joyous" not in err, err
    assert "pass a prompt in the run's alphabet" in err and "Once upon a" not in err and '"' not in err, err
    with pytest.raises(UserInputError, match="an empty prompt .* has none"):
        load_explainer(generator_run).explain("")


def test_a_generators_prompt_of_spaces_is_its_space_tokens(generator_run, capsys):
    """`tfllm explain RUN "   "` was refused as empty while `tfllm generate RUN "   "` continues it: a character
    model's space is a token. Only "" is empty for a generator; a classifier still refuses a text of spaces."""
    assert main(["explain", generator_run, "   ", "--method", "occlusion", "--json"]) == 0
    assert [t["token"] for t in json.loads(capsys.readouterr().out)["tokens"]] == [" "] * 3
    assert load_explainer(generator_run).explain("  ").tokens == [" "] * 2


def test_a_run_of_the_wrong_task_is_one_line(tmp_path, capsys):
    from lm_utils import write_records

    run_dir = write_records(tmp_path / "pretrained", "pretrain")
    assert main(["explain", run_dir, TEXT]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pretrained model" in err and "classifier" in err, err
    assert main(["explain", str(tmp_path / "nowhere"), TEXT]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_attention_maps_of_a_generator_are_causal_and_its_rollout_is_the_last_row(generator_run, capsys):
    """tfllm's decoder blocks (FusedDecoderBlock) give their attention probabilities too: this was refused
    ("its blocks are not KerasHub TransformerEncoders") though the README lists rollout for generators."""
    assert main(["explain", generator_run, "Before we", "--method", "attention", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [t["token"] for t in out["tokens"]] == list("Before we")
    e = load_explainer(generator_run).explain("Before we", method="attention")
    maps = np.array(e.attention["layers"])  # [layers, heads, query, key]
    n = len(e.attention["tokens"])
    assert maps.shape[-2:] == (n, n) and maps.shape[0] == 2
    np.testing.assert_allclose(maps.sum(axis=-1), 1.0, atol=1e-4)
    assert np.allclose(np.triu(maps, k=1), 0.0)  # no position looks ahead
    rollout = np.array(e.attention["rollout"])
    is_text = [t not in ("[BOS]", "[EOS]", "[PAD]") for t in e.attention["tokens"]]
    np.testing.assert_allclose(e.scores, rollout[-1][np.array(is_text)], atol=1e-4)


@pytest.mark.parametrize("where,message", [
    ("folder", "is a folder"),
    ("missing/why.html", "does not exist"),
])
def test_an_html_path_that_cannot_be_written_is_refused_before_the_work(tiny_classifier_run, tmp_path, capsys,
                                                                        where, message):
    """A folder or a missing folder was a traceback after every text had been explained and printed."""
    (tmp_path / "folder").mkdir()
    page = tmp_path / where
    assert main(["explain", tiny_classifier_run, TEXT, "--html", str(page)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "--html" in err and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"] and not any((tmp_path / "folder").iterdir())


def test_an_html_name_too_long_is_one_line_before_the_work(tiny_classifier_run, tmp_path, capsys):
    """It was a traceback naming a hidden temporary, after every text had been explained and printed."""
    page = str(tmp_path / ("a" * 300 + ".html"))
    assert main(["explain", tiny_classifier_run, TEXT, "--html", page]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and repr(page) in err and ".tmp" not in err, err
    assert os.listdir(tmp_path) == []


@pytest.mark.slow  # an explain command loads the run and traces it
@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux's /sys, where no one creates files")
def test_an_html_page_the_system_refuses_is_one_line(tiny_classifier_run, capsys):
    """/sys refuses new files even to root, whom `os.access` lets through: that was a traceback (status 1)
    naming '/sys/.x.html.iscsm_vl.tmp'."""
    page = "/sys/tfllm-test-why.html"
    assert main(["explain", tiny_classifier_run, TEXT, "--html", page]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and repr(page) in err and ".tmp" not in err, err


@pytest.mark.slow  # 3.8-4.2 s on stop 59's machine: an explain command loads the run and traces it
def test_a_failed_html_write_leaves_the_old_page_and_no_half_written_one(tiny_classifier_run, tmp_path, capsys,
                                                                         monkeypatch):
    from tfllm import explanations

    page = tmp_path / "why.html"
    page.write_text("the old page")

    def broken(explained):
        raise KeyboardInterrupt  # Ctrl-C while the page is made

    monkeypatch.setattr(explanations, "render_html", broken)
    assert main(["explain", tiny_classifier_run, TEXT, "--html", str(page)]) == 130
    assert page.read_text() == "the old page"  # was truncated to nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["why.html"]


def test_a_damaged_run_is_one_line(tiny_classifier_run, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "damaged"
    shutil.copytree(tiny_classifier_run, run_dir)
    with open(run_dir / "model.weights.h5", "r+b") as f:  # a copy cut short: h5py's OSError
        f.truncate(1000)
    assert main(["explain", str(run_dir), TEXT]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{str(run_dir)!r} cannot be loaded" in err, err
    with pytest.raises(UserInputError, match="cannot be loaded"):
        load_explainer(str(run_dir))


def test_steps_must_be_a_whole_number_not_a_bool(explainer):
    with pytest.raises(UserInputError, match="steps must be an integer from 1 to 1000, got True"):
        explainer.explain(TEXT, steps=True)


def test_a_generator_explains_the_next_token_it_shows_not_a_likelier_special_one(generator_run):
    """The label was the likeliest token the generator can say, but the scores explained the plain argmax:
    here [PAD], which generation never picks."""
    explainer = load_explainer(generator_run)  # its own copy: the weights change below
    x, _, _ = explainer.encode("Before we")
    # Make the padding token the likeliest next token: its (tied) output row along the last hidden state.
    hidden = np.asarray(explainer.model.backbone(x))[0, -1]
    table = explainer.model.backbone.token_embedding.embeddings
    rows = table.numpy()
    rows[explainer.pad_id] = 50 * hidden / (hidden @ hidden)
    table.assign(rows)
    assert int(np.argmax(explainer.probabilities(x)[0])) == explainer.pad_id in explainer.never_generated
    for method in ("occlusion", "integrated_gradients"):
        e = explainer.explain("Before we", method=method)
        assert e.target == e.label != explainer.token_strings([explainer.pad_id])[0], (e.label, e.target)


@pytest.mark.slow  # 3.3 s in stop 61's fresh clone: over make test-fast's 3 s line
def test_occlusion_of_a_one_token_prompt_is_one_line(generator_run, capsys):
    """Dropping the only token left the generator nothing to read: a TensorFlow traceback (gather at -1)."""
    assert main(["explain", generator_run, "B", "--method", "occlusion"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'B' is one token" in err and "integrated_gradients" in err, err
    assert main(["explain", generator_run, "B", "--json"]) == 0  # integrated gradients explains it
    assert [t["token"] for t in json.loads(capsys.readouterr().out)["tokens"]] == ["B"]


def test_a_windows_prompt_is_explained_as_generate_reads_it(generator_run):
    """`generate` reads a prompt's "\r\n" as "\n", as training read the text; explain refused the same prompt
    ("characters the tokenizer never saw: '\r'"), in explain and in TensorBoard's occlusions alike."""
    explainer = load_explainer(generator_run)
    unix = explainer.explain("Citizen:\nBefore", method="occlusion")
    for prompt in ("Citizen:\r\nBefore", "Citizen:\rBefore"):
        e = explainer.explain(prompt, method="occlusion")
        assert (e.tokens, e.target) == (unix.tokens, unix.target) and np.allclose(e.scores, unix.scores)
        [o] = explainer.occlusions([prompt])
        assert o.tokens == unix.tokens and np.allclose(o.scores, unix.scores, atol=1e-5)


def test_a_prompt_longer_than_the_window_is_explained_from_its_end(generator_run):
    """Packing kept a long prompt's first tokens, so the next token explained was one in its middle, not the
    one generation continues the prompt with (it reads the last `sequence_length` tokens)."""
    explainer = load_explainer(generator_run)
    window = explainer.preprocessor.sequence_length
    prompt = "Before we " * 3
    assert len(prompt) > window
    for method in ("occlusion", "integrated_gradients"):
        long, tail = explainer.explain(prompt, method=method), explainer.explain(prompt[-window:], method=method)
        assert long.tokens == list(prompt[-window:])
        assert long.label == tail.label and long.probabilities == pytest.approx(tail.probabilities, abs=1e-6)
        assert long.scores == pytest.approx(tail.scores, abs=1e-6)


@pytest.mark.slow
def test_an_explanation_says_how_many_tokens_lie_past_the_window(explainer, generator_run):
    """Only the tokens in the model's window are attributed; a longer text's others were dropped without a word,
    while its prediction (the character and word views read the whole text) still depended on them."""
    from tfllm.explanations import render_terminal

    text = "a gorgeous, witty film " * explainer.preprocessor.sequence_length
    long, short = explainer.explain(text, method="occlusion"), explainer.explain("a fine film")
    assert long.tokens_left_out == len(np.asarray(explainer.tokenizer(text))) - len(long.tokens) > 0
    assert json.loads(json.dumps(long.to_json()))["tokens_left_out"] == long.tokens_left_out
    assert f"holds the first {len(long.tokens)} tokens; the {long.tokens_left_out} tokens after" in render_terminal(long)
    assert short.tokens_left_out == 0 and "tokens_left_out" not in short.to_json()
    assert "not attributed" not in render_terminal(short)
    generator = load_explainer(generator_run)  # a prompt's last tokens are the ones read
    prompt = "Before we " * 3
    cut = generator.explain(prompt, method="occlusion")
    assert cut.tokens_left_out == len(prompt) - len(cut.tokens) > 0
    assert "holds the last" in render_terminal(cut)


def _shown_text(line):
    """A `render_terminal(color=False)` text line without its scores."""
    import re

    return re.sub(r"\[[+-]\d\.\d\d\]", "", line)


def test_tokens_are_shown_as_the_text_they_cover(explainer, generator_run):
    """The outputs showed vocabulary pieces: '[UNK]' for each unknown word or character (which scored +1.00?),
    WordPiece's lowercase and stripped accents, a character model's tokens with spaces invented between them
    and its space token as nothing. Each token now shows the span of the input it covers, joined as there."""
    text = "A é 电影"
    e = explainer.explain(text, method="occlusion")
    assert e.tokens_left_out == 0 and e.tokens == ["a"] + ["[UNK]"] * 3  # the vocabulary's: lowercase, unknown
    lines = render_terminal(e, color=False).splitlines()
    assert _shown_text(lines[2]) == text and "[UNK]" not in "\n".join(lines)
    assert [t["text"] for t in e.to_json()["tokens"]] == e.shown_tokens
    assert "".join(e.shown_tokens) == text.replace(" ", "")
    assert e.shown_tokens == ["A", "é", "电", "影"]  # one [UNK] each
    page = render_html([e])
    assert ">[UNK]</span>" not in page and ">电</span>" in page and ">A</span>" in page

    cut = load_explainer(generator_run).explain("Before we " * 3, method="occlusion")  # past the window
    shown = _shown_text(render_terminal(cut, color=False).splitlines()[2])
    assert shown == ("Before we " * 3)[-len(cut.tokens):].replace(" ", "\u2423")  # its last tokens, spaces seen
    # In JSON a space token's text is the space: a generator's texts were '␣', and joined were not the prompt.
    assert "".join(t["text"] for t in cut.to_json()["tokens"]) == ("Before we " * 3)[-len(cut.tokens):]


def test_noise_is_not_shown_as_strong_evidence(explainer):
    """Each text's scores were divided by its largest |score|: a model that learned nothing (p 0.500/0.500,
    scores ~1e-6) showed 'terrible[-1.00]' in full red and 'strongest: terrible -0.0000'. The scale is now at
    least SCALE_FLOOR of the explained probability, and the outputs say what ±1.00 is."""
    import dataclasses
    import re

    from tfllm.explanations import SCALE_FLOOR

    real = explainer.explain(TEXT, method="occlusion")
    noise = dataclasses.replace(real, scores=[s * 1e-6 for s in real.scores], views=None)
    assert noise.scale[0] == pytest.approx(SCALE_FLOOR * real.target_probability)
    lines = render_terminal(noise, color=False).splitlines()
    assert set(re.findall(r"\[([+-]\d\.\d\d)\]", lines[2])) <= {"+0.00", "-0.00"}, lines[2]
    assert lines[3].startswith("[±1.00] and full colour = ") and "no token moved it that much" in lines[3]
    strongest = next(line for line in lines if line.startswith("strongest: "))
    assert "0.0000" not in strongest and "e-" in strongest, strongest
    page = render_html([noise])
    assert all(float(a) < 0.01 for a in re.findall(r"rgba\(\d+,\d+,\d+,([\d.]+)\)", page))
    assert "Full colour = " in page
    peak = max(abs(s) for s in real.scores)  # a real explanation's strongest token is ±1.00 where it is strong
    if peak >= SCALE_FLOOR * real.target_probability:
        assert "[+1.00]" in render_terminal(real, color=False) or "[-1.00]" in render_terminal(real, color=False)


def test_token_spans_place_pieces_unknowns_and_bytes():
    from tfllm.explanations import _bytes_surface, token_spans

    text = "Naïve 😀 <b>x"
    spans = token_spans(text, ["na", "##ive".lstrip("#"), None, "<", "b", ">", "x"])
    assert [text[a:b] for a, b in spans] == ["Na", "ïve", "😀", "<", "b", ">", "x"]
    # GPT-2's byte-level pieces: 'Ġ' is a space, and a token holding part of a character's bytes places nothing.
    assert _bytes_surface("\u0120good") == " good" and _bytes_surface("\u00f0\u0141") is None
    assert token_spans("a good", ["a", " good"]) == [(0, 1), (2, 6)]
    assert token_spans("a b", ["a", " ", "b"]) == [(0, 1), (1, 2), (2, 3)]  # a space token is the space
    assert token_spans("x", ["x", "y"]) == [(0, 1), None]
    assert token_spans("a zz b", ["a", "q", " ", "b"]) == [(0, 1), None, (1, 2), (5, 6)]  # after a lost token


def test_spans_are_slices_of_the_text_where_normalizing_changes_its_length(explainer):
    """The tokenizer folds 'ß' to 'ss' and 'ﬁ' to 'fi': "Straße" was shown 'Strassße' (its '##ss' not found),
    "ﬁne" as 'ﬁ', 'ﬁne' (overlapping spans), and after an unknown word "Café ﬁne"'s 'f' was placed in "Café".
    Each token's text is now a slice of the input, the slices in order and never overlapping, joining back to
    the text; the tokens of one character ('ﬁ': 'f', '##i') give it to the first, and [UNK] is a whole word."""
    from tfllm.explanations import _pieces, token_spans

    for text in ["Straße", "ﬁne", "Straße ﬁne Café", "Caf\U0001F600 ﬁne film", "Cafe\u0301 ﬁlm"]:
        e = explainer.explain(text, method="occlusion")
        texts = [t["text"] for t in e.to_json()["tokens"]]
        assert all(span is not None for span in e.spans), (text, e.tokens)
        assert texts == [text[a:b] for a, b in e.spans]
        assert all(b <= a for (_, b), (a, _) in zip(e.spans, e.spans[1:])), (text, e.spans)
        assert "".join(space + piece for space, piece in _pieces(e)) == text  # the text view
        assert "".join(texts) == text.replace(" ", "")
    # WordPiece's own words for "Café ﬁne" with 'café' unknown: [UNK] is all of "Café", the 'ﬁ' its first piece's.
    text = "Café ﬁne"
    spans = token_spans(text, [None, "f", "i", "n", "e"], word_starts=[True, True, False, False, False])
    assert [text[a:b] for a, b in spans] == ["Café", "ﬁ", "", "n", "e"]
    assert token_spans("Straße", ["s", "t", "ra", "s", "se"]) == [(0, 1), (1, 2), (2, 4), (4, 5), (5, 6)]


def test_an_unknown_word_holding_an_emoji_is_covered_whole_last_first_and_alone(explainer):
    """WordPiece keeps a symbol (an emoji) inside its word, one [UNK] for "gr😀eat"; the spans split the word at
    the emoji, and a text's last unknown token covered only 'gr' ("great😀": 'great'; "😀😍🎬": '😀')."""
    from tfllm.explanations import token_spans

    for text, surfaces, last in [("film gr\U0001F600eat", ["film", None], "gr\U0001F600eat"),
                                 ("film great\U0001F600", ["film", None], "great\U0001F600"),
                                 ("\U0001F600\U0001F60D\U0001F3AC", [None], "\U0001F600\U0001F60D\U0001F3AC"),
                                 ("gr\U0001F600eat film", [None, "film"], "film")]:
        spans = token_spans(text, surfaces)
        assert [text[a:b] for a, b in spans][-1] == last and spans[0][0] == 0
    assert [(a, b) for a, b in token_spans("a_b $c", [None, None, None, None, None])] == [
        (0, 1), (1, 2), (2, 3), (4, 5), (5, 6)]  # ASCII punctuation is a word of its own, as WordPiece splits it
    for text in ["a gr\U0001F600eat", "gr\U0001F600eat", "\U0001F600\U0001F60D\U0001F3AC"]:
        e = explainer.explain(text, method="occlusion")
        assert e.tokens[-1] == "[UNK]" and e.to_json()["tokens"][-1]["text"] == text.split()[-1]


def test_a_sentencepiece_lone_space_before_a_first_word_covers_no_character():
    """SentencePiece gives "ROMEO" ['▁', 'R', 'O', ...]: that '▁' took the prompt's next space (a later word's),
    and the tokens after it the characters of the words after that ('R' was the 'r' of "lord", or None). The '▁'
    covers none of the prompt (shown '␣'); every other token shows the characters it covers."""
    from lm_utils import TEXT, tiny_lm

    from tfllm.explanations import token_spans
    from tfllm.models.causal_lm import CausalLMPreprocessor
    from tfllm.tokenizers import train_tokenizer

    text = "ROMEO: thy lord"
    spans = token_spans(text, [" ", "R", "O", "M", "E", "O", ":", " thy", " lord"])
    assert spans[0] is None and [text[a:b] for a, b in spans[1:]] == ["R", "O", "M", "E", "O", ":", "thy", "lord"]

    tokenizer = train_tokenizer(TEXT.splitlines() * 5, kind="sentencepiece", vocabulary_size=60)
    model = tiny_lm(tokenizer.vocabulary_size(), 16)
    model.preprocessor = CausalLMPreprocessor(tokenizer, sequence_length=16)
    explainer = Explainer(model)
    for prompt in ("Before we", "pe: speak"):  # no piece '▁b' or '▁p': a lone '▁' first
        e = explainer.explain(prompt, method="occlusion")
        assert e.tokens[0] == "\u2581" and e.spans[0] is None and e.shown_tokens[0] == "\u2423"
        assert [a for a, _ in e.spans[1:]] == [0] + [b for _, b in e.spans[1:-1]] and e.spans[-1][1] == len(prompt)
        assert "".join(e.shown_tokens[1:]) == prompt.replace(" ", "\u2423")
        assert [t["text"] for t in e.to_json()["tokens"]] == [""] + [prompt[a:b] for a, b in e.spans[1:]]


def test_a_generators_target_it_never_emits_is_refused(generator_run, capsys):
    """`--target "[UNK]"` (also [PAD], [MASK]) was explained with a probability, though the sampler never emits
    a special token: each id `never_emitted_ids` names is refused in one line, as one outside the vocabulary."""
    from tfllm.generation import never_emitted_ids

    explainer = load_explainer(generator_run)
    never = never_emitted_ids(explainer.model, explainer.tokenizer)
    assert {"[UNK]", "[PAD]", "[MASK]"} <= set(explainer.token_strings(never))
    for token in explainer.token_strings(never):
        assert main(["explain", generator_run, "Before we", "--target", token, "--method", "occlusion"]) == 2
        err = capsys.readouterr().err
        assert f"--target {token!r} is a special token this model never generates" in err and err.count("\n") == 1


def test_a_generators_target_typed_as_an_escape_is_the_character(generator_run, capsys):
    """`--target '\\n'` (a shell passes a backslash and an n, as `--stop '\\n'` reads it) was refused as "not a
    token of this model's vocabulary": the next line break could not be explained from the command line."""
    assert main(["explain", generator_run, "Before we", "--target", "\\n", "--method", "occlusion", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["target"] == "\n"


def test_a_target_outside_a_sentencepiece_generators_vocabulary_is_one_line():
    """SentencePiece gives an unknown piece the unknown token's id: `--target zzqq` explained '<unk>'."""
    from lm_utils import TEXT, tiny_lm

    from tfllm.models.causal_lm import CausalLMPreprocessor
    from tfllm.tokenizers import train_tokenizer

    tokenizer = train_tokenizer(TEXT.splitlines() * 5, kind="sentencepiece", vocabulary_size=60)
    model = tiny_lm(tokenizer.vocabulary_size(), 16)
    model.preprocessor = CausalLMPreprocessor(tokenizer, sequence_length=16)
    explainer = Explainer(model)
    shown = explainer.explain("Before we", method="occlusion")
    with pytest.raises(UserInputError, match="target='zzqq' is not a token of this model's vocabulary"):
        explainer.explain("Before we", method="occlusion", target="zzqq")
    for token in list(shown.probabilities)[:3]:  # the tokens it lists are targets as they are spelt
        assert explainer.explain("Before we", method="occlusion", target=token).target == token


_FIRST_EXPLAINS_AT_ONCE = """
import sys, threading
import keras_hub, tfllm, tfllm.explanations, tfllm.models  # imports are not the race: at full speed
sys.setswitchinterval(1e-5)  # switch threads often: the race lasts a few bytecodes

barrier, errors = threading.Barrier(2), []

def explain():
    barrier.wait()
    try:
        tfllm.explain(sys.argv[1], "a fine film")
    except Exception as e:
        errors.append(f"{type(e).__name__}: {e}"[-300:])

threads = [threading.Thread(target=explain) for _ in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
sys.exit("\\n".join(errors) or None)
"""


@pytest.mark.slow
def test_threads_explaining_at_once_the_first_time_in_a_process_all_succeed(tiny_classifier_run):
    # The first model built in a process rewrites Keras classes: only a fresh interpreter runs that
    # path, so each try is one; without the lock about half of them failed (`super(type, obj)`): two
    # tries catch it three times in four, in under a minute.
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", _FIRST_EXPLAINS_AT_ONCE, tiny_classifier_run],
                              capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        assert done.returncode == 0, done.stderr[-2000:]
