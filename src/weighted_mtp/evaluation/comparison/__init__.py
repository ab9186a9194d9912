"""Statistics of the method comparison: per-model intervals, pre-registered paired contrasts
and the verdict.

The unit of sampling is the problem: a model's pass@k on a dataset is the mean over problems
of the per-problem (unbiased) pass@k. With one seed per method, nothing here measures training
variance: another fine-tuning seed could move every number by more than these intervals.

``per_problem`` reads the per-problem values from the scoring summaries and pools each
model's seeds; ``statistics`` holds the interval of a model and the tests, intervals and
minimum detectable difference of a paired contrast (McNemar, sign-flip permutation, Holm,
Newcombe, paired t, the MDE); ``contrasts`` assembles the pre-registered contrasts into the
rows of ``contrasts.csv``; ``verdict`` writes the sentence on the primary metric. No Kedro, no
MLflow: plain numbers in, plain numbers and a sentence out.
"""

from weighted_mtp.evaluation.comparison.contrasts import (
    CONTRAST_COLUMNS,
    EXTRA_COLUMNS,
    MCNEMAR,
    NOT_DISTINGUISHABLE,
    NOT_SIGNIFICANT,
    SIGN_FLIP,
    ContrastResult,
    compare_contrasts,
    contrast_name,
    status,
)
from weighted_mtp.evaluation.comparison.per_problem import (
    N_SEEDS,
    SEED_SPREAD_COLUMNS,
    SeedSpread,
    per_metric_values,
    per_problem_values,
    pool_seeds,
    seed_spread,
)
from weighted_mtp.evaluation.comparison.statistics import (
    ALPHA,
    CONFIDENCE,
    N_PERMUTATIONS,
    POWER,
    SEED,
    Estimate,
    detectable_effect,
    estimate,
    holm,
    is_binary,
    mcnemar_exact,
    minimum_detectable_difference,
    newcombe_paired_interval,
    paired_t_interval,
    sign_flip_test,
    wilson_interval,
)
from weighted_mtp.evaluation.comparison.verdict import (
    INTERVAL_METHOD,
    PRIMARY_DATASET,
    PRIMARY_K,
    Verdict,
    compare,
)
from weighted_mtp.seeds import group_seeds, seed_namespace, seeded_name, split_seed

__all__ = [
    "ALPHA",
    "CONFIDENCE",
    "CONTRAST_COLUMNS",
    "EXTRA_COLUMNS",
    "INTERVAL_METHOD",
    "MCNEMAR",
    "NOT_DISTINGUISHABLE",
    "NOT_SIGNIFICANT",
    "N_PERMUTATIONS",
    "N_SEEDS",
    "POWER",
    "PRIMARY_DATASET",
    "PRIMARY_K",
    "SEED",
    "SEED_SPREAD_COLUMNS",
    "SIGN_FLIP",
    "ContrastResult",
    "Estimate",
    "SeedSpread",
    "Verdict",
    "compare",
    "compare_contrasts",
    "contrast_name",
    "detectable_effect",
    "estimate",
    "group_seeds",
    "holm",
    "is_binary",
    "mcnemar_exact",
    "minimum_detectable_difference",
    "newcombe_paired_interval",
    "paired_t_interval",
    "per_metric_values",
    "per_problem_values",
    "pool_seeds",
    "seed_namespace",
    "seed_spread",
    "seeded_name",
    "sign_flip_test",
    "split_seed",
    "status",
    "wilson_interval",
]
