"""Evaluation of frozen encoders: embeddings, probes and their metrics."""

from ecgjax.eval.embed import EMBEDDING_KEYS, embed_source, load_embeddings, save_embeddings
from ecgjax.eval.metrics import SingleClassWarning, auprc, auroc, format_table, summarize
from ecgjax.eval.probes import (
    PROBES, ProbeError, check_splits, evaluate, fit_predict_logreg, get_probe)

__all__ = [
    "EMBEDDING_KEYS", "PROBES", "ProbeError", "SingleClassWarning", "auprc", "auroc",
    "check_splits",
    "embed_source", "evaluate", "fit_predict_logreg", "format_table", "get_probe",
    "load_embeddings", "save_embeddings", "summarize",
]
