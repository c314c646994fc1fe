"""chestdet-serve / scripts/serve.py: the review page, its API and Label Studio's ML backend, on uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
from pathlib import Path

from chestdet.commands.cli import UserError, exit_with, setup_logging
from chestdet.core.contracts import LABEL_MAP_FILE, SAVED_MODEL_DIR, TFLITE_FILE
from chestdet.core.resources import workspace
from chestdet.detection.thresholds import POINT_NAMES
from chestdet.export.backends import BACKENDS
from chestdet.service.settings import MEGABYTE, Settings

log = logging.getLogger("chestdet.service")

TOKEN_ENV = "CHESTDET_TOKEN"
GRACEFUL_SHUTDOWN_S = 30
EXAMPLES = """examples:
  python scripts/serve.py --model workspace/runs/nih/export
  python scripts/serve.py --model workspace/runs/nih/export --feedback-dir workspace/feedback \\
      --operating-points workspace/evaluations/val/operating_points.json --operating-point 1fp
  CHESTDET_TOKEN=$(openssl rand -hex 16) python scripts/serve.py --model workspace/runs/nih/export --host 0.0.0.0
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="serve.py", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve the review page and its API (/docs), and Label Studio's ML backend (/predict, /setup, "
        "/health, /validate), with the model loaded once. A research tool, not a diagnosis.")
    parser.add_argument("--model", required=True, type=Path, help="export directory of export.py")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1; any other needs --token)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--operating-points", type=Path, metavar="FILE",
                        help="evaluate's operating_points.json, from a validation split: the page's presets")
    parser.add_argument("--operating-point", choices=POINT_NAMES, metavar="NAME",
                        help="with --operating-points: the point the page starts at and Label Studio gets "
                        f"({', '.join(POINT_NAMES)}; default: --min-score)")
    parser.add_argument("--feedback-dir", type=Path, help="where reviews go (default: WORKSPACE/feedback)")
    parser.add_argument("--token", help=f"a secret every /api request must send as 'Authorization: Bearer TOKEN' "
                        f"(default: ${TOKEN_ENV}; needed with a --host other than loopback)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="auto: TFLite when there is no GPU and the export has model.tflite (default: auto)")
    parser.add_argument("--min-score", type=float, default=0.3,
                        help="score from which a box is shown, without an operating point (default: 0.3)")
    parser.add_argument("--floor-score", type=float, default=0.05,
                        help="the API lists every box down to this score, so the page can filter (default: 0.05)")
    parser.add_argument("--max-boxes", type=int, default=100, help="most boxes shown per image (default: 100)")
    parser.add_argument("--max-body-mb", type=float, default=50, help="largest request body in MB (default: 50)")
    parser.add_argument("--max-batch", type=int, default=8, help="images per model call (default: 8)")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0,
                        help="how long a batch waits for more requests after its first (default: 5)")
    parser.add_argument("--max-queue", type=int, default=32,
                        help="requests in progress before new ones get 503 with Retry-After (default: 32)")
    parser.add_argument("--threads", type=int, help="TFLite interpreters side by side (default: CPU count)")
    parser.add_argument("--no-explain", action="store_true", help="no Grad-CAM explanations (saves memory)")
    parser.add_argument("--label-studio-url",
                        help="Label Studio's address for fetching task images (default: the one /setup gives)")
    parser.add_argument("--root-path", default="",
                        help="the path prefix a reverse proxy serves the app under (e.g. /chestdet)")
    parser.add_argument("--forwarded-allow-ips", default="127.0.0.1",
                        help="proxies whose X-Forwarded-* headers are trusted (default: 127.0.0.1)")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    settings = settings_from(args)
    import uvicorn

    from chestdet.service.app import create_app

    config = uvicorn.Config(create_app(settings), host=args.host, port=args.port, log_level="info",
                            access_log=args.access_log, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
                            root_path=args.root_path, proxy_headers=True,
                            forwarded_allow_ips=args.forwarded_allow_ips, server_header=False)
    log.info("serving %s on http://%s:%d/ (API docs at /docs)%s", args.model, args.host, args.port,
             "; /api wants the bearer token" if settings.token else "")
    uvicorn.Server(config).run()
    return 0


def settings_from(args: argparse.Namespace) -> Settings:
    """The server's settings, after checking what can be checked before the model loads."""
    token = args.token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(args.host) and token is None:
        raise UserError(f"--host {args.host} is reachable from other machines: pass --token (or set ${TOKEN_ENV}); "
                        "every /api request must then send 'Authorization: Bearer TOKEN'")
    model = args.model
    if not model.is_dir() or not (model / LABEL_MAP_FILE).is_file():
        raise UserError(f"--model {model}: not an export directory of export.py (no {LABEL_MAP_FILE})")
    if not (model / SAVED_MODEL_DIR).is_dir() and not (model / TFLITE_FILE).is_file():
        raise UserError(f"--model {model}: neither {SAVED_MODEL_DIR}/ nor {TFLITE_FILE} in it")
    if args.operating_point is not None and args.operating_points is None:
        raise UserError("--operating-point NAME needs --operating-points FILE")
    if args.operating_points is not None and not args.operating_points.is_file():
        raise UserError(f"--operating-points {args.operating_points}: not found")
    for flag, value in (("--min-score", args.min_score), ("--floor-score", args.floor_score)):
        if not 0.0 <= value <= 1.0:
            raise UserError(f"{flag} {value}: must be between 0 and 1")
    for flag, value in (("--max-boxes", args.max_boxes), ("--max-batch", args.max_batch),
                        ("--max-queue", args.max_queue), ("--max-body-mb", args.max_body_mb),
                        ("--threads", args.threads or 1)):
        if value < 1:
            raise UserError(f"{flag} {value}: must be at least 1")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: not a port number")
    return Settings(
        model=model, feedback_dir=args.feedback_dir or workspace() / "feedback", operating_points=args.operating_points,
        operating_point=args.operating_point, token=token, backend=args.backend, min_score=args.min_score,
        floor_score=args.floor_score, max_boxes=args.max_boxes, max_body_bytes=int(args.max_body_mb * MEGABYTE),
        max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms, max_queue=args.max_queue,
        interpreters=args.threads, explain=not args.no_explain, label_studio_url=args.label_studio_url)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def entry() -> None:
    exit_with(main)


if __name__ == "__main__":
    entry()
