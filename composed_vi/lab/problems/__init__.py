"""Sampling problems built from a config: the composed target and, when known, its exact answer.

``PROBLEMS`` maps a sampling config's ``experiment`` to the builder of its :class:`Problem`.
"""

from composed_vi.lab.problems import gmm_product, wan_compose, wan_ctrl_vi, world_demo
from composed_vi.lab.problems.base import Problem, load_array

PROBLEMS = {
    "gmm_product": gmm_product.build,
    "wan_compose": wan_compose.build,
    "wan_ctrl_vi": wan_ctrl_vi.build,
    "ctrl_vi_paper": wan_ctrl_vi.build,  # configs/ctrl_vi_paper.py: the paper's backbone set
    "world_demo": world_demo.build,
}

__all__ = ["PROBLEMS", "Problem", "load_array"]
