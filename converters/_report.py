"""The conversion report: one row per variant, the recommendation, and why."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["EvalSummary", "Report", "VariantReport"]


class VariantReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variant: str = Field(description="float, fp16, dynamic or int8")
    format: str
    status: Literal["ok", "skipped"] = "ok"
    reason: str | None = Field(default=None, description="why a variant was skipped")
    bundle: str | None = None
    size_bytes: int | None = None
    size_ratio: float | None = Field(default=None, description="file size / float file size")
    accuracy: float | None = Field(default=None, description="top-1 accuracy on the labelled eval set, percent")
    accuracy_drop: float | None = Field(default=None, description="points below float (accuracy or agreement)")
    agreement: float | None = Field(default=None, description="top-1 agreement with the float model, percent")
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    recall: float | None = Field(default=None, description="detection: percent of the float model's boxes found "
                                 "again (same label, IoU >= 0.5)")
    precision: float | None = Field(default=None, description="detection: percent of the variant's boxes that the "
                                    "float model also has")
    mean_iou: float | None = Field(default=None, description="detection: mean IoU of the matched boxes")
    boxes: int | None = Field(default=None, description="detection: boxes found on the eval inputs")
    p50_ms: float | None = Field(default=None, description="median inference latency measured here")
    latency_ratio: float | None = Field(default=None, description="p50 / float p50")
    slower_than_float: bool | None = None
    within_max_drop: bool | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


class EvalSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["accuracy", "agreement", "none"]
    data: str | None = None
    inputs: int = 0
    note: str | None = None


class Report(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    task: str = "classification"
    source: dict[str, Any]
    target: str
    backend: str
    threads: int
    profile: str | None = None
    cpu: str
    vnni: bool
    eval: EvalSummary
    max_drop: float
    prefer: str
    variants: list[VariantReport]
    recommended: str | None = None
    recommendation: str = ""
    warnings: list[str] = Field(default_factory=list)
    out_dir: str | None = None

    def variant(self, name: str) -> VariantReport:
        for v in self.variants:
            if v.variant == name:
                return v
        raise KeyError(f"no variant {name!r}; variants: {', '.join(v.variant for v in self.variants)}")

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"

    def to_markdown(self) -> str:
        lines = [
            f"# Conversion report: {self.name} → {self.target}",
            "",
            f"- source: {_source_line(self.source)}",
            f"- measured on: {self.cpu} ({'VNNI' if self.vnni else 'no VNNI'}), backend `{self.backend}`, "
            f"{self.threads} thread(s)" + (f", profile `{self.profile}`" if self.profile else ""),
            f"- quality: {_eval_line(self.eval)}",
            f"- rule: the {'fastest' if self.prefer == 'latency' else 'smallest'} variant whose "
            + ("box agreement drop (100 - the lower of recall and precision against the float model)"
               if self.task == "detection" else "accuracy drop")
            + f" stays within {self.max_drop:g} point(s)",
            "",
        ]
        detection = self.task == "detection"
        if detection:
            lines += ["| variant | size | × float | recall | precision | mean IoU | boxes | drop | p50 ms "
                      "| × float | |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        else:
            lines += ["| variant | size | × float | accuracy | drop | agreement | max abs diff | mean abs diff "
                      "| p50 ms | × float | |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for v in self.variants:
            if v.status == "skipped":
                lines.append(f"| {v.variant} | | | | | | | | | | skipped: {v.reason} |")
                continue
            flag = []
            if v.variant == self.recommended:
                flag.append("**recommended**")
            if v.slower_than_float:
                flag.append("slower than float here")
            if v.within_max_drop is False:
                flag.append("over max drop")
            if detection:
                lines.append(
                    f"| {v.variant} | {_size(v.size_bytes)} | {_num(v.size_ratio, 2)} | {_pct(v.recall)} "
                    f"| {_pct(v.precision)} | {_num(v.mean_iou, 3)} | {'' if v.boxes is None else v.boxes} "
                    f"| {_num(v.accuracy_drop, 2)} | {_ms(v.p50_ms)} | {_num(v.latency_ratio, 2)} "
                    f"| {', '.join(flag)} |")
                continue
            lines.append(
                f"| {v.variant} | {_size(v.size_bytes)} | {_num(v.size_ratio, 2)} | {_pct(v.accuracy)} "
                f"| {_num(v.accuracy_drop, 2)} | {_pct(v.agreement)} | {_num(v.max_abs_diff, 4)} "
                f"| {_num(v.mean_abs_diff, 5)} | {_ms(v.p50_ms)} | {_num(v.latency_ratio, 2)} | {', '.join(flag)} |")
        lines += ["", f"**Recommendation:** {self.recommendation}", ""]
        slower = [v.variant for v in self.variants if v.slower_than_float]
        if slower:
            lines += [f"Note: {', '.join(slower)} ran slower than float on this CPU; quantization does not always "
                      "pay on a given CPU and backend (onnxruntime issues #17389, #20052), so the recommendation "
                      "follows the measurement.", ""]
        notes = [(v.variant, n) for v in self.variants for n in v.notes]
        if notes or self.warnings:
            lines.append("## Notes")
            lines += [f"- {name}: {n}" for name, n in notes]
            lines += [f"- warning: {w}" for w in self.warnings]
            lines.append("")
        return "\n".join(lines)


def _source_line(source: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in source.items())


def _eval_line(e: EvalSummary) -> str:
    if e.kind == "accuracy":
        return f"top-1 accuracy on {e.inputs} labelled input(s) from {e.data}"
    if e.kind == "agreement":
        return f"agreement with the float model on {e.inputs} input(s) from {e.data}" + (f" ({e.note})" if e.note
                                                                                     else "")
    return e.note or "not measured (no --eval or --calibration data)"


def _num(v: float | None, digits: int) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def _ms(v: float | None) -> str:
    if v is None:
        return ""
    return f"{v:.3f}" if v < 1 else f"{v:.2f}"


def _pct(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}%"


def _size(n: int | None) -> str:
    if n is None:
        return ""
    if n >= 1 << 20:
        return f"{n / (1 << 20):.2f} MiB"
    return f"{n / 1024:.1f} KiB"
