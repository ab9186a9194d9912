"""How rows are sampled: the next-token rule (:func:`select_next_token`), each row's own random
stream, and which (prompt, sample) rows are decoded together and by which worker.

Generation must give the same completions whether one process decodes every row or several
workers share them (``docs/evaluation.md``). Two things make that hold:

- **Batches do not depend on the number of workers.** The rows are sorted by prompt length and
  cut into ``batch_size`` chunks (:func:`plan_batches`) exactly as one process would; workers
  receive whole batches (:func:`assign_batches`), so every row is decoded with the same
  neighbours, the same padding and the same arithmetic wherever it runs.
- **Each row samples from its own stream**, seeded from ``(seed, stream, prompt, sample)``
  (:func:`pair_seed`), so its draws do not depend on the order the batches run in or on the
  rows that finished before it.

Tensor math and ``torch.Generator`` only; no model and no process here.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Sequence

import torch

#: One row: (prompt index, sample index) within one prompt list.
Row = tuple[int, int]


def pair_seed(seed: int, prompt: int, sample: int, stream: str = "") -> int:
    """The seed of row ``(prompt, sample)``: a 63-bit hash of the run's ``seed``, the
    ``stream`` (e.g. the dataset name) and the row, stable across processes and platforms."""
    key = f"{seed}\0{stream}\0{prompt}\0{sample}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def row_generators(seed: int, rows: Sequence[Row], stream: str = "") -> list[torch.Generator]:
    """One CPU ``torch.Generator`` per row, seeded with :func:`pair_seed`."""
    return [torch.Generator().manual_seed(pair_seed(seed, p, s, stream)) for p, s in rows]


def select_next_token(
    logits: torch.Tensor,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    generators: Sequence[torch.Generator] | None = None,
) -> torch.Tensor:
    """Pick the next token of each row from ``logits [B, V]`` -> ``[B]`` (long).

    ``temperature <= 0`` is greedy (argmax). Otherwise sample from ``softmax(logits / T)``
    restricted to the nucleus: the most probable tokens whose preceding cumulative mass is
    below ``top_p`` (the top token is always kept, so a tiny ``top_p`` is greedy).

    Sampling inverts the cumulative distribution with one uniform number per row
    (``searchsorted``), which draws from the same distribution as ``torch.multinomial`` at a
    fraction of its cost on CPU (multinomial took a quarter of a sampled decoding step).

    ``generators``: one CPU generator per row (used instead of ``generator``): each row draws
    its uniform number from its own stream, so a row's samples do not depend on which other
    rows share its batch, nor on the worker that decodes it.
    """
    if temperature <= 0:
        return logits.argmax(dim=-1)
    if generators is not None and len(generators) != logits.shape[0]:
        raise ValueError(f"{len(generators)} generators for {logits.shape[0]} rows")
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p >= 1.0:
        return _inverse_cdf(probs, generator, generators)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
    choice = _inverse_cdf(sorted_probs, generator, generators)
    return order.gather(-1, choice[:, None]).squeeze(-1)


def _inverse_cdf(
    weights: torch.Tensor,
    generator: torch.Generator | None,
    generators: Sequence[torch.Generator] | None = None,
) -> torch.Tensor:
    """One index per row of ``weights [B, V]`` (>= 0, unnormalised), drawn with probability
    proportional to its weight -> ``[B]``: the first index whose cumulative weight exceeds
    ``u * total``, ``u`` uniform in [0, 1)."""
    cdf = weights.cumsum(dim=-1)
    total = cdf[:, -1:]
    if generators is None:
        u = torch.rand(total.shape, generator=generator, device=cdf.device, dtype=cdf.dtype)
    else:
        # Drawn on the host (one small copy per step): B draws from B CUDA generators would be
        # B kernel launches.
        u = torch.cat([torch.rand(1, generator=g, dtype=cdf.dtype) for g in generators])
        u = u[:, None].to(cdf.device)
    # u <= 1 - 2**-p, so u * total rounds strictly below total; "right" finds the first entry
    # above the target, never a zero-weight one (their cumulative weight equals the previous).
    return torch.searchsorted(cdf, u * total, right=True).squeeze(-1)


def plan_batches(prompt_lengths: Sequence[int], n_samples: int, batch_size: int) -> list[list[Row]]:
    """Every ``(prompt, sample)`` row, sorted by prompt length (ties in prompt order), cut into
    batches of ``batch_size`` rows: similar lengths share a batch and pad little.

    Raises:
        ValueError: ``n_samples`` or ``batch_size`` below 1.
    """
    if n_samples < 1 or batch_size < 1:
        raise ValueError(f"n_samples and batch_size must be >= 1, got {n_samples}, {batch_size}")
    rows = sorted(
        ((p, s) for p in range(len(prompt_lengths)) for s in range(n_samples)),
        key=lambda row: prompt_lengths[row[0]],
    )
    return [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]


def batch_cost(rows: Sequence[Row], prompt_lengths: Sequence[int], max_new_tokens: int) -> int:
    """Upper bound of the token positions a batch computes: rows x (its longest prompt +
    ``max_new_tokens``); what :func:`assign_batches` balances."""
    if not rows:
        return 0
    return len(rows) * (max(prompt_lengths[p] for p, _ in rows) + max_new_tokens)


def assign_batches(costs: Sequence[int], world_size: int) -> list[list[int]]:
    """Deal batches to ``world_size`` workers: each batch, most costly first, goes to the
    worker with the least cost so far (longest-processing-time first; ties to the lower
    rank). Returns each rank's batch indices in ascending order; together they are every
    index exactly once.

    Raises:
        ValueError: ``world_size`` below 1.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    shares: list[list[int]] = [[] for _ in range(world_size)]
    loads = [(0, rank) for rank in range(world_size)]
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, rank = heapq.heappop(loads)
        shares[rank].append(index)
        heapq.heappush(loads, (load + costs[index], rank))
    return [sorted(share) for share in shares]
