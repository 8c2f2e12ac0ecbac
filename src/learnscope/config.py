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
from typing import Annotated, Any, ClassVar, Literal, Self

import tomli_w
from pydantic import (
    BeforeValidator,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SerializeAsAny,
    field_validator,
    model_validator,
)

from .errors import ConfigError
from .registry import DATA, MODELS, OPTIMISERS, PROBES, RUN_KINDS
from .sections import (  # noqa: F401 (DataConfig, ModelConfig, ProbeConfig: the bases plugins derive from)
    DataConfig,
    ModelConfig,
    OptimConfig,
    ProbeConfig,
    Section,
    Strict,
    format_error,
    registered,
    registered_list,
)


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


# --- fixed sections -----------------------------------------------------------------------------------------


class TrainConfig(Strict):
    """Length, batch, loss and learning-rate schedule. Steps are the clock; epochs are a view."""

    steps: PositiveInt | None = None  # give exactly one of steps / epochs
    epochs: PositiveFloat | None = None
    batch_size: PositiveInt | Literal["full"] = 128
    drop_last: bool = False
    # mse: squared error to one-hot labels or regression targets, averaged over outputs and the batch;
    # sse: half the squared error summed over outputs and the batch, the loss of linear teacher-student
    # theory (its gradient is Xᵀ(Xw - y) for a linear model, so lr and weight decay read as in the papers)
    loss: Literal["ce", "mse", "sse"] = "ce"
    schedule: Literal["constant", "multistep", "cosine"] = "constant"
    milestones: list[PositiveFloat] = []  # multistep: lr *= gamma at each, in `unit`
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1
    warmup: NonNegativeFloat = 0.0  # linear warm-up length, in `unit`
    unit: Literal["epochs", "steps"] = "epochs"  # unit of milestones and warmup
    schedule_per_epoch: bool = False  # hold the lr constant within an epoch (epoch-stepped schedulers)
    checkpoint_every: NonNegativeInt = 1000  # steps; 0 = only at the end
    log_every: PositiveInt = 50  # steps between reads of the loss (progress bar, divergence check)
    # How the training step computes (docs/precision.md). None is today's way (fp32, the default memory
    # format, eager) and is not written, so a config without these keys keeps its run hash; an explicit
    # default (fp32, false) reads as None, so it names the same run too. A value is part of the run's name:
    # precision changes the numbers, channels_last and compile change them only at float rounding.
    precision: Literal["fp32", "bf16", "fp16"] | None = None  # autocast of the forward; fp16: a GradScaler
    channels_last: bool | None = None  # the model and the 4-D image batches in channels_last memory format
    compile: bool | None = None  # torch.compile of the model for the training step; probes use the module

    @field_validator("precision", "channels_last", "compile")
    @classmethod
    def _default_is_none(cls, value: Any) -> Any:
        return None if value == "fp32" or value is False else value

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
        list[SerializeAsAny[ProbeConfig]], BeforeValidator(registered_list(PROBES, "probes.use"))
    ] = Field(default_factory=lambda: registered_list(PROBES, "probes.use")(["evaluation"]))

    @field_validator("schedule", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


def _default_data() -> DataConfig:
    return registered(DATA, "data")({"kind": "digits"})


def _default_optim() -> OptimConfig:
    return registered(OPTIMISERS, "optim")({"kind": "sgd"})


def _default_model() -> ModelConfig:
    return registered(MODELS, "model")({"kind": "mlp"})


class RunKindConfig(Strict):
    """The one base of every run kind's config (registry.RUN_KINDS): `Config` for training, a subclass per
    other kind (which writes every key, its `kind` too). Overrides apply alike, and the run is named by the
    hash of its canonical JSON without `HASH_EXCLUDES` (its `name`; a kind may leave out more, such as input
    paths whose contents it hashes instead)."""

    HASH_EXCLUDES: ClassVar[tuple[str, ...]] = ("name",)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def override(self, *overrides: str) -> Self:
        return type(self).from_dict(apply_overrides(self.to_dict(), overrides))

    def run_hash(self) -> str:
        """Hash of the canonical JSON of everything that determines the results."""
        return run_digest({k: v for k, v in self.to_dict().items() if k not in self.HASH_EXCLUDES})


class Config(RunKindConfig):
    """One run. `Config()` is a working default: an MLP on the bundled digits."""

    name: str = ""
    # torch seeds take 64 bits; the loader's generator is seeded at seed + a small offset
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: Annotated[SerializeAsAny[DataConfig], BeforeValidator(registered(DATA, "data"))] = Field(
        default_factory=_default_data
    )
    model: Annotated[SerializeAsAny[ModelConfig], BeforeValidator(registered(MODELS, "model"))] = Field(
        default_factory=_default_model
    )
    optim: Annotated[
        SerializeAsAny[OptimConfig], BeforeValidator(registered(OPTIMISERS, "optim", default_kind="sgd"))
    ] = Field(default_factory=_default_optim)
    train: TrainConfig = TrainConfig(epochs=30)
    probes: ProbesConfig = Field(default_factory=ProbesConfig)

    # -- construction ------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
        """Read a .toml or .json file, then apply dotted `key=value` overrides."""
        return cls.from_dict(apply_overrides(read_config_file(path), overrides))

    @property
    def kind(self) -> str:
        """The run kind (registry.RUN_KINDS): a training config is `train`, the default, and does not write
        its kind (so run hashes stay as they were)."""
        return "train"

    # -- serialisation -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


def load_run_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()):
    """The config of any run kind from a .toml/.json file and dotted overrides: its `kind` (absent: a training
    `Config`) picks the config class from `RUN_KINDS`."""
    raw = read_config_file(path)
    kinds = [o.partition("=")[2].strip() for o in overrides if o.partition("=")[0].strip() == "kind"]
    kind = kinds[-1] if kinds else raw.get("kind", "train")
    if not isinstance(kind, str):
        raise ConfigError(f"kind: expected a run kind's name, got {kind!r}")
    try:
        cls = RUN_KINDS.params(kind)
    except ConfigError:
        raise ConfigError(
            f"kind: unknown run kind {kind!r}; allowed: {', '.join(RUN_KINDS.kinds())}"
        ) from None
    merged = apply_overrides(raw, overrides)
    if cls is Config:  # a training config is the default kind and has no `kind` key of its own
        merged.pop("kind", None)
    return cls.from_dict(merged)


def parse_value(text: str) -> Any:
    """A TOML value if it parses (0.1, true, [60, 120], "x"), else the bare string (or a list of them)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if text.startswith("[") and text.endswith("]"):  # bare words in a list: [log, epochs]
            return [parse_value(item.strip()) for item in text[1:-1].split(",") if item.strip()]
        return text


def shown_value(value: Any) -> str:
    """A value as a command line gives it (what `parse_value` reads back to the same value): integers as
    integers, floats as short as they stay exact (0.0548, 1e-08), lists compact."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    if isinstance(value, list):
        return "[" + ",".join(shown_value(v) for v in value) + "]"
    return str(value)


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
