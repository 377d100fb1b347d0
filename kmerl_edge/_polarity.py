"""Lead I polarity check: tell the user when lead I looks inverted (numpy only).

Left- and right-arm electrodes swapped, or a 1-lead patch / handheld device worn the other way round, invert
lead I: its QRS and its T wave turn negative. The check reads the median-beat measurements of each scored
window that the superclass stack already takes (:func:`kmerl_edge._superclass_stack.stack_measurements`:
lead I's QRS area and mean T on the z-scored model window, from the runtime's own R peaks), so a bundle with a
stack measures nothing twice; a bundle without one measures the windows that have lead I once more (on the
beats ``predict`` finds at the device rate, about 0.07 ms per 1-lead window; a stream window of such a bundle
finds its beats on the model window, about 0.25 ms).

Criterion: the superclass stack's polarity guard, :func:`kmerl_edge._superclass_stack.inverted_lead_i` (a
negative QRS area *and* a negative mean T), chosen on PTB-XL fold 9 among five candidates and written down
before the test fold was scored (``python -m benchmarks.lead_reversal``; numbers in
``benchmarks/results/lead_reversal/README.md``). A window whose lead I was not scored or not measured (too few
beats, a flat lead) is *unknown*, never a guess. A recording is flagged when at least half of its measured
windows are.

It is a hint, not a diagnosis: dextrocardia inverts lead I as well, and an inverted T with a negative QRS
in lead I also occurs in some right-axis hearts. The flag never changes a score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._leads import LEADS
from ._measure import PER_LEAD
from ._superclass_stack import inverted_lead_i, stack_measurements

if TYPE_CHECKING:  # pragma: no cover
    from .rhythm import RhythmResult

__all__ = ["FLAG_NOTES", "INVERTED_FLAG", "INVERTED_NOTE", "inverted_note", "lead_i_polarity", "record_inverted", "run_with_polarity",
           "window_polarity"]

#: the quality flag (``QualityReport.flags``, ``WindowResult.flags``) of a recording / window whose lead I
#: looks inverted
INVERTED_FLAG = "lead_I_inverted"
#: the note that goes with it (``Prediction.notes``, ``WindowResult.notes``)
INVERTED_NOTE = ("lead I looks inverted (negative QRS and T): left/right arm electrodes swapped, or the device "
                 "worn or held reversed? Check the electrode placement; dextrocardia also inverts lead I")
#: the words for each flag this module sets
FLAG_NOTES = {INVERTED_FLAG: INVERTED_NOTE}

_I = LEADS.index("I")
_Q, _T = PER_LEAD.index("qrs_area"), PER_LEAD.index("t_mean")


def lead_i_polarity(per: np.ndarray) -> np.ndarray:
    """(N,) int8 per window of :func:`stack_measurements`' per-lead block: 1 lead I looks inverted, 0 it does
    not, -1 unknown (lead I not scored, or its QRS area or mean T not measured)."""
    pol = inverted_lead_i(per).astype(np.int8)
    pol[np.isnan(per[:, _I, _Q]) | np.isnan(per[:, _I, _T])] = -1
    return pol


def window_polarity(windows: np.ndarray, lead_ids: Sequence[int] | np.ndarray, *, fs: float,
                    rhythm: Sequence[RhythmResult | None] | None = None) -> np.ndarray:
    """:func:`lead_i_polarity` of preprocessed ``windows`` (N, L, S) on ``lead_ids``, measured here (for a
    classifier without a superclass stack); all -1 without lead I, at no cost."""
    if _I not in {int(i) for i in lead_ids}:
        return np.full(len(windows), -1, dtype=np.int8)
    per, _ = stack_measurements(windows, lead_ids, fs=fs, rhythm=rhythm)
    return lead_i_polarity(per)


def record_inverted(polarity: np.ndarray) -> bool | None:
    """A recording's verdict from its windows' :func:`lead_i_polarity`: ``True`` when at least half of the
    measured windows look inverted, ``None`` when none was measured."""
    p = np.asarray(polarity)
    known = p[p >= 0]
    if not known.size:
        return None
    return bool(2 * int(known.sum()) >= known.size)


def run_with_polarity(target: Any, windows: np.ndarray, lead_ids: np.ndarray, *,
                      rhythm: Sequence[RhythmResult | None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``target.run_windows(windows, lead_ids)`` (with ``rhythm`` when the target uses it: ``needs_rhythm``) and
    each window's :func:`lead_i_polarity` on the same beats: from the superclass stack's own measurements for a
    :class:`kmerl_edge.Classifier` that has one; measured here for one without, or for a scorer that wraps a
    classifier (its ``run_windows`` answered elsewhere, e.g. by a fleet's scorer deployment). The
    probabilities are ``run_windows``' own: ``rhythm`` changes only the AF fusion's and the stack's rows, and
    only a target that uses it gets it."""
    from ._classifier import Classifier

    if isinstance(target, Classifier) and type(target).run_windows is Classifier.run_windows:
        probs, pol = target._run_windows(windows, lead_ids, rhythm=rhythm, polarity=True)
        if pol is not None:
            return probs, pol
    else:
        use = rhythm is not None and bool(getattr(target, "needs_rhythm", False))
        probs = target.run_windows(windows, lead_ids, **({"rhythm": rhythm} if use else {}))
    fs = float(target.bundle.preprocess_config.target_fs)
    return probs, window_polarity(windows, lead_ids, fs=fs, rhythm=rhythm)


def inverted_note(polarity: np.ndarray) -> str | None:
    """The note for a recording's windows' :func:`lead_i_polarity` when :func:`record_inverted`, else ``None``."""
    p = np.asarray(polarity)
    if not (p == 1).any() or not record_inverted(p):  # the usual case: no window looks inverted
        return None
    k, n = int((p == 1).sum()), int((p >= 0).sum())
    return INVERTED_NOTE if k == n else f"{INVERTED_NOTE} (in {k} of {n} measured windows)"
