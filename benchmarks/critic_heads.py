"""Critic value heads on the frozen base model: held-out value AUC and bug-localisation AUC of
the running-max head (``models/value_head.py``, the critic's) against the linear running-mean
head it replaced and a small value tower, measured in the same run on the same rows.

Head 0's normed hidden states of ``--model-dir`` (frozen, as in the critic job) are computed
once for a balanced sample of training rows and a balanced panel of valid rows (with the
synthetic bug spans); each head is then trained on them with the critic's optimiser settings
(AdamW, betas 0.9/0.95, weight decay 0.1 on matrices, clip 1, warmup 10 + cosine to 0.1 of
``--lr``), batch 8, MSE to the reward at every output position, and scored by the value panel's
own metrics (:func:`weighted_mtp.weighting.metrics.value_panel_summary`). docs/experiment.md
"The critic" reports a run.

    python benchmarks/critic_heads.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from weighted_mtp.alignment import IGNORE_INDEX, shift_labels
from weighted_mtp.data.collator import PromptOutputCollator
from weighted_mtp.data.tokenizer import Tokenizer
from weighted_mtp.model_io.loading import load_model
from weighted_mtp.models.value_head import ValueHead
from weighted_mtp.training.optim import param_groups
from weighted_mtp.weighting.metrics import value_panel_parts, value_panel_summary


class RunningMeanHead(nn.Module):
    """The head before this one: ``w . mean(h_u : u <= t, u masked) + b``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, dim) * 0.02)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.to(hidden.dtype)[..., None]
        count = m.cumsum(1)
        pooled = torch.where(count > 0, (hidden * m).cumsum(1) / count.clamp_min(1), hidden)
        return pooled @ self.weight[0] + self.bias


class TowerHead(nn.Module):
    """A value tower: one causal pre-norm attention + MLP block of its own over the frozen
    states, read per position by a linear layer with a bias."""

    def __init__(self, dim: int, n_heads: int = 4) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm1, self.norm2, self.norm_out = nn.RMSNorm(dim), nn.RMSNorm(dim), nn.RMSNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.up, self.down = (
            nn.Linear(dim, 4 * dim, bias=False),
            nn.Linear(4 * dim, dim, bias=False),
        )
        self.out = nn.Linear(dim, 1)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        bsz, seqlen, dim = hidden.shape
        qkv = self.qkv(self.norm1(hidden)).view(bsz, seqlen, 3, self.n_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = hidden + self.proj(att.transpose(1, 2).reshape(bsz, seqlen, dim))
        x = x + self.down(F.gelu(self.up(self.norm2(x))))
        return self.out(self.norm_out(x))[..., 0]


HEADS = {"running_max": ValueHead, "running_mean_linear": RunningMeanHead, "tower": TowerHead}


def _balanced(path: Path, n: int, seed: int) -> list[dict]:
    rows = [json.loads(line) for line in path.open()]
    rng = random.Random(seed)
    pools = [[r for r in rows if r["is_correct"]], [r for r in rows if not r["is_correct"]]]
    for pool in pools:
        rng.shuffle(pool)
    sample = pools[0][: n // 2] + pools[1][: n // 2]
    rng.shuffle(sample)
    return sample


@torch.no_grad()
def _states(model, collator, records: list[dict]) -> list[dict[str, torch.Tensor]]:
    """Per row: head 0's normed states, the target mask, the reward and the bug mask."""
    out = []
    for start in range(0, len(records), 16):
        batch = collator(records[start : start + 16])
        ids, targets = batch["input_ids"], shift_labels(batch["labels"])
        ctx = model.attention_context(*ids.shape)
        hidden = model.head_forward(0, model.trunk_forward(ids, ctx=ctx), ctx=ctx)
        bug = batch.get("bug_mask", torch.zeros_like(batch["attention_mask"]))
        bug = shift_labels(bug.long(), 0).bool()
        for b in range(ids.shape[0]):
            n = int(batch["attention_mask"][b].sum())
            out.append(
                {
                    "hidden": hidden[b, :n].clone(),
                    "mask": (targets[b, :n] != IGNORE_INDEX),
                    "reward": batch["is_correct"][b].double(),
                    "bug": bug[b, :n],
                }
            )
    return out


def _pad(rows: list[dict]) -> tuple[torch.Tensor, ...]:
    width = max(r["hidden"].shape[0] for r in rows)
    dim = rows[0]["hidden"].shape[1]
    hidden = torch.zeros(len(rows), width, dim)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    bug = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        n = r["hidden"].shape[0]
        hidden[i, :n], mask[i, :n], bug[i, :n] = r["hidden"], r["mask"], r["bug"]
    return hidden, mask, torch.stack([r["reward"] for r in rows]), bug


def train_and_score(head: nn.Module, train: list, panel: list, steps: int, lr: float, seed: int):
    opt = torch.optim.AdamW(param_groups(head, 0.1), lr=lr, betas=(0.9, 0.95))
    rng = random.Random(seed)
    order: list[int] = []
    start = time.perf_counter()
    for step in range(steps):
        if len(order) < 8:
            order += rng.sample(range(len(train)), len(train))
        batch, order = [train[i] for i in order[:8]], order[8:]
        hidden, mask, reward, _ = _pad(batch)
        warm = min(1.0, (step + 1) / 10)
        cosine = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in opt.param_groups:
            group["lr"] = lr * warm * cosine
        err = head(hidden, mask) - reward[:, None].float()
        loss = (err.pow(2) * mask).sum() / mask.sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        opt.step()
    seconds = time.perf_counter() - start
    parts: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for i in range(0, len(panel), 16):
            hidden, mask, reward, bug = _pad(panel[i : i + 16])
            for key, value in value_panel_parts(head(hidden, mask), mask, reward, bug).items():
                parts.setdefault(key, []).append(value)
    return value_panel_summary({k: torch.cat(v) for k, v in parts.items()}), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default="data/06_models/micro-mtp")
    parser.add_argument("--data", default="data/05_model_input/codecontests")
    parser.add_argument("--tokenizer", default="data/06_models/tokenizer/tokenizer.model")
    parser.add_argument("--train-rows", type=int, default=1600)
    parser.add_argument("--panel-rows", type=int, default=256)
    parser.add_argument("--steps", type=int, nargs="+", default=[200, 600])
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--heads", nargs="+", default=list(HEADS), choices=list(HEADS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_model(args.model_dir).float()
    collator = PromptOutputCollator(Tokenizer.from_file(args.tokenizer), 512)
    data = Path(args.data)
    train = _states(model, collator, _balanced(data / "train.jsonl", args.train_rows, args.seed))
    panel = _states(
        model, collator, _balanced(data / "valid.jsonl", args.panel_rows, args.seed + 1)
    )
    dim = train[0]["hidden"].shape[1]
    print(f"{len(train)} training rows, {len(panel)} panel rows, dim {dim}, lr {args.lr}")
    print(f"{'head':<20} {'steps':>5} {'value AUC [95%]':>22} {'Brier':>7} {'bug AUC':>8} {'s':>6}")
    for name in args.heads:
        for steps in args.steps:
            torch.manual_seed(args.seed)
            metrics, seconds = train_and_score(
                HEADS[name](dim), train, panel, steps, args.lr, args.seed
            )
            auc = (
                f"{metrics['val/value_auc']:.3f} [{metrics['val/value_auc_low']:.3f}, "
                f"{metrics['val/value_auc_high']:.3f}]"
            )
            print(
                f"{name:<20} {steps:>5} {auc:>22} {metrics['val/value_brier_skill']:>+7.3f} "
                f"{metrics.get('val/bug_auc', float('nan')):>8.3f} {seconds:>6.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
