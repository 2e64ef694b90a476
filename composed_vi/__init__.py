"""composed_vi: controllable video synthesis by composing pretrained backbones (Ctrl-VI)."""

from composed_vi import distributed, experts, gmm, kernels, metrics, paths, samplers, schedules
from composed_vi.composition import ComposedTarget, compose
from composed_vi.errors import ConfigError
from composed_vi.samplers import METHODS
from composed_vi.sampling import build_options, sample, with_context

__all__ = [
    "ComposedTarget", "ConfigError", "METHODS", "build_options", "compose", "distributed",
    "experts", "gmm",
    "kernels", "metrics", "paths", "sample", "samplers", "schedules", "with_context",
]
__version__ = "0.1.0"
