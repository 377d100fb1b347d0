"""The label sets the default bundle serves, with the exact class names evaluations look up."""

from __future__ import annotations

__all__ = ["DEFAULT_LABEL_SETS", "PTBXL_SUPERCLASS_CODES", "RHYTHM_SCP_CODES"]

#: label set → class names (the text the query vectors are computed from).
DEFAULT_LABEL_SETS: dict[str, tuple[str, ...]] = {
    "ptbxl_superclass": (
        "normal ECG",
        "myocardial infarction",
        "ST/T change",
        "conduction disturbance",
        "hypertrophy",
    ),
    "rhythm": (
        "atrial fibrillation",
        "atrial flutter",
        "sinus rhythm",
        "sinus bradycardia",
        "sinus tachycardia",
        "premature ventricular contraction",
    ),
}

#: PTB-XL diagnostic superclass code → class name of ``ptbxl_superclass``.
PTBXL_SUPERCLASS_CODES: dict[str, str] = {
    "NORM": "normal ECG",
    "MI": "myocardial infarction",
    "STTC": "ST/T change",
    "CD": "conduction disturbance",
    "HYP": "hypertrophy",
}

#: PTB-XL SCP codes → class name of ``rhythm``.
RHYTHM_SCP_CODES: dict[str, str] = {
    "AFIB": "atrial fibrillation",
    "AFLT": "atrial flutter",
    "SR": "sinus rhythm",
    "SBRAD": "sinus bradycardia",
    "STACH": "sinus tachycardia",
    "PVC": "premature ventricular contraction",
}
