"""Where the mount's log lines go (issue 16): stderr with -f, syslog when it daemonises
(as mount(8), fstab and systemd start it), or the file named by -o log_file=."""
import os
import re
import socket
import subprocess
import time

import pytest

from fs_fixtures import fs_exe, is_mounted
from procs import wait_for


def daemon_pid(text):
    m = re.search(r"mounted \S+ \(pid (\d+),", text)
    return int(m.group(1)) if m else None


def stop_daemon(mnt, pid):
    """Unmounts and waits for the daemon (by PID) to exit; kills it if it does not."""
    if is_mounted(mnt):
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False, timeout=30)
    deadline = time.monotonic() + 60
    while pid and os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid and os.path.exists(f"/proc/{pid}"):
        os.kill(pid, 9)
        subprocess.run(["fusermount3", "-uz", str(mnt)], check=False, timeout=30)


def daemonise(build_dir, fs_env, tmp_path, *opts):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    o = ["uid=tester", f"cache_dir={tmp_path / 'cache'}", *opts]
    r = subprocess.run([fs_exe(build_dir), str(mnt), "-o", ",".join(o)], env=fs_env,
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    return mnt, r


def test_daemonised_mount_logs_to_its_log_file(build_dir, fs_env, tmp_path):
    log = tmp_path / "assetfs.log"
    mnt, r = daemonise(build_dir, fs_env, tmp_path, f"log_file={log}")
    assert r.returncode == 0, r.stderr
    pid = None
    try:
        wait_for(lambda: is_mounted(mnt), 15, "the daemonised mount")
        pid = wait_for(lambda: daemon_pid(log.read_text()), 15, "the mount's first log line")
        assert os.path.exists(f"/proc/{pid}")
        assert os.stat(log).st_mode & 0o777 == 0o600
        os.listdir(mnt)
    finally:
        stop_daemon(mnt, pid)
    wait_for(lambda: "unmounted" in log.read_text(), 15, "the last log line")
    assert "mounted" not in r.stderr  # what comes after daemonising goes to the file


def test_log_file_that_cannot_be_opened_is_refused_at_once(build_dir, fs_env, tmp_path):
    mnt, r = daemonise(build_dir, fs_env, tmp_path, f"log_file={tmp_path}/no/such/dir/x.log")
    assert r.returncode != 0
    assert "cannot open log_file" in r.stderr and "No such file" in r.stderr
    assert not is_mounted(mnt)


def test_foreground_mount_with_log_file_writes_there(build_dir, fs_env, tmp_path, procs):
    log = tmp_path / "fg.log"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    out = str(tmp_path / "stderr.txt")
    p = procs.spawn([fs_exe(build_dir), str(mnt), "-f", "-o",
                     f"uid=tester,cache_dir={tmp_path / 'cache'},log_file={log}"], env=fs_env,
                    log_path=out)
    wait_for(lambda: is_mounted(mnt) or p.poll() is not None, 15, "the mount")
    assert p.poll() is None
    assert daemon_pid(log.read_text()) == p.pid
    subprocess.run(["fusermount3", "-u", str(mnt)], check=False, timeout=30)
    p.wait(timeout=60)
    assert "mounted" not in open(out).read()


def test_daemonised_mount_logs_to_syslog(build_dir, fs_env, tmp_path):
    """Without log_file, a daemonised mount sends its lines to syslog (journald reads
    /dev/log too). The test plays the syslog daemon at /dev/log when none runs."""
    if os.path.exists("/dev/log"):
        pytest.skip("a syslog daemon owns /dev/log on this machine")
    if os.geteuid() != 0:
        pytest.skip("binding /dev/log needs root")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("/dev/log")
    s.settimeout(0.5)
    pid = None
    mnt = None
    try:
        mnt, r = daemonise(build_dir, fs_env, tmp_path)
        assert r.returncode == 0, r.stderr
        got = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("mounted" in g for g in got):
            try:
                got.append(s.recv(65536).decode(errors="replace"))
            except socket.timeout:
                pass
        line = [g for g in got if "mounted" in g]
        assert line, got
        pid = daemon_pid(line[0])
        assert re.match(r"<\d+>", line[0]) and f"assetfs[{pid}]" in line[0], line[0]
    finally:
        if mnt is not None:
            stop_daemon(mnt, pid)
        s.close()
        os.unlink("/dev/log")
