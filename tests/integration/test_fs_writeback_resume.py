"""Resume after SIGKILL: a write-back mount is killed in the middle of `cp -r` of 1,000
small files; the next mount with the same session_id and cache_dir uploads every file
the killed one had accepted, against the upload records it had made (never a second
asset for the same bytes), and nothing is lost."""
import collections
import os
import random
import signal
import subprocess
import time

from fs_fixtures import is_mounted
from fs_write_util import sha256_file, staged_files
from procs import wait_for
from test_fs_write_scale import url_sha256

N_FILES = int(os.environ.get("ASSETFS_RESUME_FILES", "1000"))


def status(mount):
    with open(os.path.join(mount.path, ".assetfs", "status")) as f:
        return dict(line.rstrip("\n").split(": ", 1) for line in f)


def make_tree(root, n, rng):
    want = {}
    for i in range(n):
        rel = f"d{i % 10}/f{i:04d}.bin"
        os.makedirs(root / f"d{i % 10}", exist_ok=True)
        data = os.urandom(rng.randint(1024, 300 * 1024))
        (root / rel).write_bytes(data)
        want[rel] = sha256_file(root / rel)
    return want


def test_sigkill_during_cp_then_remount_resumes(broker, start_mount, db, tmp_path):
    rng = random.Random(7)
    src = tmp_path / "src"
    src.mkdir()
    want = make_tree(src, N_FILES, rng)
    session = f"resume-{os.getpid()}-{time.monotonic_ns()}"
    m = start_mount("writeback", f"session_id={session}", "upload_workers=4")
    cp = subprocess.Popen(["cp", "-r", str(src), m.p("tree")], stderr=subprocess.DEVNULL)
    journals = lambda: [f for f in staged_files(m.cache_dir) if f.endswith(".journal")]
    wait_for(lambda: len(journals()) >= N_FILES // 3 or cp.poll() is not None, 120,
             "cp to get a third of the way")
    os.kill(m.proc.pid, signal.SIGKILL)
    m.proc.wait(timeout=30)
    cp.wait(timeout=60)
    subprocess.run(["fusermount3", "-uz", m.path], check=False, timeout=30)
    assert not is_mounted(m.path)
    left = len(journals())
    assert left > 0

    m2 = start_mount("writeback", f"session_id={session}", f"cache_dir={m.cache_dir}",
                     "upload_workers=4")
    resumed = int(status(m2)["resumed_at_mount"])
    assert resumed >= left - 2, (resumed, left)  # a journal of a file still being created may be dropped
    # What the killed mount accepted is there, whole or (the file cp was writing) cut
    # short; nothing else is missing and nothing is garbled.
    short, missing = [], []
    for rel, h in want.items():
        p = m2.p("tree", rel)
        if not os.path.exists(p):
            missing.append(rel)
        elif os.path.getsize(p) != os.path.getsize(src / rel):
            short.append(rel)
    assert len(short) <= 2, short
    # Complete the copy the way a user would: the files that are missing or cut short.
    for rel in missing + short:
        os.makedirs(os.path.dirname(m2.p("tree", rel)), exist_ok=True)
        subprocess.run(["cp", str(src / rel), m2.p("tree", rel)], check=True, timeout=60)
    t0 = time.monotonic()

    def drained():
        st = status(m2)
        return st["files_to_upload"] == "0" and st["uploaded"] == "0"
    wait_for(drained, 300, "the resumed queue to drain")
    q = {"_partition": "user_id=tester", "status": "active"}
    wait_for(lambda: db.CosyncAsset.count_documents(q) >= N_FILES, 120,
             "every file to be completed")
    print(f"resumed {resumed} files ({left} journals), {len(missing)} copied after the "
          f"remount, {len(short)} cut short; drained in {time.monotonic() - t0:.1f} s")

    active = collections.Counter(a["filePath"] for a in db.CosyncAsset.find(q, {"filePath": 1}))
    assert set(active) == {f"tree/{rel}" for rel in want}
    assert all(c == 1 for c in active.values()), [k for k, c in active.items() if c > 1]
    # No second asset for bytes the killed mount had accepted whole.
    every = collections.Counter(a["filePath"] for a in db.CosyncAsset.find(
        {"_partition": "user_id=tester"}, {"filePath": 1}))
    redone = {f"tree/{rel}" for rel in short}
    dup = [k for k, c in every.items() if c > 1 and k not in redone]
    assert not dup, dup
    by_path = {a["filePath"]: a for a in db.CosyncAsset.find(q)}
    for rel, h in want.items():
        assert sha256_file(m2.p("tree", rel)) == h, rel
        assert url_sha256(by_path[f"tree/{rel}"]["url"]) == h, rel
