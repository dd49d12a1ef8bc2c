"""Reading running text for language modelling: the bundled corpus or a user's file."""

import os

from tfllm.datasets import _read_rows, bundled_path, read_text_file
from tfllm.errors import UserInputError

# name -> file in tfllm/datasets/data
BUNDLED_TEXT = {"shakespeare": "shakespeare.txt.gz"}

# Below this many characters a split cannot hold even one training window of a
# small model; the trainer checks against the model's real window as well.
MIN_CHARACTERS = 64

# Separates documents read from CSV/JSONL rows; the tokenizers keep "\n".
DOCUMENT_SEPARATOR = "\n\n"


def load_text_corpus(name_or_path, text_column=None, val_fraction=0.1):
    """Loads running text and splits it into training and validation text.

    Args:
        name_or_path: `"shakespeare"` (bundled, 1.2 M characters, 77 symbols), a `.txt`/`.txt.gz`
            file, or a `.csv`/`.tsv`/`.jsonl` file (optionally `.gz`) whose
            `text_column` holds one document per row.
        text_column: column of a CSV/JSONL file (default `"text"`).
        val_fraction: the last this fraction of the text becomes validation,
            as nanoGPT does (documents of a CSV/JSONL file stay whole).

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
        path = name_or_path
        if not os.path.exists(path):
            raise UserInputError(
                f"Text data {path!r} does not exist. Check the path, or use a bundled corpus: "
                f"{', '.join(BUNDLED_TEXT)}."
            )
        if os.path.isdir(path):
            raise UserInputError(f"{path!r} is a folder; --data for text generation must be one .txt, .csv or .jsonl file.")
    base = path[:-3] if path.endswith(".gz") else path
    if base.endswith((".csv", ".tsv", ".jsonl", ".json")):
        column = text_column or "text"
        rows = _read_rows(path)
        if rows and column not in rows[0]:
            raise UserInputError(
                f"{path!r} has no text column {column!r}; its columns are {sorted(rows[0])}. "
                "Pass --text-column with one of them."
            )
        documents = [str(row[column]).strip() for row in rows if row.get(column) is not None and str(row[column]).strip()]
        if not documents:
            raise UserInputError(f"{path!r} has no non-empty text in column {column!r}.")
        n_val = max(1, round(len(documents) * val_fraction)) if len(documents) > 1 else 0
        train = DOCUMENT_SEPARATOR.join(documents[: len(documents) - n_val])
        val = DOCUMENT_SEPARATOR.join(documents[len(documents) - n_val:])
        if not val:  # a single document: split it like a text file
            train, val = _split_text(train, val_fraction)
    else:
        text = read_text_file(path)
        train, val = _split_text(text, val_fraction)
    if len(train) < MIN_CHARACTERS or len(val) < MIN_CHARACTERS // 4:
        raise UserInputError(
            f"{path!r} is too short to train a language model ({len(train) + len(val)} characters); "
            f"give it at least {int(MIN_CHARACTERS / (1 - val_fraction)) * 2} characters of text."
        )
    return train, val


def _split_text(text, val_fraction):
    cut = int(len(text) * (1 - val_fraction))
    return text[:cut], text[cut:]
