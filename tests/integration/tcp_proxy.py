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


class TcpProxy:
    def __init__(self, host, port):
        self.target = (host, port)
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.lsock.listen(128)
        self.down = False
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
        b.sendall(d)

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
