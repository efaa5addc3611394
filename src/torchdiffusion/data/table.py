"""Tables: rows of numeric and categorical columns (data kind "table", one example shaped ``(D,)``).

Sources:

* ``csv``: ``data.path`` a CSV file with a header row. A column is categorical when any of its cells is not a
  number, or when it is named in ``data.categorical``; every other column is numeric. Comma-, semicolon-, tab- or
  ``|``-separated, with decimal commas in a semicolon file, as spreadsheets export them (data/delimited.py).
  Empty cells and ``NA``/``NaN``/``null`` are missing: training refuses them (one line naming the column);
  ``torchdiffusion impute`` fills them in. An infinite cell (``inf``, ``1e400``) in a column of numbers is refused
  (one line naming it): it is neither a number the quantile map can take nor a category.
* ``sklearn:wine``, ``sklearn:breast_cancer``, ``sklearn:iris``, ``sklearn:diabetes``: scikit-learn's bundled
  sets; the classification sets get their class as the categorical column ``target``.

Encoding (TabDDPM, Kotelnikov et al. 2023, Sec. 3): ``x = [z_1 .. z_Dn, c_1 .. c_Dc]`` with the numeric
columns first, each quantile-normalised to a standard Gaussian, then the categorical columns as integer codes
0..K_j-1 (stored as floats). The quantile map of a column uses K knots ``q_k``, the empirical quantiles of
the N training values at levels l_k = k/(K-1) (q_0 the minimum, q_{K-1} the maximum), placed at the plotting
positions ``p_k = (1/2 + l_k (N - 1))/N`` (for K = N: the i-th smallest value at (i + 1/2)/N, so the extreme
rows sit at about +-Phi^-1(1/(2N)), not at the clip limit):

    u = F(v) = linear interpolation of (q_k, p_k) at v   (the mean of the left and right interpolation for ties),
    z = Phi^-1(clip(u, 1e-7, 1 - 1e-7)),          and back   v = F^-1(Phi(z)),

with ``Phi`` the standard normal CDF; columns that hold only integers are rounded on the way back.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..config import DataConfig
from .base import DataError, TensorData
from .delimited import as_number, decimal_of, read_rows

MISSING = ("", "na", "nan", "null", "?")  # cell texts read as missing (case-insensitive; "None" is a category)
NUM_KNOTS = 1000  # at most this many quantile knots per numeric column (scikit-learn's QuantileTransformer)
U_CLIP = 1e-7  # u is kept in [U_CLIP, 1 - U_CLIP]: z within about +-5.2


@dataclass(frozen=True)
class TableSchema:
    """What the columns are and how they are encoded; saved in run.json so samples decode without the data.

    Attributes:
        numeric: names of the numeric columns, in encoded order (first in ``x``).
        categorical: names of the categorical columns, after them.
        categories: for each categorical column, its category labels (code k is ``categories[j][k]``).
        quantiles: for each numeric column, the knot values q_k (module docstring).
        fit_rows: N, the number of training rows the knots were fitted to.
        integer: for each numeric column, whether it held only integers (rounded when decoded).
        columns: every column name in the file's order (decoded tables come back in this order).
        target: the column that train-on-synthetic models predict (a categorical column), or None.
        delimiter, decimal: the training file's dialect (data/delimited.py), which sampled tables are written in.
    """

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    categories: tuple[tuple[str, ...], ...]
    quantiles: tuple[tuple[float, ...], ...]
    integer: tuple[bool, ...]
    columns: tuple[str, ...]
    target: str | None = None
    fit_rows: int = 0
    delimiter: str = ","
    decimal: str = "."

    @property
    def num_numeric(self) -> int:
        return len(self.numeric)

    @property
    def num_categories(self) -> tuple[int, ...]:
        """K_j of every categorical column."""
        return tuple(len(c) for c in self.categories)

    def to_dict(self) -> dict:
        return {
            "numeric": list(self.numeric),
            "categorical": list(self.categorical),
            "categories": [list(c) for c in self.categories],
            "quantiles": [list(q) for q in self.quantiles],
            "integer": list(self.integer),
            "columns": list(self.columns),
            "target": self.target,
            "fit_rows": self.fit_rows,
            "delimiter": self.delimiter,
            "decimal": self.decimal,
        }

    @staticmethod
    def from_dict(d: dict) -> TableSchema:
        return TableSchema(
            numeric=tuple(d["numeric"]),
            categorical=tuple(d["categorical"]),
            categories=tuple(tuple(str(v) for v in c) for c in d["categories"]),
            quantiles=tuple(tuple(float(v) for v in q) for q in d["quantiles"]),
            integer=tuple(bool(v) for v in d["integer"]),
            columns=tuple(d["columns"]),
            target=d.get("target"),
            fit_rows=int(d["fit_rows"]),
            delimiter=str(d.get("delimiter", ",")),
            decimal=str(d.get("decimal", ".")),
        )


# The quantile map (one place)


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))


def _normal_icdf(u: np.ndarray) -> np.ndarray:
    return torch.special.ndtri(torch.from_numpy(np.asarray(u, dtype=np.float64))).numpy()


def knot_probs(k: int, n: int) -> np.ndarray:
    """p_k = (1/2 + l_k (N - 1))/N with l_k = k/(K - 1): the plotting positions of K knots fitted to N values."""
    return (0.5 + np.linspace(0, 1, k) * (n - 1)) / n


def fit_quantiles(v: np.ndarray) -> np.ndarray:
    """(K,) knots of one numeric column: its quantiles at levels ``linspace(0, 1, K)``, K = min(N, NUM_KNOTS)."""
    k = max(2, min(len(v), NUM_KNOTS))
    return np.quantile(v.astype(np.float64), np.linspace(0, 1, k))


def quantile_forward(v: np.ndarray, q: np.ndarray, n: int) -> np.ndarray:
    """z = Phi^-1(F(v)) for knots q fitted to n values (module docstring); ties averaged from both sides as
    scikit-learn does."""
    p = knot_probs(len(q), n)
    u = 0.5 * (np.interp(v, q, p) - np.interp(-v, -q[::-1], -p[::-1]))
    return _normal_icdf(np.clip(u, U_CLIP, 1 - U_CLIP))


def quantile_inverse(z: np.ndarray, q: np.ndarray, n: int) -> np.ndarray:
    """v = F^-1(Phi(z)): the inverse of :func:`quantile_forward` on the data's range."""
    return np.interp(_normal_cdf(np.asarray(z, dtype=np.float64)), knot_probs(len(q), n), q)


# Raw tables: column name -> values (float64 with NaN for numeric, str with None for categorical)


@dataclass
class RawTable:
    columns: list[str]
    numeric: dict[str, np.ndarray]  # (N,) float64, NaN = missing
    categorical: dict[str, list[str | None]]  # N labels, None = missing
    delimiter: str = ","  # the file's (read_csv): what a table written back for it uses
    decimal: str = "."  # "," for a semicolon-separated file whose numbers have a decimal comma
    text: dict[str, list[str]] = field(default_factory=dict)  # numeric cells as written in the file (read_csv)

    def __len__(self) -> int:
        first = self.columns[0]
        return len(self.numeric[first]) if first in self.numeric else len(self.categorical[first])


def _is_missing(cell: str) -> bool:
    return cell.strip().lower() in MISSING


def _non_finite(cell: str, decimal: str) -> bool:
    """Whether a cell reads as an infinite number ("inf", "-Infinity", "1e400"; with decimal commas too)."""
    try:
        return not math.isfinite(float(cell.replace(",", ".") if decimal == "," else cell))
    except ValueError:
        return False


def _beyond_float(value: float | None, cell: str) -> bool:
    """Whether a numeric cell is a whole number written without a point or exponent (an integer: an ID, a count)
    too large for float64 to hold exactly (|v| > 2**53)."""
    return value is not None and abs(value) > 2**53 and cell.strip().lstrip("+-").isdigit()


def read_csv(path: str | Path, categorical: tuple[str, ...] = (), keep_empty: bool = False) -> RawTable:
    """A CSV with a header row as a :class:`RawTable` (column kinds as in the module docstring); ``keep_empty``:
    rows whose cells are all empty are kept (delimited.read_rows), as ``impute`` fills them."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such CSV file")
    from ..provenance import note_input

    note_input(path)  # a command's manifest records the files it read (provenance.py)
    try:
        rows, delimiter = read_rows(path, keep_empty)
    except (ValueError, csv.Error) as e:  # not UTF-8 (a UnicodeDecodeError), a damaged .gz
        raise DataError(f"{path} is not a readable CSV file ({e})") from None
    if len(rows) < 2:
        raise DataError(f"{path} needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header) or any(not h for h in header):
        raise DataError(f"{path}: the header row needs distinct, non-empty column names")
    for i, r in enumerate(rows[1:], start=2):
        if len(r) != len(header):
            raise DataError(f"{path}: row {i} has {len(r)} cells but the header has {len(header)} columns")
    cells_of = [[r[j].strip() for r in rows[1:]] for j in range(len(header))]
    decimal = decimal_of([c for cells in cells_of for c in cells if not _is_missing(c)], delimiter)
    table = RawTable(header, {}, {}, delimiter, decimal)
    for name, cells in zip(header, cells_of):
        values = [None if _is_missing(c) else as_number(c, decimal) for c in cells]
        odd = [(i, c) for i, (v, c) in enumerate(zip(values, cells), start=2) if v is None and not _is_missing(c)]
        if name not in categorical and odd and all(_non_finite(c, decimal) for _, c in odd):
            i, c = odd[0]
            raise DataError(
                f"{path}: column {name!r} holds {c!r} in row {i}; its numbers must be finite (an empty cell is a "
                "missing value)"
            )
        numeric = name not in categorical and all(v is not None for v, c in zip(values, cells) if not _is_missing(c))
        if numeric:
            big = next(((i, c) for i, (v, c) in enumerate(zip(values, cells), start=2) if _beyond_float(v, c)), None)
            if big is not None:  # an ID column: its samples would show digits no row has (float64 rounds them)
                raise DataError(
                    f"{path}: column {name!r} holds the whole number {big[1]} in row {big[0]}, beyond 2**53, which "
                    f"float64 cannot keep exactly (samples would show other digits); read it as categories "
                    f"(--set data.categorical={name})"
                )
            table.numeric[name] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
            table.text[name] = cells
        else:
            table.categorical[name] = [None if _is_missing(c) else c for c in cells]
    return table


SKLEARN_TABLES = ("wine", "breast_cancer", "iris", "diabetes")


def sklearn_table(name: str) -> RawTable:
    """One of scikit-learn's bundled sets; classification sets get their class names as column ``target``."""
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    names = [str(n) for n in bunch.feature_names]
    table = RawTable(list(names), {n: bunch.data[:, j].astype(np.float64) for j, n in enumerate(names)}, {})
    target_names = getattr(bunch, "target_names", None)
    table.columns.append("target")
    if target_names is not None:
        table.categorical["target"] = [str(target_names[int(k)]) for k in bunch.target]
    else:
        table.numeric["target"] = bunch.target.astype(np.float64)
    return table


def check_complete(table: RawTable, where: str) -> None:
    """Refuse missing cells (training needs complete rows)."""
    for name in table.columns:
        col = table.numeric.get(name)
        n = int(np.isnan(col).sum()) if col is not None else sum(v is None for v in table.categorical[name])
        if n:
            raise DataError(
                f"{where}: column {name!r} has {n} missing cell(s) (empty, NA, NaN, null or ?); training needs "
                f"complete rows (drop them, or fill them with 'torchdiffusion impute' on a trained run)"
            )


def raw_to_tensor(table: RawTable, name: str, target: str | None) -> TensorData:
    """Categories coded in sorted order, numeric columns kept raw (normalised later, on the training split)."""
    numeric = [c for c in table.columns if c in table.numeric]
    categorical = [c for c in table.columns if c in table.categorical]
    categories = tuple(tuple(sorted({v for v in table.categorical[c] if v is not None})) for c in categorical)
    codes = [
        np.array([cats.index(v) if v is not None else np.nan for v in table.categorical[c]], dtype=np.float64)
        for c, cats in zip(categorical, categories)
    ]
    x = np.stack([table.numeric[c] for c in numeric] + codes, axis=1)
    if target is not None and target not in categorical:
        kind = "numeric" if target in table.numeric else "missing"
        raise DataError(f"data.target={target!r} must be a categorical column of the table (it is {kind})")
    integer = tuple(bool(np.all(np.isnan(v) | (v == np.round(v)))) for v in (table.numeric[c] for c in numeric))
    schema = TableSchema(
        tuple(numeric),
        tuple(categorical),
        categories,
        (),
        integer,
        tuple(table.columns),
        target,
        delimiter=table.delimiter,
        decimal=table.decimal,
    )
    return TensorData(torch.from_numpy(x), kind="table", name=name, schema=schema)


def load_csv_table(cfg: DataConfig, seed: int) -> TensorData:
    if not cfg.path:
        raise DataError("the csv source needs data.path=FILE.csv")
    table = read_csv(cfg.path, tuple(cfg.categorical))
    unknown = set(cfg.categorical) - set(table.columns)
    if unknown:
        raise DataError(f"data.categorical names {sorted(unknown)[0]!r}, which is not a column of {cfg.path}")
    check_complete(table, cfg.path)
    return raw_to_tensor(table, f"csv/{Path(cfg.path).name}", cfg.target)


def sklearn_loader(name: str):
    def load(cfg: DataConfig, seed: int) -> TensorData:
        table = sklearn_table(name)
        target = cfg.target if cfg.target is not None else ("target" if "target" in table.categorical else None)
        return raw_to_tensor(table, f"sklearn/{name}", target)

    return load


def normalise_table(data: TensorData, fit_rows: Tensor) -> TensorData:
    """Fit the quantile knots on the rows ``fit_rows`` (the training split) and encode every numeric column."""
    schema: TableSchema = data.schema
    x = data.x.numpy().astype(np.float64, copy=True)
    fit = x[fit_rows.numpy()]
    knots = tuple(tuple(fit_quantiles(fit[:, j]).tolist()) for j in range(schema.num_numeric))
    for j, q in enumerate(knots):
        x[:, j] = quantile_forward(x[:, j], np.asarray(q), len(fit))
    schema = replace(schema, quantiles=knots, fit_rows=len(fit))
    return replace(data, x=torch.from_numpy(x).to(torch.float32), schema=schema)


# Encoded <-> raw rows


def encode_rows(table: RawTable, schema: TableSchema, where: str) -> tuple[Tensor, Tensor]:
    """A raw table with the schema's columns -> (x (N, D) encoded, known (N, D) bool); missing cells are unknown.

    Raises DataError for a missing or extra column, a number in a categorical column, a category the model never
    saw, a number outside the column's training range (its quantile map's knots), or a fraction in a column of
    whole numbers (written back rounded)."""
    missing = [c for c in schema.columns if c not in table.columns]
    extra = [c for c in table.columns if c not in schema.columns]
    if missing or extra:
        what = f"lacks column {missing[0]!r}" if missing else f"has column {extra[0]!r}, unknown to the model"
        raise DataError(f"{where} {what}; the model's columns are {', '.join(schema.columns)}")
    n = len(table)
    x = np.zeros((n, schema.num_numeric + len(schema.categorical)))
    known = np.zeros_like(x, dtype=bool)
    for j, (c, q) in enumerate(zip(schema.numeric, schema.quantiles)):
        if c not in table.numeric:
            bad = next(v for v in table.categorical[c] if v is not None and as_number(v, table.decimal) is None)
            raise DataError(f"{where}: column {c!r} is numeric but holds {bad!r}")
        v = table.numeric[c]
        known[:, j] = ~np.isnan(v)
        outside = known[:, j] & ((v < q[0]) | (v > q[-1]))  # the quantile map would clamp it: rows of another value
        if outside.any():
            bad = v[np.flatnonzero(outside)[0]]
            raise DataError(
                f"{where}: column {c!r} holds {bad:g}, outside the values the model was trained on ({q[0]:g} to "
                f"{q[-1]:g}); conditioned on the nearest end instead, the rows would answer another value"
            )
        fraction = known[:, j] & (v != np.round(v)) if schema.integer[j] else np.zeros(n, dtype=bool)
        if fraction.any():  # the column is written back rounded: the rows would answer another value
            raise DataError(f"{where}: column {c!r} holds {v[np.flatnonzero(fraction)[0]]:g}; it holds whole numbers")
        x[known[:, j], j] = quantile_forward(v[known[:, j]], np.asarray(q), schema.fit_rows)
    for k, (c, cats) in enumerate(zip(schema.categorical, schema.categories)):
        j = schema.num_numeric + k
        col = table.categorical.get(c)
        if col is None:  # read as numbers: compare their text with the categories
            col = [None if np.isnan(v) else _number_text(v, cats) for v in table.numeric[c]]
        for i, v in enumerate(col):
            if v is None:
                continue
            if v not in cats:
                raise DataError(
                    f"{where}: column {c!r} has the category {v!r}, unseen in training (known: {', '.join(cats)})"
                )
            x[i, j], known[i, j] = cats.index(v), True
    return torch.from_numpy(x).float(), torch.from_numpy(known)


def _number_text(v: float, cats: tuple[str, ...]) -> str:
    """The category text of a number read from a categorical column ('1' and '1.0' both match a category '1')."""
    for c in cats:
        if as_number(c) == v:
            return c
    return repr(v)


def decoded_cells(x: Tensor, schema: TableSchema) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) encoded rows -> what their cells hold: the numeric values v = F^-1(Phi(z)) (N, Dn), rounded for a
    column of whole numbers, and the category codes (N, Dc)."""
    a = x.detach().cpu().double().numpy()
    values = np.empty((len(a), schema.num_numeric))
    for j, (q, integer) in enumerate(zip(schema.quantiles, schema.integer)):
        v = quantile_inverse(a[:, j], np.asarray(q), schema.fit_rows)
        values[:, j] = np.round(v) if integer else v
    codes = np.empty((len(a), len(schema.categories)), dtype=int)
    for k, cats in enumerate(schema.categories):
        codes[:, k] = np.clip(np.round(a[:, schema.num_numeric + k]), 0, len(cats) - 1)
    return values, codes


def decode_rows(x: Tensor, schema: TableSchema) -> list[list[str | float]]:
    """(N, D) encoded rows -> N rows of cells in the file's column order (numbers, or category labels)."""
    values, codes = decoded_cells(x, schema)
    cols: dict[str, list] = {c: values[:, j].tolist() for j, c in enumerate(schema.numeric)}
    for k, (c, cats) in enumerate(zip(schema.categorical, schema.categories)):
        cols[c] = [cats[i] for i in codes[:, k]]
    return [[cols[c][i] for c in schema.columns] for i in range(len(values))]


def as_decoded(x: Tensor, schema: TableSchema) -> Tensor:
    """(N, D) encoded rows -> the rows they decode to (:func:`decoded_cells`), encoded again: numeric columns
    z -> Phi^-1(F(v)) of the value their cell holds, categories as their codes. Rows that decode to the same cells
    become equal: a column that was constant in training is constant again whatever the model drew for it, and
    values beyond the training range sit at its ends - what a sampled CSV holds, so the metrics of
    evaluation/tables.py measure that."""
    values, codes = decoded_cells(x, schema)
    a = np.empty((len(values), schema.num_numeric + len(schema.categories)))
    for j, q in enumerate(schema.quantiles):
        a[:, j] = quantile_forward(values[:, j], np.asarray(q), schema.fit_rows)
    a[:, schema.num_numeric :] = codes
    return torch.from_numpy(a).to(x.dtype)


def write_csv(
    path: Path,
    rows: list[list],
    schema: TableSchema,
    delimiter: str = ",",
    decimal: str = ".",
    columns: Sequence[str] | None = None,
) -> Path:
    """Rows of cells in the schema's column order -> a CSV file (written atomically); ``delimiter``, ``decimal``
    and ``columns`` (the header and its order; default the schema's): those of the file it answers
    (``RawTable.delimiter``, ``RawTable.decimal``, ``RawTable.columns``)."""
    from ..io import atomic_write

    order = [schema.columns.index(c) for c in (columns or schema.columns)]
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter)
    w.writerow([schema.columns[i] for i in order])
    for r in rows:
        w.writerow([_cell(r[i], decimal) if isinstance(r[i], float) else r[i] for i in order])
    return atomic_write(path, buf.getvalue())


def _cell(v: float, decimal: str) -> str:
    """A number as a CSV cell: a whole number in all its digits (99678123, not 9.9678e+07), else six significant
    digits, or as many as its whole part has (123456.7, not 1.23457e+05)."""
    if v.is_integer() and abs(v) < 2**53:
        return str(int(v))
    digits = len(str(int(abs(v)))) if math.isfinite(v) else 1
    return f"{v:.{max(6, digits)}g}".replace(".", decimal)


def paste_known(rows: list[list], table: RawTable, known: Tensor, schema: TableSchema) -> list[list]:
    """Decoded rows with every known cell replaced by its value as read - a number outside the training range
    would otherwise come back clamped by the quantile map -, as written in the file where it came from one
    (``RawTable.text``: its digits and form, "20.0" and "13.2345678" as they were)."""
    order = [*schema.numeric, *schema.categorical]
    pos = {c: i for i, c in enumerate(schema.columns)}
    for j, c in enumerate(order):
        src = table.numeric.get(c)
        vals = table.text.get(c) or (src.tolist() if src is not None else table.categorical[c])
        for i in range(len(rows)):
            if known[i, j]:
                v = vals[i]
                rows[i][pos[c]] = int(v) if isinstance(v, float) and v.is_integer() else v
    return rows
