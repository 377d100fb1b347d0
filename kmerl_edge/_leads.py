"""The 12 standard ECG leads, their aliases, and name-based mapping.

Lead identity is what the model's lead embedding is indexed by; row position never matters. Every reader
and device maps its channel names through :func:`canonical_lead`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ._errors import DuplicateLeadError, UnknownLeadError

__all__ = [
    "LEADS",
    "LEAD_ALIASES",
    "PAPER_LEAD_ORDER",
    "canonical_lead",
    "canonical_leads",
    "lead_ids",
    "parse_leads",
]

#: The canonical order of the 12 standard leads. A lead's id is its index here.
LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

#: The order in which the K-MERL paper adds leads when it evaluates 1..12 leads.
PAPER_LEAD_ORDER: tuple[str, ...] = (
    "I", "II", "III", "aVF", "aVR", "aVL", "V1", "V2", "V3", "V4", "V5", "V6",
)

_EXTRA_ALIASES: dict[str, str] = {
    # MIT-BIH modified limb leads and common device labels
    "MLI": "I",
    "MLII": "II",
    "MLIII": "III",
    "LEADI": "I",
    "LEADII": "II",
    "LEADIII": "III",
    "LEAD1": "I",
    "LEAD2": "II",
    "LEAD3": "III",
    "L1": "I",
    "L2": "II",
    "L3": "III",
    "D1": "I",  # Einthoven "D" naming used in Latin-American and some Chinese devices
    "D2": "II",
    "D3": "III",
    "AVR": "aVR",
    "AVL": "aVL",
    "AVF": "aVF",
    "MV1": "V1",
    "MV2": "V2",
    "MV3": "V3",
    "MV4": "V4",
    "MV5": "V5",
    "MV6": "V6",
}


def _key(name: str) -> str:
    return name.strip().replace(" ", "").replace("_", "").upper()


#: Upper-cased alias → canonical lead name. Includes every canonical name itself.
LEAD_ALIASES: dict[str, str] = {_key(lead): lead for lead in LEADS} | _EXTRA_ALIASES

_ID = {lead: i for i, lead in enumerate(LEADS)}
_CANONICAL = {lead: lead for lead in LEADS}


def canonical_lead(name: str) -> str:
    """Map one channel name (``"AVR"``, ``"avr"``, ``"MLII"`` …) to its canonical lead name.

    Raises :class:`UnknownLeadError` for anything that is not one of the 12 standard leads.
    """
    if not isinstance(name, str):
        raise UnknownLeadError(f"lead names are strings, got {name!r}")
    lead = _CANONICAL.get(name)  # already canonical: the common case, on every window
    if lead is not None:
        return lead
    try:
        return LEAD_ALIASES[_key(name)]
    except KeyError:
        raise UnknownLeadError(
            f"unknown lead {name!r}; expected one of {', '.join(LEADS)} (or an alias such as AVR, MLII)"
        ) from None


def canonical_leads(names: Iterable[str] | str) -> tuple[str, ...]:
    """Map channel names to canonical names, refusing duplicates (``"aVR"`` and ``"AVR"`` included).

    One name given as a string is that one lead (``"II"``, never ``"I"``, ``"I"``); anything that is not a
    string or an iterable of strings is an :class:`UnknownLeadError`."""
    if isinstance(names, str):
        names = (names,)
    elif isinstance(names, (bytes, bytearray)) or not isinstance(names, Iterable):
        raise UnknownLeadError(f"leads must be a lead name or a sequence of lead names, got {names!r}")
    out: list[str] = []
    for name in names:
        lead = canonical_lead(name)
        if lead in out:
            raise DuplicateLeadError(f"lead {lead} appears more than once (as {name!r})")
        out.append(lead)
    if not out:
        raise UnknownLeadError("no leads given")
    return tuple(out)


def lead_ids(names: Sequence[str]) -> np.ndarray:
    """The int64 lead ids (indices into :data:`LEADS`) of ``names``, in the given order."""
    return np.asarray([_ID[lead] for lead in canonical_leads(names)], dtype=np.int64)


def parse_leads(text: str) -> tuple[str, ...]:
    """Parse a comma-separated lead list such as ``"I,II,V2"`` (as typed on a command line)."""
    parts = [p for p in (s.strip() for s in text.split(",")) if p]
    return canonical_leads(parts)
