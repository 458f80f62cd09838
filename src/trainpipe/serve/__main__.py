"""``python -m trainpipe.serve --model URI [--host H] [--port P]``: the OIP v2 model server.

    python -m trainpipe.serve --model file:///tmp/run/export --port 8080
    python -m trainpipe.serve --model s3://bucket/ml/registry/digits-classifier --host 0.0.0.0

The main CLI's ``trainpipe serve`` calls the same :func:`trainpipe.serve.server.serve`.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from trainpipe.cli_help import example_epilog
from trainpipe.serve.config import ServeConfig
from trainpipe.serve.errors import ServeError
from trainpipe.serve.server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainpipe.serve",
        description="Serve a model over the Open Inference Protocol v2 (as `trainpipe serve`).",
        **example_epilog("python -m trainpipe.serve --model runs/registry/digits-classifier"),
    )
    parser.add_argument(
        "--model",
        required=True,
        metavar="PATH|URI",
        help="model.onnx, a model package folder or a registry model folder (required)",
    )
    parser.add_argument(
        "--host",
        default=ServeConfig().host,
        help=f"address to listen on (default {ServeConfig().host})",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=ServeConfig().port,
        help=f"port to listen on; 0 picks a free one (default {ServeConfig().port})",
    )
    parser.add_argument(
        "--endpoint-url",
        metavar="URL",
        help="S3 endpoint for s3:// models (default: AWS_ENDPOINT_URL, then AWS)",
    )
    args = parser.parse_args(argv)
    try:
        config = ServeConfig(host=args.host, port=args.port, endpoint_url=args.endpoint_url)
    except ValidationError as exc:
        print(f"error: invalid server option: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    try:
        serve(args.model, config)
    except ServeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
