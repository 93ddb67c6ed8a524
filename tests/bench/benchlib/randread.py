"""Child process for workload 5: N random aligned 4 KiB reads in FILE, each timed.
Usage: randread.py FILE SEED COUNT [REFERENCE] (each block is compared with the
same block of the local REFERENCE copy, untimed). Prints JSON {"mode": ..., "lat": [seconds...]}.
O_DIRECT (aligned buffer from mmap) so the page cache does not answer; when the
filesystem refuses O_DIRECT, a buffered read with POSIX_FADV_RANDOM on a fresh mount."""
import json
import mmap
import os
import random
import sys
import time

BLOCK = 4096


def offsets(size, seed, count):
    rng = random.Random(seed)
    return [rng.randrange(0, size // BLOCK) * BLOCK for _ in range(count)]


def main():
    path, seed, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ref = open(sys.argv[4], "rb") if len(sys.argv) > 4 else None
    size = os.stat(path).st_size
    mode = "O_DIRECT"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except OSError:
        mode = "buffered+FADV_RANDOM"
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    buf = mmap.mmap(-1, BLOCK)
    lat = []
    for off in offsets(size, seed, count):
        t0 = time.perf_counter()
        try:
            n = os.preadv(fd, [buf], off)
        except OSError as e:
            if mode == "O_DIRECT" and not lat:
                # Accepted at open, refused at read: fall back once.
                os.close(fd)
                mode = "buffered+FADV_RANDOM"
                fd = os.open(path, os.O_RDONLY)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
                t0 = time.perf_counter()
                n = os.preadv(fd, [buf], off)
            else:
                raise SystemExit(f"read at {off}: {e}")
        lat.append(time.perf_counter() - t0)
        if n != BLOCK:
            raise SystemExit(f"short read at {off}: {n} bytes")
        if ref is not None and os.pread(ref.fileno(), BLOCK, off) != bytes(buf):
            raise SystemExit(f"wrong data at offset {off}")
    os.close(fd)
    print(json.dumps({"mode": mode, "lat": lat}))


if __name__ == "__main__":
    main()
