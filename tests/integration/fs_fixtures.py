"""Fixtures that mount assetfs on the stack.

`start_mount(*opts, uid=..., env=..., name=...)` mounts assetfs in the foreground at a
fresh folder (options as `-o` key=value strings) and returns a Mount; every mount is
unmounted (fusermount3 -u, then SIGTERM by PID through `procs`) when the test ends.
`mount` is the usual setup: the real broker plus one mount for uid "tester" (upload
partition "user_id=tester"). `mount_skeleton` mounts without a broker.
"""
import os
import subprocess
import time

import pytest

from procs import wait_for


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


def partition_dirname(partition):
    return partition.replace("%", "%25").replace("/", "%2F")


class Mount:
    def __init__(self, path, proc, log_path, uid, cache_dir):
        self.path = str(path)
        self.proc = proc
        self.log_path = log_path
        self.uid = uid
        self.cache_dir = cache_dir
        self.upload_partition = f"user_id={uid}"

    def p(self, *parts, partition=None):
        """Path inside the mount: partition directory (default: the upload partition)
        then parts."""
        return os.path.join(self.path, partition_dirname(partition or self.upload_partition),
                            *parts)

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def unmount(self, timeout=90):
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", self.path], check=False, timeout=30)
        return self.proc.wait(timeout=timeout)


@pytest.fixture
def fs_env(stack, dbname):
    env = dict(os.environ)
    env.update(stack)
    env["ASSETFS_DATABASE"] = dbname
    return env


def fs_exe(build_dir):
    asan = os.environ.get("ASSETFS_ASAN_BUILD_DIR")
    if os.environ.get("ASSETFS_FS_ASAN") == "1" and asan:
        return os.path.join(asan, "assetfs")
    return os.path.join(build_dir, "assetfs")


@pytest.fixture
def start_mount(build_dir, tmp_path, procs, fs_env):
    mounts = []
    counter = [0]

    def start(*opts, uid="tester", env=None, name=None, timeout=15):
        counter[0] += 1
        n = name or f"mnt{counter[0]}"
        mnt = tmp_path / n
        mnt.mkdir()
        cache = tmp_path / f"{n}-cache"
        log = str(tmp_path / f"{n}.log")
        e = dict(fs_env)
        if env:
            e.update(env)
        o = [f"uid={uid}", f"cache_dir={cache}", *opts]
        p = procs.spawn([fs_exe(build_dir), str(mnt), "-f", "-o", ",".join(o)], env=e,
                        log_path=log)
        m = Mount(mnt, p, log, uid, str(cache))
        wait_for(lambda: is_mounted(mnt) or p.poll() is not None, timeout, "the mount")
        assert p.poll() is None, m.log()
        mounts.append(m)
        return m

    yield start
    for m in mounts:
        try:
            m.unmount(timeout=90)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture
def mount(broker, start_mount):
    """The real broker and one mount (uid "tester")."""
    return start_mount()


@pytest.fixture
def mount_skeleton(build_dir, tmp_path, procs, fs_env):
    """Mounts assetfs in the foreground at a fresh folder (no broker); unmounts at the end."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    p = procs.spawn([os.path.join(build_dir, "assetfs"), str(mnt), "-f", "-o",
                     f"uid=skeleton,cache_dir={tmp_path / 'cache'}"], env=fs_env,
                    log_path=str(tmp_path / "assetfs.log"))
    wait_for(lambda: is_mounted(mnt) or p.poll() is not None, 15, "the mount")
    assert p.poll() is None, open(tmp_path / "assetfs.log").read()
    yield mnt, p
    if is_mounted(mnt):
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False, timeout=30)
    p.wait(timeout=30)
