"""Checks of a table's column names, shared by every reader of a table file (CSV, Parquet, ARFF).

A leaf module within normlab: it imports only normlab.errors."""

from __future__ import annotations

import collections

import numpy as np

from normlab.errors import DatasetError


def check_column_names(names, where: str) -> None:
    """Column names must be unique and non-empty (a blank header cell is usually a saved index); ``where``
    starts the error message (which file of which dataset)."""
    names = ["" if n is None or (isinstance(n, float) and np.isnan(n)) else str(n) for n in names]
    blank = [i + 1 for i, n in enumerate(names) if not n.strip()]
    if blank:
        raise DatasetError(
            f"{where}: column {blank[0]} has an empty name in the header row; give every column a name "
            "(a blank first name is usually a saved row index: write the file without it)"
        )
    counts = collections.Counter(names)
    dups = [f"{n!r} ({c} times)" for n, c in counts.items() if c > 1]
    if dups:
        raise DatasetError(
            f"{where}: duplicate column names {', '.join(dups)}; rename the columns so that every name is unique"
        )
