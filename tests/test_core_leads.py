import numpy as np
import pytest

import kmerl_edge as ke


def test_canonical_order_and_ids():
    assert ke.LEADS == ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
    assert ke.lead_ids(["V2", "I"]).tolist() == [7, 0]
    assert ke.lead_ids(["I"]).dtype == np.int64


@pytest.mark.parametrize(
    "alias,lead",
    [("AVR", "aVR"), ("avr", "aVR"), ("aVF", "aVF"), ("MLII", "II"), ("v5", "V5"), (" ii ", "II"), ("D1", "I")],
)
def test_aliases(alias, lead):
    assert ke.canonical_lead(alias) == lead


def test_unknown_and_duplicate_leads_raise_named_errors():
    with pytest.raises(ke.UnknownLeadError, match="V7"):
        ke.canonical_leads(["I", "V7"])
    with pytest.raises(ke.DuplicateLeadError, match="aVR"):
        ke.canonical_leads(["aVR", "AVR"])
    with pytest.raises(ke.UnknownLeadError):
        ke.canonical_leads([])


def test_parse_leads_from_command_line_text():
    assert ke.parse_leads("I, II,V2") == ("I", "II", "V2")


def test_paper_order_is_a_permutation_of_the_leads():
    assert sorted(ke.PAPER_LEAD_ORDER) == sorted(ke.LEADS)
    assert ke.PAPER_LEAD_ORDER[:6] == ("I", "II", "III", "aVF", "aVR", "aVL")
