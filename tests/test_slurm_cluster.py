"""The slurm executor on a real Slurm: sbatch, squeue, scancel and scontrol of a running cluster, such as the
one-node cluster of `.ci/slurm start` (docs/cluster.md). Each job is a Python that imports torch, so these are
slow; their runs are tiny.

The tests watch their jobs' processes and files, so they need a Slurm whose one node is this machine. Where
there is none (no `sinfo`, no node up, or nodes elsewhere: a real cluster's login node), every test here skips
with the reason. Under LEARNSCOPE_SLURM=required (set by .ci/run once it has started the cluster) they fail
instead: CI cannot pass them by skipping. Each test names its jobs (`name`), so that its squeue samples see
only its own jobs, and asks for `--oversubscribe` (the partition of .ci/slurm allows 4 jobs per core): tests
running side by side, and a throttled array, are then not limited by the node's few cores."""

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import torch

from learnscope.config import load_run_config
from learnscope.sweep import grid, run_all
from tests.conftest import cli, tiny

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REQUIRED = os.environ.get("LEARNSCOPE_SLURM") == "required"
JOB = {
    "cpus_per_task": 1,
    "mem_gb": 1,
    "timeout_min": 10,
    "slurm_additional_parameters": {"oversubscribe": True},
}
CONFIG = 'device = "cpu"\n[model]\nkind = "mlp"\nwidth = 32\n[train]\nsteps = 30\n[probes]\npoints = 5\n'


@functools.cache
def slurm_problem() -> str:
    """Why this machine has no working one-node Slurm, on one line; empty when its node is up."""
    missing = [
        tool for tool in ("sinfo", "sbatch", "squeue", "scancel", "scontrol") if not shutil.which(tool)
    ]
    if missing:
        return f"no Slurm client ({', '.join(missing)} not found)"
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "submitit is not installed (pip install 'learnscope[slurm]')"
    conf = os.environ.get("SLURM_CONF")
    if conf and not Path(conf).is_file():  # sinfo would retry for a minute
        return f"SLURM_CONF={conf} is not a file"
    try:
        nodes_and_states = ["sinfo", "--noheader", "--Node", "--format", "%N %T"]
        probe = subprocess.run(nodes_and_states, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 60 s"
    if probe.returncode != 0:  # the last line says why ("sinfo: fatal: ...")
        return f"sinfo failed: {(probe.stderr.strip().splitlines() or ['?'])[-1].removeprefix('sinfo: ')}"
    nodes = dict(line.split()[:2] for line in probe.stdout.splitlines() if len(line.split()) >= 2)
    here = socket.gethostname().split(".")[0]
    if set(nodes) != {here}:  # the tests watch the jobs' processes and files here: not for a real cluster
        return f"Slurm's nodes are {', '.join(sorted(nodes)) or 'none'}, not this machine ({here}) alone"
    # up: free, busy, or finishing a job (`completing`: its epilog and cleanup, seconds; a test that starts
    # then queues its jobs behind it; CI once found the node there, from another worker's last job)
    if nodes[here] not in ("idle", "mixed", "allocated", "completing"):
        return f"the Slurm node {here} is {nodes[here]}"
    return ""


@pytest.fixture(autouse=True)
def slurm():
    problem = slurm_problem()
    if problem and REQUIRED:
        pytest.fail(f"LEARNSCOPE_SLURM=required, but {problem}")
    if problem:
        pytest.skip(f"{problem}; start a one-node Slurm with .ci/slurm start (docs/cluster.md)")


@pytest.fixture
def job_name():
    """A name for the test's jobs; whatever of them a failing test leaves in the queue is cancelled."""
    name = f"lstest-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["scancel", "--name", name], capture_output=True, timeout=60)


def squeue(name: str) -> list[tuple[str, str]]:
    """(job id, state) of the jobs named `name`; a pending array range shows as one id (`12_[2-5%2]`)."""
    out = subprocess.run(
        ["squeue", "-h", "--name", name, "-o", "%i %T"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [tuple(line.split()) for line in out.splitlines() if line.strip()]


class Sampler:
    """squeue of one job name, sampled every 0.2 s in a thread while the `with` block runs."""

    def __init__(self, name: str):
        self.name, self.samples = name, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.samples.append(squeue(self.name))
            self._stop.wait(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=60)

    @property
    def most_running(self) -> int:
        return max((sum(state == "RUNNING" for _, state in sample) for sample in self.samples), default=0)


def serial(configs, store: Path):
    """The serial executor in this process, on one thread: the jobs' thread count (cpus_per_task=1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_all(configs, store, quiet=True)
    finally:
        torch.set_num_threads(threads)


def submitted(store: Path) -> set[Path]:
    """submitit's pickled call of each job submitted from this store (`<job id>_submitted.pkl`)."""
    return set((store / "slurm").glob("*_submitted.pkl"))


def test_a_sweep_through_the_cli_is_one_job_array_with_the_serial_records(tmp_path, job_name, capsys):
    config = tmp_path / "c.toml"
    config.write_text(CONFIG)
    axes = ("--grid", "seed=0,1,2", "--grid", "optim.lr=0.05,0.1")
    options = ("cpus_per_task=1", "mem_gb=1", "timeout_min=10", f"name={job_name}")
    options += ("slurm_additional_parameters={oversubscribe=true}",)  # as JOB: see the module's docstring
    slurm = [arg for option in options for arg in ("--slurm", option)]
    store = tmp_path / "runs"
    with Sampler(job_name) as sampler:
        code, out, err = cli(
            "sweep", config, *axes, "-s", store, "--executor", "slurm", *slurm, "-q", capsys=capsys
        )
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 6 and all(line.startswith("done: ") for line in lines), out
    # one job array of six tasks; submitit's logs in the store
    logs = sorted((store / "slurm").glob("*_log.out"))
    arrays = {log.name.split("_")[0] for log in logs}
    assert len(arrays) == 1 and sorted(int(log.name.split("_")[1]) for log in logs) == list(range(6)), logs
    assert all("Job completed successfully" in log.read_text() for log in logs)
    assert sampler.most_running > 2  # the node runs more than 2 jobs at once: see the throttle test below
    # the records of the serial executor, bit for bit (same thread count: one)
    configs = grid(load_run_config(config, []), {"seed": [0, 1, 2], "optim.lr": [0.05, 0.1]})
    reference = serial(configs, tmp_path / "serial")
    assert [o.status for o in reference] == ["done"] * 6
    for outcome in reference:
        job_run = store / outcome.path.name
        assert json.loads((job_run / "status.json").read_text())["state"] == "done"
        assert (job_run / "metrics.jsonl").read_bytes() == (outcome.path / "metrics.jsonl").read_bytes()


def test_a_preempted_job_is_requeued_and_resumes_from_its_checkpoint(tmp_path, job_name):
    cfg = tiny().override("train.steps=400", "train.checkpoint_every=50", "probes.every=50")
    store = tmp_path / "runs"
    outcome: list = []

    def submit_and_wait() -> None:
        try:
            outcome.extend(
                run_all([cfg], store, executor="slurm", slurm={**JOB, "name": job_name}, quiet=True)
            )
        except Exception as exc:  # shown by the assertion below
            outcome.append(exc)

    sweep = threading.Thread(target=submit_and_wait)
    sweep.start()
    try:
        # Stop the job's Python once its first checkpoint is written, so that the signal lands mid-way
        # whatever the machine's speed, then preempt it as Slurm does: USR2 to the job's processes.
        run_dir = _wait_for(lambda: next((p.parent for p in store.glob("*/checkpoint.pt")), None), 300)
        pid = json.loads((run_dir / "status.json").read_text())["pid"]
        assert "submitit" in Path(f"/proc/{pid}/cmdline").read_text(), "not the job's process"
        os.kill(pid, signal.SIGSTOP)
        (job_id, state), *_ = squeue(job_name)
        assert state == "RUNNING"
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=60)
        os.kill(pid, signal.SIGCONT)
        # submitit's handler calls SlurmRun.checkpoint and `scontrol requeue`: the job waits to start again.
        _wait_for(lambda: squeue(job_name) == [(job_id, "PENDING")], 120)
        subprocess.run(["scontrol", "hold", job_id], check=True, timeout=60)
        _wait_for(lambda: not Path(f"/proc/{pid}").exists(), 60)
        status = json.loads((run_dir / "status.json").read_text())
        assert status["state"] == "running"  # stopped mid-way: not final
        # Mark the checkpoint's environment (a record of where the run ran, not an input of its numbers): a
        # run that resumes from this checkpoint lists it in `env_history`, one that starts afresh does not.
        checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
        step = checkpoint["step"]
        assert 0 < step < 400
        checkpoint["envs"][-1]["torch"] = "before the requeue"
        torch.save(checkpoint, run_dir / "marked.pt")
        os.replace(run_dir / "marked.pt", run_dir / "checkpoint.pt")
        subprocess.run(["scontrol", "release", job_id], check=True, timeout=60)
    except BaseException:  # end the job (stopped or held, maybe), so that the sweep returns at once
        subprocess.run(["scancel", "--name", job_name], capture_output=True, timeout=60)
        raise
    finally:
        sweep.join(timeout=400)
    assert not sweep.is_alive(), "the requeued job did not finish"
    assert [getattr(o, "status", o) for o in outcome] == ["done"] and outcome[0].path == run_dir
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "done" and status["env"]["threads"] == 1
    assert status["env_history"] == [
        {**status["env"], "torch": "before the requeue", "from_step": 0},
        {**status["env"], "from_step": step},
    ]
    (log,) = (store / "slurm").glob("*_log.out")
    text = log.read_text()
    assert "Caught signal SIGUSR2" in text and f"Requeued job {job_id}" in text, text
    assert text.count("Starting with JobEnvironment") == 2, text
    (reference,) = serial([cfg], tmp_path / "uninterrupted")
    assert (run_dir / "metrics.jsonl").read_bytes() == (reference.path / "metrics.jsonl").read_bytes()


def test_a_failed_run_leaves_the_others_done_and_a_retry_submits_only_it(tmp_path, job_name):
    good = [tiny().override("train.steps=30", f"seed={seed}") for seed in (0, 1)]
    bad = good[0].override("optim=sphere_sgd", "optim.elr=0.03")  # fails in its job: no scale-invariant layer
    configs = [good[0], bad, good[1]]
    options = {**JOB, "name": job_name}
    first = run_all(configs, tmp_path, executor="slurm", slurm=options, quiet=True)
    assert [o.status for o in first] == ["done", "failed", "done"]
    assert "scale-invariant" in first[1].error and "\n" not in first[1].error
    failed_dir = next(p for p in tmp_path.glob("*/status.json") if "failed" in p.read_text()).parent
    status = json.loads((failed_dir / "status.json").read_text())
    assert status["state"] == "failed" and status["error"] == first[1].error  # the error, in the store
    assert len({p.name.split("_")[0] for p in submitted(tmp_path)}) == 1 and len(submitted(tmp_path)) == 3
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/metrics.jsonl")}
    before = submitted(tmp_path)

    again = run_all(configs, tmp_path, executor="slurm", slurm=options, quiet=True)
    assert [o.status for o in again] == ["done", "failed", "done"] and again[1].error == first[1].error
    assert submitted(tmp_path) == before  # reported from the store: nothing submitted
    retried = run_all(configs, tmp_path, executor="slurm", slurm=options, quiet=True, retry_failed=True)
    assert [o.status for o in retried] == ["done", "failed", "done"]
    (new,) = submitted(tmp_path) - before  # one job: the failed run's
    import submitit

    assert submitit.helpers.DelayedSubmission.load(new).args[0] == bad
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/metrics.jsonl")} == stamps


def test_a_cancelled_job_is_a_failed_outcome_naming_its_state(tmp_path, job_name, capfd):
    """Without accounting (`sacct` fails, as on .ci/slurm's cluster), the sweep learns from squeue that a job
    ended without a result, instead of waiting for it forever, and does not warn about sacct at every poll."""
    endless, short = tiny().override("train.steps=1000000"), tiny().override("train.steps=30")
    outcome: list = []

    def submit_and_wait() -> None:
        options = {**JOB, "name": job_name}
        outcome.extend(run_all([endless, short], tmp_path, executor="slurm", slurm=options, quiet=True))

    sweep = threading.Thread(target=submit_and_wait, daemon=True)
    sweep.start()
    _wait_for(lambda: any("running" in p.read_text() for p in tmp_path.glob("*/status.json")), 300)
    array = squeue(job_name)[0][0].split("_")[0]
    subprocess.run(["scancel", f"{array}_0"], check=True, timeout=60)  # the endless run's job
    sweep.join(timeout=300)
    assert not sweep.is_alive(), "the sweep still waits for the cancelled job"
    assert [o.status for o in outcome] == ["failed", "done"]
    assert f"job {array}_0: " in outcome[0].error and "(state: CANCELLED)" in outcome[0].error
    assert "\n" not in outcome[0].error
    err = capfd.readouterr().err
    assert "sacct" not in err and "accounting" not in err, err


def test_array_parallelism_bounds_the_jobs_running_at_once(tmp_path, job_name):
    configs = [tiny().override("train.steps=30", f"seed={seed}") for seed in range(4)]
    options = {**JOB, "name": job_name, "slurm_array_parallelism": 2}
    with Sampler(job_name) as sampler:
        outcomes = run_all(configs, tmp_path, executor="slurm", slurm=options, quiet=True)
    assert [o.status for o in outcomes] == ["done"] * 4
    assert sampler.most_running == 2, sampler.samples  # 2 at once, never more, on a node that runs more
    throttled = [job for sample in sampler.samples for job, state in sample if state == "PENDING"]
    assert any(job.endswith("%2]") for job in throttled), sampler.samples


def _wait_for(condition, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {seconds} s: {condition}")
