"""detect.py on a real (tiny, randomly initialised) export: both backends, the tutorial's numbers, kill -9."""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from chestdet.commands.cli import ExitStatus, run_main
from chestdet.commands.detect import main
from chestdet.core.contracts import JOURNAL
from chestdet.core.detections import Detection
from chestdet.export.agreement import backend_agreement
from tests.conftest import REPO, SAMPLE_IMAGES, SAMPLE_UNLABELED

pytestmark = pytest.mark.slow

LAST_LINE = re.compile(r"^(\d+) images in (\d+\.\d) s = (\d+\.\d\d) images/s; (\d+) errors$", re.M)


@pytest.fixture
def listed_inputs(tmp_path: Path) -> Path:
    """A text list, under a path with spaces: 6 box images, 2 without findings, one broken file.

    The randomly initialised model scores everything about 0.0099, so the runs keep every box.
    """
    folder = tmp_path / "my inputs"
    folder.mkdir()
    names = sorted(SAMPLE_IMAGES.glob("*.png"))[:6] + sorted(SAMPLE_UNLABELED.glob("*.png"))[:2]
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    listing = folder / "images to check.txt"
    listing.write_text("\n".join([str(p) for p in names] + ["broken.png"]) + "\n")
    return listing


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def by_image(rows: list[dict]) -> dict[str, list[Detection]]:
    grouped: dict[str, list[Detection]] = {}
    for r in rows:
        grouped.setdefault(r["image"], []).append(
            Detection(int(r["class_id"]), float(r["score"]), *(float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax")))
        )
    return grouped


def tutorial_detections(saved_model_dir: Path, image_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the OD API tutorial computes: cv2.imread, RGB, detect_fn(input_tensor[tf.newaxis])."""
    import tensorflow as tf

    detect_fn = tutorial_detections.cache.setdefault(saved_model_dir, tf.saved_model.load(str(saved_model_dir)))
    image = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
    result = detect_fn(tf.convert_to_tensor(image)[tf.newaxis, ...])
    count = int(result["num_detections"][0])
    return (result["detection_boxes"][0, :count].numpy(), result["detection_classes"][0, :count].numpy(),
            result["detection_scores"][0, :count].numpy())


tutorial_detections.cache = {}


def test_both_backends_write_every_output_and_agree(tiny_export: Path, listed_inputs: Path, tmp_path: Path, capsys):
    # The list holds absolute paths outside its folder: images are named from the folder holding them all.
    root = Path(os.path.commonpath([listed_inputs.parent, SAMPLE_IMAGES, SAMPLE_UNLABELED]))
    broken = (listed_inputs.parent / "broken.png").relative_to(root).as_posix()
    outputs = {}
    for backend in ("savedmodel", "tflite"):
        out = tmp_path / f"out {backend}"
        argv = ["--model", str(tiny_export), "--input", str(listed_inputs), "--output-dir", str(out),
                "--backend", backend, "--voc-xml", "--min-score", "0.0", "--max-boxes", "5", "--keep-score", "0.0",
                "--no-progress"]
        assert main(argv) == ExitStatus.SUCCESS
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert LAST_LINE.match(last) and last.startswith("9 images in ") and last.endswith("; 1 errors"), last
        assert read_rows(out / "errors.csv")[0]["image"] == broken
        images = read_rows(out / "images.csv")
        assert all(r["image"] == Path(r["path"]).relative_to(root).as_posix() for r in images)
        assert len(images) == 8 and all(int(r["detections"]) > 0 for r in images)
        assert len(list((out / "drawn").rglob("*.jpg"))) == len(list((out / "voc").rglob("*.xml"))) == 8
        outputs[backend] = out
    assert main(argv + ["--strict", "--overwrite"]) == ExitStatus.REJECTS

    from libs.pascal_voc_io import PascalVocReader

    saved = by_image(read_rows(outputs["savedmodel"] / "detections.csv"))
    paths = {r["image"]: Path(r["path"]) for r in read_rows(outputs["savedmodel"] / "images.csv")}
    for name, detections in saved.items():
        xml = next((outputs["savedmodel"] / "voc").rglob(Path(name).stem + ".xml"))
        assert len(PascalVocReader(str(xml)).get_shapes()) == min(5, len(detections))

    for name, detections in saved.items():
        boxes, classes, scores = tutorial_detections(tiny_export / "saved_model", paths[name])
        keep = scores >= 0.0  # the random model scores about 0.0099, so the run keeps everything
        ours = np.array([[d.ymin / 1024, d.xmin / 1024, d.ymax / 1024, d.xmax / 1024] for d in detections])
        np.testing.assert_allclose(ours, boxes[keep], atol=1e-4)
        np.testing.assert_allclose([d.score for d in detections], scores[keep], atol=1e-4)
        assert [d.class_id for d in detections] == classes[keep].astype(int).tolist()

    lite = by_image(read_rows(outputs["tflite"] / "detections.csv"))
    # The random model's eight class scores tie exactly and the two NMS implementations break the tie
    # differently, so only boxes and scores are compared here (a trained model is needed for classes).
    agreement = backend_agreement([saved[k] for k in sorted(saved)], [lite.get(k, []) for k in sorted(saved)],
                                  min_score=0.0, same_class=False)
    print(f"TFLite agreement with the SavedModel on the tiny model (any class): {agreement}")
    assert agreement.reference_boxes == 800 and agreement.share >= 0.95


def test_kill_9_then_resume_through_the_script(tiny_export: Path, tmp_path: Path):
    folder = tmp_path / "many images"
    folder.mkdir()
    sources = sorted(SAMPLE_IMAGES.glob("*.png"))
    for i in range(120):
        os.symlink(sources[i % len(sources)], folder / f"{i:03d}_{sources[i % len(sources)].name}")
    common = ["--model", str(tiny_export), "--input", str(folder), "--backend", "tflite", "--no-progress"]
    full = tmp_path / "full"
    assert main(common + ["--output-dir", str(full)]) == ExitStatus.SUCCESS

    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, str(REPO / "scripts" / "detect.py"), *common, "--output-dir", str(out)])
    journal = out / JOURNAL
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if journal.is_file() and journal.read_bytes().count(b"\n") >= 20:
            break
        time.sleep(0.005)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_before = journal.read_bytes().count(b"\n")
    assert done_before < 120 and not (out / "detections.csv").exists()

    assert run_main(main, common + ["--output-dir", str(out)]) == ExitStatus.ERROR  # needs --resume
    resumed = subprocess.run([sys.executable, str(REPO / "scripts" / "detect.py"), *common, "--output-dir", str(out),
                              "--resume"], capture_output=True, text=True, check=True)
    assert f"resuming: {done_before} of 120 images already done" in resumed.stderr
    assert LAST_LINE.search(resumed.stderr).group(1) == str(120 - done_before)
    for name in ("detections.csv", "images.csv", "detections.json", "coco_images.json", "errors.csv"):
        assert (out / name).read_bytes() == (full / name).read_bytes(), name
    drawn = sorted(p.name for p in (out / "drawn").iterdir())
    assert drawn == sorted(p.name for p in (full / "drawn").iterdir()) and len(drawn) == 120
    assert all((out / "drawn" / n).read_bytes() == (full / "drawn" / n).read_bytes() for n in drawn)
    shutil.rmtree(folder)


def test_savedmodel_calls_side_by_side_find_what_one_call_at_a_time_finds(trained_export: Path, tmp_path: Path):
    """Without a GPU, a fresh detect.py process runs one SavedModel call per CPU, each op on one thread.

    This test's own process started TF's runtime long ago, so its in-process run takes one call at a
    time with TF's default threading: the two must find the same boxes (the 16 images the model was
    trained on, so that it is confident).
    """
    from chestdet.core.system import available_cpus

    folder = tmp_path / "images"
    folder.mkdir()
    for path in sorted(SAMPLE_IMAGES.glob("*.png"))[:16]:
        (folder / path.name).symlink_to(path)
    common = ["--model", str(trained_export), "--input", str(folder), "--backend", "savedmodel", "--no-progress"]
    assert main(common + ["--output-dir", str(tmp_path / "one call")]) == ExitStatus.SUCCESS
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "detect.py"), *common, "--output-dir",
                           str(tmp_path / "side by side")], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"; {available_cpus()} call(s) at once" in done.stderr
    one = by_image(read_rows(tmp_path / "one call" / "detections.csv"))
    side = by_image(read_rows(tmp_path / "side by side" / "detections.csv"))
    assert sorted(one) == sorted(side)
    agreement = backend_agreement([one[k] for k in sorted(one)], [side[k] for k in sorted(one)], min_score=0.1)
    assert agreement.reference_boxes >= 16 and agreement.share == 1.0, agreement


def test_tflite_detection_never_imports_tensorflow(trained_export: Path, tmp_path: Path):
    """On a machine without a GPU device, the TFLite backend runs on LiteRT and the GPU check needs no
    TensorFlow: its 3 s import is not paid before the first result."""
    from chestdet.export.backends import gpu_available

    if gpu_available():
        pytest.skip("a GPU machine imports TensorFlow to ask whether it is usable")
    folder = tmp_path / "images"
    folder.mkdir()
    for path in sorted(SAMPLE_IMAGES.glob("*.png"))[:4]:
        (folder / path.name).symlink_to(path)
    out = tmp_path / "out"
    code = ("import sys; from chestdet.commands.detect import main; "
            f"status = main(['--model', {str(trained_export)!r}, '--input', {str(folder)!r}, "
            f"'--output-dir', {str(out)!r}, '--no-progress']); "
            "print('tensorflow imported' if 'tensorflow' in sys.modules else 'no tensorflow'); sys.exit(status)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "no tensorflow"
    assert len(read_rows(out / "detections.csv")) > 0 and len(list((out / "drawn").glob("*.jpg"))) == 4
