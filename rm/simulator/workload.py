"""Workloads: tasks arriving over time, held in batches so a million tasks cost a few thousand objects.

A :class:`Batch` is ``count`` tasks submitted at the same instant with the same duration and
labels. Generators draw per-task times with numpy, then group them by minute of arrival and by
duration rounded to two significant digits; a CSV trace is one batch per row.

The built-in generators (all seeded, so a run is reproducible):

- ``burst``: a daily ingestion backlog on a 10 TB/day product platform: a day of products lands
  within half an hour (80 % in the first ten minutes), each an ortho-rectification task of about
  four minutes (lognormal). The case bursting exists for.
- ``diurnal``: a steady day, arrivals following a sine with the peak at 14:00 UTC, tasks of
  about two minutes.
- ``spiky``: short tasks (about 30 s) all day, with a spike of long tasks (about 30 min) every
  three hours: the mix that punishes both slow scale-up and eager scale-down.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rm.config import LABEL_PATTERN

LabelSet = frozenset[str]
TRACE_FIELDS = ("submit_s", "tasks", "duration_s", "labels")


@dataclass(frozen=True)
class Batch:
    submit: float  # seconds after the start of the run
    count: int
    duration: float  # seconds each task runs
    labels: LabelSet = frozenset()


@dataclass(frozen=True)
class Workload:
    name: str
    batches: tuple[Batch, ...]  # sorted by submit time

    @property
    def tasks(self) -> int:
        return sum(b.count for b in self.batches)

    @property
    def task_seconds(self) -> float:
        return sum(b.count * b.duration for b in self.batches)


class WorkloadError(ValueError):
    """A trace that cannot be used; the message names the file, the line and the field."""


def two_digits(values: np.ndarray) -> np.ndarray:
    """Round to two significant digits (at least 1 s), so similar durations share a batch."""
    values = np.maximum(values, 1.0)
    scale = 10.0 ** (np.floor(np.log10(values)) - 1)
    return np.round(values / scale) * scale


def batches_from_arrays(submits: np.ndarray, durations: np.ndarray, labels: LabelSet = frozenset()) -> list[Batch]:
    """Group tasks by minute of arrival and rounded duration."""
    minutes = np.floor(submits / 60.0) * 60.0
    rounded = two_digits(durations)
    pairs, counts = np.unique(np.stack([minutes, rounded], axis=1), axis=0, return_counts=True)
    return [Batch(float(m), int(c), float(d), labels) for (m, d), c in zip(pairs, counts)]


def _lognormal(rng: np.random.Generator, median: float, sigma: float, n: int) -> np.ndarray:
    return median * rng.lognormal(0.0, sigma, n)


def burst(tasks: int, rng: np.random.Generator) -> Workload:
    first = int(tasks * 0.8)
    submits = np.concatenate([rng.uniform(0, 600, first), rng.uniform(600, 1800, tasks - first)])
    return _workload("burst", submits, _lognormal(rng, 240.0, 0.5, tasks))


def diurnal(tasks: int, rng: np.random.Generator) -> Workload:
    day = 86400.0
    candidates = rng.uniform(0, day, tasks * 3)
    rate = 1 + 0.8 * np.sin(2 * np.pi * (candidates - 8 * 3600) / day)  # peak at 14:00
    kept = candidates[rng.uniform(0, 1.8, candidates.size) < rate][:tasks]
    return _workload("diurnal", kept, _lognormal(rng, 120.0, 0.6, kept.size))


def spiky(tasks: int, rng: np.random.Generator) -> Workload:
    span, spikes = 12 * 3600.0, 4
    long_tasks = tasks // 10
    short = rng.uniform(0, span, tasks - long_tasks)
    starts = np.repeat(np.arange(spikes) * 3 * 3600.0 + 1800, -(-long_tasks // spikes))[:long_tasks]
    spike = starts + rng.uniform(0, 300, long_tasks)
    submits = np.concatenate([short, spike])
    durations = np.concatenate([_lognormal(rng, 30.0, 0.5, short.size), _lognormal(rng, 1800.0, 0.3, long_tasks)])
    return _workload("spiky", submits, durations)


def _workload(name: str, submits: np.ndarray, durations: np.ndarray) -> Workload:
    batches = sorted(batches_from_arrays(submits, durations), key=lambda b: (b.submit, b.duration))
    return Workload(name, tuple(batches))


GENERATORS: dict[str, Callable[[int, np.random.Generator], Workload]] = {
    "burst": burst, "diurnal": diurnal, "spiky": spiky,
}
DEFAULT_TASKS = {"burst": 10_000, "diurnal": 60_000, "spiky": 20_000}


def load_trace(path: str | Path) -> Workload:
    """A CSV trace with header ``submit_s,tasks,duration_s,labels`` (labels separated by ``;``)."""
    path = Path(path)
    try:
        handle = path.open(newline="")
    except OSError as error:
        raise WorkloadError(f"{path}: cannot read: {error.strerror}") from None
    with handle:
        reader = csv.DictReader(handle)
        missing = [f for f in TRACE_FIELDS[:3] if f not in (reader.fieldnames or ())]
        if missing:
            raise WorkloadError(f"{path} line 1: header lacks field(s) {', '.join(missing)}; "
                                f"expected {','.join(TRACE_FIELDS)}")
        batches = [_row(path, reader.line_num, row) for row in reader]
    if not batches:
        raise WorkloadError(f"{path}: no tasks")
    return Workload(path.stem, tuple(sorted(batches, key=lambda b: b.submit)))


def _row(path: Path, line: int, row: dict[str, str]) -> Batch:
    def number(field: str, cast: type, low: float, strict: bool) -> float:
        text = (row.get(field) or "").strip()
        try:
            value = cast(text)
        except ValueError:
            raise WorkloadError(f"{path} line {line}: field {field}: not a number: {text!r}") from None
        if value < low or (strict and value == low):
            bound = "greater than" if strict else "at least"
            raise WorkloadError(f"{path} line {line}: field {field}: must be {bound} {low}, got {text}")
        return value

    labels = frozenset(x.strip() for x in (row.get("labels") or "").split(";") if x.strip())
    for label in labels:
        if not LABEL_PATTERN.match(label):
            raise WorkloadError(f"{path} line {line}: field labels: {label!r} must match {LABEL_PATTERN.pattern}")
    return Batch(number("submit_s", float, 0, False), int(number("tasks", int, 0, True)),
                 number("duration_s", float, 0, True), labels)


def make_workload(spec: str, tasks: int | None, seed: int) -> Workload:
    """A built-in generator by name, or a CSV trace by path."""
    if spec in GENERATORS:
        return GENERATORS[spec](tasks or DEFAULT_TASKS[spec], np.random.default_rng(seed))
    return load_trace(spec)
