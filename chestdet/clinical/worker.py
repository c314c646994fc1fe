"""Detection on the spooled films, in batches, with the model loaded once.

`Worker.process(uids)` takes a batch of waiting films and, in threads, decodes each, runs the backend
on it and writes its SR, GSPS and findings into the spool; the SR and GSPS are built by a
`ResultBuilder`, in worker processes by default. The boxes are those detect would draw for
the same image: the same decoding, the same rounding as detections.csv, the same thresholds and
limit. A film that cannot be read goes to failed/ with its reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pydicom

from chestdet.clinical.result_pool import EncodedResults, ResultBuilder
from chestdet.clinical.results import FINDING_CODES, ModelInfo
from chestdet.clinical.spool import GSPS_FILE, SR_FILE, Spool
from chestdet.core.detections import Detection
from chestdet.core.imaging import ImageReadError, dicom_pixels
from chestdet.detection.detect import Loaded, infer
from chestdet.detection.inputs import InputImage
from chestdet.detection.thresholds import Thresholds
from chestdet.export.backends import Backend, ModelOutput, to_pixels

log = logging.getLogger("chestdet.clinical.node")


@dataclass(frozen=True)
class Film:
    """A spooled film read for processing: its header, and its pixels prepared for the backend."""

    uid: str
    dataset: pydicom.Dataset
    loaded: Loaded


class Worker:
    def __init__(self, spool: Spool, backend: Backend, class_names: Mapping[int, str], model: ModelInfo,
                 thresholds: Thresholds, max_boxes: int = 100, result_processes: int = 1) -> None:
        self.spool, self.backend, self.class_names, self.model = spool, backend, dict(class_names), model
        self.thresholds, self.max_boxes = thresholds, max_boxes
        self.lowest = min([thresholds.default, *thresholds.per_class.values()])
        self.builder = ResultBuilder(result_processes)
        self.pool = ThreadPoolExecutor(backend.concurrency + result_processes + 1, "node-worker")

    def process(self, uids: Sequence[str]) -> list[str]:
        """Results for each film into the spool; returns the films processed (the others went to failed/).

        Each film goes through read, inference and results in one of the pool's threads: enough for
        the backend's inferences, the result processes' builds and one read at once."""
        started = time.perf_counter()
        return [uid for uid in self.pool.map(lambda uid: self._one(uid, started), uids) if uid]

    def _one(self, uid: str, started: float) -> str | None:
        film = self._read(uid)
        if film is None:
            return None
        if film.loaded.error is not None:
            self._fail(film.uid, film.loaded.error)
            return None
        return self._write(film, infer(self.backend, [film.loaded])[0], started)

    def close(self) -> None:
        self.pool.shutdown()
        self.builder.close()

    def _read(self, uid: str) -> Film | None:
        path = self.spool.film(uid)
        item = InputImage(uid, path, 0)
        try:
            dataset = pydicom.dcmread(path)
            pixels = dicom_pixels(dataset, path)
            return Film(uid, dataset, Loaded(item, pixels, self.backend.prepare(pixels)))
        except FileNotFoundError:
            return None  # delivered or failed meanwhile
        except ImageReadError as error:
            return Film(uid, pydicom.Dataset(), Loaded(item, error=error.reason))
        except Exception as error:  # noqa: BLE001 - pydicom and the decoders raise many types for a bad file
            return Film(uid, pydicom.Dataset(), Loaded(item, error=f"not a readable DICOM file ({error})"))

    def _write(self, film: Film, output: ModelOutput, started: float) -> str | None:
        pixels = film.loaded.pixels
        height, width = pixels.shape[:2]
        kept = [d.as_printed() for d in to_pixels(output, width, height)]
        shown = self.thresholds.shown(kept, self.max_boxes)
        try:
            results = self.builder.build(self.spool.film(film.uid), shown, self.class_names, self.model, self.lowest)
        except FileNotFoundError:
            return None  # failed meanwhile
        except (AttributeError, ValueError, TypeError, KeyError) as error:
            self._fail(film.uid, f"cannot make its results ({type(error).__name__}: {error})")
            return None
        findings = self._findings(film, shown, results, (width, height))
        self.spool.save_results(film.uid, {SR_FILE: results.sr, GSPS_FILE: results.gsps}, findings)
        self.spool.journal("processed", film.uid, findings=len(shown), sr=results.sr_uid)
        log.info("processed %s: %d findings shown (%.2f s)", film.uid, len(shown), time.perf_counter() - started)
        return film.uid

    def _findings(self, film: Film, shown: Sequence[Detection], results: EncodedResults,
                  size: tuple[int, int]) -> dict:
        """What the HL7 result and the status need, kept beside the results (findings.json)."""
        ds = film.dataset
        rows = []
        for d in shown:
            name = self.class_names.get(d.class_id, f"class {d.class_id}")
            code = FINDING_CODES[name].value if name in FINDING_CODES else name
            rows.append({"class": name, "code": code, "score": d.score, "box": [d.xmin, d.ymin, d.xmax, d.ymax]})
        return {
            "film": film.uid, "study": str(ds.get("StudyInstanceUID", "")), "sr": results.sr_uid,
            "gsps": results.gsps_uid, "accession": str(ds.get("AccessionNumber", "")),
            "patient_id": str(ds.get("PatientID", "")), "patient_name": str(ds.get("PatientName", "")),
            "birth_date": str(ds.get("PatientBirthDate", "")), "sex": str(ds.get("PatientSex", "")),
            "study_date": str(ds.get("StudyDate", "")), "study_time": str(ds.get("StudyTime", "")),
            "width": size[0], "height": size[1], "model": self.model.label, "threshold": self.lowest,
            "findings": rows,
        }

    def _fail(self, uid: str, reason: str) -> None:
        log.warning("failed %s: %s", uid, reason)
        try:
            self.spool.fail(uid, reason)
        except FileNotFoundError:  # it left the spool meanwhile
            pass

