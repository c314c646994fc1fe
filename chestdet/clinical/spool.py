"""The DICOM node's spool: what it acknowledged is on disk before the C-STORE is answered, and stays
there until the destination has accepted its results.

    SPOOL/incoming/<uid>.dcm     a received film (its encoded dataset with file meta), waiting
    SPOOL/results/<uid>/         its results once processed: sr.dcm, gsps.dcm, findings.json, and
                                 dicom-sent when the destination took them but HL7 has not
    SPOOL/done/<uid>.dcm, <uid>/ delivered
    SPOOL/failed/<uid>.dcm, .txt a film that cannot be read, and why
    SPOOL/journal.jsonl          one line per event, appended and synced
    SPOOL/status.json            queue length and last errors (chestdet.clinical.node)

Every step is a write under a temporary name, a sync and a rename, so a kill at any moment leaves
each instance in exactly one of these states; `recover` clears the temporaries. The folders are the
truth a restart resumes from; the journal is the record of what happened, in order.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

from chestdet.core import atomic
from chestdet.core.errors import InputError

INCOMING, RESULTS, DONE, FAILED = "incoming", "results", "done", "failed"
JOURNAL, STATUS = "journal.jsonl", "status.json"
SR_FILE, GSPS_FILE, FINDINGS_FILE, DICOM_SENT = "sr.dcm", "gsps.dcm", "findings.json", "dicom-sent"
SOP_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


class SpoolError(InputError):
    """A spool folder that cannot be used."""


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        try:
            for name in (INCOMING, RESULTS, DONE, FAILED):
                (self.root / name).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SpoolError(f"{self.root}: cannot make the spool folders ({error.strerror})") from None
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- where things are

    def film(self, uid: str) -> Path:
        return self.root / INCOMING / f"{uid}.dcm"

    def results(self, uid: str) -> Path:
        return self.root / RESULTS / uid

    @property
    def status_path(self) -> Path:
        return self.root / STATUS

    def waiting(self) -> list[str]:
        """Received films, oldest first."""
        return [path.stem for path in _by_age((self.root / INCOMING).glob("*.dcm"))]

    def unprocessed(self) -> list[str]:
        return [uid for uid in self.waiting() if not (self.results(uid) / FINDINGS_FILE).is_file()]

    def processed(self) -> list[str]:
        """Films with results not yet delivered, oldest first."""
        return [uid for uid in self.waiting() if (self.results(uid) / FINDINGS_FILE).is_file()]

    def count(self, state: str) -> int:
        return sum(1 for _ in (self.root / state).glob("*.dcm"))

    # ---------------------------------------------------------------- the steps

    def receive(self, uid: str, encoded: bytes, **details: object) -> bool:
        """Keep a received film before its C-STORE is answered; False when it is already waiting."""
        check_uid(uid)
        final = self.film(uid)
        if final.exists():
            return False
        _write_synced(final, encoded)
        self.journal("received", uid, **details)
        return True

    def save_results(self, uid: str, files: Mapping[str, bytes], findings: Mapping) -> None:
        """A film's results, published whole: a folder written under a temporary name, then renamed."""
        staging = Path(tempfile.mkdtemp(prefix=f".{uid}.", suffix=".tmp", dir=self.root / RESULTS))
        try:
            for name, data in {**files, FINDINGS_FILE: json.dumps(findings, indent=1).encode()}.items():
                _write_synced(staging / name, data, sync_folder=False)
            atomic.sync_folder(staging)
            target = self.results(uid)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
            atomic.sync_folder(target.parent)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def mark_dicom_sent(self, uid: str) -> None:
        _write_synced(self.results(uid) / DICOM_SENT, b"")

    def dicom_sent(self, uid: str) -> bool:
        return (self.results(uid) / DICOM_SENT).is_file()

    def finish(self, uid: str, **details: object) -> None:
        """Delivered: the film, then its results, into done/ (the film's move is the commit)."""
        with self._lock:
            os.replace(self.film(uid), self.root / DONE / f"{uid}.dcm")
            atomic.sync_folder(self.root / DONE)
            self._file_results(uid)
        self.journal("sent", uid, **details)

    def fail(self, uid: str, reason: str) -> None:
        """A film that cannot be read goes to failed/, with its reason beside it."""
        atomic.write_text(self.root / FAILED / f"{uid}.txt", reason + "\n")
        os.replace(self.film(uid), self.root / FAILED / f"{uid}.dcm")
        atomic.sync_folder(self.root / FAILED)
        shutil.rmtree(self.results(uid), ignore_errors=True)
        self.journal("failed", uid, reason=reason)

    def recover(self) -> int:
        """After a kill: drop temporaries (never acknowledged or never published) and finish half-done moves;
        returns how many films are waiting."""
        for stale in [*(self.root / INCOMING).glob(".*.tmp"), *(self.root / RESULTS).glob(".*.tmp")]:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
        for folder in (self.root / RESULTS).iterdir():
            if not self.film(folder.name).exists():
                if (self.root / DONE / f"{folder.name}.dcm").exists():
                    self._file_results(folder.name)
                else:
                    shutil.rmtree(folder)
        return len(self.waiting())

    def _file_results(self, uid: str) -> None:
        results, filed = self.results(uid), self.root / DONE / uid
        if results.exists():
            if filed.exists():
                shutil.rmtree(filed)
            os.replace(results, filed)
            atomic.sync_folder(self.root / DONE)

    # ---------------------------------------------------------------- the record

    def journal(self, event: str, uid: str, **details: object) -> None:
        line = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
                "event": event, "uid": uid, **details}
        with self._lock, open(self.root / JOURNAL, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line, default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def events(self) -> Iterator[dict]:
        """The journal's lines, oldest first (a line cut by a kill is skipped)."""
        try:
            lines = (self.root / JOURNAL).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            try:
                yield json.loads(line)
            except ValueError:
                continue


def check_uid(uid: str) -> str:
    """A SOP Instance UID fit to be a file name (digits and dots, at most 64 characters)."""
    if not (0 < len(uid) <= 64 and SOP_UID.fullmatch(uid)):
        raise SpoolError(f"{uid!r} is not a valid SOP Instance UID")
    return uid


def _write_synced(final: Path, data: bytes, sync_folder: bool = True) -> None:
    """Write `data` under a temporary name beside `final`, sync it, rename it, sync the folder."""
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(name, final)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    if sync_folder:
        atomic.sync_folder(final.parent)


def _by_age(paths: Iterator[Path]) -> list[Path]:
    stamped = []
    for path in paths:
        try:
            stamped.append((path.stat().st_mtime_ns, path.name, path))
        except FileNotFoundError:  # moved on by another thread meanwhile
            continue
    return [path for _, _, path in sorted(stamped)]
