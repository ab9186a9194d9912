"""The critic diagnostics, checked where they matter: a tiny verifiable run through the real loop
with a planted critic that knows where every synthetic bug starts (its TD weights are not
uniform and it localises the bugs: bug AUC 1), and the same run with an uninformed value head
(bug AUC near chance). Also the validation panels: one correct loss panel shared by every
method, a balanced value panel for the value-head methods."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from weighted_mtp.alignment import shift_labels
from weighted_mtp.data.collator import PromptOutputCollator
from weighted_mtp.data.offset_reader import read_lines_at
from weighted_mtp.losses.methods import VerifiableMethod
from weighted_mtp.model_io.loading import ModelDirectory
from weighted_mtp.model_io.micro import build_micro_mtp
from weighted_mtp.models.value_head import ValueHead
from weighted_mtp.training.config import PARAMS_BY_METHOD, RuntimeParams
from weighted_mtp.training.data_plan import build_data_plan
from weighted_mtp.training.distributed import WorldInfo
from weighted_mtp.training.loop import train
from weighted_mtp.training.module import MTPTrainingModule
from weighted_mtp.training.spec import JobSpec

from .corpus import Corpus, build_corpus

CPU = torch.device("cpu")
MAX_LEN = 256


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture
def process_group(restore_excepthook):
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


class _Oracle:
    """The true reward-to-go of every program of the corpus, by its token ids: 1 for a correct
    program; for an incorrect one 1 up to the state before its bug's first token and 0 from
    the state that token leads to (so the TD error is -1 exactly at the bug's onset); 0
    throughout an incorrect program without a known span."""

    def __init__(self, corpus: Corpus) -> None:
        collator = PromptOutputCollator(corpus.tokenizer, MAX_LEN)
        self.table: dict[tuple[int, ...], torch.Tensor] = {}
        for path, meta in (
            (corpus.train_jsonl, corpus.train_metadata),
            (corpus.valid_jsonl, corpus.valid_metadata),
        ):
            records = read_lines_at(str(path), meta["offset"].to_numpy(), meta["length"].to_numpy())
            for record in records:
                batch = collator([record])
                if batch["input_ids"].shape[0] == 0:
                    continue
                ids = tuple(batch["input_ids"][0].tolist())
                if record["is_correct"]:
                    values = torch.ones(len(ids), dtype=torch.float64)
                elif "bug_mask" in batch and batch["bug_mask"][0].any():
                    bug = shift_labels(batch["bug_mask"].long(), 0)[0].bool()
                    onset = int(bug.int().argmax())
                    values = (torch.arange(len(ids)) <= onset).double()
                else:
                    values = torch.zeros(len(ids), dtype=torch.float64)
                self.table[ids] = values
        self.lengths = sorted({len(k) for k in self.table})

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(tokens.shape, dtype=torch.float64)
        for b, row in enumerate(tokens.tolist()):
            found = [n for n in self.lengths if tuple(row[:n]) in self.table]
            assert found, "a row the oracle does not know"
            n = found[-1]
            out[b, :n] = self.table[tuple(row[:n])]
        return out


class _PlantedCritic(nn.Module):
    """A value head that reads the oracle for the tokens its module is running on."""

    def __init__(self, oracle: _Oracle) -> None:
        super().__init__()
        self.oracle = oracle
        self.tokens: torch.Tensor | None = None

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        assert self.tokens is not None and self.tokens.shape == hidden.shape[:2]
        return self.oracle(self.tokens)


class _PlantedModule(MTPTrainingModule):
    def head_hiddens(self, tokens: torch.Tensor, n_heads: int | None = None):
        if isinstance(self.value_head, _PlantedCritic):
            self.value_head.tokens = tokens
        return super().head_hiddens(tokens, n_heads)


def _run(corpus: Corpus, run_dir: Path, value_head: nn.Module) -> tuple[JobSpec, dict]:
    params = PARAMS_BY_METHOD["verifiable"](
        max_steps=4,
        warmup_steps=1,
        batch_size=4,
        eval_every=4,
        val_samples=8,
        value_val_samples=16,
        max_seq_len=MAX_LEN,
        chunk_size=128,
        resume="never",
    )
    spec = JobSpec(
        method="verifiable",
        run_dir=str(run_dir),
        params=params.model_dump(),
        runtime=RuntimeParams(nproc_per_node=1, strategy="ddp", omp_threads=1),
        init_model=str(corpus.model_dir),
        train_jsonl=str(corpus.train_jsonl),
        valid_jsonl=str(corpus.valid_jsonl),
    )
    run_dir.mkdir(parents=True)
    plan = build_data_plan(
        "verifiable", params, corpus.train_metadata, corpus.valid_metadata, world_size=1
    )
    plan.save(spec.plan_path)
    args = ModelDirectory(str(corpus.model_dir)).read_args()
    method = VerifiableMethod(value_coef=0.5)
    module = _PlantedModule(build_micro_mtp(args, seed=0), value_head, method)  # type: ignore[arg-type]
    world = WorldInfo(rank=0, local_rank=0, world_size=1, device=CPU)
    _, summary = train(spec, world, module, PromptOutputCollator(corpus.tokenizer, MAX_LEN))
    return spec, summary.final_metrics


def test_a_planted_critic_localises_every_bug_and_weights_are_not_uniform(
    corpus, tmp_path, process_group
):
    spec, final = _run(corpus, tmp_path / "planted", _PlantedCritic(_Oracle(corpus)))
    assert final["val/n_bug_rows"] >= 3
    # The value falls exactly at each bug's first token: a perfect ranking, a perfect critic.
    assert final["val/bug_auc"] == pytest.approx(1.0)
    assert final["val/value_auc"] == pytest.approx(1.0)
    assert final["val/value_brier_skill"] == pytest.approx(1.0)
    # exp(-1 / beta) at the onset, 1 elsewhere (no other TD error): the weights are not uniform.
    assert final["val/bug_onset_weight_mean"] == pytest.approx(np.exp(-1 / 0.9))
    assert final["val/nonbug_weight_mean"] == pytest.approx(1.0)
    assert final["val/bug_weight_mean"] < final["val/nonbug_weight_mean"]
    # In training too (weights/std is what the verdict reads): some step saw a bug's onset.
    steps = [json.loads(line) for line in spec.history_path.read_text().splitlines()]
    assert max(s.get("weights/std", 0.0) for s in steps) > 0.01
    assert min(s.get("weights/min", 1.0) for s in steps) == pytest.approx(np.exp(-1 / 0.9))
    # Every method's val/loss: the uniform MTP loss on the correct loss panel.
    assert np.isfinite(final["val/loss"])


def test_an_uninformed_value_head_does_not_localise_the_bugs(corpus, tmp_path, process_group):
    torch.manual_seed(0)
    head = ValueHead(ModelDirectory(str(corpus.model_dir)).read_args().dim)
    _, final = _run(corpus, tmp_path / "fresh", head)
    assert abs(final["val/bug_auc"] - 0.5) < 0.3
    assert final["val/value_auc_low"] <= final["val/value_auc"] <= final["val/value_auc_high"]
    assert final["val/value_brier_skill"] < 0.5


def test_every_method_validates_on_the_same_correct_rows_and_value_methods_add_a_panel(corpus):
    plans = {}
    for method in ("baseline", "verifiable", "rho1", "critic"):
        params = PARAMS_BY_METHOD[method](
            max_steps=2, batch_size=2, warmup_steps=0, val_samples=6, max_seq_len=MAX_LEN
        )
        plans[method] = build_data_plan(
            method, params, corpus.train_metadata, corpus.valid_metadata, world_size=1
        )
    correct = set(corpus.valid_metadata.loc[corpus.valid_metadata["is_correct"], "row"])
    loss_rows = plans["baseline"].valid_rows
    assert len(loss_rows) == 6 and set(loss_rows) <= correct
    for method, plan in plans.items():
        np.testing.assert_array_equal(plan.valid_rows, loss_rows, err_msg=method)
    assert len(plans["baseline"].value_rows) == len(plans["rho1"].value_rows) == 0
    for method in ("verifiable", "critic"):
        value = plans[method].value_rows
        labels = corpus.valid_metadata.set_index("row").loc[value, "is_correct"].to_numpy()
        assert len(value) > 0 and abs(int(labels.sum()) - int((~labels).sum())) <= 1, method
