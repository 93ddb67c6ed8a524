"""Child process for workload 7: reads FILE sequentially in 1 MiB blocks until EOF or
until SECONDS have passed, then prints JSON {"bytes": n, "eof": bool, "seconds": t}.
Usage: seqread.py FILE SECONDS"""
import json
import os
import sys
import time


def main():
    path, limit = sys.argv[1], float(sys.argv[2])
    t0 = time.monotonic()
    n, eof = 0, False
    fd = os.open(path, os.O_RDONLY)
    buf = bytearray(1 << 20)
    while time.monotonic() - t0 < limit:
        got = os.readv(fd, [buf])
        if got == 0:
            eof = True
            break
        n += got
    os.close(fd)
    print(json.dumps({"bytes": n, "eof": eof, "seconds": time.monotonic() - t0}))


if __name__ == "__main__":
    main()
