"""The comparison report across models: tidy tables with intervals, the pass@k chart with the
pre-registered contrasts, the methods' training curves and an HTML page with the verdict.

Input is ``{model_name: result}`` where a result is what the evaluation pipeline records for
one model: ``{"summary": scoring.summarise(...), "generation": {...}}`` (``generation`` may
hold ``mean_generated_tokens``, ``acceptance_rate``, ``tokens_per_forward``). The canonical
solutions are scored like a model (named ``canonical`` by default): they are the harness
check, written in the title of each dataset's pass@1 panel, not drawn, so that each panel's
y axis is the models' own range and their differences are visible. Intervals, contrasts and
the verdict come from :mod:`weighted_mtp.evaluation.comparison`.

Modules: :mod:`.tables` (the tidy and per-dataset tables), :mod:`.figures` (the method
colours and PNG rendering every chart shares), :mod:`.pass_at_k_chart` (pass@k per model and
the contrasts as differences with intervals), :mod:`.training_curves` (the methods' training
histories) and :mod:`.html_page` (the self-contained HTML page). The names callers use are
re-exported here.

Plots use matplotlib's object API on an Agg canvas (no pyplot, no global backend switch), so
the package is safe in worker threads and leaves no figures registered.
"""

from weighted_mtp.evaluation.report.figures import METHOD_COLOURS, colours, figure_png
from weighted_mtp.evaluation.report.html_page import CONTRAST_EXTRA_SHOWN, html_table, render_html
from weighted_mtp.evaluation.report.pass_at_k_chart import plot_pass_at_k
from weighted_mtp.evaluation.report.tables import (
    OVERVIEW_COLUMNS,
    REFERENCE_MODEL,
    is_missing,
    overview_table,
    tidy_table,
)
from weighted_mtp.evaluation.report.training_curves import CURVE_PANELS, plot_training_curves

__all__ = [
    "CONTRAST_EXTRA_SHOWN",
    "CURVE_PANELS",
    "METHOD_COLOURS",
    "OVERVIEW_COLUMNS",
    "REFERENCE_MODEL",
    "colours",
    "figure_png",
    "html_table",
    "is_missing",
    "overview_table",
    "plot_pass_at_k",
    "plot_training_curves",
    "render_html",
    "tidy_table",
]
