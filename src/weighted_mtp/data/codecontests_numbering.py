"""The two enum numberings of CodeContests' ``source`` and ``difficulty``, and which one a file
of rows uses.

The ``source`` and ``difficulty`` ints differ between dm-code_contests'
``contest_problem.proto`` and the Hugging Face dataset card:

* source: proto ``ATCODER = 6, AIZU = 7`` (5 is reserved); card ``ATCODER (5), AIZU (6)``.
* difficulty: both agree up to ``K = 17``; the proto skips 18 (``L = 19 ... V = 29``), the card
  does not (``L (18) ... V (28)``).

``numbering="hf"`` or ``"proto"`` reads every row of a file with one of them. ``"auto"`` (the
default) looks at the whole file for values only one numbering has (source 5 or difficulty 18:
card; source 7 or difficulty 29: proto); a file holding both kinds is an error. Without such
evidence, values on which the numberings differ (source 6, difficulty 19-28) are read with the
card numbering, since the rows come from the Hugging Face files, and a warning says so.

Canonical difficulty: training metadata and evaluation problems carry the card numbering
(contiguous: 0 unknown, 1-5 EASY..HARDEST, 6 EXTERNAL, 7-28 letters A..V), which is also what
``weighted_mtp.data.sampling`` bins on. :mod:`weighted_mtp.data.codecontests` reads the rows with
the tables of the numbering :func:`detect_numbering` resolves.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from weighted_mtp.data.errors import UnknownEnumError
from weighted_mtp.data.records import row_locations

logger = logging.getLogger(__name__)

NUMBERINGS = ("auto", "hf", "proto")

SOURCES_PROTO = {
    0: "UNKNOWN_SOURCE",
    1: "CODECHEF",
    2: "CODEFORCES",
    3: "HACKEREARTH",
    4: "CODEJAM",
    6: "ATCODER",
    7: "AIZU",
}
SOURCES_HF = {
    0: "UNKNOWN_SOURCE",
    1: "CODECHEF",
    2: "CODEFORCES",
    3: "HACKEREARTH",
    4: "CODEJAM",
    5: "ATCODER",
    6: "AIZU",
}

_DIFFICULTY_NAMES = [
    "UNKNOWN_DIFFICULTY",
    "EASY",
    "MEDIUM",
    "HARD",
    "HARDER",
    "HARDEST",
    "EXTERNAL",
    *"ABCDEFGHIJKLMNOPQRSTUV",
]
#: The card numbering: contiguous. Also the canonical numbering of our outputs.
DIFFICULTIES_HF = dict(enumerate(_DIFFICULTY_NAMES))
#: The proto numbering: as the card up to K = 17, then 18 is skipped.
DIFFICULTIES_PROTO = {i if i <= 17 else i + 1: name for i, name in enumerate(_DIFFICULTY_NAMES)}
CANONICAL_DIFFICULTY = {name: i for i, name in DIFFICULTIES_HF.items()}

NUMBERING_TABLES = {
    "hf": (SOURCES_HF, DIFFICULTIES_HF),
    "proto": (SOURCES_PROTO, DIFFICULTIES_PROTO),
}
_HF_ONLY = ({5}, {18})
_PROTO_ONLY = ({7}, {29})
_AMBIGUOUS = ({6}, set(range(19, 29)))


def detect_numbering(rows: Sequence[dict[str, Any]], numbering: str, source_file: str) -> str:
    """Resolve ``numbering`` (``auto``/``hf``/``proto``) for a whole file; see the module doc.

    Raises:
        UnknownEnumError: ``auto`` found values that only the card has and values that only the
            proto has in the same file.
    """
    if numbering not in NUMBERINGS:
        raise ValueError(f"enum numbering must be one of {NUMBERINGS}, got {numbering!r}")
    if numbering != "auto":
        return numbering
    path, lines = row_locations(rows, source_file)
    hf_line = proto_line = ambiguous_line = None
    for row, line in zip(rows, lines, strict=True):
        if not isinstance(row, dict):
            continue  # reported by the conversion itself
        source, difficulty = row.get("source"), row.get("difficulty")
        if hf_line is None and (source in _HF_ONLY[0] or difficulty in _HF_ONLY[1]):
            hf_line = line
        if proto_line is None and (source in _PROTO_ONLY[0] or difficulty in _PROTO_ONLY[1]):
            proto_line = line
        if ambiguous_line is None and (source in _AMBIGUOUS[0] or difficulty in _AMBIGUOUS[1]):
            ambiguous_line = line
    if hf_line is not None and proto_line is not None:
        raise UnknownEnumError(
            path,
            proto_line,
            "source/difficulty values of both numberings in one file: line "
            f"{hf_line} has a value only the Hugging Face card uses (source 5 or difficulty 18), "
            f"this line one only the proto uses (source 7 or difficulty 29); set "
            "enum_numbering to 'hf' or 'proto' explicitly",
        )
    if proto_line is not None:
        return "proto"
    if hf_line is None and ambiguous_line is not None:
        logger.warning(
            "%s: no value tells the enum numbering apart (first ambiguous value at line %d); "
            "reading source/difficulty with the Hugging Face card numbering",
            path,
            ambiguous_line,
        )
    return "hf"
