"""kedro-viz: `kedro viz build` of a copy of the project, drawn by headless Chromium offline.

The site is served from 127.0.0.1 and Chromium resolves no other host
(docs/tools/lineage_screenshot.py, which also makes docs/images/lineage.png). Without Chromium
the browser test is skipped, unless WMTP_REQUIRE_CHROMIUM=1 (set by .ci/run) makes that an error.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.test_kedro_run import project  # noqa: F401 - module-scoped copy of the project
from weighted_mtp.pipeline_registry import DEFAULT_PIPELINES

PROJECT = Path(__file__).resolve().parents[1]
#: Kedro's data layers in their order, as the catalog names them.
LAYER_ORDER = [
    "raw",
    "intermediate",
    "primary",
    "model_input",
    "models",
    "model_output",
    "reporting",
]


def _load_lineage_tool() -> ModuleType:
    path = PROJECT / "docs" / "tools" / "lineage_screenshot.py"
    spec = importlib.util.spec_from_file_location("lineage_screenshot", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


lineage = _load_lineage_tool()


@pytest.fixture(scope="module")
def site(project: Path) -> Path:  # noqa: F811 - the imported fixture
    return lineage.build_viz(project)


@pytest.fixture(scope="module")
def graph(site: Path) -> dict[str, Any]:
    return json.loads((site / "api" / "main").read_text(encoding="utf-8"))


def _names(graph: dict[str, Any]) -> dict[str, str]:
    return {n["id"]: n.get("full_name") or n["name"] for n in graph["nodes"]}


def _edges(graph: dict[str, Any]) -> set[tuple[str, str]]:
    names = _names(graph)
    return {(names[e["source"]], names[e["target"]]) for e in graph["edges"]}


@pytest.mark.slow
def test_every_pipeline_is_in_the_lineage(graph: dict[str, Any]):
    assert {p["id"] for p in graph["pipelines"]} >= {"__default__", *DEFAULT_PIPELINES}
    default = {n["name"] for n in graph["nodes"] if "__default__" in (n.get("pipelines") or [])}
    assert {
        "generate_synthetic_codecontests",
        "train_tokenizer",
        "build_micro_mtp_model",
        "train_baseline",
        "train_critic",
        "train_verifiable",
        "train_verifiable_uniform",
        "tune_reference",
        "train_rho1",
        "generate_completions",
        "compare_models",
        "render_evaluation_report",
    } <= default


@pytest.mark.parametrize(
    "catalog", sorted(p.relative_to(PROJECT) for p in (PROJECT / "conf").glob("*/catalog.yml"))
)
def test_every_catalog_entry_names_a_known_layer(catalog: Path):
    # Every environment's entries, including those the default pipeline does not use.
    entries = yaml.safe_load((PROJECT / catalog).read_text(encoding="utf-8"))
    layers = {
        name: ((entry.get("metadata") or {}).get("kedro-viz") or {}).get("layer")
        for name, entry in entries.items()
    }
    wrong = {name: layer for name, layer in layers.items() if layer not in LAYER_ORDER}
    assert wrong == {}, f"{catalog}: entries without a kedro-viz layer in {LAYER_ORDER}"


@pytest.mark.slow
def test_every_dataset_sits_in_a_layer_in_order(graph: dict[str, Any]):
    unlayered = sorted(
        n["name"] for n in graph["nodes"] if n["type"] == "data" and n.get("layer") is None
    )
    assert unlayered == []
    assert set(graph["layers"]) <= set(LAYER_ORDER), graph["layers"]
    assert graph["layers"] == sorted(graph["layers"], key=LAYER_ORDER.index)
    layer = {n["name"]: n["layer"] for n in graph["nodes"] if n["type"] == "data"}
    assert layer["codecontests_raw_train"] == "raw"
    assert layer["codecontests_train_metadata"] == "model_input"
    assert layer["critic_model"] == "models"
    assert layer["base_model.evaluation_samples"] == "model_output"
    assert layer["evaluation_report_html"] == "reporting"


@pytest.mark.slow
def test_hand_offs_between_pipelines_are_edges(graph: dict[str, Any]):
    edges = _edges(graph)
    expected = {
        # data_engineering -> micro_models -> training
        ("tokenizer", "micro_models.build_micro_mtp_model"),
        ("base_model", "baseline.train_baseline"),
        ("codecontests_train_metadata", "critic.train_critic"),
        # critic -> verifiable
        ("critic.train_critic", "critic_model"),
        ("critic_model", "verifiable.train_verifiable"),
        ("critic_model", "verifiable_uniform.train_verifiable_uniform"),
        # rho1's reference tuning
        ("reference_model", "rho1.tune_reference"),
        ("rho1.tune_reference", "tuned_reference_model"),
        ("tuned_reference_model", "rho1.train_rho1"),
        # every trained model is evaluated, then compared
        ("verifiable_model", "evaluation.verifiable_model.generate_completions"),
        ("rho1_model", "evaluation.rho1_model.generate_completions"),
        ("baseline_model", "evaluation.baseline_model.generate_completions"),
        ("baseline_model_evaluation_result", "report.compare_models"),
    }
    assert expected - edges == set()


#: The boxes `kedro viz` opens on: one per pipeline, the evaluation's report apart.
FIRST_VIEW_BOXES = {*DEFAULT_PIPELINES, "report"}


@pytest.mark.slow
def test_every_pipeline_is_one_box_and_every_known_name_stays(graph: dict[str, Any]):
    tree = graph["modular_pipelines"]
    names = _names(graph)
    top = {c["id"] for c in tree["__root__"]["children"] if c["type"] == "modularPipeline"}
    assert top == FIRST_VIEW_BOXES
    # Each evaluated model (conf/base's evaluation.models) is a box inside evaluation.
    evaluated = yaml.safe_load(
        (PROJECT / "conf" / "base" / "parameters_evaluation.yml").read_text(encoding="utf-8")
    )["evaluation"]["models"]
    inner = {c["id"] for c in tree["evaluation"]["children"] if c["type"] == "modularPipeline"}
    assert inner == {f"evaluation.{m}" for m in evaluated}
    assert "evaluation.rho1_model" in inner
    # The catalog names users know sit between the boxes, unprefixed.
    between = {names[c["id"]] for c in tree["__root__"]["children"] if c["type"] == "data"}
    assert {
        "tokenizer",
        "base_model",
        "baseline_model",
        "critic_model",
        "verifiable_model",
        "verifiable_uniform_model",
        "rho1_model",
        "baseline_training_history",
        "critic_training_history",
        "evaluation_report_html",
    } <= between
    # The selected problems stay inside the evaluation box.
    assert "evaluation_problems" not in between
    children = {names.get(c["id"], c["id"]) for c in tree["evaluation"]["children"]}
    assert "evaluation_problems" in children


@pytest.fixture(scope="module")
def rendered(site: Path) -> Any:
    try:
        lineage.find_chromium()
    except lineage.ChromiumNotFoundError as exc:
        # CI (and .ci/run as root) installs Chromium: there a missing browser is a failure.
        if os.environ.get("WMTP_REQUIRE_CHROMIUM") == "1" or os.environ.get("CI"):
            raise
        pytest.skip(str(exc))
    return lineage.render(site)


@pytest.mark.slow
def test_chromium_opens_on_a_handful_of_boxes_offline(rendered: Any, graph: dict[str, Any]):
    dom = rendered.dom
    by_type: dict[str, set[str]] = {}
    for node_type, name in re.findall(r'data-node-type="(\w+)" data-node-fullname="([^"]+)"', dom):
        by_type.setdefault(node_type, set()).add(name)
    # The first view: one box per pipeline (collapsed), no node of any pipeline.
    assert by_type.get("modularPipeline") == FIRST_VIEW_BOXES, sorted(by_type)
    assert "task" not in by_type, sorted(by_type.get("task", ()))
    labels = set(re.findall(r'class="pipeline-node__text"[^>]*>([^<]+)<', dom))
    assert {
        *FIRST_VIEW_BOXES,
        "base_model",
        "baseline_model",
        "critic_model",
        "verifiable_model",
        "verifiable_uniform_model",
        "rho1_model",
        "tokenizer",
        "rho1_training_history",
    } <= labels, sorted(labels)
    assert "evaluation_problems" not in labels  # inside the evaluation box
    # tokenizer: one edge per box that reads it, and the one from data_engineering.
    tokenizer = next(n["id"] for n in graph["nodes"] if n["name"] == "tokenizer")
    edges = re.findall(r'<g data-id="([^"|]+)\|([^"]+)" class="pipeline-edge"', dom)
    assert {t for s, t in edges if s == tokenizer} == {
        "micro_models",
        "baseline",
        "critic",
        "verifiable",
        "verifiable_uniform",
        "rho1",
        "evaluation",
    }
    assert {s for s, t in edges if t == tokenizer} == {"data_engineering"}
    bands = set(re.findall(r'data-id="layer-label--([a-z_]+)"', dom))
    assert {"raw", "model_input", "models", "model_output", "reporting"} <= bands
    # Only the web font may be asked for elsewhere (the page falls back to a local font).
    assert rendered.unexpected_requests == []


def test_request_filter_tells_page_requests_from_others(tmp_path: Path):
    # The offline check above is only as good as this filter: a page request to another
    # host must be reported, Chromium's own traffic (no origin) must not.
    origin = "http://127.0.0.1:8000"
    events = [
        {"type": 7, "params": {"initiator": origin, "url": origin + "/api/main"}},
        {"type": 7, "params": {"initiator": origin, "url": "https://cdn.example.com/x.js"}},
        {"type": 7, "params": {"initiator": "not an origin", "url": "https://google.com/t"}},
        {"type": 3, "params": {"initiator": origin, "url": "https://other.example.com/"}},
    ]
    netlog = tmp_path / "netlog.json"
    netlog.write_text(
        json.dumps({"constants": {"logEventTypes": {"URL_REQUEST_START_JOB": 7}}, "events": events})
    )
    assert lineage.page_requests(netlog, origin) == [
        origin + "/api/main",
        "https://cdn.example.com/x.js",
    ]
    page = lineage.Rendered(
        dom="",
        external_requests=["https://fonts.googleapis.com/css2", "https://cdn.example.com/x.js"],
    )
    assert page.unexpected_requests == ["https://cdn.example.com/x.js"]
