"""The train state and the one jitted train step."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ecgjax.objectives.base import Batch, GradCombiner, LossAux, Objective
from ecgjax.train import mesh as mesh_lib
from ecgjax.train import optim

PyTree = Any
State = dict[str, Any]


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN/inf loss or gradient; the last good checkpoint is kept."""


def check_finite(state: State, where: str) -> None:
  """Raises NonFiniteLossError if the state recorded a non-finite loss or gradient step."""
  bad = int(jax.device_get(state["first_bad_step"]))
  if bad >= 0:
    raise NonFiniteLossError(
        f"non-finite loss or gradient at step {bad} ({where}); its update was dropped and "
        "nothing after it was saved, so the newest checkpoint is the last good state. "
        "Lower config.base_lr, set config.grad_clip_norm, or check the data.")


def init_state(objective: Objective, tx: optax.GradientTransformation, batch: Batch,
               seed: int) -> State:
  """A fresh train state (params, collections, optimizer state, step, rng)."""
  init_rng, train_rng = jax.random.split(jax.random.PRNGKey(seed))
  params, collections = objective.init(init_rng, batch)
  return {
      "params": params,
      "collections": collections,
      "opt_state": tx.init(params),
      "step": jnp.zeros((), jnp.int32),
      "rng": train_rng,
      # First step whose loss or gradient was not finite (-1: none). Updates of such a
      # step are dropped, so the state always holds the last good parameters.
      "first_bad_step": jnp.full((), -1, jnp.int32),
  }


def _grads(objective: Objective, combiner: GradCombiner | None, params: PyTree,
           collections: PyTree, batch: Batch, rng: jax.Array,
           step: jax.Array) -> tuple[jax.Array, LossAux, PyTree]:
  loss_rng, comb_rng = jax.random.split(rng)
  if combiner is None:
    (loss, aux), grads = jax.value_and_grad(objective.loss, has_aux=True)(
        params, collections, batch, loss_rng, step)
    return loss, aux, grads

  def task_losses(p):
    loss, aux = objective.loss(p, collections, batch, loss_rng, step)
    if not aux.tasks:
      raise ValueError("a gradient combiner needs an objective that reports LossAux.tasks")
    return jnp.stack([aux.tasks[k] for k in sorted(aux.tasks)]), (loss, aux)

  losses, vjp_fn, (loss, aux) = jax.vjp(task_losses, params, has_aux=True)
  per_task = jax.vmap(vjp_fn)(jnp.eye(losses.shape[0], dtype=losses.dtype))[0]
  return loss, aux, combiner(per_task, comb_rng)


def make_train_step(objective: Objective, tx: optax.GradientTransformation, mesh: Mesh,
                    *, accum_steps: int = 1,
                    grad_combiner: GradCombiner | None = None) -> Callable[[State, Batch],
                                                                          tuple[State, dict]]:
  """Builds `step(state, batch) -> (state, metrics)`, not yet jitted.

  With `accum_steps > 1` the global batch is cut into that many micro-batches (each
  still spread over every device), gradients are averaged and one update is made;
  batch-level objectives (contrastive negatives) then see the global micro-batch.
  """

  def micro_batches(batch: Batch) -> Batch:
    # (B, ...) -> (A, B/A, ...) taking every A-th example, so each micro-batch keeps
    # the batch axis sharded over the same devices without moving data.
    def one(x):
      b = x.shape[0]
      if b % accum_steps:
        raise ValueError(f"global batch {b} is not divisible by grad_accum_steps {accum_steps}")
      x = x.reshape((b // accum_steps, accum_steps) + x.shape[1:])
      x = jnp.swapaxes(x, 0, 1)
      spec = P(None, mesh_lib.DATA_AXIS, *([None] * (x.ndim - 2)))
      return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
    return jax.tree.map(one, batch)

  def step_fn(state: State, batch: Batch) -> tuple[State, dict]:
    step = state["step"]
    rng = jax.random.fold_in(state["rng"], step)
    params = state["params"]
    if accum_steps == 1:
      loss, aux, grads = _grads(objective, grad_combiner, params, state["collections"],
                                batch, rng, step)
      collections = aux.collections
    else:
      def body(carry, xs):
        grad_sum, collections = carry
        micro, i = xs
        loss, aux, grads = _grads(objective, grad_combiner, params, collections, micro,
                                  jax.random.fold_in(rng, i), step)
        # A ratio loss (sum / count) weighs each micro-batch by its count: the sum of
        # count_i * grad_i / sum count_i is the gradient of the global batch's ratio.
        w = jnp.ones((), jnp.float32) if aux.weight is None else aux.weight.astype(jnp.float32)
        grad_sum = jax.tree.map(lambda s, g: s + w * g, grad_sum, grads)
        return (grad_sum, aux.collections), (loss, w, aux._replace(collections=None,
                                                                  weight=None))

      zeros = jax.tree.map(jnp.zeros_like, params)
      (grad_sum, collections), (losses, weights, auxs) = jax.lax.scan(
          body, (zeros, state["collections"]),
          (micro_batches(batch), jnp.arange(accum_steps)))
      total_w = jnp.maximum(weights.sum(), 1.0)  # counts: 0 only when nothing is masked
      grads = jax.tree.map(lambda g: g / total_w, grad_sum)
      loss = (losses * weights).sum() / total_w
      aux = jax.tree.map(lambda x: (x * weights.reshape((-1,) + (1,) * (x.ndim - 1))).sum(0)
                         / total_w, auxs)

    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    def apply(_):
      updates, opt_state = tx.update(grads, state["opt_state"], params)
      return optax.apply_updates(params, updates), opt_state, collections

    def skip(_):
      return params, state["opt_state"], state["collections"]

    # A branch, not a select over every parameter: the skip costs nothing when finite.
    new_params, opt_state, collections = jax.lax.cond(finite, apply, skip, None)
    new_state = {
        "params": new_params,
        "collections": collections,
        "opt_state": opt_state,
        "step": step + 1,
        "rng": state["rng"],
        "first_bad_step": jnp.where((state["first_bad_step"] < 0) & ~finite, step,
                                    state["first_bad_step"]),
    }
    metrics = {"loss": loss, "grad_norm": grad_norm, **aux.terms, **aux.metrics}
    return new_state, metrics

  return step_fn


def scale_updates(scales: PyTree) -> optax.GradientTransformation:
  """Multiplies each update by its scale: per-parameter learning rates after AdamW.

  AdamW's decoupled weight decay is part of its update, so it is scaled too, as a
  per-layer learning rate would scale it.
  """
  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


@dataclasses.dataclass
class Training:
  """What a run needs to train: optimizer, state layout and the jitted, donating step."""
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  params: tuple[int, int]                 # (total, trainable) parameter counts
  abstract_state: State                   # ShapeDtypeStructs of the train state
  shardings: Any                          # NamedShardings of the train state
  init: Callable[[], State]               # fresh state, created already sharded
  train_step: Callable[[State, Batch], tuple[State, dict]]
  # (fresh state, params) -> the state with those params and a fresh optimizer state for them
  # (continue pretraining from imported weights); donates the state.
  with_params: Callable[[State, PyTree], State]
  # How many times train_step was traced (compiled): the loop's recompilation guard.
  trace_count: Callable[[], int] = lambda: 0


def build_training(config: ml_collections.ConfigDict, objective: Objective, mesh: Mesh,
                   example: Batch) -> Training:
  """Optimizer, sharded state layout and the jitted step: shared by the loop and benchmarks."""
  # Optimizer labels need parameter names only: get them without allocating.
  abstract_params = jax.eval_shape(lambda: objective.init(jax.random.PRNGKey(0), example)[0])
  tx, schedule = optim.make_optimizer(config, abstract_params, objective.frozen_patterns)
  scales = objective.lr_scales(abstract_params)
  if scales is not None:
    tx = optax.chain(tx, scale_updates(scales))
  init_fn = lambda: init_state(objective, tx, example, config.seed)
  abstract_state = jax.eval_shape(init_fn)
  shardings = mesh_lib.state_shardings(abstract_state, mesh, config.param_sharding)
  step_fn = make_train_step(objective, tx, mesh, accum_steps=config.grad_accum_steps,
                            grad_combiner=objective.grad_combiner)
  traces = [0]

  def train_step(state, batch):  # the name profiles and the compilation cache show
    traces[0] += 1  # runs at trace time only: one per compilation of the step
    return step_fn(state, batch)

  jitted_step = jax.jit(
      train_step,
      donate_argnums=(0,),
      in_shardings=(shardings, mesh_lib.batch_sharding(mesh)),
      out_shardings=(shardings, mesh_lib.replicated(mesh)))
  with_params = jax.jit(lambda state, p: {**state, "params": p, "opt_state": tx.init(p)},
                        donate_argnums=(0,), in_shardings=(shardings, shardings["params"]),
                        out_shardings=shardings)
  return Training(tx, schedule, optim.count_params(abstract_params, objective.frozen_patterns),
                  abstract_state, shardings, jax.jit(init_fn, out_shardings=shardings),
                  jitted_step, with_params, trace_count=lambda: traces[0])
