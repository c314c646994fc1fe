"""The node's Storage SCP: it checks each received instance, spools it and answers, within the association.

No inference runs here, so no DIMSE timeout waits on a model: the handler reads the header, applies
the filter, writes the encoded dataset into the spool (a synced temporary file, renamed) and returns
the status. An instance the filter turns away is acknowledged and logged with the reason. The
Verification service answers C-ECHO (`echoscu`).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

import pydicom
from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, AllStoragePresentationContexts, VerificationPresentationContexts, evt
from pynetdicom.transport import ThreadedAssociationServer

from chestdet.clinical.filters import Filter
from chestdet.clinical.spool import Spool, SpoolError

log = logging.getLogger("chestdet.clinical.node")

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # the spool cannot take it: the sender keeps it and retries
CANNOT_UNDERSTAND = 0xC210  # not a dataset, or no usable SOP Instance UID


@dataclass(frozen=True)
class Timeouts:
    """Seconds: association negotiation (ACSE), a DIMSE reply, network silence, TCP connect."""

    acse: float = 30.0
    dimse: float = 30.0
    network: float = 60.0
    connect: float = 10.0

    def apply(self, ae: AE) -> None:
        ae.acse_timeout, ae.dimse_timeout = self.acse, self.dimse
        ae.network_timeout, ae.connection_timeout = self.network, self.connect


DEFAULT_TIMEOUTS = Timeouts()


def decodable_transfer_syntaxes() -> list[str]:
    """The transfer syntaxes whose pixel data the installed pydicom handlers decode (uncompressed first)."""
    from pydicom.pixels import get_decoder

    usable = []
    for uid in AllTransferSyntaxes:
        try:
            if get_decoder(uid).is_available:
                usable.append(uid)
        except NotImplementedError:
            continue
    return sorted(usable, key=lambda uid: (uid.is_compressed, uid))


def without_delay(association) -> None:  # noqa: ANN001 - a pynetdicom Association
    """TCP_NODELAY on the association's socket. DIMSE sends a command and then its dataset as separate
    writes and waits for the answer: with Nagle's algorithm each C-STORE waits for a delayed ACK (about
    45 ms a C-STORE on loopback, against 4 ms without)."""
    connection = association.dul.socket.socket if association.dul.socket is not None else None
    if connection is not None:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class StorageSCP:
    """Receives into the spool; `on_spooled()` is called after each film kept, to wake the worker."""

    def __init__(self, ae_title: str, address: tuple[str, int], spool: Spool, accept: Filter,
                 on_spooled: Callable[[], None], timeouts: Timeouts = DEFAULT_TIMEOUTS) -> None:
        self.ae_title, self.address = ae_title, address
        self.spool, self.accept, self.on_spooled = spool, accept, on_spooled
        self.ae = AE(ae_title=ae_title)
        timeouts.apply(self.ae)
        self.ae.require_called_aet = True
        self.ae.maximum_associations = 16
        syntaxes = decodable_transfer_syntaxes()
        for context in AllStoragePresentationContexts:
            self.ae.add_supported_context(context.abstract_syntax, syntaxes)
        for context in VerificationPresentationContexts:
            self.ae.add_supported_context(context.abstract_syntax)
        self.server: ThreadedAssociationServer | None = None

    def start(self) -> None:
        handlers = [(evt.EVT_C_STORE, self.handle_store), (evt.EVT_C_ECHO, self.handle_echo),
                    (evt.EVT_CONN_OPEN, lambda event: without_delay(event.assoc))]
        self.server = self.ae.start_server(self.address, block=False, evt_handlers=handlers)
        log.info("DICOM node %s listening on %s:%d", self.ae_title, *self.server.server_address[:2])

    @property
    def port(self) -> int:
        return self.server.server_address[1] if self.server is not None else self.address[1]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def handle_echo(self, event: evt.Event) -> int:
        log.debug("C-ECHO from %s", event.assoc.requestor.ae_title)
        return SUCCESS

    def handle_store(self, event: evt.Event) -> int:
        """Check, spool, answer; never raises (pynetdicom would answer 0xC211 and log a traceback)."""
        sender = event.assoc.requestor.ae_title
        try:
            dataset = event.dataset
            uid = str(dataset.get("SOPInstanceUID", ""))
        except Exception as error:  # noqa: BLE001 - pydicom raises many types for a malformed stream
            log.warning("refused an instance from %s: cannot decode the dataset (%s)", sender, error)
            return CANNOT_UNDERSTAND
        reason = self.accept.reason(dataset)
        if reason is not None:
            log.info("received %s from %s, not processed: %s", uid or "an instance", sender, reason)
            self._journal("ignored", uid, sender=sender, reason=reason)
            return SUCCESS
        return self._spool(event, uid, dataset, sender)

    def _spool(self, event: evt.Event, uid: str, dataset: pydicom.Dataset, sender: str) -> int:
        try:
            kept = self.spool.receive(uid, event.encoded_dataset(), sender=sender,
                                      study=str(dataset.get("StudyInstanceUID", "")))
        except SpoolError as error:
            log.warning("refused an instance from %s: %s", sender, error)
            return CANNOT_UNDERSTAND
        except OSError as error:
            log.error("refused %s from %s: the spool cannot keep it (%s)", uid, sender, error)
            return OUT_OF_RESOURCES
        if kept:
            log.info("received %s from %s (%s)", uid, sender, dataset.get("Modality", "no modality"))
            self.on_spooled()
        else:
            log.info("received %s from %s again; it is already waiting", uid, sender)
        return SUCCESS

    def _journal(self, event: str, uid: str, **details: object) -> None:
        try:
            self.spool.journal(event, uid, **details)
        except OSError as error:
            log.error("cannot write the journal: %s", error)
