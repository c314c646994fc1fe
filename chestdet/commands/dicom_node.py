"""chestdet-dicom-node / scripts/dicom_node.py: a DICOM node a PACS routes chest films to; it sends back
an SR and a GSPS per film (and, optionally, an HL7 ORU^R01 per study)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from chestdet.commands.cli import ExitStatus, UserError, exit_with, setup_logging
from chestdet.core.contracts import TFLITE_FILE
from chestdet.core.resources import workspace
from chestdet.export.backends import BACKENDS

log = logging.getLogger("chestdet.clinical.node")

EXAMPLES = """examples:
  python scripts/dicom_node.py --model workspace/runs/nih/export --send-to ORTHANC@127.0.0.1:4242 --spool workspace/node
  python scripts/dicom_node.py --model workspace/runs/nih/export --send-to dicomweb+http://127.0.0.1:8042/dicom-web \\
      --hl7 127.0.0.1:2575
  python scripts/dicom_node.py --spool workspace/node --status
  echoscu -aec CHESTDET 127.0.0.1 11112
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicom_node.py",
        description="Receive chest films from a PACS (DICOM C-STORE), detect findings, and send back a DICOM SR "
        "(TID 1500) and a presentation state (GSPS) per film, preliminary, into the film's study. Every "
        "acknowledged film is kept in the spool until the destination accepted its results.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", type=Path, help="export directory (model.tflite or saved_model/, label_map.pbtxt)")
    parser.add_argument("--ae-title", default="CHESTDET", help="the node's AE title, called and calling (default: "
                        "CHESTDET)")
    parser.add_argument("--port", type=int, default=11112, help="DICOM port to listen on (default: 11112)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1; 0.0.0.0 for every interface)")
    parser.add_argument("--send-to", help="where results go: AE@HOST:PORT (C-STORE) or "
                        "dicomweb+http(s)://HOST:PORT/PATH (STOW-RS)")
    parser.add_argument("--spool", type=Path, default=None,
                        help="folder keeping received films until their results are delivered (default: "
                        "workspace/node)")
    parser.add_argument("--hl7", metavar="HOST:PORT", help="also send an HL7 ORU^R01 per study over MLLP")
    parser.add_argument("--status", action="store_true", help="print the status of the node using --spool, and exit")
    _add_detection_options(parser)
    _add_delivery_options(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _add_detection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="as detect.py (default: auto)")
    parser.add_argument("--threads", type=int, help="TFLite: interpreters run side by side (default: CPU count)")
    parser.add_argument("--min-score", type=float, default=0.3, help="lowest score of a finding reported "
                        "(default: 0.3)")
    parser.add_argument("--min-score-file", type=Path, help="CSV class,min_score: per-class minimum scores")
    parser.add_argument("--operating-points", type=Path, help="evaluate's operating_points.json: per-class "
                        "thresholds of --operating-point")
    parser.add_argument("--operating-point", default="best_f1",
                        help="with --operating-points: the point (default: best_f1)")
    parser.add_argument("--max-boxes", type=int, default=100, help="most findings reported per film (default: 100)")
    parser.add_argument("--batch-size", type=int, default=8, help="films taken from the spool at a time (default: 8)")
    parser.add_argument("--result-processes", type=int, default=1,
                        help="processes building the SR and GSPS beside the node's own (default: 1; 0: in the node's "
                        "process)")
    parser.add_argument("--filter", type=Path, help="JSON rules of the instances processed (default: CR, DX, DR and "
                        "Secondary Capture chest films; see docs/clinical.md)")


def _add_delivery_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds of DICOM association, reply and HL7 "
                        "ACK timeouts (default: 30)")
    parser.add_argument("--associations", type=int, default=4, help="sessions sending results to --send-to at "
                        "once (default: 4)")
    parser.add_argument("--retry-first", type=float, default=1.0, help="seconds before the first retry of a failed "
                        "send, doubling each time (default: 1)")
    parser.add_argument("--retry-most", type=float, default=60.0, help="longest wait between retries (default: 60)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    spool = args.spool or workspace() / "node"
    if args.status:
        return _print_status(spool)
    _check_arguments(args)
    return _serve(_make_node(args, spool))


def _serve(node) -> int:  # noqa: ANN001 - chestdet.clinical.node.Node
    """Run the node until SIGTERM or Ctrl-C, then stop it in order (the round in progress ends)."""
    from pynetdicom import _config as pynetdicom_config

    # This process sends results from their spool files as stored, instead of decoding and re-encoding each.
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    for handler in logging.getLogger("chestdet").handlers:  # a service's log lines carry the time
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    stopping = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: stopping.append(number) or node.stop_soon())
    node.start()
    try:
        while not node.wait(1.0):
            pass
    finally:
        node.stop()
    log.info("DICOM node stopped (%s)", signal.Signals(stopping[0]).name if stopping else "stopped")
    return ExitStatus.SUCCESS


def _make_node(args: argparse.Namespace, spool: Path):  # noqa: ANN202 - chestdet.clinical.node.Node
    from chestdet.clinical.filters import load_filter
    from chestdet.clinical.node import Node, NodeSettings
    from chestdet.clinical.results import model_info
    from chestdet.clinical.scp import Timeouts
    from chestdet.detection.thresholds import choose_thresholds
    from chestdet.export.backends import choose_backend, gpu_available, open_backend
    from chestdet.export.identity import model_labels

    class_names = model_labels(args.model).ids
    thresholds = choose_thresholds(args.min_score, class_names, args.min_score_file, args.operating_points,
                                   args.operating_point)
    has_gpu = args.backend == "auto" and (args.model / TFLITE_FILE).is_file() and gpu_available()
    kind = choose_backend(args.backend, args.model, has_gpu)
    timeouts = Timeouts(acse=args.timeout, dimse=args.timeout, network=max(60.0, 2 * args.timeout),
                        connect=args.timeout)
    settings = NodeSettings(
        ae_title=args.ae_title, spool=spool, send_to=args.send_to, host=args.host, port=args.port, hl7=args.hl7,
        batch_size=args.batch_size, result_processes=args.result_processes, associations=args.associations,
        accept=load_filter(args.filter), thresholds=thresholds,
        max_boxes=args.max_boxes, retry_first=args.retry_first, retry_most=args.retry_most, timeouts=timeouts,
    )
    model = model_info(args.model)
    log.info("model %s (%s backend), results to %s, spool %s", model.label, kind, args.send_to, spool)
    return Node(settings, open_backend(kind, args.model, 1, args.threads), class_names, model)


def _print_status(spool: Path) -> int:
    from chestdet.clinical.node import read_status

    status = read_status(spool)
    if status is None:
        raise UserError(f"--spool {spool}: no status.json (has a node run with this spool?)")
    sys.stdout.write(json.dumps(status, indent=2) + "\n")
    return ExitStatus.SUCCESS


def _check_arguments(args: argparse.Namespace) -> None:
    if args.model is None or args.send_to is None:
        raise UserError("--model and --send-to are needed (or --status to look at a node)")
    if not args.model.is_dir():
        raise UserError(f"--model {args.model}: not a directory (expected an export directory of export.py)")
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: not a port number")
    if not 0.0 <= args.min_score <= 1.0:
        raise UserError(f"--min-score {args.min_score}: must be between 0 and 1")
    for flag, value in (("--batch-size", args.batch_size), ("--max-boxes", args.max_boxes)):
        if value < 1:
            raise UserError(f"{flag} {value}: must be at least 1")
    if args.associations < 1:
        raise UserError(f"--associations {args.associations}: must be at least 1")
    if args.result_processes < 0:
        raise UserError(f"--result-processes {args.result_processes}: must be 0 or more")
    for flag, value in (("--timeout", args.timeout), ("--retry-first", args.retry_first),
                        ("--retry-most", args.retry_most)):
        if value <= 0:
            raise UserError(f"{flag} {value}: must be more than 0")
    if not 0 < len(args.ae_title) <= 16:
        raise UserError(f"--ae-title {args.ae_title!r}: 1 to 16 characters")


def entry() -> None:
    exit_with(main)


if __name__ == "__main__":
    entry()
