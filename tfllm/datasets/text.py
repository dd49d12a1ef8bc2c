"""Reading running text for language modelling: the bundled corpus or a user's file."""

import functools
import itertools
import os

import numpy as np

from tfllm.datasets import (_saved_model, bundled_path, hidden, is_table, is_text_file, iter_rows, read_lines,
                            read_text_file, text_value)
from tfllm.config import expand_home
from tfllm.errors import UserInputError, warn

# name -> file in tfllm/datasets/data
BUNDLED_TEXT = {"shakespeare": "shakespeare.txt.gz", "zh_news": "zh_news.txt.gz"}

# Below this many characters a split cannot hold even one training window of a
# small model; the trainer checks against the model's real window as well.
MIN_CHARACTERS = 64

# CJK ideographs, as KerasHub's pretokenizer (split_on_cjk) lists them: the unified blocks, extensions
# A-E and the compatibility blocks. A character class for both `re` and `regex`; the tokenizers,
# the translation memory and the translation metrics treat each such character as a word. A copy of
# keras_hub's `PY_CJK_REGEX` because importing that module starts TensorFlow, which the NumPy fast
# paths avoid; tests/test_tokenizers.py checks the two match the same characters.
CJK_IDEOGRAPHS = (r"[\u4E00-\u9FFF\u3400-\u4DBF\U00020000-\U0002A6DF\U0002A700-\U0002B73F"
                  r"\U0002B740-\U0002B81F\U0002B820-\U0002CEAF\uF900-\uFAFF\U0002F800-\U0002FA1F]")

# A classifier's word view (tfllm.models.text_classifier.word_ngram_ids; tfllm.fast_classification's NumPy
# copy, which must not start TensorFlow, reads these too): scikit-learn's default tokens (`\b\w\w+\b`,
# lowercased), hashed as character n-grams are. A word's first WORD_LENGTH characters identify it (longer
# words are rare). The word characters are Python's `\w` in ASCII and Latin-1; beyond them, all but the
# general punctuation (U+2000-206F: dashes, curly quotes, ellipsis) and CJK punctuation (U+3000-303F) blocks.
WORD_LENGTH = 20
WORD_SEED, WORD_BIGRAM_SEED = 1, 7
WORD_CHARACTERS = ((48, 57), (65, 90), (95, 95), (97, 122), (170, 170), (178, 179), (181, 181), (185, 186),
                   (188, 190), (192, 214), (216, 246), (248, 0x1FFF), (0x2070, 0x2FFF), (0x3040, 0x10FFFF))

# Both views lowercase what scikit-learn's `str.lower` would, code point by code point: below
# LOWERCASE_LIMIT (Latin and its extensions, Vietnamese, Greek, Cyrillic, Armenian, Georgian) through a
# table, and the fullwidth Latin capitals of CJK text (U+FF21-FF3A) by +32. A code point whose lowercase
# is two code points ("İ") and the final sigma rule are left out. Integer ops (a gather), so Keras, TFLite
# and NumPy agree without Unicode tables of their own.
LOWERCASE_LIMIT = 0x2000
FULLWIDTH_CAPITALS = (0xFF21, 0xFF3A)


@functools.cache
def lowercase_table():
    """int32 array (read-only) of LOWERCASE_LIMIT code points: entry c is c lowercased (c where nothing changes)."""
    table = np.array([ord(chr(c).lower()) if len(chr(c).lower()) == 1 else c for c in range(LOWERCASE_LIMIT)],
                     np.int32)
    table.flags.writeable = False
    return table


# Separates documents read from CSV/JSONL rows; the tokenizers keep "\n".
DOCUMENT_SEPARATOR = "\n\n"


def load_text_corpus(name_or_path, text_column=None, val_fraction=0.1, flag="--data", use="train", whole=False):
    """Loads running text and splits it into training and validation text.

    Args:
        name_or_path: `"shakespeare"` (bundled, 1.2 M characters, 77 symbols), `"zh_news"`
            (bundled, People's Daily 1998, 1.8 M Chinese characters), a `.txt`/`.txt.gz`
            file, a folder of them (their text one file after another), or a
            `.csv`/`.tsv`/`.jsonl` file (optionally `.gz`) whose `text_column`
            holds one document per row.
        text_column: column of a CSV/JSONL file (default `"text"`).
        val_fraction: the last this fraction of the text becomes validation,
            as nanoGPT does (documents of a CSV/JSONL file stay whole).
        flag: the option the messages name (`translate --lm` reads a corpus too, and has no
            `--text-column`: its CSV/JSONL column is `text`).
        use: what the text is for, as a too-short text's message says it ("train", "score").
        whole: return all the text as one string, every row boundary kept (what evaluate scores).

    Returns:
        `(train_text, val_text)`, two strings.

    Example:
    >>> train, val = load_text_corpus("shakespeare")
    >>> len(train), len(val)
    (1104602, 122734)
    """
    if not 0 < val_fraction < 1:
        raise UserInputError(f"val_fraction must be between 0 and 1, got {val_fraction}.")
    if name_or_path in BUNDLED_TEXT:
        path = bundled_path(BUNDLED_TEXT[name_or_path])
    else:
        path = expand_home(name_or_path)  # `translate(lm="~/corpus.txt")` from a notebook: the home folder's
        if not os.path.exists(path):
            raise UserInputError(
                f"{flag} {path!r} does not exist. Check the path, or use a bundled corpus: "
                f"{', '.join(BUNDLED_TEXT)}."
            )
    joint = ""  # what goes between train and val in the whole text: rows split between them lose their separator
    if is_table(path):
        column = text_column or "text"
        rows = list(iter_rows(path, f"Point {flag} at a file with text.", column))
        # Any row: a JSONL object may leave the key out (row 0 without it refused a file most of whose rows had it).
        if rows and not any(column in row for row in rows):
            raise UserInputError(
                f"{path!r} has no text column {column!r}; its columns are {_columns_seen(rows)}. "
                + ("Pass --text-column with one of them." if flag == "--data" else f"{flag} reads a column named 'text'.")
            )
        documents, skipped = [], _SkippedRows()
        for number, row in enumerate(rows, 1):
            text = text_value(row.get(column), path, f"data row {number}", column)
            if skipped.count(number, row, column, text):
                documents.append(unix_newlines(text.strip()))
        skipped.warn(path, column)
        if not documents:
            raise UserInputError(f"{path!r} has no non-empty text in column {column!r}.")
        n_val = max(1, round(len(documents) * val_fraction)) if len(documents) > 1 else 0
        train = DOCUMENT_SEPARATOR.join(documents[: len(documents) - n_val])
        val = DOCUMENT_SEPARATOR.join(documents[len(documents) - n_val:])
        if not val:  # a single document: split it like a text file
            train, val = _split_text(train, val_fraction)
        else:
            joint = DOCUMENT_SEPARATOR
    else:
        if os.path.isdir(path):  # a folder of .txt files, as pretraining reads one: the files one after another
            # (they were refused here while `pretrain` and `evaluate` read them); each ends in a line break.
            texts = (read_text_file(file) for file in _folder_files(path, flag) if os.path.getsize(file))
            text = "".join(t if t.endswith("\n") else t + "\n" for t in texts)
        else:
            text = read_text_file(path, f"Point {flag} at a file with text.")
        train, val = _split_text(unix_newlines(text), val_fraction)
    if not _long_enough(train, val):
        # The least text whose split passes (a figure from a formula was refused again at its length).
        need = len(train) + len(val) + 1
        while not _long_enough(*_split_text("x" * need, val_fraction)):
            need += 1
        raise UserInputError(
            f"{flag} {path!r} is too short to {use} a language model ({len(train) + len(val)} characters); "
            f"give it at least {need} characters of text."
        )
    return train + joint + val if whole else (train, val)


def _columns_seen(rows):
    """The column names of `rows` (dicts), in the order they first appear."""
    return list(dict.fromkeys(key for row in rows for key in row if key is not None))


class _SkippedRows:
    """Counts the CSV/JSONL rows a language-model corpus leaves out: without the text column's key (a JSONL
    object) or with an empty text. Both went without a word (200 rows read as 180 documents); a classifier's
    data refuses such rows, but unlabeled text loses nothing by skipping them, so this says how many."""

    def __init__(self):
        self.missing, self.empty, self.first = 0, 0, None

    def count(self, number, row, column, text):
        """Whether data row `number` has text; counts it where it has none."""
        if text is not None and text.strip():
            return True
        if column not in row:
            self.missing += 1
        else:
            self.empty += 1
        self.first = self.first or number
        return False

    def warn(self, path, column):
        if self.missing or self.empty:
            kinds = [f"{n} without the key" if what == "missing" else f"{n} empty" for what, n in
                     (("missing", self.missing), ("empty", self.empty)) if n]
            warn(f"{path!r} has {self.missing + self.empty} row(s) without text in column {column!r} "
                 f"({', '.join(kinds)}; first: data row {self.first}); they are left out.")


def unix_newlines(text):
    """Line breaks as "\n": Windows' "\r\n" (a .txt, or a line break inside an Excel CSV's quoted cell) and old
    Macs' lone "\r" made "\r" a character of the text the model learns and writes back (a lone-"\r" file read
    as one line). Generation reads its prompts through it too, as the text the model learned from."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _long_enough(train, val):
    return len(train) >= MIN_CHARACTERS and len(val) >= MIN_CHARACTERS // 4


def _split_text(text, val_fraction):
    cut = int(len(text) * (1 - val_fraction))
    return text[:cut], text[cut:]


def check_text_column(name_or_path, text_column, bundled=True):
    """A UserInputError for a --text-column (other than the default) given with data that has no columns:
    a .txt file, a folder of them or a bundled corpus, of which every line is read all the same (it was
    accepted and ignored). For the language-model trainers' --data and for predict's and translate's --file
    (`bundled=False`: a path only); a self-training run's --unlabeled .txt beside a CSV's --text-column is
    fine, so the loaders themselves do not check."""
    from tfllm.datasets import BUNDLED

    if text_column in (None, "text"):
        return
    if name_or_path == "-":  # a piped CSV's rows, header and all, were classified as texts
        raise UserInputError(f"--text-column {text_column!r} names a column of a CSV/JSONL file, and --file - reads "
                             "standard input one text a line; pass the file's path to --file instead.")
    if bundled and name_or_path in BUNDLED:  # labelled CSVs: columns, as any CSV
        return
    in_bundle = bundled and name_or_path in BUNDLED_TEXT
    path = bundled_path(BUNDLED_TEXT[name_or_path]) if in_bundle else name_or_path
    if not os.path.exists(path) or (not os.path.isdir(path) and is_table(path)):
        return  # a missing path is the loaders' to report
    what = "a folder of .txt files" if os.path.isdir(path) else "text, not a CSV/JSONL file"
    raise UserInputError(f"--text-column {text_column!r} names a column of a CSV/JSONL file, and {name_or_path!r} "
                         f"is {what} (each line read as one text); leave --text-column out.")


def load_run_text(config):
    """`(train_text, val_text)` exactly as a language-model run of `config` (a `TrainConfig`) read and split
    them: its training, `evaluate` without --data, and the TFLite export's parity prompt."""
    check_text_column(config.data, config.text_column)
    if config.task == "pretrain":  # unlabeled documents, one per line, in any of pretraining's formats
        # --max-rows: the first N documents, as for the other pretraining objectives.
        train_docs, val_docs = load_documents(config.data, text_column=config.text_column, val_fraction=0.1,
                                              max_rows=config.max_rows, split_single=True)
        return "\n".join(train_docs), "\n".join(val_docs)
    train_text, val_text = load_text_corpus(config.data, text_column=config.text_column if config.text_column != "text" else None)
    if config.max_rows:  # quick runs: the first N characters of each split
        train_text, val_text = train_text[: config.max_rows], val_text[: max(config.max_rows // 9, 1)]
    return train_text, val_text


def document_start(config):
    """The text a run's corpus puts before each document (a `TrainConfig`'s), which an empty prompt continues to
    generate a new one: the blank line between CSV/JSONL rows (`DOCUMENT_SEPARATOR`), a line break in a .txt
    (its lines kept) or pretraining's documents (one a line). None for a KerasHub preset's run: its start
    token already begins a text."""
    if config.from_preset:
        return None
    data = config.data or ""
    return DOCUMENT_SEPARATOR if config.task != "pretrain" and data not in BUNDLED_TEXT and is_table(data) else "\n"


def load_documents(name_or_path, text_column=None, val_fraction=0.05, max_rows=None, flag="--data",
                   split_single=False):
    """Unlabeled documents for pretraining: `(train_documents, val_documents)`, two lists of strings.

    Args:
        name_or_path: a bundled corpus (`zh_news`, `shakespeare`) or labelled
            dataset (`rotten_tomatoes`: its training split's texts, labels
            ignored), a `.txt`/`.txt.gz` file (one document per line), a folder
            of `.txt` files, its subfolders too (each line of each file a document), or a
            `.csv`/`.tsv`/`.jsonl` file (optionally `.gz`) with a `text_column`.
            Where the data has a split column, only its training rows are read.
        text_column: column of a CSV/JSONL file (default `"text"`).
        val_fraction: the last this fraction of the documents is held out to
            report validation figures.
        max_rows: read only the first this many documents.
        flag: the option the messages name (self-training reads `--unlabeled` texts).
        split_single: a single document is split by characters, as `load_text_corpus` splits a text file
            (causal pretraining reads running text, so one long line is a corpus); otherwise it is refused.

    Example:
    >>> train, val = load_documents("zh_news")
    >>> len(train) + len(val)
    19484
    """
    from tfllm.datasets import BUNDLED

    column = text_column or "text"
    if name_or_path in BUNDLED:  # every text of the training split (rotten_tomatoes: plot summaries too)
        path = bundled_path(BUNDLED[name_or_path][0])
    else:
        path = bundled_path(BUNDLED_TEXT[name_or_path]) if name_or_path in BUNDLED_TEXT else name_or_path
    if not os.path.exists(path):
        raise UserInputError(f"{flag} {path!r} does not exist. Check the path, or use a bundled corpus: "
                             f"{', '.join([*BUNDLED_TEXT, *BUNDLED])}.")
    documents, skipped = [], _SkippedRows()
    for line in _document_lines(path, column, f"Point {flag} at a file with rows of text.", skipped, flag):
        if line.strip():
            documents.append(line.strip())
            if max_rows and len(documents) == max_rows:
                break  # the rest of the file is never read: a sample of a large file starts at once
    skipped.warn(path, column)
    if len(documents) == 1 and split_single:
        return [[part] for part in _split_text(documents[0], val_fraction)]
    if len(documents) < 2 and max_rows == len(documents):  # the data has more: it was said to have one
        raise UserInputError(f"--max-rows {max_rows} keeps {max_rows} document of {name_or_path!r}; at least 2 are "
                             "needed (one is held out for validation): raise --max-rows.")
    if len(documents) < 2:
        raise UserInputError(f"{name_or_path!r} has {len(documents)} non-empty document(s); at least 2 are "
                             "needed (one per line of a .txt file, or one per row of a CSV/JSONL text column).")
    n_val = max(1, round(len(documents) * val_fraction))
    return list(documents[:-n_val]), list(documents[-n_val:])


def _document_lines(path, column, empty_fix, skipped, flag="--data"):
    """What `load_documents` keeps the non-blank ones of, read only as far as it asks: the lines of a .txt
    file or of a folder's .txt files, or a CSV/JSONL column's texts (of its training rows, where it has a
    split column); `skipped` (a `_SkippedRows`) counts the rows without text."""
    if os.path.isdir(path):
        for file in _folder_files(path, flag):
            if not os.path.getsize(file):
                continue  # an empty file among others holds no documents (it refused the whole folder)
            for line in read_lines(file, empty_fix, flag):
                yield from line.splitlines()  # as the whole text's splitlines: read_lines ends lines at "\n"
    elif is_table(path):
        rows = iter_rows(path, empty_fix, column, flag=flag)
        first = next(rows, None)
        if first is None:
            return
        split, other_splits, any_train = "split" in first, set(), False
        # Judged across rows, not by the first: a JSONL object may leave the key out (row 0 without it refused a
        # file most of whose rows had it). The column names seen, until a row has the text column.
        columns = {}
        for number, row in enumerate(itertools.chain([first], rows), 1):
            if columns is not None:
                columns = None if column in row else columns | dict.fromkeys(k for k in row if k is not None)
            if split:  # only the training split is read
                if str(row.get("split", "")).strip().lower() != "train":
                    other_splits.add(str(row.get("split")))
                    continue
                any_train = True
            text = text_value(row.get(column), path, f"data row {number}", column)
            if skipped.count(number, row, column, text):
                yield text
        if columns is not None:
            if flag == "--data":
                raise UserInputError(f"{path!r} has no text column {column!r}; its columns are {list(columns)}. "
                                     "Pass --text-column with one of them.")
            # Another file of the command (self-training's --unlabeled) is read in --data's column: "Pass
            # --text-column with one of them" then refused --data for want of that column.
            raise UserInputError(f"{flag} {path!r} has no text column {column!r}; its columns are {list(columns)}. "
                                 f"{flag} texts are read from --data's text column ({column!r}, set by "
                                 f"--text-column): rename its column of texts to {column!r}, or give the texts as a "
                                 ".txt file, one per line.")
        if split and not any_train:
            raise UserInputError(f"{path!r} has a 'split' column but no rows whose split is 'train' (pretraining "
                                 "reads only those, so as never to see a test text); its values are "
                                 f"{sorted(other_splits)[:5]}.")
    else:
        for line in read_lines(path, empty_fix, flag):
            yield from line.splitlines()


def _folder_files(path, flag="--data"):
    """The .txt files of folder `path` and its subfolders, sorted (hidden ones left out); refuses a folder
    that is or holds a saved model, and one without .txt files (naming `flag`, the option that gave it)."""
    # Subfolders too: a classifier's folder of one subfolder of .txt files per label was "no .txt files".
    files = []
    for root, folders, names in os.walk(path):
        if _saved_model(root):  # `pretrain --data runs` read every run's vocabulary.txt as documents
            what = "a tfllm run directory or a KerasHub preset"
            found = (f"is a saved model ({what})" if root == path
                     else f"holds a saved model ({os.path.relpath(root, path)!r}: {what})")
            raise UserInputError(f"Folder {path!r} {found}, not documents: its .txt files are a vocabulary. Pass "
                                 "a folder of .txt files of text (one document per line), without runs or "
                                 "presets in it.")
        folders[:] = [f for f in folders if not hidden(f)]
        files += [os.path.join(root, f) for f in names if is_text_file(f) and not hidden(f)]
    if not files:
        raise UserInputError(f"Folder {path!r} ({flag}) has no .txt files (nor its subfolders); put text in .txt "
                             "files there, one document per line.")
    return sorted(files)
