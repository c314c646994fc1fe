"""Where the node's results go: a DICOM C-STORE SCP (`AE@HOST:PORT`) or a DICOMweb STOW-RS service
(`dicomweb+http(s)://HOST[:PORT]/PATH`), and the backoff between attempts.

A destination opens once per delivery round (one association, or one HTTP session) and stores
each film's results (DICOM files) together; `store` returns only when the destination has accepted
every object, and raises `SendError` otherwise, so the caller keeps the film and tries again.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from chestdet.clinical.scp import DEFAULT_TIMEOUTS, Timeouts, without_delay
from chestdet.core.errors import ChestdetError, InputError

AE_ADDRESS = re.compile(r"(?P<ae>[^@]{1,16})@(?P<host>[^:@]+):(?P<port>\d{1,5})")
# C-STORE statuses that mean stored: success, and the warnings (coercion, elements discarded, no check).
STORED = {0x0000, 0xB000, 0xB006, 0xB007}

Store = Callable[[Sequence[Path]], None]


class SendError(ChestdetError):
    """The destination is unreachable, refused the association, or did not accept an object."""


class DestinationError(InputError):
    """A --send-to value that names no destination."""


class Destination(Protocol):
    name: str

    def open(self) -> contextlib.AbstractContextManager[Store]:
        """A session whose `store(files)` returns when all are accepted, else raises SendError."""


@dataclass(frozen=True)
class DicomDestination:
    """C-STORE to a remote AE, from the node's own AE title, with its own timeouts."""

    called_ae: str
    host: str
    port: int
    calling_ae: str
    timeouts: Timeouts = DEFAULT_TIMEOUTS

    @property
    def name(self) -> str:
        return f"{self.called_ae}@{self.host}:{self.port}"

    @contextlib.contextmanager
    def open(self) -> Iterator[Store]:
        from pynetdicom import AE

        ae = AE(ae_title=self.calling_ae)
        self.timeouts.apply(ae)
        for sop_class in ("1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.11.1"):  # 3D SR, GSPS
            for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):  # the files' own first, apart
                ae.add_requested_context(sop_class, [syntax])
        association = ae.associate(self.host, self.port, ae_title=self.called_ae)
        if not association.is_established:
            raise SendError(f"{self.name}: association {'rejected' if association.is_rejected else 'failed'}")
        without_delay(association)
        try:
            yield lambda files: self._store(association, files)
        finally:
            if association.is_established:
                association.release()

    def _store(self, association, files: Sequence[Path]) -> None:  # noqa: ANN001
        for path in files:
            if not association.is_established:
                raise SendError(f"{self.name}: the association ended")
            try:
                status = association.send_c_store(path)
            except ValueError as error:  # sent as stored (chunked) but the peer took no context for that syntax
                raise SendError(f"{self.name}: {path.name} not sent ({error})") from error
            code = status.get("Status") if status else None
            if code not in STORED:
                said = "no answer" if code is None else f"status 0x{code:04X}"
                raise SendError(f"{self.name}: {path.name} not stored ({said})")


@dataclass(frozen=True)
class StowDestination:
    """STOW-RS to a DICOMweb service through dicomweb-client."""

    url: str
    timeout: float = 30.0

    @property
    def name(self) -> str:
        return self.url

    @contextlib.contextmanager
    def open(self) -> Iterator[Store]:
        from dicomweb_client.api import DICOMwebClient

        client = DICOMwebClient(self.url, timeout=self.timeout)
        client.set_http_retry_params(retry=False)  # its own retries would wait 30 s; the node's backoff decides
        yield lambda files: self._store(client, files)

    def _store(self, client, files: Sequence[Path]) -> None:  # noqa: ANN001
        import requests

        try:
            answer = client.store_instances([pydicom.dcmread(path) for path in files])
        except (requests.RequestException, OSError, ValueError) as error:
            raise SendError(f"{self.url}: STOW-RS failed ({error})") from error
        failed = answer.get("FailedSOPSequence") if answer is not None else None
        if failed:
            reasons = ", ".join(f"{item.ReferencedSOPInstanceUID} (reason {item.get('FailureReason')})"
                                for item in failed)
            raise SendError(f"{self.url}: not stored: {reasons}")


def parse_destination(text: str, calling_ae: str, timeouts: Timeouts = DEFAULT_TIMEOUTS) -> Destination:
    """`AE@HOST:PORT` or `dicomweb+http(s)://...`."""
    if text.startswith(("dicomweb+http://", "dicomweb+https://")):
        return StowDestination(text.removeprefix("dicomweb+"), timeouts.dimse)
    match = AE_ADDRESS.fullmatch(text)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise DestinationError(f"--send-to {text!r}: expected AE@HOST:PORT or dicomweb+http(s)://HOST:PORT/PATH")
    return DicomDestination(match["ae"], match["host"], int(match["port"]), calling_ae, timeouts)


@dataclass
class Backoff:
    """Waits between attempts: `first` seconds, doubling up to `most`; `reset` after a success."""

    first: float = 1.0
    most: float = 60.0
    _next: float | None = None

    def delay(self) -> float:
        """The wait before the next attempt; each call doubles the one after."""
        current = self.first if self._next is None else self._next
        self._next = min(self.most, current * 2)
        return current

    def reset(self) -> None:
        self._next = None
