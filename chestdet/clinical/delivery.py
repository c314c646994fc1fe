"""Sending processed films' results: a film is done only when the destination accepted its SR and GSPS
(and, with HL7, when the study's ORU^R01 was acknowledged).

One round opens the destination once and stores each film's two objects in turn, oldest first; a
film is moved to done/ the moment its objects are accepted, so a failure part-way loses nothing and
repeats nothing that was confirmed. With HL7, the accepted films are marked `dicom-sent` and grouped
by study; a study's message waits while another of its films is still in the spool (a PACS sends a
study's films together), then goes, and its films are done when the ACK comes. A re-send after a
crash carries the same UIDs and the same message control ID, so it replaces instead of adding.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import Sequence

import pydicom

from chestdet.clinical.hl7 import Hl7Destination, oru_r01
from chestdet.clinical.senders import Destination, Store
from chestdet.clinical.spool import FINDINGS_FILE, GSPS_FILE, SR_FILE, Spool

log = logging.getLogger("chestdet.clinical.node")


class Delivery:
    def __init__(self, spool: Spool, destination: Destination, hl7: Hl7Destination | None = None,
                 sending_facility: str = "CHESTDET") -> None:
        self.spool, self.destination, self.hl7, self.sending_facility = spool, destination, hl7, sending_facility
        self._study: dict[str, str] = {}

    def deliver(self, uids: Sequence[str]) -> int:
        """Send the films' results; returns how many films are done. Raises SendError when the
        destination (or the HL7 receiver) fails; what was confirmed before stays confirmed."""
        done = 0
        needing_dicom = [uid for uid in uids if not self.spool.dicom_sent(uid)]
        with contextlib.ExitStack() as stack:
            store: Store | None = None
            for uid in needing_dicom:
                store = store or stack.enter_context(self.destination.open())
                store([self.spool.results(uid) / SR_FILE, self.spool.results(uid) / GSPS_FILE])
                if self.hl7 is None:
                    self._finish(uid)
                    done += 1
                else:
                    self.spool.mark_dicom_sent(uid)
        if self.hl7 is not None:
            done += self._send_hl7(uids)
        return done

    def _send_hl7(self, uids: Sequence[str]) -> int:
        studies: dict[str, list[dict]] = defaultdict(list)
        for uid in uids:
            findings = json.loads((self.spool.results(uid) / FINDINGS_FILE).read_text(encoding="utf-8"))
            studies[findings["study"]].append(findings)
        unsent = self._studies_of([uid for uid in self.spool.waiting() if not self.spool.dicom_sent(uid)])
        done = 0
        for study, films in studies.items():
            if study in unsent:
                continue  # the rest of the study first, for one message
            message = oru_r01(films, self.sending_facility)
            self.hl7.send(message)
            log.info("HL7 ORU^R01 %s for study %s acknowledged (%d films)", message.segment("MSH")[10], study,
                     len(films))
            for film in films:
                self._finish(film["film"], hl7=str(message.segment("MSH")[10]))
                done += 1
        return done

    def _studies_of(self, uids: Sequence[str]) -> set[str]:
        """The studies of films still in the spool (their headers, read once each)."""
        for uid in uids:
            if uid not in self._study:
                try:
                    header = pydicom.dcmread(self.spool.film(uid), stop_before_pixels=True,
                                             specific_tags=["StudyInstanceUID"])
                    self._study[uid] = str(header.get("StudyInstanceUID", ""))
                except (OSError, ValueError, pydicom.errors.InvalidDicomError):
                    self._study[uid] = ""
        return {self._study[uid] for uid in uids}

    def _finish(self, uid: str, **details: object) -> None:
        self._study.pop(uid, None)
        self.spool.finish(uid, destination=self.destination.name, **details)
        log.info("sent %s: SR and GSPS accepted by %s", uid, self.destination.name)
