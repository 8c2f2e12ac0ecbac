"""The slurm executor through submitit, without Slurm: cluster=local runs each job in its own process, as a
node would, and cluster=debug runs them in this one."""

import pickle
import sys

import pytest
import torch

from learnscope.errors import LearnscopeError
from learnscope.executors.slurm import SlurmRun, _job_error
from learnscope.executors.slurm import _job_result as _job_outcome
from learnscope.sweep import grid, run_all
from tests.conftest import cli

submitit = pytest.importorskip("submitit")

LOCAL = {"cluster": "local", "cpus_per_task": 1}  # a job's threads: 1, as the serial run's below
DEBUG = {"cluster": "debug"}
CONFIG = 'device = "cpu"\n[model]\nkind = "mlp"\nwidth = 32\n[train]\nsteps = 30\n[probes]\npoints = 5\n'


def test_jobs_in_their_own_processes_give_the_serial_results(tmp_path, tiny_config):
    cfgs = grid(tiny_config, {"seed": [0, 1]})
    assert [pickle.loads(pickle.dumps(c)) for c in cfgs] == cfgs  # what a job receives
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the jobs' thread count: same sums, same bits
    try:
        serial = run_all(cfgs, tmp_path / "serial", quiet=True)
    finally:
        torch.set_num_threads(threads)
    jobs = run_all(cfgs, tmp_path / "slurm", executor="slurm", slurm=LOCAL, quiet=True)
    assert [o.status for o in jobs] == ["done", "done"]
    assert [o.config for o in jobs] == cfgs and jobs[0].path.parent == tmp_path / "slurm"
    for a, b in zip(serial, jobs, strict=True):
        assert a.path.name == b.path.name
        assert (a.path / "metrics.jsonl").read_bytes() == (b.path / "metrics.jsonl").read_bytes()
    assert len(list((tmp_path / "slurm" / "slurm").glob("*_log.out"))) == 2  # submitit's logs, in the store


def test_a_failed_run_does_not_stop_the_array_and_only_unfinished_runs_are_resubmitted(
    tmp_path, tiny_config, monkeypatch
):
    submitted = []
    call = SlurmRun.__call__
    monkeypatch.setattr(
        SlurmRun, "__call__", lambda self, cfg, *a: submitted.append(cfg) or call(self, cfg, *a)
    )
    bad = tiny_config.override("data=mnist", f"data.path={tmp_path}/missing")
    outcomes = run_all([bad, tiny_config], tmp_path, executor="slurm", slurm=DEBUG, quiet=True)
    assert [o.status for o in outcomes] == ["failed", "done"] and submitted == [bad, tiny_config]
    assert "missing" in outcomes[0].error and "\n" not in outcomes[0].error
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("metrics.jsonl")}
    again = run_all([bad, tiny_config], tmp_path, executor="slurm", slurm=DEBUG, quiet=True)
    assert [o.status for o in again] == ["failed", "done"] and again[0].error == outcomes[0].error
    assert submitted == [bad, tiny_config]  # both read back: the failed run is reported, not retried
    retried = run_all(
        [bad, tiny_config], tmp_path, executor="slurm", slurm=DEBUG, quiet=True, retry_failed=True
    )
    assert [o.status for o in retried] == ["failed", "done"]
    assert submitted == [bad, tiny_config, bad]  # with --retry-failed the failed one alone is submitted
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("metrics.jsonl")} == stamps


def test_a_job_that_raises_or_is_lost_is_a_failed_outcome_on_one_line(tmp_path, tiny_config):
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="local")
    outcome = _job_outcome(executor.submit(int, "eleven"), tiny_config, str(tmp_path))
    assert outcome.status == "failed" and outcome.config is tiny_config and outcome.path is None
    assert "ValueError: invalid literal for int()" in outcome.error and "\n" not in outcome.error
    lost = submitit.core.utils.UncompletedJobError(
        "Job 7_1 (task: 0) with path /x/7_1_0_result.pkl\n"
        "has not produced any output (state: OUT_OF_MEMORY)\n"
        "Error stream produced:\n----------------------------------------\nKilled\n"
    )
    assert _job_error(lost) == (
        "UncompletedJobError: Job 7_1 (task: 0) with path /x/7_1_0_result.pkl "
        "has not produced any output (state: OUT_OF_MEMORY)"
    )


def test_a_preempted_or_timed_out_job_is_requeued_as_the_same_call(tmp_path, tiny_config):
    job = SlurmRun()
    requeued = job.checkpoint(tiny_config, str(tmp_path), 0)
    assert isinstance(requeued, submitit.helpers.DelayedSubmission)
    assert (
        requeued.function is job and requeued.args == (tiny_config, str(tmp_path), 0) and not requeued.kwargs
    )
    requeued.dump(tmp_path / "requeued.pkl")  # as submitit stores it for the next start of the job
    restarted = submitit.helpers.DelayedSubmission.load(tmp_path / "requeued.pkl")
    assert isinstance(restarted.function, SlurmRun) and restarted.args[0] == tiny_config
    assert restarted.result().status == "done"


def test_without_submitit_the_error_says_what_to_install(tmp_path, tiny_config, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit now raises ImportError
    with pytest.raises(LearnscopeError, match=r"needs submitit: pip install 'learnscope\[slurm\]'$"):
        run_all([tiny_config], tmp_path, executor="slurm", quiet=True)
    assert not any(tmp_path.iterdir())


def test_cli_sweep_on_slurm_and_bad_executor_options_exit_2_with_one_line(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(CONFIG)
    store = tmp_path / "runs"
    slurm = ("--executor", "slurm", "--slurm", "cluster=debug")
    code, out, err = cli("sweep", config, "--grid", "seed=0,1", "-s", store, *slurm, "-q", capsys=capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["done:", "done:"]
    assert lines[0].endswith("seed=0") and lines[1].endswith("seed=1")
    cases = {
        "no KEY=VALUE": (["sweep", config, *slurm, "--slurm", "nokeyvalue"], "nokeyvalue"),
        "unknown executor": (["sweep", config, "--executor", "pbs"], "pbs"),
        "options without slurm": (["sweep", config, "--slurm", "timeout_min=9"], "--executor slurm"),
        "unknown option": (["sweep", config, "--grid", "seed=2", *slurm, "--slurm", "slurm_qeue=a"], "qeue"),
        "option of a wrong type": (
            ["sweep", config, "--grid", "seed=2", *slurm, "--slurm", "mem_gb=lots"],
            "mem",
        ),
        "study, unknown executor": (["study", "neural_collapse", "--executor", "pbs"], "pbs"),
    }
    for what, (args, culprit) in cases.items():
        code, _, err = cli(*args, "-s", store, "-q", capsys=capsys)
        lines = err.strip().splitlines()
        assert code == 2, (what, err)
        assert len(lines) == 1 and lines[0].startswith("error: ") and culprit in lines[0], (what, err)
    assert len(list(store.glob("*/config.json"))) == 2


def test_a_study_passes_its_slurm_options_to_the_sweep(tmp_path, capsys):
    store, out = tmp_path / "runs", tmp_path / "figures"
    args = ("study", "neural_collapse", "--scale", "tiny", "-s", store, "--out", out, "-q")
    short = ("train.epochs=1", "probes.points=2")  # six runs of one epoch: the wiring, not the science
    code, _, err = cli(*args, *short, "--executor", "slurm", "--slurm", "slurm_qeue=a", capsys=capsys)
    assert code == 2 and "qeue" in err  # the options reach the study's executor
    code, _, err = cli(*args, *short, "--executor", "slurm", "--slurm", "cluster=debug", capsys=capsys)
    assert code == 0, err
    assert len(list(store.glob("*/config.json"))) == 6
    assert len(list((store / "slurm").glob("*_log.out"))) == 6  # they ran as submitit jobs
