"""User-facing errors: one line that names the culprit. The CLI prints it and exits with code 2 (3 for a
run that another process is running, `RunBusy` and `RunningElsewhere`: their `exit_code`)."""


class LearnscopeError(Exception):
    """Bad input from the user (config, data file, checkpoint, run store), reported as one line."""


class ConfigError(LearnscopeError):
    """An unknown key, a wrong type or an out-of-range value in a config or an override."""


class DataError(LearnscopeError):
    """A missing, truncated or malformed data file, or data that does not fit the model."""


class StoreError(LearnscopeError):
    """A run directory that cannot be used: locked, foreign checkpoint, unreadable files."""


class RunBusy(StoreError):
    """The run is held by another process (its lock is taken): not a failure of the run, which goes on
    there. The CLI exits with code 3, as for `RunningElsewhere`."""

    exit_code = 3


class RunningElsewhere(LearnscopeError):
    """Runs of a sweep or study that another process is running (their locks are held), where no run
    failed: not every run is here yet. The CLI exits with code 3, so a script can tell it from a failure."""

    exit_code = 3


class Terminated(BaseException):
    """SIGTERM, raised in the main thread by the CLI's handler: a run stops as after Ctrl-C, resumable."""


INTERRUPTS = (KeyboardInterrupt, Terminated)


def raise_terminated(signum, frame) -> None:
    """The SIGTERM handler of the CLI and of sweep workers: the run in progress stops as after Ctrl-C."""
    raise Terminated()


def describe_os_error(exc: OSError) -> str:
    """'<path>: <cause>' for an error of the operating system (a full disk, a read-only store, a missing
    file): the one line the CLI prints."""
    cause = exc.strerror or str(exc) or type(exc).__name__
    return f"{exc.filename}: {cause}" if exc.filename is not None else cause


def out_of_memory(exc: BaseException, doing: str) -> LearnscopeError | None:
    """The one-line error of an allocation that failed (None: `exc` is something else)."""
    text = str(exc)
    if isinstance(exc, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower():
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        return LearnscopeError(
            f"out of memory while {doing} ({first[:120]}); make the model, batch or data smaller, then "
            "run the same command again"
        )
    return None
