"""The web page `hexa leaderboard` writes, loaded in headless Chromium: no console errors, sorting by a header
click, the filter box, every Markdown table on the page with the same numbers, our rows beside published ones.

Chromium is driven through the DevTools protocol over a pipe (`--remote-debugging-pipe`: fd 3 in, fd 4 out,
NUL-terminated JSON), so no port and no extra package; the DOM checked is the one after the page's script ran.
Without a `chromium` on PATH these tests skip (CI installs it: .ci/run).
"""

import fcntl
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hexa_zoo import records
from leaderboards.compiler import compile_leaderboard

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")


class Browser:
    """A headless Chromium page driven through the DevTools protocol over a pipe."""

    def __init__(self, profile: Path):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def fds():  # the child reads commands on fd 3 and writes replies on fd 4 (moved up first: no clash)
            r, w = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)
            os.dup2(w, 4)

        # close_fds=False: only inheritable descriptors survive the exec, i.e. stdio and the two dup2'ed here
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
             f"--user-data-dir={profile}", "--window-size=1400,1000", "about:blank"],
            preexec_fn=fds, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer, self._id, self.events = b"", 0, []
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)

    def _read(self) -> dict:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def open(self, url: str) -> None:
        self.call("Page.navigate", session=True, url=url)
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._read())

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) at the centre of the element."""
        box = self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView("
                      "{block: 'center'}); const r = e.getBoundingClientRect(); return [r.x + r.width / 2, "
                      "r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", session=True, type=kind, x=box[0], y=box[1], button="left",
                      clickCount=1)

    def type_into(self, selector: str, text: str) -> None:
        self.js(f"document.querySelector({json.dumps(selector)}).focus()")
        self.call("Input.insertText", session=True, text=text)

    def problems(self) -> list:
        """Console errors and warnings, uncaught exceptions and failed loads seen so far."""
        bad = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                bad.append(params["exceptionDetails"])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
                bad.append(params)
            elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
                bad.append(params["entry"])
        return bad

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except RuntimeError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def _record(d, model, benchmark, protocol, preset, metrics, dataset, seed=0):
    rec = records.make_record(protocol=protocol, benchmark=benchmark, preset=preset,
                              dataset={"name": dataset, "fingerprint": f"sha256:{dataset}"},
                              model={"name": model, "weights_sha256": f"{model}-sha"},
                              metrics={k: records.metric(v) for k, v in metrics.items()},
                              config={"dataset": dataset}, seed=seed)
    records.write_record(d, rec)


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """Our MoCo-v2 800-epoch rows in ssl-transfer's many-shot table, a few embedded rows, the package's published
    numbers; compiled with plots."""
    d = tmp_path_factory.mktemp("results")
    for dataset, value in (("cifar10", 93.0), ("dtd", 75.5), ("aircraft", 40.25)):
        metric = "mean_per_class" if dataset == "aircraft" else "top1"
        _record(d, "moco_v2_r50.in1k_ep800", f"{dataset}_manyshot", "manyshot", "paper", {metric: [value]}, dataset)
    rng = np.random.default_rng(0)
    for model in ("hexa_moco_r18.embedded", "moco_v2_r18.embedded"):
        for seed in range(2):
            _record(d, model, "embedded_knn", "knn", "embedded", {"top1@20": [rng.uniform(30, 60)]}, "embedded", seed)
    return compile_leaderboard([d], tmp_path_factory.mktemp("board"))


@pytest.fixture(scope="module")
def page(board, tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    browser = Browser(tmp_path_factory.mktemp("chromium-profile"))
    try:
        browser.open(board.site.resolve().as_uri())
        yield browser
    finally:
        browser.close()


def markdown_tables(readme: str) -> dict[str, list[list[str]]]:
    """{table name: rows of cells} of every table in the compiled README."""
    tables = {}
    for section in re.split(r"^### ", readme, flags=re.M)[1:]:
        name = re.match(r".*— `([^`]+)`", section)[1]
        lines = [l for l in section.splitlines() if l.startswith("|")]
        tables[name] = [[c.strip() for c in l.strip().strip("|").split(" | ")] for l in lines[:1] + lines[2:]]
    return tables


DOM_TABLES = """(() => {
  const out = {};
  document.querySelectorAll('table.board').forEach(t => {
    out[t.dataset.table] = [Array.from(t.tHead.rows[0].cells).map(c => c.textContent.trim())].concat(
      Array.from(t.tBodies[0].rows).map(r => Array.from(r.cells).map(
        c => (c.querySelector('.v') || c).textContent.trim())));
  });
  return out;
})()"""


def column(page, table, name):
    return page.js(f"""(() => {{ const t = document.querySelector('table[data-table="{table}"]');
      const i = Array.from(t.tHead.rows[0].cells).findIndex(c => c.textContent.trim() === {json.dumps(name)});
      return Array.from(t.tBodies[0].rows).filter(r => !r.hidden).map(r => r.cells[i].dataset.value ??
        r.cells[i].textContent.trim()); }})()""")


@needs_chromium
def test_page_loads_without_console_errors_and_holds_every_markdown_table(board, page):
    assert page.problems() == []
    dom = page.js(DOM_TABLES)
    md = markdown_tables(board.readme.read_text())
    assert set(dom) == set(md) == set(board.tables)
    for name, rows in md.items():
        header, body = rows[0], rows[1:]
        assert dom[name][0][-1] == "Re-measure"  # the page's extra column; the README lists them under the table
        got = [row[:-1] for row in dom[name]]
        assert got[0] == header, name
        assert len(got) - 1 == len(body), name
        metrics = range(4, len(header) - 2)  # Model, Arch, Epochs, Protocol | metrics | Source, Note
        for want, have in zip(body, got[1:]):
            assert re.sub(r"[*]", "", want[0]).removesuffix(" †") in have[0], (name, want, have)
            assert [want[i] for i in metrics] == [have[i] for i in metrics], (name, want[0])
    # the plots are inline SVG, nothing is fetched
    assert page.js("document.querySelectorAll('figure svg').length") >= 2
    assert page.js("Array.from(document.querySelectorAll('[src]')).length") == 0


@needs_chromium
def test_each_published_row_shows_the_command_the_readme_lists_for_it(board, page):
    shown = page.js("Array.from(document.querySelectorAll('table.board')).map(t => [t.dataset.table, "
                    "Array.from(t.querySelectorAll('tr.published code.cmd')).map(c => c.textContent)])")
    readme = board.readme.read_text()
    sections = {re.match(r".*— `([^`]+)`", s)[1]: s for s in re.split(r"^### ", readme, flags=re.M)[1:]}
    for table, commands in shown:
        assert commands == re.findall(r"^- .*?: `(hexa transfer [^`]+)`$", sections[table], flags=re.M), table
    assert sum(len(c) for _, c in shown) >= 40
    details = 'table[data-table="manyshot"] tr.published details'
    assert page.js(f"document.querySelector('{details}').open") is False
    page.click(f"{details} summary")
    assert page.js(f"document.querySelector('{details}').open") is True
    assert page.js(f"document.querySelector('{details} code.cmd').textContent").startswith(
        "hexa transfer suite --suite ssl-transfer --model insdis_r50.in1k_ep200")
    assert page.problems() == []


@needs_chromium
def test_clicking_a_header_sorts_numbers_as_numbers_with_blanks_last(page):
    table = "manyshot"
    before = column(page, table, "dtd top1")
    page.click(f'table[data-table="{table}"] th:nth-child(10)')  # dtd top1
    assert page.js(f"document.querySelector('table[data-table=\"{table}\"] th:nth-child(10)').textContent") == \
        "dtd top1"
    values = column(page, table, "dtd top1")
    numbers = [float(v) for v in values if v != ""]
    assert numbers == sorted(numbers, reverse=True) and values != before  # highest first, as numbers
    assert values[len(numbers):] == [""] * (len(values) - len(numbers))  # blanks last
    page.click(f'table[data-table="{table}"] th:nth-child(10)')  # again: lowest first, blanks still last
    values = column(page, table, "dtd top1")
    numbers = [float(v) for v in values if v != ""]
    assert numbers == sorted(numbers) and all(v == "" for v in values[len(numbers):])
    page.click(f'table[data-table="{table}"] th:nth-child(1)')  # text: A to Z
    models = column(page, table, "Model")
    assert models == sorted(models, key=str.lower)


@needs_chromium
def test_the_filter_hides_rows_and_our_rows_show_their_difference_to_published(page):
    table = "manyshot"
    n = len(column(page, table, "Model"))
    page.type_into(f'input[data-for="tbl-{table}"]', "moco")
    shown = column(page, table, "Model")
    assert 0 < len(shown) < n and all("moco" in m.lower() for m in shown)
    assert page.js(f"document.querySelector('input[data-for=\"tbl-{table}\"]').closest('p')"
                   ".querySelector('.count').textContent") == f"{len(shown)} of {n} rows"
    # our MoCo-v2 800 ep row against the paper's MoCo-v2 (800 ep) row: CIFAR-10 93.00 - 92.28, DTD 75.50 - 73.88,
    # Aircraft 40.25 - 41.79; no difference where the published row has the number and ours not
    deltas = page.js(f"Array.from(document.querySelectorAll('table[data-table=\"{table}\"] tr.ours .delta'))"
                     ".map(d => d.textContent)")
    assert deltas == ["-1.54 vs published", "+0.72 vs published", "+1.62 vs published"]
    note = page.js(f"document.querySelector('table[data-table=\"{table}\"] tr.ours td.note').textContent")
    assert "compared with MoCo-v2 (800 ep" in note
    assert page.problems() == []


def test_our_rows_are_compared_with_one_published_row_of_the_same_model_or_none(tmp_path):
    from leaderboards.site import comparable_rows

    d = tmp_path / "results"
    for model, top1 in (("moco_v2_r50.in1k_ep800", 70.5), ("dcluster_v2_r50.in1k_ep400", 73.0),
                        ("moco_v2_r50.in1k_ep200", 66.0)):
        _record(d, model, "imagenet_linear", "linear", "paper", {"top1": [top1]}, "imagenet")
    frame = compile_leaderboard([d], tmp_path / "board", plots=False).tables["imagenet_linear"]
    pairs = {frame.iloc[i]["model"]: (pub["model"], pub["epochs"], pub["top1"]) for i, pub in
             comparable_rows(frame).items()}
    # MoCo-v2 800 ep and 200 ep each against the MoCo README's row of that length; DeepCluster-v2 400 ep has two
    # published rows (2x160+4x96 and 2x224 crops), so no comparison is claimed
    assert pairs == {"moco_v2_r50.in1k_ep800": ("MoCo v2", "800", 71.1),
                     "moco_v2_r50.in1k_ep200": ("MoCo v2", "200", 67.5)}
    page = (tmp_path / "board" / "site" / "index.html").read_text()
    assert "-0.60 vs published" in page and "-1.50 vs published" in page
