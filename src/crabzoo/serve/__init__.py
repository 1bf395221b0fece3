"""``crabzoo serve``: a trained model behind an OpenAI-compatible HTTP API, on LitServe.

    crabzoo serve --ckpt_path runs/quickstart/version_0/checkpoints/last.ckpt --port 8000

Endpoints: ``POST /v1/chat/completions`` (JSON, or server-sent events with ``"stream": true``),
``GET /v1/models`` and LitServe's ``GET /health``. Messages carry text plus media parts (``image_url``,
``video_url``, ``audio_url``, ``input_audio``; data URLs or paths on the server; see
:mod:`crabzoo.serve.requests`). Concurrent requests are generated together in batches of up to
``--max_batch_size``, collected for ``--batch_timeout`` seconds. Bad requests (unknown model, unreadable or
oversized media, a malformed body, ``max_tokens`` over ``--max_tokens``) get a 4xx JSON error in OpenAI's
shape; the server keeps running.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from crabzoo.errors import CrabzooError


def default_model_name(ckpt_path: str | None, configs: list[str]) -> str:
    """The model's name when ``--model_name`` is not given: ``<run>/<version>/<checkpoint stem>`` of a
    ``crabzoo fit`` checkpoint (``runs/quickstart/version_0/checkpoints/last.ckpt`` -> ``quickstart/version_0/last``),
    else the checkpoint's or the last config's file stem."""
    if ckpt_path:
        path = Path(ckpt_path)
        if path.parent.name == "checkpoints" and path.parent.parent.name.startswith("version_"):
            return f"{path.parents[2].name}/{path.parents[1].name}/{path.stem}"
        return path.stem
    return Path(configs[-1]).stem if configs else "crabzoo"


def build_parser() -> argparse.ArgumentParser:
    """The ``crabzoo serve`` arguments."""
    from crabzoo.serve.limits import Limits

    d = Limits()
    parser = argparse.ArgumentParser(
        prog="crabzoo serve", description=__doc__.split("\n\n")[0],
        epilog="POST /v1/chat/completions, GET /v1/models, GET /health; see docs/using-a-trained-model/serve.md",
    )
    parser.add_argument("--ckpt_path", help="checkpoint written by `crabzoo fit` (its model configuration is inside)")
    parser.add_argument("--config", action="append", default=[],
                        help="paradigm / recipe YAML whose model: section builds the model instead (repeatable)")
    parser.add_argument("--device", default="cpu", help="torch device of the model (cpu, cuda, cuda:1, ...)")
    parser.add_argument("--model_name", help="name clients pass as `model` (default: from the checkpoint path)")
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "0.0.0.0", "::"],
                        help="interface to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (1024-65535)")
    parser.add_argument("--max_batch_size", type=int, default=8, help="most concurrent requests generated together")
    parser.add_argument("--batch_timeout", type=float, default=0.05,
                        help="seconds to wait for a batch to fill once a request is waiting")
    parser.add_argument("--max_media_bytes", default=str(d.max_media_bytes),
                        help="largest media file per part (25MB, 512KiB or bytes)")
    parser.add_argument("--max_media_seconds", type=float, default=d.max_media_seconds,
                        help="longest audio / video per part, in seconds")
    parser.add_argument("--max_tokens", type=int, default=None,
                        help="most tokens per answer; a request asking for more gets a 400 (default: the model's "
                             "max_new_tokens, also the length of requests that give none)")
    parser.add_argument("--request_timeout", type=float, default=300.0,
                        help="seconds a request may wait in the queue before a 504")
    parser.add_argument("--log_level", default="warning", help="uvicorn / LitServe log level")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run the server until interrupted (Ctrl-C); returns None.

    Raises:
        CrabzooError: no model source, a missing checkpoint, or a bad option (before anything starts).
    """
    from crabzoo.serve.limits import Limits, parse_size

    args = build_parser().parse_args(argv)
    if args.ckpt_path is None and not args.config:
        raise CrabzooError("give the checkpoint to serve (--ckpt_path CKPT) or the recipe that builds it (--config YAML)")
    if args.ckpt_path is not None and not Path(args.ckpt_path).is_file():
        raise CrabzooError(f"{args.ckpt_path}: checkpoint file not found")
    for path in args.config:
        if not Path(path).is_file():
            raise CrabzooError(f"config file {path} not found")
    if not 1024 <= args.port <= 65535:
        raise CrabzooError(f"--port must be in 1024-65535, got {args.port}")
    if args.max_batch_size < 1:
        raise CrabzooError(f"--max_batch_size must be at least 1, got {args.max_batch_size}")
    if args.batch_timeout < 0:
        raise CrabzooError(f"--batch_timeout must be 0 or more, got {args.batch_timeout}")
    limits = Limits(parse_size(args.max_media_bytes), args.max_media_seconds, args.max_tokens)
    server = build_server(args, limits)
    server.run(host=args.host, port=args.port, log_level=args.log_level, generate_client_file=False,
               num_api_servers=1)


def build_server(args: argparse.Namespace, limits: object) -> object:
    """The ``litserve.LitServer`` of parsed ``crabzoo serve`` arguments (not started)."""
    import litserve as ls

    from crabzoo.serve.api import ChatAPI
    from crabzoo.serve.spec import ChatSpec

    name = args.model_name or default_model_name(args.ckpt_path, args.config)
    spec = ChatSpec(name, limits)
    api = ChatAPI(args.ckpt_path, args.config, device=args.device, max_tokens=args.max_tokens,
                  max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout, spec=spec)
    accelerator = "cuda" if str(args.device).startswith("cuda") else "cpu"
    return ls.LitServer(api, accelerator=accelerator, devices=1, timeout=args.request_timeout)
