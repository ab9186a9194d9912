"""The report's tables: one tidy row per (model, dataset, difficulty, k) with its Wilson
interval, and one overview row per (model, dataset) with counts and generation statistics."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from weighted_mtp.evaluation.comparison import per_problem_values, wilson_interval
from weighted_mtp.evaluation.scoring import pass_at_k_table
from weighted_mtp.seeds import split_seed

#: The canonical solutions' name among the results: the harness check, not a model.
REFERENCE_MODEL = "canonical"
OVERVIEW_COLUMNS = (
    "model",
    "dataset",
    "n_problems",
    "n_samples",
    "n_correct",
    "mean_generated_tokens",
    "acceptance_rate",
    "tokens_per_forward",
)


def tidy_table(results: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, dataset, difficulty, k): ``model, dataset, difficulty, k,
    pass_at_k, ci_low, ci_high, n_problems, n_samples, method, seed``; ``difficulty`` is None
    for a whole dataset. ``ci_low``/``ci_high``: the Wilson interval over the group's problems
    (:func:`weighted_mtp.evaluation.comparison.wilson_interval`). ``model`` is the catalog
    name (``seed_2.baseline_model``), ``method`` and ``seed`` its parts
    (:func:`weighted_mtp.seeds.split_seed`: ``baseline_model``, 2)."""
    rows: list[dict[str, Any]] = []
    for model, result in results.items():
        summary = result["summary"]
        for row in pass_at_k_table(summary, model=model):
            dataset, difficulty, k = row["dataset"], row["difficulty"], int(row["k"])
            group = (
                summary["per_dataset"][dataset]
                if difficulty is None
                else summary["per_difficulty"][dataset][difficulty]
            )
            values = per_problem_values(summary, dataset, k, difficulty)
            low, high = wilson_interval(list(values.values()))
            method, seed = split_seed(model)
            rows.append(
                {
                    **row,
                    "ci_low": low,
                    "ci_high": high,
                    "n_samples": group["n_samples"],
                    "method": method,
                    "seed": seed,
                }
            )
    return rows


def overview_table(results: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, dataset) with counts, pass@k, generated length and, for
    speculative decoding, the acceptance rate and tokens per forward (None when absent)."""
    rows = []
    for model, result in results.items():
        summary = result["summary"]
        per_dataset_generation = result.get("generation", {}).get("per_dataset", {})
        for dataset, group in summary["per_dataset"].items():
            generation = per_dataset_generation.get(dataset, {})
            row: dict[str, Any] = {
                "model": model,
                "dataset": dataset,
                "n_problems": group["n_problems"],
                "n_samples": group["n_samples"],
                "n_correct": group["n_correct"],
                "mean_generated_tokens": generation.get("mean_generated_tokens"),
                "acceptance_rate": generation.get("acceptance_rate"),
                "tokens_per_forward": generation.get("tokens_per_forward"),
            }
            row.update(
                {f"pass@{k}": group[f"pass@{k}"] for k in summary["ks"] if f"pass@{k}" in group}
            )
            rows.append(row)
    return rows


def is_missing(value: Any) -> bool:
    """True for None and NaN (a missing difficulty or interval)."""
    # CSV and JSON round trips turn None into NaN or leave it None.
    return value is None or (isinstance(value, float) and math.isnan(value))
