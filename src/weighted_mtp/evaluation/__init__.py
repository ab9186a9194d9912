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

# Generation, speculative decoding, prompts and the report need torch or matplotlib: they are
# imported on first use (PEP 562) so that scoring alone (``python -m ...score``) stays light.
_LAZY = {
    "Generation": "generation",
    "generate": "generation",
    "generate_samples": "generation",
    "select_next_token": "generation",
    "SpeculativeStats": "speculative",
    "speculative_generate": "speculative",
    "PromptFormat": "prompts",
    "SamplingSettings": "prompts",
    "build_prompt": "prompts",
    "complete_problems": "prompts",
    "plot_pass_at_k": "report",
    "render_html": "report",
    "tidy_table": "report",
}
__all__ += list(_LAZY)


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
