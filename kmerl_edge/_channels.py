"""Which channels of a recording are ECG leads, which are ECG of unknown position, which are something else.

Recordings from monitors and patches hold more than the 12 standard leads: blood pressure, plethysmogram,
respiration, EEG, event markers, Frank leads, and ECG channels named after the device (``ECG 1``,
``ch1``) or after a modified placement (``MCL1``, bare ``V``). :func:`select_channels` sorts them:

- **standard leads** (names and aliases as in :mod:`kmerl_edge._leads`) are scored;
- **not ECG** (recognised by name or by units, e.g. ``PLETH``, ``ABP``, ``mmHg``, ``%``) are left out with
  a note;
- **ECG of unknown position** (``MCL1``, ``V``, ``ECG``, ``ECG 1``, ``ch1``, any channel with an
  unrecognised name and no non-ECG units; Frank leads ``vx, vy, vz`` are noted as vector leads) are never silently taken for a standard lead: beside standard leads they
  are left out with a note; alone they raise :class:`LeadMapRequiredError`, whose message shows the exact
  ``--lead-map`` / ``lead_map=`` to pass. A ``lead_map`` {channel name: standard lead} says what they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ._errors import (
    DuplicateLeadError,
    LeadMapRequiredError,
    MissingLeadError,
    NoEcgChannelError,
    UnknownLeadError,
)
from ._leads import LEADS, canonical_lead, canonical_leads

__all__ = ["ChannelChoice", "parse_lead_map", "select_channels", "is_voltage_unit"]

_VOLT_UNITS = {"mv", "uv", "µv", "μv", "v", "nv", "millivolt", "millivolts", "microvolt", "microvolts", "volt",
               "volts"}
# units that say a channel is not an ECG, whatever its name
_NON_ECG_UNITS = {
    "mmhg": "pressure", "kpa": "pressure", "cmh2o": "pressure", "pa": "pressure", "mbar": "pressure",
    "%": "saturation/percentage", "bpm": "rate", "/min": "rate", "1/min": "rate", "rpm": "rate",
    "degc": "temperature", "°c": "temperature", "c": "temperature", "degf": "temperature",
    "l/s": "flow", "l/min": "flow", "ml/s": "flow", "ml": "volume", "l": "volume",
    "g": "acceleration", "m/s2": "acceleration", "m/s^2": "acceleration", "ohm": "impedance",
    "ohms": "impedance", "kohm": "impedance", "mmol/l": "concentration", "s": "time", "ms": "time",
}
# name patterns of channels that are not ECG (matched on the upper-cased name without spaces, _ and -)
_NON_ECG_NAMES: tuple[tuple[str, str], ...] = (
    (r"^(ABP|ART|BP|NBP|NIBP|SBP|DBP|MAP|PAP|CVP|ICP|UAP|LAP|RAP|FAP|PA|AO|PRESS.*|P\d?)$", "blood pressure"),
    (r"^(PLETH|PLETHYSMO.*|PPG.*|SPO2|SAO2|SPO2.*|OX.*|PULSE.*|PULS)$", "plethysmogram/oximetry"),
    (r"^(RESP.*|BREATH.*|THOR.*|ABD.*|CHEST|AIRFLOW|FLOW|NASAL.*|CO2|ETCO2|PCO2|AWP|AIRWAY.*|EFFORT.*)$",
     "respiration"),
    (r"^(EEG.*|EOG.*|EMG.*|FP[12Z]|F[3478Z]|C[34Z]|P[34Z]|O[12Z]|T[3-6]|A[12]|M[12]|FPZ.*|C[34]A[12]|O[12]A[12]|"
     r"FP[12]F[378]|ROC|LOC|CHIN.*|LEG.*)$", "EEG/EOG/EMG"),
    (r"^(MARK.*|EVENT.*|STIM.*|TRIG.*|ANNOT.*|EDFANNOTATIONS|STATUS|SYNC.*|BUTTON.*)$", "marker"),
    (r"^(HR|HEARTRATE|RR|SV|CO|TEMP.*|BODYTEMP|POS.*|LIGHT|SOUND|SNORE|ACC.*|GYRO.*|MAG.*|ACTIV.*|"
     r"IMP.*|EDA|GSR|SCR|BATT.*|AX|AY|AZ)$", "other physiological signal"),
)
# hints shown in the lead-map message: the standard lead each unknown channel approximates most often
_HINTS = {"MCL1": "V1", "MCL2": "V2", "MCL3": "V3", "MCL4": "V4", "MCL5": "V5", "MCL6": "V6", "V": "V5",
          "CM5": "V5", "CC5": "V5", "ML": "II"}


_VECTOR = {"VX", "VY", "VZ", "X", "Y", "Z"}


def _key(name: str) -> str:
    return re.sub(r"[\s_\-.]", "", name).upper()


def is_voltage_unit(units: str) -> bool:
    return units.strip().lower().replace("μ", "µ") in _VOLT_UNITS


def _non_ecg_units(units: str) -> str | None:
    u = units.strip().lower()
    return f"{_NON_ECG_UNITS[u]}, {units.strip()}" if u in _NON_ECG_UNITS else None


def _non_ecg_name(name: str) -> str | None:
    k = _key(name)
    for pattern, what in _NON_ECG_NAMES:
        if k and re.match(pattern, k):
            return what
    return None


def _as_standard(name: str) -> str | None:
    try:
        return canonical_lead(name)
    except UnknownLeadError:
        pass
    # "ECG II", "ECG_V1", "EKG aVR", "Lead II", "ECG Lead II": device prefixes in front of a standard lead name
    rest = re.sub(r"^\s*((ECG|EKG|LEAD)[\s_\-:]+)+", "", name, flags=re.IGNORECASE)
    if rest != name and re.fullmatch(r"[A-Za-z]{1,3}\d?", rest.strip()):
        try:
            return canonical_lead(rest)
        except UnknownLeadError:
            return None
    return None


def parse_lead_map(text: str | Mapping[str, str] | None) -> dict[str, str]:
    """``"ECG 1=I,V=V5"`` (or a mapping) → {channel name: canonical lead}; each lead at most once."""
    if text is None:
        return {}
    if isinstance(text, Mapping):
        items = [(str(k), str(v)) for k, v in text.items()]
    elif isinstance(text, str):
        items = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            if "=" not in part:
                raise UnknownLeadError(
                    f"lead map entry {part!r} is not CHANNEL=LEAD; write e.g. --lead-map 'ECG 1=I,V=V5'"
                )
            ch, lead = part.rsplit("=", 1)
            items.append((ch.strip(), lead.strip()))
    else:
        raise UnknownLeadError(f"lead_map must be a mapping or a 'CHANNEL=LEAD,...' string, got {type(text).__name__}")
    out: dict[str, str] = {}
    for ch, lead in items:
        if not ch:
            raise UnknownLeadError("lead map entry with an empty channel name")
        canon = canonical_lead(lead)
        if canon in out.values():
            raise DuplicateLeadError(f"lead map names lead {canon} twice")
        out[ch] = canon
    return out


@dataclass(frozen=True)
class ChannelChoice:
    """The outcome of :func:`select_channels`: ``indices`` into the file's channels, their ``leads``."""

    indices: tuple[int, ...]
    leads: tuple[str, ...]
    notes: tuple[str, ...]


def _lead_map_option(names: Sequence[str]) -> str:
    pairs = ",".join(f"{n}={_HINTS.get(_key(n), LEADS[min(i, 11)] if i < 2 else 'V5')}" for i, n in enumerate(names))
    return f"--lead-map '{pairs}'"


def select_channels(
    names: Sequence[str],
    units: Sequence[str] | None,
    *,
    leads: Sequence[str] | None = None,
    lead_map: Mapping[str, str] | str | None = None,
    record: str = "record",
) -> ChannelChoice:
    """Sort a file's channels into standard leads, ECG of unknown position and non-ECG (see the module doc).

    ``leads`` selects standard leads by name (after mapping); ``lead_map`` maps channel names (exact, or
    ignoring case, spaces and ``_``) to standard leads.
    """
    names = [str(n) for n in names]
    units_l = [str(u or "") for u in (units or [""] * len(names))]
    lmap = parse_lead_map(lead_map)
    mapped: dict[int, str] = {}
    for ch, lead in lmap.items():
        hits = [i for i, n in enumerate(names) if n == ch] or [i for i, n in enumerate(names) if _key(n) == _key(ch)]
        if not hits:
            raise UnknownLeadError(
                f"{record}: --lead-map names channel {ch!r}, which the file does not have "
                f"(channels: {', '.join(repr(n) for n in names)})"
            )
        if len(hits) > 1:
            raise DuplicateLeadError(f"{record}: channel name {ch!r} appears {len(hits)} times; it cannot be mapped")
        mapped[hits[0]] = lead
    standard: list[tuple[int, str]] = []
    unknown: list[int] = []
    other: list[tuple[int, str]] = []
    for i, (name, unit) in enumerate(zip(names, units_l)):
        if i in mapped:
            standard.append((i, mapped[i]))
            continue
        unit_why = _non_ecg_units(unit)
        std = _as_standard(name) if unit_why is None else None
        if std is not None:
            standard.append((i, std))
            continue
        why = unit_why or _non_ecg_name(name)
        if why is not None:
            other.append((i, why))
        else:
            unknown.append(i)
    seen: dict[str, int] = {}
    for i, lead in standard:
        if lead in seen:
            raise DuplicateLeadError(
                f"{record}: channels {names[seen[lead]]!r} and {names[i]!r} are both lead {lead}; "
                f"keep one with --leads or rename one with --lead-map"
            )
        seen[lead] = i
    notes: list[str] = []
    if other:
        notes.append("left out (not ECG): " + ", ".join(f"{names[i]} ({why})" for i, why in other))
    if not standard:
        if unknown:
            unk = [names[i] for i in unknown]
            raise LeadMapRequiredError(
                f"{record}: channel(s) {', '.join(repr(n) for n in unk)} are ECG of unknown position; say which "
                f"standard lead each one is, e.g. {_lead_map_option(unk)} (API: lead_map={{...}})"
            )
        raise NoEcgChannelError(
            f"{record}: no ECG channel"
            + (f" (channels: {', '.join(f'{names[i]} ({why})' for i, why in other)})" if other else "")
        )
    vectors = [i for i in unknown if _key(names[i]) in _VECTOR]
    unknown = [i for i in unknown if i not in vectors]
    if vectors:
        notes.append(
            "left out (vector leads, not among the 12 standard leads): " + ", ".join(names[i] for i in vectors)
        )
    if unknown:
        unk = [names[i] for i in unknown]
        notes.append(
            "left out (ECG of unknown position): " + ", ".join(unk)
            + f"; to use them pass {_lead_map_option(unk)}"
        )
    if leads is not None:
        want = canonical_leads(leads)
        missing = [lead for lead in want if lead not in seen]
        if missing:
            raise MissingLeadError(
                f"{record}: leads {', '.join(missing)} not in the record (standard leads: {', '.join(seen)}"
                + (f"; other ECG channels: {', '.join(names[i] for i in unknown)} — map them with --lead-map" if
                   unknown else "")
                + ")"
            )
        chosen = [(seen[lead], lead) for lead in want]
    else:
        chosen = standard
    return ChannelChoice(tuple(i for i, _ in chosen), tuple(lead for _, lead in chosen), tuple(notes))
