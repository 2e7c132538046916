"""The sizes a train/test split must have, checked from row counts alone: by preprocess on the table it read,
and at config time (``normlab.config_check``) for a synthetic dataset, whose size is a config setting.

A leaf module (math and normlab.errors only), so that the Snakefile's config check does not import pandas.
"""

from __future__ import annotations

import math

from normlab.errors import DatasetError

MIN_TEST_ROWS = 10  # split.min_test_rows' default
SYNTHETIC_ROWS = 1000  # a synthetic dataset's rows unless its entry sets rows (normlab.datasets)


def plural(n: int, word: str) -> str:
    """``"1 row"``, ``"2 rows"``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def n_test_rows(n_rows: int, test_fraction: float) -> int:
    """The test split's rows: ceil(test_fraction x n_rows) (``normlab.preprocess.split_indices``)."""
    return math.ceil(test_fraction * n_rows)


def check_split(n_rows: int, n_train: int, n_test: int, test_fraction: float, min_test_rows: int,
                batch_size: int | None, where: str, task: str = "classification") -> None:
    """Refuse a test split of fewer than ``min_test_rows`` rows (a test accuracy on a handful of rows is
    noise), naming what to change: rows enough at this test_fraction, or a test_fraction (with a
    batch_size, when needed) that this table allows; then a training split smaller than ``batch_size``.
    Each remedy, followed, passes both checks."""
    if n_test < min_test_rows:
        b = batch_size or 1
        fits = lambda f, n: math.ceil(f * n) >= min_test_rows and n - math.ceil(f * n) >= b  # noqa: E731
        most = n_rows + math.ceil(min_test_rows / test_fraction) + math.ceil((b + 1) / (1 - test_fraction)) + 2
        need = next(n for n in range(n_rows + 1, most) if fits(test_fraction, n))
        batch = f" and sweep.batch_size {batch_size}" if batch_size else ""
        remedies = [f"use more rows (at least {need} at test_fraction {test_fraction}{batch})"]
        fraction = next((k / 100 for k in range(1, 100) if fits(k / 100, n_rows)), None)
        if fraction is not None:
            t = math.ceil(fraction * n_rows)
            remedies.append(f"set split.test_fraction: {fraction} ({t} test rows, {n_rows - t} training rows)")
        else:
            fraction = next((k / 100 for k in range(1, 100) if math.ceil(k / 100 * n_rows) >= min_test_rows
                             and math.ceil(k / 100 * n_rows) < n_rows), None)
            if fraction is not None:
                t = math.ceil(fraction * n_rows)
                remedies.append(f"set split.test_fraction: {fraction} and sweep.batch_size: {n_rows - t} or less "
                                f"({t} test rows, {n_rows - t} training rows)")
        raise DatasetError(
            f"{where}: the test split has {plural(n_test, 'row')} ({n_rows} rows, test_fraction {test_fraction}), "
            f"fewer than split.min_test_rows {min_test_rows}: a test score measured on so few rows means little "
            + (f"(one row moves the test accuracy by {100 / n_test:.0f} percentage points). " if task != "regression"
               else f"(one row carries {100 / n_test:.0f}% of the test loss). ")
            + "To fix it, "
            + ", or ".join(remedies)
        )
    if batch_size is not None and n_train < batch_size:
        raise DatasetError(
            f"{where}: the training split has {n_train} rows ({n_rows} rows, test_fraction {test_fraction}), "
            f"fewer than sweep.batch_size {batch_size}; lower sweep.batch_size to {n_train} or less, or use "
            "more rows"
        )
