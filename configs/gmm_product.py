"""Ctrl-VI on a product of Gaussian mixtures whose exact answer is known.

Launch (one process; ``--config.key=value`` overrides any field):
  python -m experiments.main --config=configs/gmm_product.py --workdir=/tmp/gmm
  python -m experiments.main --config=configs/gmm_product.py:smoke --workdir=/tmp/gmm_smoke
  python -m experiments.main --config=configs/gmm_product.py --workdir=/tmp/gmm \\
      --config.mesh=data:2,model:4 --config.num_particles=64
"""

import ml_collections

from configs import common


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.experiment = "gmm_product"
  c.seed = 0
  c.method = "ctrl_vi"  # or annealed_langevin, poe_smc, ode
  c.num_particles = 64
  c.num_levels = 128
  # Devices: particles on `data`, the latent axis on `model`; -1 fills the remaining devices.
  c.mesh = "data:-1"
  c.checkpoint_every = 16  # levels between orbax checkpoints (0: none)

  # Method options (None keeps the method's documented default; see composed_vi.samplers).
  c.sampler = common.sampler()

  # The product: two "stripe" mixtures in `dim` dimensions with four product modes, or the
  # mixtures of `means_file` (.npz: means_i (K, *shape), optional stds_i, weights_i).
  c.problem = ml_collections.ConfigDict()
  c.problem.dim = 64
  c.problem.separation = 2.0
  c.problem.std = 0.5
  c.problem.means_file = ""
  c.problem.expert_weights = ml_collections.FieldReference(None, field_type=tuple)
  c.problem.mask_file = ""  # .npy mask broadcastable to the latent shape
  c.problem.mask_expert = 1  # the expert it weights

  if arg == "smoke":
    c.num_particles = 8
    c.num_levels = 12
    c.checkpoint_every = 4
    c.problem.dim = 16
  elif arg not in (None, ""):
    raise ValueError(f"config argument: expected '' or 'smoke', got {arg!r}")
  return c
