"""Benchmark the DICOM node through a real Orthanc: latency from C-STORE to the SR back in Orthanc, and a burst.

    python benchmarks/bench_dicom_node.py --images DIR --work-dir W                # a random-weight 256x256 export
    python benchmarks/bench_dicom_node.py --images DIR --work-dir W --model EXPORT

Orthanc (Debian's, with its Lua script routing CR/DX films to the node, as in the tests) and the node
(scripts/dicom_node.py, TFLite, its default threads) run as their own processes on this machine.
The films are DX, MONOCHROME2, 8-bit, uncompressed DICOMs made from the PNGs in --images (cycled,
each with its own SOP Instance UID).

- latency: --latency-count films, one at a time, C-STOREd to Orthanc from a modality AE; each is timed
  from the start of its C-STORE until Orthanc holds its SR (Orthanc's /tools/lookup of the SR's UID,
  which follows from the film's, every 20 ms); p50, p95 and the largest;
- burst: --burst films sent to Orthanc by dcmtk's storescu over one association; the node's rate is
  the films over the time from storescu's start until Orthanc holds every SR and GSPS (its instance
  count, every 100 ms); set against detect.py (--backend tflite, same thresholds) on the same images
  as PNG, run alone beforehand: its own last-line rate, and its whole process;
- the node alone: the same burst sent by storescu straight to the node, whose results go to dcmtk's
  storescp --ignore (it accepts and discards them), timed until the last film is done in the spool;
  and Orthanc alone: how fast it takes in the films and the node's SR and GSPS from storescu.

Both use --min-score 0.005 and --max-boxes --boxes (default 2, about what a chest film shows): a
random-weight export scores every box about 0.01, so every film gets that many boxes in its SR and
GSPS, and detect draws as many.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO

LAST_LINE = re.compile(r"(\d+) images in ([\d.]+) s = ([\d.]+) images/s")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True, help="folder of PNG chest X-rays (e.g. NIH images)")
    parser.add_argument("--work-dir", type=Path, default=REPO / "workspace" / "bench" / "dicom-node")
    parser.add_argument("--model", type=Path, help="export directory (default: a random-weight 256x256 one, made "
                        "once in the work dir)")
    parser.add_argument("--latency-count", type=int, default=100)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--boxes", type=int, default=2, help="boxes reported (and drawn) per film (default: 2)")
    return parser


def random_export(work_dir: Path) -> Path:
    export = work_dir / "random-256" / "export"
    if not (export / "model.tflite").is_file():
        from tests.support.model_fixtures import make_tiny_export

        shutil.rmtree(export.parent, ignore_errors=True)
        make_tiny_export(export.parent, image_size=256)
    return export


def make_films(pngs: list[Path], folder: Path, count: int, seed: str) -> tuple[list[Path], Path]:
    """`count` DICOM films and, beside them, the same images as PNG links; made once per seed."""
    from tests.support.dicom_films import Study, film_dataset, gray_from_png

    films, links = folder / "films", folder / "png"
    if films.is_dir() and len(list(films.iterdir())) == count:
        return sorted(films.iterdir()), links
    shutil.rmtree(folder, ignore_errors=True)
    films.mkdir(parents=True)
    links.mkdir()
    study = Study(seed=seed, accession=seed[:16])
    for number in range(count):
        png = pngs[number % len(pngs)]
        dataset = film_dataset(gray_from_png(png), "mono2-8bit", study, number + 1)
        dataset.save_as(films / f"film_{number + 1:05d}.dcm", enforce_file_format=True)
        (links / f"image_{number + 1:05d}.png").symlink_to(png.resolve())
    return sorted(films.iterdir()), links


def thresholds(boxes: int) -> list[str]:
    return ["--min-score", "0.005", "--max-boxes", str(boxes)]


def run_detect(model: Path, pngs: Path, out: Path, boxes: int) -> tuple[float, float, str]:
    """detect.py alone: (its last-line rate, its whole-process rate, the last line)."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, str(REPO / "scripts" / "detect.py"), "--model", str(model), "--input", str(pngs),
               "--output-dir", str(out), "--backend", "tflite", *thresholds(boxes), "--no-progress"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    whole = time.perf_counter() - started
    line = [m for m in map(LAST_LINE.search, done.stderr.splitlines()) if m][-1]
    return float(line[3]), int(line[1]) / whole, line[0]


def latencies(orthanc, films: list[Path], model: Path) -> list[float]:  # noqa: ANN001 - tests.support.orthanc.Orthanc
    """Seconds from each film's C-STORE to its SR in Orthanc, one film at a time."""
    import pydicom
    import requests
    from pynetdicom import AE

    from chestdet.clinical.results import model_info, result_uids

    info, seconds = model_info(model), []
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(pydicom.dcmread(films[0], stop_before_pixels=True).SOPClassUID)
    association = ae.associate("127.0.0.1", orthanc.dicom_port, ae_title="ORTHANC")
    try:
        for film in films:
            dataset = pydicom.dcmread(film)
            wanted = result_uids(dataset, info).sr_instance
            started = time.perf_counter()
            assert association.send_c_store(dataset).Status == 0
            while not requests.post(f"{orthanc.url}/tools/lookup", data=wanted, timeout=10).json():
                assert time.perf_counter() - started < 60, f"no SR for {film.name} after 60 s"
                time.sleep(0.02)
            seconds.append(time.perf_counter() - started)
    finally:
        association.release()
    return seconds


def burst(orthanc, films: list[Path]) -> float:  # noqa: ANN001 - tests.support.orthanc.Orthanc
    """Seconds from storescu's start until Orthanc holds every film, SR and GSPS of the burst."""
    before = orthanc.get("/statistics")["CountInstances"]
    wanted = before + 3 * len(films)
    started = time.perf_counter()
    sender = subprocess.Popen([shutil.which("storescu") or "storescu", "-aet", "MODALITY", "-aec", "ORTHANC",
                               "127.0.0.1", str(orthanc.dicom_port), *map(str, films)])
    while orthanc.get("/statistics")["CountInstances"] < wanted:
        assert time.perf_counter() - started < 1800, "the burst did not finish in 30 minutes"
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    assert sender.wait() == 0
    return seconds


def node_alone(model: Path, work: Path, films: list[Path], boxes: int) -> float:
    """Seconds for the node to take the burst from storescu and have every film's results accepted."""
    from tests.support.node_process import NodeProcess
    from tests.support.processes import free_port

    sink_port = free_port()
    sink = subprocess.Popen([shutil.which("storescp") or "storescp", "--fork", "--ignore", "-aet", "SINK",
                             str(sink_port)])
    shutil.rmtree(work / "spool-alone", ignore_errors=True)
    node = NodeProcess(model, work / "spool-alone", free_port(), f"SINK@127.0.0.1:{sink_port}", thresholds(boxes),
                       backend=["--backend", "tflite"])
    try:
        node.start()
        started = time.perf_counter()
        sender = subprocess.Popen([shutil.which("storescu") or "storescu", "-aet", "MODALITY", "-aec", "CHESTDET",
                                   "127.0.0.1", str(node.port), *map(str, films)])
        done = work / "spool-alone" / "done"
        while sum(1 for _ in done.glob("*.dcm")) < len(films):
            assert time.perf_counter() - started < 1800, "the node did not finish the burst in 30 minutes"
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        assert sender.wait() == 0
    finally:
        node.stop()
        sink.terminate()
        sink.wait()
    return seconds


def orthanc_intake(orthanc, work: Path, count: int) -> dict[str, float]:  # noqa: ANN001
    """Instances per second Orthanc takes in from storescu: films, and the node's SRs and GSPSs."""
    rates = {}
    for kind, pattern in (("films", "*.dcm"), ("SR", "*/sr.dcm"), ("GSPS", "*/gsps.dcm")):
        files = sorted((work / "spool-alone" / "done").glob(pattern))[:count]
        started = time.perf_counter()
        subprocess.run([shutil.which("storescu") or "storescu", "-R", "-aet", "MODALITY", "-aec", "ORTHANC",
                        "127.0.0.1", str(orthanc.dicom_port), *map(str, files)], check=True, capture_output=True)
        rates[kind] = len(files) / (time.perf_counter() - started)
    return rates


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sys.path.insert(0, str(REPO))
    from tests.support.node_process import NodeProcess
    from tests.support.orthanc import Orthanc
    from tests.support.processes import free_port

    work = args.work_dir
    load = os.getloadavg()
    model = args.model or random_export(work)
    pngs = sorted(args.images.glob("*.png"))
    if not pngs:
        raise SystemExit(f"--images {args.images}: no PNG images")
    timed, _ = make_films(pngs, work / "latency", args.latency_count, "latency films")
    bursting, links = make_films(pngs, work / "burst", args.burst, "burst films")
    detect_rate, detect_whole, detect_line = run_detect(model, links, work / "detect-out", args.boxes)
    for old in ("orthanc", "orthanc-intake"):
        shutil.rmtree(work / old, ignore_errors=True)
    shutil.rmtree(work / "spool", ignore_errors=True)
    orthanc = Orthanc(work / "orthanc", free_port()).start()
    node = NodeProcess(model, work / "spool", orthanc.node_port, orthanc.address, thresholds(args.boxes),
                       backend=["--backend", "tflite"])
    try:
        node.start()
        seconds = latencies(orthanc, timed, model)
        burst_seconds = burst(orthanc, bursting)
    finally:
        node.stop()
        orthanc.stop()
    alone_rate = args.burst / node_alone(model, work, bursting, args.boxes)
    intake_pacs = Orthanc(work / "orthanc-intake", free_port()).start()
    try:
        intake = orthanc_intake(intake_pacs, work, min(args.burst, 200))
    finally:
        intake_pacs.stop()
    node_rate = args.burst / burst_seconds
    cuts = statistics.quantiles(seconds, n=20, method="inclusive")
    print(f"model: {model}; {args.boxes} boxes per film; load average at the start {load[0]:.1f}, "
          f"at the end {os.getloadavg()[0]:.1f}")
    print(f"latency over {len(seconds)} films one at a time: p50 {statistics.median(seconds):.2f} s, "
          f"p95 {cuts[18]:.2f} s, max {max(seconds):.2f} s (goal p50 <= 2 s)")
    print(f"burst of {args.burst}: {burst_seconds:.1f} s = {node_rate:.2f} films/s through Orthanc")
    print(f"detect.py on the same {args.burst} PNGs: {detect_line} (whole process {detect_whole:.2f} images/s)")
    print(f"node / detect: {node_rate / detect_rate:.2f}x of its rate, {node_rate / detect_whole:.2f}x of its "
          "whole process (goal >= 0.8x)")
    print(f"the node alone (storescu -> node -> storescp --ignore): {alone_rate:.2f} films/s = "
          f"{alone_rate / detect_rate:.2f}x of detect's rate")
    print("Orthanc alone takes in " + ", ".join(f"{rate:.1f} {kind}/s" for kind, rate in intake.items())
          + f": at most {1 / sum(1 / rate for rate in intake.values()):.2f} films/s with their SR and GSPS")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
