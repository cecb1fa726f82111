"""Output a person reads: the tables as HTML, `mapbench --help`, `mapbench list solvers` (fast), and
Snakemake's HTML report of a tiny run, opened in headless Chromium (slow).

The browser test needs Debian's `chromium` (installed here with apt-get when missing and running
as root, as tests/slurm/cluster.sh does for Slurm) and the `playwright` package (the `test` extra),
which drives that chromium (`executable_path`); it never downloads a browser of its own. It saves
a screenshot of the report as results/report_screenshot.png.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mapbench import html, tables
from mapbench.cli import COMMANDS, build_parser, main
from mapbench.commands import list_names
from tests.test_tables import TASKS, metrics, shard_dir  # noqa: F401  (fixtures)
from tests.test_workflow import ROOT, snakemake, tiny_config, write_config

WEIGHTS = os.environ.get("MAPBENCH_WEIGHTS") or str(ROOT / ".cache" / "weights")
CHECKPOINTS = ROOT / "checkpoints" / "fashion_mnist_edm"
SCREENSHOT = ROOT / "results" / "report_screenshot.png"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


# ---------------------------------------------------------------------------- tables as HTML

class Cells(HTMLParser):
    """The text of every table cell of an HTML page, per table: [[(tag, text, colspan)]] rows."""

    def __init__(self, page: str):
        super().__init__()
        self.tables, self.captions, self._cell, self._caption = [], [], None, None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = [tag, "", int(dict(attrs).get("colspan", 1))]
        elif tag == "figcaption":
            self._caption = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(tuple(self._cell))
            self._cell = None
        elif tag == "figcaption":
            self.captions.append(self._caption)
            self._caption = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data
        elif self._caption is not None:
            self._caption += data


TABLE_TEX = r"""\begin{table}[ht]
\centering
\caption{Gap at $\sigma_y = 0.1$ ($\log p(\hat x_\mathrm{MAP}\mid y)$), 95\% interval.}
\label{tab:x:fm:gmm}
\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%
\begin{tabular}{lccr}
\toprule
Method & \multicolumn{2}{c}{box50} & fail \\
\cmidrule(lr){2-3}
 & PSNR\,$\uparrow$ & $\Delta\log p$\,$\downarrow$ &  \\
\midrule
MAP-GA & $\mathbf{21.50}^{+0.75}_{-0.50}$ & $3.00^{+1.50}_{-1.00}$ & 1/4 \\
\multicolumn{1}{r}{\scriptsize budget} & \multicolumn{2}{c}{\scriptsize (10,2)} &  \\
$H^+ y$ & $19.00\,{\scriptstyle\pm0.50}$ & $\mathbf{1.50}$ & 0/4 \\
\midrule
\emph{ground truth} & -- & $0.50^{+0.25}_{-0.25}$ &  \\
\bottomrule
\end{tabular}}
\end{table}
"""


def test_a_latex_table_reads_the_same_in_html():
    """The LaTeX that mapbench writes (booktabs, multicolumn, bold best values, intervals, size
    switches, math in the caption) becomes the same table in HTML, cell for cell."""
    page = html.tables_page(TABLE_TEX, "x")
    parsed = Cells(page)
    assert parsed.captions == ["Gap at σy = 0.1 (log p(x̂MAP| y)), 95% interval."]
    (table,) = parsed.tables
    text = [[(tag, " ".join(t.split()), span) for tag, t, span in row] for row in table]
    assert text == [
        [("th", "Method", 1), ("th", "box50", 2), ("th", "fail", 1)],
        [("th", "", 1), ("th", "PSNR ↑", 1), ("th", "Δlog p ↓", 1), ("th", "", 1)],
        [("td", "MAP-GA", 1), ("td", "21.50+0.75-0.50", 1), ("td", "3.00+1.50-1.00", 1),
         ("td", "1/4", 1)],
        [("td", "budget", 1), ("td", "(10,2)", 2), ("td", "", 1)],
        [("td", "H+ y", 1), ("td", "19.00 ±0.50", 1), ("td", "1.50", 1), ("td", "0/4", 1)],
        [("td", "ground truth", 1), ("td", "–", 1), ("td", "0.50+0.25-0.25", 1), ("td", "", 1)]]
    assert re.findall(r"<b>(.*?)</b>", page) == ["21.50", "1.50"]
    assert '<span class="ci"><sup>+0.75</sup><sub>-0.50</sub></span>' in page
    assert "<em>ground truth</em>" in page and 'id="tab-x-fm-gmm"' in page
    assert page.count("<tbody>") == 2                 # a row group per \midrule block


def test_html_beside_every_tex_has_the_same_numbers(metrics, tmp_path):  # noqa: F811
    """Every .tex table file has an .html beside it with as many tables, and every number of each
    LaTeX table appears in its HTML table, in the same order."""
    opts = tables.Options(tasks=TASKS, metrics=["psnr", "logpost_gap"], bootstrap_resamples=50)
    written = tables.write_all(metrics, opts, tmp_path)
    for name in tables.TABLE_FILES:
        tex = (tmp_path / name).read_text()
        page = (tmp_path / name).with_suffix(".html")
        assert page in written
        envs = re.findall(r"\\begin\{tabular\}.*?\\end\{tabular\}", tex, re.S)
        parsed = Cells(page.read_text())
        assert len(parsed.tables) == len(envs) > 0
        for env, table in zip(envs, parsed.tables):
            text = " ".join(c[1] for r in table for c in r)
            assert re.findall(r"\d+\.\d+", env) == re.findall(r"\d+\.\d+", text)
        assert "\\" not in re.sub(r"<[^>]+>", "", page.read_text())  # no LaTeX left over


# ---------------------------------------------------------------------------- the command line

def test_help_describes_the_tool_and_every_command(capsys):
    parser = build_parser()
    text = parser.format_help()
    first = parser.description.split("\n\n")[0]
    assert first.endswith(".") and "inverse problems" in first and "``" not in text
    sub = next(a for a in parser._actions if a.dest == "command")
    assert len(sub.choices) == len(COMMANDS)
    for action in sub._choices_actions:
        assert action.help, action.dest
        assert action.dest in text
    with pytest.raises(SystemExit):
        main(["list", "--help"])
    assert "forward evaluations and VJPs" in capsys.readouterr().out


def test_list_solvers_shows_paper_and_measured_cost(capsys, one_thread):
    """Each registered solver's row names its paper and a cost formula, and the formula fitted
    from three budgets predicts the counts at budgets it was neither fitted nor checked on."""
    from mapbench.select import counted_calls
    from mapbench.solvers import SOLVERS
    assert main(["list", "solvers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["solver", "forward"]
    for name, spec in SOLVERS.items():
        (row,) = [line for line in lines if line.split()[:1] == [name]]
        assert spec.paper and row.endswith(spec.paper), name
        assert "irregular" not in row, row
    for name, steps, iters in (("map_ga", 4, 3), ("map_ga_pgdm", 5, 2), ("dmplug", 3, 4),
                               ("pgdm", 5, 1)):
        measured = counted_calls(name, steps, iters, list_names.SIGMA_Y, "noise")
        for k, coef in enumerate(list_names.cost(name).values()):
            fixed, per_step, per_iter = coef
            assert fixed + per_step * steps + (per_iter or 0) * steps * iters == measured[k]
    assert list_names.cost("pgdm")["nfe"][2] is None   # its budget is its steps: iters = 1 only
    assert main(["list", "solvers", "--names"]) == 0
    assert capsys.readouterr().out.split() == list(SOLVERS)


def test_a_cost_not_of_the_form_is_listed_as_irregular(monkeypatch):
    """A solver whose forward count grows as steps^2 is not fitted to fixed + a S + b S I."""
    from mapbench.solvers import SOLVERS, Solver

    def quadratic(prior, op, y, sigmas, *, sigma_y, generators, iters, x_init=None):
        x = y.clone()
        for _ in range((len(sigmas) - 1) ** 2 * iters):
            x = prior.denoise(x, 1.0)
        return x

    monkeypatch.setitem(SOLVERS, "quadratic_cost_test", Solver(quadratic, paper="none"))
    cost = list_names.cost("quadratic_cost_test")
    assert cost == {"nfe": None, "vjp": (0, 0, 0)}
    assert list_names.formula(cost["nfe"]) == "irregular"


# ---------------------------------------------------------------------------- report in a browser

def chromium() -> str:
    """Debian's chromium, installed with apt-get when missing and this runs as root."""
    path = shutil.which("chromium")
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        known = subprocess.run(["apt-cache", "show", "chromium"], capture_output=True, check=False)
        if known.returncode:                              # not in the package lists yet
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, check=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True,
                       env=env, check=True)
        path = shutil.which("chromium")
    if path is None:
        pytest.skip("Debian's chromium is not installed (and this is not root to install it)")
    return path


def report_config(work: Path) -> dict:
    """The small workflow config of tests/test_workflow.py plus the committed learned prior (one
    task, one solver) and its sample check on 4 samples; settings are chosen by PSNR."""
    config = tiny_config(results=str(work / "results"))
    config["priors"]["edm"] = {"kind": "edm_unet", "denoiser": str(CHECKPOINTS / "denoiser.pt"),
                               "consistency": str(CHECKPOINTS / "consistency.pt"),
                               "solvers": ["map_ga"], "batch": "task"}
    config["train"] = {"sample": {"n_samples": 4, "heun_steps": 2}}
    config["select"] = {"metric": "psnr"}   # what solve computes: no image-quality networks
    config["evaluate"]["weights_dir"] = WEIGHTS
    return config


CATEGORIES = {"Tables", "Figures", "Ablation plots", "Pareto plots", "Learned prior"}
# the image or HTML page of the result being viewed (the app's content), once it is on screen
SHOWN = ("Array.from(document.querySelectorAll('#app img, #app iframe'))"
         ".find(el => el.getAttribute('src') === app.state.contentPath)")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    work = tmp_path_factory.mktemp("report")
    path = write_config(work, report_config(work))
    r = snakemake("--cores", "2", "--configfile", str(path), cwd=work, timeout=1500)
    assert r.returncode == 0, r.stderr[-5000:]
    r = snakemake("--configfile", str(path), "--report", "results/report.html", cwd=work)
    assert r.returncode == 0, r.stderr[-5000:]
    return work / "results" / "report.html"


@pytest.mark.slow
def test_report_renders_in_chromium_with_every_category_and_no_errors(report):
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = chromium()
    problems = []
    with sync_api.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        browser = p.chromium.launch_persistent_context(
            profile, executable_path=executable, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1400, "height": 900})
        page = browser.new_page()
        page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url[:80]}"))
        page.goto(report.as_uri())
        page.wait_for_selector("#app li", timeout=60_000)   # the app rendered its menu
        assert set(page.evaluate("Object.keys(categories)")) == CATEGORIES
        assert "exact oracle" in page.inner_text("#app")     # workflow/report/workflow.rst

        # Statistics: the runtime of every job, by rule (the solve processes included)
        page.get_by_role("link", name="Statistics").click()
        page.wait_for_selector("#runtimes svg, #runtimes canvas", timeout=30_000)
        timed = page.evaluate("runtimes_spec.data.values.map(v => v.rule)")
        assert {"fit_prior", "oracle", "sample_prior", "make_tables", "solve_pinv"} <= set(timed)
        assert any(r.startswith("solve") and "_edm_" in r for r in timed)  # a batched process

        def open_category(name):
            page.locator("nav ol li a").first.click()           # home: the menu
            page.get_by_role("link", name=name, exact=True).click()

        for category in sorted(CATEGORIES):
            open_category(category)
            rows = page.locator("#app table tbody tr")
            rows.first.wait_for(timeout=10_000)
            labels = [t.strip() for t in rows.all_inner_texts()]
            for i in range(rows.count()):                       # view every image and table
                view = rows.nth(i).locator("a[iconname=eye]")
                if view.get_attribute("download"):             # not shown but downloaded: JSON
                    data = view.get_attribute("href").split(",", 1)[1]
                    assert "heun" in json.loads(base64.b64decode(data))["samplers"]
                    continue
                view.click()
                page.wait_for_function(f"() => {SHOWN} !== undefined")
                if page.evaluate(f"{SHOWN}.tagName") == "IMG":
                    page.wait_for_function(f"() => {SHOWN}.complete")
                    assert page.evaluate(f"{SHOWN}.naturalWidth") > 0
                else:
                    page.frame_locator("#app iframe").locator("table").first.wait_for()
            if category == "Tables":
                assert len(labels) == 6 and any("Table 1: noiseless" in t for t in labels)
                assert any("Claims of the papers" in t for t in labels)
                head = page.locator("#app table thead").inner_text().lower()
                assert "sigma_y" in head and "start" in head
            if category == "Figures":                        # figure, sigma_y
                assert [t.split("\t")[:2] for t in labels] == [
                    ["masks", "-"], ["restored images", "0"], ["restored images", "0.1"]]
            if category == "Ablation plots":                 # metric
                assert labels == ["psnr"]
            if category == "Learned prior":                  # file, prior, FID per sampler
                assert all(re.search(r"\sedm\s.*heun .*cm1 ", t) for t in labels), labels

        open_category("Tables")                               # the screenshot: Table 1
        row = page.locator("#app table tbody tr", has_text="Table 1: noiseless")
        row.locator("a[iconname=eye]").click()
        frame = page.frame_locator("#app iframe")
        frame.locator("table").first.wait_for(timeout=10_000)
        captions = frame.locator("figcaption").all_inner_texts()
        assert any("prior gmm" in c for c in captions) and any("prior edm" in c for c in captions)
        page.wait_for_timeout(500)
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))
        browser.close()
    assert not problems, problems
