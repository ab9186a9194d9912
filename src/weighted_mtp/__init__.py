"""Weighted Multi-Token Prediction research on code LLMs.

Importing the package (Kedro does, through ``settings.py``; the ``kedro`` command earlier,
through the ``kedro.cli_hooks`` entry point in ``pyproject.toml``) silences third-party
warnings that every command used to print and that a user can do nothing about, and adapts
the log handlers: one record per line in log files, plain unwrapped lines on a console that is
not a terminal (see :func:`quiet_known_warnings` and :func:`plain_logs_off_terminal`).
"""

from __future__ import annotations

import logging
import re
import sys
import warnings

__version__ = "0.1.0"

#: (message regex, category, module regex) of third-party warnings filtered out; each is
#: matched on its message and on the module that issues it, so the same text from our own
#: code would still show.
KNOWN_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    # mlflow, on kedro-mlflow's KedroPipelineModel (a PythonModel without type hints), at every
    # `kedro` command: advice for model authors, wrapped in raw ANSI colour codes.
    (r"(\x1b\[[0-9;]*m)?Add type hints to the `predict` method", UserWarning, r"mlflow\."),
    # Kedro's and kedro-mlflow's config loaders call OmegaConf 2.4's deprecated
    # register_new_resolver (five times per run), for settings.py's oc.env too: Kedro offers no
    # way to register a resolver through the new API.
    (r"register_new_resolver\(\) is deprecated", UserWarning, r"kedro(_mlflow)?\."),
)


class KnownWarningsFilter(logging.Filter):
    """Drops :data:`KNOWN_WARNINGS` that reach logging (``logging.captureWarnings``, which
    Kedro's Rich handler turns on) as ``py.warnings`` records.

    Needed besides the ``warnings`` filters: mlflow raises its warning inside
    ``warnings.catch_warnings()`` with its own ``simplefilter("once")``, which takes precedence
    over every filter installed outside.
    """

    def __init__(self) -> None:
        super().__init__()
        self._patterns = [
            (
                re.compile(rf"{category.__name__}: {message}"),
                # The module as a path: py.warnings records carry the file, not the module.
                re.compile(r"[/\\]" + module.replace(r"\.", r"[/\\]")),
            )
            for message, category, module in KNOWN_WARNINGS
        ]

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not any(m.search(text) and p.search(text) for m, p in self._patterns)


def quiet_known_warnings() -> None:
    """Install :data:`KNOWN_WARNINGS` as ``ignore`` filters and :class:`KnownWarningsFilter`
    on the ``py.warnings`` logger (idempotent)."""
    for message, category, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    captured = logging.getLogger("py.warnings")
    if not any(isinstance(f, KnownWarningsFilter) for f in captured.filters):
        captured.addFilter(KnownWarningsFilter())


class OneLineFormatter(logging.Formatter):
    """A record per line: newlines inside a message or a traceback become a literal ``\\n``,
    so that a log file can be read with ``grep`` and ``tail`` a record at a time."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "\\r").replace("\n", "\\n")


#: Console format when the console is not a terminal (CI, a redirected ``kedro run``).
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at each record, as a Rich console without an
    explicit file does (pytest and notebooks swap ``sys.stdout``)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001
        pass


def plain_logs_off_terminal(logger: logging.Logger | None = None) -> None:
    """Adapt the handlers of ``logger`` (default: the root logger, where ``conf/logging.yml``
    puts them) to where they write.

    - A file handler gets :class:`OneLineFormatter` with its own format string.
    - A Rich console handler whose console is not a terminal (and not Jupyter) becomes a plain
      ``StreamHandler`` on the same stream: Rich would draw its columns at a fixed 80
      characters there, wrapping every long message over several lines. Rich's traceback
      hook goes too, for the same reason.

    Kedro configures logging (``conf/logging.yml``) when it is imported, before any project
    code runs, and the configuration can only name classes of ``logging`` and
    ``kedro.logging``: hence this adjustment after the fact, which is idempotent.
    """
    logger = logger or logging.getLogger()
    for handler in list(logger.handlers):
        if isinstance(handler, logging.FileHandler):
            if not isinstance(handler.formatter, OneLineFormatter):
                current = handler.formatter
                handler.setFormatter(
                    OneLineFormatter(
                        current._fmt if current else None, current.datefmt if current else None
                    )
                )
            continue
        console = getattr(handler, "console", None)
        if console is None or type(handler).__module__.split(".")[0] not in ("rich", "kedro"):
            continue
        if console.is_terminal or console.is_jupyter:
            continue
        # Rich resolves sys.stdout at each write unless it was given a file.
        explicit = getattr(console, "_file", None)
        plain = logging.StreamHandler(explicit) if explicit is not None else _StdoutHandler()
        plain.setLevel(handler.level)
        plain.setFormatter(logging.Formatter(PLAIN_FORMAT))
        for log_filter in handler.filters:
            plain.addFilter(log_filter)
        logger.removeHandler(handler)
        logger.addHandler(plain)
        if getattr(sys.excepthook, "__module__", "").startswith("rich"):
            sys.excepthook = sys.__excepthook__


quiet_known_warnings()
plain_logs_off_terminal()
