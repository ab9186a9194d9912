"""Synthetic CodeContests: the project's embedded default raw data (no download needed).

Rows follow the Hugging Face ``deepmind/code_contests`` schema. Each comes from a
parameterised task family (``FAMILIES``) at one of three difficulty levels, with a generated
statement, public/private/generated tests computed by a reference implementation, several
correct Python 3 programs in different styles and realistic incorrect ones.
"""

from weighted_mtp.data.synthetic.generator import (
    generate_codecontests_rows,
    iter_codecontests_rows,
)
from weighted_mtp.data.synthetic.registry import FAMILIES
from weighted_mtp.data.synthetic.schema import (
    DIFFICULTIES,
    DIFFICULTY_A,
    DIFFICULTY_B,
    DIFFICULTY_C,
    DIFFICULTY_D,
    DIFFICULTY_E,
    DIFFICULTY_EASY,
    DIFFICULTY_F,
    DIFFICULTY_HARD,
    DIFFICULTY_MEDIUM,
    DIFFICULTY_UNKNOWN,
    LANGUAGE_CPP,
    LANGUAGE_JAVA,
    LANGUAGE_PYTHON2,
    LANGUAGE_PYTHON3,
    LANGUAGE_UNKNOWN,
    SOURCE_AIZU,
    SOURCE_ATCODER,
    SOURCE_CODECHEF,
    SOURCE_CODEFORCES,
    SOURCE_CODEJAM,
    SOURCE_HACKEREARTH,
    SOURCE_UNKNOWN,
    SPLITS,
)

__all__ = [
    "DIFFICULTIES",
    "DIFFICULTY_A",
    "DIFFICULTY_B",
    "DIFFICULTY_C",
    "DIFFICULTY_D",
    "DIFFICULTY_E",
    "DIFFICULTY_EASY",
    "DIFFICULTY_F",
    "DIFFICULTY_HARD",
    "DIFFICULTY_MEDIUM",
    "DIFFICULTY_UNKNOWN",
    "FAMILIES",
    "LANGUAGE_CPP",
    "LANGUAGE_JAVA",
    "LANGUAGE_PYTHON2",
    "LANGUAGE_PYTHON3",
    "LANGUAGE_UNKNOWN",
    "SOURCE_AIZU",
    "SOURCE_ATCODER",
    "SOURCE_CODECHEF",
    "SOURCE_CODEFORCES",
    "SOURCE_CODEJAM",
    "SOURCE_HACKEREARTH",
    "SOURCE_UNKNOWN",
    "SPLITS",
    "generate_codecontests_rows",
    "iter_codecontests_rows",
]
