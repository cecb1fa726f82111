"""LaTeX rendering of the tables (booktabs; compile with pdflatex): names, labels, one cell's text
and the table environment. What a table holds and which cell is bold is decided elsewhere
(``mapbench.tables``, ``mapbench.claims``); ``mapbench.html`` renders the same text as HTML.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from mapbench.select import lower_is_better

# Display names of the papers' methods; config (tables.display, a solver's `display`) overrides.
DISPLAY = {
    "map_ga": "MAP-GA", "map_ga_np": "MAP-GA(NP)", "map_ga_d": "MAP-GA(D)",
    "map_ga_d_np": "MAP-GA(D,NP)", "map_ga_pgdm": "MAP-GA-PGDM", "map_ga_pgdm_d": "MAP-GA-PGDM(D)",
    "pgdm": "PGDM", "map_ga_momentum": "MAP-GA(mom.)", "map_ga_adam": "MAP-GA(Adam)",
    "vml_map": "VML-MAP", "dps": "DPS", "ddrm": "DDRM", "diffpir": "DiffPIR", "red_diff": "RED-diff",
    "dmplug": "DMPlug", "daps": "DAPS", "ddnm": "DDNM", "pnp_dm": "PnP-DM", "pinv": r"$H^+ y$",
}
# The paper lists the variants first and its baseline last.
ORDER = ["map_ga_d_np", "map_ga_d", "map_ga_np", "map_ga", "map_ga_momentum", "map_ga_adam",
         "map_ga_pgdm_d", "map_ga_pgdm", "pgdm", "vml_map", "dps", "ddrm", "diffpir", "red_diff",
         "dmplug", "daps", "ddnm", "pnp_dm", "pinv"]
LABELS = {"fid": "FID", "kid": "KID", "lpips": "LPIPS", "psnr": "PSNR", "ssim": "SSIM",
          "mse": "MSE", "logpost_gap": r"$\Delta\log p$", "map_rmse": "RMSE$_\\mathrm{MAP}$",
          "consistency": r"$\|Hx-y\|$", "nfe": "NFE", "cost": "cost", "seconds": "s",
          "peak_mem_mb": "MB"}


def latex_escape(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"),
                 ("#", r"\#"), ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
        s = s.replace(a, b)
    return s


def label(metric: str) -> str:
    return LABELS.get(metric, latex_escape(metric))


def arrow(metric: str) -> str:
    return r"$\downarrow$" if lower_is_better(metric) else r"$\uparrow$"


def number(value: float, places: int, bold: bool = False) -> str:
    core = f"{value:.{places}f}"
    return rf"\mathbf{{{core}}}" if bold else core


def value_cell(mean: float, places: int, *, bold: bool = False, lo: float = math.nan,
               hi: float = math.nan, se: float = math.nan, n: int | None = None) -> str:
    """A mean with its interval as ``^{+up}_{-down}`` (``lo``, ``hi``), or ``\\pm se``, and the
    image count ``n`` when given; ``--`` for no value."""
    if not math.isfinite(mean):
        return "--"
    core = number(mean, places, bold)
    if math.isfinite(lo) and math.isfinite(hi):
        core += rf"^{{+{hi - mean:.{places}f}}}_{{-{mean - lo:.{places}f}}}"
    elif math.isfinite(se):
        core += rf"\,{{\scriptstyle\pm{se:.{places}f}}}"
    if n is not None:
        core += rf"^{{\scriptscriptstyle n={n}}}"
    return f"${core}$"


@dataclass
class Row:
    """One table row: ``cells`` maps (column group, column) to the cell's LaTeX; ``note`` maps a
    column group to a small line under the row (e.g. the chosen setting and its cost)."""

    label: str
    cells: dict
    note: dict = field(default_factory=dict)
    sigma: str = ""
    tail: str = ""


def render(blocks: list[list[Row]], groups: list[str], columns: list[tuple[str, str]], *,
           caption: str, label: str, sigma_column: bool = False, lead_column: str = "Method",
           tail_column: str = "fail") -> str:
    """A booktabs table: one column group per entry of ``groups`` (e.g. the masks), under each the
    ``columns`` (key, heading); blocks of rows split by rules; a note line under a row where it
    has one."""
    width = len(columns)
    ncols = 1 + int(sigma_column) + len(groups) * width + 1
    first = 2 + int(sigma_column)
    lines = [r"\begin{table}[ht]", r"\centering", r"\setlength{\tabcolsep}{3pt}",
             rf"\caption{{{caption}}}", rf"\label{{{label}}}",
             r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
             rf"\begin{{tabular}}{{l{'c' if sigma_column else ''}{'c' * (len(groups) * width)}r}}",
             r"\toprule"]
    lead = [lead_column] + ([r"$\sigma_y$"] if sigma_column else [])
    head = lead + [rf"\multicolumn{{{width}}}{{c}}{{{latex_escape(g)}}}" for g in groups]
    lines.append(" & ".join(head + [tail_column]) + r" \\")
    lines.append(" ".join(rf"\cmidrule(lr){{{first + i * width}-{first + (i + 1) * width - 1}}}"
                          for i in range(len(groups))))
    sub = [""] * len(lead) + [heading for _ in groups for _, heading in columns] + [""]
    lines.append(" & ".join(sub) + r" \\")
    for block in blocks:
        lines.append(r"\midrule")
        for r in block:
            cells = [r.label] + ([r.sigma] if sigma_column else [])
            cells += [r.cells.get((g, key), "--") for g in groups for key, _ in columns]
            lines.append(" & ".join(cells + [r.tail]) + r" \\")
            if r.note:
                note = [r"\multicolumn{1}{r}{}"] + ([""] if sigma_column else [])
                note += [rf"\multicolumn{{{width}}}{{c}}{{\scriptsize {r.note[g]}}}" if g in r.note
                         else rf"\multicolumn{{{width}}}{{c}}{{}}" for g in groups]
                lines.append(" & ".join(note + [""]) + r" \\")
    if not blocks:
        lines.append(r"\midrule")
        lines.append(rf"\multicolumn{{{ncols}}}{{c}}{{\emph{{no results for this table}}}} \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}", ""]
    return "\n".join(lines)


DOCUMENT = r"""\documentclass{article}
\usepackage[margin=1.5cm,landscape]{geometry}
\usepackage{booktabs}
\usepackage{graphicx}
\usepackage{amsmath}
\begin{document}
%s
\end{document}
"""
