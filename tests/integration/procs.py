"""Process bookkeeping for tests: every process started through `spawn` is stopped by
PID (SIGTERM, bounded wait, SIGKILL) when the test that started it ends."""
import os
import signal
import subprocess
import time

import pytest


class Procs:
    def __init__(self):
        self.started = []

    def spawn(self, argv, env=None, log_path=None, **kw):
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        p = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, **kw)
        p._afs_log = log_path
        self.started.append(p)
        return p

    @staticmethod
    def stop(p, timeout=15.0):
        if p.poll() is not None:
            return p.returncode
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait(timeout=10)

    def stop_all(self):
        for p in reversed(self.started):
            self.stop(p)


@pytest.fixture
def procs():
    ps = Procs()
    yield ps
    ps.stop_all()


def wait_for(pred, timeout=10.0, what="condition"):
    """Polls pred() with growing intervals until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.25)
