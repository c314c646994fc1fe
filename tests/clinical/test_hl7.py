"""The HL7 ORU^R01 of a study's findings, and its sending over MLLP against a real listener."""

from __future__ import annotations

import datetime

import pytest

from chestdet.clinical.hl7 import Hl7AddressError, Hl7Destination, control_id, oru_r01, parse_hl7_address
from chestdet.clinical.senders import SendError
from tests.support.dicom_peers import MllpListener, running
from tests.support.processes import free_port

FILM = {"film": "1.2.3.1", "study": "1.2.3", "sr": "2.25.11", "gsps": "2.25.12", "accession": "ACC|7",
        "patient_id": "P-1", "patient_name": "Doe^Jane", "birth_date": "19700101", "sex": "F",
        "study_date": "20260101", "study_time": "120000", "model": "nih step 1200", "threshold": 0.3,
        "findings": [{"class": "Cardiomegaly", "code": "8186001", "score": 0.871, "box": [10.0, 20.5, 300.0, 400.0]},
                     {"class": "Nodule", "code": "27925004", "score": 0.42, "box": [1.0, 2.0, 3.0, 4.0]}]}
LATERAL = {**FILM, "film": "1.2.3.2", "sr": "2.25.21",
           "findings": [{"class": "Effusion", "code": "60046008", "score": 0.5, "box": [5.0, 6.0, 7.0, 8.0]}]}
NOW = datetime.datetime(2026, 12, 1, 9, 30, 0)


def test_one_oru_per_study_with_one_obx_per_finding():
    message = oru_r01([FILM, LATERAL], "CHESTDET", NOW)
    assert [str(s[0]) for s in message] == ["MSH", "PID", "ORC", "OBR", "OBX", "OBX", "OBX", "NTE"]
    assert str(message.segment("MSH")[9]) == "ORU^R01^ORU_R01" and str(message["MSH.F12"]) == "2.5.1"
    assert str(message["MSH.F10"]) == control_id([FILM, LATERAL])
    assert (str(message["PID.F3"]), str(message["PID.F5.R1.C1"]), str(message["PID.F5.R1.C2"])) == ("P-1", "Doe",
                                                                                                      "Jane")
    assert message["OBR.F2"] == message["OBR.F3"] == message["OBR.F18"] == "ACC|7"  # escaped in the wire form
    assert "ACC\\F\\7" in str(message)
    assert str(message["OBR.F25"]) == "P", "a preliminary result"
    observations = message.segments("OBX")
    assert [str(o[3]) for o in observations] == ["8186001^Cardiomegaly^SCT", "27925004^Nodule^SCT",
                                                 "60046008^Effusion^SCT"]
    assert str(observations[0][5]) == "score 0.871; box 10.0,20.5,300.0,400.0 px; image 1.2.3.1"
    assert str(observations[2][5]).endswith("image 1.2.3.2")
    assert {str(o[11]) for o in observations} == {"P"}
    assert "not a medical device" in str(message.segment("NTE")[3])


def test_a_study_without_findings_says_no_abnormality_was_detected():
    message = oru_r01([{**FILM, "findings": []}], "CHESTDET", NOW)
    [observation] = message.segments("OBX")
    assert str(observation[2]) == "CWE" and str(observation[3]) == "281900007^No abnormality detected^SCT"
    assert str(message.segments("NTE")[0][3]) == "no finding scored 0.3 or more"


def test_the_control_id_is_the_same_for_a_retry_and_differs_between_studies():
    assert control_id([FILM, LATERAL]) == control_id([LATERAL, FILM])
    assert control_id([FILM]) != control_id([LATERAL])
    assert len(control_id([FILM])) == 20


def test_the_sender_waits_for_the_ack_of_its_message():
    listener = MllpListener(["AA"])
    with running(listener):
        Hl7Destination("127.0.0.1", listener.port, timeout=5).send(oru_r01([FILM], "CHESTDET", NOW))
    assert [str(m["MSH.F10"]) for m in listener.messages] == [control_id([FILM])]


@pytest.mark.parametrize("answer", ["AE", "AR", "silent"])
def test_a_negative_or_missing_ack_is_a_send_error(answer: str):
    listener = MllpListener([answer])
    with running(listener), pytest.raises(SendError, match=f"HL7 127.0.0.1:{listener.port}"):
        Hl7Destination("127.0.0.1", listener.port, timeout=1).send(oru_r01([FILM], "CHESTDET", NOW))
    assert len(listener.messages) == 1


def test_nobody_listening_is_a_send_error():
    with pytest.raises(SendError, match="no ACK"):
        Hl7Destination("127.0.0.1", free_port(), timeout=2).send(oru_r01([FILM], "CHESTDET", NOW))


def test_hl7_addresses():
    assert parse_hl7_address("ris.local:2575") == Hl7Destination("ris.local", 2575)
    for bad in ("ris.local", "ris:0", "ris:99999", ":2575"):
        with pytest.raises(Hl7AddressError, match="expected HOST:PORT"):
            parse_hl7_address(bad)
