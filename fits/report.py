"""One-page reports (HTML with plots inlined, or Markdown with plots beside it) and the figures they
share: the report of a fit here, the report of a plan in :mod:`planner.report`."""
from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Report", "build_fit_report", "check_report_path", "figure_data", "figure_isoflop", "law_sections", "png_bytes", "fmt", "table"]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1060px;margin:0 auto;padding:12px 18px;
color:#1a1a1a;line-height:1.35}
h1{font-size:1.45em;margin:.2em 0}h2{font-size:1.1em;margin:1.1em 0 .35em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%;font-size:.86em}
td,th{border-bottom:1px solid #eee;padding:3px 6px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#f4f4f4}td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
td:first-child,th:first-child{white-space:nowrap;overflow-wrap:normal}
img{max-width:100%;height:auto;display:block;margin:4px 0}
.risk{color:#8a1c00}.muted{color:#666;font-size:.85em}ul{margin:.2em 0 .2em 1.2em;padding:0}
"""


@dataclass
class Report:
    """The report's parts: a title, sections of (heading, html body, markdown body) and figures."""

    title: str
    sections: list
    figures: dict

    def html(self) -> str:
        body = []
        for heading, h, _ in self.sections:
            body.append(f"<h2>{html.escape(heading)}</h2>\n{h}")
        for name, png in self.figures.items():
            data = base64.b64encode(png).decode()
            body = [b.replace(f"{{fig:{name}}}", f'<img alt="{name}" src="data:image/png;base64,{data}">')
                    for b in body]
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head>\n<body>\n"
                f"<h1>{html.escape(self.title)}</h1>\n" + "\n".join(body) + "\n</body></html>\n")

    def markdown(self, stem: str) -> str:
        out = [f"# {self.title}", ""]
        for heading, _, md in self.sections:
            out += [f"## {heading}", "", md, ""]
        text = "\n".join(out)
        for name in self.figures:
            text = text.replace(f"{{fig:{name}}}", f"![{name}]({stem}_{name}.png)")
        return text

    def write(self, path) -> list[Path]:
        """Write ``path`` (.html or .md; Markdown puts its plots beside it as <stem>_<name>.png),
        atomically, file by file; returns the paths written."""
        from scaling_core.io import atomic_write_bytes, atomic_write_text

        path = check_report_path(path)
        if path.suffix.lower() == ".md":
            written = []
            for name, png in self.figures.items():
                written.append(atomic_write_bytes(path.with_name(f"{path.stem}_{name}.png"), png))
            return written + [atomic_write_text(path, self.markdown(path.stem))]
        return [atomic_write_text(path, self.html())]


def check_report_path(path) -> Path:
    """The report's path, or InputError unless it ends in .html/.htm (self-contained) or .md."""
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm", ".md"):
        from .errors import InputError

        raise InputError(f"--report: the file must end in .html or .md; got {str(path)!r}")
    return path


# --- figures ---------------------------------------------------------------------------------

def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def figure_data(fit, data=None, targets=()):
    """Loss against compute: the runs coloured by model size, the law's compute-optimal frontier with
    its interval, the fitted budgets shaded, and ``targets`` (flops, loss, low, high) marked."""
    from ._plot import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 4.0))
    target = max((t[0] for t in targets), default=10.0 * fit.data_range["C_max"])
    r = fit.data_range
    C = np.logspace(math.log10(r["C_min"]) - 0.3, math.log10(max(target, r["C_max"])) + 0.3, 60)
    alloc = fit.optimal_allocation(C, level=0.9 if fit.n_bootstrap else None)
    ax.plot(C, alloc["loss"], color="C0", label=f"{fit.form} law, compute-optimal frontier")
    if "loss_low" in alloc:
        ax.fill_between(C, alloc["loss_low"], alloc["loss_high"], color="C0", alpha=0.2,
                        label="90% interval of a run on the frontier")
    ax.axvspan(r["C_min"], r["C_max"], color="0.92", zorder=0, label="budgets the law was fitted on")
    ys = [alloc["loss"].to_numpy()]
    if data is not None:
        sc = ax.scatter(data["C"], data["loss"], c=np.log10(data["N"]), cmap="viridis", s=12,
                        label="runs (colour: model size)")
        fig.colorbar(sc, ax=ax, label="log10 parameters N")
        ys.append(data["loss"].to_numpy())
    for k, (c, loss, low, high) in enumerate(targets):
        ax.errorbar([c], [loss], yerr=None if low is None else [[loss - low], [high - loss]], fmt="*", ms=12,
                    color="C3", zorder=5, label="plan" if k == 0 else None)
        ys.append([loss])
    y = np.concatenate([np.ravel(v) for v in ys])
    pad = 0.12 * (y.max() - y.min() or abs(y.max()) or 1.0)
    ax.set_ylim(y.min() - pad, y.max() + pad)
    ax.set_xscale("log")
    ax.set_xlabel("training compute (FLOPs)")
    ax.set_ylabel("loss (the table's unit)")
    ax.set_title(f"Data and fitted law: {fit.law.citation}", fontsize="small")
    ax.legend(fontsize="x-small", loc="upper right")
    return png_bytes(fig)


def figure_isoflop(data):
    from .isoflop import isoflop_analysis
    from ._plot import pyplot
    from .errors import InputError

    try:
        iso = isoflop_analysis(data.rename(columns={"N": "params", "D": "tokens"}), bootstrap=0)
    except InputError:
        return None, None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 3.8))
    iso.plot(ax)
    ax.set_xlabel("parameters N")
    ax.set_ylabel("loss")
    ax.set_title("isoFLOP curves (one colour per budget) and their parabola minima", fontsize="small")
    return png_bytes(fig), iso


# --- tables and sections -----------------------------------------------------------------------

def fmt(v, spec=".4g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, spec)


def table(headers, rows, md: bool, numeric=(1, 2)):
    """A table as Markdown or HTML; the ``numeric`` columns keep their figures on one line."""
    if md:
        out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        out += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
        return "\n".join(out)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    cell = lambda j, c: ('<td class="num">' if j in numeric else "<td>") + html.escape(str(c)) + "</td>"
    body = "".join("<tr>" + "".join(cell(j, c) for j, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def law_sections(fit, data, sections, figures) -> None:
    """The candidate-law table (form="auto") and the isoFLOP curves (when the runs are at hand)."""
    sel = fit.selection
    if sel is not None:
        srows = [(f, fmt(r["mean_abs_rel_error"], ".2%"), fmt(r["worst_abs_rel_error"], ".2%"),
                  fmt(r["coverage"], ".0%"), fmt(r["weight"], ".0%")) for f, r in sel.iterrows()]
        h = ["form", "backtest mean |error|", "worst", "90% coverage", "weight"]
        sections.append(("Candidate laws (backtests)", table(h, srows, False), table(h, srows, True)))
    if data is not None:
        png, iso = figure_isoflop(data)
        if png is not None:
            figures["isoflop"] = png
            note = "; ".join(iso.warnings) or "every vertex lies inside its sampled sizes"
            sections.append(("isoFLOP curves", f"{{fig:isoflop}}<p class=\"muted\">{html.escape(note)}</p>",
                             f"{{fig:isoflop}}\n\n{note}"))


def build_fit_report(fit, data=None) -> Report:
    """The report of a loss-surface fit: status and warnings, parameters, the data and the law out
    to 10x the data, its own backtest, the candidate laws and isoFLOP curves."""
    figures = {"data": figure_data(fit, data)}
    warns = fit.warnings
    wh = "<ul>" + "".join(f'<li class="risk">{html.escape(w)}</li>' for w in warns) + "</ul>" if warns else \
        "<p>No warnings.</p>"
    sections = [("Warnings", wh, "\n".join(f"- {w}" for w in warns) or "No warnings.")]
    t = fit.to_frame(0.9)
    prow = [(p, fmt(r["value"]), f"{fmt(r['low'])} - {fmt(r['high'])}", "held" if r["fixed"] else "fitted")
            for p, r in t.iterrows()]
    h = ["parameter", "value", "90% interval", ""]
    summary = (f"{fit.form} ({fit.law.citation}); status {fit.status}; {fit.n_points} runs; "
               f"{fit.n_bootstrap} bootstrap refits; {fit.interval_method}")
    sections.append(("Parameters", f"<p>{html.escape(summary)}</p>" + table(h, prow, False),
                     summary + "\n\n" + table(h, prow, True)))
    bt = fit.trust.get("backtest")
    text = (f"Own backtest: fitted without the largest budget, mean |error| {bt['mean_abs_rel_error']:.2%} (worst "
            f"{bt['max_abs_rel_error']:.2%}), 90% coverage {bt['coverage']:.0%}." if bt else "No own backtest.")
    sections.append(("Data and fitted law", f"{{fig:data}}<p>{html.escape(text)}</p>", f"{{fig:data}}\n\n{text}"))
    law_sections(fit, data, sections, figures)
    return Report(title=f"Loss-surface fit: {fit.form}", sections=sections, figures=figures)
