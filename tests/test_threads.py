"""Thread choice per fit (deepflow.threads): the CPUs a process may use (affinity, cgroup v2/v1
quota), the CPUs other processes keep busy (a real spinning process is seen), the rule, the
DEEPFLOW_THREADS override, the record on a member's run and in the certificate, the replay by
``deepflow reproduce``, and identical fits for one thread count. Slow: a real member run (fraud's
``shallow``, one epoch) carries the choice as ``train.threads_*`` params."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from deepflow import threads, training
from tests.test_progress import Tiny

SPIN = "import time\nend = time.time() + 30\nwhile time.time() < end: pass"  # stops by itself


def cgroup(tmp_path: Path, membership: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    root.mkdir(exist_ok=True)
    (tmp_path / "self_cgroup").write_text(membership)
    return root, tmp_path / "self_cgroup"


# --- CPUs available ------------------------------------------------------------------------------


def test_cgroup_v2_quota_of_the_process_or_an_ancestor(tmp_path: Path) -> None:
    root, me = cgroup(tmp_path, "0::/jobs/a\n", {"jobs/a/cpu.max": "150000 100000\n", "cpu.max": "max 100000\n"})
    assert threads.cgroup_quota(root, me) == 1.5
    root, me = cgroup(tmp_path / "2", "0::/jobs/a\n", {"jobs/a/cpu.max": "max 100000\n",
                                                       "jobs/cpu.max": "100000 100000\n"})
    assert threads.cgroup_quota(root, me) == 1.0  # the parent's limit binds its children
    root, me = cgroup(tmp_path / "3", "0::/\n", {"cpu.max": "max 100000\n"})
    assert threads.cgroup_quota(root, me) is None  # "max": no quota
    root, me = cgroup(tmp_path / "4", "0::/elsewhere\n", {"cpu.max": "50000 100000\n"})
    assert threads.cgroup_quota(root, me) == 0.5  # a container sees its own cgroup at the mount


def test_cgroup_v1_cfs_quota(tmp_path: Path) -> None:
    files = {"cpu,cpuacct/cpu.cfs_quota_us": "250000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}
    root, me = cgroup(tmp_path, "5:cpuacct,cpu:/\n3:cpuset:/\n", {**files})
    assert threads.cgroup_quota(root, me) == 2.5
    root, me = cgroup(tmp_path / "2", "1:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000"})
    assert threads.cgroup_quota(root, me) is None  # -1: unlimited
    assert threads.cgroup_quota(tmp_path / "none", tmp_path / "missing") is None


def test_available_is_the_affinity_set_lowered_by_the_quota_rounded_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "affinity", lambda: 8)
    for quota, expected in ((None, 8), (1.5, 2), (0.2, 1), (12.0, 8), (3.0, 3)):
        monkeypatch.setattr(threads, "cgroup_quota", lambda q=quota: q)
        assert threads.available() == expected, quota


def test_a_process_pinned_to_one_cpu_has_one_available() -> None:
    script = "import os; from deepflow import threads; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); " \
             "print(threads.affinity(), threads.available(), threads.choose(0).threads)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["1", "1", "1"], done.stderr[-2000:]


# --- CPUs busy elsewhere and the rule ------------------------------------------------------------


def test_own_cpu_time_is_not_counted_as_another_process() -> None:
    # 0.25 s on 2 CPUs at 100 Hz: 50 busy jiffies = 0.5 CPU-s; this process used 0.25 of them
    assert threads.others(50, 100, own_s=0.25, wall_s=0.25, cpus=2) == 1.0
    assert threads.others(50, 100, own_s=0.5, wall_s=0.25, cpus=2) == 0.0
    assert threads.others(10, 100, own_s=0.3, wall_s=0.25, cpus=2) == 0.0  # never negative
    assert threads.others(900, 100, own_s=0.0, wall_s=0.25, cpus=2) == 2.0  # never more than the CPUs


def test_busy_reads_only_the_cpus_of_the_affinity_set(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  900 0 100 900 0 0 0 0 0 0\ncpu0 10 0 5 80 5 0 0 0 0 0\ncpu1 890 0 95 20 0 0 0 0 0 0\n"
                    "intr 1 2 3\n")
    assert threads._cpu_jiffies(stat, {0}) == (15, 100)
    assert threads._cpu_jiffies(stat, {0, 1}) == (15 + 985, 100 + 1005)
    assert threads._cpu_jiffies(tmp_path / "missing", {0}) is None


def test_the_rule_gives_one_thread_per_free_cpu() -> None:
    assert [threads.rule(2, 2, busy) for busy in (0.0, 0.4, 0.6, 1.0, 1.9, 2.0)] == [2, 2, 1, 1, 1, 1]
    assert threads.rule(8, 2, 0.0) == 2  # a quota caps it
    assert threads.rule(16, 16, 3.2) == 13


def test_a_configured_count_wins_then_the_environment_then_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "available", lambda: 2)
    monkeypatch.setattr(threads, "affinity", lambda: 2)
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: 1.0)
    monkeypatch.delenv(threads.ENV, raising=False)
    assert threads.choose(2) == threads.Choice(2, 2, None, "configured")  # replayed exactly, even busy
    assert threads.choose(0) == threads.Choice(1, 2, 1.0, "auto")
    monkeypatch.setenv(threads.ENV, "2")
    assert threads.choose(0) == threads.Choice(2, 2, None, "env")
    assert threads.choose(3).threads == 3
    monkeypatch.setenv(threads.ENV, "two")
    with pytest.raises(ValueError, match="DEEPFLOW_THREADS='two'"):
        threads.choose(0)
    monkeypatch.setenv(threads.ENV, "")
    assert threads.choose(0).source == "auto"


def test_a_real_busy_process_is_seen_and_leaves_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child spinning on one core (this machine has 2; others' load only adds to it)."""
    if len(os.sched_getaffinity(0)) != 2:
        pytest.skip("written for a 2-core machine")
    monkeypatch.delenv(threads.ENV, raising=False)
    spinner = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        time.sleep(0.5)
        busy = threads.busy_elsewhere()
        choice = threads.choose(0)
    finally:
        spinner.kill()
        spinner.wait(timeout=10)
    assert busy >= 0.8, busy
    assert choice.threads == 1 and choice.source == "auto" and choice.busy_elsewhere >= 0.8, choice


# --- applied, recorded, replayed ------------------------------------------------------------------


def tiny_fit(seed_threads: int) -> tuple[torch.Tensor, threads.Choice]:
    choice = training.seed_everything(7, seed_threads)
    x = torch.randn(256, 3, generator=torch.Generator().manual_seed(0))
    module = Tiny()
    loader = training.batches(x, x.sum(-1), batch_size=32, shuffle=True, seed=7)
    training.fit(module, loader, loader, max_epochs=2, monitor="val/score", patience=2)
    return torch.cat([p.detach().flatten() for p in module.parameters()]), choice


def test_the_choice_is_applied_and_the_same_count_gives_identical_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPFLOW_ACCELERATOR", "cpu")
    monkeypatch.delenv(threads.ENV, raising=False)
    before = torch.get_num_threads()
    try:
        auto, choice = tiny_fit(0)
        assert choice.source == "auto" and torch.get_num_threads() == choice.threads == threads.in_use().threads
        monkeypatch.setenv(threads.ENV, str(choice.threads))  # what `deepflow reproduce` sets
        replayed, again = tiny_fit(0)
        assert again.threads == choice.threads and again.source == "env"
        assert torch.equal(auto, replayed)
        for n in (1, 2):
            first, second = tiny_fit(n)[0], tiny_fit(n)[0]
            assert torch.equal(first, second) and threads.in_use() == threads.Choice(n, threads.available(), None,
                                                                                      "configured")
        torch.set_num_threads(3)
        assert threads.in_use().source == "unchosen"  # changed behind its back: not claimed as chosen
    finally:
        torch.set_num_threads(before)


def test_the_certificate_records_the_members_own_count() -> None:
    from deepflow import certificate
    from deepflow.kinds.tabular.config import TabularConfig

    member = {"member": "deep", "run_id": "r", "model_uri": "m", "timings": {"training": 1.0}, "val": {},
              "test": {}, "latency_ms": {}, "size_mb": 0.1, "fit_info": {},
              "threads": {"threads": 1, "available": 2, "busy_elsewhere": 1.02, "source": "auto"}}
    validation = {"dvc_stage": "s", "data_source": "d", "data_version": "md5", "fingerprint": "f", "suite": "x",
                  "result": "passed", "expectations": 3}
    torch.set_num_threads(2)  # what the process runs now (the last member's) is not this member's
    cert = certificate.build(use_case="e", kind="tabular", version="1", member=member, cfg=TabularConfig(),
                             validation=validation, orchestration={}, pipeline_run_id="p")
    assert cert["hardware"]["torch_threads"] == 1
    assert cert["training"]["threads"] == member["threads"]
    assert json.loads(certificate.dumps(cert))["training"]["threads"]["source"] == "auto"


def test_reproduce_replays_the_recorded_count_even_on_a_busy_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    from deepflow.reproduce import _child_env

    monkeypatch.setenv(threads.ENV, "5")  # this shell's override does not leak into the rebuild
    cert = {"hardware": {"torch_threads": 2, "gpu": None},
            "training": {"numerics_env": {"DEEPFLOW_THREADS": "9", "MKL_CBWR": "AVX2"}}}
    env = _child_env({k: v for k, v in os.environ.items()}, cert)
    assert env[threads.ENV] == "2" and env["OMP_NUM_THREADS"] == "2" and env["MKL_CBWR"] == "AVX2"
    assert _child_env({"PATH": os.environ["PATH"]}, {"hardware": {}}).get(threads.ENV) is None
    spinner = subprocess.Popen([sys.executable, "-c", SPIN])  # auto would pick 1 thread now
    try:
        script = "from deepflow import threads; c = threads.use(0); import torch; print(c.threads, c.source, " \
                 "torch.get_num_threads())"
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    finally:
        spinner.kill()
        spinner.wait(timeout=10)
    assert done.stdout.split() == ["2", "env", "2"], done.stderr[-2000:]


@pytest.mark.slow
def test_a_member_run_records_the_choice(store, fast_overrides, monkeypatch: pytest.MonkeyPatch) -> None:
    from deepflow import steps, tracking

    monkeypatch.setenv("DEEPFLOW_ACCELERATOR", "cpu")
    monkeypatch.delenv(threads.ENV, raising=False)
    overrides = [*fast_overrides, "train.epochs=1"]
    parent = steps.start_pipeline("fraud", overrides, None)["run_id"]
    result = steps.train_member("fraud", overrides, "shallow", "candidate", parent, "v")
    params = tracking.client().get_run(result["run_id"]).data.params
    assert params["train.threads_source"] == "auto" and params["train.threads_available"] == str(threads.available())
    assert int(params["train.threads_used"]) == result["threads"]["threads"] >= 1
    assert float(params["train.threads_busy_elsewhere"]) == result["threads"]["busy_elsewhere"]
