"""`make run` stops on Ctrl-C, SIGTERM or SIGHUP whichever of its threads the signal lands on.

The kernel may hand a signal sent to the process to any thread that does not block it; Python
runs its handlers only in the main thread, which the supervisor keeps blocked in ``STOP.wait()``.
Each case runs, in a process of its own, the supervisor's own ``stop_on_signals`` with the main
thread waiting as ``main()`` waits, and sends the signal to another thread (``pthread_kill``), as
the kernel sometimes does.
"""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.factories import ROOT

pytestmark = pytest.mark.slow

SUPERVISOR = """
import signal, sys, threading, time
from scripts import supervise

supervise.stop_on_signals()
pump = threading.Thread(target=time.sleep, args=(60,), daemon=True)  # a pump, reading a pipe
pump.start()

def kernel_picks_the_pump():
    time.sleep(0.3)  # the main thread is blocked in STOP.wait() by then
    signal.pthread_kill(pump.ident, signal.%s)

threading.Thread(target=kernel_picks_the_pump, daemon=True).start()
supervise.STOP.wait()
print("stopping", flush=True)
"""


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_that_lands_on_another_thread_still_stops_the_supervisor(name):
    child = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR % name], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        out, err = child.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
        pytest.fail(f"{name} on a thread other than the main one did not stop the supervisor")
    assert child.returncode == 0, err
    assert out.strip() == "stopping"
    assert "Traceback" not in err


def test_the_supervisor_still_stops_on_a_signal_sent_to_the_process():
    child = subprocess.Popen(
        [sys.executable, "-c", "from scripts import supervise\nsupervise.stop_on_signals()\n"
         "print('waiting', flush=True)\nsupervise.STOP.wait()\nprint('stopping', flush=True)"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout.readline().strip() == "waiting"
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=15)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    assert out.strip() == "stopping"
