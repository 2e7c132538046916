"""The error a job reports as one line: what is wrong with a dataset, where, and how to fix it.

A leaf module (it imports nothing from normlab), so that every module that reads or checks a dataset
(datasets, download, preprocess) raises the same type without importing another of them."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset cannot be read or used; the message says what, where and how to fix it."""
