"""The tables as HTML: each LaTeX table file of ``mapbench.tables`` rendered as a self-contained
HTML page (no scripts, no external resources) for the Snakemake report and any browser.

The page is made from the ``.tex`` text itself, cell for cell, so it always shows what the LaTeX
shows: one HTML table per ``table`` environment (its caption above it), ``\\multicolumn`` as
``colspan``, ``\\midrule`` as a new row group, the header rows as ``thead``, and the inline LaTeX
the tables use (``\\mathbf``, intervals as ``^{+a}_{-b}``, Greek letters, arrows, size switches,
escapes) as HTML. An unknown command is shown by its name, never dropped silently.
``fid_summary`` gives the learned prior's sample check in one line (a report label).
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

from mapbench.io import atomic_path

SYMBOLS = {
    "sigma": "σ", "tau": "τ", "eta": "η", "mu": "μ", "lambda": "λ", "zeta": "ζ", "rho": "ρ",
    "alpha": "α", "beta": "β", "gamma": "γ", "epsilon": "ε", "varepsilon": "ε", "theta": "θ",
    "Delta": "Δ", "Sigma": "Σ", "pm": "±", "times": "×", "cdot": "·", "le": "≤", "leq": "≤",
    "ge": "≥", "geq": "≥", "approx": "≈", "infty": "∞", "to": "→", "uparrow": "↑",
    "downarrow": "↓", "mid": "|", "|": "‖", "log": "log", "exp": "exp", "ell": "ℓ",
    ",": "\u2009", ";": " ", ":": " ", "quad": "\u2003", " ": " ", "textbackslash": "\\",
    "_": "_", "%": "%", "&": "&amp;", "#": "#", "$": "$", "{": "{", "}": "}",
    "left": "", "right": "", "centering": "",
}
ONE_ARG = {  # command -> HTML around its rendered argument
    "mathbf": "<b>{}</b>", "textbf": "<b>{}</b>", "emph": "<em>{}</em>", "textit": "<i>{}</i>",
    "mathrm": "{}", "text": "{}", "textrm": "{}", "operatorname": "{}", "mathit": "<i>{}</i>",
    "hat": "{}\u0302", "bar": "{}\u0304", "tilde": "{}\u0303", "sqrt": "√({})",
}
SIZE_SWITCHES = {"scriptsize", "footnotesize", "small", "tiny", "scriptstyle",
                 "scriptscriptstyle"}
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1em; color: #222; background: #fff; }}
figure {{ margin: 0 0 2.5em 0; }}
figcaption {{ max-width: 60em; padding-bottom: .6em; font-size: 13px; line-height: 1.35; }}
table {{ border-collapse: collapse; font-size: 13px; }}
thead {{ border-top: 2px solid #222; border-bottom: 1px solid #222; }}
tbody {{ border-bottom: 1px solid #999; }}
tbody:last-child {{ border-bottom: 2px solid #222; }}
th, td {{ padding: 2px 7px; white-space: nowrap; font-variant-numeric: tabular-nums; }}
th {{ font-weight: 600; }}
.l {{ text-align: left; }} .c {{ text-align: center; }} .r {{ text-align: right; }}
.ci {{ display: inline-flex; flex-direction: column; vertical-align: middle; font-size: 70%;
       line-height: 1.05; margin-left: 1px; }}
small {{ color: #555; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""


def _group(s: str, i: int) -> tuple[str, int]:
    """The argument starting at ``s[i]`` (spaces skipped): a braced group, a command or a char."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s):
        return "", i
    if s[i] == "{":
        depth = 0
        for j in range(i, len(s)):
            depth += {"{": 1, "}": -1}.get(s[j], 0)
            if depth == 0:
                return s[i + 1:j], j + 1
        raise ValueError(f"unbalanced braces in {s!r}")
    if s[i] == "\\":              # a command, with its argument if it takes one (_\mathrm{MAP})
        m = re.match(r"\\([A-Za-z]+|.)", s[i:])
        if m.group(1) not in ONE_ARG:
            return m.group(0), i + m.end()
        arg, j = _group(s, i + m.end())
        return f"{m.group(0)}{{{arg}}}", j
    return s[i], i + 1


def tex(s: str) -> str:
    """Inline LaTeX (text and ``$...$`` math) as HTML."""
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            m = re.match(r"\\([A-Za-z]+|.)", s[i:])
            name, i = m.group(1), i + m.end()
            if name in ONE_ARG:
                arg, i = _group(s, i)
                out.append(ONE_ARG[name].format(tex(arg)))
            elif name in SIZE_SWITCHES:   # applies to the rest of the group
                out.append(f"<small>{tex(s[i:])}</small>")
                break
            elif name in SYMBOLS:
                out.append(SYMBOLS[name])
                if name.isalpha() and s[i:i + 2] == "{}":
                    i += 2                # \textbackslash{}
            else:
                out.append(html.escape(name))
        elif c in "^_":
            sup, i = _group(s, i + 1)
            if c == "^" and s[i:i + 1] == "_":   # an interval: +hi over -lo
                sub, i = _group(s, i + 1)
                out.append(f'<span class="ci"><sup>{tex(sup)}</sup><sub>{tex(sub)}</sub></span>')
            else:
                tag = "sup" if c == "^" else "sub"
                out.append(f"<{tag}>{tex(sup)}</{tag}>")
        elif c == "{":
            arg, i = _group(s, i)
            out.append(tex(arg))
        elif c == "$":
            i += 1
        elif s.startswith("--", i):
            out.append("–")
            i += 2
        else:
            out.append("\u00a0" if c == "~" else html.escape(c))
            i += 1
    return "".join(out)


def _command_arg(text: str, command: str) -> str | None:
    """The braced argument of the first ``\\command{...}`` in ``text``."""
    at = text.find(f"\\{command}{{")
    return None if at < 0 else _group(text, at + len(command) + 1)[0]


def _cell(raw: str, align: str, tag: str) -> tuple[str, int]:
    """One tabular cell as ``<td>``/``<th>`` and the columns it spans (``\\multicolumn``)."""
    raw, span = raw.strip(), 1
    if raw.startswith(r"\multicolumn"):
        n, i = _group(raw, len(r"\multicolumn"))
        spec, i = _group(raw, i)
        raw, span, align = _group(raw, i)[0], int(n), spec.strip("|")[:1] or align
    colspan = f' colspan="{span}"' if span > 1 else ""
    return f'<{tag} class="{align}"{colspan}>{tex(raw)}</{tag}>', span


def table_html(env: str) -> str:
    """One ``table`` environment as an HTML figure: its caption, then the table (header rows,
    row groups)."""
    caption = _command_arg(env, "caption") or ""
    label = _command_arg(env, "label") or ""
    spec = _command_arg(env, "begin{tabular}") or ""
    aligns = [a for a in spec if a in "lcr"]
    body = env[env.index(r"\begin{tabular}") + len(r"\begin{tabular}") + len(spec) + 2:
               env.index(r"\end{tabular}")]
    head, groups = [], []
    for line in body.splitlines():
        line = line.strip()
        if not line or line.startswith((r"\toprule", r"\bottomrule", r"\cmidrule")):
            continue
        if line.startswith(r"\midrule"):
            groups.append([])
            continue
        tag = "td" if groups else "th"
        cells, col = [], 0
        for raw in re.split(r"(?<!\\)&", line.removesuffix(r"\\")):
            cell, span = _cell(raw, aligns[col] if col < len(aligns) else "c", tag)
            cells.append(cell)
            col += span
        (groups[-1] if groups else head).append(f"<tr>{''.join(cells)}</tr>")
    anchor = re.sub(r"[^A-Za-z0-9_-]", "-", label)
    parts = [f'<figure id="{anchor}">', f"<figcaption>{tex(caption)}</figcaption>",
             "<table>", "<thead>", *head, "</thead>"]
    for rows in groups:
        parts += ["<tbody>", *rows, "</tbody>"]
    return "\n".join(parts + ["</table>", "</figure>"])


def tables_page(tex_text: str, title: str) -> str:
    """A whole ``.tex`` table file (one or more ``table`` environments) as an HTML page."""
    envs = re.findall(r"\\begin\{table\}.*?\\end\{table\}", tex_text, re.S)
    return PAGE.format(title=html.escape(title), body="\n".join(table_html(e) for e in envs))


def write_beside(tex_path: str | Path, tex_text: str) -> Path:
    """Write ``tex_text`` as HTML next to its ``.tex`` file (same name, ``.html``); atomic."""
    path = Path(tex_path).with_suffix(".html")
    with atomic_path(path) as tmp:
        tmp.write_text(tables_page(tex_text, path.stem), encoding="utf-8")
    return path


def write_table_files(out_dir: str | Path, stem: str, tex: str, md: str) -> list[Path]:
    """``stem.tex``, ``stem.html`` beside it and ``stem.md`` under ``out_dir``; atomic."""
    tex_path, md_path = Path(out_dir) / f"{stem}.tex", Path(out_dir) / f"{stem}.md"
    with atomic_path(tex_path) as tmp:
        tmp.write_text(tex)
    with atomic_path(md_path) as tmp:
        tmp.write_text(md)
    return [tex_path, write_beside(tex_path, tex), md_path]


def fid_summary(sample_check: str | Path) -> str:
    """A sample check's JSON (``mapbench sample-prior --out``) in one line: FID per sampler."""
    samplers = json.loads(Path(sample_check).read_text())["samplers"]
    return " · ".join(f"{name} {s['fid']:.1f} (n = {s['n']})" for name, s in samplers.items())
