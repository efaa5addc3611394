"""Tables and sequences through the same commands: the one place that samples, fills in, saves and measures them.

``sample``, ``impute``, ``evaluate`` and the training loop's end-of-run samples call these functions when a run's
data kind is in ``DISCRETE_KINDS``; images, signals and vectors keep their own paths (generate.py).

* tables: rows decode to a CSV in the file's column order (data/table.py); ``given`` cells (``COL=VALUE``)
  make conditional generation, missing cells of a CSV make imputation - both are the same fill-in;
* sequences: one line of text per sequence; infilling fixes the known symbols (``MASK_CHAR`` marks the others).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .config import SampleConfig

DISCRETE_KINDS = ("table", "sequence")
MASK_CHAR = "_"  # the symbol to fill in, in infilling text (a vocabulary holding "_" takes --mask-char)


def schema_of(info: dict, kind: str) -> Any:
    """The TableSchema or Vocabulary saved in run.json."""
    from .data.sequence import Vocabulary
    from .data.table import TableSchema

    d = info.get("schema")
    if not d:
        raise ValueError("run.json holds no schema for this table/sequence run; it was damaged")
    return TableSchema.from_dict(d) if kind == "table" else Vocabulary.from_dict(d)


def draw(
    model,
    kind: str,
    seeds: Sequence[int],
    sample: SampleConfig,
    *,
    known: Tensor | None = None,
    known_mask: Tensor | None = None,
    progress: bool = True,
    stop=None,
    grid_dir: str | Path | None = None,
    plan: tuple | None = None,
) -> Tensor:
    """Encoded samples (N, D) or (N, L), sample k from seeds[k] alone, in batches of ``sample.batch_size`` with a
    step bar: a table's numeric part by ``sample.sampler`` on ``sample.grid`` (tabular.sample_table; ``grid_dir``:
    the run folder's ``grids/``, where a distilled student's grid lies; ``plan``: its tabular.sampling_plan_of,
    when the caller has it), a sequence by ``sample.steps`` reverse steps of its process
    (sequences.sample_sequences). The draw is noted for the command's manifests (provenance.note_sampling)."""
    from .progress import step_bar
    from .provenance import note_sampling
    from .sequences import sample_sequences
    from .tabular import sample_table, sampling_plan_of

    seeds = list(seeds)
    known_cells = [] if known_mask is None else [{"name": "known cells", "fixed": int(known_mask.sum())}]
    device = str(next(model.parameters()).device)
    if kind == "table":
        plan = plan or sampling_plan_of(model, sample, grid_dir)  # once for every batch
    grid_used = plan[2] if plan else None
    note_sampling(sample, seeds, wrappers=known_cells, device=device, own_process=kind != "table", grid_used=grid_used)
    if kind == "table":
        steps = len(plan[0]) - 1

        def fn(model, seeds, known, known_mask, callback):
            return sample_table(model, seeds, sample, known=known, known_mask=known_mask, callback=callback, plan=plan)

        what = f"sampling table ({sample.sampler}, {steps} steps)"
    else:
        steps = sample.steps

        def fn(model, seeds, known, known_mask, callback):
            return sample_sequences(model, seeds, steps, known=known, known_mask=known_mask, callback=callback)

        what = f"sampling {kind} ({steps} steps)"
    out = []
    bs = max(1, sample.batch_size)
    batches = [slice(i, min(i + bs, len(seeds))) for i in range(0, len(seeds), bs)]
    with step_bar(len(batches) * steps, what, show=progress) as bar:

        def cb(i, x):
            if stop is not None:
                stop.check()
            bar.update(1)

        for sl in batches:
            k = None if known is None else known[sl]
            m = None if known_mask is None else known_mask[sl]
            out.append(fn(model, seeds[sl], k, m, cb))
    return torch.cat(out).float()


def unread_sampler_flag(flag: str, kind: str) -> str:
    """The one-line refusal of a sampler option on a run whose kind samples by its process's own steps."""
    return f"{flag} changes nothing: a {kind} run samples by its process's own reverse steps (sample.steps of them)"


def save(
    x: Tensor,
    kind: str,
    schema,
    out: Path,
    reference: Tensor | None = None,
    title: str = "",
    given: Sequence[str] = (),
) -> list[Path]:
    """Tables: ``out`` (.csv) and a picture of the marginals beside it, the ``--given`` cells (``COL=VALUE``,
    checked by :func:`given_cells`) written as given; sequences: ``out`` (.txt, one per line) and a picture of
    the first lines."""
    from .io import atomic_write
    from .viz import save_samples

    if kind == "table":
        from .data.table import decode_rows, write_csv

        rows = decode_rows(x, schema)
        for g in given:  # as typed (a number decoded back through the quantile map kept six digits)
            col, text = (part.strip() for part in g.split("=", 1))
            cell = text.replace(".", schema.decimal) if col in schema.numeric else text  # in the file's dialect
            for r in rows:
                r[schema.columns.index(col)] = cell
        data = write_csv(out, rows, schema, schema.delimiter, schema.decimal)  # as trained on
    else:
        data = atomic_write(out, "".join(escape_line(schema.decode(r)) + "\n" for r in x.round().long()))
    picture = save_samples(x, kind, out.with_suffix(".png"), reference=reference, title=title, schema=schema)
    return [data, picture]


def given_cells(schema, given: Sequence[str], n: int) -> tuple[Tensor, Tensor]:
    """``COL=VALUE`` conditions -> (known (n, D), known_mask (n, D)) for every row (conditional generation)."""
    from .data.table import RawTable, encode_rows

    values: dict[str, str] = {}
    for g in given:
        if "=" not in g:
            raise ValueError(f"--given {g!r} must look like COLUMN=VALUE")
        col, v = g.split("=", 1)
        if col.strip() not in schema.columns:
            raise ValueError(
                f"--given names {col.strip()!r}, not a column; the columns are {', '.join(schema.columns)}"
            )
        if col.strip() in values:  # the last one silently won
            raise ValueError(f"--given names column {col.strip()!r} twice; give each column one value")
        values[col.strip()] = v.strip()
    table = RawTable(list(schema.columns), {}, {})
    for c in schema.columns:
        table.categorical[c] = [values.get(c)]
    for c in schema.numeric:  # read as numbers (a non-number or a fraction of a whole-number column: encode_rows)
        text = values.get(c)
        if text is not None:
            from .data.delimited import as_number

            try:
                value = float(text)
            except ValueError:  # the run's own dialect: a decimal comma, as sample writes it back
                value = as_number(text, ",") if schema.decimal == "," else None
                if value is None:
                    raise ValueError(f"--given {c}={text!r}: column {c!r} is numeric") from None
            if not math.isfinite(value):  # NaN would read as "not given", infinity as the column's largest value
                raise ValueError(f"--given {c}={text!r}: the value of a numeric column must be a finite number")
            table.numeric[c] = torch.tensor([value], dtype=torch.float64).numpy()
            del table.categorical[c]
        else:
            table.numeric[c] = torch.tensor([float("nan")], dtype=torch.float64).numpy()
            del table.categorical[c]
    known, mask = encode_rows(table, schema, "--given")
    return known.expand(n, -1).clone(), mask.expand(n, -1).clone()


# Every character str.splitlines() ends a line at (and so do many editors and readers): written escaped, so a
# file of samples holds exactly one sequence per line whatever its symbols are.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_ESCAPED = {"\n": "\\n", "\r": "\\r", **{c: f"\\u{ord(c):04x}" for c in LINE_BREAKS[2:]}}
_UNESCAPED = {v: k for k, v in _ESCAPED.items()}


def escape_line(text: str) -> str:
    """A sequence as one line of a .txt of samples: a backslash written ``\\\\``, a line break ``\\n``, a carriage
    return ``\\r``, every other character that ends a line (:data:`LINE_BREAKS`: form feed, U+2028, ...) ``\\uXXXX``
    - so two different sequences never read the same, each is one line to any reader, and :func:`unescape_line`
    gives each back."""
    return "".join("\\\\" if c == "\\" else _ESCAPED.get(c, c) for c in text)


def unescape_line(line: str) -> str:
    """The sequence a line of :func:`escape_line` stands for: ``\\n``, ``\\r`` and ``\\uXXXX`` of a line-breaking
    character that character, ``\\\\`` a backslash; any other backslash is itself."""
    out, i = [], 0
    while i < len(line):
        if line[i : i + 2] == "\\\\":
            out.append("\\")
            i += 2
            continue
        code = next((e for e in (line[i : i + 6], line[i : i + 2]) if e in _UNESCAPED), None)
        if code is not None:
            out.append(_UNESCAPED[code])
            i += len(code)
        else:
            out.append(line[i])
            i += 1
    return "".join(out)


def infill_text(vocab, texts: Sequence[str], seq_len: int, mask_char: str = MASK_CHAR) -> tuple[Tensor, Tensor]:
    """Texts with ``mask_char`` at the symbols to fill -> (known (N, L) long, known_mask (N, L) bool); each text as
    a line of samples writes it (:func:`unescape_line`: ``\\n`` a line break, ``\\\\`` a backslash).

    A text shorter than L is completed at its end; a longer one, or a symbol outside the vocabulary, is refused."""
    known = torch.zeros(len(texts), seq_len, dtype=torch.long)
    mask = torch.zeros(len(texts), seq_len, dtype=torch.bool)
    for i, t in enumerate(unescape_line(t) for t in texts):
        if len(t) > seq_len:
            raise ValueError(f"the text to fill has {len(t)} symbols; the model's sequences have {seq_len}")
        for j, ch in enumerate(t):
            if ch != mask_char:
                known[i, j] = vocab.encode(ch, "the text to fill")[0]
                mask[i, j] = True
    return known, mask


def metrics(run, n: int, seed: int, sample: SampleConfig, progress: bool = True) -> dict:
    """The kind's metrics (evaluation/tables.py, evaluation/sequences.py) and its baseline beside them; also the
    encoded ``samples`` and the held-out rows a table's picture draws them over (``reference``)."""
    from .data import load_data

    cfg, kind = run.config, run.kind
    schema = schema_of(run.info, kind)
    train = load_data(cfg.data, "train", cfg.train.seed)
    if cfg.data.holdout == 0:
        raise ValueError("evaluating a table or sequence run needs held-out rows: train with data.holdout=N")
    held = load_data(cfg.data, "holdout", cfg.train.seed)
    x = draw(run.model, kind, range(seed, seed + n), sample, progress=progress, grid_dir=run.path / "grids")
    if kind == "table":
        from .evaluation.tables import independent_marginals, table_metrics

        base = independent_marginals(train.x, n, schema, seed)
        return {
            "model": table_metrics(train.x, held.x, x, schema, seed),
            "independent_marginals": table_metrics(train.x, held.x, base, schema, seed),
            "training_rows_fed_back": table_metrics(train.x, held.x, train.x, schema, seed),
            "samples": x,
            "reference": held.x,
        }
    from .evaluation.sequences import sequence_metrics

    return {**sequence_metrics(run.model, train.x, held.x, x, len(schema), seed=seed), "samples": x, "reference": None}
