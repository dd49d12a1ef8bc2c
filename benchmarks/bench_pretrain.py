"""Few labels, where pretraining matters: does pretraining on unlabeled reviews pay?

    .venv/bin/python benchmarks/bench_pretrain.py --labels 250 500 1000 --seeds 0 1 2 3 4

The bundled `rotten_tomatoes` (binary), its own test split (1,320 reviews). For
each N and seed, N labelled reviews are drawn (stratified) from the training
split; 20% of them are held out as the validation split the trainer stops
early on, so no other label is used. Then, on the same N:

- `tfidf_lr`: TF-IDF of 1-2-grams fitted on all training texts (labels unused) +
  logistic regression (the issue's reference);
- `scratch`: tfllm's encoder (the `finetune` recipe's shape) trained from scratch,
  its tokenizer trained on the N texts;
- `pretrained_mlm`: the same encoder, masked-LM pretrained once on every text of the
  training split (11.4k, plot summaries included, labels unused) with
  `tfllm.training.pretraining.pretrain` (64 positions, a 4,000-piece vocabulary), then
  fine-tuned (`tfllm train --from-preset`); the pretraining's figures and time are in the JSON;
- `default`: the `default` recipe as it ships (narrow encoder, heavy word dropout, hashed
  bigrams, the naive-Bayes wide path), its tokenizer and word vectors trained on the N texts;
- `default_no_vectors`: the same from random embeddings (`--set word_vectors=false`, the
  recipe before stop 32);
- `default_self_train`: the same with `tfllm train --unlabeled rotten_tomatoes`, one command
  (`tfllm/training/self_training.py`): the tokenizer and word vectors learn from the N and
  the other training texts; a teacher, the `default` model trained on the N,
  labels the other training texts (their labels unused); the half it is surest of, in
  the labelled class ratio, joins the N and the recipe retrains (`--self-train-set` passes
  settings such as `self_training_teachers=3 self_training_rounds=2`; `--self-train-ensemble N`
  makes the student an N-seed ensemble).

- `default_vectors`: the `default` recipe fine-tuned from `tfllm pretrain --objective vectors`
  on every text of the training split (`--vectors-dir`, made once and reused; `--vectors-set`
  passes its settings): PPMI-SVD word vectors in the token embedding, that run's tokenizer;
- `default_vectors_self_train`: the same with `--unlabeled rotten_tomatoes` (self-training as
  above, teacher and student both from the vectors).

`--probe` adds a linear probe: logistic regression on the mean-pooled hidden states and
token embeddings of the masked-LM backbone against the same backbone with random weights,
which says whether pretraining put sentiment into the representation at all.

Writes `benchmarks/results/pretrain.json`: every row, the per-N means, the
pretraining's own figures and time, and the machine.
"""

import argparse
import contextlib
import csv
import gzip
import io
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

from bench_vs_torch import save_results  # standard library only
from tfllm.cli import main as tfllm_main
from tfllm.datasets import bundled_path

HERE = os.path.dirname(os.path.abspath(__file__))


def read_rows():
    with gzip.open(bundled_path("rotten_tomatoes.csv.gz"), "rt", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def draw(rows, n, seed):
    """N stratified labelled training rows (binary fresh/rotten), 20% of them marked val."""
    rng = np.random.default_rng(seed)
    train = [r for r in rows if r["split"] == "train" and r["label"] in ("fresh", "rotten")]
    chosen = []
    for label in ("fresh", "rotten"):
        pool = [r for r in train if r["label"] == label]
        share = round(n * len(pool) / len(train))
        chosen += [pool[i] for i in rng.choice(len(pool), share, replace=False)]
    rng.shuffle(chosen)
    n_val = max(2, len(chosen) // 5)
    return [dict(r, split="val") for r in chosen[:n_val]] + [dict(r, split="train") for r in chosen[n_val:]]


def write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label", "split"])
        writer.writeheader()
        for r in rows:
            writer.writerow({"text": r["text"], "label": r["label"], "split": r["split"]})


def cli(*argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = tfllm_main([str(a) for a in argv])
    if status:
        raise SystemExit(f"tfllm {' '.join(map(str, argv))} exited {status}")
    return out.getvalue()


def tfidf_lr(all_train_texts, labelled, test):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True).fit(all_train_texts)
    train = [r for r in labelled if r["split"] == "train"] + [r for r in labelled if r["split"] == "val"]
    model = LogisticRegression(C=4.0, max_iter=2000).fit(vectorizer.transform([r["text"] for r in train]),
                                                         [r["label"] for r in train])
    predicted = model.predict(vectorizer.transform([r["text"] for r in test]))
    return float(np.mean(predicted == np.array([r["label"] for r in test])))


def fine_tune(data_csv, run_dir, seed, from_preset=None, overrides=(), settings=()):
    argv = ["train", "--task", "classify", "--data", data_csv, "--split-column", "split", "--labels", "rotten,fresh",
            "--seed", seed, "--run-dir", run_dir]
    if "preset" not in dict(overrides):
        argv += ["--preset", "finetune"]
    if from_preset:
        argv += ["--from-preset", from_preset]
    for key, value in overrides:
        argv += [f"--{key}", value]
    for setting in settings:
        argv += ["--set", setting]
    start = time.perf_counter()
    cli(*argv)
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    row = {"test_accuracy": round(metrics["test"]["accuracy"], 4), "val_accuracy": round(metrics["val"]["accuracy"], 4),
           "epochs_run": metrics.get("epochs_run"), "seconds": round(time.perf_counter() - start, 1)}
    if "self_training" in metrics:  # the teacher's figures, and which of teacher and student is the run
        report = metrics["self_training"]
        row.update(teacher=report["teacher"], num_pseudo_labeled=report["num_pseudo_labeled"], kept=report["kept"])
        if "student" in report:
            row["student"] = report["student"]
    return row


def linear_probe(pretrain_dir, rows, labels, seeds, test):
    """Test accuracy of logistic regression on mean-pooled features: pretrained vs random weights."""
    import keras_hub
    from sklearn.linear_model import LogisticRegression

    import tfllm  # noqa: F401  (registers tfllm's classes)

    pretrained = keras_hub.models.Backbone.from_preset(pretrain_dir)
    random_init = type(pretrained).from_config(pretrained.get_config())
    preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(
        pretrain_dir, sequence_length=pretrained.get_config()["sequence_length"])

    def features(backbone, texts):
        x = preprocessor(texts)
        mask = np.asarray(x["padding_mask"], "float32")[..., None]
        hidden = backbone.predict(x, batch_size=256, verbose=0)
        embedded = np.asarray(backbone.token_embedding(x["token_ids"]))
        return np.concatenate([(hidden * mask).sum(1), (embedded * mask).sum(1)], -1) / mask.sum(1)

    out = {}
    for name, backbone in (("pretrained", pretrained), ("random_weights", random_init)):
        x_test = features(backbone, [r["text"] for r in test])
        for n in labels:
            scores = []
            for seed in seeds:
                drawn = [r for r in draw(rows, n, seed) if r["split"] == "train"]  # C is fixed: no val needed
                model = LogisticRegression(C=1.0, max_iter=3000).fit(
                    features(backbone, [r["text"] for r in drawn]), [r["label"] for r in drawn])
                scores.append(model.score(x_test, [r["label"] for r in test]))
            out.setdefault(name, {})[str(n)] = round(float(np.mean(scores)), 4)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=int, nargs="+", default=[250, 500, 1000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--pretrain-steps", type=int, default=3000)
    parser.add_argument("--pretrain-dir", default="runs/bench-pretrain-mlm", help="reused when it holds a finished run")
    parser.add_argument("--pretrain-vocabulary", type=int, default=4000)
    parser.add_argument("--vectors-dir", default="runs/bench-pretrain-vectors",
                        help="`tfllm pretrain --objective vectors` on the training texts; reused when finished")
    parser.add_argument("--vectors-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="settings of the word-vector pretraining (e.g. window=5)")
    parser.add_argument("--epochs", type=int, default=15, help="fine-tuning epochs (early stopping on the held-out 20%%)")
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--arms", nargs="+",
                        default=["tfidf_lr", "scratch", "pretrained_mlm", "default", "default_self_train"])
    parser.add_argument("--probe", action="store_true", help="linear probe of the pretrained backbone's features")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="recipe settings for both fine-tunes")
    parser.add_argument("--default-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="settings for the `default` arm (char_ngram_buckets=0: the recipe without its character view)")
    parser.add_argument("--pretrained-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="recipe settings for the pretrained fine-tune only (e.g. freeze_epochs=3)")
    parser.add_argument("--self-train-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="settings for default_self_train only (e.g. self_training_teachers=3 self_training_rounds=2)")
    parser.add_argument("--self-train-ensemble", type=int, default=1,
                        help="default_self_train's student: an ensemble of this many seeds (`tfllm train --ensemble`)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "pretrain.json"))
    args = parser.parse_args()

    rows = read_rows()
    test = [r for r in rows if r["split"] == "test" and r["label"] in ("fresh", "rotten")]
    all_train_texts = [r["text"] for r in rows if r["split"] == "train"]
    result = {"data": "rotten_tomatoes (binary), its test split", "num_test": len(test),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
              "date": time.strftime("%Y-%m-%d"), "command": "python " + " ".join(sys.argv),
              "settings": args.set, "pretrained_settings": args.pretrained_set,
              "self_train_settings": args.self_train_set, "self_train_ensemble": args.self_train_ensemble, "rows": []}

    if "pretrained_mlm" in args.arms or args.probe:
        from tfllm import runs

        from tfllm.config import TrainConfig
        from tfllm.training.pretraining import pretrain

        if not runs.is_finished(args.pretrain_dir):
            # Reviews are short (about 25 word pieces): 64 positions, and a smaller vocabulary
            # whose rows each get more updates from 11.4k texts.
            pretrain(TrainConfig(task="pretrain", objective="mlm", data="rotten_tomatoes", run_dir=args.pretrain_dir,
                                 steps=args.pretrain_steps, batch_size=64, overwrite=True,
                                 overrides={"sequence_length": 64, "vocabulary_size": args.pretrain_vocabulary}),
                     verbose=2)
        result["pretrain_recipe"] = runs.read_recipe(args.pretrain_dir)
        result["pretrain"] = json.load(open(os.path.join(args.pretrain_dir, "metrics.json")))
    if any(arm.startswith("default_vectors") for arm in args.arms):
        from tfllm import runs

        if not runs.is_finished(args.vectors_dir):
            cli("pretrain", "--objective", "vectors", "--data", "rotten_tomatoes", "--run-dir", args.vectors_dir,
                "--overwrite", *[a for setting in args.vectors_set for a in ("--set", setting)])
        result["vectors_recipe"] = runs.read_recipe(args.vectors_dir)
        result["vectors"] = json.load(open(os.path.join(args.vectors_dir, "metrics.json")))
    if args.probe:
        result["linear_probe"] = linear_probe(args.pretrain_dir, rows, args.labels, args.seeds, test)
        print(json.dumps(result["linear_probe"]), flush=True)

    overrides = [("epochs", args.epochs), ("learning-rate", args.learning_rate)]
    for n in args.labels:
        for seed in args.seeds:
            labelled = draw(rows, n, seed)
            with tempfile.TemporaryDirectory() as tmp:
                data_csv = os.path.join(tmp, "data.csv")
                write_csv(data_csv, labelled + [dict(r, split="test") for r in test])
                row = {"labels": n, "seed": seed}
                if "tfidf_lr" in args.arms:
                    row["tfidf_lr"] = round(tfidf_lr(all_train_texts, labelled, test), 4)
                if "scratch" in args.arms:
                    row["scratch"] = fine_tune(data_csv, os.path.join(tmp, "scratch"), seed, overrides=overrides,
                                               settings=args.set)
                if "pretrained_mlm" in args.arms:
                    row["pretrained_mlm"] = fine_tune(data_csv, os.path.join(tmp, "mlm"), seed, args.pretrain_dir,
                                                      overrides=overrides, settings=args.set + args.pretrained_set)
                if "default" in args.arms:
                    # The default recipe's own epochs and learning rate: it is tuned for small data.
                    row["default"] = fine_tune(data_csv, os.path.join(tmp, "default"), seed,
                                               overrides=[("preset", "default")], settings=args.default_set)
                if "default_no_vectors" in args.arms:
                    # The default recipe before it pretrained: random token embeddings.
                    row["default_no_vectors"] = fine_tune(data_csv, os.path.join(tmp, "no_vectors"), seed,
                                                          overrides=[("preset", "default")],
                                                          settings=["word_vectors=false"])
                if "default_self_train" in args.arms:
                    # tfllm leaves out the texts of its data (the N and the test split) by itself.
                    row["default_self_train"] = fine_tune(data_csv, os.path.join(tmp, "self"), seed,
                                                          overrides=[("preset", "default"),
                                                                     ("unlabeled", "rotten_tomatoes"),
                                                                     ("ensemble", args.self_train_ensemble)],
                                                          settings=args.self_train_set)
                if "default_vectors" in args.arms:
                    # The default recipe over the word-vector encoder (and its tokenizer).
                    row["default_vectors"] = fine_tune(data_csv, os.path.join(tmp, "vectors"), seed, args.vectors_dir,
                                                       overrides=[("preset", "default")], settings=args.set)
                if "default_vectors_self_train" in args.arms:
                    row["default_vectors_self_train"] = fine_tune(
                        data_csv, os.path.join(tmp, "vectors_self"), seed, args.vectors_dir,
                        overrides=[("preset", "default"), ("unlabeled", "rotten_tomatoes"),
                                   ("ensemble", args.self_train_ensemble)],
                        settings=args.set + args.self_train_set)
            result["rows"].append(row)
            print(json.dumps(row), flush=True)

    means = {}
    for n in args.labels:
        these = [r for r in result["rows"] if r["labels"] == n]
        means[str(n)] = {arm: round(float(np.mean([r[arm] if arm == "tfidf_lr" else r[arm]["test_accuracy"]
                                                   for r in these])), 4) for arm in args.arms}
    result["mean_test_accuracy"] = means
    save_results(args.out, result, shown=means)


if __name__ == "__main__":
    main()
