"""Typed, frozen, validated run configuration.

A run is fully described by a `Config`: sections `data`, `model`, `optim`, `train`, `probes`, plus `seed`,
`device` and a free-text `name`. The `data`, `model` and each probe are tagged on `kind` and validated by the
class their registry holds, so plugins add variants without touching this file. A config serialises to
TOML/JSON and back unchanged; the hash of its canonical JSON (everything but `name`) names the run.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import tomli_w
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError
from .registry import DATA, MODELS, PROBES, Registry


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
            raise ConfigError(_format_error(exc, "", cls)) from None


def run_digest(body: dict[str, Any]) -> str:
    """16 hex digits of the SHA-256 of the canonical JSON of `body`: names a run (or a cache entry)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The table of a .toml or .json file; a missing, unreadable or malformed file: a one-line ConfigError."""
    path = Path(path)
    try:
        # TOML and JSON are UTF-8 by definition, whatever the locale says.
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); is it a config file?"
        ) from None
    except OSError as exc:  # a directory, no permission, an I/O error
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    try:
        return json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"config file {path} is not valid {path.suffix[1:].upper() or 'TOML'}: {exc}"
        ) from None


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


# --- error reporting ---------------------------------------------------------------------------------------


def _format_error(exc: ValidationError, prefix: str = "", model: type[BaseModel] | None = None) -> str:
    """One line for the first error: the dotted key, what is wrong, what is allowed."""
    err = exc.errors()[0]
    parts = _without_union_tags(model, err["loc"]) if model else err["loc"]
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


def _without_union_tags(model: type[BaseModel], loc: tuple) -> tuple:
    """pydantic puts the tag of a tagged union in the location (optim.sgd.lr): drop it (optim.lr)."""
    if len(loc) > 2 and loc[0] == "optim" and loc[1] in ("sgd", "adam", "adamw"):
        return (loc[0], *loc[2:])
    return tuple(loc)


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return []
    return list(model.model_fields)


def _registered(registry: Registry, prefix: str):
    """Before-validator that turns a dict with `kind` into the config class registered for that kind."""

    def validate(value: Any) -> Any:
        if isinstance(value, Section):
            return value
        if isinstance(value, str):  # shorthand: data = "digits"
            value = {"kind": value}
        if not isinstance(value, dict):
            raise ConfigError(f"{prefix}: expected a table with a 'kind' key, got {value!r}")
        if "kind" not in value:
            raise ConfigError(
                f"{prefix}.kind: required key is missing; allowed: {', '.join(registry.kinds())}"
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
            raise ConfigError(_format_error(exc, prefix, cls)) from None

    return validate


def _registered_list(registry: Registry, prefix: str):
    one = _registered(registry, prefix)

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


# --- fixed sections -----------------------------------------------------------------------------------------


class SGDConfig(Strict):
    kind: Literal["sgd"] = "sgd"
    lr: PositiveFloat = 0.05
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    nesterov: bool = False
    weight_decay: NonNegativeFloat = 5e-4
    decay_norm_and_bias: bool = True  # False: no weight decay on biases and normalisation parameters


class AdamConfig(Strict):
    kind: Literal["adam", "adamw"] = "adam"
    lr: PositiveFloat = 1e-3
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    weight_decay: NonNegativeFloat = 0.0
    decay_norm_and_bias: bool = True


def _sgd_unless_named(value: Any) -> Any:
    return {"kind": "sgd", **value} if isinstance(value, dict) and "kind" not in value else value


OptimConfig = Annotated[
    SGDConfig | AdamConfig, Field(discriminator="kind"), BeforeValidator(_sgd_unless_named)
]


class TrainConfig(Strict):
    """Length, batch, loss and learning-rate schedule. Steps are the clock; epochs are a view."""

    steps: PositiveInt | None = None  # give exactly one of steps / epochs
    epochs: PositiveFloat | None = None
    batch_size: PositiveInt | Literal["full"] = 128
    drop_last: bool = False
    loss: Literal["ce", "mse"] = "ce"  # mse: squared error to one-hot targets, mean over batch and classes
    schedule: Literal["constant", "multistep", "cosine"] = "constant"
    milestones: list[PositiveFloat] = []  # multistep: lr *= gamma at each, in `unit`
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1
    warmup: NonNegativeFloat = 0.0  # linear warm-up length, in `unit`
    unit: Literal["epochs", "steps"] = "epochs"  # unit of milestones and warmup
    schedule_per_epoch: bool = False  # hold the lr constant within an epoch (epoch-stepped schedulers)
    checkpoint_every: NonNegativeInt = 1000  # steps; 0 = only at the end
    log_every: PositiveInt = 50  # steps between reads of the loss (progress bar, divergence check)

    @model_validator(mode="after")
    def _length(self) -> TrainConfig:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of train.steps and train.epochs")
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"train.milestones must increase, got {self.milestones}")
        return self


ScheduleKind = Literal["log", "every", "epochs"]


class ProbesConfig(Strict):
    """When probes run and which. `schedule` may combine kinds, e.g. ["log", "epochs"]."""

    schedule: list[ScheduleKind] = ["log"]
    points: PositiveInt = 100  # log: about this many log-spaced steps from 1 to the last
    every: PositiveInt = 100  # every: a probe each k steps
    batch_size: PositiveInt = 1000  # evaluation batch
    use: Annotated[
        list[SerializeAsAny[ProbeConfig]], BeforeValidator(_registered_list(PROBES, "probes.use"))
    ] = Field(default_factory=lambda: _registered_list(PROBES, "probes.use")(["evaluation"]))

    @field_validator("schedule", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


def _default_data() -> DataConfig:
    return _registered(DATA, "data")({"kind": "digits"})


def _default_model() -> ModelConfig:
    return _registered(MODELS, "model")({"kind": "mlp"})


class Config(Strict):
    """One run. `Config()` is a working default: an MLP on the bundled digits."""

    name: str = ""
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: Annotated[SerializeAsAny[DataConfig], BeforeValidator(_registered(DATA, "data"))] = Field(
        default_factory=_default_data
    )
    model: Annotated[SerializeAsAny[ModelConfig], BeforeValidator(_registered(MODELS, "model"))] = Field(
        default_factory=_default_model
    )
    optim: OptimConfig = SGDConfig()
    train: TrainConfig = TrainConfig(epochs=30)
    probes: ProbesConfig = ProbesConfig()

    # -- construction ------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
        """Read a .toml or .json file, then apply dotted `key=value` overrides."""
        return cls.from_dict(apply_overrides(read_config_file(path), overrides))

    def override(self, *overrides: str) -> Config:
        return Config.from_dict(apply_overrides(self.to_dict(), overrides))

    # -- serialisation -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def run_hash(self) -> str:
        """Hash of the canonical JSON of everything that determines the results (all but `name`)."""
        return run_digest({k: v for k, v in self.to_dict().items() if k != "name"})


def parse_value(text: str) -> Any:
    """A TOML value if it parses (0.1, true, [60, 120], "x"), else the bare string (or a list of them)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if text.startswith("[") and text.endswith("]"):  # bare words in a list: [log, epochs]
            return [parse_value(item.strip()) for item in text[1:-1].split(",") if item.strip()]
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings to a nested dict (a copy). Validation happens afterwards.

    A new `kind` for a section (`model.kind=conv`, or `model=conv`) starts that section afresh, before the
    other overrides apply, so keys of the old kind do not leak into the new one."""
    raw = json.loads(json.dumps(raw))
    pairs = []
    seen: dict[str, str] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        # The same key twice would silently keep the last value, hiding a typo in a long command line;
        # `model=conv` and `model.kind=conv` set the same key.
        same = key.removesuffix(".kind") if key.removesuffix(".kind") in _TAGGED else key
        if same in seen:
            also = f" (also as {seen[same]!r})" if seen[same] != key else ""
            raise ConfigError(f"override {key!r} given twice{also}")
        seen[same] = key
        pairs.append((key, text))
    for key, text in pairs:
        section = key.removesuffix(".kind")
        old = raw.get(section)
        old_kind = old.get("kind") if isinstance(old, dict) else old
        new_kind = parse_value(text.strip())
        if section in _TAGGED and key in (section, f"{section}.kind") and new_kind != old_kind:
            raw[section] = {"kind": new_kind}
    for key, text in pairs:
        if key in _TAGGED:
            continue
        node = raw
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if isinstance(child, str) and depth == 0 and part in ("data", "model"):
                child = node[part] = {"kind": child}
            if not isinstance(child, dict):
                raise ConfigError(f"override {key!r}: {'.'.join(parts[: depth + 1])} is not a table")
            node = child
        node[parts[-1]] = parse_value(text.strip())
        rival = _EXCLUSIVE.get(key)
        if rival:  # train.steps=1000 on a config given in epochs means: now in steps
            node.pop(rival, None)
    return raw


# Sections chosen by `kind`, which `section=kind` selects as `section.kind=kind` does.
_TAGGED = ("data", "model", "optim")

# Keys of which a config holds one: an override of either replaces the other.
_EXCLUSIVE = {"train.steps": "epochs", "train.epochs": "steps"}
