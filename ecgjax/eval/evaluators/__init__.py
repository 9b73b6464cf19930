"""Evaluator plug-ins, one module each: `config.evals.<name>.type` is the module's name.

A module defines `Evaluator(name, config, context)` (see `base.Evaluator`): `enabled`,
`every_steps`, and `run(state, step) -> {key: value}`, logged as `eval/<name>/<key>` rows of
metrics.jsonl. `ecgjax.train.hooks.build_evaluators` finds the module by name, so adding an
evaluator is one new file here.
"""
