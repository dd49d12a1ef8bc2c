"""Reading sentence pairs (source -> target) for translation: bundled `cedict` and users' files.

A pair file is a CSV/TSV/JSONL (optionally `.gz`) with a source column and a
target column, and optionally a split column (train/val/test); without one a
seeded 80/10/10 split is made. A `.txt` of tab-separated pairs without a header
(the Tatoeba/Anki files from manythings.org, `spa.txt`: "Go.<TAB>Ve.<TAB>CC-BY ...",
which the keras.io translation examples read) has its columns named by position,
"1", "2", ...: the source is the first, the target the second. A target may hold several correct references
joined by a separator (`cedict`'s `english` column: glosses joined by `/`):
training uses the first reference of each pair, scoring counts all of them.

A source may also come on several rows, one translation each (Tatoeba gives "Go." as "Ve.", "Vete.",
"Vaya." ...). With `group_sources` (what new translation runs do) those rows stay together: the
seeded split deals whole sources, never a test source that was also trained on, and the validation
and test splits score each source once, against all of its rows' translations. Training still
learns from every row.

Everything a user can get wrong (a missing file or column, empty source or
target texts, a single pair) raises `UserInputError` naming the input and the fix.
"""

import dataclasses
import os
import random

from tfllm.datasets import (_SPLIT_ALIASES, SPLITS, _check_fractions, _column, _first_line,
                            bundled_path, is_table, is_text_file, iter_rows, read_lines, read_texts,
                            refuse_plain_text, warn_about_unused_split_column)
from tfllm.config import expand_home
from tfllm.datasets.text import check_text_column
from tfllm.errors import UserInputError, note

# name -> (file in tfllm/datasets/data, options)
BUNDLED_PAIRS = {
    # CC-CEDICT (CC BY-SA 4.0): traditional, simplified, pinyin, english (glosses joined by "/"), split.
    "cedict": ("cedict.tsv.gz", {"split_column": "split", "source_column": "simplified", "target_column": "english",
                                 "reference_separators": {"english": "/"}}),
}


@dataclasses.dataclass
class PairSplit:
    sources: list  # strings
    references: list  # per pair, a list of one or more correct targets (the first is the training target)

    def __len__(self):
        return len(self.sources)

    @property
    def targets(self):
        """The training target of each pair: its first reference."""
        return [refs[0] for refs in self.references]


@dataclasses.dataclass
class PairData:
    train: PairSplit
    val: PairSplit
    test: PairSplit
    source_column: str
    target_column: str


def describe(data):
    """The line a translation's training prints as soon as its pairs are read and split, as a classifier's
    (`tfllm.datasets.describe`): training counts pairs, validation and test their source texts (each scored
    once, against all of its translations)."""
    # A question with two different answers is scored against both, so either counts as exact: right for
    # translations, misleading for question answering, so the line says how many there are.
    targets = {}
    for split in (data.train, data.val, data.test):
        for source, refs in zip(split.sources, split.references):
            targets.setdefault(source, set()).update(refs)
    several = sum(len(refs) > 1 for refs in targets.values())
    note = (f"; {several:,} source texts have several different targets: each is scored against all of them"
            if several else "")
    return (f"Data: {len(data.train):,} training pairs, val/test {len(data.val):,}/{len(data.test):,} source texts, "
            f"{data.source_column!r} -> {data.target_column!r}{note}")


def _split_references(text, separator):
    if not separator:
        return [text.strip()]
    refs = [r.strip() for r in text.split(separator)]
    return [r for r in refs if r] or [text.strip()]


def _tab_separated_rows(path, empty_fix=None, read=None, flag=None):
    """The rows of a headerless `.txt`/`.txt.gz` of tab-separated pairs as `{"1": field, "2": field, ...}`, a
    non-blank line each; None for any other file (a `.txt` whose first line holds no tab is plain text). The
    fields are split at every tab, without CSV quoting: Tatoeba's sentences hold quotes ('"Go," he said.').
    `read`: the numbers of the fields read (a source and a target column), for the note on lines with
    fields after them (Tatoeba's attribution, or a text that holds a tab), which were dropped without a word.
    `flag`: the option that gave the file, as `read_lines`' (by default, --data's)."""
    if not is_text_file(path) or not os.path.isfile(path):
        return None
    lines, first = _first_line(read_lines(path, empty_fix, flag))
    if "\t" not in first:
        return None
    rows, longer = [], []
    last = max((int(field) for field in read if field.isdigit()), default=None) if read else None
    for number, line in enumerate(lines, 1):
        if line.strip():
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) < 2:
                raise UserInputError(f"{path!r} line {number} has no tab: write each pair on a line as the source "
                                     "text, a tab, and its translation.")
            rows.append({str(i): field for i, field in enumerate(fields, 1)})
            if last is not None and len(fields) > last:
                longer.append(number)
    if longer:
        lines = f"{len(longer):,} line{'s' * (len(longer) != 1)}"
        after = {1: "the first", 2: "the second", 3: "the third"}.get(last, f"field {last}")
        note(f"tfllm: {lines} of {path!r} {'have' if len(longer) != 1 else 'has'} more than {last} tab-separated "
             f"fields; fields after {after} are ignored (line {longer[0]} first; a text that holds a tab is cut "
             "there).")
    return rows


def read_sources(path, column, named=False):
    """The texts `tfllm translate --file PATH` translates: as `read_texts` reads them, except that a `.txt` of
    tab-separated pairs, read as training reads one, gives each line's source field (`column` when it numbers
    a field, else the first; `named`: the user gave `column`, which must then be a number), where a line was
    translated whole, tabs, translation and all (Tatoeba's `spa.txt`: "Go.<tab>Ve.<tab>CC-BY 2.0 ...").
    `column` None: the run was trained on a .txt of pairs, whose source has no column name to look for in
    a CSV/JSONL (the error named a column 'text' the run never had)."""
    rows = _tab_separated_rows(path, "Point --file at a file with one text per line.") if path != "-" else None
    if rows is None and column is None and is_table(path):
        header = []
        row = next(iter_rows(path, "Point --file at a file with one text per line.", None, header), {})
        raise UserInputError(f"{path!r} has columns, and this run was trained on a .txt of pairs, so its source "
                             "has no column name; pass --text-column"
                             + (f" (one of {header or sorted(row)})." if header or row else "."))
    if rows is None and named:  # a plain .txt's lines are its sources: a column was ignored
        check_text_column(path, column, bundled=False)
    if rows is None:  # a blank line is translated as a blank line, so that the output answers line for line
        return read_texts(path, column or "text", blank_lines=True)
    if named and not column.isdigit():
        raise UserInputError(f"--text-column {column!r} names a column, but {path!r} is a .txt of tab-separated "
                             "pairs, whose fields are numbered: pass --text-column 1 (the first field) or 2.")
    field = column if column and column.isdigit() else "1"
    short = next((number for number, row in enumerate(rows, 1) if not row.get(field, "").strip()), None)
    if short is not None:
        row = rows[short - 1]
        what = f"an empty field {field}" if field in row else f"no field {field} (it has {len(row)})"
        raise UserInputError(f"{path!r} is a file of tab-separated pairs, and its pair {short} has {what}; fill it in, "
                             "or pass --text-column with the number of the field to translate (1 is the first).")
    return (row[field].strip() for row in rows)


def _read_columns(source, source_column, target_column, split_column, reference_separator, warn_split=False,
                  flag=None, column_fix=None):
    """The checked source, target (and split) columns of a bundled name or a file, with the names it used;
    `warn_split`: warn of a column that names each row's split where no `split_column` is given. `flag`: the
    option that gave the file, named in the errors of reading it (by default --data). `column_fix`: the fix for
    a missing source or target column where the caller cannot pass --source-column (by default: pass it)."""
    if source in BUNDLED_PAIRS:
        filename, options = BUNDLED_PAIRS[source]
        path = bundled_path(filename)
        split_column = split_column or options["split_column"]
        source_column = source_column or options["source_column"]
        target_column = target_column or options["target_column"]
        reference_separator = reference_separator or options["reference_separators"].get(target_column)
    else:
        path = expand_home(source)  # `translate(memory="~/pairs.csv")` from a notebook: the home folder's
        if not os.path.exists(path):
            raise UserInputError(f"Pairs file {path!r} does not exist. Check the path, or use a bundled set: "
                                 f"{', '.join(BUNDLED_PAIRS)}.")
    # --memory's empty file was told "Point --data at a file", an option translate does not have.
    empty_fix = f"Point {flag} at a file with rows of pairs." if flag else None
    rows = _tab_separated_rows(path, empty_fix, read=(source_column or "1", target_column or "2"), flag=flag)
    if rows is not None:
        source_column, target_column = source_column or "1", target_column or "2"
    else:
        refuse_plain_text(path, "a source and a target column",
                          "a column for each side of a pair (or write a pair a line: the source, a tab, the target)")
        if not source_column or not target_column:
            raise UserInputError(f"Name the columns of {source!r}: pass --source-column and --target-column "
                                 "(the text to translate and its translation).")
        rows = list(iter_rows(path, empty_fix, flag=flag))
    if not rows:
        raise UserInputError(f"{path!r} has a header but no rows. Add rows of source and target text.")
    if source_column == target_column:
        raise UserInputError(f"--source-column and --target-column are both {source_column!r}; "
                             "name two different columns.")
    sources = _column(rows, source_column, "source", path, (source_column, target_column), column_fix)
    targets = _column(rows, target_column, "target", path, (source_column, target_column), column_fix)
    splits = _column(rows, split_column, "split", path) if split_column else None
    if warn_split and not split_column:
        warn_about_unused_split_column(rows, (source_column, target_column), path)
    for texts, column, what in ((sources, source_column, "source"), (targets, target_column, "target")):
        # A JSON list or number is not empty: 'Remove or fill them' named the wrong fix for it.
        other = [i for i, t in enumerate(texts) if t is not None and not isinstance(t, str)]
        if other:
            several = (" (several references: one string joined by a separator, read with --set "
                       "reference_separator=/)" if what == "target" and isinstance(texts[other[0]], list) else "")
            raise UserInputError(
                f"{path!r} data row {other[0] + 1} has a JSON {type(texts[other[0]]).__name__}, not text, as its "
                f"{what} in column {column!r} ({len(other)} such row(s)); write each as a string{several}.")
        empty = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
        if empty:
            raise UserInputError(
                f"{path!r} has {len(empty)} row(s) with empty {what} text in column {column!r} "
                f"(first: data row {empty[0] + 1}). Remove or fill them."
            )
    return path, sources, targets, splits, source_column, target_column, reference_separator


def _named_splits(path, splits, split_column, rows):
    """`{train, val, test: [row index]}` as the split column names them (aliases such as `dev` read as val)."""
    named = {name: [] for name in SPLITS}
    for i in rows:
        split = str(splits[i]).strip().lower()
        split = _SPLIT_ALIASES.get(split, split)
        if split not in named:
            raise UserInputError(f"{path!r} data row {i + 1} has split {splits[i]!r} in column "
                                 f"{split_column!r}; use train, val or test.")
        named[split].append(i)
    return named


def _by_source(rows, sources, group_sources=True):
    """`rows` as lists of the rows with the same source, in the order each source first comes (without
    `group_sources`, a list per row)."""
    if not group_sources:
        return [[i] for i in rows]
    groups = {}
    for i in rows:
        groups.setdefault(sources[i].strip(), []).append(i)
    return list(groups.values())


def _pair_split(groups, sources, targets, reference_separator):
    """A `PairSplit` of one pair per group of rows: its source, and every reference of its rows (in order, once)."""
    return PairSplit([sources[group[0]].strip() for group in groups],
                     [list(dict.fromkeys(r for i in group for r in _split_references(targets[i], reference_separator)))
                      for group in groups])


def read_split(source, split, source_column=None, target_column=None, split_column=None, reference_separator=None,
               group_sources=False):
    """The pairs whose `split_column` names `split`, exactly those (another file scored by a run: none is
    carved out of its training rows, as `load_pair_data` does for a split the file lacks); with
    `group_sources`, a source's rows are one pair with all of their references."""
    path, sources, targets, splits, _, _, reference_separator = _read_columns(
        source, source_column, target_column, split_column, reference_separator)
    if splits is None:
        raise UserInputError(f"Name the split column of {source!r} (--split-column) to score its {split!r} rows.")
    rows = _named_splits(path, splits, split_column, range(len(sources)))[split]
    if not rows:
        raise UserInputError(f"{path!r} has no rows with split {split!r} in column {split_column!r}; "
                             "choose another --split.")
    return _pair_split(_by_source(rows, sources, group_sources), sources, targets, reference_separator)


def read_pairs(source, source_column=None, target_column=None, reference_separator=None, group_sources=False,
               flag=None, column_fix=None):
    """Every (source, references) pair of a file or bundled set, unsplit (a translation memory, any size;
    scored, with `group_sources`: a source's rows are one pair with all of their references). `flag`: the
    option that gave the file (`--memory`), named in the errors of reading it (by default --data); `column_fix`:
    as `_read_columns`'."""
    _, sources, targets, _, _, _, reference_separator = _read_columns(
        source, source_column, target_column, None, reference_separator, flag=flag, column_fix=column_fix)
    return _pair_split(_by_source(range(len(sources)), sources, group_sources), sources, targets, reference_separator)


def load_pair_data(source, source_column=None, target_column=None, split_column=None, seed=1337,
                   val_fraction=0.1, test_fraction=0.1, max_rows=None, reference_separator=None,
                   group_sources=False, warn_split=False):
    """Loads (source, references) pairs and splits them into train/val/test.

    Args:
        source: `cedict` (bundled), a `.csv`/`.tsv`/`.jsonl`/`.json` file or a `.txt` of tab-separated
            pairs (optionally `.gz`).
        source_column, target_column: column names (cedict's defaults: simplified -> english).
        split_column: column holding train/val/test (cedict has one); without it
            a seeded 80/10/10 split is made.
        max_rows: keep a seeded sample of this many pairs (quick runs, tests);
            a file's own split is kept for the pairs sampled.
        reference_separator: splits a target into several references (cedict's
            `english`: "/"). The first reference is the training target.
        group_sources: keep the rows of one source together (see the module's docstring). Without it
            (the runs trained before it), rows are dealt one by one, as those runs split them.
        warn_split: without a `split_column`, warn of a column that names each row's split (training's data:
            a run's own data, read again to be scored, was split as it was trained).

    Returns:
        `PairData`.
    """
    _check_fractions(val_fraction, test_fraction, training=True)
    path, sources, targets, splits, source_column, target_column, reference_separator = _read_columns(
        source, source_column, target_column, split_column, reference_separator, warn_split)
    if len(sources) < 2:
        raise UserInputError(f"{path!r} has a single pair; translation needs many pairs to learn from "
                             "(hundreds at least) and a few to test on.")

    keep = list(range(len(sources)))
    if max_rows and len(keep) > max_rows:
        keep = sorted(random.Random(seed).sample(keep, max(max_rows, 3)))

    def shuffled(rows):
        """The units the seeded split deals, in their dealt order: a source's rows, or single rows. Without
        repeated sources both give the same split, so a run's split does not change with the setting."""
        units = _by_source(rows, sources, group_sources)
        random.Random(seed).shuffle(units)
        return units

    def rows_of(units):
        return sorted(i for unit in units for i in unit)

    if splits is not None:
        named = _named_splits(path, splits, split_column, keep)
        if not named["train"]:
            raise UserInputError(f"{path!r} has no rows with split 'train' in column {split_column!r}.")
        for name, fraction in (("test", test_fraction), ("val", val_fraction)):
            if not named[name]:  # carved out of train, seeded
                train = shuffled(named["train"])
                n = max(1, round(len(train) * fraction))
                named[name], named["train"] = rows_of(train[:n]), rows_of(train[n:])
    else:
        units = shuffled(keep)
        n_test = max(1, round(len(units) * test_fraction))
        n_val = max(1, round(len(units) * val_fraction)) if len(units) > 2 else 0
        named = {"test": rows_of(units[:n_test]), "val": rows_of(units[n_test:n_test + n_val]),
                 "train": rows_of(units[n_test + n_val:])}
    if not named["train"]:
        raise UserInputError(f"{path!r} has too few pairs ({len(keep)}) to split into train, val and test; "
                             "give it hundreds of pairs.")

    def make(rows, scored):  # training learns from every row; scoring counts a source once
        return _pair_split(_by_source(rows, sources, scored and group_sources), sources, targets, reference_separator)

    return PairData(make(named["train"], False), make(named["val"], True), make(named["test"], True),
                    source_column, target_column)
