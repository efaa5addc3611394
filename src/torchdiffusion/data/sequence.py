"""Discrete sequences: windows of ``data.seq_len`` symbols (data kind "sequence", one example shaped ``(L,)``).

Sources:

* ``text``: ``data.path`` a UTF-8 text file (or a ``.gz`` of one), read as characters (line breaks are the symbol
  ``\\n``);
* ``fasta``: ``data.path`` a FASTA file (or a ``.gz`` of one): the residues of every record (header lines
  ``>...`` and line breaks dropped), upper-cased, records joined by ``*`` so a window can tell where one ends;
* ``sklearn_text``: scikit-learn's data-set descriptions (``sklearn/datasets/descr/*.rst``, about 43,000
  characters of English prose under scikit-learn's BSD-3 licence): a text that installs with the package;
* ``python_docs``: the Python language reference and library topics that ship with CPython itself
  (``pydoc_data.topics``, the text ``help("assert")`` shows; about 465,000 characters of English prose with
  grammar rules and code examples for Python 3.11, under the PSF licence), topics in sorted order.

The vocabulary is the sorted set of symbols in the whole source (saved in run.json); a sequence is the ids of
its symbols, stored as floats in ``x`` (N, L). Windows do not overlap; the last partial one is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import DataConfig
from .base import DataError, TensorData


@dataclass(frozen=True)
class Vocabulary:
    """The symbols of a sequence model; id k is ``symbols[k]`` (the mask id of masked diffusion is ``len``)."""

    symbols: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str, where: str = "the text") -> torch.Tensor:
        """(len(text),) long ids; a symbol outside the vocabulary is a DataError naming it."""
        index = {s: k for k, s in enumerate(self.symbols)}
        bad = next((ch for ch in text if ch not in index), None)
        if bad is not None:
            raise DataError(f"{where} has the symbol {bad!r}, which is not in the model's vocabulary of {len(self)}")
        return torch.tensor([index[ch] for ch in text], dtype=torch.long)

    def decode(self, ids: torch.Tensor) -> str:
        return "".join(self.symbols[int(k)] for k in ids.tolist())

    def to_dict(self) -> dict:
        return {"symbols": "".join(self.symbols)}

    @staticmethod
    def from_dict(d: dict) -> Vocabulary:
        return Vocabulary(tuple(d["symbols"]))


def read_text(path: str | Path) -> str:
    """A UTF-8 text file (gzip-compressed when its name ends in ``.gz``), line ends as ``\n``, a byte order mark
    dropped (it would become a symbol of the vocabulary)."""
    import gzip
    import io
    import zlib

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such text file")
    try:
        if path.suffix.lower() == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
        with io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8-sig") as f:  # universal newlines, as read_text
            return f.read()
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte {e.start})") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:  # a cut or damaged .gz (other OS errors: the system's)
        raise DataError(f"cannot read {path} ({e})") from None


def read_fasta(path: str | Path) -> str:
    """The records' residues, upper-cased, joined by '*' (see the module docstring)."""
    records, current = [], []
    text = read_text(path)
    if not text.lstrip().startswith(">"):
        raise DataError(f"{path} is not a FASTA file (it must start with a '>' header line)")
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(">"):
            if current:
                records.append("".join(current))
            current = []
        elif line:
            current.append(line.upper())
    if current:
        records.append("".join(current))
    return "*".join(records)


def sklearn_text() -> str:
    """scikit-learn's data-set descriptions, in sorted file order."""
    import sklearn

    folder = Path(sklearn.__file__).parent / "datasets" / "descr"
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.rst")))


def python_docs() -> str:
    """The pydoc topics of the running Python (``pydoc_data.topics``), in sorted topic order."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # a Python installed without its pydoc data
        raise DataError("this Python has no pydoc_data.topics; use data.source=sklearn_text") from None
    return "\n".join(topics[k] for k in sorted(topics))


def windows(text: str, cfg: DataConfig, name: str) -> TensorData:
    L = cfg.seq_len
    if L < 2:
        raise DataError(f"data.seq_len must be >= 2, got {L}")
    n = len(text) // L
    if n < 1:
        raise DataError(f"{name} has {len(text)} symbols, fewer than one window of data.seq_len={L}")
    vocab = Vocabulary(tuple(sorted(set(text))))
    ids = vocab.encode(text[: n * L], name)
    return TensorData(ids.view(n, L).to(torch.float32), kind="sequence", name=name, schema=vocab)


def load_text(cfg: DataConfig, seed: int) -> TensorData:
    if not cfg.path:
        raise DataError("the text source needs data.path=FILE.txt")
    return windows(read_text(cfg.path), cfg, f"text/{Path(cfg.path).name}")


def load_fasta(cfg: DataConfig, seed: int) -> TensorData:
    if not cfg.path:
        raise DataError("the fasta source needs data.path=FILE.fasta")
    return windows(read_fasta(cfg.path), cfg, f"fasta/{Path(cfg.path).name}")


def load_sklearn_text(cfg: DataConfig, seed: int) -> TensorData:
    return windows(sklearn_text(), cfg, "sklearn_text")


def load_python_docs(cfg: DataConfig, seed: int) -> TensorData:
    return windows(python_docs(), cfg, "python_docs")
