"""Samplers: pure ``init`` / ``step`` functions over NamedTuple states, one module per method."""

from composed_vi.samplers import base, ctrl_vi, langevin, ode, smc

#: method name -> (module, options class)
METHODS = {
    "ctrl_vi": (ctrl_vi, ctrl_vi.CtrlVIOptions),
    "annealed_langevin": (langevin, langevin.LangevinOptions),
    "poe_smc": (smc, smc.SMCOptions),
    "ode": (ode, ode.ODEOptions),
}

__all__ = ["METHODS", "base", "ctrl_vi", "langevin", "ode", "smc"]
