"""Fixtures that run assetfs-broker against the stack.

`broker_env` is the environment a broker gets (the stack's ASSETFS_* variables with the
test's own database); `start_broker(*args, env=..., name=...)` starts one more broker
(stopped by PID at the end of the test through `procs`) and waits until it is ready;
`broker` is one broker with default settings. Set ASSETFS_BROKER_ASAN=1 to run the
brokers from ASSETFS_ASAN_BUILD_DIR (tests/run's sanitizer build).
"""
import os
import time

import pytest

from procs import wait_for


def broker_exe(build_dir):
    asan = os.environ.get("ASSETFS_ASAN_BUILD_DIR")
    if os.environ.get("ASSETFS_BROKER_ASAN") == "1" and asan:
        return os.path.join(asan, "assetfs-broker")
    return os.path.join(build_dir, "assetfs-broker")


class Broker:
    def __init__(self, proc, log_path):
        self.proc = proc
        self.log_path = log_path

    @property
    def pid(self):
        return self.proc.pid

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""


@pytest.fixture
def broker_env(stack, dbname):
    env = dict(os.environ)
    env.update(stack)
    env["ASSETFS_DATABASE"] = dbname
    env.setdefault("ASSETFS_LOG_LEVEL", "info")
    return env


@pytest.fixture
def start_broker(build_dir, procs, broker_env, tmp_path):
    counter = [0]

    def start(*args, env=None, name=None, wait=True, timeout=20):
        counter[0] += 1
        log = str(tmp_path / f"{name or 'broker'}-{counter[0]}.log")
        e = dict(broker_env)
        if env:
            e.update(env)
        p = procs.spawn([broker_exe(build_dir), *args], env=e, log_path=log)
        b = Broker(p, log)
        if wait:
            wait_for(lambda: " ready: " in b.log() or p.poll() is not None, timeout,
                     "the broker to be ready")
            assert p.poll() is None, b.log()
        return b

    return start


@pytest.fixture
def broker(start_broker):
    return start_broker()
