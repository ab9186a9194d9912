"""What the model is shown for each evaluation problem, where its completion ends, and the
completions of a whole problem set (:func:`complete_problems`).

Each dataset has a :class:`PromptFormat` (set from parameters): how the problem's ``prompt``
becomes the model's input text, and which stop sequences end a completion. The styles:

- ``as_is``: the problem's ``prompt`` unchanged. HumanEval: the signature and docstring, which
  the completion continues (the contract's ``execution_prefix`` is that same prompt).
- ``instruction``: the training prompt ``format_prompt(instruction=prompt)``, the Alpaca format
  the models were fine-tuned on; the completion is a whole program (CodeContests, synthetic).
- ``instruction_with_tests``: as ``instruction``, with the problem's assert lines appended
  under "Your code should pass these tests:" unless the prompt already shows them. This is
  MBPP's customary prompt (Austin et al. 2021) and the MBPP training records' instruction.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import nn

from weighted_mtp.data.prompt import format_prompt
from weighted_mtp.evaluation.generation import generate_samples
from weighted_mtp.evaluation.speculative import SpeculativeStats, speculative_generate_many

logger = logging.getLogger(__name__)

PROMPT_STYLES = ("as_is", "instruction", "instruction_with_tests")
TESTS_HEADER = "Your code should pass these tests:"

# Completions that continue a function body end where the next top-level statement starts.
FUNCTION_STOP_SEQUENCES = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")
# Whole-function completions (MBPP) may define helpers, so "\ndef " must not stop them; test
# code, prints and a new Alpaca section still end the function.
PROGRAM_FUNCTION_STOP_SEQUENCES = (
    "\nclass ",
    "\nassert ",
    "\nif __name__",
    "\nprint(",
    "\n### ",
    "\n```",
)
# A stdin/stdout program ends at EOS (always on) or when the model starts a new Alpaca section.
STDIO_STOP_SEQUENCES = ("\n### ", "\n```\n")


class PromptFormatError(ValueError):
    """A prompt format in the parameters is malformed; the message names the key."""


@dataclass(frozen=True)
class PromptFormat:
    """How one dataset's problems are presented to the model.

    ``style``: one of :data:`PROMPT_STYLES`. ``stop``: stop sequences searched in the decoded
    completion (it is cut at the first one found). EOS always ends a completion as well.
    """

    style: str = "as_is"
    stop: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.style not in PROMPT_STYLES:
            raise PromptFormatError(f"style must be one of {PROMPT_STYLES}, got {self.style!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise PromptFormatError(f"stop sequences must be non-empty strings, got {self.stop!r}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any], *, where: str = "prompt") -> PromptFormat:
        """Build from a parameters mapping ``{"style": ..., "stop": [...]}``."""
        unknown = set(params) - {"style", "stop"}
        if unknown:
            raise PromptFormatError(f"{where}: unknown keys {sorted(unknown)}")
        try:
            return cls(style=params.get("style", "as_is"), stop=tuple(params.get("stop") or ()))
        except PromptFormatError as exc:
            raise PromptFormatError(f"{where}: {exc}") from None


DEFAULT_FORMATS: dict[str, PromptFormat] = {
    "humaneval": PromptFormat("as_is", FUNCTION_STOP_SEQUENCES),
    "mbpp": PromptFormat("instruction_with_tests", PROGRAM_FUNCTION_STOP_SEQUENCES),
    "codecontests": PromptFormat("instruction", STDIO_STOP_SEQUENCES),
    "synthetic": PromptFormat("instruction", STDIO_STOP_SEQUENCES),
}


def assert_lines(tests: str | Sequence[Any]) -> list[str]:
    """The ``assert`` statements of a function task's test source (MBPP's ``test_list``)."""
    if not isinstance(tests, str):
        return []
    return [line.strip() for line in tests.splitlines() if line.strip().startswith("assert ")]


def build_prompt(problem: Mapping[str, Any], prompt_format: PromptFormat) -> str:
    """The text given to the model for ``problem`` (an evaluation-problem record)."""
    text = problem["prompt"]
    if prompt_format.style == "as_is":
        return text
    if prompt_format.style == "instruction_with_tests":
        missing = [line for line in assert_lines(problem.get("tests", "")) if line not in text]
        if missing:
            text = f"{text.rstrip()}\n{TESTS_HEADER}\n" + "\n".join(missing)
    return format_prompt(instruction=text)


class TextTokenizer(Protocol):
    """What :func:`complete_problems` needs of ``weighted_mtp.data.tokenizer.Tokenizer``."""

    bos_id: int
    eos_id: int
    pad_id: int

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


@dataclass(frozen=True)
class SamplingSettings:
    """How completions are drawn (``temperature == 0``: greedy, one sample per problem).

    ``speculative``: greedy self-speculative decoding, one prompt at a time (same output as
    batched greedy; reports acceptance rate and tokens per forward). It beats greedy decoding
    only at ``batch_size`` 1: from 2 rows per forward batched greedy is faster
    (docs/benchmarks/speculative_decoding.md), hence off by default. ``add_bos``: prepend BOS
    as the training collator does.
    """

    n_samples: int = 1
    batch_size: int = 8
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    add_bos: bool = True
    speculative: bool = False

    def __post_init__(self) -> None:
        if self.n_samples < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError(
                "n_samples, batch_size and max_new_tokens must be >= 1, got "
                f"{self.n_samples}, {self.batch_size}, {self.max_new_tokens}"
            )
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.speculative and self.temperature > 0:
            raise ValueError("speculative decoding is greedy: set temperature to 0")

    @property
    def samples_per_problem(self) -> int:
        # Greedy samples of one prompt are identical: one carries all the information.
        return 1 if self.temperature <= 0 else self.n_samples


def group_by_dataset(
    problems: Sequence[Mapping[str, Any]], formats: Mapping[str, PromptFormat]
) -> dict[str, list[Mapping[str, Any]]]:
    """``problems`` by their ``dataset`` (first-seen order), each dataset checked to have a
    prompt format.

    Raises:
        PromptFormatError: a dataset has no entry in ``formats``.
    """
    by_dataset: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for problem in problems:
        by_dataset[problem.get("dataset") or "unknown"].append(problem)
    missing = sorted(set(by_dataset) - set(formats))
    if missing:
        raise PromptFormatError(f"no prompt format for dataset(s) {missing}")
    return dict(by_dataset)


def encode_prompts(
    tokenizer: TextTokenizer,
    group: Sequence[Mapping[str, Any]],
    prompt_format: PromptFormat,
    settings: SamplingSettings,
) -> list[list[int]]:
    """The token ids the model is given for each problem of one dataset."""
    return [tokenizer.encode(build_prompt(p, prompt_format), bos=settings.add_bos) for p in group]


def dataset_stats(
    group: Sequence[Mapping[str, Any]],
    prompts: Sequence[Sequence[int]],
    generations: Sequence[Sequence[Any]],
    seconds: float,
    speculative: SpeculativeStats | None = None,
) -> dict[str, float]:
    """The generation stats of one dataset (see :func:`complete_problems`)."""
    n_tokens = [g.n_tokens for per_problem in generations for g in per_problem]
    stats = {
        "n_problems": len(group),
        "n_samples": len(n_tokens),
        "mean_prompt_tokens": sum(map(len, prompts)) / len(prompts),
        "mean_generated_tokens": sum(n_tokens) / len(n_tokens),
        "seconds": seconds,
        "generated_tokens_per_s": sum(n_tokens) / seconds if seconds > 0 else 0.0,
    }
    if speculative is not None:
        stats["acceptance_rate"] = speculative.acceptance_rate
        stats["tokens_per_forward"] = speculative.tokens_per_forward
    return stats


def sample_records(
    problems: Sequence[Mapping[str, Any]],
    by_dataset: Mapping[str, Sequence[Mapping[str, Any]]],
    generations: Mapping[str, Sequence[Sequence[Any]]],
) -> list[dict[str, Any]]:
    """One sample record per generation (see :func:`complete_problems`), in problem order;
    ``generations[dataset][i]`` are the completions of ``by_dataset[dataset][i]``."""
    samples_by_task: dict[str, list[dict[str, Any]]] = {}
    for dataset, group in by_dataset.items():
        for problem, per_problem in zip(group, generations[dataset], strict=True):
            samples_by_task[problem["task_id"]] = [
                {
                    "task_id": problem["task_id"],
                    "dataset": dataset,
                    "sample_index": index,
                    "completion": g.text,
                    "n_generated_tokens": g.n_tokens,
                    "finish_reason": g.finish_reason,
                }
                for index, g in enumerate(per_problem)
            ]
    return [s for p in problems for s in samples_by_task[p["task_id"]]]


def complete_problems(
    model: nn.Module,
    tokenizer: TextTokenizer,
    problems: Sequence[Mapping[str, Any]],
    formats: Mapping[str, PromptFormat],
    settings: SamplingSettings,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
    """Generate ``settings.samples_per_problem`` completions for every problem.

    Problems are grouped by their ``dataset`` (each has its prompt format and stop sequences
    in ``formats``); progress is logged per batch. Sample ``s`` of a problem draws from its
    own random stream (``settings.seed``, the dataset, the problem's index in it, ``s``), so
    the data-parallel workers of :mod:`weighted_mtp.evaluation.parallel_generation` give the
    same samples.

    Returns:
        ``(samples, stats)``: samples ``{"task_id", "dataset", "sample_index", "completion",
        "n_generated_tokens", "finish_reason"}`` in problem order, ready for
        ``execution.check_completions``; stats per dataset ``{"n_problems", "n_samples",
        "mean_prompt_tokens", "mean_generated_tokens", "seconds", "generated_tokens_per_s"}``
        plus ``acceptance_rate`` and ``tokens_per_forward`` with speculative decoding.
    """
    by_dataset = group_by_dataset(problems, formats)
    all_generations: dict[str, list[list[Any]]] = {}
    stats: dict[str, dict[str, float]] = {}
    for dataset, group in by_dataset.items():
        prompt_format = formats[dataset]
        prompts = encode_prompts(tokenizer, group, prompt_format, settings)
        started = time.perf_counter()
        if settings.speculative:
            generations, spec = _speculative(
                model, tokenizer, prompts, prompt_format, dataset, settings
            )
        else:
            generations = generate_samples(
                model,
                prompts,
                n_samples=settings.samples_per_problem,
                batch_size=settings.batch_size,
                max_new_tokens=settings.max_new_tokens,
                temperature=settings.temperature,
                top_p=settings.top_p,
                seed=settings.seed,
                stream=dataset,
                eos_id=tokenizer.eos_id,
                pad_id=tokenizer.pad_id,
                decode=tokenizer.decode,
                stop=prompt_format.stop,
                progress=lambda done, total, name=dataset: logger.info(
                    "%s: generated %d/%d samples", name, done, total
                ),
            )
            spec = None
        seconds = time.perf_counter() - started
        stats[dataset] = dataset_stats(group, prompts, generations, seconds, spec)
        all_generations[dataset] = generations
        logger.info(
            "%s: %d problems, %d samples, %.1f generated tokens on average, %.1f s",
            dataset,
            len(group),
            stats[dataset]["n_samples"],
            stats[dataset]["mean_generated_tokens"],
            seconds,
        )
    return sample_records(problems, by_dataset, all_generations), stats


def _speculative(
    model: nn.Module,
    tokenizer: TextTokenizer,
    prompts: list[list[int]],
    prompt_format: PromptFormat,
    dataset: str,
    settings: SamplingSettings,
) -> tuple[list[list[Any]], SpeculativeStats]:
    budget = model.args.max_seq_len - settings.max_new_tokens

    def progress(done: int, total: SpeculativeStats) -> None:
        if done % settings.batch_size == 0 or done == len(prompts):
            logger.info(
                "%s: generated %d/%d (speculative, acceptance %.2f, %.2f tokens/forward)",
                dataset,
                done,
                len(prompts),
                total.acceptance_rate,
                total.tokens_per_forward,
            )

    generations, total = speculative_generate_many(
        model,
        [prompt[-budget:] for prompt in prompts],
        max_new_tokens=settings.max_new_tokens,
        eos_id=tokenizer.eos_id,
        decode=tokenizer.decode,
        stop=prompt_format.stop,
        progress=progress,
    )
    return [[generation] for generation in generations], total
