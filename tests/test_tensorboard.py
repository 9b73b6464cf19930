"""Metrics reach TensorBoard event files beside metrics.jsonl, readable without TensorFlow."""

import glob
import json
import os
import struct

import jax
import numpy as np

from ecgjax.train import metrics as metrics_lib


def read_scalars(directory: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value)]} of every event file under `directory` (TFRecord framing: length,
  its CRC, the Event proto, its CRC)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  out: dict[str, list[tuple[int, float]]] = {}
  for path in sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      raw = f.read()
    pos = 0
    while pos + 12 <= len(raw):
      (n,) = struct.unpack("<Q", raw[pos:pos + 8])
      event = event_pb2.Event.FromString(raw[pos + 12:pos + 12 + n])
      pos += 12 + n + 4
      for v in event.summary.value:
        out.setdefault(v.tag, []).append((event.step, v.simple_value))
  return out


def test_metric_writer_writes_jsonl_and_event_files(tmp_path):
  w = metrics_lib.MetricWriter(str(tmp_path), total_steps=20, global_batch=8)
  w.start(0)
  w.write(10, {"loss": 0.5, "lr": 1e-3, "terms": {"a": 1}, "flag": True})
  w.write(20, {"loss": 0.25, "lr": 5e-4})
  w.close()
  w.close()  # idempotent
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [10, 20]
  scalars = read_scalars(str(tmp_path / metrics_lib.TENSORBOARD_DIR))
  assert scalars["loss"] == [(10, 0.5), (20, 0.25)]
  assert [s for s, _ in scalars["lr"]] == [10, 20]
  assert "samples_per_s" in scalars and "flag" not in scalars and "terms" not in scalars


def test_pretraining_run_writes_event_files(tmp_path):
  from configs import stmem  # pylint: disable=g-import-not-at-top
  from ecgjax.train import loop  # pylint: disable=g-import-not-at-top
  c = stmem.get_config("variant=mu,runlocal")
  c.data = "synthetic:32?seed=0&fs=250&seconds=10"
  c.total_steps, c.log_every_steps, c.batch_size = 4, 2, 8
  c.vis_every_steps, c.export_at_end = 0, False
  loop.train(c, str(tmp_path), devices=jax.devices()[:1])
  scalars = read_scalars(str(tmp_path / metrics_lib.TENSORBOARD_DIR))
  assert [s for s, _ in scalars["loss"]] == [2, 4]
  jsonl = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  np.testing.assert_allclose([v for _, v in scalars["loss"]], [r["loss"] for r in jsonl],
                             rtol=1e-6)
