"""Flow-matching training of the tiny world backbones (``experiments/train.py``).

The data set is rendered once from the world (``config.data``: a seed and a number of
examples), the model is the tiny Wan DiT of :mod:`composed_vi.world.backbones`, the loss is the
rectified-flow regression of ``x0`` (``spec.prediction = "x0"``; the expert turns it into the
velocity ``(x_t - x0) / t``), of the preconditioned ``x0`` (``"x0_precond"``: the unit-variance
target ``(x0 - c_skip x_t) / c_out`` of :func:`composed_vi.paths.preconditioning`) or of the
velocity ``eps - x0``, with ``t`` from a logit-normal,
the optimiser AdamW with warmup and cosine decay. Orbax checkpoints every ``checkpoint_every``
steps (resumed when the workdir holds one); ``loss.jsonl`` and
``loss.png``; the final backbone is exported to ``config.export_dir``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from composed_vi import io, paths
from composed_vi.errors import check_choice, check_positive_float, check_positive_int, fail
from composed_vi.lab import preemption, runner, workdir_lock
from composed_vi.lab.checkpoint import Checkpoints
from composed_vi.models.wan_expert import PREDICTIONS
from composed_vi.world import backbones as tb
from composed_vi.world import controls, dataset, scene


def spec_from_config(config) -> tb.TinySpec:
  m = config.model
  return tb.TinySpec(kind=config.kind, dim=m.dim, num_heads=m.num_heads,
                     num_layers=m.num_layers, ffn_dim=m.ffn_dim,
                     patch_size=tuple(m.patch_size), text_dim=m.text_dim,
                     vocab_size=len(controls.VOCAB), prediction=m.prediction,
                     sigma_data=m.sigma_data, camera_rope=bool(m.get("camera_rope", False)),
                     condition_skip=bool(m.get("condition_skip", False)),
                     condition_skip_init=m.get("condition_skip_init", "zero"))


def world_config(config):
  return scene.SceneConfig(num_frames=config.data.num_frames, height=config.data.height,
                           width=config.data.width)


#: The fields of the world examples that training reads (the others are not kept in memory).
TRAINING_FIELDS = ("video", "first_frame", "sim_rgba", "plucker", "caption_tokens", "intrinsics",
                   "extrinsics")


def render_dataset(config, num: int, seed: int) -> dataset.Example:
  """``num`` world examples as numpy arrays (rendered in jitted chunks); the fields training
  does not read are ``None``."""
  wcfg = world_config(config)
  chunk = 32
  keep = lambda ex: dataset.Example(**{  # noqa: E731
      f: ex[i] if f in TRAINING_FIELDS else None for i, f in enumerate(dataset.Example._fields)})
  render = jax.jit(lambda k: keep(dataset.batch(k, chunk, wcfg)))
  parts = [jax.device_get(render(jax.random.fold_in(jax.random.key(seed), i)))
           for i in range(0, num, chunk)]
  return jax.tree.map(lambda *xs: np.concatenate(xs)[:num], *parts)


def validate(config):
  check_choice("kind", config.kind, tb.KINDS)
  for name in ("num_steps", "batch_size", "checkpoint_every", "log_every"):
    check_positive_int(name, config[name])
  check_positive_int("keep_checkpoints", config.get("keep_checkpoints", 2))
  check_positive_int("data.num_examples", config.data.num_examples)
  check_positive_float("learning_rate", config.learning_rate)
  check_choice("model.prediction", config.model.prediction, PREDICTIONS)
  check_positive_float("model.sigma_data", config.model.sigma_data)
  if config.batch_size > config.data.num_examples:
    fail("batch_size", f"at most data.num_examples = {config.data.num_examples}",
         config.batch_size)
  spec = spec_from_config(config)
  spec.wan_config()
  return spec


def optimizer(config):
  """AdamW with gradient clipping, warmup and cosine decay over ``config.num_steps``."""
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, config.learning_rate, min(200, config.num_steps // 10 + 1), config.num_steps,
      config.learning_rate * 0.05)
  return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=1e-4))


def train(config, workdir: str) -> dict:
  """Trains into ``workdir`` under its lock (:mod:`composed_vi.lab.workdir_lock`), resuming
  from the newest intact checkpoint; a SIGTERM / SIGINT stops after the current step with a
  checkpoint (:class:`composed_vi.lab.preemption.PreemptedError`)."""
  spec = validate(config)
  workdir = runner.check_workdir(workdir)
  runner.check_previous_run(workdir, runner.config_dict(config))
  os.makedirs(workdir, exist_ok=True)
  with workdir_lock.hold(workdir):
    return _train(config, spec, workdir)


def _train(config, spec, workdir: str) -> dict:
  io.write_json(os.path.join(workdir, "config.json"), runner.config_dict(config))

  data = render_dataset(config, config.data.num_examples, config.data.seed)
  cond_all = None if spec.kind == "t2v" else np.asarray(tb.condition(spec, data))
  ctx_all = np.asarray(tb.text_context(spec, data.caption_tokens))
  video_all = data.video.astype(np.float32)
  # A fingerprint of the rendered data: a retraining reproduces a checkpoint only on equal data.
  data_sha256 = hashlib.sha256(video_all.tobytes()).hexdigest()
  logging.info("data: %d examples, video %s, sha256 %s", video_all.shape[0],
               video_all.shape[1:], data_sha256[:16])

  params = tb.init_params(spec, config.seed)
  fn = tb.model_fn(spec)
  opt = optimizer(config)
  opt_state = opt.init(params)

  def loss_fn(params, x0, cond, ctx, key):
    k_t, k_eps = jax.random.split(key)
    t = jax.nn.sigmoid(jax.random.normal(k_t, (x0.shape[0],)))
    eps = jax.random.normal(k_eps, x0.shape)
    tb_ = t[:, None, None, None, None]
    xt = (1 - tb_) * x0 + tb_ * eps
    inp = xt if cond is None else jnp.concatenate([xt, cond], axis=-1)
    out = fn(params, inp, 1000.0 * t, ctx).astype(jnp.float32)
    if spec.prediction == "x0_precond":  # unit-variance target (EDM's loss weighting)
      c_skip, c_out = paths.preconditioning(tb_, spec.sigma_data)
      target = (x0 - c_skip * xt) / c_out
    else:
      target = x0 if spec.prediction == "x0" else eps - x0
    return jnp.mean(jnp.square(out - target))

  # The data set lives on the device once and is an argument of the step: closed over, numpy
  # arrays become constants of the compiled program (a second copy, 7 GB resident for
  # cam2v at 2048 scenes).
  data_dev = jax.device_put(dict(video=video_all, cond=cond_all, ctx=ctx_all))

  @jax.jit
  def step(params, opt_state, key, idx, data):
    x0 = data["video"][idx]
    cond = None if data["cond"] is None else data["cond"][idx]
    ctx = data["ctx"][idx]
    loss, grads = jax.value_and_grad(loss_fn)(params, x0, cond, ctx, key)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  ckpts = Checkpoints(os.path.join(workdir, "checkpoints"),
                      max_to_keep=config.get("keep_checkpoints", 2))
  losses: list[dict] = []
  start_step = 0
  found = ckpts.restore_intact(dict(params=params, opt=opt_state))
  if found is not None:
    start_step, state, losses = found
    params, opt_state = state["params"], state["opt"]
    logging.info("resumed training at step %d", start_step)

  key = jax.random.key(config.seed)
  t0 = time.perf_counter()
  n = video_all.shape[0]
  with preemption.Watcher(ckpts.manager) as watcher:
    for i in range(start_step, config.num_steps):
      # The batch indices depend only on (seed, step): resumed runs see the same batches.
      idx = np.random.default_rng([config.seed, i]).choice(n, config.batch_size,
                                                           replace=False)
      params, opt_state, loss = step(params, opt_state, jax.random.fold_in(key, i), idx,
                                     data_dev)
      if (i + 1) % config.log_every == 0 or i + 1 == config.num_steps:
        loss = float(loss)
        losses.append(dict(step=i + 1, loss=loss, seconds=time.perf_counter() - t0))
        logging.info("step %d/%d loss %.4f (%.1f s)", i + 1, config.num_steps, loss,
                     time.perf_counter() - t0)
      stop = i + 1 < config.num_steps and watcher.should_stop(i + 1)
      if stop or (i + 1) % config.checkpoint_every == 0 or i + 1 == config.num_steps:
        ckpts.save(i + 1, dict(params=params, opt=opt_state), losses)
        io.write_text(os.path.join(workdir, "loss.jsonl"),
                      "".join(json.dumps(r) + "\n" for r in losses))
      if stop:
        ckpts.close()
        raise preemption.PreemptedError(i + 1, config.num_steps, workdir, what="step")
  ckpts.close()
  plot_losses(os.path.join(workdir, "loss.png"), losses, spec.kind)
  summary = dict(kind=spec.kind, final_loss=losses[-1]["loss"] if losses else None,
                 data_sha256=data_sha256, seconds=time.perf_counter() - t0,
                 num_steps=config.num_steps, params=int(sum(
                     np.size(v) for v in jax.tree.leaves(params))))
  if config.export_dir:
    tb.save(config.export_dir, spec, params,
            extra=dict(train=runner.config_dict(config), summary=summary,
                       spec_fields=[f.name for f in dataclasses.fields(tb.TinySpec)]))
  io.write_json(os.path.join(workdir, "summary.json"), summary)
  return summary


def export_checkpoint(workdir: str, folder: str, step: int | None = None) -> dict:
  """Exports the parameters of a training run's checkpoint (``step``, or the newest) to a
  backbone ``folder`` (``config.json`` + ``params.npz``), e.g. to evaluate a run before it
  ends; the folder records the run's config and the step. Returns the summary written."""
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  spec = validate(config)
  ckpts = Checkpoints(os.path.join(workdir, "checkpoints"))
  step = ckpts.latest_step() if step is None else int(step)
  if step is None:
    fail("workdir", "a training workdir with a checkpoint", workdir)
  params = tb.init_params(spec, config.seed)
  state, losses = ckpts.restore(dict(params=params, opt=optimizer(config).init(params)), step)
  ckpts.close()
  summary = dict(kind=spec.kind, step=step, num_steps=config.num_steps,
                 final_loss=losses[-1]["loss"] if losses else None)
  tb.save(folder, spec, state["params"], extra=dict(train=runner.config_dict(config),
                                                    summary=summary))
  return summary


def plot_losses(path: str, losses: list[dict], label: str) -> None:
  if not losses:
    return
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(5, 3))
  ax.plot([r["step"] for r in losses], [r["loss"] for r in losses])
  ax.set_xlabel("step")
  ax.set_ylabel("flow-matching loss")
  ax.set_yscale("log")
  ax.set_title(label)
  fig.tight_layout()
  io.write_figure(path, fig, dpi=100)
  plt.close(fig)
