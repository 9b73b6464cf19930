"""Probes on frozen embeddings: one binary classifier per label, chosen by name.

Every probe has the signature of `fit_predict_logreg`:
`(x_train (N, D), y_train (N, L), x_test (M, D), *, seed, label_names, split,
on_single_class, groups) -> probs (M, L)`, and is registered in `PROBES` under the name the
`--probe` flag takes; a new probe is one function and one registry entry.

  logreg   StandardScaler + L2 logistic regression, C by stratified 3-fold inner CV (AUROC);
           given `groups` (patient ids of the training rows) that repeat, the inner folds
           keep each patient's records together, so C is not chosen on a patient's own twin.
  xgboost  gradient-boosted trees with the prehospital-ACS study's settings (max_depth 6,
           learning_rate 0.1, subsample 0.8, colsample_bytree 0.8); 100 trees, a common
           default the study does not state; seeded.
  mlp      StandardScaler + sklearn MLPClassifier, one hidden layer of 128 ReLU units,
           weight decay 1e-3, Adam, early stopping on a stratified 15% validation split
           (sklearn scores it by accuracy) when each class has >= 5 records.

A label with one class in the training rows cannot be fitted: `on_single_class="raise"`
(explicit splits) raises ProbeError naming it; "nan" (cross-validation folds) warns and
predicts NaN for that label, so the caller reports NaN for that fold/label.

Probes fit single-threaded (`PROBE_THREADS`); parallelism, where wanted, belongs to the
caller (splits, labels), not to BLAS inside one small fit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import importlib.util
import inspect
from typing import Any
import warnings

import numpy as np

from ecgjax import lazy
from ecgjax.eval import metrics
from ecgjax.errors import UserError

# scikit-learn on first use (ecgjax.lazy): the trainer imports this module for its probe
# evaluator, and most processes never fit one.
sk_exceptions = lazy.LazyModule("sklearn.exceptions")
linear_model = lazy.LazyModule("sklearn.linear_model")
model_selection = lazy.LazyModule("sklearn.model_selection")
neural_network = lazy.LazyModule("sklearn.neural_network")
preprocessing = lazy.LazyModule("sklearn.preprocessing")
threadpoolctl = lazy.LazyModule("threadpoolctl")

# Inverse regularisation strengths tried by the inner CV: wide enough for embeddings
# from a random-init encoder (want strong regularisation) to a converged one (want little).
LOGREG_CS: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
LOGREG_FOLDS = 3
LOGREG_MAX_ITER = 2000


# BLAS/OpenMP threads while a probe fits. One label's fit on a few thousand embeddings is
# too small to gain from threads, and on a busy machine idle-spinning OpenMP threads made
# logistic regression 8x and XGBoost 17x slower (measured on 2 shared cores).
PROBE_THREADS = 1


class ProbeError(UserError, ValueError):
  """A probe cannot be fitted on the data given (e.g. a label with one class in training)."""


class SingleClassTrainingWarning(UserWarning):
  """A label holds one class in a training split; its predictions there are NaN."""


Probe = Callable[..., np.ndarray]


def check_labels(y: np.ndarray, label_names: Sequence[str] | None, split: str) -> None:
  """Raises ProbeError naming the first label of `y` (N, L) that holds a single class."""
  y = np.asarray(y)
  if y.ndim != 2:
    raise ProbeError(f"labels of {split} must be (N, L), got shape {y.shape}")
  names = list(label_names) if label_names is not None else [str(j) for j in range(y.shape[1])]
  pos = (y > 0.5).sum(0)
  for j, name in enumerate(names):
    if pos[j] == 0 or pos[j] == y.shape[0]:
      kind = "positive" if pos[j] == 0 else "negative"
      raise ProbeError(
          f"label {name!r} has no {kind} examples in {split} ({y.shape[0]} records); a probe "
          "cannot be fitted for it: use a larger or differently selected training set")


def _logreg_cv_kwargs() -> dict:
  # sklearn >= 1.8 warns unless these are explicit; older versions lack the arguments.
  params = inspect.signature(linear_model.LogisticRegressionCV).parameters
  kw = {}
  if "l1_ratios" in params:
    kw["l1_ratios"] = (0.0,)
  if "use_legacy_attributes" in params:
    kw["use_legacy_attributes"] = False
  return kw


def inner_folds(y: np.ndarray, groups: np.ndarray | None, n_folds: int, seed: int):
  """The C search's folds: stratified, and grouped by patient when `groups` repeat (falling
  back to record folds when grouping leaves a fold with one class: too few patients)."""
  cv = model_selection.StratifiedKFold(n_folds, shuffle=True, random_state=seed)
  if groups is None or len(np.unique(groups)) == len(groups):
    return cv
  g = np.asarray(groups).astype(str)
  if len(np.unique(g)) >= n_folds:
    grouped = model_selection.StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)
    folds = list(grouped.split(np.zeros(len(y)), y, g))
    if all(0 < y[test].sum() < test.size and 0 < y[train].sum() < train.size
           for train, test in folds):
      return folds
  return cv


def _fit_one_logreg(x: np.ndarray, y: np.ndarray, seed: int, groups: np.ndarray | None = None):
  """Logistic regression on standardised x with C picked by stratified inner CV (AUROC)."""
  n_min = int(min(y.sum(), y.size - y.sum()))
  if n_min < 2:
    # Too few of one class to cross-validate: fall back to the default strength.
    return linear_model.LogisticRegression(C=1.0, max_iter=LOGREG_MAX_ITER).fit(x, y)
  cv = inner_folds(y, groups, min(LOGREG_FOLDS, n_min), seed)
  return linear_model.LogisticRegressionCV(
      Cs=list(LOGREG_CS), cv=cv, scoring="roc_auc", solver="lbfgs",
      max_iter=LOGREG_MAX_ITER, random_state=seed, **_logreg_cv_kwargs()).fit(x, y)


def _single_class_labels(y: np.ndarray) -> list[int]:
  pos = (y > 0.5).sum(0)
  return [j for j in range(y.shape[1]) if pos[j] in (0, y.shape[0])]


def _per_label(fit_one: Callable[[np.ndarray, np.ndarray, int], Any], x_train: np.ndarray,
               y_train: np.ndarray, x_test: np.ndarray, *, seed: int,
               label_names: Sequence[str] | None, split: str, on_single_class: str,
               what: str, groups: np.ndarray | None = None) -> np.ndarray:
  """Fits `fit_one(x, y01, seed)` per label and stacks its positive-class test probabilities."""
  if on_single_class not in ("raise", "nan"):
    raise ValueError(f"on_single_class must be 'raise' or 'nan', got {on_single_class!r}")
  x_train, x_test, y_train = _check_inputs(x_train, y_train, x_test)
  names = list(label_names) if label_names is not None else [
      str(j) for j in range(y_train.shape[1])]
  skip = set(_single_class_labels(y_train))
  if skip and on_single_class == "raise":
    check_labels(y_train, names, split)
  for j in sorted(skip):
    warnings.warn(f"label {names[j]!r} holds a single class in {split} "
                  f"({y_train.shape[0]} records): no probe fitted, its predictions are NaN",
                  SingleClassTrainingWarning, stacklevel=3)
  probs = np.full((x_test.shape[0], y_train.shape[1]), np.nan, np.float32)
  n_unconverged = 0
  for j in range(y_train.shape[1]):
    if j in skip:
      continue
    with warnings.catch_warnings(record=True) as caught, \
        threadpoolctl.threadpool_limits(PROBE_THREADS):
      warnings.simplefilter("always", sk_exceptions.ConvergenceWarning)
      yj = (y_train[:, j] > 0.5).astype(np.int64)
      model = (fit_one(x_train, yj, seed) if groups is None
               else fit_one(x_train, yj, seed, groups=groups))
      probs[:, j] = model.predict_proba(x_test)[:, 1]
    n_unconverged += any(issubclass(w.category, sk_exceptions.ConvergenceWarning)
                         for w in caught)
  if n_unconverged:
    warnings.warn(f"{what} did not converge for {n_unconverged} label(s); probabilities "
                  "are still usable", sk_exceptions.ConvergenceWarning, stacklevel=3)
  return probs


def fit_predict_logreg(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, *,
                       seed: int = 0, label_names: Sequence[str] | None = None,
                       split: str = "the training split", on_single_class: str = "raise",
                       groups: np.ndarray | None = None) -> np.ndarray:
  """Per label: StandardScaler + L2 logistic regression (C by 3-fold CV, grouped by `groups`
  when they repeat); test probs (M, L)."""
  x_train, x_test, _ = _check_inputs(x_train, y_train, x_test)
  # Fit on the training split only; the same scaling serves every label.
  scaler = preprocessing.StandardScaler().fit(x_train)
  return _per_label(_fit_one_logreg, scaler.transform(x_train), y_train,
                    scaler.transform(x_test), seed=seed, label_names=label_names,
                    split=split, on_single_class=on_single_class,
                    what=f"logistic regression (max_iter={LOGREG_MAX_ITER})",
                    groups=None if groups is None else np.asarray(groups))


# The prehospital-ACS study's XGBoost settings; n_estimators is not stated there.
XGB_PARAMS: dict[str, Any] = {
    "n_estimators": 100, "max_depth": 6, "learning_rate": 0.1, "subsample": 0.8,
    "colsample_bytree": 0.8, "tree_method": "hist", "n_jobs": PROBE_THREADS,
}


def _fit_one_xgboost(x: np.ndarray, y: np.ndarray, seed: int):
  try:
    import xgboost  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ProbeError("probe 'xgboost' needs the xgboost package: "
                     "pip install xgboost-cpu") from None
  return xgboost.XGBClassifier(**XGB_PARAMS, random_state=seed,
                               eval_metric="logloss").fit(x, y)


def fit_predict_xgboost(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, *,
                        seed: int = 0, label_names: Sequence[str] | None = None,
                        split: str = "the training split",
                        on_single_class: str = "raise",
                        groups: np.ndarray | None = None) -> np.ndarray:
  """Per label: XGBoost with the ACS study's settings (`XGB_PARAMS`); test probs (M, L).
  (groups: accepted for the common signature; XGBoost has no inner search.)"""
  del groups
  return _per_label(_fit_one_xgboost, x_train, y_train, x_test, seed=seed,
                    label_names=label_names, split=split, on_single_class=on_single_class,
                    what="XGBoost")


MLP_HIDDEN = (128,)
MLP_ALPHA = 1e-3
MLP_MAX_ITER = 300


def _fit_one_mlp(x: np.ndarray, y: np.ndarray, seed: int):
  n_min = int(min(y.sum(), y.size - y.sum()))
  return neural_network.MLPClassifier(
      hidden_layer_sizes=MLP_HIDDEN, alpha=MLP_ALPHA, max_iter=MLP_MAX_ITER,
      # Early stopping needs both classes in its stratified validation split.
      early_stopping=n_min >= 5, validation_fraction=0.15, n_iter_no_change=10,
      random_state=seed).fit(x, y)


def fit_predict_mlp(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, *,
                    seed: int = 0, label_names: Sequence[str] | None = None,
                    split: str = "the training split",
                    on_single_class: str = "raise",
                    groups: np.ndarray | None = None) -> np.ndarray:
  """Per label: StandardScaler + one-hidden-layer MLP with early stopping; test probs (M, L).
  (groups: accepted for the common signature; the early-stopping split is sklearn's own.)"""
  del groups
  x_train, x_test, _ = _check_inputs(x_train, y_train, x_test)
  scaler = preprocessing.StandardScaler().fit(x_train)
  return _per_label(_fit_one_mlp, scaler.transform(x_train), y_train,
                    scaler.transform(x_test), seed=seed, label_names=label_names,
                    split=split, on_single_class=on_single_class,
                    what=f"the MLP (max_iter={MLP_MAX_ITER})")


def _check_inputs(x_train, y_train, x_test) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  x_train = np.asarray(x_train, np.float64)
  x_test = np.asarray(x_test, np.float64)
  y_train = np.asarray(y_train)
  if x_train.ndim != 2 or x_test.ndim != 2 or x_train.shape[1] != x_test.shape[1]:
    raise ProbeError(f"features must be (N, D) and (M, D), got {x_train.shape} and "
                     f"{x_test.shape}")
  if y_train.ndim != 2 or y_train.shape[0] != x_train.shape[0]:
    raise ProbeError(f"training labels {y_train.shape} do not match features {x_train.shape}")
  for name, x in (("training", x_train), ("test", x_test)):
    if not np.all(np.isfinite(x)):
      raise ProbeError(f"{name} embeddings contain NaN or infinite values")
  return x_train, x_test, y_train


PROBES: dict[str, Probe] = {
    "logreg": fit_predict_logreg,
    "mlp": fit_predict_mlp,
    "xgboost": fit_predict_xgboost,
}


def get_probe(name: str) -> Probe:
  """The probe registered as `name`; the error lists the known ones."""
  if name not in PROBES:
    raise ProbeError(f"unknown probe {name!r}; known: {', '.join(sorted(PROBES))}")
  # Checked here so a script fails before embedding anything, not at the first fit.
  if name == "xgboost" and importlib.util.find_spec("xgboost") is None:
    raise ProbeError("probe 'xgboost' needs the xgboost package: pip install xgboost-cpu")
  return PROBES[name]


def check_splits(train_names: Sequence[str], test_names: Sequence[str], y_train: np.ndarray,
                 *, train_name: str = "the training split",
                 test_name: str = "the test split") -> list[str]:
  """Raises ProbeError unless both splits share labels and every training label has 2 classes.

  Cheap (labels only), so scripts can call it on source metadata before embedding anything.
  """
  names = [str(n) for n in train_names]
  other = [str(n) for n in test_names]
  if names != other:
    raise ProbeError(f"label names differ between {train_name} {names} and {test_name} "
                     f"{other}: both splits must come from the same label set")
  if not names:
    raise ProbeError(f"{train_name} has no labels to probe (an unlabelled data set?)")
  check_labels(y_train, names, train_name)
  return names


def evaluate(train: dict[str, np.ndarray], test: dict[str, np.ndarray], *,
             probe: str = "logreg", seed: int = 0, train_name: str = "the training split",
             test_name: str = "the test split") -> dict:
  """Fits `probe` on `train` embeddings, scores `test`; `metrics.summarize` plus n_train/n_test.

  `train`/`test` are embedding dicts (`ecgjax.eval.embed.EMBEDDING_KEYS`); the names are
  what error messages call the two splits (e.g. the command-line flags).
  """
  fit_predict = get_probe(probe)
  names = check_splits(train["label_names"], test["label_names"], train["labels"],
                       train_name=train_name, test_name=test_name)
  probs = fit_predict(train["embeddings"], train["labels"], test["embeddings"], seed=seed,
                      label_names=names, split=train_name, groups=train.get("patient_id"))
  summary = metrics.summarize(test["labels"], probs, names)
  summary.update(n_train=int(len(train["embeddings"])), n_test=int(len(test["embeddings"])),
                 probe=probe)
  return summary
