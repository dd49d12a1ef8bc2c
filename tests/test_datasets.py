import csv
import gzip
import json
import re
import subprocess
import warnings

import numpy as np
import pytest

from tfllm.datasets import load_classification_data
from tfllm.errors import TfllmWarning, UserInputError

ROWS = [(f"text number {i} {'good' if i % 2 else 'bad'}", "pos" if i % 2 else "neg") for i in range(60)]


def write_csv(path, rows=ROWS, header="text,label", delimiter=","):
    lines = [header.replace(",", delimiter)] + [f"{t}{delimiter}{label}" for t, label in rows]
    data = ("\n".join(lines) + "\n").encode()
    if str(path).endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("name,delimiter", [("d.csv", ","), ("d.tsv", "\t"), ("d.csv.gz", ",")])
def test_delimited_files_load_and_split_stratified(tmp_path, name, delimiter):
    data = load_classification_data(write_csv(tmp_path / name, delimiter=delimiter))
    assert data.label_names == ["neg", "pos"]
    assert len(data.train) + len(data.val) + len(data.test) == 60
    for split in (data.train, data.val, data.test):
        assert set(split.labels) == {0, 1}  # stratified: both classes everywhere
    # Seeded: the same call gives the same split.
    assert load_classification_data(str(tmp_path / name)).test.texts == data.test.texts


def test_a_csv_separated_by_semicolons_or_tabs_reads_as_its_header_says(tmp_path):
    """Excel writes "CSV" with semicolons where the decimal mark is a comma: the header was one column named
    'text;label', and the error offered that name to --text-column."""
    comma = load_classification_data(write_csv(tmp_path / "comma.csv"))
    for name, delimiter in (("semi.csv", ";"), ("tabs.csv", "\t"), ("semi.csv.gz", ";")):
        data = load_classification_data(write_csv(tmp_path / name, delimiter=delimiter))
        assert (data.label_names, data.train.texts, data.test.labels) == (
            comma.label_names, comma.train.texts, comma.test.labels), name
    # Quoted fields keep their semicolons and commas; a blank first line is not the header.
    rows = [(f'"text {i}; good, very"' if i % 2 else f"text {i}", "pos" if i % 2 else "neg") for i in range(40)]
    path = tmp_path / "quoted.csv"
    path.write_text("\n" + "\n".join(["review;stars"] + [f"{t};{label}" for t, label in rows]) + "\n")
    data = load_classification_data(str(path), text_column="review", label_column="stars")
    assert "text 1; good, very" in data.train.texts + data.val.texts + data.test.texts
    # "text, label" as people type it: the column is "label", not " label" (its values were stripped already).
    data = load_classification_data(write_csv(tmp_path / "spaced.csv", header="text, label"))
    assert data.label_names == comma.label_names
    # A comma header stays comma-separated, whatever the texts hold; an unquoted semicolon is named in the fix.
    rows = [(f"text {i}; and more", "pos" if i % 2 else "neg") for i in range(40)]
    assert len(load_classification_data(write_csv(tmp_path / "texts.csv", rows)).train) > 0
    path.write_text("text;label\n" + "".join(f"t {i};{'pos' if i % 2 else 'neg'}\n" for i in range(30)) + "a;b;c\n")
    with pytest.raises(UserInputError, match="data row 31 .*has 3 fields, the header has 2: quote texts that contain semicolons"):
        load_classification_data(str(path))


def test_a_semicolon_csv_whose_header_holds_a_comma_reads_with_semicolons(tmp_path):
    """The delimiter was chosen from the header alone, a comma wherever it held one: 'review text, full;label'
    was two comma columns, and every row 'has 1 field, the header has 2'."""
    rows = [(f"text {i}, with a comma" if i % 3 == 0 else f"text {i}", "pos" if i % 2 else "neg") for i in range(80)]
    for header, columns in (("review text, full;label", ("review text, full", "label")),
                            ("text;label,extra", ("text", "label,extra"))):
        path = tmp_path / "semi.csv"
        path.write_text("\n".join([header] + [f"{t};{label}" for t, label in rows]) + "\n")
        data = load_classification_data(str(path), text_column=columns[0], label_column=columns[1])
        assert data.label_names == ["neg", "pos"], header
        assert sorted(data.train.texts + data.val.texts + data.test.texts) == sorted(t for t, _ in rows)
    # A comma file whose texts hold semicolons stays a comma file; one that fits no delimiter names its row.
    path.write_text("text,label\n" + "".join(f"t {i}; and; more,{'ab'[i % 2]}\n" for i in range(30)))
    assert load_classification_data(str(path)).label_names == ["a", "b"]
    path.write_text("text,label\n" + "".join(f"t {i},{'ab'[i % 2]}\n" for i in range(30)) + "t;x\n")
    with pytest.raises(UserInputError, match="data row 31 .*has 1 field, the header has 2"):
        load_classification_data(str(path))


def test_a_column_that_names_each_rows_split_is_named_in_a_warning_when_not_read(tmp_path):
    """A file's own train/validation/test column was ignored without a word unless --split-column named it:
    a seeded split then trained on its test rows."""
    path = tmp_path / "d.csv"
    path.write_text("text,label,split\n" + "".join(
        f"text {i},{'ab'[i % 2]},{(['train'] * 8 + ['validation', 'Test'])[i % 10]}\n"
        for i in range(60)))
    with pytest.warns(TfllmWarning) as caught:
        data = load_classification_data(str(path))
    assert [str(w.message) for w in caught] == [
        f"{str(path)!r} has a column 'split' whose values (Test, train, validation) name each row's split, but it is "
        "not read: the split is a seeded one. Pass split_column='split' to keep the file's split."]
    assert len(data.test) == 6  # the seeded split, as before: the warning says so, the split is not changed
    with warnings.catch_warnings():
        warnings.simplefilter("error", TfllmWarning)
        assert len(load_classification_data(str(path), split_column="split").test) == 6
        # A model's labels: a file scored whole (it has --split-column to score a split) is not warned of.
        load_classification_data(str(path), label_names=["a", "b"])
        # A column of split names and others (or of train alone) is not a split column.
        path.write_text("text,label,kind\n" + "".join(f"text {i},{'ab'[i % 2]},{['train', 'test', 'other'][i % 3]}\n"
                                                       for i in range(60)))
        load_classification_data(str(path))


def test_a_json_file_holding_an_array_of_objects_reads_as_json_lines_do(tmp_path):
    """`df.to_json("d.json", orient="records")` writes one array on one line: "line 1 is not a JSON object"."""
    objects = [{"text": text, "label": label} for text, label in ROWS]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(o) + "\n" for o in objects))
    lines = load_classification_data(str(tmp_path / "d.jsonl"))
    for name, indent in (("one_line.json", None), ("pretty.json", 2), ("array.jsonl", 2)):
        (tmp_path / name).write_text("\n" + json.dumps(objects, indent=indent))
        data = load_classification_data(str(tmp_path / name))
        assert (data.label_names, data.train.texts, data.test.labels) == (
            lines.label_names, lines.train.texts, lines.test.labels), name
    for content, match in (('[{"text": "a", "label": "x"}, ["b", "y"]]', "item 2 of its array is not a JSON object"),
                           ('[{"text": "a", "label": "x"},\n {"text": "b" "label": "y"}]',
                            r"is not valid JSON \(Expecting ',' delimiter at line 2, column 15\)"),
                           ('[{"text": "a", "label": "x", "label": "y"}]', "repeats the key 'label' in one object")):
        (tmp_path / "bad.json").write_text(content)
        with pytest.raises(UserInputError, match=match):
            load_classification_data(str(tmp_path / "bad.json"))


def test_a_txt_file_for_labels_or_pairs_says_it_has_no_columns(tmp_path):
    """It said "Unsupported data file 'texts.txt'", as if .txt were unknown to tfllm."""
    from tfllm.datasets.pairs import load_pair_data

    for name in ("texts.txt", "texts.txt.gz"):
        write_csv(tmp_path / name, header="a line of text")
        with pytest.raises(UserInputError, match=f"{name}' is plain text, one text a line, without labels.* unlabeled"):
            load_classification_data(str(tmp_path / name))
        with pytest.raises(UserInputError, match="without a source and a target column. Save it as .csv"):
            load_pair_data(str(tmp_path / name), source_column="zh", target_column="en")
    with pytest.raises(UserInputError, match="does not exist"):  # a missing one is still missing
        load_classification_data(str(tmp_path / "missing.txt"))


def test_labels_that_differ_only_in_case_are_named_in_a_warning(tmp_path):
    from tfllm.datasets import warn_about_labels

    rows = [(f"text {i}", ["Positive", "positive", "neg", "very  good", "Very good"][i % 5]) for i in range(50)]
    data = load_classification_data(write_csv(tmp_path / "d.csv", rows))
    assert len(data.label_names) == 5  # classes as written: the warning says so, the data is not rewritten
    with pytest.warns(TfllmWarning) as caught:
        warn_about_labels("d.csv", data)
    assert [str(w.message)[:40] for w in caught] == ["the labels 'Positive' and 'positive' of ",
                                                     "the labels 'Very good' and 'very  good' "]
    assert "of 'd.csv' differ only in case, so they are 2" in str(caught[0].message)
    assert "differ only in case or in the spaces between words, so they are 2" in str(caught[1].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TfllmWarning)
        warn_about_labels("rotten_tomatoes", load_classification_data("rotten_tomatoes", max_rows=100))


def test_a_rare_label_a_typo_away_from_a_common_one_is_named_in_a_warning(tmp_path, monkeypatch):
    """A row labelled 'postive' beside 120 'positive' ones made a fourth class without a hint (then imbalance
    and "no test rows" warnings naming it), though labels differing only in case are named."""
    from tfllm import errors
    from tfllm.datasets import warn_about_labels

    monkeypatch.setattr(errors, "command_running", True)  # as `tfllm train` says it: its flags
    rows = [(f"text {i}", ["positive", "negative", "neutral"][i % 3]) for i in range(120)] + [("text x", "postive")]
    data = load_classification_data(write_csv(tmp_path / "d.csv", rows))
    assert data.label_names == ["negative", "neutral", "positive", "postive"]  # as written: the warning says so
    with pytest.warns(TfllmWarning) as caught:
        warn_about_labels("d.csv", data)
    assert [str(w.message) for w in caught] == [
        "the label 'postive' of 'd.csv' (1 row) looks like 'positive' (40 rows), so it is a class of its own; if "
        "they are one, fix the label, or leave its rows out with --labels negative,neutral,positive."]
    # Not a typo: a rating's rare value, a short label an edit from another, two common labels, or numbered
    # codes that differ only in their digits.
    for labels in (["1", "2", "3"], ["bad", "good", "sad"], ["fresh", "rotten", "frseh"], ["lab95", "lab1", "lab295"],
                   ["class 1", "class 2", "class 11"]):
        rare = [(f"text {i}", labels[i % 2]) for i in range(60)] + [("text y", labels[2])] * (labels[2] != "frseh")
        rare += [(f"text {i}", "frseh") for i in range(30)] * (labels[2] == "frseh")  # as common as 'fresh'
        with warnings.catch_warnings():
            warnings.simplefilter("error", TfllmWarning)
            warn_about_labels("d.csv", load_classification_data(write_csv(tmp_path / "n.csv", rare)))


def test_spaces_around_labels_are_dropped_and_said_once(tmp_path, capsys, monkeypatch):
    """'fresh ' and 'fresh' were one class without a word, while the docs said they stayed two and the case
    warning spoke of "case or spaces"."""
    from tfllm import errors
    from tfllm.datasets import warn_about_labels

    rows = [(f"text {i}", ["fresh ", " rotten", "fresh", "rotten", "Fresh"][i % 5]) for i in range(50)]
    data = load_classification_data(write_csv(tmp_path / "d.csv", rows))
    assert data.label_names == ["Fresh", "fresh", "rotten"]
    with pytest.warns(TfllmWarning) as caught:
        warn_about_labels("d.csv", data)
    said = [str(w.message) for w in caught]
    assert said[0] == ("20 labels of 'd.csv' (column 'label') had spaces around them, read without: "
                       "'fresh ' -> 'fresh', ' rotten' -> 'rotten'.")
    assert said[1:] == ["the labels 'Fresh' and 'fresh' of 'd.csv' differ only in case, so they are 2 classes; "
                        "if they are one, write them one way."]
    # Scoring a file reads its labels by the same rule: "fresh " is the model's "fresh".
    scored = load_classification_data(str(tmp_path / "d.csv"), label_names=["Fresh", "fresh", "rotten"],
                                      val_fraction=0.0, test_fraction=1.0)
    by_text = dict(zip(scored.test.texts, scored.test.labels))
    assert [by_text[f"text {i}"] for i in range(4)] == [1, 2, 1, 2]
    assert scored.spaced_labels == {"fresh ": 10, " rotten": 10}
    # A command prints it as its own line, once.
    monkeypatch.setattr(errors, "command_running", True)
    warn_about_labels("d.csv", load_classification_data(str(tmp_path / "d.csv"), labels=["fresh", "rotten"]))
    assert capsys.readouterr().err.count("had spaces around them") == 1
    # "5.0" is read as "5" (one class with "5"), which is no label with spaces around it: no note.
    numbers = load_classification_data(write_csv(tmp_path / "n.csv", [(f"t {i}", ["5.0", "1", "5", "1.0"][i % 4])
                                                                     for i in range(40)]))
    assert numbers.label_names == ["1", "5"] and numbers.spaced_labels == {}


def test_json_true_false_labels_are_spelt_as_json_and_beside_0_1_are_named(tmp_path):
    """JSON's true/false became classes 'True'/'False' (so a CSV of true/false was refused as unseen labels),
    and a file joined from a 0/1 source and a true/false one made four classes without a word."""
    from tfllm.datasets import warn_about_labels

    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": f"text {i}", "label": bool(i % 2)}) + "\n" for i in range(40)))
    assert load_classification_data(str(path)).label_names == ["false", "true"]
    mixed = [{"text": f"text {i}", "label": (i % 2) if i < 20 else bool(i % 2)} for i in range(40)]
    path.write_text("".join(json.dumps(row) + "\n" for row in mixed))
    data = load_classification_data(str(path))
    assert data.label_names == ["0", "1", "false", "true"]  # as written: the warning says so
    with pytest.warns(TfllmWarning, match="'0' and '1' and 'false' and 'true' of 'd.jsonl' look like one yes/no"):
        warn_about_labels("d.jsonl", data)


def test_labels_that_spell_a_missing_value_are_named_in_one_warning(tmp_path):
    """A label column with gaps written as pandas writes them ("NaN", "N/A") made those spellings classes
    without a word; "NA" and "None" may be real classes, and are not warned of."""
    from tfllm.datasets import warn_about_labels

    rows = [(f"text {i}", ["pos", "neg", "pos", "neg", "NaN", "pos", "neg", "N/A", "pos", "neg"][i % 10])
            for i in range(60)]
    data = load_classification_data(write_csv(tmp_path / "d.csv", rows, header="text,stars"), label_column="stars")
    assert data.label_names == ["N/A", "NaN", "neg", "pos"]  # as written: the warning says so
    with pytest.warns(TfllmWarning) as caught:
        warn_about_labels("d.csv", data, "stars")
    assert [str(w.message) for w in caught] == [
        "'d.csv' has 12 rows whose label in column 'stars' spells a missing value: 'N/A' (6 rows), 'NaN' (6 rows), "
        "each read as a class of its own; drop those rows or give them real labels."]
    rows = [(f"text {i}", ["NA", "None", "EU"][i % 3]) for i in range(30)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", TfllmWarning)
        warn_about_labels("r.csv", load_classification_data(write_csv(tmp_path / "r.csv", rows)))


def test_a_json_file_of_texts_is_a_corpus_but_not_labelled_data(tmp_path):
    """A JSON array of strings (or a string a line) holds texts: pretraining and generation read them; as
    classification data it lacks labels, and says what each item must look like."""
    from tfllm.datasets.text import load_documents, load_text_corpus

    texts = [f"document number {i}" for i in range(20)]
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    (tmp_path / "texts.jsonl").write_text("".join(json.dumps(t) + "\n" for t in texts))
    for name in ("texts.json", "texts.jsonl"):
        assert sum(load_documents(str(tmp_path / name)), []) == texts
        train, val = load_text_corpus(str(tmp_path / name))
        assert "document number 0" in train and "document number 19" in val
    with pytest.raises(UserInputError, match=re.escape("item 1 of its array is not a JSON object. Each must look "
                                                       'like {"text": ..., "label": ...}')):
        load_classification_data(str(tmp_path / "texts.json"))


def test_a_pathlib_path_is_a_file_like_its_str(tmp_path):
    # A notebook's pathlib.Path was an AttributeError traceback ('PosixPath' object has no attribute 'endswith').
    path = write_csv(tmp_path / "d.csv")
    assert load_classification_data(tmp_path / "d.csv").test.texts == load_classification_data(path).test.texts


def test_jsonl_with_int_labels_and_custom_columns(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"review": t, "stars": i % 3}) for i, (t, _) in enumerate(ROWS)))
    data = load_classification_data(str(path), text_column="review", label_column="stars")
    assert data.label_names == ["0", "1", "2"]
    assert data.num_classes == 3


def write_label_folders(folder, labels=("neg", "pos"), files=10):
    """A folder dataset: FOLDER/<label>/<i>.txt holding "<label> review <i>"."""
    for label in labels:
        (folder / label).mkdir()
        for i in range(files):
            (folder / label / f"{i}.txt").write_text(f"{label} review {i}")


def test_folder_per_label(tmp_path):
    write_label_folders(tmp_path)
    data = load_classification_data(str(tmp_path))
    assert data.label_names == ["neg", "pos"]
    assert len(data.train) + len(data.val) + len(data.test) == 20
    # Files in folders below a label's folder are that label's too (they were skipped without a word).
    (tmp_path / "pos" / "more").mkdir()
    (tmp_path / "pos" / "more" / "extra.txt").write_text("pos review extra")
    data = load_classification_data(str(tmp_path))
    assert "pos review extra" in data.train.texts + data.val.texts + data.test.texts
    # A label folder with no .txt file is a class left out: named, as it went missing without a word.
    (tmp_path / "neutral").mkdir()
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "notes.md").write_text("not a text of the class")
    with pytest.warns(TfllmWarning, match=r"^label folder\(s\) 'mixed', 'neutral' of .* hold no .txt .*left out"):
        data = load_classification_data(str(tmp_path))
    assert data.label_names == ["neg", "pos"]
    (tmp_path / "mixed" / "notes.md").unlink()
    (tmp_path / "mixed").rmdir()
    (tmp_path / "neutral").rmdir()
    # An empty text file in it is one text to write or remove (it said to point --data at a file with text).
    (tmp_path / "pos" / "blank.txt").write_text("\n")
    with pytest.raises(UserInputError, match=r"blank.txt' is empty. Write its text, or remove it.$"):
        load_classification_data(str(tmp_path))


def test_a_folder_of_runs_or_presets_is_refused_not_read_as_classes(tmp_path):
    # load_classification_data("runs") read each run's assets/tokenizer/vocabulary.txt (two levels down) as the one
    # text of a class named after the run. Label folders may nest their .txt files; saved models are refused.
    from tfllm import runs
    from tfllm.config import TrainConfig

    for run in ("reviews", "shakespeare"):  # a run's layout (tfllm.runs), its KerasHub files but the vocabulary left out
        run_dir = tmp_path / "runs" / run
        TrainConfig(run_dir=str(run_dir)).to_json(runs.path(run_dir, runs.RUN_CONFIG))
        (tmp_path / "runs" / run / "assets" / "tokenizer").mkdir(parents=True)
        (tmp_path / "runs" / run / "assets" / "tokenizer" / "vocabulary.txt").write_text("[PAD]\n[UNK]\nthe\n")
    with pytest.raises(UserInputError, match=r"^Folder '.*runs' holds a saved model \('reviews': a tfllm run "
                                             r"directory or a KerasHub preset\), not labelled texts: .*FOLDER/<label>/"):
        load_classification_data(str(tmp_path / "runs"))
    with pytest.raises(UserInputError, match=r"^Folder '.*reviews' is a saved model \(a tfllm run directory"):
        load_classification_data(tmp_path / "runs" / "reviews")  # a run itself: its assets/ would be a class
    # A KerasHub preset (save_to_preset's files, no tfllm records) nested below a label folder.
    (tmp_path / "data").mkdir()
    write_label_folders(tmp_path / "data")
    preset = tmp_path / "data" / "pos" / "bert_tiny"
    (preset / "assets" / "tokenizer").mkdir(parents=True)
    for name in ("config.json", "metadata.json", "tokenizer.json"):
        (preset / name).write_text("{}")
    (preset / "assets" / "tokenizer" / "vocabulary.txt").write_text("[PAD]\n")
    with pytest.raises(UserInputError, match=r"holds a saved model \('pos/bert_tiny': .*texts of a class 'pos'"):
        load_classification_data(tmp_path / "data")
    # Pretraining's documents too: every run's vocabulary.txt was read as documents.
    from tfllm.datasets.text import load_documents

    with pytest.raises(UserInputError, match=r"^Folder '.*runs' holds a saved model \('reviews': a tfllm run directory or a "
                                             r"KerasHub preset\), not documents"):
        load_documents(str(tmp_path / "runs"))
    with pytest.raises(UserInputError, match=r"^Folder '.*reviews' is a saved model \(a tfllm run directory or a "
                                             r"KerasHub preset\), not documents"):
        load_documents(str(tmp_path / "runs" / "reviews"))
    (preset / "metadata.json").unlink()
    (preset / "tokenizer.json").unlink()  # a config.json alone is no preset: its folder's .txt files are texts
    assert len(load_classification_data(tmp_path / "data").label_names) == 2


def test_labels_and_fractions_of_the_wrong_kind_are_refused(tmp_path):
    path = write_csv(tmp_path / "d.csv")
    # A str was read a character at a time: "The labels asked for (['p', 'o', 's', ',', ...])".
    with pytest.raises(UserInputError, match=r"^labels must be a list or a tuple, got str 'pos,neg' "
                                             r"\(e.g. \['pos', 'neg'\]\)\.$"):
        load_classification_data(path, labels="pos,neg")
    with pytest.raises(UserInputError, match=r"^label_names must be a list or a tuple, got str 'neg'"):
        load_classification_data(path, label_names="neg")
    # Held-out shares that left no training rows (0.2 + 0.9: an empty train split, without a word), or none at all.
    for val, test, message in ((0.2, 0.9, r"val_fraction \(0.2\) and test_fraction \(0.9\) add up to 1.1, which "
                                          r"leaves no rows to train on"),
                               (0.5, 0.5, r"add up to 1.0, which leaves no rows"),
                               (-0.1, 0.1, r"^val_fraction must be a number from 0 to 1 .*got -0.1"),
                               (0.1, 10, r"^test_fraction must be a number from 0 to 1 .*got 10"),
                               (0.1, "0.1", r"^test_fraction must be a number .*got '0.1'")):
        with pytest.raises(UserInputError, match=message):
            load_classification_data(path, val_fraction=val, test_fraction=test)
    # A file scored by a trained model may be held out whole (tfllm evaluate --data OTHER.csv).
    scored = load_classification_data(path, label_names=["neg", "pos"], val_fraction=0.0, test_fraction=1.0)
    assert (len(scored.train), len(scored.val), len(scored.test)) == (0, 0, 60)


def test_pair_fractions_of_the_wrong_kind_are_refused(tmp_path):
    from tfllm.datasets.pairs import load_pair_data
    path = tmp_path / "pairs.tsv"
    path.write_text("zh\ten\n" + "".join(f"源{i}\tsource {i}\n" for i in range(40)), encoding="utf-8")
    # 0.6 + 0.6 was blamed on the file ("has too few pairs (40) ... give it hundreds"); "0.1" was a TypeError.
    for val, test, message in ((0.6, 0.6, r"add up to 1.2, which leaves no rows to train on"),
                               (0.1, "0.1", r"^test_fraction must be a number .*got '0.1'")):
        with pytest.raises(UserInputError, match=message):
            load_pair_data(str(path), "zh", "en", val_fraction=val, test_fraction=test)
    assert len(load_pair_data(str(path), "zh", "en", val_fraction=0.2, test_fraction=0.2).train) == 24


def test_rows_held_in_memory_are_told_to_be_saved_to_a_file():
    # A list of (text, label) rows was a TypeError ("unhashable type: 'list'"); TrainConfig(data=...)'s message.
    with pytest.raises(UserInputError, match=r"^load_classification_data's source must be a file or folder path or a "
                                             r"bundled name, got list \[\('a fine film', 'pos'\)\]\. Save texts "
                                             r"held in memory to a file first \(pandas: `df.to_csv"):
        load_classification_data([("a fine film", "pos")])


def test_split_column_is_respected(tmp_path):
    path = tmp_path / "d.csv"
    rows = [f"t{i},{'a' if i % 2 else 'b'},{['train', 'validation', 'test'][i % 3]}" for i in range(30)]
    path.write_text("text,label,part\n" + "\n".join(rows))
    data = load_classification_data(str(path), split_column="part")
    assert data.val.texts == [f"t{i}" for i in range(30) if i % 3 == 1]


def test_bundled_rotten_tomatoes_binary_and_three_class():
    binary = load_classification_data("rotten_tomatoes")
    assert binary.label_names == ["rotten", "fresh"]
    assert len(binary.test) == 1320  # the file's own test split (SOURCES.md)
    assert load_classification_data("rotten_tomatoes_3class").num_classes == 3


@pytest.mark.parametrize(
    "content,kwargs,match",
    [
        (None, {}, "does not exist"),
        (b"", {}, "empty"),
        (b"text,label\nhello,a\nbye,b\n", {"text_column": "review"}, "no text column 'review'"),
        (b"text,label\nhello,a\nbye,a\n", {}, "only one class"),
        (b"text,label\ncaf\xe9,a\nbye,b\n", {}, "not UTF-8"),
        (b"text,label\n,a\nbye,b\n", {}, "empty text"),
        (b"text,label\nhi,a\nbye,c\n", {"label_names": ["a", "b"]}, "not trained on"),
        # Old Mac line endings: Python's "open the file in universal-newline mode?" was the fix offered.
        (b"text,label\rhi,a\rbye,b\r", {}, r"carriage return \(\\r\) outside quotes .*`tr '\\r' '\\n' < bad.csv"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, content, kwargs, match):
    path = tmp_path / "bad.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserInputError, match=match):
        load_classification_data(str(path), **kwargs)


def test_a_tsv_text_that_starts_with_a_quote_is_read_as_written_not_merged_with_the_rows_after_it(tmp_path):
    """Most tools write TSV unquoted: read with CSV quoting, `"Wow" is all I can say` lost its quotes, and a
    quote never closed ran on to the next quote, rows later. A field quoted whole is still unquoted."""
    rows = [f"text {i}\t{'ab'[i % 2]}" for i in range(30)]
    rows[3] = '"Great movie, said no one\tb'  # was read as a quoted field that ran to the next quote, rows later
    rows[9] = 'a "quoted" word\ta'
    rows[12] = '"Wow" is all I can say\ta'  # was read as 'Wow is all I can say'
    rows[15] = '"""Great"" movie, ""quoted"" whole"\t"b"'  # a quoted TSV (pandas, cedict.tsv.gz): unquoted
    (tmp_path / "d.tsv").write_text("text\tlabel\n" + "\n".join(rows) + "\n")
    data = load_classification_data(str(tmp_path / "d.tsv"), val_fraction=0, test_fraction=0)
    assert len(data.train) == 30 and data.label_names == ["a", "b"]
    assert {'"Great movie, said no one', 'a "quoted" word', '"Wow" is all I can say',
            '"Great" movie, "quoted" whole'} <= set(data.train.texts)
    # The same texts as a .csv saved with tabs, and a TSV written by the csv module with its quoting.
    (tmp_path / "d.csv").write_text("text\tlabel\n" + "\n".join(rows) + "\n")
    assert load_classification_data(str(tmp_path / "d.csv"), val_fraction=0, test_fraction=0).train == data.train
    with open(tmp_path / "q.tsv", "w", newline="") as f:
        csv.writer(f, delimiter="\t", quoting=csv.QUOTE_ALL).writerows(
            [("text", "label"), *(zip(data.train.texts, [data.label_names[i] for i in data.train.labels]))])
    assert load_classification_data(str(tmp_path / "q.tsv"), val_fraction=0, test_fraction=0).train == data.train
    # A quoted field that holds a tab is refused, not split into columns.
    rows[3] = '"Great movie,\tsaid no one"\tb'
    (tmp_path / "d.tsv").write_text("text\tlabel\n" + "\n".join(rows) + "\n")
    with pytest.raises(UserInputError, match="data row 4 has a field with a tab or line break"):
        load_classification_data(str(tmp_path / "d.tsv"))
    # A text quoted whole that holds a line break is refused too; the fix was "quote such fields whole".
    rows[3] = "text 3\tb"
    rows[5] = '"two\nlines"\ta'
    (tmp_path / "d.tsv").write_text("text\tlabel\n" + "\n".join(rows) + "\n")
    with pytest.raises(UserInputError, match="data row 6 has a field with a tab or line break in it, which a TSV text "
                                             "cannot hold: replace them with spaces"):
        load_classification_data(str(tmp_path / "d.tsv"))


def test_json_labels_1_and_1_0_are_one_class_and_nan_is_no_label(tmp_path):
    lines = [json.dumps({"text": f"t{i}", "label": [0, 1.0, 1][i % 3]}) for i in range(30)]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    assert load_classification_data(str(tmp_path / "d.jsonl")).label_names == ["0", "1"]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + '\n{"text": "t", "label": NaN}\n')
    with pytest.raises(UserInputError, match="1 row\\(s\\) without a label"):
        load_classification_data(str(tmp_path / "d.jsonl"))



def test_csv_labels_1_and_1_0_are_one_class_as_in_json(tmp_path):
    # Two files joined, one written by pandas from a float column: "1.0" was a third class beside "1".
    rows = [(f"text {i}", ["0", "1.0", "1", "0.0", "+1.00"][i % 5]) for i in range(40)]
    data = load_classification_data(write_csv(tmp_path / "d.csv", rows))
    assert data.label_names == ["0", "1"]
    texts = data.train.texts + data.val.texts + data.test.texts
    labels = data.train.labels + data.val.labels + data.test.labels
    assert all(label == (int(t.split()[1]) % 5 in (1, 2, 4)) for t, label in zip(texts, labels))
    # --labels in either spelling, and a run trained when "1.0" was a class name of its own, read the file.
    assert load_classification_data(str(tmp_path / "d.csv"), labels=["1.0", "0"]).label_names == ["1", "0"]
    scored = load_classification_data(str(tmp_path / "d.csv"), label_names=["0.0", "1.0"])
    assert sorted(set(scored.test.labels + scored.train.labels)) == [0, 1]
    # Other decimals stay what they are: ratings, not integers.
    rows = [(f"text {i}", ["4.5", "4.0", "4"][i % 3]) for i in range(30)]
    assert load_classification_data(write_csv(tmp_path / "r.csv", rows)).label_names == ["4", "4.5"]
    # Decimals that are equal are one class too: "4.50" (a two-place column) was a class beside "4.5".
    rows = [(f"text {i}", ["4.5", "4.50", "1", "1.00", "1.0", "+4.500", "good", "good.00"][i % 8]) for i in range(80)]
    data = load_classification_data(write_csv(tmp_path / "s.csv", rows))
    assert data.label_names == ["1", "4.5", "good", "good.00"]  # a label that is no number is read as written
    labels = data.train.labels + data.val.labels + data.test.labels
    texts = data.train.texts + data.val.texts + data.test.texts
    assert all(data.label_names[label] == ["4.5", "4.5", "1", "1", "1", "4.5", "good", "good.00"][int(t.split()[1]) % 8]
               for t, label in zip(texts, labels))
    # A model trained on "4.50" scores "4.5" as that class, and --labels takes either spelling.
    with pytest.warns(Warning, match="left out: the labels \\['good', 'good.00'\\]"):
        assert load_classification_data(str(tmp_path / "s.csv"), labels=["4.50", "1"]).label_names == ["4.5", "1"]
    scored = load_classification_data(str(tmp_path / "r.csv"), label_names=["4", "4.50"])
    assert sorted(set(scored.train.labels + scored.test.labels + scored.val.labels)) == [0, 1]


def test_a_chinese_negative_label_is_not_the_positive_one(tmp_path):
    """Binary precision, recall and F1 are of the second label: 负面 (negative) sorts after 正面 and was it."""
    rows = [(f"文本 {i}", ["正面", "负面"][i % 2]) for i in range(40)]
    assert load_classification_data(write_csv(tmp_path / "d.csv", rows)).label_names == ["负面", "正面"]
    rows = [(f"text {i}", ["pos", "neg"][i % 2]) for i in range(40)]  # code-point order where it reads right
    assert load_classification_data(write_csv(tmp_path / "e.csv", rows)).label_names == ["neg", "pos"]


def test_a_jsonl_row_without_a_key_or_with_a_text_or_label_of_another_kind_is_named(tmp_path):
    lines = [json.dumps({"text": f"t{i}", "label": i % 2}) for i in range(30)]
    # The first object lacks its label: the file said it had "no label column 'label'", pass --label-column.
    (tmp_path / "d.jsonl").write_text('{"text": "unlabelled"}\n' + "\n".join(lines) + "\n")
    with pytest.raises(UserInputError, match="1 row\\(s\\) without a label in column 'label' \\(first: data row 1\\)"):
        load_classification_data(str(tmp_path / "d.jsonl"))
    # A number as the text was called an empty text; a list as the label became the class "[1]".
    for row, match in (({"text": 42, "label": 1}, "data row 31 has a JSON int, not text, in column 'text'"),
                       ({"text": "t", "label": [1]}, "data row 31 has a JSON list, not one label, in column 'label'")):
        (tmp_path / "d.jsonl").write_text("\n".join(lines + [json.dumps(row)]) + "\n")
        with pytest.raises(UserInputError, match=match):
            load_classification_data(str(tmp_path / "d.jsonl"))


def test_max_rows_keeps_a_class_smaller_than_its_share_and_refuses_less_than_one_row(tmp_path):
    data = load_classification_data(write_csv(tmp_path / "d.csv", ROWS + [("the only one", "rare")]), max_rows=10)
    assert data.label_names == ["neg", "pos", "rare"]
    assert sum(len(s) for s in (data.train, data.val, data.test)) <= 10 + 2
    with pytest.raises(UserInputError, match="max_rows must be at least 1"):
        load_classification_data(str(tmp_path / "d.csv"), max_rows=0)


def test_a_training_split_with_no_val_or_test_rows_is_refused_up_front(tmp_path):
    from tfllm.config import TrainConfig
    from tfllm.datasets import split_as_trained

    path = write_csv(tmp_path / "d.csv", ROWS[:8])  # 4 rows a class: 10% of 4 rounds to none
    with pytest.raises(UserInputError, match="gives no val and no test rows .* at least 6 rows, or name the rows' "
                                             "splits with split_column.$"):
        split_as_trained(TrainConfig(data=path))
    # Each fix only where the command can make it (it said "raise --max-rows" without one, "--split-column" with one).
    with pytest.raises(UserInputError, match=r"at least 6 rows \(raise max_rows\), or name the rows"):
        split_as_trained(TrainConfig(data=write_csv(tmp_path / "e.csv", ROWS[:12]), max_rows=8))
    (tmp_path / "s.csv").write_text("text,label,split\n" + "".join(f"t{i},{'ab'[i % 2]},train\n" for i in range(8)))
    with pytest.raises(UserInputError, match="6 rows, or name some rows val and some test in column 'split'.$"):
        split_as_trained(TrainConfig(data=str(tmp_path / "s.csv"), split_column="split"))
    # Every "b" row held out: the model trained on one class, then reported its figures.
    (tmp_path / "s.csv").write_text("text,label,split\n" + "".join(f"t{i},a,train\nu{i},b,{['val', 'test'][i % 2]}\n"
                                                                    for i in range(8)))
    with pytest.raises(UserInputError, match="has only one class \\('a'\\) among its train rows \\(column 'split'\\)"):
        split_as_trained(TrainConfig(data=str(tmp_path / "s.csv"), split_column="split"))
    assert len(split_as_trained(TrainConfig(data=write_csv(tmp_path / "e.csv", ROWS[:12]))).test) == 2


def test_a_csv_field_over_128_kib_is_read(tmp_path):
    from tfllm.datasets import load_classification_data

    long_text = "word " * 60000  # 300 KB, over the csv module's default field limit
    rows = "".join(f'"{long_text if i == 0 else "short text"} {i}",{"ab"[i % 2]}\n' for i in range(40))
    (tmp_path / "long.csv").write_text("text,label\n" + rows)
    data = load_classification_data(str(tmp_path / "long.csv"))
    texts = data.train.texts + data.val.texts + data.test.texts
    assert max(map(len, texts)) > 300_000 and len(texts) == 40


def test_unlabeled_documents_for_pretraining(tmp_path):
    from tfllm.datasets.text import load_documents

    train, val = load_documents("zh_news")  # bundled People's Daily 1998, one paragraph a line
    assert len(train) + len(val) == 19484 and len(val) == round(19484 * 0.05)
    assert sum(any("\u4e00" <= c <= "\u9fff" for c in doc) for doc in train[:100]) >= 90  # Chinese text
    # rotten_tomatoes: every text of the training split (plot summaries too), never the val/test rows.
    import csv
    import gzip

    from tfllm.datasets import bundled_path

    with gzip.open(bundled_path("rotten_tomatoes.csv.gz"), "rt") as f:
        rows = list(csv.DictReader(f))
    train, val = load_documents("rotten_tomatoes")
    assert len(train) + len(val) == sum(r["split"] == "train" for r in rows)
    assert not {r["text"].strip() for r in rows if r["split"] == "test"} & set(train + val)
    # A folder of .txt files and a CSV column read alike.
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("first doc\n\nsecond doc\n")
    (tmp_path / "docs" / "b.txt").write_text("third doc\n")
    (tmp_path / "d.csv").write_text("body\nfirst doc\nsecond doc\nthird doc\n")
    assert load_documents(str(tmp_path / "docs")) == load_documents(str(tmp_path / "d.csv"), text_column="body")
    # A split column without a 'train' row: said, not "0 documents".
    (tmp_path / "s.csv").write_text("text,split\nfirst doc,training\nsecond doc,training\n")
    with pytest.raises(UserInputError, match="no rows whose split is 'train'.*\\['training'\\]"):
        load_documents(str(tmp_path / "s.csv"))


@pytest.mark.parametrize("text, codec, fix", [
    ("这里的音乐我特别喜欢", "gbk", "iconv -f gb18030 -t utf-8"),  # was latin1: valid mojibake (ÕâÀïµÄ) that trained
    ("naïve café", "cp1252", "iconv -f cp1252 -t utf-8"),
])
def test_a_file_in_another_encoding_is_told_the_encoding_it_reads_in(tmp_path, text, codec, fix):
    (tmp_path / "d.csv").write_bytes(b"text,label\n" + text.encode(codec) + b",a\nbye,b\n")
    with pytest.raises(UserInputError, match="not UTF-8 text .* on line 2.*" + re.escape(fix)):
        load_classification_data(str(tmp_path / "d.csv"))
    fixed = subprocess.run(fix.split(), input=(tmp_path / "d.csv").read_bytes(), capture_output=True, check=True)
    assert text in fixed.stdout.decode("utf-8")  # the command the message gives recovers the text


@pytest.mark.parametrize("name, codec", [("u.csv.gz", "utf-16"), ("l.csv.gz", "cp1252"), ("l.csv", "cp1252")])
def test_the_command_given_to_re_save_a_file_as_utf8_works_as_written(tmp_path, name, codec):
    """For a .gz it said `iconv -f utf-16 -t utf-8`, which on the .gz itself reads compressed bytes and fails."""
    text = "text,label\nnaïve café,a\nbye,b\n"
    data = text.encode(codec)
    (tmp_path / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    with pytest.raises(UserInputError) as refused:
        load_classification_data(str(tmp_path / name))
    command = re.search("`(.*)`", str(refused.value))[1]
    subprocess.run(command, shell=True, check=True, capture_output=True)
    fixed = tmp_path / name.replace(".csv", "-utf8.csv")
    scored = load_classification_data(str(fixed), label_names=["a", "b"], val_fraction=0.0, test_fraction=1.0)
    assert sorted(scored.test.texts) == ["bye", "naïve café"]


def test_a_damaged_gzip_and_a_utf16_file_are_one_clear_error(tmp_path):
    """A corrupt .gz raised zlib.error (a traceback); a UTF-16 file was told to convert from latin1."""
    data = bytearray(gzip.compress(("text,label\n" + "".join(f"text {i},pos\n" for i in range(2000))).encode()))
    for k in range(30, 60):  # a damaged deflate stream: zlib.error, not gzip.BadGzipFile
        data[k] ^= 0x55
    (tmp_path / "d.csv.gz").write_bytes(bytes(data))
    with pytest.raises(UserInputError, match="Cannot read .*d.csv.gz.*Is it a valid \\(gzip\\) file"):
        load_classification_data(str(tmp_path / "d.csv.gz"))
    for bom, codec in ((b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):  # as Windows' "Unicode" saves
        (tmp_path / "d.csv").write_bytes(bom + "text,label\nhi,a\nbye,b\n".encode(codec))
        with pytest.raises(UserInputError, match="is UTF-16 text, not UTF-8.*iconv -f utf-16 -t utf-8"):
            load_classification_data(str(tmp_path / "d.csv"))
    # A gzip file without its .gz name was told to convert from latin1.
    (tmp_path / "z.csv").write_bytes(gzip.compress(b"text,label\nhi,a\nbye,b\n"))
    with pytest.raises(UserInputError, match="z.csv' is gzip-compressed; name it z.csv.gz") as refused:
        load_classification_data(str(tmp_path / "z.csv"))
    # Its other fix works as written: "or gunzip it" did not (gunzip z.csv: "unknown suffix -- ignored").
    subprocess.run(re.search("`(.*)`", str(refused.value))[1], shell=True, check=True, capture_output=True)
    plain = load_classification_data(str(tmp_path / "z-plain.csv"), val_fraction=0.0, test_fraction=0.5)
    assert sorted(plain.train.texts + plain.test.texts) == ["bye", "hi"]


def test_a_workbook_or_a_zip_given_as_text_says_what_it_is_not_to_reencode_it(tmp_path):
    """An .xlsx (a zip) or a .zip was "not UTF-8 text ... iconv -f latin1": that made junk, which trained, or
    which `predict --file` classified with exit status 0."""
    import zipfile

    from tfllm.datasets import read_texts

    with zipfile.ZipFile(tmp_path / "real.xlsx", "w") as workbook:
        workbook.writestr("xl/worksheets/sheet1.xml", "<sheetData>" + "<row/>" * 200 + "</sheetData>")
    with zipfile.ZipFile(tmp_path / "data.zip", "w") as archive:
        archive.writestr("data.csv", "text,label\nhi,a\nbye,b\n")
    (tmp_path / "old.xls").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(range(256)))
    (tmp_path / "data.txt").write_bytes((tmp_path / "data.zip").read_bytes())  # named as text: still a zip
    workbook = "is an Excel workbook, not text; save it as CSV UTF-8 (File > Save As) and pass the .csv."
    zipped = "is a zip archive, not text; unzip it and pass the file inside."
    for name, message in (("real.xlsx", workbook), ("old.xls", workbook), ("data.zip", zipped), ("data.txt", zipped)):
        # (Training refuses a .txt for having no labels before it reads a byte.)
        readers = [lambda path: list(read_texts(path))] + [load_classification_data] * (name != "data.txt")
        for read in readers:
            with pytest.raises(UserInputError) as refused:
                read(str(tmp_path / name))
            assert str(refused.value) == f"{str(tmp_path / name)!r} {message}"


def test_a_row_with_more_or_fewer_fields_than_the_header_is_refused_naming_it(tmp_path):
    """An unquoted comma in a text made DictReader file the rest of the text under the key None and the
    word after the comma the label: `music, movie film,pos` trained as the class ' movie film'."""
    from tfllm.datasets.pairs import load_pair_data

    rows = [f"text {i},{'ab'[i % 2]}" for i in range(30)]
    for bad, message in (("music, movie film scene,pos", "data row 3 (line 4) has 3 fields, the header has 2: "
                                                         "quote texts that contain commas"),
                         ("a text cut short by a line break", "data row 3 (line 4) has 1 field, the header has 2: "
                                                              "fill in the missing fields")):
        (tmp_path / "d.csv").write_text("text,label\n" + "\n".join(rows[:2] + [bad] + rows[2:]) + "\n")
        with pytest.raises(UserInputError, match="'.*d.csv' " + re.escape(message)):
            load_classification_data(str(tmp_path / "d.csv"))
        with pytest.raises(UserInputError, match=re.escape(message)):  # translation pairs are read alike
            load_pair_data(str(tmp_path / "d.csv"), source_column="text", target_column="label")
    (tmp_path / "d.tsv").write_text("text\tlabel\n" + "\n".join(r.replace(",", "\t") for r in rows[:5])
                                    + "\nan unquoted\ttab\tb\n" + "\n".join(r.replace(",", "\t") for r in rows[5:]))
    with pytest.raises(UserInputError, match="data row 6 .* has 3 fields, the header has 2: quote texts that "
                                             "contain tabs"):
        load_classification_data(str(tmp_path / "d.tsv"))
    # Quoted commas, blank lines and empty padding fields (spreadsheets' "a,b,,") read as before.
    rows[4] = '"music, movie film",a,,'
    (tmp_path / "d.csv").write_text("text,label\n" + "\n".join(rows[:9]) + "\n\n" + "\n".join(rows[9:]) + "\n")
    data = load_classification_data(str(tmp_path / "d.csv"), val_fraction=0, test_fraction=0)
    assert len(data.train) == 30 and "music, movie film" in data.train.texts and data.label_names == ["a", "b"]
    # A header with a trailing delimiter ("text,label,", a spreadsheet's) names no third column, and blank
    # padding is padding: both loaded before the row check, and must still.
    (tmp_path / "d.csv").write_text("text,label,\n" + "\n".join(r + (", " if i % 2 else "") for i, r in enumerate(rows)))
    data = load_classification_data(str(tmp_path / "d.csv"), val_fraction=0, test_fraction=0)
    assert len(data.train) == 30 and data.label_names == ["a", "b"]


@pytest.mark.parametrize("header,repeated", [("text,label,text", "'text'"), ("label,text,label", "'label'")])
def test_a_header_that_names_a_column_twice_is_refused(tmp_path, header, repeated):
    """DictReader kept the last of two same-named columns: training read the wrong column without a word."""
    (tmp_path / "d.csv").write_text(header + "\n" + "".join(f"t{i},{'ab'[i % 2]},x\n" for i in range(30)))
    with pytest.raises(UserInputError, match=f"'.*d.csv' has more than one column named {repeated} in its header"):
        load_classification_data(str(tmp_path / "d.csv"))


def test_labels_asked_for_that_the_data_lacks_are_refused_naming_the_ones_it_has(tmp_path):
    """--labels a,B,c dropped every row labelled b (and c's were all that was left of a third class);
    --labels a,b,zzz was accepted as if zzz were not there."""
    path = write_csv(tmp_path / "d.csv", [(f"text {i}", "abc"[i % 3]) for i in range(30)])
    for labels, problem in ((["a", "B", "c"], "'B', which no row has in column 'label'"),
                            (["a", "b", "zzz"], "'zzz', which no row has"), (["a", "b", "a"], "'a' more than once")):
        with pytest.raises(UserInputError, match=re.escape(f"The labels asked for ({labels}) include {problem}")
                           + ".*d.csv' has the labels \\['a', 'b', 'c'\\]"):
            load_classification_data(path, labels=labels)
    assert load_classification_data(path, labels=["c", "a"]).label_names == ["c", "a"]  # a subset, in that order
    # A label with a comma cannot be named through --labels, which splits at commas: the message says so.
    path = write_csv(tmp_path / "e.csv", [(f"text {i}", ["ok", '"bad, really"'][i % 2]) for i in range(30)])
    with pytest.raises(UserInputError, match=re.escape("(['bad', 'really']) include 'bad', 'really', which") +
                       ".*'bad, really'.*labels splits at commas"):
        load_classification_data(path, labels=["bad", "really"])


def test_hidden_folders_and_files_in_a_folder_dataset_are_skipped(tmp_path):
    """fold/.hidden/h.txt made a class '.hidden'; a Mac's ._n1.txt (binary metadata) failed as not UTF-8."""
    from tfllm.datasets import data_fingerprint
    from tfllm.datasets.text import load_documents

    write_label_folders(tmp_path)
    fingerprint = data_fingerprint(str(tmp_path))
    for hidden in (".hidden", "__MACOSX", "pos/.ipynb_checkpoints"):
        (tmp_path / hidden).mkdir()
        (tmp_path / hidden / "h.txt").write_text("not a review")
    (tmp_path / "neg" / "._0.txt").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X \xff\xfe")
    data = load_classification_data(str(tmp_path))
    assert data.label_names == ["neg", "pos"] and len(data.train) + len(data.val) + len(data.test) == 20
    assert data_fingerprint(str(tmp_path)) == fingerprint  # the files a run records are the ones it read
    (tmp_path / "pos" / "._0.txt").write_bytes(b"\x00\x05\x16\x07\xff\xfe")
    assert load_documents(str(tmp_path / "pos"))[0][0] == "pos review 0"  # a folder of documents alike


def test_the_data_a_classifier_trains_on_is_described_in_one_line(tmp_path):
    """On a 200,000-row file nothing was printed for the first 100 s (tokenizer, word vectors)."""
    from tfllm.datasets import describe

    data = load_classification_data(write_csv(tmp_path / "d.csv", ROWS * 20 + [("odd one", "rare")] * 10))
    assert describe(data) == "Data: 1,210 rows, train/val/test 968/121/121, 3 classes"


@pytest.mark.parametrize("name,good,bad", [
    ("d.csv", lambda i: f"document number {i},x\n", "a text, with a comma,x\n"),
    ("d.jsonl.gz", lambda i: json.dumps({"text": f"document number {i}"}) + "\n", "{not json\n"),
    ("d.txt", lambda i: f"document number {i}\n", "caf\xe9\n"),
])
def test_max_rows_documents_are_the_first_ones_and_nothing_after_them_is_read(tmp_path, name, good, bad):
    """load_documents(max_rows=N) read and checked the whole file before keeping N documents."""
    from tfllm.datasets.text import load_documents

    head = ("text,label\n" if name.endswith(".csv") else "") + "".join(good(i) for i in range(50))
    for file, tail in (("clean." + name, ""), (name, bad)):
        data = head.encode() + tail.encode("latin1")
        (tmp_path / file).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    train, val = load_documents(str(tmp_path / name), max_rows=20)  # the bad last row is never read
    assert train + val == [f"document number {i}" for i in range(20)]
    assert (train, val) == load_documents(str(tmp_path / ("clean." + name)), max_rows=20)
    assert len(sum(load_documents(str(tmp_path / ("clean." + name))), [])) == 50
    with pytest.raises(UserInputError, match="d\\.(csv|jsonl|txt)"):  # read whole, the bad row is refused
        load_documents(str(tmp_path / name))


def test_a_jsonl_text_may_hold_line_separators_that_are_not_newlines(tmp_path):
    """JSON Lines end at "\\n"; str.splitlines also split at U+2028 and U+0085 inside a text, which
    json.dumps(ensure_ascii=False) writes as they are, and the row was refused as invalid JSON."""
    texts = [f"line one\u2028line two {i}" if i % 2 else f"ellipsis\x85 {i}" for i in range(30)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": t, "label": "ab"[i % 2]}, ensure_ascii=False) + "\n"
                                              for i, t in enumerate(texts)), encoding="utf-8")
    data = load_classification_data(str(tmp_path / "d.jsonl"), val_fraction=0, test_fraction=0)
    assert sorted(data.train.texts) == sorted(texts)


def test_a_jsonl_object_that_repeats_a_key_is_refused_naming_the_line_and_key(tmp_path):
    """{"text": "a", "text": "b"} was read as "b" without a word (json.loads keeps the last value)."""
    lines = [json.dumps({"text": t, "label": label}) for t, label in ROWS]
    lines[6] = '{"text": "first text", "label": "pos", "text": "second text"}'
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserInputError, match=re.escape("d.jsonl' line 7 repeats the key 'text'")):
        load_classification_data(str(tmp_path / "d.jsonl"))
    lines[6] = '{"text": "a text", "label": "pos", "meta": {"id": 1, "id": 2}}'  # in a nested object too
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserInputError, match=re.escape("d.jsonl' line 7 repeats the key 'id'")):
        load_classification_data(str(tmp_path / "d.jsonl"))


@pytest.mark.parametrize("probabilities, where", [
    ([[0.2, 0.8], ["0.5", "n/a"]], "row 1, column 'pos' (counting from 0) holds 'n/a'"),
    (np.array([[0.2, 0.8], ["0.5", "n/a"]]), "row 1, column 'pos' (counting from 0) holds 'n/a'"),
    ([[0.2, 0.8], [0.5]], "row 1 (counting from 0) holds [0.5], not 2 numbers"),
])
def test_probabilities_that_are_not_numbers_are_refused_naming_the_row_and_column(probabilities, where):
    """A probability column holding text (read from a file, say) ended in NumPy's ValueError ("could
    not convert string to float"), and rows of unequal length in its "inhomogeneous shape" one."""
    from tfllm.evaluation import classification_report, roc_auc

    with pytest.raises(UserInputError, match=re.escape(f"The probabilities must be numbers: {where}")):
        classification_report([0, 1], probabilities, ["neg", "pos"])
    with pytest.raises(UserInputError, match=re.escape("The scores must be numbers: row 2 (counting from 0) holds 'x'")):
        roc_auc([0, 1, 1], [0.3, 0.9, "x"])
    # Numbers written as text are numbers, as before.
    assert classification_report([0, 1], [[0.2, 0.8], ["0.9", "0.1"]], ["neg", "pos"])["accuracy"] == 0.0


def test_a_text_too_short_for_a_language_model_names_a_length_that_is_enough(tmp_path):
    """The message asked for 142 characters, and 142 were refused again (the validation tenth was short)."""
    from tfllm.datasets.text import load_text_corpus

    (tmp_path / "short.txt").write_text("abcdefghij klmnop " * 3)
    with pytest.raises(UserInputError, match=r"too short .* give it at least (\d+) characters") as error:
        load_text_corpus(str(tmp_path / "short.txt"))
    enough = int(re.search(r"at least (\d+)", str(error.value))[1])
    (tmp_path / "enough.txt").write_text(("abcdefghij klmnop " * 20)[:enough])
    train, val = load_text_corpus(str(tmp_path / "enough.txt"))
    assert len(train) + len(val) == enough
    (tmp_path / "less.txt").write_text(("abcdefghij klmnop " * 20)[:enough - 1])
    with pytest.raises(UserInputError, match=f"at least {enough} characters"):
        load_text_corpus(str(tmp_path / "less.txt"))


@pytest.mark.parametrize("command", [True, False], ids=["command", "python"])
def test_rows_left_out_by_labels_or_added_by_max_rows_are_said(command, tmp_path, capsys, monkeypatch):
    """Said on the command's stderr in its flags; to a Python caller as a TfllmWarning in its arguments' names
    (it read "tfllm: --max-rows 4 keeps 6 rows" printed on its stderr)."""
    from tfllm import errors

    monkeypatch.setattr(errors, "command_running", command)
    rows = ROWS + [(f"shouted {i}", "POS") for i in range(10)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_classification_data(write_csv(tmp_path / "d.csv", rows), labels=["neg", "pos"])
        # --max-rows keeps 2 rows of a class whose share is less: 22 rows for --max-rows 20, said.
        # A class of one row keeps that row (the message said "at least 2 of each class" of it too).
        rows = [(f"bad {i}", "neg") for i in range(300)] + [(f"good {i}", "pos") for i in range(5)] + [("meh", "mid")]
        kept = load_classification_data(write_csv(tmp_path / "i.csv", rows), max_rows=20)
    kept = sum(len(s) for s in (kept.train, kept.val, kept.test))
    assert data.label_names == ["neg", "pos"] and kept > 20
    said = capsys.readouterr().err if command else "\n".join(str(w.message) for w in caught)
    assert command or all(w.category is TfllmWarning for w in caught) and capsys.readouterr().err == ""
    labels, max_rows = ("--labels", "--max-rows 20") if command else ("labels=['neg', 'pos']", "max_rows=20")
    # the 10 "POS" rows went without a word
    assert f"{labels} keeps 60 of 70 rows; left out: the labels ['POS'] ('POS' differ only in case from" in said
    assert f"{max_rows} keeps {kept} rows: at least 2 of each class, or all of a class's rows where it has fewer" in said
    assert ("tfllm: " in said) is command


def test_max_rows_says_when_rounding_the_classes_shares_keeps_a_row_more(tmp_path, capsys, monkeypatch):
    """Two classes of 50 rows and --max-rows 75 keep 38 + 38: the note blamed classes too small to split and
    named none ("fewer rows would leave out )")."""
    from tfllm import errors

    monkeypatch.setattr(errors, "command_running", True)
    rows = [(f"a fine film {i}", "pos") for i in range(50)] + [(f"a dull film {i}", "neg") for i in range(50)]
    kept = load_classification_data(write_csv(tmp_path / "d.csv", rows), max_rows=75)
    assert sum(len(s) for s in (kept.train, kept.val, kept.test)) == 76
    said = capsys.readouterr().err
    assert "--max-rows 75 keeps 76 rows: each class keeps its share of them, rounded to whole rows." in said, said
    assert "leave out" not in said


def test_pretraining_reads_a_labelled_folders_subfolders(tmp_path):
    from tfllm.datasets.text import load_documents

    for label in ("pos", "neg"):
        (tmp_path / "reviews" / label).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "reviews" / label / f"{i}.txt").write_text(f"a {label} review {i}\n")
    (tmp_path / "reviews" / ".cache").mkdir()
    (tmp_path / "reviews" / ".cache" / "x.txt").write_text("not data\n")
    (tmp_path / "reviews" / "empty.txt").write_text("")  # refused the whole folder ("is empty")
    train, val = load_documents(str(tmp_path / "reviews"))  # was "has no .txt files"
    assert sorted(train + val) == sorted(f"a {label} review {i}" for label in ("pos", "neg") for i in range(3))


def test_a_generator_reads_a_folder_of_text_files_as_pretraining_does(tmp_path):
    """`train --task generate --data FOLDER` was refused ("is a folder; give one .txt ...") while `pretrain` and
    `evaluate` read the same folder. Its files are read one after another, as they are (blank lines kept), each
    ending in a line break; hidden and empty files are left out, as pretraining leaves them."""
    from tfllm.datasets.text import load_text_corpus

    (tmp_path / "poems" / "later").mkdir(parents=True)
    (tmp_path / "poems" / "a.txt").write_text("the moon is up\n\nand so am I" * 10, encoding="utf-8")
    (tmp_path / "poems" / "later" / "b.txt").write_text("second file\r\n" * 10, encoding="utf-8")
    (tmp_path / "poems" / ".notes.txt").write_text("private\n")
    (tmp_path / "poems" / "empty.txt").write_text("")
    train, val = load_text_corpus(str(tmp_path / "poems"))
    assert train + val == ("the moon is up\n\nand so am I" * 10 + "\n") + "second file\n" * 10
    (tmp_path / "none").mkdir()
    with pytest.raises(UserInputError, match=r"^Folder '.*none' \((--)?lm\) has no .txt files"):
        load_text_corpus(str(tmp_path / "none"), flag="--lm")


def test_a_jsonl_row_without_the_text_key_is_named_as_that_rows_gap(tmp_path):
    from tfllm.datasets import read_texts

    (tmp_path / "first.jsonl").write_text('{"label": "pos"}\n{"text": "a fine film"}\n')
    with pytest.raises(UserInputError, match="data row 1 has no text column 'text'; its columns are \\['label'\\]. "
                       "Give that row a 'text', or pass text_column=\\.\\.\\. naming"):
        list(read_texts(str(tmp_path / "first.jsonl")))
    (tmp_path / "later.jsonl").write_text('{"text": "a fine film"}\n{"label": "pos"}\n')
    with pytest.raises(UserInputError, match="data row 2 has no text column 'text'.*Give it one, or remove the row"):
        list(read_texts(str(tmp_path / "later.jsonl")))


def test_a_csv_without_a_header_row_is_told_to_add_one(tmp_path, monkeypatch):
    """A header-less CSV was told "Pass --text-column with one of them", naming its first data row's cells as
    columns: following that reads the first row as the header. Its first line looks like data (a label that
    recurs below it, a text of many words), so the message says to add a header line, still naming the cells."""
    from tfllm import errors
    from tfllm.datasets import read_texts
    from tfllm.datasets.pairs import load_pair_data

    monkeypatch.setattr(errors, "command_running", True)  # as the commands read it: their flags
    first, *rest = ROWS
    path = write_csv(tmp_path / "nohead.csv", rest, header=",".join(first))
    for read, what, line in ((lambda: load_classification_data(path), "text", "'text,label'"),
                             (lambda: load_classification_data(path, text_column=first[0]), "label", "'" + first[0] + ",label'"),
                             (lambda: list(read_texts(path)), "text", "'text'"),
                             (lambda: load_pair_data(path, "text", "label"), "source", "'text,label'")):
        with pytest.raises(UserInputError) as refused:
            read()
        assert str(refused.value).startswith(f"{path!r} has no {what} column ")
        assert f"seems to have no header row: its first line, read as the column names, is {list(first)}. If so, " \
               f"add a header line naming its columns first (e.g. {line}); if not, pass --{what}-column" in str(refused.value)
    tsv = write_csv(tmp_path / "nohead.tsv", rest, header=",".join(first), delimiter="\t")
    with pytest.raises(UserInputError, match="no header row.*'text' and 'label', tab-separated"):
        load_classification_data(tsv)
    # A header that is one: the message as before.
    with pytest.raises(UserInputError, match=r"has no text column 'text'; its columns are \['review', 'label'\]\. Pass"):
        load_classification_data(write_csv(tmp_path / "h.csv", header="review,label"))


def test_texts_of_a_csv_without_rows_or_without_the_column_are_refused_from_its_header(tmp_path, monkeypatch):
    """`predict --file h.csv` (a header, no rows) exited 0 with no output, a misspelt --text-column unnoticed;
    with rows, a missing column was "data row 1"'s, though the header is what lacks it."""
    from tfllm import errors
    from tfllm.datasets import read_texts

    monkeypatch.setattr(errors, "command_running", True)  # as `tfllm predict` reads it: its flags
    (tmp_path / "h.csv").write_text("review,sentiment\n")
    with pytest.raises(UserInputError) as refused:
        list(read_texts(str(tmp_path / "h.csv"), "review"))
    assert str(refused.value) == f"{str(tmp_path / 'h.csv')!r} has a header but no rows. Add rows with a 'review' text."
    for name in ("h.csv", "d.csv"):
        write_csv(tmp_path / "d.csv", header="review,sentiment")
        with pytest.raises(UserInputError) as refused:
            list(read_texts(str(tmp_path / name), "nosuch"))
        assert str(refused.value) == (f"{str(tmp_path / name)!r} has no text column 'nosuch'; its columns are "
                                      "['review', 'sentiment']. Pass --text-column with one of them.")
    (tmp_path / "e.json").write_text("[]")
    with pytest.raises(UserInputError, match="e.json' has no rows. Add rows with a 'text' text."):
        list(read_texts(str(tmp_path / "e.json")))


def test_a_byte_order_mark_where_files_were_joined_is_not_part_of_a_text(tmp_path):
    """`cat a.txt b.txt` of two files saved with a BOM: the second's stayed in its first text ("\ufeff今天天气")."""
    from tfllm.datasets import read_texts
    from tfllm.datasets.text import load_text_corpus

    bom = "\ufeff".encode("utf-8")
    (tmp_path / "x.txt").write_bytes(bom + "中国经济\n".encode("utf-8") + bom + "今天天气\n好".encode("utf-8"))
    assert list(read_texts(str(tmp_path / "x.txt"))) == ["中国经济", "今天天气", "好"]
    (tmp_path / "g.txt").write_bytes((bom + "the quick brown fox jumps\n".encode("utf-8")) * 40)
    train, val = load_text_corpus(str(tmp_path / "g.txt"))
    assert "\ufeff" not in train + val
    # Not at a line's start, it is a zero-width no-break space in the text, and stays.
    (tmp_path / "y.txt").write_text("a\ufeffb\n", encoding="utf-8")
    assert list(read_texts(str(tmp_path / "y.txt"))) == ["a\ufeffb"]


def test_file_kinds_go_by_suffix_in_any_case(tmp_path):
    """A Windows export (REVIEWS.CSV, a folder of .TXT files) was refused as "Unsupported data file", read as
    plain text by predict --file (its header a text to classify), or its files skipped without a word."""
    from tfllm.datasets import read_texts
    from tfllm.datasets.text import load_text_corpus

    write_csv(tmp_path / "REVIEWS.CSV")
    assert load_classification_data(str(tmp_path / "REVIEWS.CSV")).num_classes == 2
    assert list(read_texts(str(tmp_path / "REVIEWS.CSV"))) == [text for text, _ in ROWS]
    (tmp_path / "GEN.CSV").write_text("id,body\n" + "".join(f"{i},the quick brown fox {i} jumps\n" for i in range(80)))
    train, val = load_text_corpus(str(tmp_path / "GEN.CSV"), text_column="body")
    assert "the quick brown fox 0 jumps" in train and "id" not in train + val
    for label in ("pos", "neg"):
        (tmp_path / "folder" / label).mkdir(parents=True)
        for i in range(8):
            (tmp_path / "folder" / label / f"{label}{i}.TXT").write_text(f"{label} text {i}")
        with gzip.open(tmp_path / "folder" / label / "more.txt.gz", "wt") as f:
            f.write(f"{label} gzipped")
    data = load_classification_data(str(tmp_path / "folder"))
    texts = [*data.train.texts, *data.val.texts, *data.test.texts]
    assert len(texts) == 18 and "pos gzipped" in texts


def test_labels_of_other_digits_are_classes(tmp_path):
    """'①'.isdigit() is True but int('①') fails: training ended in a ValueError traceback."""
    rows = [(f"good {i}", "①") for i in range(20)] + [(f"bad {i}", "②") for i in range(20)] + \
        [(f"so-so {i}", "10") for i in range(20)] + [(f"fine {i}", "9") for i in range(20)]
    write_csv(tmp_path / "d.csv", rows)
    assert load_classification_data(str(tmp_path / "d.csv")).label_names == ["9", "10", "①", "②"]


def test_labels_that_are_all_numbers_are_classes_in_numeric_order(tmp_path):
    """Star ratings 4, 5, 5.0, 4.5 / 1, 2, 1.0, 2.5 gave labels.json ["1", "2", "4", "5", "2.5", "4.5"]: the
    decimals after every whole number, as text sorts them."""
    ratings = ["4", "5", "5.0", "4.5", "1", "2", "1.0", "2.5", "-0.5", "1e1"]
    rows = [(f"review {i}", ratings[i % len(ratings)]) for i in range(100)]
    assert load_classification_data(write_csv(tmp_path / "d.csv", rows)).label_names == \
        ["-0.5", "1", "2", "2.5", "4", "4.5", "5", "1e1"]
    # Not all numbers: whole numbers first, by value, then the others as text (as before).
    rows += [(f"unrated {i}", "none") for i in range(10)]
    assert load_classification_data(write_csv(tmp_path / "d.csv", rows)).label_names == \
        ["1", "2", "4", "5", "-0.5", "1e1", "2.5", "4.5", "none"]


def test_json_values_that_are_not_text_are_refused_wherever_texts_are_read(tmp_path):
    """predict --file, generation and pretraining corpora and --unlabeled read str(value): "['a', 'b']" was a
    text, where a classifier's training data refused it."""
    from tfllm.datasets import read_texts
    from tfllm.datasets.text import load_documents, load_text_corpus

    (tmp_path / "p.jsonl").write_text('{"text": "great"}\n{"text": ["a", "b"]}\n')
    with pytest.raises(UserInputError, match=r"data row 2 has a JSON list, not text, in column 'text'"):
        list(read_texts(str(tmp_path / "p.jsonl")))
    (tmp_path / "g.jsonl").write_text("".join(json.dumps({"text": {"body": "the fox"} if i % 2 else f"a fox {i}"}) + "\n"
                                              for i in range(30)))
    for load in (load_text_corpus, load_documents):
        with pytest.raises(UserInputError, match=r"data row 2 has a JSON dict, not text"):
            load(str(tmp_path / "g.jsonl"))


def test_windows_line_endings_are_not_text_to_learn(tmp_path):
    from tfllm.datasets.text import load_text_corpus

    (tmp_path / "crlf.txt").write_bytes(b"".join(b"First Citizen: speak, speak %d.\r\n" % i for i in range(200)))
    train, val = load_text_corpus(str(tmp_path / "crlf.txt"))
    assert "\r" not in train + val and train.count("\n") > 100
    # Old Macs' lone "\r" (the file read as one line of 200 "\r"s), and a line break inside an Excel CSV's
    # quoted cells (csv keeps its "\r\n"): "\r" reached a generator's vocabulary.
    (tmp_path / "cr.txt").write_bytes(b"".join(b"First Citizen: speak, speak %d.\r" % i for i in range(200)))
    with open(tmp_path / "excel.csv", "w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\r\n").writerows(
            [["text"]] + [[f"First Citizen: speak {i}.\r\nsecond line {i}"] for i in range(200)])
    for name in ("cr.txt", "excel.csv"):
        train, val = load_text_corpus(str(tmp_path / name))
        assert "\r" not in train + val and train.count("\n") > 100, name


def test_a_class_without_test_rows_is_named(tmp_path):
    """Its recall, precision and F1 were 0 in the macro averages (0.33 recall beside 0.5 balanced accuracy)."""
    from tfllm.datasets import warn_about_unscored_classes

    write_csv(tmp_path / "d.csv", ROWS + [("a weird neutral one", "neutral")])
    with pytest.warns(TfllmWarning, match="^class\\(es\\) 'neutral' have no test rows") as caught:
        warn_about_unscored_classes(load_classification_data(str(tmp_path / "d.csv")))
    assert len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", TfllmWarning)
        warn_about_unscored_classes(load_classification_data(write_csv(tmp_path / "e.csv")))


def test_a_classifier_split_of_a_few_rows_is_warned_of(tmp_path):
    """6 validation rows: one more right moves accuracy by 17 points, and early stopping follows that noise."""
    from tfllm.datasets import warn_about_small_splits

    data = load_classification_data(write_csv(tmp_path / "d.csv", ROWS[:30]))
    assert 0 < len(data.val) < 10
    with pytest.warns(TfllmWarning, match=f"^'d.csv' gives only {len(data.val)} validation rows? and") as caught:
        warn_about_small_splits("d.csv", data)
    assert len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", TfllmWarning)
        warn_about_small_splits("rotten_tomatoes", load_classification_data("rotten_tomatoes", max_rows=400))


def test_the_imbalance_warning_of_many_classes_lists_the_commonest_and_rarest():
    """200 classes made one 4 KB line listing every class and its count."""
    from types import SimpleNamespace

    from tfllm.datasets import warn_about_imbalance

    names = [f"class_{i}" for i in range(200)]
    labels = [i for i in range(200) for _ in range(2 + i)]  # class_0 rarest (2 rows), class_199 commonest (201)
    data = SimpleNamespace(train=SimpleNamespace(labels=labels), num_classes=200, label_names=names)
    with pytest.warns(TfllmWarning) as caught:
        warn_about_imbalance(data, balanced=False)
    err = str(caught[0].message)
    assert len(caught) == 1 and "\n" not in err and len(err) < 700, err
    assert "(200 classes, commonest first: 'class_199' 201, 'class_198' 200," in err
    assert "... 190 more ..., " in err and "'class_1' 3, 'class_0' 2 training rows)" in err
    assert "class_100" not in err
    # A few classes are all listed, in their order, as before.
    data = SimpleNamespace(train=SimpleNamespace(labels=[0] * 9 + [1]), num_classes=2, label_names=["neg", "pos"])
    with pytest.warns(TfllmWarning, match=re.escape("('neg' 9, 'pos' 1 training rows)")):
        warn_about_imbalance(data, balanced=True)


def test_excels_sep_line_is_named_not_read_as_a_header(tmp_path):
    """Excel's "sep=;" first line was the header: 'data row 1 has 2 fields, the header has 1: quote texts that
    contain semicolons', a fix that does not help."""
    path = tmp_path / "excel.csv"
    path.write_text("sep=;\ntext;label\n" + "".join(f"text {i};{'ab'[i % 2]}\n" for i in range(40)))
    with pytest.raises(UserInputError, match=r"starts with Excel's delimiter line \(sep=\), not a header: delete"):
        load_classification_data(str(path))
    path.write_text("text;label\n" + "".join(f"text {i};{'ab'[i % 2]}\n" for i in range(40)))
    assert load_classification_data(str(path)).label_names == ["a", "b"]  # without it, read as it is



def test_a_title_line_above_the_header_is_named_not_read_as_a_header(tmp_path):
    """A report's title line and a blank line above the header: 'data row 1 (line 3) has 2 fields, the header has
    1: quote texts that contain commas', a fix that does not help."""
    from tfllm.datasets import read_texts

    path = tmp_path / "report.csv"
    rows = "review,stars\r\n" + "".join(f"text {i},{'ab'[i % 2]}\r\n" for i in range(40))
    path.write_text("Report exported 2024-01-01\r\n\r\n" + rows)
    header = re.escape("seems to have its header on line 3 (['review', 'stars']), under a first line of one field "
                       "('Report exported 2024-01-01'): delete the lines above the header.")
    with pytest.raises(UserInputError, match=header):
        load_classification_data(str(path), text_column="review", label_column="stars")
    with pytest.raises(UserInputError, match=header):
        list(read_texts(str(path), "review"))
    path.write_text(rows)
    assert load_classification_data(str(path), text_column="review", label_column="stars").label_names == ["a", "b"]
    # A later row too long for its header is still a text to quote.
    path.write_text("text\n" + "".join(f"text {i}\n" for i in range(5)) + "a text, with a comma\n")
    with pytest.raises(UserInputError, match="data row 6 .*has 2 fields, the header has 1: quote texts that contain"):
        list(read_texts(str(path)))


@pytest.mark.parametrize("first_has_it", [False, True])
def test_a_corpus_text_column_is_judged_across_rows_and_skipped_rows_are_counted(tmp_path, first_has_it):
    """Pretraining and generation corpora: a JSONL file whose row 1 lacked "body" was refused ("has no text column
    'body'; its columns are ['other']") though most rows had it; with row 1 having it, the rows without it, and
    empty CSV cells, were dropped without a word (200 rows read as 180 documents)."""
    from tfllm.datasets.text import load_documents, load_text_corpus

    rows = [{"body": f"the quick brown fox {i} jumps"} if i % 4 else {"other": i} for i in range(first_has_it, 41)]
    rows[5] = {"body": "  "}  # an empty text, its key there
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    (tmp_path / "c.csv").write_text("id,body\n" + "".join(f"{i},{row.get('body', '')}\n" for i, row in enumerate(rows)),
                                    encoding="utf-8")
    missing = sum("body" not in row for row in rows)
    first = next(number for number, row in enumerate(rows, 1) if not row.get("body", "").strip())
    for name, said in (("c.jsonl", f"({missing} without the key, 1 empty; first: data row {first})"),
                       ("c.csv", f"({missing + 1} empty; first: data row {first})")):
        for load in (load_documents, load_text_corpus):
            with pytest.warns(TfllmWarning) as caught:
                train, val = load(str(tmp_path / name), text_column="body")
            assert [str(w.message) for w in caught] == [
                f"{str(tmp_path / name)!r} has {missing + 1} row(s) without text in column 'body' {said}; they are "
                "left out."]
            texts = train + val if load is load_documents else train.split("\n\n") + val.split("\n\n")
            assert len(texts) == len(rows) - missing - 1
    for load in (load_documents, load_text_corpus):  # no row has it: refused, naming every column seen
        with pytest.raises(UserInputError, match=r"has no text column 'nope'; its columns are \['other', 'body'\]"
                           if not first_has_it else r"its columns are \['body', 'other'\]"):
            load(str(tmp_path / "c.jsonl"), text_column="nope")


def test_causal_pretraining_splits_a_single_long_document_as_a_text_file_is(tmp_path):
    """`pretrain --objective causal --data giant.txt` (one line of 23.8k characters) was refused: "has 1 non-empty
    document(s); at least 2 are needed", where `train --task generate` on the same file trained. Causal pretraining
    reads running text, so the line is split by characters as a text file is; masked-LM pretraining, whose
    documents are its examples, still refuses it."""
    from tfllm.config import TrainConfig
    from tfllm.datasets.text import load_documents, load_run_text

    text = " ".join(f"word{i}" for i in range(400))
    (tmp_path / "giant.txt").write_text(text + "\n", encoding="utf-8")
    config = TrainConfig(task="pretrain", objective="causal", data=str(tmp_path / "giant.txt"))
    train, val = load_run_text(config)
    assert train + val == text and len(val) == len(text) - int(len(text) * 0.9)  # the last 10%, as a text file's
    with pytest.raises(UserInputError, match="has 1 non-empty document\\(s\\); at least 2 are needed"):
        load_documents(str(tmp_path / "giant.txt"))


def test_excel_s_padding_rows_of_empty_cells_are_skipped_as_blank_lines_are(tmp_path):
    """Excel pads a sheet's used range with rows of empty cells (",\\r\\n"): training refused them as rows "with
    empty text ... Remove or fill them", and predict as "an empty 'review'", where blank lines were skipped."""
    from tfllm.datasets import read_texts

    rows = "review,stars\r\n" + "".join(f"good {i},5\r\nbad {i},1\r\n" for i in range(15))
    padded = tmp_path / "padded.csv"
    padded.write_bytes((rows + ",\r\n , \r\n\r\n,\r\n").encode("utf-8-sig"))
    (tmp_path / "plain.csv").write_bytes(rows.encode())
    data = load_classification_data(str(padded), text_column="review", label_column="stars")
    plain = load_classification_data(str(tmp_path / "plain.csv"), text_column="review", label_column="stars")
    assert (data.train.texts, data.test.texts, data.label_names) == (plain.train.texts, plain.test.texts, ["1", "5"])
    assert list(read_texts(str(padded), "review")) == list(read_texts(str(tmp_path / "plain.csv"), "review"))
    tsv = tmp_path / "padded.tsv"
    tsv.write_text(rows.replace(",", "\t") + "\t\r\n")
    assert len(list(read_texts(str(tsv), "review"))) == 30
    # Between rows, a row of empty cells (or one quoted "" cell) is a row that `predict --file` and `translate
    # --file` answer: left out, the output lines below it answered the rows below theirs. Refused as ",5" is.
    for name, text in (("gap.csv", "review,stars\ngood,5\n,\n , \nbad,1\n,\n"),
                       ("gap.tsv", "review\tstars\ngood\t5\n\t\nbad\t1\n"),
                       ("quoted.csv", 'review\ngood\n""\nbad\n'), ("half.csv", "review,stars\ngood,5\n,5\nbad,1\n")):
        (tmp_path / name).write_text(text)
        with pytest.raises(UserInputError, match=f"^'.*{name}' data row 2 has an empty 'review'; fill it in or "
                           "remove the row, so that each output line answers one row.$"):
            list(read_texts(str(tmp_path / name), "review"))
    (tmp_path / "only.csv").write_text("review,stars\n,\n,\n")
    with pytest.raises(UserInputError, match="has a header but no rows"):
        list(read_texts(str(tmp_path / "only.csv"), "review"))
    # A row with some cells filled is still a row: an empty text beside a label is refused.
    (tmp_path / "half.csv").write_text(rows + ",5\r\n")
    with pytest.raises(UserInputError, match="1 row\\(s\\) with empty text in column 'review'"):
        load_classification_data(str(tmp_path / "half.csv"), text_column="review", label_column="stars")
