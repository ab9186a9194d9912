"""notebooks/compare_methods.ipynb runs top to bottom in a plain Jupyter kernel (as
`jupyter nbconvert --execute` runs it), on the outputs of a small default `kedro run`.

The run is the whole experiment with tiny settings (a few training steps per method, three
problems per dataset), in a copy of the project, offline. The notebook must start its own
Kedro session (no `kedro jupyter` kernel here) and render the token views.
"""

from __future__ import annotations

from pathlib import Path

import nbclient
import nbformat
import pytest


@pytest.fixture(scope="module")
def project(default_run: Path) -> Path:
    """The tiny default run's project (tests/conftest.py), notebooks included."""
    return default_run


def _outputs(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        data = output.get("data", {})
        parts.append(data.get("text/html", ""))
        parts.append(data.get("text/plain", ""))
    return "\n".join(p if isinstance(p, str) else "".join(p) for p in parts)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the module fixture's kedro run counts against the first test
def test_notebook_runs_headless_on_a_default_run(project: Path, monkeypatch):
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(project / "notebooks" / "compare_methods.ipynb", as_version=4)
    # A plain python3 kernel started in notebooks/, as `jupyter nbconvert --execute` does:
    # no `catalog` is injected, the first cell must find the project and start a session.
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(project / "notebooks")}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    code = [c for c in notebook.cells if c.cell_type == "code"]
    text = "\n".join(_outputs(c) for c in code)
    assert "codecontests pass@1" in text  # the verdict
    images = [o for c in code for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the pass@k chart and the training curves
    assert "ci_low" in text and "n_samples" in text
    assert "no training history" not in text  # every method's curve was found
    # The seeds table (pass_at_k_seeds.csv) and the critic's diagnostics per job.
    assert "per_seed" in text and "n_seeds" in text
    for column in ("value_auc_low", "value_auc_high", "bug_auc", "bug_weight_mean"):
        assert column in text, column
    assert "weights_std_last_100" in text and "verifiable_uniform" in text
    # The TD-weight view: one correct and one incorrect solution, every token coloured.
    assert "<h4>correct (" in text and "<h4>incorrect (" in text
    assert text.count("title='weight ") > 10
    # The rho1 view: every head, kept and dropped tokens.
    assert "<b>head 3</b>" in text
    assert "title='kept'" in text and "title='dropped'" in text
