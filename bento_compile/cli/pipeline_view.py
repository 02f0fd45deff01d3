"""`show`'s table of a Bento's request pipeline: what each input and output means, and where it runs."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from bento_compile.runtimes.manifest import RequestPipeline


def print_pipeline(pipeline: RequestPipeline | None, out: Console) -> None:
    if pipeline is None:
        return
    table = Table("", "name", "what", "where", "parity", title="request pipeline", box=None)
    images = pipeline.parity.get("images", {})
    for spec in pipeline.inputs:
        if spec.kind == "image":
            what = (f"{'/'.join(spec.formats)} → {spec.size[0]}x{spec.size[1]} {spec.layout} {spec.color} "
                    f"({spec.resize}{f' {spec.resize_to}' if spec.resize_to else ''}, crop {spec.crop})")
            report = images.get(spec.name, {})
            parity = (f"max |Δ| {report['tensor_max_abs_diff']:.1e} on {report['images']} images vs "
                      f"{report['reference']}" if report.get("checked") else report.get("note", ""))
            table.add_row("input", spec.name, what, "runtime (Pillow)", parity)
        else:
            mask = f", {spec.mask}" if spec.mask else ""
            what = f"text → {spec.ids}{mask} (max {spec.max_length}, {spec.truncation})"
            table.add_row("input", spec.name, what, "runtime (tokenizers)", spec.tokenizer or "")
    folded = pipeline.parity.get("folded", {})
    for out_spec in pipeline.outputs:
        steps = ", ".join(s for s in ("softmax" if out_spec.softmax else "", f"top-{out_spec.top_k}") if s)
        what = f"{len(out_spec.labels)} labels ({out_spec.labels_source or 'indices'}); {steps}"
        report = folded.get(out_spec.name)
        parity = f"max |Δ| {report['max_abs_diff']:.1e} vs numpy" if report else ""
        table.add_row("output", out_spec.name, what, "ONNX graph" if out_spec.where == "onnx" else "runtime (numpy)",
                      parity)
    if pipeline.handler:
        table.add_row("hook", pipeline.handler, "preprocess / postprocess", "runtime (Python)", "ran on the sample")
    out.print(table)
