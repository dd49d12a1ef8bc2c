"""`tfllm train --ensemble N`: N seeds as member runs, one model averaging them, exported whole."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tfllm.cli import main

TEXTS = ["a joyous, moving film", "tedious and overlong", "电影", ""]


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory):
    """An ensemble of two tiny classifiers on 200 bundled reviews (~20 s)."""
    from tfllm.config import TrainConfig
    from tfllm.training.classifier import train_classifier

    run_dir = str(tmp_path_factory.mktemp("ensemble") / "reviews")
    metrics = train_classifier(TrainConfig(data="rotten_tomatoes", preset="tiny", max_rows=200, run_dir=run_dir,
                                           ensemble=2), verbose=0)
    return run_dir, metrics


@pytest.mark.slow
def test_predict_on_an_ensemble_says_its_members_views_read_a_text_of_unknown_tokens(ensemble_run):
    """The members' n-gram views read the raw text, but predict said the ensemble's label "says nothing about
    it": it looked for the views in the ensemble's own config, not in its members'."""
    from tfllm.errors import TfllmWarning
    from tfllm.prediction import predict

    with pytest.warns(TfllmWarning, match=r"is all unknown tokens \(\[UNK\]\).*only its characters and words"):
        predict(ensemble_run[0], ["鑫龘"])


@pytest.mark.slow
def test_members_are_runs_and_the_ensemble_averages_them(ensemble_run):
    from tfllm import runs
    from tfllm.models import EnsembleClassifier
    from tfllm.training.classifier import load_run, predict_probabilities

    run_dir, metrics = ensemble_run
    assert runs.is_finished(run_dir) and not os.path.exists(os.path.join(run_dir, "backup"))
    assert [m["run_dir"] for m in metrics["members"]] == ["members/seed_1337", "members/seed_1338"]
    assert metrics["ensemble"] == 2
    assert metrics["parameters"] == sum(m["parameters"] for m in metrics["members"])
    assert 0 <= metrics["test"]["accuracy"] <= 1 and all(0 <= m["test_accuracy"] <= 1 for m in metrics["members"])
    # The members' tables keep to the training split, so the ensemble's val figures stay out of sample.
    for member in metrics["members"]:
        assert runs.read_json(runs.path(os.path.join(run_dir, member["run_dir"]), runs.METRICS))[
            "ngram_tables_from"] == ["train"]
    with open(os.path.join(run_dir, "metrics.json")) as f:
        assert json.load(f) == metrics

    model, labels, _ = load_run(run_dir)  # as `tfllm predict` / `evaluate` load it: KerasHub's from_preset
    assert isinstance(model, EnsembleClassifier) and labels == ["rotten", "fresh"]
    members = [load_run(os.path.join(run_dir, m["run_dir"]))[0] for m in metrics["members"]]
    # One tokenizer for all: the members read the same ids.
    vocabularies = [m.preprocessor.tokenizer.get_vocabulary() for m in members]
    assert vocabularies[0] == vocabularies[1] == model.preprocessor.tokenizer.get_vocabulary()
    # Different seeds give different members; the ensemble is their mean.
    each = [predict_probabilities(m, TEXTS) for m in members]
    assert not np.allclose(each[0], each[1])
    np.testing.assert_allclose(predict_probabilities(model, TEXTS), np.mean(each, axis=0), atol=1e-6)


@pytest.mark.slow
def test_the_ensemble_explains_held_out_texts_in_its_own_logs(ensemble_run):
    """Only the members' logs held TensorBoard explanations; the ensemble's own logs/ had none."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tfllm.training.classifier import EXPLAINED_VAL_TEXTS, run_data

    run_dir = ensemble_run[0]
    accumulator = EventAccumulator(os.path.join(run_dir, "logs", "explanations"), size_guidance={"tensors": 0})
    accumulator.Reload()
    tags = sorted(accumulator.Tags()["tensors"])
    assert tags == [f"explanations/{i}" for i in range(EXPLAINED_VAL_TEXTS)]
    for tag, text in zip(tags, run_data(run_dir).val.texts):  # the members' tables never saw the val split
        markdown = accumulator.Tensors(tag)[0].tensor_proto.string_val[0].decode()
        assert markdown.startswith(f"> {text}\n") and "occlusion for **" in markdown
        assert "the whole text's views (they read the raw text, not the tokens): " in markdown


RELOAD = """
import json, sys
import tensorflow_text  # registers the tokenizer ops before loading
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
out = model.signatures["serving_default"](text=tf.constant(json.loads(sys.argv[2])))
print(json.dumps(out["probabilities"].numpy().tolist()))
"""


@pytest.mark.slow
def test_saved_model_reloads_in_a_fresh_process_with_the_same_probabilities(ensemble_run, tmp_path, capsys):
    from tfllm.training.classifier import load_run, predict_probabilities

    run_dir, _ = ensemble_run
    assert main(["export", run_dir, "--name", "ensemble", "--base-dir", str(tmp_path)]) == 0
    out = subprocess.run([sys.executable, "-c", RELOAD, str(tmp_path / "ensemble" / "1"), json.dumps(TEXTS)],
                         capture_output=True, text=True, timeout=180, check=False)
    assert out.returncode == 0, out.stderr
    expected = predict_probabilities(load_run(run_dir)[0], TEXTS)
    np.testing.assert_allclose(json.loads(out.stdout.strip().splitlines()[-1]), expected, atol=1e-5)


@pytest.mark.slow
def test_tflite_export_runs_in_the_interpreter(ensemble_run, tmp_path):
    pytest.importorskip("ai_edge_litert")
    from tfllm.export import tflite
    from tfllm.training.classifier import load_run, predict_probabilities

    run_dir, _ = ensemble_run
    directory = tflite.export_tflite(run_dir, "ensemble-tflite", base_dir=str(tmp_path))
    with open(os.path.join(directory, "parity.json")) as f:
        parity = json.load(f)
    for name in ("model.tflite", "model_text.tflite"):
        assert parity[name]["max_abs_probability_difference"] < 1e-4, parity
    texts = [t for t in TEXTS if t]
    interpreter = tflite.load_interpreter(os.path.join(directory, "model_text.tflite"))
    out = tflite.run_signature(interpreter, text=np.array(texts, dtype=object))["probabilities"]
    np.testing.assert_allclose(out, predict_probabilities(load_run(run_dir)[0], texts), atol=1e-4)


@pytest.mark.parametrize("args, message", [
    (["--ensemble", "0"], "--ensemble must be at least 1"),
    (["--ensemble", "-2"], "--ensemble must be at least 1"),
    (["--ensemble", "2", "--task", "generate"], "--ensemble is for --task classify"),
    (["--ensemble", "2", "--from-preset", "somewhere"], "Cannot load --from-preset"),
])
def test_bad_ensemble_arguments_exit_2(args, message, tmp_path, capsys):
    # (--precision float64 was refused by the first member, and the ensemble's folder stayed behind as an
    # interrupted run; the parser refuses it now, test_precision_is_one_of_the_policies_before_any_work.)
    run_dir = tmp_path / "run"
    assert main(["train", "--data", "rotten_tomatoes", "--preset", "tiny", "--run-dir", str(run_dir), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not run_dir.exists()



@pytest.mark.slow
def test_an_ensemble_from_an_ensemble_run_names_its_members(ensemble_run, tmp_path, capsys):
    """A tfllm --ensemble run as --from-preset was refused as "is another model": it is a tfllm run, and what is
    refused is starting members from an ensemble rather than one encoder."""
    run_dir = tmp_path / "x2"
    assert main(["train", "--data", "rotten_tomatoes", "--ensemble", "2", "--from-preset", ensemble_run[0],
                 "--max-rows", "200", "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    member = os.path.join(ensemble_run[0], "members", "seed_1337")
    assert "is itself an ensemble" in err and f"(e.g. {member})" in err and "another model" not in err, err
    assert err.count("\n") == 1 and not run_dir.exists()


@pytest.mark.slow
def test_an_interrupted_mixed_bfloat16_ensemble_resumes_then_computes_in_bfloat16_and_exports_in_float32(
        tmp_path, monkeypatch):
    """One bfloat16 ensemble, trained interrupted and resumed, checks two things (one training, not two):

    - an interrupted ensemble resumes keeping its finished members (the same command again trains only the
      second member; the first's metrics are not rewritten), with the run's own seed (7, 8);
    - the members' saved policies won over the one the export loads with: the SavedModel computed in
      bfloat16 and the TFLite conversion failed (`tensor<?x1xbf16>`), where one bf16 model exports fine.
    """
    pytest.importorskip("ai_edge_litert")
    from tfllm import runs
    from tfllm.config import TrainConfig
    from tfllm.export import tflite
    from tfllm.training import classifier

    train = classifier.train_classifier
    run_dir = str(tmp_path / "x2")
    config = TrainConfig(data="rotten_tomatoes", preset="tiny", max_rows=120, epochs=1, run_dir=run_dir,
                         ensemble=2, seed=7, precision="mixed_bfloat16")

    def interrupted_at_the_second_member(member, verbose="auto", tokenizer=None, data=None):
        if member.model_seed == 8:
            raise KeyboardInterrupt
        return train(member, verbose=verbose, tokenizer=tokenizer, data=data)

    monkeypatch.setattr(classifier, "train_classifier", interrupted_at_the_second_member)
    with pytest.raises(KeyboardInterrupt):
        train(config, verbose=0)
    first = tmp_path / "x2" / "members" / "seed_7"
    assert runs.is_unfinished(run_dir) and runs.is_finished(first)
    mtime = os.path.getmtime(first / "metrics.json")

    monkeypatch.undo()
    metrics = train(config, verbose=0)  # the same command again
    assert runs.is_finished(run_dir) and os.path.getmtime(first / "metrics.json") == mtime
    assert [m["model_seed"] for m in metrics["members"]] == [7, 8]

    # The resumed bfloat16 ensemble: bfloat16 as trained, float32 as exported.
    for dtype, compute in [(None, "bfloat16"), ("float32", "float32")]:
        model = runs.load_task(run_dir, dtype=dtype)
        assert [m.backbone.compute_dtype for m in model.members] == [compute, compute]
    directory = tflite.export_tflite(run_dir, "bf16-ensemble", base_dir=str(tmp_path))
    with open(os.path.join(directory, "parity.json")) as f:
        assert json.load(f)["model.tflite"]["max_abs_probability_difference"] < 1e-4


@pytest.mark.slow
def test_an_ensemble_is_explained_by_occlusion_and_the_other_methods_say_so(ensemble_run, capsys):
    """Occlusion only runs the model, so it explains an ensemble; it was refused with the other methods, which
    need one token embedding (an ensemble has one per member)."""
    from tfllm.cli import main
    from tfllm.explanations import load_explainer

    for method in ("integrated_gradients", "attention"):
        assert main(["explain", ensemble_run[0], "a fine film", "--method", method]) == 2
        err = capsys.readouterr().err
        assert "use --method occlusion, or explain one of its members" in err and err.count("\n") == 1, err
    assert main(["explain", ensemble_run[0], "a fine film", "--method", "occlusion", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    explainer = load_explainer(ensemble_run[0])
    x, _, is_text, probabilities = explainer.prepare("a fine film")
    target = explainer.label_names.index(shown["label"])
    drops = probabilities[target] - explainer.removal_probabilities(x, explainer._without_each_token(is_text)[1])
    assert [t["score"] for t in shown["tokens"]] == pytest.approx(drops[:, target].tolist(), abs=1e-5)


@pytest.mark.slow
def test_an_ensemble_says_why_steps_and_attention_maps_do_not_apply(ensemble_run, tmp_path, capsys):
    """`explain ENSEMBLE TEXT --steps 10` warned of occlusion, then refused "--steps ...; --method occlusion
    takes none", a method the user never chose; `--html` wrote a page without attention maps, saying nothing.
    Both now say that an ensemble is explained by occlusion / has no single attention map, and name members."""
    from tfllm.cli import main

    assert main(["explain", ensemble_run[0], "a fine film", "--steps", "10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning" not in err and "--method occlusion takes none" not in err, err
    assert "An ensemble is explained by occlusion" in err and "members/" in err, err
    page = tmp_path / "why.html"
    assert main(["explain", ensemble_run[0], "a fine film", "a dull film", "--html", str(page)]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "attention map" in line]
    assert len(notes) == 1 and "no single attention map" in notes[0] and "members/" in notes[0], notes
    assert "No attention maps: an ensemble has no single attention map" in page.read_text()


@pytest.mark.slow
def test_an_ensembles_occlusion_shows_its_views_the_mean_of_its_members(ensemble_run, capsys):
    """The members' character and word n-gram views read the raw text, but an ensemble's explanation had no
    "views": deleting a word moved p a lot while its token scores stayed small, and nothing said why. The
    ensemble averages its members' probabilities, so silencing a view in every member moves p by the mean of
    what it moves each member's."""
    from tfllm.explanations import load_explainer

    run_dir, metrics = ensemble_run
    text = "a gorgeous, witty film"
    assert main(["explain", run_dir, text, "--method", "occlusion", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert set(shown["views"]) == {"character n-grams", "word n-grams"}
    each = []
    for member in metrics["members"]:
        explainer = load_explainer(os.path.join(run_dir, member["run_dir"]))
        each.append(explainer.explain(text, method="occlusion", target=shown["target"]).views)
    for view, score in shown["views"].items():
        assert score == pytest.approx(np.mean([views[view] for views in each]), abs=1e-5)


@pytest.mark.slow
def test_an_ensemble_is_explained_by_occlusion_by_default_and_attention_says_what_it_lacks(ensemble_run, capsys):
    """The README's plain `tfllm explain RUN "text"` was an error on an ensemble (integrated gradients, the
    default, needs one token embedding); and --method attention said it "needs one token embedding to
    attribute to", which attention does not."""
    assert main(["explain", ensemble_run[0], "a fine film", "tedious and overlong", "--json"]) == 0
    captured = capsys.readouterr()
    assert [json.loads(line)["method"] for line in captured.out.splitlines()] == ["occlusion", "occlusion"]
    assert captured.err.count("tfllm: warning: explaining by occlusion: integrated gradients (the default)") == 1
    assert main(["explain", ensemble_run[0], "a fine film", "--method", "attention"]) == 2
    err = capsys.readouterr().err
    assert "--method attention needs one stack of attention blocks to read" in err and "embedding" not in err


@pytest.mark.slow
def test_an_ensemble_loaded_through_keras_hub_alone_names_its_classes(ensemble_run):
    """task.json held no label names for an ensemble, so `TextClassifier.from_preset` explained its
    predictions as '0'/'1' (a single classifier's run already named them)."""
    import keras_hub

    from tfllm.explanations import Explainer

    with open(os.path.join(ensemble_run[0], "task.json")) as f:
        assert json.load(f)["config"]["label_names"] == ["rotten", "fresh"]
    model = keras_hub.models.TextClassifier.from_preset(ensemble_run[0])
    assert model.label_names == ("rotten", "fresh")
    assert Explainer(model).label_names == ["rotten", "fresh"]


@pytest.mark.parametrize("value", ["float64", ""])
def test_precision_is_one_of_the_policies_before_any_work(value, tmp_path, capsys):
    """`--precision fp16` was refused after the data was read, and `--precision ''` trained as float32 and
    recorded "" in the run."""
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--data", "rotten_tomatoes", "--preset", "tiny", "--run-dir", str(run_dir), "--ensemble", "2",
              "--precision", value])
    assert stopped.value.code == 2 and not run_dir.exists()
    captured = capsys.readouterr()
    assert f"argument --precision: invalid choice: '{value}'" in captured.err and "Data:" not in captured.out


@pytest.mark.slow
def test_a_member_interrupted_before_its_first_backup_is_named_as_the_member(tmp_path, monkeypatch, capsys):
    """Interrupted during member 2, the member's guard said "Interrupted before the first backup: nothing to
    resume, so the new run is removed.", then the ensemble's "Run the same command again to resume": the first
    line now names the member's folder, the one removed, and says the ensemble keeps what it finished."""
    from tfllm import runs
    from tfllm.training import classifier

    start = classifier._start_member_run  # members after the first: Ctrl-C as the second one starts

    def interrupted(*args, **kwargs):
        start(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(classifier, "_start_member_run", interrupted)
    run_dir = tmp_path / "x2b"
    assert main(["train", "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", "120", "--epochs", "1",
                 "--ensemble", "2", "--seed", "7", "--run-dir", str(run_dir)]) == 130
    out = capsys.readouterr().out
    member = run_dir / "members" / "seed_8"
    assert "nothing to resume, so the new run is removed" not in out, out
    assert (f"Interrupted before {member}'s first backup: it is removed and trains again from its start when "
            f"{run_dir} resumes (the members {run_dir} finished are kept).") in out, out
    assert f"Run the same command again to resume from {run_dir / 'backup'}" in out
    assert not member.exists() and runs.is_finished(run_dir / "members" / "seed_7") and runs.is_unfinished(run_dir)
