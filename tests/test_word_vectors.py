"""Word-vector pretraining (`tfllm pretrain --objective vectors`, tfllm.word_vectors)."""

import json

import keras
import numpy as np
import pytest

from tfllm import word_vectors


def ragged(documents):
    """(flat ids, row splits) of a list of id lists, as a `tf.RaggedTensor` holds them."""
    return np.concatenate([np.asarray(d, "int64") for d in documents]), np.cumsum([0] + [len(d) for d in documents])


def test_cooccurrence_counts_pairs_within_the_window_of_one_document_weighted_by_distance():
    counts = word_vectors.cooccurrence(*ragged([[1, 2, 3], [4, 1]]), vocabulary_size=6, window=2,
                                       ignore=[0])
    dense = counts.toarray()
    np.testing.assert_allclose(dense, dense.T)
    assert dense[1, 2] == 1.0 and dense[1, 3] == 0.5  # distance 1 and 2
    assert dense[3, 4] == 0.0  # 3 ends one document, 4 starts the next: no pair
    assert dense[4, 1] == 1.0
    ignored = word_vectors.cooccurrence(*ragged([[1, 0, 2]]), vocabulary_size=3, window=2, ignore=[0]).toarray()
    assert ignored[0].sum() == 0 and ignored[1, 2] == 0.5  # padding pairs with nothing, yet keeps its place


def reference_cooccurrence(ids, row_splits, vocabulary_size, window, ignore=()):
    """cooccurrence as it was (every distance's pairs at once, COO -> CSR): the counts to match."""
    import scipy.sparse

    ids = np.asarray(ids, "int64")
    document = np.repeat(np.arange(len(row_splits) - 1), np.diff(row_splits))
    real = ~np.isin(ids, np.asarray(list(ignore), "int64"))
    rows, cols, weights = [], [], []
    for distance in range(1, window + 1):
        same = (document[:-distance] == document[distance:]) & real[:-distance] & real[distance:]
        rows.append(ids[:-distance][same])
        cols.append(ids[distance:][same])
        weights.append(np.full(int(same.sum()), 1.0 / distance))
    rows, cols, weights = (np.concatenate(a) if a else np.zeros(0) for a in (rows, cols, weights))
    shape = (vocabulary_size, vocabulary_size)
    counts = scipy.sparse.coo_matrix((weights, (rows, cols)), shape=shape).tocsr()
    return counts + counts.T


def zipf_corpus(tokens, documents, vocabulary_size=50, seed=0):
    """(ids, row splits) of random documents of frequent and rare ids (empty documents too)."""
    rng = np.random.default_rng(seed)
    ids = rng.zipf(1.3, tokens) % vocabulary_size
    return ids, np.sort(np.r_[0, rng.integers(0, tokens, documents), tokens])


def test_cooccurrence_counts_a_large_corpus_in_little_memory():
    """On a 200,000-row file the pairs of every token and distance at once (24 bytes per token and
    distance, then copied into a sparse matrix) peaked at 10 GB to fill a 50 x 50 table."""
    import tracemalloc

    ids, splits = zipf_corpus(1_000_000, 10_000)
    tracemalloc.start()  # NumPy reports its arrays to tracemalloc
    try:
        word_vectors.cooccurrence(ids, splits, vocabulary_size=50, window=10, ignore=[0, 1])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24 * 2**20, f"{peak / 2**20:.0f} MB"  # 6 MB; it was 240 MB, 30 times the 8 MB of token ids


@pytest.mark.parametrize("dense", [True, False])
@pytest.mark.parametrize("chunk", [None, 97])
def test_cooccurrence_counts_as_before_in_chunks_dense_or_sparse(monkeypatch, dense, chunk):
    if not dense:  # a large vocabulary's sparse counts, on a small one
        monkeypatch.setattr(word_vectors, "DENSE_COUNTS", 0)
    if chunk:  # pairs across many chunks' edges
        monkeypatch.setattr(word_vectors, "CHUNK_TOKENS", chunk)
    ids, splits = zipf_corpus(20_000, 300)
    counts = word_vectors.cooccurrence(ids.astype("int32"), splits, vocabulary_size=50, window=10, ignore=[0, 1])
    expected = reference_cooccurrence(ids, splits, vocabulary_size=50, window=10, ignore=[0, 1])
    assert counts.format == "csr" and counts.shape == expected.shape
    assert np.array_equal(counts.indptr, expected.indptr) and np.array_equal(counts.indices, expected.indices)
    # Equal up to float rounding: a chunk's count / distance is rounded once, not after each addition.
    np.testing.assert_allclose(counts.data, expected.data, rtol=1e-12)


def test_words_used_alike_get_close_vectors_and_unused_ids_get_none():
    rng = np.random.default_rng(0)
    # Two topics: ids 1-5 appear together, ids 6-10 together; id 11 never appears.
    documents = [rng.choice(np.arange(1, 6) if i % 2 else np.arange(6, 11), size=12) for i in range(400)]
    vectors, found = word_vectors.word_vectors(*ragged(documents), vocabulary_size=12, dim=4, window=3, seed=0)
    assert vectors.shape == (12, 4) and vectors.dtype == np.float32
    assert found[1:11].all() and not found[0] and not found[11]
    np.testing.assert_allclose(np.linalg.norm(vectors[found], axis=1), 1.0, rtol=1e-5)
    for word in (1, 7):
        group = set(range(1, 6)) if word < 6 else set(range(6, 11))
        assert set(word_vectors.nearest(vectors, word, count=4)) == group - {word}
    again, _ = word_vectors.word_vectors(*ragged(documents), vocabulary_size=12, dim=4, window=3, seed=0)
    np.testing.assert_array_equal(again, vectors)  # seeded: the same vectors every run


def test_text_without_running_text_is_one_clear_error():
    from tfllm.errors import UserInputError

    with pytest.raises(UserInputError, match="running text"):
        word_vectors.word_vectors(*ragged([[1], [2]]), vocabulary_size=3, dim=2)


REVIEWS = [f"the film was {a} and {b}" for a in ("good", "great", "fine", "fun") for b in ("bright", "warm", "kind")] + \
          [f"a movie so {a} , {b} too" for a in ("bad", "dull", "poor", "weak") for b in ("grim", "slow", "cold")]


@pytest.mark.slow
def test_pretrain_vectors_writes_a_preset_a_classifier_fine_tunes_from(tmp_path, capsys):
    """The CLI path: the preset's token embedding holds the vectors; `train --from-preset` starts
    from exactly those weights with the preset's tokenizer, trains, and writes a classifier run."""
    import keras_hub

    from tfllm import runs
    from tfllm.cli import main

    corpus = tmp_path / "reviews.txt"
    corpus.write_text("\n".join(REVIEWS * 3) + "\n")
    pre = tmp_path / "vectors"
    assert main(["pretrain", "--objective", "vectors", "--data", str(corpus), "--preset", "tiny",
                 "--run-dir", str(pre)]) == 0
    metrics = json.loads((pre / "metrics.json").read_text())
    assert metrics["tokens_with_vectors"] > 10 and 0 < metrics["val"]["vector_coverage"] <= 1
    assert "nearest_neighbours" in metrics and "Word vectors" in capsys.readouterr().out
    assert runs.fine_tuning_preset(str(pre)) == "default"  # what `train --from-preset` uses without --preset
    assert runs.fine_tuning_preset(str(tmp_path)) == "finetune"  # anything else (here: not a run at all)
    assert main(["predict", str(pre), "a fine film"]) == 2  # not a classifier yet: says how to make one
    err = capsys.readouterr().err
    assert "--from-preset" in err and err.count("\n") == 1, err
    backbone = keras_hub.models.Backbone.from_preset(str(pre))
    table = keras.ops.convert_to_numpy(backbone.token_embedding.embeddings)
    norms = np.linalg.norm(table, axis=1)
    assert np.sum(np.isclose(norms, 1.0, atol=1e-4)) == metrics["tokens_with_vectors"]  # vector_norm 1

    data = tmp_path / "labelled.csv"
    data.write_text("text,label\n" + "".join(f'"{t}",{"pos" if i < 12 else "neg"}\n' for i, t in enumerate(REVIEWS * 2)))
    run = tmp_path / "clf"
    # An ensemble of two (as self-training's ensemble teacher is): both members start from the vectors.
    assert main(["train", "--task", "classify", "--data", str(data), "--preset", "tiny", "--from-preset", str(pre),
                 "--ensemble", "2", "--run-dir", str(run)]) == 0
    assert runs.read_config(str(run))["from_preset"] == str(pre)
    assert keras_hub.models.TextClassifier.from_preset(str(run)).preprocessor.tokenizer.get_vocabulary() == \
        backbone_vocabulary(pre)
    for member in ("seed_1337", "seed_1338"):
        tuned = keras_hub.models.TextClassifier.from_preset(str(run / "members" / member))
        assert tuned.preprocessor.tokenizer.get_vocabulary() == backbone_vocabulary(pre)
        tuned_table = keras.ops.convert_to_numpy(tuned.backbone.token_embedding.embeddings)
        assert not np.array_equal(tuned_table, table)  # fine-tuned...
        assert np.corrcoef(tuned_table.ravel(), table.ravel())[0, 1] > 0.5  # ...from the vectors, not from scratch


def backbone_vocabulary(preset):
    import keras_hub

    return keras_hub.tokenizers.Tokenizer.from_preset(str(preset)).get_vocabulary()


def test_a_python_config_from_a_preset_trains_the_recipe_the_command_does(tmp_path):
    """TrainConfig(from_preset=...) in Python fine-tuned with `default` (its dropout, n-gram tables, no
    warm-up), where `tfllm train --from-preset` picks `finetune`: the trainer now picks as the command does."""
    from tfllm.config import TrainConfig
    from tfllm.training import common

    config = TrainConfig(data="rotten_tomatoes", from_preset=str(tmp_path))
    common.check_config(config, "classify")  # every classifier trainer's first step
    assert config.preset == "finetune"
    assert TrainConfig(from_preset=str(tmp_path), preset="tiny").preset == "tiny"  # a recipe asked for
    assert TrainConfig().preset == TrainConfig(task="generate", from_preset=str(tmp_path)).preset == "default"


def test_vectors_refuse_to_continue_a_preset(tmp_path, capsys):
    from tfllm.cli import main

    corpus = tmp_path / "reviews.txt"
    corpus.write_text("\n".join(REVIEWS) + "\n")
    assert main(["pretrain", "--objective", "vectors", "--data", str(corpus), "--from-preset", str(tmp_path),
                 "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--objective mlm" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_an_interrupted_vectors_run_leaves_nothing_and_keeps_the_run_it_was_to_replace(tmp_path, monkeypatch):
    """No backup to resume from: an interruption is a failure (the folder goes, `--overwrite`'s old run comes back)."""
    from tfllm.cli import main

    corpus = tmp_path / "reviews.txt"
    corpus.write_text("\n".join(REVIEWS * 2) + "\n")
    argv = ["pretrain", "--objective", "vectors", "--data", str(corpus), "--preset", "tiny"]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(word_vectors, "word_vectors", interrupted)
    assert main(argv + ["--run-dir", str(tmp_path / "new")]) == 130  # as the shell reports Ctrl-C
    assert not (tmp_path / "new").exists()
    monkeypatch.undo()
    assert main(argv + ["--run-dir", str(tmp_path / "run")]) == 0
    before = (tmp_path / "run" / "metrics.json").read_text()
    monkeypatch.setattr(word_vectors, "word_vectors", interrupted)
    assert main(argv + ["--run-dir", str(tmp_path / "run"), "--overwrite"]) == 130
    assert (tmp_path / "run" / "metrics.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reviews.txt", "run"]  # no hidden .previous left


@pytest.mark.slow
def test_the_default_recipe_pretrains_word_vectors_on_its_training_and_unlabelled_texts(tmp_path, monkeypatch, capsys):
    """`tfllm train` with a recipe that has `word_vectors` (default, mobile, tiny) pretrains in the same command:
    teacher and student both start from vectors of the labelled and the unlabelled texts, whose words are
    in the run's vocabulary; `--set word_vectors=false` starts from random embeddings."""
    import keras_hub

    from tfllm.cli import main
    from tfllm.training import classifier

    calls = []
    real = classifier.embed_word_vectors

    def recorded(backbone, tokenizer, texts, *args):  # the real step, its inputs and result kept for the checks
        result = real(backbone, tokenizer, texts, *args)
        calls.append((list(texts), keras.ops.convert_to_numpy(backbone.token_embedding.embeddings).copy(), result[1]))
        return result

    monkeypatch.setattr(classifier, "embed_word_vectors", recorded)
    data = tmp_path / "labelled.csv"
    data.write_text("text,label\n" + "".join(f'"{t}",{"pos" if i < 12 else "neg"}\n' for i, t in enumerate(REVIEWS * 2)))
    unlabelled = [f"the picture was {a} and {b} , quixotic" for a in ("lovely", "grand") for b in ("rich", "deep")]
    (tmp_path / "unlabelled.txt").write_text("\n".join(unlabelled * 3) + "\n")
    run = tmp_path / "clf"
    assert main(["train", "--task", "classify", "--data", str(data), "--preset", "tiny", 
                 "--unlabeled", str(tmp_path / "unlabelled.txt"), "--run-dir", str(run)]) == 0
    assert len(calls) == 2  # the teacher, then the student
    for texts, table, found in calls:
        assert set(unlabelled) <= set(texts)
        np.testing.assert_allclose(np.linalg.norm(table[found], axis=1), 1.0, rtol=1e-4)  # tiny: vector_norm 1
        assert not np.allclose(np.linalg.norm(table[~found], axis=1), 1.0, rtol=1e-4)  # the rest: as initialised
    assert "Word vectors:" in capsys.readouterr().out
    tuned = keras_hub.models.TextClassifier.from_preset(str(run))
    assert "q" in tuned.preprocessor.tokenizer.get_vocabulary()  # only the unlabelled texts have a q (quixotic)
    tuned_table = keras.ops.convert_to_numpy(tuned.backbone.token_embedding.embeddings)
    assert np.corrcoef(tuned_table.ravel(), calls[-1][1].ravel())[0, 1] > 0.5  # trained from the vectors

    calls.clear()
    assert main(["train", "--task", "classify", "--data", str(data), "--preset", "tiny", "--set", "word_vectors=false",
                 "--run-dir", str(tmp_path / "scratch")]) == 0
    assert calls == []


@pytest.mark.slow
def test_texts_of_single_words_train_without_word_vectors(tmp_path, capsys):
    from tfllm.cli import main

    data = tmp_path / "words.csv"
    data.write_text("text,label\n" + "".join(f"{w},{'pos' if i % 2 else 'neg'}\n"
                                             for i, w in enumerate(["x", "y", "z", "w"] * 10)))  # one token each
    assert main(["train", "--task", "classify", "--data", str(data), "--preset", "tiny",
                 "--run-dir", str(tmp_path / "run")]) == 0
    assert "Word vectors skipped" in capsys.readouterr().out
    assert (tmp_path / "run" / "metrics.json").exists()


def test_a_progress_line_is_printed_before_the_counting(capsys, monkeypatch):
    """On a file of hundreds of MB the counting and the SVD ran ~40 s with nothing printed: a classifier's
    training said "Word vectors: ..." only once they were done."""
    printed_before = []
    count = word_vectors.cooccurrence

    def watched(*args, **kwargs):  # the long step: what was printed by the time it starts
        printed_before.append(capsys.readouterr().out)
        return count(*args, **kwargs)

    monkeypatch.setattr(word_vectors, "cooccurrence", watched)
    ids, splits = zipf_corpus(2_000, 40)
    word_vectors.word_vectors(ids, splits, vocabulary_size=50, dim=4, window=3)
    assert printed_before == ["Word vectors: counting the co-occurrences of 2,000 tokens in 41 documents "
                              "(window 3), then a rank-4 SVD\n"]


@pytest.mark.parametrize("flags", [["--steps", "5"], ["--epochs", "2"], ["--batch-size", "8"],
                                   ["--learning-rate", "0.1"], ["--jit-compile"], ["--strategy", "mirrored"],
                                   ["--precision", "mixed_bfloat16"]])
def test_vectors_refuse_the_training_flags_they_have_no_use_for(tmp_path, capsys, flags):
    """--objective vectors trains no step: --epochs, --strategy and --precision were accepted and ignored,
    --steps and the others refused as unknown settings of 'vectors' (not the flags the user gave)."""
    from tfllm.cli import main

    corpus = tmp_path / "reviews.txt"
    corpus.write_text("\n".join(REVIEWS) + "\n")
    assert main(["pretrain", "--objective", "vectors", "--data", str(corpus), "--preset", "tiny", *flags,
                 "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"{flags[0]} is not for --objective vectors" in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_evaluate_on_a_pretraining_run_of_an_encoder_points_at_its_figures_and_fine_tuning(tmp_path, capsys):
    """`tfllm evaluate` on a vectors run said "train one with `tfllm train --task generate`". (A masked-LM run is
    scored: tests/test_models.py.)"""
    from tfllm.cli import main

    corpus = tmp_path / "reviews.txt"
    corpus.write_text("\n".join(REVIEWS * 3) + "\n")
    run = tmp_path / "word vectors"  # the hints quote it: a command to paste (they did not)
    assert main(["pretrain", "--objective", "vectors", "--data", str(corpus), "--preset", "tiny",
                 "--run-dir", str(run)]) == 0
    assert f"--from-preset '{run}' ..." in capsys.readouterr().out
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert "metrics.json" in err and f"--from-preset '{run}'" in err and "--task generate" not in err, err
    assert err.count("\n") == 1
