"""bench/op_profile.py's trace aggregation: op events summed by kind per step, bookkeeping left
out (a trace written by hand, so no profiler run is needed)."""

import gzip
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "bench"))

import op_profile  # noqa: E402


def test_op_table_sums_kinds_per_step_and_drops_bookkeeping(tmp_path):
  ev = [{"ph": "X", "name": "ynn_fusion.3", "dur": 3000.0, "args": {"hlo_op": "ynn_fusion.3"}},
        {"ph": "X", "name": "ynn_fusion.17", "dur": 1000.0},
        {"ph": "X", "name": "copy_bitcast_fusion.2", "dur": 500.0},
        {"ph": "X", "name": "ThunkExecutor::Execute", "dur": 9e6},
        {"ph": "X", "name": "$api.py:2479 block_until_ready", "dur": 9e6},
        {"ph": "i", "name": "ynn_fusion.3"},  # an instant event: no duration
        {"ph": "X", "name": "end: ynn_fusion", "dur": 7.0}]
  path = tmp_path / "t.trace.json.gz"
  with gzip.open(path, "wt") as f:
    json.dump({"traceEvents": ev}, f)
  kinds, single = op_profile.op_table(str(path), steps=2)
  assert kinds == {"ynn_fusion": 2.0, "copy_bitcast_fusion": 0.25}  # ms per step
  assert single[0] == (3.0, "ynn_fusion.3", "ynn_fusion.3") and len(single) == 3
