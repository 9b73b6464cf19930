"""The PTB-XL benchmark the field compares encoders on (SPEC section 11): every (export, task,
mode) of `python -m ecgjax.benchmark`, with the published uniform-benchmark numbers beside ours.

Tasks are `ptbxl:DIR?labels=TASK` (`ecgjax.data.formats.ptbxl.TASKS`); the split is the
benchmark's standard one (train folds 1-8, validation 9, test 10) when the data has folds 9
and 10, else (the shared subset holds folds 1-8 only) a patient-grouped CV with a validation
part of each training side, said in the results. Modes: `linear` (the logistic probe on the
pooled embedding, trained on train + validation: it tunes C by its own inner CV), `attention`
(`ecgjax.eval.attention_probe` on the token sequences, epoch chosen on validation),
`finetune` (the whole encoder and a new head, layer-wise lr decay, the validation-selected
checkpoint: `ecgjax.finetune.trainer`). Every mode scores the same test records; macro AUROC
with a patient bootstrap 95% CI.
"""

from ecgjax.benchmark.run import (MODES, PUBLISHED, QUICK_TASKS, BenchmarkError, Plan,
                                  published_for, run_benchmark)

__all__ = ["MODES", "PUBLISHED", "QUICK_TASKS", "BenchmarkError", "Plan", "published_for",
           "run_benchmark"]
