"""moto's S3 server for the tests, with one fix where it differs from AWS S3: moto names the root element of its
CompleteMultipartUpload answer ``CompleteMultipartUploadResponse`` where S3 writes ``CompleteMultipartUploadResult``,
and Arrow (26) reads any other root as an error embedded in a 200 response, so every multipart upload from
pyarrow (Tune's and ours) failed against moto with INTERNAL_FAILURE. This WSGI wrapper renames the element; the
rest is moto's own server. ``python -m tests.moto_s3 PORT``, on 127.0.0.1 only."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

WRONG, RIGHT = b"CompleteMultipartUploadResponse", b"CompleteMultipartUploadResult"


def fixed(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    def wrapper(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST" or "uploadId=" not in environ.get("QUERY_STRING", ""):
            return app(environ, start_response)
        held: list[Any] = []

        def hold(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            held[:] = [status, headers, exc_info]
            return lambda _: None

        body = b"".join(app(environ, hold)).replace(WRONG, RIGHT)
        status, headers, exc_info = held
        headers = [(k, str(len(body)) if k.lower() == "content-length" else v) for k, v in headers]
        start_response(status, headers, exc_info)
        return [body]

    return wrapper


def main(port: int) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import run_simple

    run_simple("127.0.0.1", port, fixed(DomainDispatcherApplication(create_backend_app)), threaded=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))
