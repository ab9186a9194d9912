"""Wiring of the data_engineering pipeline (see ``nodes.py`` for what each step does)."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from weighted_mtp.pipelines.data_engineering import nodes

#: Training JSONL -> its metadata table.
TRAINING_FILES = {
    "codecontests_train_jsonl@records": "codecontests_train_metadata",
    "codecontests_valid_jsonl@records": "codecontests_valid_metadata",
    "mbpp_train_jsonl": "mbpp_train_metadata",
    "mbpp_valid_jsonl": "mbpp_valid_metadata",
}
#: Every file the pipeline writes, in the manifest.
MANIFEST_INPUTS = [
    "codecontests_raw_train",
    "codecontests_raw_valid",
    "codecontests_raw_test",
    *TRAINING_FILES,
    *TRAINING_FILES.values(),
    "eval_problems_codecontests",
    "eval_problems_mbpp",
    "eval_problems_humaneval",
    "mbpp_fewshot_problems",
    "data_engineering_quarantine",
    "tokenizer",
]
CONVERSION = "params:data_engineering.conversion"


def create_pipeline(**kwargs) -> Pipeline:
    """The data_engineering pipeline."""
    return Pipeline(
        [
            Node(
                nodes.generate_synthetic_codecontests,
                "params:data_engineering.synthetic",
                ["codecontests_raw_train", "codecontests_raw_valid", "codecontests_raw_test"],
                name="generate_synthetic_codecontests",
            ),
            Node(
                nodes.convert_codecontests_training,
                ["codecontests_raw_train", "codecontests_raw_valid", CONVERSION],
                [
                    "codecontests_train_jsonl@records",
                    "codecontests_valid_jsonl@records",
                    "quarantine_codecontests",
                ],
                name="convert_codecontests_training",
            ),
            Node(
                nodes.convert_codecontests_problems,
                ["codecontests_raw_test", CONVERSION],
                ["eval_problems_codecontests", "quarantine_codecontests_test"],
                name="convert_codecontests_problems",
            ),
            Node(
                nodes.convert_mbpp_rows,
                ["mbpp_raw", CONVERSION],
                [
                    "mbpp_train_jsonl",
                    "mbpp_valid_jsonl",
                    "eval_problems_mbpp",
                    "mbpp_fewshot_problems",
                    "quarantine_mbpp",
                ],
                name="convert_mbpp",
            ),
            Node(
                nodes.convert_humaneval_rows,
                ["humaneval_raw", CONVERSION],
                ["eval_problems_humaneval", "quarantine_humaneval"],
                name="convert_humaneval",
            ),
            Node(
                nodes.collect_quarantine,
                [
                    "quarantine_codecontests",
                    "quarantine_codecontests_test",
                    "quarantine_mbpp",
                    "quarantine_humaneval",
                ],
                "data_engineering_quarantine",
                name="collect_quarantine",
            ),
            Node(
                nodes.train_tokenizer,
                [
                    "codecontests_train_jsonl@records",
                    "mbpp_train_jsonl",
                    "params:data_engineering.tokenizer",
                ],
                "tokenizer",
                name="train_tokenizer",
            ),
            *(
                Node(
                    nodes.metadata_table,
                    [jsonl, "tokenizer"],
                    table,
                    name=f"build_{table}",
                )
                for jsonl, table in TRAINING_FILES.items()
            ),
            Node(
                nodes.build_data_manifest,
                # Keyed by the dataset's name without its transcoding suffix (``@records``).
                {name.split("@")[0]: name for name in MANIFEST_INPUTS},
                "data_manifest",
                name="build_data_manifest",
            ),
        ]
    )
