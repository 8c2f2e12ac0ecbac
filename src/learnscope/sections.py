"""The base blocks of every config: strict pydantic models, sections selected by `kind` from a registry, and
the one-line error messages. A leaf module (it imports only the registry and errors), so the registered kinds
(data, models, probes) derive their config classes from it without importing `config`.
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError
from .registry import Registry


class Strict(BaseModel):
    """Frozen, no unknown keys, finite floats: every config block derives from this."""

    # allow_inf_nan=False: an inf or nan learning rate, ridge or time passes range checks (inf > 0) and
    # only fails far into a run, so every float field of every block refuses them up front.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Self:
        """Validated, or a one-line ConfigError naming the key, what is wrong and what is allowed."""
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(format_error(exc, "", cls)) from None


class Section(Strict):
    """A config block whose variants are registered builders, selected by `kind`."""

    kind: str


# --- registered sections: base classes that builders' config classes derive from ---------------------------


class DataConfig(Section):
    """Any data source. Finite datasets derive from `FiniteDataConfig` (see data/real.py)."""


class ModelConfig(Section):
    """Any model."""


class ProbeConfig(Section):
    """Any probe."""


class OptimConfig(Section):
    """Any optimiser. Its builder gets the config and the model and returns a `torch.optim.Optimizer` whose
    param groups' `lr` the schedule scales (see optim.py for the built-in kinds)."""


# --- error reporting ---------------------------------------------------------------------------------------


def format_error(exc: ValidationError, prefix: str = "", model: type[BaseModel] | None = None) -> str:
    """One line for the first error: the dotted key, what is wrong, what is allowed."""
    err = exc.errors()[0]
    # A field of a union type (lr: a number or "1/sharpness") adds the member's tag to the location
    # ("constrained-float", "literal['1/sharpness']"); keys and list indices are identifiers and ints.
    parts = tuple(p for p in err["loc"] if isinstance(p, int) or str(p).isidentifier())
    loc = ".".join(str(p) for p in (prefix, *parts) if p != "")
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, parts[:-1]) if model else []
        hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
        return f"unknown config key {loc!r}{hint}"
    if err["type"] == "missing":
        return f"{loc}: required key is missing"
    got = err.get("input")
    shown = f" (got {got!r})" if got is not None and not isinstance(got, dict) else ""
    msg = err["msg"]
    msg = msg[0].lower() + msg[1:]
    return f"{loc}: {msg}{shown}"


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return []
    return list(model.model_fields)


def registered(registry: Registry, prefix: str, default_kind: str | None = None):
    """Before-validator that turns a dict with `kind` into the config class registered for that kind (a dict
    without one is of `default_kind`, where there is one)."""

    def validate(value: Any) -> Any:
        if isinstance(value, Section):
            return value
        if isinstance(value, str):  # shorthand: data = "digits"
            value = {"kind": value}
        if not isinstance(value, dict):
            raise ConfigError(f"{prefix}: expected a table with a 'kind' key, got {value!r}")
        if "kind" not in value and default_kind is not None:
            value = {"kind": default_kind, **value}
        if "kind" not in value:
            raise ConfigError(
                f"{prefix}.kind: required key is missing; allowed: {', '.join(registry.kinds())}"
            )
        if not isinstance(value["kind"], str):
            raise ConfigError(
                f"{prefix}.kind: expected a name, got {value['kind']!r}; "
                f"allowed: {', '.join(registry.kinds())}"
            )
        try:
            cls = registry.params(value["kind"])
        except ConfigError:
            raise ConfigError(
                f"{prefix}.kind: unknown {value['kind']!r}; allowed: {', '.join(registry.kinds())}"
            ) from None
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            raise ConfigError(format_error(exc, prefix, cls)) from None

    return validate


def registered_list(registry: Registry, prefix: str):
    one = registered(registry, prefix)

    def validate(value: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{prefix}: expected a list, got {value!r}")
        out = []
        for i, item in enumerate(value):
            try:
                out.append(one(item))
            except ConfigError as exc:
                raise ConfigError(str(exc).replace(prefix, f"{prefix}.{i}", 1)) from None
        return out

    return validate
