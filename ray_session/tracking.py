"""Experiment tracking beside each trial's own TensorBoard events: MLflow, one run per trial."""

from __future__ import annotations


def logger_callbacks(mlflow_uri: str | None, experiment: str) -> list:
    """MLflow when asked (a tracking server, or a local sqlite:///path/mlflow.db: MLflow 3
    refuses its old file store); nothing otherwise."""
    if not mlflow_uri:
        return []
    from ray.air.integrations.mlflow import MLflowLoggerCallback  # [Ray]

    return [MLflowLoggerCallback(tracking_uri=mlflow_uri, experiment_name=experiment)]  # [Ray]
