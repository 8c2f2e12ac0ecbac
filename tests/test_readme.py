"""The README's command examples run as written (reliability issue).

Every `learnscope ...` line of the README's code blocks is classified in `PLANS`: run as written, run with
`--dry-run` appended (studies and Slurm: their real runs are the slow acceptance tests tests/test_study_*.py),
or run with a named substitution (a placeholder such as `RUN`, or the one value that would take an hour). The
fast test fails when a README command is missing from the table (or the table names one the README dropped);
the slow one executes them all in README order on a fresh store in a temporary directory.
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

AS_WRITTEN, DRY_RUN, SUBSTITUTED = "as written", "with --dry-run", "substituted"

# Placeholders whose replacement exists only once earlier commands have run (resolved in the slow test).
FIRST_DIGITS_RUN = "{hash of the run of configs/digits_mlp.toml}"
SIMULATION_RUN = "{a committee-machine simulation run fitting the moments file}"


class Plan(NamedTuple):
    """How the slow test executes one README command."""

    how: str  # AS_WRITTEN | DRY_RUN | SUBSTITUTED
    why: str = ""
    subs: tuple[tuple[str, str], ...] = ()  # (text in the README command, replacement or a placeholder above)


STUDY = Plan(DRY_RUN, "a study's real runs are the slow acceptance tests tests/test_study_*.py")

# Keyed by the exact command text (trailing comment stripped), in README order.
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
    "learnscope runs collect -o table.parquet": Plan(AS_WRITTEN),
    "learnscope sweep configs/digits_mlp.toml --zip optim.lr=0.1,0.01 --zip optim.weight_decay=0,5e-4 "
    "--grid seed=0,1": Plan(AS_WRITTEN),
    "learnscope sweep configs/digits_mlp.toml --grid seed=0,1,2 --dry-run": Plan(AS_WRITTEN),
    "learnscope sweep status runs": Plan(AS_WRITTEN),
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


def readme_commands(readme: Path = REPO / "README.md") -> list[tuple[str, list[str]]]:
    """Every line of a fenced code block that starts with `learnscope `, in README order: (its text
    without a trailing comment (two or more spaces, then #), its arguments after `learnscope` as a shell
    splits them)."""
    commands, fenced = [], False
    for line in readme.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced and line.startswith("learnscope "):
            text = re.sub(r" {2,}#.*$", "", line).rstrip()
            commands.append((text, shlex.split(text)[1:]))
    return commands


def test_every_readme_command_is_classified():
    commands = [text for text, _ in readme_commands()]
    assert commands, "no `learnscope ...` line in the README's code blocks"
    unclassified = [text for text in commands if text not in PLANS]
    stale = [text for text in PLANS if text not in commands]
    assert not unclassified and not stale, (
        f"README commands missing from PLANS: {unclassified}; PLANS entries no longer in the README: {stale}"
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


def test_config_files_named_by_readme_commands_exist():
    named = [(text, arg) for text, args in readme_commands() for arg in args if arg.startswith("configs/")]
    assert named
    for text, arg in named:
        assert (REPO / arg).is_file(), f"{text}: no {arg} in the repository"


def test_readme_hash_prefixes_name_an_earlier_run():
    """`runs show d68a` shows the run that an earlier `run configs/...` command made: the hash of that
    config (with its overrides) starts so."""
    hashes, shown = [], 0
    for text, args in readme_commands():
        if args[:1] == ["run"] and args[1].startswith("configs/"):
            hashes.append(load_run_config(REPO / args[1], [a for a in args[2:] if "=" in a]).run_hash())
        elif args[:2] == ["runs", "show"]:
            shown += 1
            assert any(h.startswith(args[2]) for h in hashes), f"{text}: no earlier run's hash {hashes}"
    assert shown


# --- executing them ----------------------------------------------------------------------------------------

# The body that stands for the `...` of the README's plugin example.
PLUGIN_BODY = (
    "    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), cfg.hidden), nn.ReLU(), "
    "nn.Linear(cfg.hidden, num_classes))"
)


def readme_plugin_example(readme: Path = REPO / "README.md") -> str:
    """The README's own plugin example ("Quick start: Python": the python block that registers the model
    kind `tiny`) as a module, its one `...` line replaced by PLUGIN_BODY and the imports that body needs."""
    blocks = re.findall(r"^```python\n(.*?)^```", readme.read_text(), flags=re.S | re.M)
    examples = [block for block in blocks if '@MODELS.register("tiny"' in block]
    assert len(examples) == 1, (
        f"one python block of the README registers model kind 'tiny', not {len(examples)}"
    )
    lines = examples[0].splitlines()
    stubs = [i for i, line in enumerate(lines) if line.strip().startswith("...")]
    assert len(stubs) == 1, "the plugin example has one `...` body"
    lines[stubs[0]] = PLUGIN_BODY
    return "import math\n\nfrom torch import nn\n\n" + "\n".join(lines) + "\n"


def test_readme_plugin_example_compiles():
    compile(readme_plugin_example(), "my_models.py", "exec")


MY_TOML = """\
name = "my-tiny"

[model]
kind = "tiny"

[train]
steps = 30
"""


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh working directory holding a copy of the repository's configs/, my.toml and the `my_models`
    plugin module (importable from it), with a private cache of clone fits."""
    from learnscope.registry import MODELS

    work = tmp_path / "work"
    shutil.copytree(REPO / "configs", work / "configs")
    (work / "my_models.py").write_text(readme_plugin_example())
    (work / "my.toml").write_text(MY_TOML)
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
def test_readme_commands_run_in_readme_order(workdir, capsys):
    resolvers = {
        FIRST_DIGITS_RUN: lambda text: Config.load("configs/digits_mlp.toml").run_hash(),
        SIMULATION_RUN: simulation_run,
    }
    failures, seconds = [], {}
    for text, _ in readme_commands():
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
