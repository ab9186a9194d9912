"""Data-parallel generation: the workers' completions equal one process's, greedy and sampled."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from weighted_mtp.data.tokenizer_training import train_tokenizer
from weighted_mtp.evaluation import generation_worker
from weighted_mtp.evaluation.parallel_generation import (
    GenerationJobError,
    GenerationSpec,
    complete_problems_in_workers,
    generation_cost,
    plan_work,
    read_shards,
)
from weighted_mtp.evaluation.prompts import (
    PromptFormat,
    SamplingSettings,
    complete_problems,
    encode_prompts,
    group_by_dataset,
)
from weighted_mtp.evaluation.sampling import assign_batches, pair_seed, plan_batches
from weighted_mtp.model_io.loading import ModelDirectory
from weighted_mtp.model_io.model_dir import save_model_dir
from weighted_mtp.models import MTPTransformer, debug_args
from weighted_mtp.training.config import RuntimeParams
from weighted_mtp.training.launcher import LaunchSpec

FORMATS = {
    "humaneval": PromptFormat("as_is", ("\ndef ",)),
    "codecontests": PromptFormat("instruction", ("\n### ",)),
}
PROBLEMS = [
    {"task_id": f"he/{i}", "dataset": "humaneval", "prompt": f"def f{i}(x):\n" + "    # x\n" * i}
    for i in range(4)
] + [
    {"task_id": f"cc/{i}", "dataset": "codecontests", "prompt": "Read n and print it. " * (i + 1)}
    for i in range(5)
]
GREEDY = SamplingSettings(batch_size=3, max_new_tokens=12, seed=3)
SAMPLED = SamplingSettings(
    n_samples=3, batch_size=4, max_new_tokens=12, temperature=0.9, top_p=0.95, seed=3
)

SPECULATIVE = SamplingSettings(max_new_tokens=12, speculative=True)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([p["prompt"] for p in PROBLEMS] * 30, vocab_size=320)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer) -> str:
    torch.manual_seed(0)
    args = debug_args(dim=32, n_layers=4, vocab_size=tokenizer.vocab_size, max_seq_len=128)
    model = MTPTransformer(args)
    model.init_weights(std=0.3)  # peaked logits: completions differ between prompts
    out = tmp_path_factory.mktemp("models") / "tiny"
    return str(save_model_dir(model, args, tokenizer, out, origin="test"))


def _in_process(model_dir: str, tokenizer, settings: SamplingSettings) -> list[dict]:
    model = ModelDirectory(model_dir).load(device="cpu", dtype="float32").eval()
    samples, _ = complete_problems(model, tokenizer, PROBLEMS, FORMATS, settings)
    return samples


def _spec(tmp_path: Path, model_dir: str, tokenizer, settings, nproc: int) -> GenerationSpec:
    by_dataset = group_by_dataset(PROBLEMS, FORMATS)
    spec = GenerationSpec(
        run_dir=str(tmp_path / "run"),
        runtime=RuntimeParams(nproc_per_node=nproc, omp_threads=1),
        model_dir=model_dir,
        settings=settings,
        eos_id=tokenizer.eos_id,
        pad_id=tokenizer.pad_id,
        datasets=[
            {"name": d, "prompts": encode_prompts(tokenizer, g, FORMATS[d], settings)}
            for d, g in by_dataset.items()
        ],
    )
    spec.write()
    spec.tokenizer_path.write_bytes(tokenizer.model_proto)
    return spec


def test_batches_are_shared_disjointly_and_balanced():
    lengths = [5, 40, 7, 7, 90, 3, 12, 60, 8, 30]
    batches = plan_batches(lengths, n_samples=3, batch_size=4)
    rows = [row for batch in batches for row in batch]
    assert sorted(rows) == [(p, s) for p in range(10) for s in range(3)]
    assert [lengths[p] for p, _ in rows] == sorted(lengths[p] for p, _ in rows)
    costs = [len(b) * (max(lengths[p] for p, _ in b) + 16) for b in batches]
    for world in (1, 2, 3):
        shares = assign_batches(costs, world)
        assert sorted(i for share in shares for i in share) == list(range(len(batches)))
        loads = [sum(costs[i] for i in share) for share in shares]
        assert max(loads) - min(loads) <= max(costs)
    # A row's seed depends on the row and the stream only.
    assert pair_seed(1, 2, 0, "mbpp") == pair_seed(1, 2, 0, "mbpp")
    assert len({pair_seed(1, p, s, d) for p in range(3) for s in range(3) for d in "ab"}) == 18


def test_cost_is_sequences_and_token_upper_bound():
    cost = generation_cost({"humaneval": 164, "mbpp": 500}, SAMPLED)
    assert cost == {
        "humaneval": {"sequences": 492, "max_tokens": 492 * 12},
        "mbpp": {"sequences": 1500, "max_tokens": 1500 * 12},
    }
    assert generation_cost({"humaneval": 10}, GREEDY)["humaneval"]["sequences"] == 10


def test_spec_is_a_launch_spec(tmp_path, model_dir, tokenizer):
    spec = _spec(tmp_path, model_dir, tokenizer, GREEDY, 2)
    assert isinstance(spec, LaunchSpec)
    assert GenerationSpec.read(spec.spec_path) == spec


@pytest.mark.parametrize(
    "settings", [GREEDY, SAMPLED, SPECULATIVE], ids=["greedy", "sampled", "speculative"]
)
def test_ranks_run_in_turn_give_the_one_process_samples(
    tmp_path, model_dir, tokenizer, settings, capsys
):
    """The worker's own code for ranks 1 then 0 of 2 (rank 0 waits for the others' counters),
    without torchrun: the gathered shards are the single process's generations."""
    spec = _spec(tmp_path, model_dir, tokenizer, settings, 2)
    for rank in (1, 0):
        generation_worker.run(spec, rank, 0)
    gathered = read_shards(spec)
    model = ModelDirectory(model_dir).load(device="cpu", dtype="float32").eval()
    expected, _ = complete_problems(model, tokenizer, PROBLEMS, FORMATS, settings)
    got = [
        (d, g.text, g.n_tokens, g.finish_reason)
        for d, per_prompt in gathered.generations.items()
        for per_problem in per_prompt
        for g in per_problem
    ]
    assert got == [
        (s["dataset"], s["completion"], s["n_generated_tokens"], s["finish_reason"])
        for s in expected
    ]
    if settings.speculative:  # the counters of every prompt reach the parent
        assert sum(s.n_generated for s in gathered.speculative.values()) == sum(g[2] for g in got)
        assert all(s.n_forwards > 0 for s in gathered.speculative.values())
    # Both ranks had work, and nothing was decoded twice.
    assert all(spec.shard_path(r).read_text().strip() for r in (0, 1))
    work = plan_work({d.name: d.prompts for d in spec.datasets}, settings)
    lines = sum(len(spec.shard_path(r).read_text().splitlines()) for r in (0, 1))
    assert lines == sum(len(b.rows) for b in work)
    # Rank 0 (run last) reports the whole job: its last event counts every sequence.
    events = [
        json.loads(line.split(" ", 1)[1])
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("WMTP_PROGRESS ")
    ]
    assert events[-1]["step"] == events[-1]["max_steps"] == lines
    assert events[-1]["generated_tokens"] == sum(g[2] for g in got)


def test_missing_rows_are_an_error(tmp_path, model_dir, tokenizer):
    spec = _spec(tmp_path, model_dir, tokenizer, GREEDY, 2)
    spec.shard_path(0).parent.mkdir(parents=True, exist_ok=True)
    spec.shard_path(0).write_text("")
    spec.shard_path(1).write_text("")
    with pytest.raises(GenerationJobError, match="missing from the shards"):
        read_shards(spec)


@pytest.mark.distributed
@pytest.mark.parametrize("settings", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_two_torchrun_workers_give_the_one_process_samples(
    tmp_path, model_dir, tokenizer, settings, caplog
):
    torch.set_num_threads(1)  # as each worker (runtime.omp_threads = 1)
    expected = _in_process(model_dir, tokenizer, settings)
    with caplog.at_level(logging.INFO):
        samples, stats, wall = complete_problems_in_workers(
            model_dir,
            tokenizer,
            PROBLEMS,
            FORMATS,
            settings,
            RuntimeParams(nproc_per_node=2, omp_threads=1),
            tmp_path / "run",
            show_progress=False,
        )
    assert samples == expected
    assert {d: s["n_samples"] for d, s in stats.items()} == {
        "humaneval": 4 * settings.samples_per_problem,
        "codecontests": 5 * settings.samples_per_problem,
    }
    assert wall > 0
    text = caplog.text
    assert "[rank 0] rank 0/2" in text and "[rank 1] rank 1/2" in text
    assert "generate step" in text and "tok/s" in text and "ETA" in text


@pytest.mark.distributed
def test_evaluation_node_with_two_workers_matches_one_process(tmp_path, model_dir, tokenizer):
    from weighted_mtp.pipelines.evaluation.nodes import EvaluationParams, generate_completions

    params = EvaluationParams(
        models=["tiny"],
        datasets={
            name: {"prompt": {"style": f.style, "stop": list(f.stop)}}
            for name, f in FORMATS.items()
        },
        generation=GREEDY,
    )
    torch.set_num_threads(1)
    runs = str(tmp_path / "runs")
    outputs = {
        n: generate_completions(
            ModelDirectory(model_dir),
            tokenizer,
            PROBLEMS,
            params,
            {"device": "cpu", "nproc_per_node": n, "omp_threads": 1},
            runs,
        )
        for n in (1, 2)
    }
    assert outputs[2][0] == outputs[1][0]
    assert (outputs[1][1]["workers"], outputs[2][1]["workers"]) == (1, 2)
    [run_dir] = (tmp_path / "runs" / "tiny").iterdir()  # only the 2-worker run has one
    assert (run_dir / "logs" / "rank_1.log").is_file()
