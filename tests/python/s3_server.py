"""A local S3 for the tests: moto's S3 server (from PyPI), started as
`python s3_server.py HOST PORT`.

Requests are handled one at a time: moto checks a conditional PUT's `If-None-Match: *` and
then writes, in two steps, so two concurrent ones could both succeed; real S3 (and MinIO)
decide atomically, and the files connector's commits rely on that.
"""
import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def one_at_a_time(environ, start_response):
        with lock:
            return list(app(environ, start_response))

    run_simple(host, port, one_at_a_time, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
