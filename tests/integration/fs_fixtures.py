"""Fixtures that mount assetfs on the stack."""
import os
import subprocess

import pytest

from procs import wait_for


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


@pytest.fixture
def fs_env(stack, dbname):
    env = dict(os.environ)
    env.update(stack)
    env["ASSETFS_DATABASE"] = dbname
    return env


@pytest.fixture
def mount_skeleton(build_dir, tmp_path, procs, fs_env):
    """Mounts assetfs in the foreground at a fresh folder; unmounts at the end."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    p = procs.spawn([os.path.join(build_dir, "assetfs"), str(mnt), "-f"], env=fs_env,
                    log_path=str(tmp_path / "assetfs.log"))
    wait_for(lambda: is_mounted(mnt) or p.poll() is not None, 15, "the mount")
    assert p.poll() is None, open(tmp_path / "assetfs.log").read()
    yield mnt, p
    if is_mounted(mnt):
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False, timeout=30)
    p.wait(timeout=30)
