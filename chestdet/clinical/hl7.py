"""A study's preliminary findings as an HL7 v2.5.1 ORU^R01, sent over MLLP (the `hl7` package).

One message per study and delivery: PID from the films' patient, ORC/OBR with the accession number
(placer and filler order number) and result status P (preliminary), then one OBX per finding: the
class coded in SNOMED CT (OBX-3), its score, box and film (OBX-5), status P. A study with no finding
gets one OBX saying "no abnormality detected". The message control ID follows from the films and the
model, so a retried message is recognisably the same one. The sender waits for the ACK: only MSA
AA (or CA) for this control ID counts; anything else, or silence, raises `SendError` to be retried.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import hl7
from hl7.mllp import open_hl7_connection

from chestdet.clinical.results import CHEST_XRAY, NO_FINDING
from chestdet.clinical.senders import SendError
from chestdet.core.errors import InputError

ADDRESS = re.compile(r"(?P<host>[^:]+):(?P<port>\d{1,5})")
ACCEPTED = ("AA", "CA")
_SEPARATORS = hl7.parse("MSH|^~\\&|")  # an empty message whose separators escape field values


class Hl7AddressError(InputError):
    """An --hl7 value that is not HOST:PORT."""


def escape(value: object) -> str:
    return _SEPARATORS.escape(str(value or ""))


def control_id(films: Sequence[Mapping]) -> str:
    """20 characters from the films' SR UIDs (which already carry the model)."""
    digest = hashlib.sha256("|".join(sorted(str(f["sr"]) for f in films)).encode()).hexdigest()
    return digest[:20].upper()


def oru_r01(films: Sequence[Mapping], sending_facility: str, now: datetime.datetime | None = None,
            receiving: tuple[str, str] = ("", "")) -> hl7.Message:
    """The ORU^R01 of one study's processed films (findings.json records of chestdet.clinical.worker)."""
    first = films[0]
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d%H%M%S")
    accession = escape(first.get("accession"))
    code = f"{CHEST_XRAY.value}^{escape(CHEST_XRAY.meaning)}^SCT"
    segments = [
        f"MSH|^~\\&|CHESTDET|{escape(sending_facility)}|{escape(receiving[0])}|{escape(receiving[1])}|{stamp}||"
        f"ORU^R01^ORU_R01|{control_id(films)}|P|2.5.1",
        f"PID|1||{escape(first.get('patient_id'))}||{_name(first.get('patient_name'))}||"
        f"{escape(first.get('birth_date'))}|{escape(first.get('sex'))}",
        f"ORC|RE|{accession}|{accession}||CM",
        f"OBR|1|{accession}|{accession}|{code}|||{escape(first.get('study_date'))}{escape(first.get('study_time'))}"
        f"|||||||||||{accession}||||{stamp}||RAD|P",
    ]
    observations = [(finding, film) for film in films for finding in film["findings"]]
    for number, (finding, film) in enumerate(observations, start=1):
        box = ",".join(f"{v:.1f}" for v in finding["box"])
        text = f"score {finding['score']:.3f}; box {box} px; image {film['film']}"
        segments.append(f"OBX|{number}|ST|{escape(finding['code'])}^{escape(finding['class'])}^SCT|{number}|"
                        f"{escape(text)}||||||P|||{stamp}")
    if not observations:
        none = f"{NO_FINDING.value}^{escape(NO_FINDING.meaning)}^SCT"
        threshold = min(float(f.get("threshold", 0.0)) for f in films)
        segments.append(f"OBX|1|CWE|{none}|1|{none}||||||P|||{stamp}")
        segments.append(f"NTE|1||no finding scored {threshold:g} or more")
    model = escape(first.get("model"))
    segments.append(f"NTE|{2 if not observations else 1}||Preliminary AI result ({model}), not verified by a "
                    "radiologist; chestdet is not a medical device.")
    return hl7.parse("\r".join(segments))


def _name(dicom_name: object) -> str:
    """A DICOM person name (family^given^middle^prefix^suffix) as HL7 XPN components, each escaped."""
    return "^".join(escape(part) for part in str(dicom_name or "").split("^"))


@dataclass(frozen=True)
class Hl7Destination:
    host: str
    port: int
    timeout: float = 30.0

    @property
    def name(self) -> str:
        return f"HL7 {self.host}:{self.port}"

    def send(self, message: hl7.Message) -> None:
        """Send and wait for the ACK; SendError unless it accepts this message."""
        try:
            ack = asyncio.run(self._exchange(str(message)))
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as error:
            raise SendError(f"{self.name}: no ACK ({type(error).__name__}: {error})") from error
        wanted = str(message.segment("MSH")[10])
        try:
            msa = ack.segment("MSA")
            code, answered = str(msa[1]), str(msa[2])
        except (KeyError, IndexError):
            raise SendError(f"{self.name}: the answer has no MSA segment") from None
        if code not in ACCEPTED or answered != wanted:
            raise SendError(f"{self.name}: message {wanted} answered {code} for {answered}")

    async def _exchange(self, text: str) -> hl7.Message:
        reader, writer = await asyncio.wait_for(open_hl7_connection(self.host, self.port), self.timeout)
        try:
            writer.writemessage(text)
            await writer.drain()
            return await asyncio.wait_for(reader.readmessage(), self.timeout)
        finally:
            writer.close()
            await writer.wait_closed()


def parse_hl7_address(text: str, timeout: float = 30.0) -> Hl7Destination:
    match = ADDRESS.fullmatch(text)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise Hl7AddressError(f"--hl7 {text!r}: expected HOST:PORT")
    return Hl7Destination(match["host"], int(match["port"]), timeout)
