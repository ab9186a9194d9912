"""StepLog: every step in the history file at once, MLflow metrics in batches, none lost."""

from __future__ import annotations

import json

from weighted_mtp.training.step_log import StepLog


class RecordingClient:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list] = []
        self.fail = fail

    def log_batch(self, run_id: str, metrics: list) -> None:
        if self.fail:
            raise ConnectionError("tracking server down")
        assert run_id == "run-1"
        self.calls.append(list(metrics))


def make(tmp_path, client, flush_seconds: float = 3600.0) -> StepLog:
    return StepLog(
        tmp_path / "history.jsonl",
        tracking_uri=None,
        run_id="run-1",
        max_steps=40,
        method="baseline",
        flush_seconds=flush_seconds,
        client=client,
    )


def test_metrics_reach_mlflow_in_batches_and_all_by_close(tmp_path, capsys):
    client = RecordingClient()
    log = make(tmp_path, client)
    for step in range(1, 41):
        log.log(step, {"train/loss": 1.0 / step, "train/lr": 0.1})
    assert client.calls == []  # within flush_seconds nothing is sent yet
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, 41))  # the file is live
    log.close()
    assert len(client.calls) == 1
    sent = {(m.key, m.step): m.value for m in client.calls[0]}
    assert len(sent) == 80
    assert sent[("train/loss", 8)] == 1.0 / 8
    assert capsys.readouterr().out.count("WMTP_PROGRESS") == 40  # progress stays per step


def test_flush_after_the_interval(tmp_path):
    client = RecordingClient()
    log = make(tmp_path, client, flush_seconds=0.0)
    log.log(1, {"train/loss": 2.0})
    log.log(2, {"train/loss": 1.5, "train/bad": float("nan")})
    assert [[(m.key, m.step, m.value) for m in call] for call in client.calls] == [
        [("train/loss", 1, 2.0)],
        [("train/loss", 2, 1.5)],  # non-finite values stay in the history file only
    ]
    log.close()
    assert len(client.calls) == 2


def test_a_failing_server_loses_nothing_from_the_history(tmp_path, caplog):
    log = make(tmp_path, RecordingClient(fail=True), flush_seconds=0.0)
    for step in range(1, 4):
        log.log(step, {"train/loss": float(step)})
    log.close()
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["train/loss"] for line in lines] == [1.0, 2.0, 3.0]
    assert "MLflow logging failed for steps 1-1" in caplog.text
    assert "3 MLflow logging calls failed" in caplog.text
