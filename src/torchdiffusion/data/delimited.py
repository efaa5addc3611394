"""Delimited text files (tables and signals): the rows of a CSV as a spreadsheet exports it.

* the delimiter is the one of ``DELIMITERS`` (comma, semicolon, tab, ``|``) that splits the first non-empty line
  into the most cells (quotes respected; ties: the earlier one, so a one-column file is comma-separated);
* a UTF-8 byte order mark (a spreadsheet's "CSV UTF-8") is dropped, and quoted cells may hold line breaks;
* a name ending in ``.gz`` is read through gzip (``data.csv.gz``);
* a semicolon-separated file may write its numbers with a decimal comma (``1,5``, a European locale):
  :func:`decimal_of` tells, :func:`as_number` reads a cell either way.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

DELIMITERS = (",", ";", "\t", "|")


def delimiter_of(first_line: str) -> str:
    """The one of DELIMITERS that splits ``first_line`` into the most cells (ties: the earlier one)."""
    counts = [len(next(csv.reader([first_line], delimiter=d), [])) for d in DELIMITERS]
    return DELIMITERS[counts.index(max(counts))]


def read_rows(path: Path, keep_empty: bool = False) -> tuple[list[list[str]], str]:
    """(the non-empty rows of ``path`` as cell texts, its delimiter). Blank lines are dropped; so are rows of empty
    cells (``,,,``: a spreadsheet's trailing rows) unless ``keep_empty`` - the rows to fill of ``impute``, whose
    output answers its input row for row.

    Raises:
        OSError, ValueError (not UTF-8, a damaged .gz), csv.Error: for the caller to name the file.
    """
    import gzip
    import zlib

    path = Path(path)
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8-sig") as f:
            text = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:  # a cut or damaged .gz
        raise ValueError(f"damaged gzip data: {e}") from None
    first = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = delimiter_of(first)
    rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    return [r for r in rows if any(c.strip() for c in r) or (keep_empty and len(r) > 1)], delimiter


# A number as CSV files write one: ASCII digits, an optional sign, point and exponent. Python's float() also takes
# "1_000", full-width and other Unicode digits ("１２", "١٢"): cells a spreadsheet keeps as text, codes like "39_4".
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)


def as_number(cell: str, decimal: str = ".") -> float | None:
    """The finite number a cell holds (``decimal``: "," reads ``1,5`` as 1.5, and a point as no number), or None:
    a cell not written as a plain ASCII number (:data:`NUMBER`; surrounding spaces allowed) is text."""
    if decimal == ",":
        if "." in cell or cell.count(",") > 1:
            return None
        cell = cell.replace(",", ".")
    if not NUMBER.fullmatch(cell.strip()):
        return None
    try:
        v = float(cell)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def decimal_of(cells: list[str], delimiter: str) -> str:
    """ "," when a semicolon-separated file writes its numbers with a decimal comma - some cell reads as a number
    that way and none is a number with a decimal point - else "."."""
    if delimiter != ";":
        return "."
    comma = any("," in c and as_number(c, ",") is not None for c in cells)
    return "," if comma and not any("." in c and as_number(c) is not None for c in cells) else "."
