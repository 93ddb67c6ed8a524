"""A loopback TCP proxy that a test can cut and restore, to take MongoDB or S3 "down"
for one process without stopping the shared stack.

    p = TcpProxy("127.0.0.1", 27017); p.start()   # p.port is where clients connect
    p.cut()      # refuse new connections and drop the open ones
    p.restore()  # accept again
    p.close()

Bytes pass through unchanged, so SigV4 URLs signed for the proxy's host:port stay valid.
"""
import socket
import threading
import time


class TcpProxy:
    def __init__(self, host, port):
        self.target = (host, port)
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.lsock.listen(128)
        self.down = False
        self.stalled = False  # connections stay open but nothing is relayed (a hung server)
        self.closed = False
        self.conns = set()
        self.lock = threading.Lock()

    def start(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            if self.down:
                c.close()  # connection reset: the server is "down"
                continue
            try:
                s = socket.create_connection(self.target, timeout=5)
                s.settimeout(None)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns.add(c)
                self.conns.add(s)
            for a, b in ((c, s), (s, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _relay(self, a, b, d):
        """Sends chunk d, read from a, on to b. Subclasses delay or record here."""
        self._hold()
        b.sendall(d)

    def _hold(self):
        while self.stalled and not self.closed:
            time.sleep(0.05)

    def from_server(self, sock):
        return sock.getpeername()[1] == self.target[1]

    def _pipe(self, a, b):
        try:
            while True:
                d = a.recv(262144)
                if not d:
                    break
                self._relay(a, b, d)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            x.close()
            with self.lock:
                self.conns.discard(x)

    def cut(self):
        self.down = True
        with self.lock:
            conns = list(self.conns)
        for x in conns:
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def restore(self):
        self.down = False

    def close(self):
        self.closed = True
        self.cut()
        self.lsock.close()


class FaultyHttpProxy(TcpProxy):
    """An S3 endpoint that fails or slows some requests: every `fail_every`-th new
    connection whose request line contains `match` gets HTTP `fail_status` and is closed
    (curl opens a connection per PUT attempt, so each failure is one failed attempt), and
    the others that match wait `delay_s` first. Other requests pass through unchanged.
    `url` is the endpoint to give the broker; `failed` counts, and `bytes_down` counts
    the bytes S3 sent back (answers and object bytes)."""

    def __init__(self, endpoint, fail_every=3, fail_status=503, match="", delay_s=0.0):
        hostport = endpoint.split("://", 1)[1].rstrip("/")
        host, port = hostport.rsplit(":", 1)
        super().__init__(host, int(port))
        self.fail_every, self.fail_status, self.match = fail_every, fail_status, match
        self.delay_s = delay_s  # matching requests wait this long first (a slow S3)
        self.seen = self.failed = self.bytes_down = 0
        self.started = set()  # ids of client sockets whose first request was looked at
        self.url = f"http://127.0.0.1:{self.port}"
        self.start()

    def _pipe(self, a, b):
        super()._pipe(a, b)
        with self.lock:  # its id may be reused by a later connection
            self.started.discard(id(a))

    def _relay(self, a, b, d):
        first = False
        if self.from_server(a):
            with self.lock:
                self.bytes_down += len(d)
        else:
            with self.lock:
                first = id(a) not in self.started
                self.started.add(id(a))
        if first:
            line = d.split(b"\r\n", 1)[0].decode("latin-1")
            if self.match in line:
                with self.lock:
                    self.seen += 1
                    fail = self.fail_every > 0 and self.seen % self.fail_every == 0
                    if fail:
                        self.failed += 1
                if fail:
                    a.sendall(f"HTTP/1.1 {self.fail_status} Slow Down\r\nContent-Length: 0\r\n"
                              "Connection: close\r\n\r\n".encode())
                    raise OSError("failed on purpose")
                if self.delay_s:
                    import time
                    time.sleep(self.delay_s)
        b.sendall(d)
