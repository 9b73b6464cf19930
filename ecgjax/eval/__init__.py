"""Evaluation of frozen encoders: embeddings, probes, protocols, metrics and reports."""

from ecgjax.eval.embed import (
    EMBEDDING_KEYS, check_export, default_n_crops, embed_source, load_embeddings,
    save_embeddings)
from ecgjax.eval.metrics import SingleClassWarning, auprc, auroc, format_table, summarize
from ecgjax.eval.probes import (
    PROBES, ProbeError, SingleClassTrainingWarning, check_splits, evaluate,
    fit_predict_logreg, fit_predict_mlp, fit_predict_xgboost, get_probe)

__all__ = [
    "EMBEDDING_KEYS", "PROBES", "ProbeError", "SingleClassTrainingWarning",
    "SingleClassWarning", "auprc", "auroc", "check_export", "check_splits", "default_n_crops",
    "embed_source", "evaluate", "fit_predict_logreg", "fit_predict_mlp",
    "fit_predict_xgboost", "format_table", "get_probe", "load_embeddings", "save_embeddings",
    "summarize",
]
