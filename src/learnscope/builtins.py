"""The built-in kinds, registered by importing their modules: data sets, models, optimisers, probes, the run
kinds, the executors, and tracking's record sink (store.RECORD_SINKS, before any run writes a record).
`registry.load_builtins` imports this module, by name, before the first registry lookup; nothing else does,
so what only reads a store never imports torch."""

from . import data, executors, models, optim, probes, tracking  # noqa: F401
from .runs import dd_theory, train  # noqa: F401
from .runs.committee import kinds  # noqa: F401
