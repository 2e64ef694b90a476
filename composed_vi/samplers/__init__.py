"""Samplers: pure ``init`` / ``step`` functions over NamedTuple states, one module per method.

``make(method, options, mesh)`` (or :func:`base.make_sampler`) returns a
:class:`base.Sampler` with the options, levels and mesh closed over; the target stays an
argument of ``init`` and ``step``.
"""

from composed_vi.errors import check_choice
from composed_vi.samplers import base, ctrl_vi, langevin, ode, smc
from composed_vi.samplers.base import Sampler

#: method name -> (module, options class)
METHODS = {
    "ctrl_vi": (ctrl_vi, ctrl_vi.CtrlVIOptions),
    "annealed_langevin": (langevin, langevin.LangevinOptions),
    "poe_smc": (smc, smc.SMCOptions),
    "ode": (ode, ode.ODEOptions),
}


def make(method: str, options=None, mesh=None) -> Sampler:
  """The :class:`Sampler` of ``method`` with ``options`` (its options class; ``None``: the
  defaults) closed over, on ``mesh`` (``None``: no explicit collectives)."""
  check_choice("method", method, METHODS)
  module, cls = METHODS[method]
  if options is None:
    options = cls()
  return base.make_sampler(module, options, mesh)


__all__ = ["METHODS", "Sampler", "base", "ctrl_vi", "langevin", "make", "ode", "smc"]
