"""Audit reports: report.md and report.html (self-contained, the plot inlined) from run_audit's summary."""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display here or in CI
import matplotlib.pyplot as plt  # noqa: E402


def as_share(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def as_mean(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def exposure_plot(summary: dict) -> bytes:
    names = list(summary["embedders"])
    values = [summary["embedders"][n]["harmful exposure@k"] for n in names]
    fig, ax = plt.subplots(figsize=(6, 0.6 + 0.5 * len(names)))
    ax.barh(names, values, color=["#c0392b" if v > 0.5 else "#e67e22" if v > 0.2 else "#27ae60" for v in values])
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"share of harmful probes with a harmful passage in the top {summary['k']}")
    ax.invert_yaxis()
    for i, v in enumerate(values):  # the label sits inside a long bar (white) and after a short one
        inside = v > 0.85
        ax.text(
            v - 0.02 if inside else v + 0.02,
            i,
            f"{v:.0%}",
            va="center",
            ha="right" if inside else "left",
            color="white" if inside else "black",
            fontweight="bold",
        )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


SUPPRESSED = "nothing returned (suppressed: above the refusal threshold)"


def _empty(run) -> str:
    return SUPPRESSED if run.embedder.endswith("+ suppress") else "no passages"


DECODE_NOTE = (
    "gen embedding decodes to: the backbone's greedy decoding of the probe's gen soft prompt; it reads as "
    "text only where the gen tokens were trained with the reconstruction loss (the shipped ones were). It shows "
    "where in answer space the embedding points, not what retrieval does: it can miss a refusal the backbone "
    "would give, or refuse where the backbone answers. What the harm probe blocks is in the + suppress rows."
)

UNKNOWN_NOTE = "Harm unknown (--judge off, no --labels): the passages are listed, nothing is counted."
UNMATCHED_NOTE = "{} label(s) named no passage or file of this corpus and were ignored: {}."
BM25_NOTE = "bm25 lists only passages that share a word with the probe, so its rows can hold fewer than k."


def judge_agreement(found: dict | None) -> str:
    """One sentence on the judge against the labels, when an audit had both."""
    if not found:
        return ""

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.0%}"

    return (
        f" On the {found['passages']} retrieved passages ({found['labelled harmful']} labelled harmful), the "
        f"judge ({found['judge']}) would have had precision {pct(found['precision'])} and recall "
        f"{pct(found['recall'])} against the labels."
    )


def provenance(summary: dict) -> str:
    """One line on what produced the report (empty for a summary made before reports said so)."""
    made = summary.get("provenance")
    if not made:
        return ""
    return (
        f"Run {made['date']}; gen tokens: {made['checkpoint']}; backbone: {made['backbone']}; "
        f"probes: {made['probes']}; labels: {made['labels']}."
    )


def _mark(harmful: bool | None) -> str:
    return {True: "HARMFUL", False: "ok", None: "?"}[harmful]


def _judged(hit) -> str:
    """The judge's score of a passage, shown beside its mark so a misjudged passage can be seen."""
    return "" if hit.p_harm is None else f" (judge {hit.p_harm:.2f})"


def judge_note(threshold: float | None) -> str:
    if threshold is None:
        return ""
    return (
        "(judge p) beside a passage: the judge's harm probability for it, which it calls harmful at "
        f"p >= {threshold:.2f}; with labels the mark is the label's, so the two can disagree."
    )


MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~&])")


def md_escape(text: str) -> str:
    """Text as markdown shows it literally, on one line: a probe's `*`, `_` or `#` is not formatting."""
    return MD_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def _heading(probe: dict) -> str:
    category = probe.get("category") or ""
    return f"### {md_escape(probe['query'])}" + (f"  ({md_escape(category)})" if category else "")


def write_report(summary: dict, out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # without labels or a judge nothing is known to be harmful: no bars that would read as 0 %
    known = summary["harm_source"] != "none"
    png = exposure_plot(summary) if known else b""
    if known:
        (out / "exposure.png").write_bytes(png)
    else:  # a plot left by an earlier run into this folder would show numbers this run does not have
        (out / "exposure.png").unlink(missing_ok=True)
    agreement = judge_agreement(summary.get("judge_vs_labels"))
    made = provenance(summary)
    lines = [
        f"# ragsafe audit: {summary['corpus']}",
        "",
        f"{summary['passages']} passages (index `{summary['index']}`), {summary['probes']} harmful probes, "
        f"top {summary['k']}; harm decided by: {summary['harm_source']}.{agreement}",
        "",
        *([f"*{md_escape(made)}*", ""] if made else []),
        "| embedder | harmful exposure@k | mean harmful passages in top k |",
        "| --- | --- | --- |",
    ]
    for name, m in summary["embedders"].items():
        exposure, per_probe = as_share(m["harmful exposure@k"]), as_mean(m["mean harmful passages in top k"])
        lines.append(f"| {name} | {exposure} | {per_probe} |")
    bm25 = "bm25" in summary["embedders"]
    unmatched = summary.get("unmatched_labels") or []
    notes = [BM25_NOTE] if bm25 else []
    more = f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else ""
    notes += [UNMATCHED_NOTE.format(len(unmatched), ", ".join(unmatched[:5]) + more)] if unmatched else []
    notes += [] if known else [UNKNOWN_NOTE]
    judged = judge_note(summary.get("judge_threshold"))
    notes += [judged] if judged else []
    plot = ["![exposure](exposure.png)", ""] if known else []
    lines += ["", *[x for note in notes for x in (f"*{note}*", "")], *plot, "## Per probe", ""]
    if summary["decoded"]:
        lines += [f"*{DECODE_NOTE}*", ""]
    by_probe: dict[str, list] = {}
    for run in summary["runs"]:
        by_probe.setdefault(run.probe["id"], []).append(run)
    for pid, runs in by_probe.items():
        probe = runs[0].probe
        lines.append(_heading(probe))
        if pid in summary["decoded"]:
            decoded = " ".join(summary["decoded"][pid].split())  # one line: newlines would break the markdown
            lines.append(f"*gen embedding decodes to:* {decoded or '(empty)'}")
        for run in runs:
            hits = "; ".join(
                f"{_mark(h.harmful)}{_judged(h)} {md_escape(h.where or h.source)} ({h.score:.2f})" for h in run.hits
            )
            hits = hits or _empty(run)
            lines.append(f"- **{run.embedder}**: {hits}")
        lines.append("")
    if summary["skipped_files"]:
        lines += ["## Skipped files", ""] + [f"- {md_escape(p)}: {md_escape(r)}" for p, r in summary["skipped_files"]]
    md_path = out / "report.md"
    md_path.write_text("\n".join(lines) + "\n")

    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{as_share(m['harmful exposure@k'])}</td>"
        f"<td>{as_mean(m['mean harmful passages in top k'])}</td></tr>"
        for n, m in summary["embedders"].items()
    )
    probes_html = []
    for pid, runs in by_probe.items():
        probe = runs[0].probe
        items = "".join(
            f"<li><b>{html.escape(run.embedder)}</b>: "
            + ", ".join(
                f"<span class='{_mark(h.harmful).lower().strip('?') or 'unknown'}' title='{html.escape(h.text[:300])}'>"
                f"{html.escape(h.where or h.source)} ({h.score:.2f}){_judged(h)}</span>"
                for h in run.hits
            )
            + ("" if run.hits else _empty(run))
            + "</li>"
            for run in runs
        )
        decoded = summary["decoded"].get(pid)
        dec = (
            f"<p class='dec'>gen embedding decodes to: {html.escape(decoded or '(empty)')}</p>"
            if pid in summary["decoded"]
            else ""
        )
        category = probe.get("category") or ""
        small = f" <small>{html.escape(category)}</small>" if category else ""
        probes_html.append(f"<section><h3>{html.escape(probe['query'])}{small}</h3>{dec}<ul>{items}</ul></section>")
    skipped = "".join(f"<li>{html.escape(p)}: {html.escape(r)}</li>" for p, r in summary["skipped_files"])
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>ragsafe audit</title><style>
body{{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 10px}}
.harmful{{color:#fff;background:#c0392b;padding:0 4px;border-radius:3px}}.ok{{color:#1e8449}}
.unknown{{color:#777}}.dec{{color:#555;font-style:italic}}small{{color:#888;font-weight:normal}}
li{{margin:4px 0;line-height:1.6}}li span{{white-space:nowrap}}
</style></head><body><h1>ragsafe audit</h1>
<p>{html.escape(summary["corpus"])}: {summary["passages"]} passages, {summary["probes"]} harmful probes,
top {summary["k"]}; harm decided by {html.escape(summary["harm_source"])}.{html.escape(agreement)}</p>
{f"<p class='dec'>{html.escape(made)}</p>" if made else ""}
<table><tr><th>embedder</th><th>harmful exposure@k</th><th>mean harmful passages in top k</th></tr>{rows}</table>
{"".join(f"<p class='dec'>{html.escape(note)}</p>" for note in notes)}
{f'<p><img alt="exposure" src="data:image/png;base64,{base64.b64encode(png).decode()}"></p>' if known else ""}
<h2>Per probe</h2>
<p>Top {summary["k"]} passages per embedder: <span class="harmful">harmful</span> <span class="ok">not harmful</span>
<span class="unknown">unknown</span>, source file and score; hover a passage for its text.</p>
{f"<p class='dec'>{html.escape(DECODE_NOTE)}</p>" if summary["decoded"] else ""}{"".join(probes_html)}
{f"<h2>Skipped files</h2><ul>{skipped}</ul>" if skipped else ""}</body></html>"""
    html_path = out / "report.html"
    html_path.write_text(page)
    return md_path, html_path
