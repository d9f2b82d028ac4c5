#!/usr/bin/env python3
"""One value from a coordinator's Prometheus endpoint, for the shell tests (obs.sh, guide.sh).
Usage: metric.py PORT NAME  -- prints NAME's value, or "missing"; waits up to 5 s for the port."""
import socket
import sys
import time


def scrape(port):
    for _ in range(50):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            break
        except OSError:
            time.sleep(0.1)
    else:
        sys.exit("metric.py: nothing listens on port %d" % port)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data.decode()
        data += chunk


def main():
    port, name = int(sys.argv[1]), sys.argv[2]
    values = [f[1] for f in (line.split() for line in scrape(port).splitlines())
              if len(f) >= 2 and f[0] == name]
    print(values[0] if values else "missing")


main()
