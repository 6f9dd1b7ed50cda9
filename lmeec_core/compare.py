"""`lmeec compare`: is one evaluation really better than another, or is it noise?

An ablation (MV-MoE against fusion `add`, a new checkpoint against the shipped one) is scored on the
same sequences by `lmeec evaluate`. Per-sequence IoU varies far more between scenes than between
models, so the two totals are compared *paired*: the difference of the totals is recomputed on
bootstrap resamples of the sequences, which gives a confidence interval for it. A model "clearly
beats" another on a metric when the whole interval is on its side.

IoU, CA and LE are means over frames with a non-empty GT (the EgoExo4D totals), so a sequence
weighs by its `n_frames_with_gt` and the resampled totals are exactly what `lmeec evaluate` would
report on the resampled set. BA does not decompose over sequences and is only reported as is.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

POOLED_METRICS = {"iou": +1, "ca": +1, "le": -1}  # sign: +1 when larger is better


def load_evaluation(path: str | Path) -> dict[str, Any]:
    """metrics.json of an `lmeec evaluate` output folder (or the file itself)."""
    path = Path(path)
    file = path / "metrics.json" if path.is_dir() else path
    if not file.is_file():
        raise InputError(f"{path}: no metrics.json; expected an `lmeec evaluate --out` folder")
    data = json.loads(file.read_text())
    if "sequences" not in data or "total" not in data:
        raise InputError(f"{file} has no 'sequences'/'total'; expected the metrics.json `lmeec evaluate` writes")
    return data


def _paired(base: dict[str, Any], other: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    """Rows of both evaluations in the same sequence order; refuses different sequence sets."""
    for key in ("direction", "protocol", "score_size"):
        if base.get(key) != other.get(key):
            raise InputError(f"cannot compare a {key} {base.get(key)!r} evaluation with a {other.get(key)!r} one")
    a = {row["sequence"]: row for row in base["sequences"]}
    b = {row["sequence"]: row for row in other["sequences"]}
    if set(a) != set(b):
        missing = sorted(set(a) ^ set(b))
        raise InputError(f"the evaluations cover different sequences ({len(missing)} unpaired, e.g. {missing[0]}); "
                         "expected both run on the same takes")
    keys = sorted(a)
    return [a[k] for k in keys], [b[k] for k in keys]


def _weighted(rows: list[dict], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-sequence (weight, weight * value); sequences without GT frames weigh nothing."""
    weights = np.array([row["n_frames_with_gt"] for row in rows], dtype=float)
    values = np.array([0.0 if w == 0 else float(row[metric]) for row, w in zip(rows, weights)])
    return weights, weights * values


def _pooled(weights: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """Totals of each resample (rows of index arrays); NaN where a resample has no GT frame."""
    total = weights.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, sums.sum(axis=-1) / np.where(total > 0, total, 1), math.nan)


def compare(base: dict[str, Any], other: dict[str, Any], resamples: int = 10000, level: float = 0.95,
            seed: int = 0) -> dict[str, Any]:
    """Paired comparison of `other` against `base` (both `lmeec evaluate` summaries)."""
    if not 0 < level < 1:
        raise InputError(f"confidence level {level}; expected a value in (0, 1)")
    rows_a, rows_b = _paired(base, other)
    if not rows_a:
        raise InputError("no sequences to compare")
    draws = np.random.default_rng(seed).integers(0, len(rows_a), size=(resamples, len(rows_a)))
    tail = (1 - level) / 2
    result: dict[str, Any] = {"sequences": len(rows_a), "resamples": resamples, "level": level, "metrics": {}}
    for metric, sign in POOLED_METRICS.items():
        wa, sa = _weighted(rows_a, metric)
        wb, sb = _weighted(rows_b, metric)
        delta = float(_pooled(wb, sb) - _pooled(wa, sa))
        boot = _pooled(wb[draws], sb[draws]) - _pooled(wa[draws], sa[draws])
        low, high = np.nanquantile(boot, [tail, 1 - tail])
        gain_low, gain_high = sorted((sign * low, sign * high))
        per_seq = [sign * (float(b[metric]) - float(a[metric])) for a, b in zip(rows_a, rows_b)
                   if a["n_frames_with_gt"] and b["n_frames_with_gt"]]
        result["metrics"][metric] = {
            "base": base["total"][metric], "other": other["total"][metric], "delta": delta,
            "ci": [float(low), float(high)],
            "better": bool(gain_low > 0), "worse": bool(gain_high < 0),
            "wins": sum(d > 0 for d in per_seq), "losses": sum(d < 0 for d in per_seq),
        }
    result["metrics"]["ba"] = {"base": base["total"]["ba"], "other": other["total"]["ba"],
                               "delta": other["total"]["ba"] - base["total"]["ba"]}
    return result
