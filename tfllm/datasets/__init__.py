"""Reading labelled text: bundled datasets by name and users' own files.

Everything a user can get wrong here (a missing file or column, bytes that are
not UTF-8, empty texts, a single class) raises `UserInputError` with a message
that names the input and the fix.
"""

import csv
import dataclasses
import functools
import gzip
import hashlib
import importlib.resources
import itertools
import json
import numbers
import os
import random
import re
import reprlib
import sys
import zlib

from tfllm.config import data_path
from tfllm.errors import UserInputError, note, shell_path, warn

SPLITS = ("train", "val", "test")
MAX_FIELD_BYTES = 64 * 2**20  # longest CSV/TSV field read
_SPLIT_ALIASES = {"validation": "val", "valid": "val", "dev": "val", "eval": "val"}

# name -> (file in tfllm/datasets/data, options)
BUNDLED = {
    # Binary sentiment: plot summaries dropped; "fresh" is the positive class.
    "rotten_tomatoes": ("rotten_tomatoes.csv.gz", {"split_column": "split", "labels": ["rotten", "fresh"]}),
    "rotten_tomatoes_3class": ("rotten_tomatoes.csv.gz", {"split_column": "split"}),
}


@dataclasses.dataclass
class Split:
    texts: list
    labels: list  # integer ids into ClassificationData.label_names

    def __len__(self):
        return len(self.texts)


@dataclasses.dataclass
class ClassificationData:
    train: Split
    val: Split
    test: Split
    label_names: list
    # Texts without labels (`tfllm train --unlabeled`): read only for the vocabulary and word vectors.
    unlabeled: list = dataclasses.field(default_factory=list)
    # {label as written, spaces around it and all: its rows}, read without the spaces (`note_spaced_labels`).
    spaced_labels: dict = dataclasses.field(default_factory=dict)

    @property
    def vocabulary_texts(self):
        """The training texts, then the unlabelled ones not among them: what the tokenizer and word vectors
        learn from (a self-training student's pseudo-labelled texts are in both)."""
        known = set(self.train.texts)
        return list(self.train.texts) + [t for t in self.unlabeled if t not in known]

    @property
    def num_classes(self):
        return len(self.label_names)


def bundled_path(filename):
    """Path of a file shipped in `tfllm/datasets/data/`."""
    return str(importlib.resources.files("tfllm.datasets") / "data" / filename)


def likely_encoding(raw):
    """The encoding `iconv -f` most likely needs for a line of bytes that is not UTF-8: GB18030 where the line
    reads as Chinese in it (a GBK file taken for Latin-1 became valid UTF-8 mojibake, ÕâÀïµÄ, that trained
    without a word), else Windows-1252 where it reads in that, else Latin-1 (which reads any byte)."""
    try:  # Chinese is pairs of high bytes; Western text has them one at a time (naïve: b"na\xefve")
        if re.search(rb"[\xa1-\xfe]{2}", raw) and re.search(r"[\u3400-\u9fff]", raw.decode("gb18030")):
            return "gb18030"
    except UnicodeDecodeError:
        pass
    try:
        raw.decode("cp1252")
        return "cp1252"
    except UnicodeDecodeError:
        return "latin1"


def _piped(path):
    """Whether `path` is standard input (None: `--file -`) or another stream with no file to re-save (`--file
    /dev/stdin`, a FIFO): its fix goes into the pipe ("iconv /dev/stdin > /dev/stdin-utf8" cannot work)."""
    return path is None or (os.path.exists(path) and not os.path.isfile(path))


def _reencoding(path, encoding):
    """How to give tfllm `path` as UTF-8 from `encoding`: re-saved beside it, a .gz through zcat and gzip, since
    `iconv` on the .gz itself reads its compressed bytes (the fix given for a UTF-16 .csv.gz failed as written);
    a pipe (`_piped`) converted on its way in."""
    iconv = f"iconv -f {encoding} -t utf-8"
    if _piped(path):
        return f"Convert it to UTF-8 on its way in, e.g. `... | {iconv} | tfllm ...`"
    folder, name = os.path.split(path)
    gzipped = name.lower().endswith(".gz")
    stem, extension = os.path.splitext(name[:-3] if gzipped else name)
    fixed = shell_path(os.path.join(folder, f"{stem}-utf8{extension}{'.gz' * gzipped}"))
    return "Re-save it as UTF-8, e.g. " + (f"`zcat {shell_path(path)} | {iconv} | gzip > {fixed}`" if gzipped else
                                           f"`{iconv} {shell_path(path)} > {fixed}`")


def _decoded(raw_lines, named, path, gzipped=False):
    """The text of `raw_lines` (a file's or standard input's lines as bytes), each line decoded as it comes, with
    one clear error for bytes that are not UTF-8 text. `named`: the input as the errors name it; `path`: the
    file (None for standard input), for the fix; `gzipped`: the bytes are a .gz's, already decompressed."""
    for number, raw in enumerate(raw_lines, 1):
        if number == 1 and raw.startswith(b"\x1f\x8b") and not gzipped:  # gzip's magic number
            if _piped(path):
                raise UserInputError(f"{named} is gzip-compressed; decompress it on its way in, e.g. "
                                     "`... | gunzip -c | tfllm ...`.")
            # "or gunzip it" failed for most names: gunzip refuses a name without .gz ("unknown suffix -- ignored").
            stem, extension = os.path.splitext(path)
            raise UserInputError(f"{named} is gzip-compressed; name it {os.path.basename(path)}.gz (tfllm reads .gz "
                                 f"files as they are), or decompress it: `gunzip -c {shell_path(path)} > "
                                 f"{shell_path(f'{stem}-plain{extension}')}`.")
        if number == 1 and raw.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):  # zip's, and old Office's, magic
            # Told "not UTF-8 text ... iconv -f latin1", a user made junk of it that then trained or was classified.
            if (path or "").lower().endswith((".xlsx", ".xlsm", ".xls")):
                raise UserInputError(f"{named} is an Excel workbook, not text; save it as CSV UTF-8 (File > Save As) "
                                     "and pass the .csv.")
            if raw.startswith(b"PK"):
                raise UserInputError(f"{named} is a zip archive, not text; unzip it and pass the file inside.")
            raise UserInputError(f"{named} is a Microsoft Office file, not text; save it as text (a spreadsheet as "
                                 "CSV UTF-8, File > Save As) and pass that.")
        if number == 1 and raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # a UTF-16 byte-order mark
            raise UserInputError(f"{named} is UTF-16 text, not UTF-8. {_reencoding(path, 'utf-16')}.")
        try:
            # A byte-order mark starts the file's first line, and any line after one where files
            # with one were joined (`cat a.txt b.txt`): "\ufeff今天天气" was a text, BOM and all.
            yield raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            encoding = likely_encoding(raw)
            big5 = " (-f big5 for traditional Chinese in Big5)" if encoding == "gb18030" else ""
            raise UserInputError(
                f"{named} is not UTF-8 text (bad byte {raw[e.start:e.start + 1]!r} on line {number}). "
                f"{_reencoding(path, encoding)}{big5}.") from None


def read_text_file(path, empty_fix=None):
    """Reads a (possibly gzipped) UTF-8 file, with one clear error for each way it can fail."""
    return "".join(read_lines(path, empty_fix))


def read_lines(path, empty_fix=None, flag=None):
    """The lines of a (possibly gzipped) UTF-8 file, each with its line break, read as they are asked
    for: a reader that needs only the first rows of a large file (`--max-rows`) stops there. One clear
    error for each way the file can fail, raised when the reading gets there. `empty_fix` is what the
    error for a blank file tells the user to do (by default: point --data at a file with text). `flag`: the option
    that gave the file, named in every error (`--unlabeled 'x.txt' is not UTF-8 text`: the file alone did not say
    which of a command's files it was); by default the file alone."""
    named = f"{flag} {path!r}" if flag else repr(path)
    if not os.path.exists(path):
        raise UserInputError(f"Data file {path!r} does not exist. Check the path, or use a bundled name: {', '.join(BUNDLED)}.")
    opener = gzip.open if path.lower().endswith(".gz") else open
    blank = True
    try:
        with opener(path, "rb") as f:
            # Split at b"\n" only, as str.splitlines' "\r\n" never straddles it: joined, the lines are the
            # file's text exactly. No UTF-8 character holds the byte 0x0a, so each line decodes alone.
            for line in _decoded(f, named, path, gzipped=opener is not open):
                blank = blank and not line.strip()
                yield line
    except (OSError, EOFError, zlib.error) as e:  # zlib.error: a damaged .gz (gzip.BadGzipFile is an OSError)
        raise UserInputError(f"Cannot read {named}: {e}. Is it a valid (gzip) file?") from None
    if blank:
        empty = named if flag else f"Data file {path!r}"
        raise UserInputError(f"{empty} is empty. {empty_fix or 'Point --data at a file with rows of text.'}")


def read_texts(path, text_column="text", blank_lines=False):
    """New texts to label, from `path`, yielded as they are read (so `predict --file -` answers a pipe as it
    flows): every non-blank line of a text file (`.txt`, `.txt.gz`, any other name; "-" reads standard input;
    `blank_lines=True` yields a blank line as "", for output that answers line for line),
    or every row's `text_column` of a `.csv`/`.tsv`/`.jsonl`/`.json` file (all rows: a split column is
    ignored, as these texts are to be labelled, not scored). For `predict --file`. Each error is raised
    when the reading gets there; a file without a text, at its end.
    """
    empty_fix = "Point --file at a file with one text per line (or rows with a text column)."
    if path == "-":
        # A byte-order mark (Windows tools write one) dropped as read_lines' utf-8-sig drops it from a file's
        # lines: "\ufeffgreat film" was the first text, BOM and all (str.strip keeps it).
        # Read as bytes and decoded as a file's lines are: the text stream's surrogate escapes of a byte that
        # is not UTF-8 (caf\xe9) and a UTF-16 pipe's text reached the model, and failed there with a traceback.
        # A stdin replaced by one without bytes (a notebook's, a test's io.StringIO) is read as it is.
        stream = getattr(sys.stdin, "buffer", None)
        lines = sys.stdin if stream is None else _decoded(stream, "Standard input (--file -)", None)
        texts = (line.removeprefix("\ufeff").strip() for chunk in lines for line in chunk.splitlines())
    elif not os.path.exists(path):  # read_lines' message offered bundled dataset names, which --file does not take
        raise UserInputError(f"--file {path!r} does not exist; check the path.")
    elif os.path.isdir(path):
        raise UserInputError(f"--file {path!r} is a folder; point it at a .txt file (one text per line) or a "
                             "CSV/JSONL file with a text column.")
    elif is_table(path):
        header, number = [], 0

        def no_column(rows=()):  # a CSV's header names every row's columns: the header's problem, not data row 1's
            return UserInputError(headerless_message(path, header, rows, text_column, "text", (text_column,)) or
                                  f"{path!r} has no text column {text_column!r}; its columns are {header}. "
                                  "Pass --text-column with one of them.")

        # A CSV row of empty fields was dropped as a spreadsheet's padding, so the output lines after it answered
        # the rows below theirs; it is refused as a row with an empty text is, once a row with text follows it
        # (padding trails the rows, and answers nothing whether it is read or not).
        padding = table_kind(path) in ("csv", "tsv")
        empty, answered = None, 0
        for number, row in enumerate(iter_rows(path, empty_fix, text_column, header, empty_rows=padding), 1):
            if text_column not in row:
                if header:
                    raise no_column([row])
                # A JSON row's keys are its own: one without the key may be that row's gap, not the wrong
                # --text-column.
                fix = ("Give it one, or remove the row." if number > 1 else
                       f"Give that row a {text_column!r}, or pass --text-column naming the key of the texts.")
                raise UserInputError(f"{path!r} data row {number} has no text column {text_column!r}; its columns "
                                     f"are {sorted(row)}. {fix}")
            text = text_value(row[text_column], path, f"data row {number}", text_column) or ""
            if padding and not any(field.strip() for field in row.values()):
                empty = empty or number
                continue
            if not text.strip() or empty:
                raise UserInputError(f"{path!r} data row {empty or number} has an empty {text_column!r}; fill it "
                                     "in or remove the row, so that each output line answers one row.")
            answered += 1
            yield text
        # A header without rows (or a JSON []) answered nothing, exit status 0, a misspelt column unnoticed.
        if not answered:
            if header and text_column not in header:
                raise no_column()
            raise UserInputError(f"{path!r} has {'a header but ' * bool(header)}no rows. Add rows with a "
                                 f"{text_column!r} text.")
        return
    else:
        texts = (line.strip() for chunk in read_lines(path, empty_fix) for line in chunk.splitlines())
    found = False
    for text in texts:
        found = found or bool(text)
        if text or blank_lines:
            yield text
    if not found:
        raise UserInputError(f"--file {'standard input' if path == '-' else repr(path)} holds no text; put one "
                             "text per line.")


class _RepeatedKey(Exception):
    """A JSON object that names one key twice (raised by `_unique_keys`, reported by `iter_rows`)."""


def _unique_keys(pairs):
    """`json.loads`' object_pairs_hook: the object as a dict, refusing a key named twice, of which
    json.loads would keep the last value without a word (which text, which label, was meant?)."""
    row = dict(pairs)
    if len(row) != len(pairs):
        keys = [key for key, _ in pairs]
        raise _RepeatedKey(next(key for key in keys if keys.count(key) > 1))
    return row


def text_value(value, path, where, column):
    """A row's text (or None): a JSON number, list or object is not text. `str()` made "['a', 'b']" a text to
    predict, generate from or pretrain on, where a classifier's training data refused it."""
    if value is None or isinstance(value, str):
        return value
    raise UserInputError(f"{path!r} {where} has a JSON {type(value).__name__}, not text, in column {column!r}; "
                         "write each text as a string.")


def refuse_plain_text(path, lacks, fix):
    """A .txt file where rows with columns are needed: it said "Unsupported data file", as if .txt were unknown."""
    if is_text_file(path) and os.path.isfile(path):
        raise UserInputError(f"{path!r} is plain text, one text a line, without {lacks}. Save it as "
                             f".csv/.tsv/.jsonl/.json with {fix}.")


def _read_rows(path):
    """Rows as dicts from .csv/.tsv/.jsonl/.json (optionally .gz)."""
    return list(iter_rows(path))


def iter_rows(path, empty_fix=None, text_column=None, columns=None, flag=None, empty_rows=False):
    """`_read_rows`' rows one at a time, read as they are asked for (`load_documents(max_rows=N)` reads
    only the first rows of a large file); each one checked as it comes. `empty_fix`: as `read_lines`'.
    `text_column`: where only texts are read, a JSON string in place of an object is the row
    `{text_column: string}` (a JSON file of texts: `["a fine film", ...]`, or a string a line).
    `columns`: a list that a CSV/TSV's column names are put in once its header is read, so that a caller can
    name them where the file has no rows (a JSON file has no header: it stays empty). `flag`: as `read_lines`'.
    `empty_rows`: a CSV/TSV row of empty fields is a row, numbered and yielded, for a reader whose output answers
    row for row (by default it is left out, as a spreadsheet's padding); a blank line is never a row."""
    kind = table_kind(path)
    lines = read_lines(path, empty_fix, flag)
    if kind in ("jsonl", "json"):
        lines, first = _first_line(lines)
        if first.lstrip().startswith("["):  # one JSON array of objects, not an object a line
            yield from _json_array_rows(path, "".join(lines), text_column)
            return
        # Lines end at "\n" (JSON Lines), not at every break str.splitlines knows: a text may hold U+2028 or
        # U+0085, which json.dumps(ensure_ascii=False) writes as they are.
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            yield _json_object(path, _parse_json(path, line, f"line {number}"), f"line {number}", text_column)
        return
    if kind in ("csv", "tsv"):
        # The csv module refuses fields over 128 KiB by default; a long document is a valid text.
        csv.field_size_limit(max(csv.field_size_limit(), MAX_FIELD_BYTES))
        delimiter = "\t" if kind == "tsv" else ","
        if delimiter == ",":
            lines, delimiter = _csv_delimiter(lines)
        kind, quote = {"\t": ("TSV", "tabs"), ",": ("CSV", 'commas ("a text, with a comma")'),
                       ";": ("CSV", 'semicolons ("a text; with a semicolon")')}[delimiter]
        try:
            # csv.reader, not DictReader: DictReader keeps the last of two columns of one name, and puts a row's
            # extra fields under the key None; both silently read the wrong text or label.
            reader = _TabSeparatedReader(lines) if delimiter == "\t" else csv.reader(lines, delimiter=delimiter)
            # "text, label" (a space after the comma, as people type it) named a column " label".
            header = [name.strip() for name in next((fields for fields in reader if fields), [])]
            while header and not header[-1]:  # "text,label," (a trailing delimiter) names no column
                header.pop()
            if len(header) == 1 and re.fullmatch(r"sep=.?", header[0], re.IGNORECASE):
                # Excel's first line "sep=;" tells Excel the delimiter; as a header it named one column, and
                # every row was then "2 fields, the header has 1: quote texts that contain semicolons".
                raise UserInputError(f"{path!r} starts with Excel's delimiter line (sep=), not a header: "
                                     "delete that first line (the header is the line after it).")
            repeated = sorted({name for name in header if name and header.count(name) > 1})
            if repeated:
                raise UserInputError(f"{path!r} has more than one column named {', '.join(map(repr, repeated))} in "
                                     "its header. Rename or remove the repeats, so that a column name says which "
                                     "column to read.")
            if columns is not None:
                columns[:] = header
            number = 0
            for fields in reader:
                # A blank line, or a row of empty cells: Excel pads a sheet's used range with ",,\r\n" rows, which
                # training refused as rows "with empty text" where pretraining left them out.
                if not any(field.strip() for field in fields) and not (empty_rows and fields):
                    continue
                number += 1
                if delimiter == "\t" and reader.open_quote and len(fields) != len(header):
                    # A quote that opens a field and is not closed in it, in a row of the wrong length: a quoted
                    # field that holds a tab or a line break (with the right length, a text that starts with a
                    # quote, read as written).
                    raise UserInputError(
                        f"{path!r} data row {number} has a field with a tab or line break in it, which a TSV text "
                        "cannot hold: replace them with spaces (or save the file as .csv, whose quoted fields may "
                        'hold them). Its field that starts with a quote (") is not closed by one before the tab '
                        "or line break.")
                # A text with an unquoted comma (tab) splits into fields that would become other columns; a
                # line break in an unquoted text leaves rows short. Empty (or blank) fields past the header's
                # are padding (spreadsheets write "a,b,,"), not data, and are dropped.
                if len(fields) < len(header) or any(f.strip() for f in fields[len(header):]):
                    if number == 1 and len(header) == 1 and len(fields) > 1:
                        # A report's title line (and a blank line) above the header: the title read as a header
                        # of one column, and "quote texts that contain commas" was the fix given for the header.
                        names = [f.strip() for f in fields]
                        raise UserInputError(
                            f"{path!r} seems to have its header on line {reader.line_num} ({names}), under a first "
                            f"line of one field ({header[0]!r}): delete the lines above the header. If the first "
                            f"line is the header, quote texts that contain {quote}.")
                    fix = (f"quote texts that contain {quote}" if len(fields) > len(header) else
                           "fill in the missing fields, and quote texts that contain line breaks")
                    raise UserInputError(f"{path!r} data row {number} (line {reader.line_num}) has {len(fields)} "
                                         f"field{'s' * (len(fields) != 1)}, the header has {len(header)}: {fix}.")
                yield dict(zip(header, fields))
        except csv.Error as e:
            if "new-line character seen in unquoted field" in str(e):  # Python's own fix: open it in another mode
                raise UserInputError(
                    f"{path!r} has a carriage return (\\r) outside quotes that ends no \\r\\n line, as in old Mac "
                    f"exports, whose lines end with \\r alone. Re-save it with \\n line endings (e.g. `tr '\\r' '\\n' "
                    f"< {os.path.basename(path)} > fixed.{kind.lower()}`), or quote the field that holds it.") from None
            raise UserInputError(f"{path!r} is not valid {kind} ({e}). Check its "
                                 f"quoting; fields may be up to {MAX_FIELD_BYTES // 2**20} MiB.") from None
        return
    next(lines, None)  # a missing or unreadable file says so first
    raise UserInputError(
        f"Unsupported data file {path!r}: use .csv, .tsv, .jsonl or .json (optionally .gz) "
        "or a folder with one sub-folder of .txt files per label."
    )


# A TSV field quoted whole, as the csv module (and pandas) write one: "a ""quoted"" word".
_QUOTED_FIELD = re.compile(r'"((?:[^"]|"")*)"')
_OPEN_QUOTE = re.compile(r'"(?:[^"]|"")*')  # a quote that opens a field and is never closed in it


class _TabSeparatedReader:
    """A TSV's rows as `csv.reader` gives them (lists of fields; [] for a blank line; `line_num`), a line each.

    A field quoted whole (the bundled cedict.tsv.gz, pandas' `to_csv(sep="\t")`) is unquoted as the csv module
    does; any other field is read as written. Most tools write TSV without quoting, and with CSV quoting a
    review that starts with a quote lost it (`"Wow" is all I can say` read as `Wow is all I can say`), or one
    whose quote is not closed swallowed the tabs and rows after it. A TSV field holds no tab or line break, so
    each line is one row; `open_quote` says that the last row read has a field that opens a quote it does not
    close (perhaps a quoted field that holds a tab or line break: `iter_rows` refuses it where the row's
    length is wrong)."""

    def __init__(self, lines):
        self._lines = iter(lines)
        self.line_num = 0
        self.open_quote = False

    def __iter__(self):
        return self

    def __next__(self):
        line = next(self._lines)
        self.line_num += 1
        line = line[:-1] if line.endswith("\n") else line
        line = line[:-1] if line.endswith("\r") else line
        if "\r" in line:  # as the csv module says it, for iter_rows' message on old Mac line endings
            raise csv.Error("new-line character seen in unquoted field")
        if not line:
            return []
        fields = line.split("\t")
        self.open_quote = any(_OPEN_QUOTE.fullmatch(field) for field in fields)
        return [m.group(1).replace('""', '"') if (m := _QUOTED_FIELD.fullmatch(field)) else field
                for field in fields]


def _first_line(lines):
    """(the lines, none of them consumed, and the first one that is not blank, or "")."""
    lines, ahead = iter(lines), []
    for line in lines:
        ahead.append(line)
        if line.strip():
            break
    return itertools.chain(ahead, lines), ahead[-1] if ahead else ""


# The lines `_csv_delimiter` reads ahead to choose the delimiter (fewer where the file has fewer).
DELIMITER_SAMPLE_LINES = 50


def _csv_delimiter(lines):
    """(the lines, unread, and the delimiter) of a `.csv`: a comma, unless the header holds none but does hold
    semicolons (what Excel writes as "CSV" where the decimal mark is a comma) or tabs (a TSV saved as .csv).
    Read with commas, such a header was one column ("text;label"), and the error offered it as a column name.

    That guess is checked against the first rows: where they do not all read as the header does (a semicolon
    file whose header holds a comma, "review text, full;label", read as two comma columns of which every row
    filled one), the delimiter they do all read with (a comma, a semicolon or a tab, in that order) is taken.
    Where none fits, the guess stands, and the row that does not fit it is named."""
    lines, header = _first_line(lines)
    if "," in header or not (";" in header or "\t" in header):
        guess = ","
    else:
        guess = max((";", "\t"), key=header.count)
    lines, ahead = iter(lines), []
    for line in lines:
        ahead.append(line)
        if len(ahead) == DELIMITER_SAMPLE_LINES:
            break
    whole = len(ahead) < DELIMITER_SAMPLE_LINES  # else the last row read may be cut short
    lines = itertools.chain(ahead, lines)
    if _rows_fit(ahead, guess, whole):
        return lines, guess
    return lines, next((d for d in (",", ";", "\t") if d != guess and _rows_fit(ahead, d, whole)), guess)


def _rows_fit(sample, delimiter, whole):
    """Whether the first lines of a file read with `delimiter` as `iter_rows` reads them: a header of at
    least two columns and at least one row, every row with as many fields (or more, blank ones)."""
    try:
        rows = [fields for fields in csv.reader(sample, delimiter=delimiter) if fields]
    except csv.Error:
        return False
    if not whole:
        rows = rows[:-1]
    if len(rows) < 2:
        return False
    header = [name.strip() for name in rows[0]]
    while header and not header[-1]:
        header.pop()
    return len(header) > 1 and all(len(fields) >= len(header) and not any(f.strip() for f in fields[len(header):])
                                   for fields in rows[1:])


def _parse_json(path, text, where):
    """`json.loads(text)`, `text` being `where` in the file ("line 3", or "" for all of it), refusing a key
    named twice (json.loads would keep the last value without a word)."""
    subject = f"{path!r} {where}" if where else repr(path)
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        at = "" if where else f" at line {e.lineno}, column {e.colno}"
        raise UserInputError(f"{subject} is not valid JSON ({e.msg}{at}). Write one JSON object a line, or one "
                             "array of objects.") from None
    except _RepeatedKey as e:
        raise UserInputError(f"{subject} repeats the key {e.args[0]!r} in one object. Keep one {e.args[0]!r} per "
                             "object, so that it says which value to read.") from None


def _json_object(path, row, where, text_column=None):
    if text_column is not None and isinstance(row, str):
        return {text_column: row}
    if not isinstance(row, dict):
        strings = text_column is not None
        shape = f'"a text" or {{"{text_column}": ...}}' if strings else '{"text": ..., "label": ...}'
        raise UserInputError(f"{path!r} {where} is not a JSON object{' or string' * strings}. Each must look like {shape}.")
    return row


def _json_array_rows(path, text, text_column=None):
    """The objects of a file that holds one JSON array of them (`df.to_json(orient="records")`, a hand-written
    list): read as JSON Lines, its "line 1" was refused as not an object."""
    for number, row in enumerate(_parse_json(path, text, ""), 1):
        yield _json_object(path, row, f"item {number} of its array", text_column)


TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")  # files of rows with columns (optionally .gz)


def _base_name(path):
    """`path` in lower case, without a `.gz`: file kinds go by suffix whatever its case (a Windows export
    is `REVIEWS.CSV`, which was read as plain text, or refused as an unsupported file)."""
    name = os.fspath(path).lower()
    return name[:-3] if name.endswith(".gz") else name


def is_table(path):
    """A .csv/.tsv/.jsonl/.json file (or one gzipped), in any case."""
    return table_kind(path) is not None


def is_text_file(path):
    """A .txt file (or .txt.gz), in any case."""
    return _base_name(path).endswith(".txt")


def table_kind(path):
    """"csv", "tsv", "jsonl" or "json" for a table file (`is_table`), else None."""
    base = _base_name(path)
    return next((suffix[1:] for suffix in TABLE_SUFFIXES if base.endswith(suffix)), None)


def hidden(name):
    """Whether a file or folder is the system's, not the user's data: a dot name (.git, .ipynb_checkpoints,
    macOS's ._x.txt copies of metadata) or the __MACOSX folder of a zip made on a Mac. The folder loaders
    skip them, so that a .hidden folder is not a class, nor ._review.txt an undecodable text."""
    return name.startswith(".") or name == "__MACOSX"


def _saved_model(folder):
    """Whether `folder` is a saved model rather than texts: a KerasHub preset (config.json beside
    metadata.json or tokenizer.json) or a tfllm run directory (tfllm/run.json: `tfllm.runs.RUN_CONFIG`,
    there from a run's start)."""
    def has(*name):
        return os.path.isfile(os.path.join(folder, *name))

    return has("config.json") and (has("metadata.json") or has("tokenizer.json")) or has("tfllm", "run.json")


def _read_folder(path):
    """A folder with one sub-folder per label, each holding .txt files (in folders of its own too).

    A saved model among them is refused: a folder of runs (`runs/`) read each run's
    assets/tokenizer/vocabulary.txt as one text of a class named after the run."""
    rows, empty = [], []
    if _saved_model(path):
        raise UserInputError(f"Folder {path!r} is a saved model (a tfllm run directory or a KerasHub preset), not "
                             "labelled texts. Pass a folder laid out as FOLDER/<label>/<any name>.txt, or a "
                             ".csv/.tsv/.jsonl file with a text and a label column.")
    for label in sorted(os.listdir(path)):
        sub = os.path.join(path, label)
        if hidden(label) or not os.path.isdir(sub):
            continue
        before = len(rows)
        for folder, folders, names in os.walk(sub):
            if _saved_model(folder):
                raise UserInputError(
                    f"Folder {path!r} holds a saved model ({os.path.relpath(folder, path)!r}: a tfllm run directory "
                    f"or a KerasHub preset), not labelled texts: its .txt files would be texts of a class {label!r}. "
                    "Pass a folder laid out as FOLDER/<label>/<any name>.txt, without runs or presets in it.")
            folders[:] = sorted(f for f in folders if not hidden(f))  # sorted: the same seeded split on every machine
            for name in sorted(names):
                if is_text_file(name) and not hidden(name):  # .txt and .txt.gz, as pretraining reads a folder
                    # An empty one among them: --data names the folder, and this file is one text of it.
                    text = read_text_file(os.path.join(folder, name), empty_fix="Write its text, or remove it.")
                    rows.append({"text": text.strip(), "label": label})
        if len(rows) == before:
            empty.append(label)
    if not rows:
        raise UserInputError(
            f"Folder {path!r} has no label sub-folders with .txt (or .txt.gz) files. "
            "Lay it out as FOLDER/<label>/<any name>.txt."
        )
    if empty:  # a class the user laid out went missing without a word (an empty neutral/)
        warn(f"label folder(s) {', '.join(map(repr, empty))} of {path!r} hold no .txt (or .txt.gz) files, so "
             f"{'that class is' if len(empty) == 1 else 'those classes are'} left out; put its texts there as "
             ".txt files, or remove the folder.")
    return rows


def warn_about_unused_split_column(rows, used, path, flag="--split-column"):
    """Warns where no split column was given and a column other than `used` (the columns read) names each row's
    split (train and val or test, all of its values split names; "split", "set", "fold"...): the file's own split
    was ignored without a word for a seeded one, so test rows were trained on. Not taken as the split unasked:
    a run trained on such a file split it by seed, and is split the same way again to be resumed or scored."""
    names = {*SPLITS, *_SPLIT_ALIASES}
    for column in dict.fromkeys(key for row in rows[:1] for key in row if key not in used and key is not None):
        values = set()
        for row in rows:  # stops at the first value that names no split (a text column)
            value = str(row.get(column, "")).strip().lower()
            if value not in names:
                values = None
                break
            values.add(value)
        if values and "train" in values and len(values) > 1:
            shown = ", ".join(sorted({str(row.get(column)).strip() for row in rows}, key=str.lower)[:5])
            warn(f"{path!r} has a column {column!r} whose values ({shown}) name each row's split, but it is not "
                 f"read: the split is a seeded one. Pass {flag} {column!r} to keep the file's split.")
            return


def headerless_message(path, header, rows, column, what, columns):
    """The message for a CSV/TSV without `column` whose first line looks like a data row, not a header (None
    where it does not): a header cell that is also a value in its own column below ('negative'), or one of
    several words. "Pass --text-column with one of them" alone would have read the first row as the header;
    both fixes are given, as a real header of long questions (a survey's) has many words too.
    `columns`: the columns the command reads, in order, for the header line to add."""
    kind = table_kind(path)
    names = [name for name in header if isinstance(name, str) and name.strip()]
    if kind not in ("csv", "tsv") or not any(
            len(name.split()) >= 4 or any(str(row.get(name) or "").strip() == name.strip() for row in rows)
            for name in names):
        return None
    line = repr(",".join(columns)) if kind == "csv" else f"{' and '.join(map(repr, columns))}, tab-separated"
    return (f"{path!r} has no {what} column {column!r} and seems to have no header row: its first line, read as the "
            f"column names, is {names}. If so, add a header line naming its columns first (e.g. {line}); if not, "
            f"pass --{what}-column with one of them.")


def _column(rows, column, what, path, columns=None, fix=None):
    # Any row: a JSONL object may leave a key out (rows[0] without "label" said the file had no label column).
    # `fix`: what to do where the caller has no --{what}-column to pass for this file.
    if rows and not any(column in row for row in rows):
        message = headerless_message(path, [k for k in rows[0] if k is not None], rows, column, what,
                                     columns or (column,))
        if message:
            raise UserInputError(message)
        raise UserInputError(
            f"{path!r} has no {what} column {column!r}; its columns are {[k for k in rows[0] if k is not None]}. "
            + (fix or f"Pass --{what}-column with one of them.")
        )
    return [row.get(column) for row in rows]


_WHOLE_DECIMAL = re.compile(r"[-+]?[0-9]+\.0+")
_DECIMAL = re.compile(r"([-+]?)0*([0-9]*)\.([0-9]*[1-9])0*")  # 4.50, +04.5 and .5: written as 4.5, 4.5 and 0.5


def _label_text(value):
    """A label as text: 1, 1.0 and "1.0" are one class ("1"), so are 4.5 and "4.50" ("4.5"), and a missing one
    (null, NaN) is "".
    Spaces around it are dropped ("fresh " is "fresh": a spreadsheet's stray space is not a class of its own),
    in training and in scoring alike; `note_spaced_labels` says so.

    JSON's numbers and a CSV column that pandas wrote as floats ("1.0": an integer column with a gap
    becomes float) would otherwise make "1" and "1.0" two classes of a file that joins two such sources."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, bool):  # JSON's spelling, which a CSV of the same labels has: Python's "True" was not
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if _WHOLE_DECIMAL.fullmatch(text):
        return str(int(float(text)))
    # Other decimals are one class however many zeros end them: "4.50" (a spreadsheet's two-place column) was a
    # class beside "4.5", the rows of one rating split between two classes without a word.
    decimal = _DECIMAL.fullmatch(text)
    if decimal:
        sign, whole, fraction = decimal.groups()
        return f"{sign.lstrip('+')}{whole or '0'}.{fraction}"
    return text


# Negative labels that sort after their positive ones (负面 after 正面 in code-point order), so that a binary
# model's positive label (the second) was the negative one; English ones sort first already (bad, negative, no).
NEGATIVE_LABELS = {"负面", "消极", "差评", "负", "否", "假", "負面", "消極", "差評"}


def _label_order(label):
    """Integer labels in numeric order ("2" before "10"), then the others alphabetically."""
    digits = label.lstrip("-")
    number = digits.isascii() and digits.isdigit()  # "①" and "²" are digits to isdigit(), not to int()
    return (not number, int(label) if number else 0, label)


_NUMBER = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")  # ASCII: float() reads "١" too


def _sorted_labels(labels):
    """Labels in the order a run's classes take (labels.json, predict's probabilities): by value where every
    one is a number (star ratings 1, 2, 2.5, 4, 4.5, 5: as text, 2.5 and 4.5 came after 5), else `_label_order`."""
    labels = list(labels)
    if labels and all(_NUMBER.fullmatch(label) for label in labels):
        return sorted(labels, key=lambda label: (float(label), _label_order(label)))
    return sorted(labels, key=_label_order)


def _stratified_split(indices_by_label, seed, val_fraction, test_fraction):
    rng = random.Random(seed)
    out = {name: [] for name in SPLITS}
    for label in sorted(indices_by_label):
        idx = list(indices_by_label[label])
        rng.shuffle(idx)
        n_test = round(len(idx) * test_fraction)
        n_val = round(len(idx) * val_fraction)
        out["test"] += idx[:n_test]
        out["val"] += idx[n_test:n_test + n_val]
        out["train"] += idx[n_test + n_val:]
    return {name: sorted(v) for name, v in out.items()}


def _check_fractions(val_fraction, test_fraction, training):
    """A UserInputError unless the held-out fractions are numbers from 0 to 1 that leave rows to train on (a
    `training` split; data scored by a trained model may all be held out): val_fraction=0.2, test_fraction=0.9
    gave an empty training split without a word."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
            raise UserInputError(f"{name} must be a number from 0 to 1 (the share of the rows it holds out), "
                                 f"got {value!r}.")
    total = val_fraction + test_fraction
    if total > 1 or training and total >= 1:
        raise UserInputError(f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) add up to "
                             f"{round(total, 6)}, which leaves no rows to train on; give fractions that add up to "
                             "less than 1 (the defaults hold out 0.1 each).")


def load_classification_data(
    source,
    text_column="text",
    label_column="label",
    split_column=None,
    labels=None,
    label_names=None,
    seed=1337,
    val_fraction=0.1,
    test_fraction=0.1,
    max_rows=None,
):
    """Loads labelled texts and splits them into train/val/test.

    Args:
        source: a bundled name (`rotten_tomatoes`, `rotten_tomatoes_3class`), a
            `.csv`/`.tsv`/`.jsonl` file (optionally `.gz`), or a folder with
            one sub-folder of `.txt` files per label (in folders of their own too;
            a saved model among them is refused), not data held in memory: save
            it to a file.
        text_column, label_column: column names in the file.
        split_column: column holding train/val/test; without it a seeded,
            stratified split is made.
        labels: a list: keep only rows with these labels, in this order (the order
            fixes the label ids; for two labels the second is the positive one).
        label_names: an existing label vocabulary (evaluating a trained model);
            labels outside it are an error.
        val_fraction, test_fraction: the share of each class held out for
            validation and for test where a split column does not name them; each from 0 to 1,
            together less than 1.
        max_rows: keep a seeded, stratified sample of this many rows.

    Returns:
        `ClassificationData` with integer label ids and `label_names`.
    """
    # A notebook's pathlib.Path is the file or folder it names; rows held in memory (a list, a DataFrame) were a
    # TypeError ("unhashable type: 'list'"): TrainConfig(data=...)'s message, to save them to a file.
    source = data_path(source, "load_classification_data's source")
    for name, value in (("labels", labels), ("label_names", label_names)):
        if value is not None and not isinstance(value, (list, tuple)):  # "pos,neg" was read a character at a time
            raise UserInputError(f"{name} must be a list or a tuple, got {type(value).__name__} {reprlib.repr(value)}"
                                 + (f" (e.g. {value.split(',')!r})" if isinstance(value, str) else "") + ".")
    _check_fractions(val_fraction, test_fraction, training=label_names is None)
    asked = bool(labels)  # the caller's --labels, not a bundled dataset's own choice (said when it drops rows)
    own_labels = None  # the labels a bundled dataset keeps unless told (rotten_tomatoes leaves its plots out)
    if source in BUNDLED:
        filename, options = BUNDLED[source]
        path = bundled_path(filename)
        split_column = split_column or options.get("split_column")
        own_labels = options.get("labels")
        labels = labels or own_labels
    else:
        path = source
    if os.path.isdir(path):
        rows = _read_folder(path)
        text_column, label_column = "text", "label"
    else:
        refuse_plain_text(path, "labels", "a text and a label column, or as a folder with one sub-folder of .txt "
                          "files per label. Texts without labels go to --unlabeled, or train a generator on them "
                          "with --task generate")
        rows = _read_rows(path)
    if not rows:
        raise UserInputError(f"{path!r} has a header but no rows. Add labelled rows of text.")

    # One column read twice: every text became a class of its own (--label-column text), or every label a split.
    if label_column == text_column:
        raise UserInputError(f"--text-column and --label-column both name {text_column!r}; name two different columns.")
    if split_column in (text_column, label_column):
        what = "text" if split_column == text_column else "label"
        raise UserInputError(f"--split-column {split_column!r} is also the {what} column; name the column that says "
                             "train, val or test.")
    texts = _column(rows, text_column, "text", path, (text_column, label_column))
    label_values = _column(rows, label_column, "label", path, (text_column, label_column))
    if split_column is None and label_names is None:  # training data (a scored file without one is read whole)
        warn_about_unused_split_column(rows, (text_column, label_column), path)
    raw_labels = [_label_text(v) for v in label_values]
    splits = _column(rows, split_column, "split", path) if split_column else None

    # A JSON number or list as a text was called empty; a list or object as a label became a class ("[0]").
    for values, column, what, kinds, fix in ((texts, text_column, "text", str, "a string"),
                                             (label_values, label_column, "one label", (str, int, float), "a string or number")):
        other = [i for i, v in enumerate(values) if v is not None and not isinstance(v, kinds)]
        if other:
            raise UserInputError(f"{path!r} data row {other[0] + 1} has a JSON {type(values[other[0]]).__name__}, not "
                                 f"{what}, in column {column!r} ({len(other)} such row(s)); write each as {fix}.")
    empty = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if empty:
        raise UserInputError(
            f"{path!r} has {len(empty)} row(s) with empty text in column {text_column!r} "
            f"(first: data row {empty[0] + 1}). Remove or fill them."
        )
    missing = [i for i, label in enumerate(raw_labels) if not label]
    if missing:
        raise UserInputError(
            f"{path!r} has {len(missing)} row(s) without a label in column {label_column!r} "
            f"(first: data row {missing[0] + 1}). Remove or label them."
        )

    keep = list(range(len(rows)))
    scoring = label_names is not None  # a trained model's labels: its data is scored, not trained on
    if labels:
        labels = [_label_text(label) for label in labels]
        # A label asked for that no row has (a typo, another case, a label with a comma that --labels split)
        # would drop that class's rows without a word; one asked for twice would be two classes.
        in_data = _sorted_labels(set(raw_labels))
        # A file scored by a model trained on --labels keeps its rows of those labels, some of which it may lack.
        unknown = [label for label in dict.fromkeys(labels) if label not in in_data and not scoring]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if unknown or repeated:
            problem = (f"{', '.join(map(repr, unknown))}, which no row has in column {label_column!r}" if unknown
                       else f"{', '.join(map(repr, repeated))} more than once")
            commas = " (--labels splits at commas: rename labels that hold one)" if any("," in v for v in in_data) else ""
            raise UserInputError(
                f"The labels asked for ({labels}) include {problem}; {path!r} has the labels "
                f"{in_data[:20]}{' ...' if len(in_data) > 20 else ''}. Name some of those, once each, exactly as "
                f"written{commas}.")
        kept = [i for i in keep if raw_labels[i] in labels]
        left_out = _sorted_labels({raw_labels[i] for i in keep} - set(labels)
                                  - (set(raw_labels) - set(own_labels or raw_labels)))
        variants = [label for label in left_out if _label_key(label) in {_label_key(kept) for kept in labels}]
        how = _how_labels_differ(*([v, *(k for k in labels if _label_key(k) == _label_key(v))] for v in variants))
        if left_out and asked and not scoring and kept:  # the others' rows went without a word, case variants too
            rest = (f"{len(kept)} of {len(keep)} rows; left out: the labels {left_out[:10]}"
                    f"{' ...' if len(left_out) > 10 else ''}"
                    + (f" ({', '.join(map(repr, variants[:5]))} differ only in {how} from the labels kept: "
                       "write them one way to keep their rows)" if variants else "") + ".")
            note(f"tfllm: --labels keeps {rest}", python=f"labels={list(labels)!r} keeps {rest}")
        keep = kept
        if not keep:  # a scored file without a row of the model's labels
            raise UserInputError(f"{path!r} has no rows labelled {', '.join(map(repr, labels))} in column "
                                 f"{label_column!r}; its labels are {in_data[:20]}.")
    if label_names is None:
        present = _sorted_labels({raw_labels[i] for i in keep})
        if len(present) == 2 and present[1] in NEGATIVE_LABELS and present[0] not in NEGATIVE_LABELS:
            present.reverse()  # the second is the positive label, whose precision, recall and F1 are reported
        label_names = [label for label in labels if label in present] if labels else present
        if len(label_names) < 2:
            raise UserInputError(
                f"{path!r} has only one class ({label_names[0] if label_names else 'none'!r}) in column "
                f"{label_column!r}; a classifier needs at least two. Check the label column."
            )
    else:
        # A run trained before labels were normalised may hold "1.0": its data's "1.0" is now "1".
        unknown = sorted({raw_labels[i] for i in keep} - set(map(_label_text, label_names)))
        if unknown:
            raise UserInputError(
                f"{path!r} has labels the model was not trained on: {unknown[:5]}. "
                f"The model knows {label_names}; drop those rows or retrain."
            )
    label_ids = {_label_text(name): i for i, name in enumerate(label_names)}

    if max_rows is not None and max_rows < 1:
        raise UserInputError(f"--max-rows must be at least 1, got {max_rows}.")
    if max_rows and len(keep) > max_rows:
        by_label = {}
        for i in keep:
            by_label.setdefault(raw_labels[i], []).append(i)
        fraction = max_rows / len(keep)
        rng = random.Random(seed)
        keep = sorted(i for v in by_label.values() for i in rng.sample(v, min(len(v), max(2, round(len(v) * fraction)))))
        if len(keep) > max_rows:  # a class's share below 2 rows is raised to 2, so that it can be split at all
            small = _sorted_labels(label for label, v in by_label.items() if round(len(v) * fraction) < 2)
            # A one-row class keeps its one row ("at least 2 of each" read as false for it).
            why = (f"at least 2 of each class, or all of a class's rows where it has fewer (fewer rows would leave out "
                   f"{', '.join(map(repr, small[:5]))}{' ...' if len(small) > 5 else ''})" if small else
                   # No class was raised: the shares' rounding (37.5 + 37.5 rows of 75 kept 76). The sample is
                   # left as it is, so that evaluating a run re-splits its data into the rows it trained on.
                   "each class keeps its share of them, rounded to whole rows")
            note(f"tfllm: --max-rows {max_rows} keeps {len(keep)} rows: {why}.")

    if splits is not None:
        named = {name: [] for name in SPLITS}
        for i in keep:
            split = str(splits[i]).strip().lower()
            split = _SPLIT_ALIASES.get(split, split)
            if split not in named:
                raise UserInputError(
                    f"{path!r} data row {i + 1} has split {splits[i]!r} in column {split_column!r}; "
                    "use train, val or test."
                )
            named[split].append(i)
        if not named["train"] and not scoring:  # a file to score may hold only test (or val) rows
            raise UserInputError(f"{path!r} has no rows with split 'train' in column {split_column!r}.")
        # A missing val or test split is carved out of train, stratified.
        for name, fraction in (("test", test_fraction), ("val", val_fraction)):
            if not named[name]:
                by_label = {}
                for i in named["train"]:
                    by_label.setdefault(raw_labels[i], []).append(i)
                carved = _stratified_split(by_label, seed, 0.0, fraction)
                named[name], named["train"] = carved["test"], carved["train"]
    else:
        by_label = {}
        for i in keep:
            by_label.setdefault(raw_labels[i], []).append(i)
        named = _stratified_split(by_label, seed, val_fraction, test_fraction)

    def make(indices):
        return Split([texts[i] for i in indices], [label_ids[raw_labels[i]] for i in indices])

    spaced = {}
    for i in keep:
        # Spaces only: "1.0" read as "1" is a number's spelling, not a label with spaces around it.
        if isinstance(label_values[i], str) and label_values[i] != label_values[i].strip():
            spaced[label_values[i]] = spaced.get(label_values[i], 0) + 1
    return ClassificationData(make(named["train"]), make(named["val"]), make(named["test"]), list(label_names),
                              spaced_labels=spaced)


def describe(data):
    """The line a classifier's training prints as soon as its data is read and split: on a large file
    the tokenizer and word vectors come minutes before the first epoch's progress."""
    sizes = [len(data.train), len(data.val), len(data.test)]
    return (f"Data: {sum(sizes):,} rows, train/val/test {'/'.join(f'{n:,}' for n in sizes)}, "
            f"{data.num_classes} classes")


# A validation or test split of fewer than this many rows (a translation's: source texts) is warned of: one row
# more or less right moves its figures by 10 points or more, and early stopping follows that noise.
SMALL_SPLIT = 10


def warn_about_small_splits(source, data, unit="row"):
    """Warns of a validation or test split of `data` (anything with `.val` and `.test`) with fewer than
    SMALL_SPLIT of `unit` in it: its figures are mostly noise (an empty split is refused before this)."""
    small = [(name, n) for name, n in (("validation", len(data.val)), ("test", len(data.test))) if 0 < n < SMALL_SPLIT]
    if small:
        sizes = " and ".join(f"{n} {name} {unit}{'s' * (n != 1)}" for name, n in small)
        warn(f"{source!r} gives only {sizes}: one more or less right moves the figures by "
             f"{100 // min(n for _, n in small)} points, so they are mostly noise. Give it more data (a seeded split "
             "holds out a tenth for each), or more rows of those splits in its --split-column.")


def warn_about_duplicates(source, data):
    """Warns of how many held-out texts are also training texts: duplicate rows of a file, which
    a seeded split scatters across the splits, make the test figures optimistic."""
    seen = set(data.train.texts)
    val, test = (sum(text in seen for text in getattr(data, name).texts) for name in ("val", "test"))
    if val or test:
        warn(f"{test} of the {len(data.test)} test texts and {val} of the {len(data.val)} "
             f"validation texts are also training texts ({source!r} has duplicate texts), so the test figures "
             "are optimistic. Remove the duplicate rows to measure on unseen texts.")


# Below this ratio of the smallest class to the largest in the training split, `train` says what accuracy
# means there (0.25: one class under a fifth of a two-class file).
IMBALANCED = 0.25
# The imbalance warning lists this many classes at most (the commonest and the rarest halves).
IMBALANCE_LISTED = 10


def balanced_class_weight(labels, num_classes):
    """`{class id: weight}` for `fit(class_weight=...)` that makes every class weigh as much in the loss as the
    others: scikit-learn's "balanced", `n / (num_classes * count)`."""
    counts = _class_counts(labels, num_classes)
    return {i: len(labels) / (num_classes * count) for i, count in enumerate(counts) if count}


def _class_counts(labels, num_classes):
    counts = [0] * num_classes
    for label in labels:
        counts[int(label)] += 1
    return counts


def warn_about_imbalance(data, balanced):
    """Warns when a class is rare in the training split: answering the commonest class scores a high
    accuracy, and with two classes the positive label's figures may be those of the commonest."""
    counts = _class_counts(data.train.labels, data.num_classes)
    rare, common = counts.index(min(counts)), counts.index(max(counts))
    if not counts[common] or counts[rare] >= IMBALANCED * counts[common]:
        return
    names = data.label_names
    shares = ", ".join(f"{name!r} {count:,}" for name, count in zip(names, counts))
    if len(names) > IMBALANCE_LISTED:
        # 200 classes made a 4 KB line: the commonest and the rarest, the others counted.
        order = sorted(range(len(names)), key=lambda i: -counts[i])
        half = IMBALANCE_LISTED // 2
        shown = lambda ids: ", ".join(f"{names[i]!r} {counts[i]:,}" for i in ids)  # noqa: E731
        shares = (f"{len(names)} classes, commonest first: {shown(order[:half])}, ... {len(names) - 2 * half} more "
                  f"..., {shown(order[-half:])}")
    message = (f"the classes are imbalanced ({shares} training rows): always answering "
               f"{names[common]!r} scores {counts[common] / sum(counts):.2f} accuracy, so read the per-class figures")
    message += "." if balanced else ", or weigh the classes equally in training with --set balance_classes=true."
    if len(names) == 2 and common == 1:
        message += (f" Precision, recall and F1 are of the positive label, {names[1]!r}, the common one; "
                    f"--labels {names[1]},{names[0]} makes {names[0]!r} positive.")
    warn(message)


def warn_about_unscored_classes(data):
    """Warns of which classes have no test rows (a class of one or two rows in a stratified split): their
    recall is 0/0, so `evaluation.classification_report` leaves them out of the macro averages unless the
    model predicts them (scikit-learn's rule), which changes what those averages are over, without a word."""
    present = set(data.test.labels)
    missing = [name for i, name in enumerate(data.label_names) if i not in present]
    if missing and len(data.test):
        names = ", ".join(repr(name) for name in missing[:5]) + (" ..." if len(missing) > 5 else "")
        warn(f"class(es) {names} have no test rows, so their test figures are null (0 where the model predicts "
             "them) and the macro averages are over the other classes; give each class more rows (or read the "
             "per-class figures).")


def _label_key(name):
    """What labels that differ only in case, or in the spaces between their words ("Very good", "very  good"),
    have in common (spaces around a label are dropped as it is read: `_label_text`)."""
    return " ".join(name.casefold().split())


def _how_labels_differ(*groups):
    """What the labels of each group (one `_label_key` each) differ in, for a warning: only case where they do."""
    same = all(len({name.casefold() for name in names}) == 1 for names in groups)
    return "case" if same else "case or in the spaces between words"


# A label with this many rows or fewer, a few edits from a label with ten times as many, reads as a typo of it
# ('postive', 1 row, beside 'positive', 120): a class of its own, then imbalance and "no test rows" warnings
# that named it without saying why.
RARE_LABEL_ROWS = 5


def _edits(a, b, most):
    """The edits (insertions, deletions, substitutions, swaps of two neighbours) that make `a` into `b`, or
    `most` + 1 where that is more than `most` (the optimal string alignment distance)."""
    if abs(len(a) - len(b)) > most:
        return most + 1
    before, row = None, list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(row[j] + 1, current[j - 1] + 1, row[j - 1] + (x != y)))
            if before is not None and i > 1 and j > 1 and x == b[j - 2] and a[i - 2] == y:
                current[j] = min(current[j], before[j - 2] + 1)
        before, row = row, current
    return min(row[-1], most + 1)


def _misspelt_labels(names, counts):
    """(rare, frequent) label pairs where the rare one (`RARE_LABEL_ROWS` rows or fewer) is one edit (two for
    labels of six letters or more) from one with ten times its rows: a typo, not a class, most likely.
    Numbers ('1', '2': a rating) and labels of three letters or fewer differ by an edit by nature, and so do
    numbered codes, labels that differ only in their digits ('lab95' and 'lab295', 'class 1' and 'class 11'):
    300 such labels warned that 'lab295' looked like 'lab95'."""
    pairs = []
    for rare, rare_count in zip(names, counts):
        if not rare_count or rare_count > RARE_LABEL_ROWS:
            continue
        for name, count in zip(names, counts):
            word = _label_key(name)
            most = 1 if len(word) < 6 else 2
            if (count >= 10 * rare_count and len(word) > 3 and not word.replace(".", "").isdigit()
                    and re.sub(r"\d", "", _label_key(rare)) != re.sub(r"\d", "", word)
                    and 0 < _edits(_label_key(rare), word, most) <= most):
                pairs.append((rare, name))
                break
    return pairs


def note_spaced_labels(source, data, label_column="label"):
    """Says once (training, or scoring another file) which labels had spaces around them, read without:
    "fresh " and "fresh" are one class, which was done without a word while the docs said they stayed two."""
    if data.spaced_labels:
        rows = sum(data.spaced_labels.values())
        shown = ", ".join(f"{name!r} -> {name.strip()!r}" for name in list(data.spaced_labels)[:5])
        note(f"tfllm: {rows:,} label{'s' * (rows != 1)} of {source!r} (column {label_column!r}) had spaces around "
             f"{'them' if rows != 1 else 'it'}, read without: {shown}{' ...' if len(data.spaced_labels) > 5 else ''}.")


# Labels that spell a missing value, as pandas' read_csv reads them (its default na_values), and which a
# spreadsheet or `df.to_csv` writes for an empty cell: each became a class of its own without a word. An empty
# label (and JSON's null or NaN) is refused already, as a row without a label. pandas' "NA" and "None" are left
# out: they are real classes often enough (North America; a toxicity or severity scale's "None") that a warning
# would mislead, and a run is not refused for them either way.
MISSING_LABELS = frozenset({"NaN", "nan", "-NaN", "-nan", "N/A", "n/a", "#N/A", "#N/A N/A", "#NA", "<NA>", "NULL",
                            "null", "1.#IND", "-1.#IND", "1.#QNAN", "-1.#QNAN"})


def warn_about_labels(source, data, label_column="label"):
    """Warns of which labels differ only in case ("Positive" and "positive"): each is a
    class of its own, which a file joined from two sources makes without a word; and of labels that
    spell a missing value (`MISSING_LABELS`: "NaN", "N/A"), each also a class of its own. Labels that had
    spaces around them are one class with those without (`note_spaced_labels`)."""
    note_spaced_labels(source, data, label_column)
    counts = _class_counts([*data.train.labels, *data.val.labels, *data.test.labels], data.num_classes)
    missing = {name: counts[i] for i, name in enumerate(data.label_names) if name in MISSING_LABELS}
    if missing:
        spelt = ", ".join(f"{name!r} ({count:,} row{'s' * (count != 1)})" for name, count in missing.items())
        total = sum(missing.values())
        warn(f"{source!r} has {total:,} row{'s' * (total != 1)} whose label in column {label_column!r} spells a "
             f"missing value: {spelt}, each read as a class of its own; drop those rows or give them real labels.")
    groups = {}
    for name in data.label_names:
        groups.setdefault(_label_key(name), []).append(name)
    for names in (names for names in groups.values() if len(names) > 1):
        warn(f"the labels {' and '.join(map(repr, names))} of {source!r} differ only in {_how_labels_differ(names)}, "
             f"so they are {len(names)} classes; if they are one, write them one way.")
    names, rows = list(data.label_names), dict(zip(data.label_names, counts))
    for rare, name in _misspelt_labels(names, counts):
        others = [other for other in names if other != rare]
        keep = ",".join(others)
        if len(keep) > 80 or any("," in other or " " in other for other in others):
            keep = "naming the others"  # not a list that reads (or splits) as the flag's value
        warn(f"the label {rare!r} of {source!r} ({rows[rare]:,} row{'s' * (rows[rare] != 1)}) looks like {name!r} "
             f"({rows[name]:,} rows), so it is a class of its own; if they are one, fix the label, or leave its "
             f"rows out with --labels {keep}.")
    # A file joined from two sources, one writing a yes/no label as 0/1 and the other as JSON's true/false.
    numbers = [name for name in data.label_names if name in ("0", "1")]
    switches = [name for name in data.label_names if name.lower() in ("false", "true")]
    if numbers and switches:
        warn(f"the labels {' and '.join(map(repr, numbers + switches))} of {source!r} look like one yes/no label "
             f"written two ways (0/1 and false/true), so they are {len(numbers + switches)} classes; if they are "
             "the same, write them one way.")


def data_fingerprint(source):
    """sha256 of a data file's bytes (a folder: of its files' paths and bytes), or None for a bundled
    name or a path that is not there: what a run records to notice the file was edited before it is
    split again (a resume, an evaluation), since an edited file splits differently."""
    if not isinstance(source, (str, os.PathLike)) or source in BUNDLED or not os.path.exists(source):
        return None
    # In a folder, the text files the loaders read (not a .DS_Store or a README.md beside them).
    files = [source] if os.path.isfile(source) else []
    if os.path.isdir(source):
        for root, folders, names in os.walk(source):
            folders[:] = [f for f in folders if not hidden(f)]  # nor what they skip (a .git folder)
            files += [os.path.join(root, name) for name in names
                      if is_text_file(name) and not hidden(name)]
        files.sort()
    return _sha256(tuple((os.path.abspath(f), os.path.relpath(f, source), os.stat(f).st_size, os.stat(f).st_mtime_ns)
                         for f in files))


@functools.lru_cache(maxsize=16)
def _sha256(stamps):
    # Keyed by the files' names, sizes and modification times: a resume's checks, then an ensemble's
    # members, read a large file once, not once each.
    digest = hashlib.sha256()
    for path, name, _, _ in stamps:
        digest.update(name.encode("utf-8", "surrogateescape") + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def rows_fingerprint(source):
    """sha256 of a table file's parsed rows (every cell, in order), or None for anything else (a folder, a
    text file, a bundled name, a file that does not parse): a run records it beside `data_fingerprint`, so a
    file whose bytes changed but whose rows did not (Excel's CSV with its line endings turned into \n, or its
    byte-order mark dropped) still splits as the run's did, and is not refused as an edited file."""
    if not isinstance(source, (str, os.PathLike)) or source in BUNDLED or not os.path.isfile(source) \
            or not is_table(str(source)):
        return None
    stat = os.stat(source)
    return _rows_sha256(os.path.abspath(source), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _rows_sha256(path, size, mtime_ns):  # keyed as `_sha256`: a resume's checks parse a large file once
    digest = hashlib.sha256()
    try:
        for row in iter_rows(path):
            digest.update(json.dumps(list(row.items()), ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n")
    except UserInputError:  # a file that does not parse as a table has no rows to compare: the bytes decide
        return None
    return digest.hexdigest()


def same_data(data, trained_on):
    """Whether `data` names the file (or bundled dataset) `trained_on` names: evaluating on it means the
    run's own split, never a row it trained on."""
    if data == trained_on:
        return True
    return bool(data and trained_on) and os.path.exists(data) and os.path.exists(trained_on) \
        and os.path.samefile(data, trained_on)


def split_as_trained(config, label_names=None, needs=None, instead=""):
    """The classification data of a `TrainConfig`, split exactly as its training run split it
    (same file, columns, labels, seed and rows): training, evaluation and export all call this.
    `needs` names what reads a finished run's data (an evaluation, an export), for the error when its
    file is gone, and `instead` another way to do it: 'Check the path, or use a bundled name' named no fix."""
    if needs and config.data not in BUNDLED and not os.path.exists(config.data):
        where = ("which no longer exists; put the file back there" if os.path.isabs(config.data) else
                 "a path relative to the folder the run was trained from, not found from here; run this from that "
                 "folder or put the file back")
        raise UserInputError(f"{needs} reads the run's training data, {config.data!r}, {where}{instead}.")
    data = load_classification_data(config.data, text_column=config.text_column, label_column=config.label_column,
                                    split_column=config.split_column, labels=config.labels, label_names=label_names,
                                    seed=config.seed, max_rows=config.max_rows)
    empty = [name for name in SPLITS if not len(getattr(data, name))]
    if empty:
        raise UserInputError(
            f"{config.data!r} gives no {' and no '.join(empty)} rows ({len(data.train)} / {len(data.val)} / "
            f"{len(data.test)} in train / val / test): the split takes 10% of each class for val and for test. "
            # Only the flags the command can change: it said "raise --max-rows" without one, and "name the
            # rows' splits with --split-column" to a command that had.
            f"Give each class at least 6 rows{' (raise --max-rows)' if config.max_rows else ''}, or "
            + (f"name some rows {' and some '.join(empty)} in column {config.split_column!r}." if config.split_column
               else "name the rows' splits with --split-column."))
    trained = sorted(set(data.train.labels))
    if label_names is None and len(trained) < 2:  # a --split-column that holds out every row of the other classes
        raise UserInputError(
            f"{config.data!r} has only one class ({data.label_names[trained[0]]!r}) among its train rows (column "
            f"{config.split_column!r}), so the model would learn nothing else. Give every class some train rows.")
    return data
