"""Registries map a `kind` to a builder and the pydantic class of its config section.

A new dataset, model or probe is one function and one decorator:

    @MODELS.register("my_mlp", MyMLPConfig)
    def my_mlp(cfg: MyMLPConfig, input_shape, num_classes) -> nn.Module: ...

Plugins found under the entry-point group `learnscope.plugins` (or imported with `--plugin`) register
themselves the same way when imported. This module imports nothing of the package but its errors: the
package (`learnscope/__init__.py`) imports the built-in kinds, so they are registered before any lookup.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from .errors import ConfigError

_plugins_loaded = False
_builtins_loaded = False
BUILTINS = "learnscope.builtins"  # the module whose import registers the built-in kinds


def load_builtins() -> None:
    """Register the built-in kinds, once, before the first lookup: their module is imported by name (as a
    plugin is), so this module imports nothing of the package, and `import learnscope` stays light."""
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        importlib.import_module(BUILTINS)


def load_plugins(modules: list[str] | tuple[str, ...] = ()) -> None:
    """Import plugin modules (by name: installed, on PYTHONPATH or in the current directory) and, once,
    every entry point of the group `learnscope.plugins`."""
    global _plugins_loaded
    if modules and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # a plugin next to the config, as `python -m` would find it
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"plugin module {name!r} cannot be imported: {exc}") from exc
    if not _plugins_loaded:
        _plugins_loaded = True
        for ep in entry_points(group="learnscope.plugins"):
            ep.load()


class Registry:
    """A named map kind -> (config class, builder)."""

    def __init__(self, section: str, key: str | None = None):
        self.section = section
        self.key = key or f"{section}.kind"  # what names an entry, in errors
        self._entries: dict[str, tuple[type, Callable[..., Any]]] = {}

    def register(self, kind: str, params: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
            if kind in self._entries and self._entries[kind][1] is not builder:
                raise ValueError(f"{self.section} kind {kind!r} is registered twice")
            self._entries[kind] = (params, builder)
            return builder

        return decorator

    def kinds(self) -> list[str]:
        load_builtins()
        return sorted(self._entries)

    def _entry(self, kind: str) -> tuple[type, Callable[..., Any]]:
        load_builtins()
        if kind not in self._entries:
            load_plugins()
        if kind not in self._entries:
            raise ConfigError(f"{self.key}: unknown {kind!r}; allowed: {', '.join(self.kinds())}")
        return self._entries[kind]

    def params(self, kind: str) -> type:
        return self._entry(kind)[0]

    def builder(self, kind: str) -> Callable[..., Any]:
        return self._entry(kind)[1]

    def __contains__(self, kind: str) -> bool:
        load_builtins()
        return kind in self._entries


DATA = Registry("data")
MODELS = Registry("model")
PROBES = Registry("probes")
OPTIMISERS = Registry("optim")
# Generators of committee-machine inputs x = G(c): the generator's class and a builder (D, N, L, seed,
# weights) -> an object with .sample(rng, n) -> (x, c) (and .analytic_moments() where it has closed forms).
GENERATORS = Registry("generator")
# Run kinds: a config class (kind, run_hash, to_dict, override: config.RunKindConfig) and a runner
# (cfg, store, quiet) -> a result with `status`, `path` and `records`. A config file names its kind with
# `kind = ...` (none: "train").
RUN_KINDS = Registry("kind")
# Executors: an options class (pydantic) and a function (configs, store, execution: ExecutionOptions) -> one
# RunResult per config (executors/).
EXECUTORS = Registry("executor", key="--executor")
