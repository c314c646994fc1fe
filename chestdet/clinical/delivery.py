"""Sending processed films' results: a film is done only when the destination accepted its SR and GSPS
(and, with HL7, when the study's ORU^R01 was acknowledged).

One round sends over up to `associations` sessions with the destination at once (each C-STORE waits
for its answer, so one session leaves both ends idle between stores), each storing its films' two
objects in turn, oldest first; a round takes at most `ROUND_FILMS` films a session, so that a
destination serving one association at a time answers the others within their timeout. A film is
moved to done/ the moment its objects are accepted, so a failure part-way loses nothing and repeats
nothing that was confirmed. With HL7, the accepted films are marked `dicom-sent` and grouped
by study; a study's message waits while another of its films is still in the spool (a PACS sends a
study's films together), then goes, and its films are done when the ACK comes. A re-send after a
crash carries the same UIDs and the same message control ID, so it replaces instead of adding.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pydicom

from chestdet.clinical.hl7 import Hl7Destination, oru_r01
from chestdet.clinical.senders import Destination
from chestdet.clinical.spool import FINDINGS_FILE, GSPS_FILE, SR_FILE, Spool

log = logging.getLogger("chestdet.clinical.node")

ROUND_FILMS = 8


class Delivery:
    def __init__(self, spool: Spool, destination: Destination, hl7: Hl7Destination | None = None,
                 sending_facility: str = "CHESTDET", associations: int = 4) -> None:
        self.spool, self.destination, self.hl7, self.sending_facility = spool, destination, hl7, sending_facility
        self.associations = associations
        self.more_to_send = False  # the last round left films for the next
        self._study: dict[str, str] = {}

    def deliver(self, uids: Sequence[str]) -> int:
        """Send the films' results; returns how many films are done. Raises SendError when the
        destination (or the HL7 receiver) fails; what was confirmed before stays confirmed."""
        needing_dicom = [uid for uid in uids if not self.spool.dicom_sent(uid)]
        round_films = self.associations * ROUND_FILMS
        self.more_to_send = len(needing_dicom) > round_films
        this_round = needing_dicom[:round_films]
        lanes = [lane for first in range(self.associations) if (lane := this_round[first::self.associations])]
        done = 0
        if lanes:
            with ThreadPoolExecutor(len(lanes), "node-send") as pool:
                futures = [pool.submit(self._send_lane, lane) for lane in lanes]
            errors = [error for future in futures if (error := future.exception()) is not None]
            if errors:
                raise errors[0]
            done = sum(future.result() for future in futures)
        if self.hl7 is not None:
            done += self._send_hl7([uid for uid in uids if self.spool.dicom_sent(uid)])
        return done

    def _send_lane(self, uids: Sequence[str]) -> int:
        """One session's films, in turn; returns how many are done."""
        done = 0
        with self.destination.open() as store:
            for uid in uids:
                store([self.spool.results(uid) / SR_FILE, self.spool.results(uid) / GSPS_FILE])
                if self.hl7 is None:
                    self._finish(uid)
                    done += 1
                else:
                    self.spool.mark_dicom_sent(uid)
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
