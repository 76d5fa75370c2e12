"""The CPU thread count: cores other processes keep busy now (from /proc/stat over a short window), not the load
average, which still counts work that has just finished."""

import os
import threading

import pytest
import torch

from labelloop.ml import cpu_load
from labelloop.ml.unet import training
from labelloop.ml.unet.training import cpu_threads

TICKS = 100  # clock ticks per second and per CPU, as on Linux
WINDOW = 0.5


class FakeProc:
    """/proc/stat and /proc/self/stat before and after the window: `busy[cpu]` and `own` are the cores kept busy
    (0..1 each, `own` over all cores) during it; `sleep` is the window passing."""

    def __init__(self, busy: dict[int, float], own: float = 0.0):
        self.busy, self.own, self.elapsed = busy, own, 0.0

    def sleep(self, seconds: float) -> None:
        self.elapsed += seconds

    def read(self, path: str) -> str:
        ticks = self.elapsed * TICKS
        if path == "/proc/self/stat":
            used = 500 + round(self.own * ticks)
            return f"4242 (python3 my script) R 1 4242 4242 0 -1 4194304 9 0 0 0 {used} 7 0 0 20 0 3 0 1 2 3"
        if path != "/proc/stat":
            raise FileNotFoundError(path)
        lines, all_cpus = [], [0] * 10
        for cpu, load in self.busy.items():
            # user nice system idle iowait irq softirq steal guest guest_nice; an hour of history before the window
            fields = [9000 + round(load * ticks), 0, 1000, 350000 + round((1 - load) * ticks), 200, 0, 50, 0, 0, 0]
            all_cpus = [a + f for a, f in zip(all_cpus, fields)]
            lines.append(f"cpu{cpu} " + " ".join(map(str, fields)))
        return "\n".join([f"cpu  {' '.join(map(str, all_cpus))}", *lines, "intr 3363160 0 0", "ctxt 99"]) + "\n"


def missing(path: str) -> str:
    raise FileNotFoundError(path)


def threads(proc: FakeProc, loadavg=(0.0, 0.0, 0.0), cpus=None) -> int:
    return cpu_load.free_cores(cpus=cpus if cpus is not None else set(proc.busy), window=WINDOW, read=proc.read,
                               sleep=proc.sleep, loadavg=lambda: loadavg)


def test_an_idle_machine_whose_last_job_just_finished_trains_on_all_its_cores():
    # Importing torch and preparing data kept a core busy for the last minute: the load average is still high.
    just_finished = (1.6, 0.9, 0.5)
    assert threads(FakeProc({0: 0.0, 1: 0.0}), just_finished) == 2
    # The load-average rule (kept where there is no /proc) gave 1 of these 2 idle cores: the run.
    assert cpu_load.free_cores(cpus={0, 1}, read=missing, sleep=lambda s: None, loadavg=lambda: just_finished) == 1


@pytest.mark.parametrize(("busy", "expected"), [
    ({0: 1.0, 1: 0.0}, 1),                    # one other process on a full core
    ({0: 0.5, 1: 0.5}, 1),                    # one core's worth, shared between both cores
    ({0: 1.0, 1: 1.0}, 1),                    # everything busy: still at least one thread
    ({0: 1.0, 1: 0.0, 2: 0.0, 3: 0.0}, 3),
    ({0: 0.3, 1: 0.0}, 2),                    # a core counts as taken when others keep it at least half busy
    ({0: 0.6, 1: 0.0}, 1),
])
def test_cores_other_processes_keep_busy_now_are_left_to_them(busy, expected):
    assert threads(FakeProc(busy)) == expected


def test_the_other_processes_busy_time_is_measured_over_the_window():
    proc = FakeProc({0: 1.0, 1: 0.2})
    assert cpu_load.busy_elsewhere({0, 1}, window=WINDOW, read=proc.read, sleep=proc.sleep) == pytest.approx(1.2)
    assert proc.elapsed == WINDOW


def test_this_process_own_work_does_not_count_as_busy():
    # The script itself is busy (still importing, or a thread of its own) on one core of two.
    assert threads(FakeProc({0: 1.0, 1: 0.0}, own=1.0)) == 2


def test_only_the_cores_this_process_may_run_on_count():
    # A container pinned to cores 0-1 of a 4-core host whose cores 2-3 are busy with someone else's work.
    assert threads(FakeProc({0: 0.0, 1: 0.0, 2: 1.0, 3: 1.0}), cpus={0, 1}) == 2
    assert threads(FakeProc({0: 1.0, 1: 0.0}), cpus={0, 1, 7}) == 2  # a CPU /proc/stat omits is taken as free


def test_without_proc_the_load_average_decides_and_without_either_all_cores():
    def no_proc(loadavg):
        return cpu_load.free_cores(cpus={0, 1, 2, 3}, read=missing, sleep=lambda s: None, loadavg=loadavg)

    assert no_proc(lambda: (1.0, 1.0, 1.0)) == 4  # the load of this process alone
    assert no_proc(lambda: (3.0, 1.0, 1.0)) == 2
    assert no_proc(None) == 4

    def unavailable():
        raise OSError("load average unobtainable")

    assert no_proc(unavailable) == 4
    assert cpu_load.free_cores(cpus={0, 1}, read=lambda path: "garbage\n", sleep=lambda s: None, loadavg=None) == 2


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux /proc")
def test_the_real_proc_gives_a_count_within_the_allowed_cores():
    busy = cpu_load.busy_elsewhere(cpu_load.allowed_cpus(), window=0.05)
    assert busy is not None and busy >= 0
    assert 1 <= cpu_load.free_cores(window=0.05) <= len(cpu_load.allowed_cpus())


def test_prediction_reuses_a_recent_decision_and_measures_again_without_waiting(monkeypatch):
    measured, release = [], threading.Event()

    def free_cores():
        if measured:  # the second measurement takes as long as the test says
            release.wait(10)
        measured.append(1)
        return 2 if len(measured) == 1 else 1

    monkeypatch.setattr(training, "_decided", None)
    monkeypatch.setattr(cpu_load, "free_cores", free_cores)
    now = [1000.0]
    assert training.default_threads(lambda: now[0]) == 2  # the first call measures
    now[0] += training.REUSE_S - 1
    assert training.default_threads(lambda: now[0]) == 2 and len(measured) == 1
    now[0] += 2
    # a served prediction: the last decision at once, measured again in the background, one measurement at a time
    assert training.default_threads(lambda: now[0], wait=False) == 2
    assert training.default_threads(lambda: now[0], wait=False) == 2 and len(measured) == 1
    release.set()
    training._refresher.join(10)
    assert len(measured) == 2 and training.default_threads(lambda: now[0], wait=False) == 1
    now[0] += training.REUSE_S + 1  # a training run waits for a fresh count
    assert training.default_threads(lambda: now[0]) == 1 and len(measured) == 3


def test_an_explicit_thread_count_wins_and_cuda_is_left_alone(monkeypatch):
    monkeypatch.setattr(training, "default_threads", lambda: pytest.fail("measured despite an explicit count"))
    before = torch.get_num_threads()
    with cpu_threads(torch.device("cpu"), 3):
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == before
    with cpu_threads(torch.device("cuda"), None):
        assert torch.get_num_threads() == before
    monkeypatch.setattr(training, "default_threads", lambda: 1)
    with cpu_threads(torch.device("cpu"), None):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
