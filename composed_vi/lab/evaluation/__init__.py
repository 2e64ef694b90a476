"""The comparison of methods and ablations on the built-in world against its ground truth.

``splits`` (the cases of a split), ``methods`` (the declared methods, how each samples, what a
row depends on), ``experiment`` (the resumable run, ``results.jsonl``, reuse of earlier rows)
and ``report`` (tables, plot, gallery). Statistics are :mod:`composed_vi.lab.stats`.
"""

from composed_vi.lab.evaluation.experiment import (
    RESUMABLE_FIELDS,
    read_rows,
    reuse_rows,
    run,
    validate,
)
from composed_vi.lab.evaluation.methods import (
    KINDS,
    METRICS,
    Method,
    Sampler,
    context_reward,
    method_settings,
    methods_from_config,
    sampler_options,
)
from composed_vi.lab.evaluation.splits import Case, case_example, cases

__all__ = [
    "KINDS", "METRICS", "RESUMABLE_FIELDS", "Case", "Method", "Sampler", "case_example",
    "cases", "context_reward", "method_settings", "methods_from_config",
    "read_rows", "reuse_rows", "run", "sampler_options", "validate",
]
