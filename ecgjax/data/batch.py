"""THE batch schema: the keys, dtypes and shapes every pipeline yields and every step reads.

Training batches (`pipeline.train_iterator`, one row per example; paired augmentation gives
rows 2i and 2i + 1 of one record):
  signal     float32 (B, leads, samples)  the contract's input, standardised
  lead_mask  float32 (B, leads)           0 marks a lead the record lacks (zeros in signal)
  labels     float32 (B, n_labels)        multi-hot (regression: targets); n_labels may be 0
  index      int     (B,)                 the record's index in its source (keys randomness)
  patient    int     (B,)                 a stable 31-bit key of the patient id (positives)
Evaluation batches (`eval_pipeline.eval_batches`) add a view axis and the record's identity:
  signal (B, views, leads, samples), view_mask float32 (B, views), record_id / patient_id str
  (B,), fold int (B,), valid bool (B,) (False for padding rows).
Image batches (ECG printouts, `ImagePreprocessing` contracts) carry `pixels` float32
(B, height, width, channels) in [0, 1] in place of `signal` and `lead_mask`, with the same labels
/ index / patient columns; their eval batches hold `pixels` (B, views = 1, H, W, C) and the eval
columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

# key -> (dtype, axes). Axis names: B batch, L leads, T samples, K labels, V views,
# H / W / C image height, width and channels.
TRAIN: dict[str, tuple[Any, tuple[str, ...]]] = {
    "signal": (np.float32, ("B", "L", "T")),
    "lead_mask": (np.float32, ("B", "L")),
    "labels": (np.float32, ("B", "K")),
    "index": (np.int64, ("B",)),
    "patient": (np.int64, ("B",)),
}
EVAL: dict[str, tuple[Any, tuple[str, ...]]] = {
    "signal": (np.float32, ("B", "V", "L", "T")),
    "view_mask": (np.float32, ("B", "V")),
    "lead_mask": (np.float32, ("B", "L")),
    "labels": (np.float32, ("B", "K")),
    "record_id": (str, ("B",)),
    "patient_id": (str, ("B",)),
    "fold": (np.int64, ("B",)),
    "index": (np.int64, ("B",)),
    "valid": (bool, ("B",)),
}
IMAGE: dict[str, tuple[Any, tuple[str, ...]]] = {
    "pixels": (np.float32, ("B", "H", "W", "C")),
    **{k: v for k, v in TRAIN.items() if k not in ("signal", "lead_mask")},
}
IMAGE_EVAL: dict[str, tuple[Any, tuple[str, ...]]] = {
    "pixels": (np.float32, ("B", "V", "H", "W", "C")),
    **{k: v for k, v in EVAL.items() if k not in ("signal", "lead_mask")},
}
SCHEMAS = {"train": TRAIN, "eval": EVAL, "image": IMAGE, "image_eval": IMAGE_EVAL}
# Integer columns are int64 on the host; `train.mesh.to_global` narrows them to int32 (jax
# runs without x64).
INT_KEYS = tuple(k for k, (dt, _) in TRAIN.items() if dt is np.int64)


MASKS = ("lead_mask", "view_mask", "valid")


def row_shapes(sizes: Mapping[str, int], kind: str = "train") -> dict[str, tuple[Any, tuple]]:
  """key -> (dtype, shape of ONE row) for the given axis sizes (every axis but B)."""
  schema = SCHEMAS[kind]
  missing = sorted({a for _, axes in schema.values() for a in axes[1:]} - set(sizes))
  if missing:
    raise ValueError(f"{kind} batch needs the sizes of axes {missing}")
  return {key: (dtype, tuple(int(sizes[a]) for a in axes[1:]))
          for key, (dtype, axes) in schema.items()}


def example_batch(sizes: Mapping[str, int], kind: str = "train", *,
                  padding: bool = False) -> dict[str, np.ndarray]:
  """An all-zero batch of `kind` with the given axis sizes (e.g. {"B": 1, "L": 12, "T": 2250,
  "K": 5}): masks are ones (what a model is initialised and a step compiled with), or with
  `padding` the rows a short last batch is filled up with (masks and `valid` 0, index -1)."""
  if "B" not in sizes:
    raise ValueError(f"{kind} batch needs the size of axis B")
  n = int(sizes["B"])
  out = {}
  for key, (dtype, shape) in row_shapes(sizes, kind).items():
    if dtype is str:
      out[key] = np.full((n,) + shape, "", dtype=object)  # object: any id length fits
    else:
      fill = (0 if padding else 1) if key in MASKS else (-1 if padding and key == "index" else 0)
      out[key] = np.full((n,) + shape, fill, dtype=dtype)
  return out


def is_image(preprocessing: Any) -> bool:
  """Whether a contract describes images (an `ImagePreprocessing`: height/width/channels)."""
  return hasattr(preprocessing, "channels") and hasattr(preprocessing, "height")


def sizes_of(preprocessing: Any, n_labels: int) -> dict[str, int]:
  """The axis sizes a contract fixes: L, T (signals) or H, W, C (images); and K."""
  if is_image(preprocessing):
    return {"H": preprocessing.height, "W": preprocessing.width, "C": preprocessing.channels,
            "K": int(n_labels)}
  return {"L": len(preprocessing.leads), "T": preprocessing.samples, "K": int(n_labels)}


def train_example(preprocessing: Any, n_labels: int, n: int = 1) -> dict[str, np.ndarray]:
  """The training batch of `n` rows the input contract `preprocessing` describes."""
  kind = "image" if is_image(preprocessing) else "train"
  return example_batch({"B": n, **sizes_of(preprocessing, n_labels)}, kind)


def model_input_key(batch: Mapping[str, Any]) -> str:
  """The key of the model's input in a batch: "pixels" (images) or "signal"."""
  return "pixels" if "pixels" in batch else "signal"


def check_batch(batch: Mapping[str, Any], kind: str = "train") -> None:
  """Raises ValueError naming the first key whose presence, rank or dtype breaks the schema,
  or whose axis disagrees with the same axis of another key."""
  schema = SCHEMAS[kind]
  sizes: dict[str, tuple[int, str]] = {}
  for key, (dtype, axes) in schema.items():
    if key not in batch:
      raise ValueError(f"{kind} batch lacks {key!r} (has {sorted(batch)})")
    x = np.asarray(batch[key])
    if x.ndim != len(axes):
      raise ValueError(f"{kind} batch[{key!r}] has shape {x.shape}; expected axes {axes}")
    kind_ok = (x.dtype.kind in "USO" if dtype is str else
               x.dtype.kind == np.dtype(dtype).kind)
    if not kind_ok:
      raise ValueError(f"{kind} batch[{key!r}] has dtype {x.dtype}; expected {np.dtype(dtype)}")
    for axis, n in zip(axes, x.shape):
      if axis in sizes and sizes[axis][0] != n:
        other_n, other = sizes[axis]
        raise ValueError(f"{kind} batch[{key!r}] axis {axis} is {n} but batch[{other!r}] "
                         f"says {other_n}")
      sizes.setdefault(axis, (n, key))
