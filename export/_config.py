"""Typed configuration of one export run (JSON-serialisable, written into the bundle's provenance)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from kmerl_edge._labels import DEFAULT_LABEL_SETS

from ._augment import AugmentConfig

__all__ = ["DistillConfig", "ParityConfig", "ExportConfig", "DEFAULT_STUDENT", "DEFAULT_BACKENDS"]

#: The default device student (measured on the 2-core CPU; see export/README table in the report).
from kmerl_edge._errors import ConfigError

DEFAULT_STUDENT = "kmerl-student-s"
#: Every artifact the CPU exporter knows how to build. ``tensorrt`` needs a TensorRT machine
#: (``kmerl-export tensorrt``); the QDQ ONNX it is built from is always written (``onnx-qdq``).
DEFAULT_BACKENDS = ("onnxruntime", "onnxruntime-int8", "executorch", "executorch-int8")


@dataclass(frozen=True)
class DistillConfig:
    """Teacher → student distillation on real ECG windows.

    Loss = ``pooled_weight`` × MSE(adapter(student pooled), teacher pooled)
         + ``logit_weight`` × (BCE(student logits, sigmoid(teacher logits / T)) · T² + MSE on logits)
    over the query logits of the deployed label sets. Each step draws ``batch_size`` windows and, per
    window, a random subset of 1..max_leads leads for the student (lead masking restricted to the device's
    lead count); the teacher sees ``teacher_leads`` ("all" the leads the window has, or "same" as the
    student). Leads a window lacks (zero rows) are never shown to either model. ``partial_lead_share``
    caps the share of samples drawn from few-lead recordings (at most ``max_leads`` leads, e.g. 2-lead
    Holter windows): they always carry the same leads and would otherwise dominate what the student
    learns for those leads. On them only ``partial_lead_label_sets`` are distilled (rhythm does not depend
    on 12-lead morphology; the teacher's superclass outputs on a 2-lead Holter window are out of its
    training distribution).
    """

    steps: int = 2000
    partial_lead_share: float = 0.3
    partial_lead_label_sets: tuple[str, ...] = ("rhythm",)
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.02
    warmup_steps: int = 50
    pooled_weight: float = 1.0
    logit_weight: float = 1.0
    temperature: float = 1.0
    teacher_leads: str = "all"
    amplitude_jitter: float = 0.1
    #: device-shift augmentation of the student's input (:mod:`export._augment`); None: off
    augment: AugmentConfig | None = None
    #: when the student has the teacher's architecture, start from the teacher's weights
    init_from_teacher: bool = True
    seed: int = 0
    log_every: int = 100

    def __post_init__(self) -> None:
        if self.teacher_leads not in ("all", "same"):
            raise ConfigError(f"teacher_leads must be all or same, got {self.teacher_leads!r}")


@dataclass(frozen=True)
class ParityConfig:
    """Bounds every artifact must meet against the torch fp32 student (else :class:`ParityError`)."""

    fp32_max_abs: float = 1e-4
    int8_min_sqnr_db: float = 20.0
    int8_min_top1_agreement: float = 0.99
    #: Logit margin under which the reference's top classes count as tied: an int8 top class whose
    #: reference logit is within this margin of the reference maximum is not a disagreement. 0 is strict
    #: argmax agreement. The strict figure is always reported next to the tie-aware one.
    top1_tie_tolerance: float = 0.0
    #: lead sets (1, 2 and 3 leads) on which parity and latency are measured
    lead_sets: tuple[tuple[str, ...], ...] = (("I",), ("I", "II"), ("I", "II", "V2"))
    max_windows: int = 64


@dataclass(frozen=True)
class ExportConfig:
    """What ``export_bundle`` builds.

    - ``student``: registry name of the student (``kmerl_edge.list_models()``), ``max_leads`` the most
      leads the device delivers (1–3); one student serves every subset of up to ``max_leads`` of the 12.
    - ``label_sets``: label set → class names whose query vectors go into the bundle (and whose logits
      are distilled); ``entities`` extra entity names embedded and distilled as well (not deployed).
    - ``backends``: artifacts to build: ``onnxruntime`` (fp32), ``onnxruntime-int8``, ``executorch``,
      ``executorch-int8``. The int8 QDQ ONNX for TensorRT is always written when ``qdq_for_tensorrt``.
    - ``onnx_int8``: ``"auto"`` measures dynamic MatMul int8 and static QDQ on the real student and keeps
      the faster one that passes parity; or force ``"dynamic"`` / ``"static"``. If none passes, the
      candidates are built again with ``int8_fallback_fp32`` kept in fp32 as well.
    - ``executorch_int8``: ``"static"`` (XNNPACK per-channel weights, activations calibrated on real windows),
      ``"dynamic"`` (dynamic activation scales) or ``"auto"``: static, and dynamic only if static fails parity
      (then both again with ``int8_fallback_fp32`` in fp32, if static and dynamic both fail).
    """

    student: str = DEFAULT_STUDENT
    max_leads: int = 3
    label_sets: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_LABEL_SETS))
    entities: tuple[str, ...] = ()
    distill: DistillConfig = field(default_factory=DistillConfig)
    parity: ParityConfig = field(default_factory=ParityConfig)
    backends: tuple[str, ...] = DEFAULT_BACKENDS
    onnx_int8: str = "auto"
    executorch_int8: str = "auto"
    qdq_for_tensorrt: bool = True
    calibration_windows: int = 64
    #: modules kept in fp32 by the static int8 paths (QDQ ONNX, ExecuTorch static): the patch embedding
    #: sees the raw normalised signal (R peaks at ±10–15), which per-tensor int8 activations resolve poorly
    int8_keep_fp32: tuple[str, ...] = ("encoder.patch_embed",)
    #: modules additionally kept in fp32 (by every int8 path, dynamic included) when no int8 candidate
    #: passes parity without them — a second, more conservative round of candidates; what was kept is
    #: recorded in the manifest. Empty: no second round (a failing int8 artifact is a ParityError).
    int8_fallback_fp32: tuple[str, ...] = ("query_head",)
    latency_iters: int = 200
    latency_warmup: int = 20
    eval_auc: bool = True
    auc_fold: int = 10
    seed: int = 0
    description: str = ""

    def __post_init__(self) -> None:
        if not 1 <= self.max_leads <= 12:
            raise ConfigError("max_leads must be within 1..12")
        known = set(DEFAULT_BACKENDS)
        bad = [b for b in self.backends if b not in known]
        if bad:
            raise ConfigError(f"unknown backends {bad}; known: {sorted(known)}")
        if self.onnx_int8 not in ("auto", "dynamic", "static"):
            raise ConfigError("onnx_int8 must be auto, dynamic or static")
        if self.executorch_int8 not in ("auto", "static", "dynamic"):
            raise ConfigError("executorch_int8 must be auto, static or dynamic")
        fits = tuple(ls for ls in self.parity.lead_sets if len(ls) <= self.max_leads)
        if not fits:
            raise ConfigError(f"no parity lead set has at most max_leads={self.max_leads} leads")
        if fits != self.parity.lead_sets:  # e.g. max_leads=2: check 1 and 2 leads only
            from dataclasses import replace

            object.__setattr__(self, "parity", replace(self.parity, lead_sets=fits))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["label_sets"] = {k: list(v) for k, v in self.label_sets.items()}
        return d

    def with_lead_sets(self, lead_sets: Sequence[Sequence[str]]) -> ExportConfig:
        from dataclasses import replace

        return replace(self, parity=replace(self.parity, lead_sets=tuple(tuple(s) for s in lead_sets)))
