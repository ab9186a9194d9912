"""``python -m weighted_mtp.models.convert_meta`` keeps working (README, conf/a100 and users'
scripts name it); the converter lives in :mod:`weighted_mtp.model_io.convert_meta`."""

from __future__ import annotations

import sys

from weighted_mtp.model_io.convert_meta import (
    MetaCheckpointError,
    build_parser,
    check_against_model,
    convert,
    load_meta_state_dict,
    main,
    parse_size,
)

__all__ = [
    "MetaCheckpointError",
    "build_parser",
    "check_against_model",
    "convert",
    "load_meta_state_dict",
    "main",
    "parse_size",
]

if __name__ == "__main__":
    sys.exit(main())
