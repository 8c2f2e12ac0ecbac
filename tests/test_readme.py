"""Every code block of the README and of docs/*.md runs as written (issue: the first hour).

- Shell blocks (a fence with no language, or bash/sh/shell): every line that starts with `learnscope ` is
  classified in `PLANS`: run as written, run with `--dry-run` appended (studies and Slurm: their real runs
  are the slow acceptance tests tests/test_study_*.py), or run with a named substitution (a placeholder such
  as `RUN`, or the one value that would take an hour). The fast test fails when a command is missing from
  the table (or the table names one the docs dropped); the slow one executes them all, in the order of
  `DOCS`, on one fresh store in a temporary directory. A block that must not run here (a download, a
  transcript with its output) is fenced as ```text or ```console.
- Python blocks run with `exec` in such a directory, each in a fresh namespace (fast: they train for seconds).
- TOML blocks load as run configs.
"""

import re
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from learnscope.config import Config, load_run_config
from tests.conftest import REPO, cli

# The README first (its commands make the runs the others refer to), then the docs pages.
DOCS = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    *sorted((REPO / "docs").glob("*/*.md")),
]
SHELL_FENCES = ("", "bash", "sh", "shell")

AS_WRITTEN, DRY_RUN, SUBSTITUTED = "as written", "with --dry-run", "substituted"

# Placeholders whose replacement exists only once earlier commands have run (resolved in the slow test).
FIRST_DIGITS_RUN = "{hash of the run of configs/digits_mlp.toml}"
SIMULATION_RUN = "{a committee-machine simulation run fitting the moments file}"


class Plan(NamedTuple):
    """How the slow test executes one documented command."""

    how: str  # AS_WRITTEN | DRY_RUN | SUBSTITUTED
    why: str = ""
    subs: tuple[tuple[str, str], ...] = ()  # (text in the command, replacement or a placeholder above)


STUDY = Plan(DRY_RUN, "a study's real runs are the slow acceptance tests tests/test_study_*.py")

# Keyed by the exact command text (trailing comment stripped), in the order of DOCS.
PLANS: dict[str, Plan] = {
    "learnscope run configs/digits_mlp.toml": Plan(AS_WRITTEN),
    "learnscope run configs/digits_mlp.toml optim.lr=0.1 seed=1": Plan(AS_WRITTEN),
    "learnscope run configs/mnist_mlp.toml train.milestones=[5,10] train.schedule=multistep": Plan(
        AS_WRITTEN, "the MNIST test split bundled with learnscope"
    ),
    "learnscope run configs/committee_rand.toml": Plan(AS_WRITTEN),
    "learnscope run configs/committee_rand.toml method=ode": Plan(AS_WRITTEN),
    "learnscope runs ls": Plan(AS_WRITTEN),
    "learnscope runs show d68a": Plan(AS_WRITTEN, "d68a...: the run of the first command"),
    "learnscope run my.toml --plugin my_models": Plan(
        AS_WRITTEN,
        "the test writes my.toml and my_models.py (the README's plugin example) and puts it on sys.path",
    ),
    "learnscope study list": Plan(AS_WRITTEN),
    "learnscope study neural_collapse --scale tiny": STUDY,
    "learnscope study neural_collapse --axis model.depth=4,8 model.width=128 --dry-run": Plan(AS_WRITTEN),
    "learnscope sweep configs/digits_mlp.toml --grid seed=0,1,2 --grid optim.lr=0.1,0.01": Plan(AS_WRITTEN),
    "learnscope report runs --out report.html": Plan(
        AS_WRITTEN, "the studies above ran with --dry-run, so the page overlays the store's runs"
    ),
    "learnscope report runs -m test/acc --out curves.html": Plan(AS_WRITTEN),
    "learnscope report runs -m test/acc --out first_run.png": Plan(AS_WRITTEN),
    "learnscope runs collect -o table.parquet": Plan(AS_WRITTEN),
    "learnscope sweep configs/digits_mlp.toml --zip optim.lr=0.1,0.01 --zip optim.weight_decay=0,5e-4 "
    "--grid seed=0,1": Plan(AS_WRITTEN),
    "learnscope sweep configs/digits_mlp.toml --grid seed=0,1,2 --dry-run": Plan(AS_WRITTEN),
    "learnscope sweep status runs": Plan(AS_WRITTEN),
    "learnscope sweep configs/digits_mlp.toml --grid seed=0,1,2 --grid optim.lr=0.1,0.01 --estimate": Plan(
        AS_WRITTEN, "times short runs; the sweep's own runs are done by then, so it prices nothing to run"
    ),
    "learnscope sweep configs/digits_mlp.toml --grid seed=0,1,2 --retry-failed": Plan(AS_WRITTEN),
    "learnscope study neural_collapse --scale paper --executor slurm --slurm slurm_partition=gpu "
    "--slurm gpus_per_node=1 --slurm timeout_min=600": Plan(DRY_RUN, "needs a Slurm cluster and a GPU"),
    "learnscope study neural_collapse --scale tiny --executor local --workers 2": STUDY,
    "learnscope study neural_collapse --scale tiny --data mnist1d --out docs/neural_collapse_mnist1d": STUDY,
    "learnscope study neural_collapse --scale small --out docs/neural_collapse_mnist": STUDY,
    "learnscope study increasing_complexity --scale tiny": STUDY,
    "learnscope study increasing_complexity --scale small": STUDY,
    "learnscope study increasing_complexity --scale tiny --model lenet "
    "--axis distribution=real,gaussian,gmm3": STUDY,
    "learnscope data fit-clone method=gmm source.kind=mnist1d --out clone.npz --grid clone.png": Plan(
        AS_WRITTEN
    ),
    "learnscope runs export RUN --format dic": Plan(
        SUBSTITUTED, "RUN is a placeholder for a run's hash", subs=(("RUN", FIRST_DIGITS_RUN),)
    ),
    "learnscope study gaussian_equivalence --scale tiny": STUDY,
    # The one substituted value: 10^6 DCGAN samples take over an hour on 2 cores; 2,000 take seconds and
    # make a moments file of the same shapes for the `theory ode` command below.
    "learnscope theory moments generator=dcgan samples=1000000 out=dcgan.npz": Plan(
        SUBSTITUTED, "10^6 samples take over an hour", subs=(("samples=1000000", "samples=2000"),)
    ),
    # Run with its default --tmax 1000 (10^5 Euler steps at N = 3072): ~30 s, half of this test on 2 cores.
    "learnscope theory ode moments=dcgan.npz K=2 M=2 eta=0.2 init=runs/<simulation run>": Plan(
        SUBSTITUTED, "a placeholder for a simulation run", subs=(("runs/<simulation run>", SIMULATION_RUN),)
    ),
    "learnscope study gaussian_equivalence --scale small": STUDY,
    "learnscope theory double-descent kappa=100 --out curve.csv": Plan(AS_WRITTEN),
    "learnscope theory double-descent form=exact draws=200 kappa=30 sigma=0.1 l2=1e-3": Plan(AS_WRITTEN),
    "learnscope run configs/linear_teacher_gd.toml": Plan(AS_WRITTEN),
    "learnscope study double_descent --scale tiny": STUDY,
    "learnscope study double_descent --scale small --executor local --workers 2": STUDY,
    "learnscope study sphere_regimes --scale tiny": STUDY,
    "learnscope study sphere_regimes --scale small --executor local --workers 2": STUDY,
    "learnscope run configs/digits_mlp.toml model=mlp_si optim=sphere_sgd optim.elr=0.03 "
    '"probes.use=[evaluation,sphere]"': Plan(AS_WRITTEN),
}


class Block(NamedTuple):
    where: str  # file:line of the opening fence
    language: str
    text: str


def code_blocks(paths: list[Path] = DOCS) -> list[Block]:
    """Every fenced code block of `paths`, in order."""
    blocks = []
    for path in paths:
        lines, start, language = path.read_text().splitlines(), None, ""
        for i, line in enumerate(lines):
            if not line.startswith("```"):
                continue
            if start is None:
                start, language = i, line[3:].strip()
            else:
                where = f"{path.relative_to(REPO)}:{start + 1}"
                blocks.append(Block(where, language, "\n".join(lines[start + 1 : i]) + "\n"))
                start = None
        assert start is None, (
            f"{path.relative_to(REPO)}: a code fence opened at line {start + 1} never closes"
        )
    return blocks


def doc_commands() -> list[tuple[str, list[str]]]:
    """Every `learnscope ...` line of a shell block, once each (the first time it appears), in the order of
    DOCS: (its text without a trailing comment (two or more spaces, then #), its arguments after
    `learnscope` as a shell splits them)."""
    commands: dict[str, list[str]] = {}
    for block in code_blocks():
        if block.language not in SHELL_FENCES:
            continue
        for line in block.text.splitlines():
            if line.startswith("learnscope "):
                text = re.sub(r" {2,}#.*$", "", line).rstrip()
                commands.setdefault(text, shlex.split(text)[1:])
    return list(commands.items())


def test_every_documented_command_is_classified():
    commands = [text for text, _ in doc_commands()]
    assert commands, "no `learnscope ...` line in the docs' code blocks"
    unclassified = [text for text in commands if text not in PLANS]
    stale = [text for text in PLANS if text not in commands]
    assert not unclassified and not stale, (
        f"documented commands missing from PLANS: {unclassified}; PLANS entries no longer documented: {stale}"
    )
    for text, plan in PLANS.items():
        assert plan.how in (AS_WRITTEN, DRY_RUN, SUBSTITUTED), text
        assert (plan.how == SUBSTITUTED) == bool(plan.subs), text
        for old, _ in plan.subs:
            assert text.count(old) == 1, f"{old!r} must occur once in {text!r}"
        if plan.how == DRY_RUN:
            assert text.split()[1] in ("study", "sweep"), f"only study and sweep take --dry-run: {text}"
        if text.startswith("learnscope study ") and text != "learnscope study list":
            dry = plan.how == DRY_RUN or text.endswith(" --dry-run")
            assert dry, f"a study runs for minutes to hours; dry-run it: {text}"


def test_every_code_block_says_what_it_is():
    """A block runs by its language; one without a known language would silently run nothing."""
    known = {*SHELL_FENCES, "python", "toml", "text", "console", "json"}
    unknown = [f"{b.where} ```{b.language}" for b in code_blocks() if b.language not in known]
    assert not unknown, f"code blocks of an unknown language (use ```text for output): {unknown}"


def test_readme_stays_a_five_minute_read():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 220, f"README.md has {len(lines)} lines: move detail to docs/"


def test_config_files_named_by_documented_commands_exist():
    named = [(text, arg) for text, args in doc_commands() for arg in args if arg.startswith("configs/")]
    assert named
    for text, arg in named:
        assert (REPO / arg).is_file(), f"{text}: no {arg} in the repository"


def test_run_hashes_shown_in_the_docs_are_of_earlier_commands():
    """`runs show d68a` shows the run that an earlier `run configs/...` command made, and the `runs ls` output
    the README shows lists the runs of those commands: the hashes of those configs (with their overrides)."""
    hashes, shown = [], 0
    for text, args in doc_commands():
        if args[:1] == ["run"] and args[1].startswith("configs/"):
            hashes.append(load_run_config(REPO / args[1], [a for a in args[2:] if "=" in a]).run_hash())
        elif args[:2] == ["runs", "show"]:
            shown += 1
            assert any(h.startswith(args[2]) for h in hashes), f"{text}: no earlier run's hash {hashes}"
    assert shown
    readme_output = [b for b in code_blocks([REPO / "README.md"]) if b.language == "text"]
    listed = re.findall(r"\b[0-9a-f]{16}\b", "".join(b.text for b in readme_output))
    assert listed and set(listed) <= set(hashes), f"README output lists {listed}, not the runs {hashes}"


# --- executing them ----------------------------------------------------------------------------------------


def readme_block(language: str, marker: str) -> str:
    """The one README block of `language` that contains `marker`."""
    found = [b.text for b in code_blocks([REPO / "README.md"]) if b.language == language and marker in b.text]
    assert len(found) == 1, f"one {language} block of the README contains {marker!r}, not {len(found)}"
    return found[0]


def plugin_module() -> str:
    """The README's plugin example (the python block that registers the model kind `tiny`): my_models.py."""
    return readme_block("python", '@MODELS.register("tiny"')


def plugin_config() -> str:
    """The README's my.toml (the toml block whose model kind is `tiny`)."""
    return readme_block("toml", 'kind = "tiny"')


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh working directory holding a copy of the repository's configs/, the README's my.toml and
    `my_models` plugin module (importable from it), with a private cache of clone fits."""
    from learnscope.registry import MODELS, load_builtins

    load_builtins()  # before the registry is copied below: kinds registered into the copy would be lost after
    work = tmp_path / "work"
    shutil.copytree(REPO / "configs", work / "configs")
    (work / "my_models.py").write_text(plugin_module())
    (work / "my.toml").write_text(plugin_config())
    monkeypatch.chdir(work)
    # `--plugin` finds a module in the working directory (load_plugins puts it on sys.path); prepended here
    # too, so the test's own import of my_models is undone by monkeypatch afterwards.
    monkeypatch.syspath_prepend(str(work))
    monkeypatch.setenv("LEARNSCOPE_CACHE", str(tmp_path / "cache"))
    # A `my_models` imported by another test (tests/test_cli.py writes one) must not stand in for ours, and
    # ours must not register "tiny" twice or outlive this test.
    monkeypatch.delitem(sys.modules, "my_models", raising=False)
    monkeypatch.setattr(MODELS, "_entries", {k: v for k, v in MODELS._entries.items() if k != "tiny"})
    yield work
    sys.modules.pop("my_models", None)


PYTHON_BLOCKS = [b for b in code_blocks() if b.language == "python"]


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.where for b in PYTHON_BLOCKS])
def test_python_block_runs(block, workdir):
    exec(compile(block.text, block.where, "exec"), {"__name__": "__docs__"})


TOML_BLOCKS = [b for b in code_blocks() if b.language == "toml"]


@pytest.mark.parametrize("block", TOML_BLOCKS, ids=[b.where for b in TOML_BLOCKS])
def test_toml_block_is_a_valid_config(block, workdir):
    import my_models  # noqa: F401  (registers the README's model kind `tiny`, which my.toml names)

    path = workdir / "block.toml"
    path.write_text(block.text)
    load_run_config(path)


def simulation_run(text: str) -> str:
    """`runs/<hash>` of a short online-SGD simulation (method=simulation) whose initial weights fit the
    `theory ode` command `text`: the generator, D and N of its moments file, its K and M. `theory ode
    init=...` re-draws the weights from the run's config, so a few SGD steps and a small test set suffice."""
    from learnscope.runs.committee.generators import load_moments
    from learnscope.runs.committee.kinds import OnlineConfig, run_online

    option = dict(arg.partition("=")[::2] for arg in shlex.split(text) if "=" in arg)
    moments = load_moments(option["moments"])
    N, D = moments.phi.shape
    cfg = OnlineConfig(
        name="readme simulation",
        generator=(moments.meta or {}).get("generator", "dcgan"),
        D=D,
        N=N,
        K=int(option["K"]),
        M=int(option["M"]),
        eta=float(option["eta"]),
        moments="estimate",
        moment_samples=256,
        t_max=0.1,
        points=3,
        replicas=1,
        n_test=200,
    )
    return f"runs/{run_online(cfg, store='runs').path.name}"


@pytest.mark.slow
def test_documented_commands_run_in_order(workdir, capsys):
    resolvers = {
        FIRST_DIGITS_RUN: lambda text: Config.load("configs/digits_mlp.toml").run_hash(),
        SIMULATION_RUN: simulation_run,
    }
    failures, seconds = [], {}
    for text, _ in doc_commands():
        plan = PLANS[text]
        command = text
        for old, new in plan.subs:
            command = command.replace(old, resolvers[new](text) if new in resolvers else new)
        args = shlex.split(command)[1:] + (["--dry-run"] if plan.how == DRY_RUN else [])
        start = time.perf_counter()
        try:
            code, out, err = cli(*args, capsys=capsys)
        except Exception as exc:  # not a one-line user error: a bug, shown with the others
            code, out, err = None, "", f"{type(exc).__name__}: {exc}"
        seconds[text] = time.perf_counter() - start
        if code != 0:
            failures.append(
                f"$ learnscope {shlex.join(args)}\nexit code {code}\nstderr: {err.strip()}\n"
                f"stdout (end): {out[-400:].strip()}"
            )
    timing = "\n".join(f"{s:6.1f} s  {t}" for t, s in seconds.items())
    assert not failures, "\n\n".join(failures) + f"\n\nseconds per command:\n{timing}"
