"""Writes the walkthrough notebooks from the cell sources below.

The notebooks are generated, not edited by hand, so a change to one is a
readable diff of this file. Run from anywhere:

    python notebooks/make_notebooks.py

and commit this script together with the `.ipynb` files (without outputs).
`tests/test_notebooks.py` executes every notebook in its QUICK setting.
"""

import os
import textwrap

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))

QUICK_CELL = """\
# QUICK = True runs in about a minute or two on a 2-core CPU (a slice of the data,
# a few steps); set it to False for the full run the prose describes.
QUICK = True"""

SETUP = """\
%matplotlib inline
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO and WARNING lines (TensorFlow 2.21
# still prints INFO lines as it loads, tensorflow/tensorflow#66750: see docs/architecture.md)
import tfllm  # before TensorFlow: without a GPU, no failed CUDA probe in the log"""


def md(source):
    return nbformat.v4.new_markdown_cell(textwrap.dedent(source).strip())


def code(*parts):
    """A code cell; several parts (e.g. the shared setup and the notebook's imports) become one cell."""
    return nbformat.v4.new_code_cell("\n\n".join(textwrap.dedent(p).strip() for p in parts))


# --------------------------------------------------------------------------
# 01: the article's classifier
# --------------------------------------------------------------------------

CLASSIFICATION = [
    md("""
        # Text classification with a Transformer, the article's way

        **Description:** build the article's Keras model (an `Embedding`, a
        `Transformer` block stack and a sigmoid `Dense`), train it on movie
        reviews with `model.fit`, watch it in TensorBoard and evaluate it.

        The article calls `keras.layers.Transformer`, which Keras does not
        have; `tfllm.Transformer` is that layer (KerasHub `TransformerEncoder`
        blocks, sine positions, masked mean pooling). Everything else below is
        plain Keras plus a few `tfllm` helpers for data, tokenization and reports.
    """),
    code(QUICK_CELL),
    md("""
        ## Setup
    """),
    code(SETUP, """

        import shutil

        import keras
        import numpy as np
        from keras.layers import Dense, Embedding, Input
        from keras.models import Model
        from keras.optimizers import Adam

        from tfllm import Transformer, classification_report, load_classification_data, resolve_preset, train_tokenizer
        from tfllm.training import reporting

        keras.utils.set_random_seed(1337)"""),
    md("""
        ## Hyperparameters

        The article's values live in tfllm's `article` preset: a 10,000-token
        vocabulary, 100 tokens per review, 128-wide embeddings, 2 Transformer
        blocks with a 512-wide feed-forward layer, Adam at 1e-3, batches of 32,
        10 epochs. QUICK takes 500 reviews (422 of them train, the rest validate
        and test) and trains two epochs: enough to see every step work, not
        enough to learn much (expect scores near chance).
    """),
    code("""
        preset = resolve_preset("classify", "article")
        VOCAB_SIZE = preset["vocabulary_size"]
        SEQUENCE_LENGTH = preset["sequence_length"]
        EMBEDDING_DIM = preset["hidden_dim"]
        NUM_LAYERS = preset["num_layers"]
        DFF = preset["intermediate_dim"]
        LEARNING_RATE = preset["learning_rate"]
        BATCH_SIZE = preset["batch_size"]
        EPOCHS = 2 if QUICK else preset["epochs"]
        MAX_ROWS = 500 if QUICK else None  # None: all 12,752 reviews
        RUN_DIR = "runs/01_text_classification"

        shutil.rmtree(RUN_DIR, ignore_errors=True)  # a fresh run: TensorBoard shows this one only"""),
    md("""
        ## Load the data

        The bundled Rotten Tomatoes reviews (fresh / rotten) come with a
        movie-disjoint train / validation / test split, so no film's reviews
        are in two splits.
    """),
    code("""
        data = load_classification_data("rotten_tomatoes", max_rows=MAX_ROWS)
        if len(data.label_names) != 2:  # a sigmoid unit trains on any labels without complaint, and learns nonsense
            raise ValueError(
                f"this notebook's model is a binary classifier (one sigmoid unit); the data has {len(data.label_names)} "
                f"labels {data.label_names}: for more classes use tfllm.train_classifier (or `tfllm train --task classify "
                f"--data FILE`), whose softmax head takes any number of labels"
            )
        print(f"{len(data.train)} train, {len(data.val)} validation, {len(data.test)} test reviews; labels {data.label_names}")
        for text, label in list(zip(data.train.texts, data.train.labels))[:3]:
            print(f"{data.label_names[label]:>7}: {text}")"""),
    md("""
        ## Train a tokenizer

        A WordPiece vocabulary learned from the training reviews only. The
        tokenizer pads and truncates to `SEQUENCE_LENGTH`; id 0 is padding.
    """),
    code("""
        tokenizer = train_tokenizer(data.train.texts, "wordpiece", VOCAB_SIZE, sequence_length=SEQUENCE_LENGTH)
        vocab_size = tokenizer.vocabulary_size()  # may be below VOCAB_SIZE on a small corpus
        sample = "An unexpectedly moving film."
        ids = np.asarray(tokenizer([sample]))[0]
        print("vocabulary:", vocab_size, "tokens")
        print([tokenizer.id_to_token(int(i)) for i in ids if i])

        X_train, y_train = np.asarray(tokenizer(data.train.texts)), np.array(data.train.labels)
        X_val, y_val = np.asarray(tokenizer(data.val.texts)), np.array(data.val.labels)
        X_test, y_test = np.asarray(tokenizer(data.test.texts)), np.array(data.test.labels)
        X_train.shape"""),
    md("""
        ## Build the model

        The article's code, with only the import of `Transformer` changed.
    """),
    code("""
        inputs = Input(shape=(SEQUENCE_LENGTH,))
        embedding = Embedding(vocab_size, EMBEDDING_DIM)(inputs)
        transformer = Transformer(num_layers=NUM_LAYERS, d_model=EMBEDDING_DIM, dff=DFF)(embedding)
        outputs = Dense(1, activation="sigmoid")(transformer)
        model = Model(inputs=inputs, outputs=outputs)
        model.compile(
            optimizer=Adam(learning_rate=LEARNING_RATE),
            loss="binary_crossentropy",
            metrics=["accuracy", keras.metrics.Precision(name="precision"), keras.metrics.Recall(name="recall")],
        )
        model.summary()"""),
    md("""
        ## Train

        `model.fit` with validation data and the TensorBoard callback. Run
        `tensorboard --logdir runs/` in a terminal to watch the curves while it trains.
    """),
    code("""
        history = model.fit(
            X_train,
            y_train,
            batch_size=BATCH_SIZE,
            epochs=EPOCHS,
            validation_data=(X_val, y_val),
            callbacks=[keras.callbacks.TensorBoard(os.path.join(RUN_DIR, "logs"))],
            verbose=2,  # one line per epoch
        )"""),
    code("""
        reporting.plot_history(history)"""),
    md("""
        ## Evaluate

        Accuracy, precision, recall and F1 of the positive label (`fresh`),
        ROC-AUC and the confusion matrix on the held-out test reviews. The
        sigmoid gives P(fresh); the report wants one column per class.
    """),
    code("""
        p_fresh = model.predict(X_test, verbose=0)
        report = classification_report(y_test, np.hstack([1 - p_fresh, p_fresh]), data.label_names)
        for name in ("accuracy", "precision", "recall", "f1", "roc_auc"):
            print(f"{name:>9}: {report[name]:.3f}")"""),
    code("""
        reporting.plot_confusion_matrix(report, title="test reviews")"""),
    md("""
        ## Everything into TensorBoard

        One call adds the run's hyperparameters and final metrics (HParams
        tab), the token embeddings with their tokens (Projector tab) and a
        PNG of the curves next to the logs.
    """),
    code("""
        hparams = dict(preset, epochs=EPOCHS, max_rows=MAX_ROWS or 0)
        reporting.write_run_report(RUN_DIR, model, tokenizer, hparams, history.history, {"test": report})
        sorted(os.listdir(os.path.join(RUN_DIR, "logs")))"""),
    md("""
        ## Predict your own sentences
    """),
    code("""
        sentences = [
            "A joyous, moving film with a terrific cast.",
            "Tedious, overlong and never once funny.",
            "It looks great, but the story goes nowhere.",
        ]
        for sentence, p in zip(sentences, model.predict(np.asarray(tokenizer(sentences)), verbose=0)[:, 0]):
            print(f"{p:.2f} {data.label_names[1]}  {sentence}")  # the sigmoid gives P(second label)"""),
    md("""
        ## Next

        `tfllm train --task classify --data rotten_tomatoes --preset article` does all of the above
        from the command line and writes a run directory that
        `tfllm export` turns into a SavedModel for TF Serving
        (notebook 03). The `default` preset is tuned for this small dataset
        and scores higher than the article's settings.
    """),
]


# --------------------------------------------------------------------------
# 04: a language without spaces
# --------------------------------------------------------------------------

MULTILINGUAL = [
    md("""
        # Classifying text without spaces: Chinese reviews

        **Description:** the same classifier on Chinese, where words are not
        separated by spaces, and what each tokenizer makes of such text.

        A tokenizer that splits on whitespace would see a whole Chinese
        sentence as one "word". tfllm's WordPiece tokenizer splits CJK
        ideographs into one token each (as BERT's does), the character
        tokenizer works for any script, and SentencePiece learns multi-character
        pieces from the data itself. We write a small labelled set of short
        Chinese reviews, train a classifier on it with one call, and look inside.
    """),
    code(QUICK_CELL),
    code(SETUP, """

        import csv
        import itertools
        import random
        import shutil

        from tfllm import TrainConfig, load_run, train_classifier, train_tokenizer
        from tfllm.training import reporting
        from tfllm.training.classifier import predict_probabilities"""),
    md("""
        ## Hyperparameters
    """),
    code("""
        TOKENIZER = "wordpiece"  # or "char", "sentencepiece"
        EPOCHS = 6 if QUICK else 20
        OVERRIDES = dict(vocabulary_size=400, sequence_length=24, hidden_dim=32, intermediate_dim=64,
                         num_heads=2, num_layers=1, dropout=0.1, learning_rate=3e-3, batch_size=16,
                         early_stopping=False)
        DATA_FILE = "data/chinese_reviews.csv"
        RUN_DIR = "runs/04_multilingual"
    """),
    md("""
        ## A small Chinese dataset

        Subjects (this film, this restaurant, the service, ...) combined with
        a positive or a negative verdict give 144 short reviews. It is a toy,
        but it is real Chinese text, written without spaces. (The label names
        are English only because matplotlib's default font has no Chinese glyphs.)
    """),
    code("""
        subjects = ["这部电影", "这家餐厅", "这本书", "这个手机", "他们的服务", "演员的表演", "这个故事", "这里的音乐",
                    "这家酒店", "这款游戏", "老师的课", "这次旅行"]
        positive = ["非常好看", "让人感动", "值得推荐", "真是太棒了", "很有意思", "我特别喜欢"]
        negative = ["太无聊了", "让人失望", "完全是浪费时间", "质量很差", "一点也不好", "我很不喜欢"]
        rows = [(s + v + "。", "positive") for s, v in itertools.product(subjects, positive)]
        rows += [(s + v + "。", "negative") for s, v in itertools.product(subjects, negative)]
        random.Random(0).shuffle(rows)

        os.makedirs(os.path.dirname(DATA_FILE), exist_ok=True)
        with open(DATA_FILE, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
        print(len(rows), "reviews, e.g.", rows[:3])"""),
    md("""
        ## What the tokenizers see

        The same sentence through each tokenizer kind, each trained on our
        reviews. WordPiece gives one token per ideograph and keeps the
        punctuation apart; SentencePiece finds recurring multi-character
        pieces (whole words, often) in the training text.
    """),
    code("""
        texts = [text for text, _ in rows]
        sentence = "这部电影让人感动。"
        for kind in ("wordpiece", "char", "sentencepiece"):
            tokenizer = train_tokenizer(texts, kind, vocabulary_size=120)
            ids = [int(i) for i in tokenizer(sentence)]
            tokens = [tokenizer.id_to_token(i) for i in ids]
            print(f"{kind:>13}: {len(tokens):2d} tokens  {' | '.join(tokens)}")

        # Characters never seen in training become [UNK] (精彩 "brilliant" is not in our reviews).
        tokenizer = train_tokenizer(texts, "wordpiece", vocabulary_size=120)
        print([tokenizer.id_to_token(int(i)) for i in tokenizer("这部电影很精彩。")])"""),
    md("""
        ## Train

        `train_classifier` reads the CSV, makes a stratified train / validation
        / test split, trains the tokenizer and the model, evaluates it and
        writes the run directory (model, tokenizer, metrics, TensorBoard logs
        and a PNG of the curves).
    """),
    code("""
        shutil.rmtree(RUN_DIR, ignore_errors=True)
        config = TrainConfig(data=DATA_FILE, run_dir=RUN_DIR, preset="default", tokenizer=TOKENIZER,
                             epochs=EPOCHS, overrides=OVERRIDES)
        metrics = train_classifier(config, verbose=0)
        print({k: round(v, 3) for k, v in metrics["test"].items() if k in ("accuracy", "precision", "recall", "f1")})"""),
    code("""
        from IPython.display import Image

        Image(os.path.join(RUN_DIR, "training_curves.png"))"""),
    code("""
        reporting.plot_confusion_matrix(metrics["test"], title="test reviews")"""),
    md("""
        ## Predict

        Sentences the model has not seen: every subject-verdict combination is in
        the data above, so these reorder a review, add a word or change a subject.
    """),
    code("""
        model, label_names, _ = load_run(RUN_DIR)  # the task, with its preprocessor (tokenizer + packing)
        sentences = ["我特别喜欢这家餐厅。", "这本书让人很失望。", "他们的音乐让人感动。", "这个游戏太无聊了。"]
        for sentence, p in zip(sentences, predict_probabilities(model, sentences)):
            print(f"{label_names[p.argmax()]} ({p.max():.2f})  {sentence}")"""),
    md("""
        ## Next

        The token-embedding projector in TensorBoard (`tensorboard --logdir runs/`,
        Projector tab) shows the ideographs with their learned embeddings:
        after training, the characters of positive and negative verdicts drift apart.
    """),
]


# --------------------------------------------------------------------------
# 02: a small GPT on Shakespeare
# --------------------------------------------------------------------------

GENERATION = [
    md("""
        # Text generation: a small GPT on Shakespeare

        **Description:** train a character-level, decoder-only Transformer
        (nanoGPT's `shakespeare_char` recipe) with `model.fit`, follow its loss
        and perplexity, then generate text with each sampler and see what
        temperature and top-p do.

        The model is `tfllm.models.CausalLM`, a KerasHub `CausalLM` subclass:
        token and position embeddings, causal decoder blocks (nanoGPT's bias-free
        block; KerasHub's `TransformerDecoder` with `use_bias=True`) and a
        softmax over the characters, trained with Adam(W) and sparse categorical
        cross-entropy on the next character.
    """),
    code(QUICK_CELL),
    code(SETUP, """
        import math
        import shutil

        import keras
        import matplotlib.pyplot as plt
        import numpy as np

        from tfllm import data as data_lib, resolve_preset, train_tokenizer
        from tfllm.datasets.text import load_text_corpus
        from tfllm.generation import SAMPLERS, Generator
        from tfllm.training import reporting
        from tfllm.training.causal_lm import TextSamples, build_causal_lm, evaluate_loss
        from tfllm.training.common import Perplexity

        keras.utils.set_random_seed(1337)
    """),
    md("""
        ## Hyperparameters

        The full setting is nanoGPT's documented CPU run (preset `nanogpt-cpu`):
        4 blocks of width 128 with 4 heads, a 64-character context, batches of
        12 for 2,000 steps, AdamW with warm-up and cosine decay. QUICK shrinks
        it to 2 blocks of width 64, a 32-character context and 600 steps on the
        first 200,000 characters: enough for "the", "thou" and speaker names,
        not for sentences.
    """),
    code("""
        QUICK_OVERRIDES = dict(
            num_layers=2, hidden_dim=64, intermediate_dim=256, batch_size=16,
            sequence_length=32,  # past the context generation keeps 3/4 of it, as the preset does (24 of 32, 48 of 64)
            steps=600, eval_interval=200, eval_windows=64, warmup_steps=20, learning_rate=3e-3, min_learning_rate=3e-4,
            jit_compile=False,  # XLA pays for its compile time over 2,000 steps, not over 600
        )
        preset = resolve_preset("generate", "nanogpt-cpu", QUICK_OVERRIDES if QUICK else None)
        STEPS, EVAL_INTERVAL = preset["steps"], preset["eval_interval"]  # EVAL_INTERVAL steps make one Keras epoch
        SEQUENCE_LENGTH, BATCH_SIZE = preset["sequence_length"], preset["batch_size"]
        MAX_CHARACTERS = 200_000 if QUICK else None  # None: all 1.2 M characters
        NEW_TOKENS = 100 if QUICK else 300  # characters per generated sample
        PROMPT = "ROMEO:\\n"
        RUN_DIR = "runs/02_text_generation"

        shutil.rmtree(RUN_DIR, ignore_errors=True)  # a fresh run: TensorBoard shows this one only
    """),
    md("""
        ## Data and tokenizer

        The complete works of Shakespeare as one string; the last 10% is the
        validation text. The tokenizer is one token per character, over the
        characters the training text contains.
    """),
    code("""
        train_text, val_text = load_text_corpus("shakespeare")
        if MAX_CHARACTERS:
            train_text, val_text = train_text[:MAX_CHARACTERS], val_text[: MAX_CHARACTERS // 9]
        print(f"{len(train_text):,} training and {len(val_text):,} validation characters")
        print(train_text[:200])

        tokenizer = train_tokenizer([train_text], "char", preset["vocabulary_size"], lowercase=False)
        print(tokenizer.vocabulary_size(), "tokens:", repr("".join(tokenizer.get_vocabulary()[5:])))
    """),
    md("""
        Training batches are random 64-character windows (32 in QUICK) whose
        targets are the same windows shifted by one character; validation uses
        consecutive windows.
    """),
    code("""
        train_ids = data_lib.tokenize_corpus(tokenizer, train_text)
        val_ids = data_lib.tokenize_corpus(tokenizer, val_text)
        train_ds = data_lib.random_window_dataset(train_ids, SEQUENCE_LENGTH, BATCH_SIZE, seed=1337)
        val_ds = data_lib.sequential_window_dataset(val_ids, SEQUENCE_LENGTH, BATCH_SIZE, max_windows=preset["eval_windows"])
        inputs, targets = next(iter(train_ds))
        print("inputs: ", inputs["token_ids"][0, :12].numpy())
        print("targets:", targets[0, :12].numpy())
    """),
    md("""
        ## The model
    """),
    code("""
        model = build_causal_lm(preset, tokenizer)
        # The windows above are token ids already; without this, KerasHub's `fit` would run the
        # model's preprocessor (tokenizer + packing, for raw strings) over them again.
        model.preprocessor = None
        model.summary()
    """),
    md("""
        ## Train

        A Keras "epoch" here is `EVAL_INTERVAL` steps, after which the
        validation windows are scored, `Perplexity` adds exp(loss) to the logs
        and `TextSamples` writes a generated sample to TensorBoard's Text tab.
    """),
    code("""
        log_dir = os.path.join(RUN_DIR, "logs")
        shutil.rmtree(log_dir, ignore_errors=True)  # rerunning this cell: one set of curves in TensorBoard, not two
        history = model.fit(
            train_ds,
            steps_per_epoch=EVAL_INTERVAL,
            epochs=STEPS // EVAL_INTERVAL,
            validation_data=val_ds,
            callbacks=[Perplexity(), TextSamples(log_dir, tokenizer, PROMPT), keras.callbacks.TensorBoard(log_dir)],
            shuffle=False,  # the windows are drawn at random already (Keras cannot shuffle a tf.data pipeline)
            verbose=2,
        )
    """),
    code("""
        reporting.plot_history(history)
    """),
    md("""
        On the whole validation text: the loss in nats per character, its
        perplexity (the model is as unsure as a uniform choice among this many
        characters) and bits per character.
    """),
    code("""
        val_loss = evaluate_loss(model, val_ids, SEQUENCE_LENGTH)
        metrics = {"val": {"loss": val_loss, "perplexity": math.exp(val_loss), "bits_per_character": val_loss / math.log(2)}}
        print({k: round(v, 3) for k, v in metrics["val"].items()})
        reporting.write_run_report(RUN_DIR, model, tokenizer, preset, history.history, metrics)
    """),
    md("""
        ## Generate with each sampler

        `Generator` runs KerasHub's cached decoding loop: greedy takes the most
        likely character, `top_k` samples among the 50 most likely (`top_k=50`;
        the default, 200, is more than this vocabulary has, so it would sample
        as `random` does), `top_p` among the smallest set holding 90% of the
        probability, `random` from the whole distribution, and `beam` keeps the
        4 most likely continuations. `top_k`, `top_p` and `random` draw at
        temperature 0.8 (`tfllm generate`'s default; the next section shows what
        temperature does). The same seed gives the same text.
    """),
    code("""
        generator = Generator(model, tokenizer, jit_compile=preset["jit_compile"])
        sampling = dict(temperature=0.8, seed=0)  # an option a sampler does not read is refused, not ignored
        OPTIONS = {"greedy": {}, "top_k": dict(sampling, top_k=50), "top_p": dict(sampling, top_p=0.9),
                   "random": sampling, "beam": dict(num_beams=4)}
        for sampler in SAMPLERS:
            text = generator.generate([PROMPT], max_new_tokens=NEW_TOKENS, sampler=sampler, **OPTIONS[sampler])[0]
            print(f"--- {sampler}\\n{PROMPT}{text}\\n")
    """),
    md("""
        ## Temperature and top-p

        Temperature divides the logits before the softmax: below 1 it sharpens
        the distribution towards the likeliest characters, above 1 it flattens
        it. Top-p then drops the unlikely tail. Here is the distribution of the
        character after the prompt, at three temperatures:
    """),
    code("""
        ids = generator.encode(PROMPT)[-SEQUENCE_LENGTH:]
        logits = keras.ops.convert_to_numpy(model({"token_ids": ids[None], "padding_mask": np.ones_like(ids)[None]}))[0, -1]
        vocabulary = [repr(str(t))[1:-1] for t in tokenizer.get_vocabulary()]  # "\\n", not a line break
        top = np.argsort(logits)[::-1][:15]

        fig, ax = plt.subplots(figsize=(10, 3), layout="constrained")
        for i, temperature in enumerate((0.5, 1.0, 1.5)):
            p = np.exp(logits / temperature - np.max(logits / temperature))
            ax.bar(np.arange(len(top)) + (i - 1) * 0.27, (p / p.sum())[top], width=0.27, label=f"temperature {temperature}")
        ax.set_xticks(range(len(top)), [vocabulary[i] for i in top])
        ax.set_ylabel("probability of the next character")
        ax.legend()
        plt.show()
    """),
    code("""
        for temperature in (0.5, 1.0, 1.5):
            text = generator.generate([PROMPT], max_new_tokens=NEW_TOKENS, sampler="random", temperature=temperature, seed=0)[0]
            print(f"--- temperature {temperature}\\n{PROMPT}{text}\\n")
        for top_p in (0.5, 0.9, 1.0):
            text = generator.generate([PROMPT], max_new_tokens=NEW_TOKENS, sampler="top_p", top_p=top_p, seed=0)[0]
            print(f"--- top_p {top_p}\\n{PROMPT}{text}\\n")
    """),
    md("""
        ## Next

        `tfllm train --task generate --data shakespeare --preset nanogpt-cpu --run-dir runs/shakespeare`
        is this training from the command line, and writes a run directory
        (model, tokenizer, recipe) that `tfllm generate runs/shakespeare "ROMEO:"`
        samples from and notebook 03 serves. This notebook's own
        `runs/02_text_generation` holds only its logs and curves, not a model
        to generate from.
    """),
]


# --------------------------------------------------------------------------
# 03: SavedModels, the local server, TFLite
# --------------------------------------------------------------------------

EXPORT_AND_SERVE = [
    md("""
        # Export and serve: TF Serving and TFLite

        **Description:** export a classifier and a text generator as
        SavedModels, serve them with tfllm's local TF-Serving-compatible server,
        call them with TF Serving's REST and gRPC protocols (tfllm's clients
        and plain HTTP), then export both to TFLite and check that the phone
        models give the same answers.

        The SavedModels take strings in and give strings and numbers out: the
        tokenizer is inside the graph, so clients send raw text. A real
        `tensorflow_model_server` pointed at the same `savedmodels/` folder
        serves them unchanged.
    """),
    code(QUICK_CELL),
    code(SETUP, """
        import json
        import shutil
        import socket
        import subprocess
        import sys
        import time
        import urllib.request

        import matplotlib.pyplot as plt
        import numpy as np

        from tfllm import TrainConfig, export_classifier, train_classifier
        from tfllm.export.causal_lm import export_causal_lm
        from tfllm.export.tflite import export_tflite, load_interpreter, read_parity, run_signature
        from tfllm.export.tflite_causal_lm import generate_text
        from tfllm.serving import GrpcClient, RestClient, ServingError, format_models, list_models
        from tfllm.training.causal_lm import train_causal_lm
    """),
    md("""
        ## Hyperparameters

        Two runs to export: notebooks 01 and 02 show training itself, so here
        it is one call each. QUICK trains tiny models for a few seconds; the
        generator's vocabulary is raised from the `tiny` preset's 50 characters
        to 80, room for every character of the text (with 50, some became
        `[UNK]` and a warning said so).
    """),
    code("""
        CLASSIFIER = TrainConfig(data="rotten_tomatoes", preset="tiny" if QUICK else "default",
                                 max_rows=600 if QUICK else None, run_dir="runs/03_reviews",
                                 overwrite=True)  # rerunning the notebook replaces its earlier runs
        GENERATOR = TrainConfig(task="generate", data="shakespeare", preset="tiny" if QUICK else "nanogpt-cpu",
                                steps=40 if QUICK else None, max_rows=20_000 if QUICK else None,
                                jit_compile=False if QUICK else None, run_dir="runs/03_shakespeare", overwrite=True,
                                # tiny's 50 characters leave some of Shakespeare's out: room for all of them
                                overrides={"vocabulary_size": 80} if QUICK else {})
        SAVEDMODELS = "savedmodels"  # TF Serving's model_base_path: savedmodels/NAME/VERSION/
        REVIEWS = ["A joyous, moving film with a terrific cast.", "Tedious, overlong and never once funny."]
        PROMPT = "ROMEO:"
    """),
    md("""
        ## Train and export
    """),
    code("""
        shutil.rmtree(SAVEDMODELS, ignore_errors=True)
        metrics = train_classifier(CLASSIFIER, verbose=0)
        train_causal_lm(GENERATOR, verbose=0)

        reviews_dir = export_classifier(CLASSIFIER.run_dir, "reviews", base_dir=SAVEDMODELS)
        shakespeare_dir = export_causal_lm(GENERATOR.run_dir, "shakespeare", base_dir=SAVEDMODELS)
        print(format_models(list_models(SAVEDMODELS)))
    """),
    md("""
        ## Start the server

        `python -m tfllm.serving.server savedmodels/` (or `tfllm serve`) in a
        subprocess, on free ports. It loads every version under
        `savedmodels/NAME/`, replays each export's warm-up requests, and
        reports a model `AVAILABLE` when it is ready, as TF Serving does.
    """),
    code("""
        def free_port():
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                return s.getsockname()[1]


        REST_PORT, GRPC_PORT = free_port(), free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "tfllm.serving.server", SAVEDMODELS, "--port", str(REST_PORT), "--grpc-port", str(GRPC_PORT)]
        )
        rest = RestClient("localhost", REST_PORT)


        def available(name):
            try:
                return rest.status(name)["model_version_status"][0]["state"] == "AVAILABLE"
            except (OSError, ServingError):  # not listening yet, or still loading
                return False


        deadline = time.time() + 300
        while not (available("reviews") and available("shakespeare")):
            if server.poll() is not None or time.time() > deadline:
                raise RuntimeError("the server did not start; see its output above")
            time.sleep(0.5)
        print(json.dumps(rest.status("reviews"), indent=1))
    """),
    md("""
        ## Call it

        With tfllm's REST client, columnar (`inputs`) format:
    """),
    code("""
        served = rest.predict("reviews", {"text": REVIEWS})
        for review, label, score in zip(REVIEWS, served["label"], served["score"]):
            print(f"{label} ({score:.2f})  {review}")
    """),
    md("""
        With plain HTTP, row (`instances`) format, exactly what
        `curl -d '{"instances": [...]}' localhost:8501/v1/models/shakespeare:predict`
        sends. The generator's `serving_default` takes the decoding options
        per row; temperature 0 is greedy.
    """),
    code("""
        body = {"instances": [{"prompt": PROMPT, "max_new_tokens": 60, "temperature": 0.8, "top_k": 50, "top_p": 1.0, "seed": 0}]}
        request = urllib.request.Request(
            f"http://localhost:{REST_PORT}/v1/models/shakespeare:predict",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request) as response:
            print(json.load(response)["predictions"][0]["text"])
    """),
    md("""
        And over gRPC, with `tensorflow-serving-api`'s `PredictionService`:
    """),
    code("""
        with GrpcClient("localhost", GRPC_PORT) as grpc_client:
            greedy = grpc_client.predict("shakespeare", {"prompt": [PROMPT], "max_new_tokens": [60]}, signature_name="greedy")
            grpc_reviews = grpc_client.predict("reviews", {"text": REVIEWS})
        served_greedy = greedy["completion"][0]
        print(PROMPT + served_greedy)
        print("gRPC and REST probabilities equal:", np.allclose(grpc_reviews["probabilities"], served["probabilities"]))
    """),
    md("""
        ## TFLite

        `export_tflite` converts a run for phones: the classifier as
        `model.tflite` (token ids in) and `model_text.tflite` (raw text in,
        TensorFlow Text's tokenizer ops inside), the generator as prefill and
        decode signatures with its key/value cache. Each export measures its
        own agreement with the Keras model (`parity.json`); below we also
        compare it with what the server answered.
    """),
    code("""
        tflite_reviews = export_tflite(CLASSIFIER.run_dir, "reviews", out="tflite/reviews")
        tflite_shakespeare = export_tflite(GENERATOR.run_dir, "shakespeare", out="tflite/shakespeare")
        print(read_parity(tflite_reviews))
    """),
    code("""
        interpreter = load_interpreter(os.path.join(tflite_reviews, "model_text.tflite"))
        on_device = run_signature(interpreter, text=np.array(REVIEWS))["probabilities"]
        difference = np.abs(on_device - np.asarray(served["probabilities"])).max()
        print(f"TFLite and TF Serving probabilities agree to {difference:.1e}")

        tflite_text = generate_text(os.path.join(tflite_shakespeare, "model.tflite"), PROMPT, max_new_tokens=60)
        print("TFLite and TF Serving greedy text agree:", tflite_text == served_greedy)
    """),
    md("""
        Sizes on disk, SavedModel against TFLite:
    """),
    code("""
        def size_mb(path):
            files = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs] if os.path.isdir(path) else [path]
            return sum(os.path.getsize(f) for f in files) / 1e6


        sizes = {
            "reviews SavedModel": size_mb(reviews_dir),
            "reviews model_text.tflite": size_mb(os.path.join(tflite_reviews, "model_text.tflite")),
            "shakespeare SavedModel": size_mb(shakespeare_dir),
            "shakespeare model.tflite": size_mb(os.path.join(tflite_shakespeare, "model.tflite")),
        }
        fig, ax = plt.subplots(figsize=(7, 2.5), layout="constrained")
        ax.barh(list(sizes), list(sizes.values()))
        ax.set_xlabel("MB")
        plt.show()
    """),
    md("""
        ## Stop the server
    """),
    code("""
        rest.close()
        server.terminate()
        server.wait(timeout=30)
        print("server stopped:", server.poll() is not None)
    """),
]


# --------------------------------------------------------------------------
# 05: translation with an encoder-decoder
# --------------------------------------------------------------------------

TRANSLATION = [
    md("""
        # Translation: a Transformer encoder–decoder on CC-CEDICT

        **Description:** train a sequence-to-sequence Transformer to translate
        Chinese dictionary headwords into English glosses, score it with chrF
        and BLEU against every gloss, and compare greedy decoding with beam search.

        The model is `tfllm.models.Seq2SeqLM`, a KerasHub `Seq2SeqLM`: the
        source goes through `TransformerEncoder` blocks; the target, shifted
        right, through `TransformerDecoder` blocks that attend to their own past
        (causal self-attention) and to the encoder's output (cross-attention).
        It learns with teacher forcing and cross-entropy on the next target
        token. Decoding encodes the source once and runs one cached decoder
        step per new token, with any KerasHub sampler.
    """),
    code(QUICK_CELL),
    code(SETUP, """
        import json
        import shutil

        import matplotlib.pyplot as plt
        from IPython.display import Image

        from tfllm import TrainConfig
        from tfllm.datasets.pairs import load_pair_data
        from tfllm.evaluation import translation_report
        from tfllm.training.seq2seq import train_seq2seq
        from tfllm.translation import load_translator"""),
    md("""
        ## Data

        The bundled `cedict` (CC-CEDICT, CC BY-SA 4.0) has 122,143 headwords
        with their pinyin and English glosses, split 90/5/5 by headword. A
        headword often has several glosses, joined by `/`: the first one is the
        training target, and all of them count as correct when scoring.
    """),
    code("""
        MAX_ROWS = 1000 if QUICK else None  # None: all 122,143 headwords
        data = load_pair_data("cedict", source_column="simplified", target_column="english", max_rows=MAX_ROWS)
        print(len(data.train), "training pairs,", len(data.val), "validation,", len(data.test), "test")
        for source, references in zip(data.train.sources[:5], data.train.references[:5]):
            print(source, "->", references)
    """),
    md("""
        ## Hyperparameters and training

        The full setting is the `default` preset (WordPiece over both
        languages, 2 + 2 blocks of width 128, label smoothing 0.1, AdamW with
        warm-up and cosine decay, stopped after 20 minutes); QUICK trains a
        narrower model on a sample for a few epochs. Both languages share one
        tokenizer: WordPiece gives every Chinese character its own token.
    """),
    code("""
        RUN_DIR = "runs/05_translation"
        QUICK_OVERRIDES = dict(vocabulary_size=3000, hidden_dim=64, intermediate_dim=128, num_heads=2,
                               num_layers=1, num_decoder_layers=1, batch_size=64, dropout=0.1, jit_compile=False)
        shutil.rmtree(RUN_DIR, ignore_errors=True)  # a fresh run: TensorBoard shows this one only
        config = TrainConfig(task="translate", data="cedict", source_column="simplified", target_column="english",
                             preset="default", run_dir=RUN_DIR, max_rows=MAX_ROWS,
                             epochs=3 if QUICK else 100,
                             overrides=QUICK_OVERRIDES if QUICK else {"max_train_seconds": 1200})
        metrics = train_seq2seq(config, verbose=2)
        print(json.dumps(metrics["test"], indent=2))
    """),
    md("""
        ## Training curves

        Loss and next-token accuracy on the training and validation pairs
        (teacher forcing: the decoder sees the true previous tokens).
    """),
    code("""
        Image(os.path.join(RUN_DIR, "training_curves.png"))
    """),
    md("""
        ## Greedy decoding and beam search

        Greedy decoding takes the most likely token at every step; beam search
        keeps the 4 most likely partial translations. Both reuse the encoder's
        output and the decoder's key/value cache.
    """),
    code("""
        translator = load_translator(RUN_DIR)
        N = 100 if QUICK else 1000
        sources, references = data.test.sources[:N], data.test.references[:N]
        greedy = translator.translate(sources, sampler="greedy", warn=False)
        beam = translator.translate(sources, sampler="beam", num_beams=4, warn=False)
        for i in range(8):
            print(f"{sources[i]}  greedy: {greedy[i]!r}  beam: {beam[i]!r}  references: {references[i][:3]}")
        reports = {"greedy": translation_report(greedy, references), "beam 4": translation_report(beam, references)}
        print(json.dumps(reports, indent=2))
    """),
    md("""
        In QUICK mode the model is far too small and trained too briefly to
        translate: expect repeated junk such as `'aaa'` and scores near 0.
        `QUICK = False` trains the `default` preset on all headwords for 20
        minutes, which gives real (if short) glosses.
    """),
    code("""
        fig, ax = plt.subplots(figsize=(6, 3))
        names = ["chrf", "bleu"]
        for offset, (decoder, report) in zip((-0.2, 0.2), reports.items()):
            ax.bar([i + offset for i in range(len(names))], [report[n] for n in names], width=0.4, label=decoder)
        ax.set_xticks(range(len(names)), names)
        ax.set_ylabel("score (0-100)")
        ax.set_title(f"test, first {len(sources)} headwords, all references")
        ax.legend()
        plt.show()
    """),
    md("""
        ## Next

        - `tfllm translate runs/05_translation "图书馆" --num-beams 4` from a shell.
        - `tfllm export runs/05_translation --name zh-en` writes a SavedModel whose
          `serving_default(source, max_new_tokens)` returns translations;
          `tfllm serve savedmodels` serves it over REST and gRPC.
        - `--source-column pinyin --target-column simplified` turns the same data
          into an input method: pinyin in, characters out.
    """),
]


NOTEBOOKS = {
    "01_text_classification.ipynb": CLASSIFICATION,
    "02_text_generation.ipynb": GENERATION,
    "03_export_and_serve.ipynb": EXPORT_AND_SERVE,
    "04_multilingual.ipynb": MULTILINGUAL,
    "05_translation.ipynb": TRANSLATION,
}


def build(cells):
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    return notebook


def main():
    for name, cells in NOTEBOOKS.items():
        notebook = build(cells)
        nbformat.validate(notebook)
        # Stable cell ids: regenerating an unchanged notebook gives an unchanged file.
        for i, cell in enumerate(notebook.cells):
            cell["id"] = f"cell-{i}"
        nbformat.write(notebook, os.path.join(HERE, name))
        print("wrote", os.path.join("notebooks", name))


if __name__ == "__main__":
    main()
