"""Process bookkeeping: every process the benchmark starts is recorded by PID and stopped
by PID (SIGTERM, bounded wait, SIGKILL) at the end, whatever happened."""
import os
import signal
import subprocess
import time


class OpFailed(Exception):
    """A measured operation failed; the message becomes the table's n/a reason."""


class Procs:
    def __init__(self):
        self.started = []

    def spawn(self, argv, env=None, log_path=None, **kw):
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        try:
            p = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, **kw)
        finally:
            if log_path:
                out.close()
        self.started.append(p)
        return p

    @staticmethod
    def stop(p, timeout=15.0):
        if p.poll() is not None:
            return p.returncode
        try:
            p.send_signal(signal.SIGTERM)
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait(timeout=10)

    def stop_all(self):
        for p in reversed(self.started):
            try:
                self.stop(p)
            except Exception:  # keep stopping the others
                pass
        self.started = []


def run_timed(argv, timeout, env=None, stdout=subprocess.DEVNULL, cwd=None):
    """Runs argv, returns (seconds, stdout bytes or None, stderr bytes). Kills it by PID
    on timeout and raises OpFailed; a non-zero exit raises OpFailed with its stderr."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, env=env, stdout=stdout, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, cwd=cwd)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        try:
            p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pass  # stuck in an uninterruptible FUSE request; the unmount frees it
        raise OpFailed(f"{os.path.basename(argv[0])} timed out after {timeout:.0f} s")
    except BaseException:   # interrupted (SIGTERM/SIGINT): do not leave it running
        p.kill()
        raise
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        msg = (err or b"").decode(errors="replace").strip().splitlines()
        raise OpFailed(f"{os.path.basename(argv[0])} exited {p.returncode}: "
                       + (msg[-1][:200] if msg else "no message"))
    return dt, out, err


def wait_for(pred, timeout, what, first=0.01, cap=0.25):
    """Polls pred() with growing intervals until truthy; raises OpFailed on timeout."""
    deadline = time.monotonic() + timeout
    delay = first
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise OpFailed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, cap)


def read_status_kib(pid, field):
    """VmRSS / VmHWM of a process in KiB, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None
