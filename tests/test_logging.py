"""Log handlers: file logs one record per line, plain console logs off a terminal, known
third-party warnings dropped, and the tests' own log files outside the project."""

from __future__ import annotations

import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from kedro.logging import RichHandler
from rich.console import Console

import weighted_mtp
from weighted_mtp import KnownWarningsFilter, OneLineFormatter, plain_logs_off_terminal

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    # Outside the logging manager: no handler of pytest's or Kedro's reaches it.
    log = logging.Logger("weighted_mtp.test_logging")
    log.setLevel(logging.INFO)
    hook = sys.excepthook  # Kedro's RichHandler installs Rich's
    yield log
    sys.excepthook = hook
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


def test_the_tests_log_outside_the_project():
    config = Path(os.environ["KEDRO_LOGGING_CONFIG"])
    assert PROJECT not in config.parents
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    assert files, "conf/logging.yml has a file handler"
    for handler in files:
        assert PROJECT not in Path(handler.baseFilename).parents, handler.baseFilename


def test_a_file_log_has_one_record_per_line(tmp_path, logger):
    handler = logging.FileHandler(tmp_path / "info.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(levelname)s - %(message)s"))
    logger.addHandler(handler)
    plain_logs_off_terminal(logger)
    plain_logs_off_terminal(logger)  # idempotent
    assert isinstance(handler.formatter, OneLineFormatter)
    logger.info("first line\nsecond line of the same record")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("it failed")
    logger.info("x" * 300)
    handler.flush()
    lines = (tmp_path / "info.log").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    assert lines[0] == "INFO - first line\\nsecond line of the same record"
    assert lines[1].startswith("ERROR - it failed\\nTraceback (most recent call last):")
    assert lines[1].endswith("ValueError: boom")
    assert lines[2] == "INFO - " + "x" * 300


def test_a_console_that_is_not_a_terminal_gets_plain_lines(logger):
    out = io.StringIO()
    logger.addHandler(RichHandler(console=Console(file=out)))  # StringIO: not a terminal
    plain_logs_off_terminal(logger)
    (handler,) = logger.handlers
    assert type(handler) is logging.StreamHandler
    assert sys.excepthook is sys.__excepthook__  # Rich's tracebacks wrap at 80 too
    message = "a long message " * 20
    logger.warning(message)
    (line,) = out.getvalue().splitlines()
    assert line.endswith(f"WARNING {logger.name}: {message}")


def test_a_terminal_keeps_rich(logger):
    rich = RichHandler(console=Console(file=io.StringIO(), force_terminal=True))
    logger.addHandler(rich)
    plain_logs_off_terminal(logger)
    assert logger.handlers == [rich]


def test_the_plain_console_follows_sys_stdout(logger, monkeypatch):
    logger.addHandler(RichHandler())  # a console on sys.stdout, resolved at each write
    plain_logs_off_terminal(logger)
    later = io.StringIO()
    monkeypatch.setattr(sys, "stdout", later)
    logger.info("where does this go")
    assert "where does this go" in later.getvalue()


def _captured(message: str, category: type[Warning], filename: str) -> logging.LogRecord:
    # What logging.captureWarnings makes of a warning (logger py.warnings).
    text = warnings.formatwarning(message, category, filename, 1)
    return logging.LogRecord("py.warnings", logging.WARNING, filename, 1, "%s", (text,), None)


def test_known_warnings_are_dropped_only_from_their_module():
    known = KnownWarningsFilter()
    mlflow_file = "/venv/site-packages/mlflow/pyfunc/utils/data_validation.py"
    kedro_file = "/venv/site-packages/kedro/config/omegaconf_config.py"
    hint = "\x1b[33mAdd type hints to the `predict` method to enable data validation\x1b[0m"
    resolver = "register_new_resolver() is deprecated and will be removed in a future release."
    assert not known.filter(_captured(hint, UserWarning, mlflow_file))
    assert not known.filter(_captured(resolver, UserWarning, kedro_file))
    # The same text from elsewhere, or another warning from the same module, still shows.
    assert known.filter(_captured(resolver, UserWarning, "/src/weighted_mtp/settings.py"))
    assert known.filter(_captured("something else", UserWarning, kedro_file))
    assert known.filter(_captured(resolver, DeprecationWarning, kedro_file))


def test_quiet_known_warnings_is_idempotent():
    weighted_mtp.quiet_known_warnings()
    before = (len(warnings.filters), len(logging.getLogger("py.warnings").filters))
    weighted_mtp.quiet_known_warnings()
    assert (len(warnings.filters), len(logging.getLogger("py.warnings").filters)) == before
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # whatever pytest's -W options say
        weighted_mtp.quiet_known_warnings()
        warnings.warn_explicit(
            "register_new_resolver() is deprecated",
            UserWarning,
            "omegaconf_config.py",
            1,
            module="kedro.config.omegaconf_config",
        )
        warnings.warn_explicit(
            "register_new_resolver() is deprecated",
            UserWarning,
            "mine.py",
            1,
            module="weighted_mtp.mine",
        )
    assert [w.filename for w in caught] == ["mine.py"]
