"""Evaluation: sandboxed execution of generated code, pass@k and scoring (no Kedro here)."""

from weighted_mtp.evaluation.execution import (
    ExecutionResult,
    InvalidSampleError,
    SandboxLimits,
    UnknownTaskError,
    check_completions,
    check_program,
    run_program,
)
from weighted_mtp.evaluation.pass_at_k import pass_at_k
from weighted_mtp.evaluation.problems import ProblemFileError, read_problems, read_samples
from weighted_mtp.evaluation.scoring import pass_at_k_table, summarise

__all__ = [
    "ExecutionResult",
    "InvalidSampleError",
    "ProblemFileError",
    "SandboxLimits",
    "UnknownTaskError",
    "check_completions",
    "check_program",
    "pass_at_k",
    "pass_at_k_table",
    "read_problems",
    "read_samples",
    "run_program",
    "summarise",
]
