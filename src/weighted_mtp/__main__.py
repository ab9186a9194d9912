"""weighted-mtp file for ensuring the package is executable
as `weighted-mtp` and `python -m weighted_mtp`
"""

import sys
from pathlib import Path
from typing import Any

from kedro.framework.cli.utils import find_run_command
from kedro.framework.project import configure_project

from weighted_mtp import plain_logs_off_terminal


def main(*args, **kwargs) -> Any:
    package_name = Path(__file__).parent.name
    configure_project(package_name)
    # Kedro configured logging on import, after the package's own import-time adjustment.
    plain_logs_off_terminal()

    interactive = hasattr(sys, "ps1")
    kwargs["standalone_mode"] = not interactive

    run = find_run_command(package_name)
    return run(*args, **kwargs)


if __name__ == "__main__":
    main()
