"""Run moto's S3 server on loopback, one request at a time, and print its port.

    python -m tests.support.s3_server [PORT]   # prints "PORT <n>" once it listens (0: any)

moto's ThreadedMotoServer handles requests on many threads and its precondition check for
conditional writes is not atomic under that concurrency (two IfMatch writers can both win).
AWS S3 guarantees the check-and-write is atomic, so tests serve requests serially: that is the
behaviour the pipeline relies on. Running in its own process also keeps it off the test's GIL and
reachable from kfp.local's component subprocesses.
"""

from __future__ import annotations

import os
import sys

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server


def main() -> None:
    app = DomainDispatcherApplication(create_backend_app)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = make_server("127.0.0.1", port, app, threaded=False)
    print(f"PORT {server.server_address[1]}", flush=True)
    # Nobody reads stdout after the port: anything printed later would fill the pipe and
    # block the server, so the rest goes where stderr goes (the fixture's log file).
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
