"""`dvc plots diff` draws every declared curve with no network: the page carries vega
inline (spelltune.experiments.offline_plots via .dvc/config's plots.html_template), checked in a real
headless Chromium that can reach nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import CHROMIUM, build_experiments_repo, chromium, run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def exp_repo(tmp_path_factory, tiny_model) -> Path:
    return build_experiments_repo(tmp_path_factory.getbasetemp() / "experiments_repo", tiny_model)


def test_the_page_loads_nothing_from_a_network(exp_repo, tmp_path):
    run(["dvc", "plots", "diff", "lr", "rank", "-o", str(tmp_path / "out")], exp_repo)
    page = (tmp_path / "out" / "index.html").read_text()
    assert not re.findall(r"""src=["']https?://""", page)
    assert "cdn.jsdelivr" not in page
    assert "window.vegaEmbed" in page  # the libraries are inline


@pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on this machine (Debian package `chromium`; .ci/run installs it)"
)
def test_every_curve_renders_offline_in_chromium(exp_repo, tmp_path):
    out = tmp_path / "out"
    run(["dvc", "plots", "diff", "lr", "rank", "-o", str(out)], exp_repo)
    page = (out / "index.html").read_text()
    declared = ("loss_by_step", "loss_by_hours", "val_loss_by_hours", "accuracy_by_step", "accuracy_by_hours")
    for name in declared:
        assert name in page
    expected = page.count("vegaEmbed('#")
    assert expected >= len(declared)
    dom = chromium("--dump-dom", (out / "index.html").as_uri(), cwd=tmp_path)
    # vega-embed draws each plot into a <canvas class="marks">; a failed load leaves the div empty.
    assert dom.count('class="marks"') == expected, dom[-3000:]
    # Both experiments are in the data the curves are drawn from.
    assert '"rev": "lr"' in page.replace('"rev":"lr"', '"rev": "lr"') and "rank" in page
    chromium("--screenshot=" + str(tmp_path / "plots.png"), "--window-size=1400,2400", (out / "index.html").as_uri(),
             cwd=tmp_path)
    assert (tmp_path / "plots.png").read_bytes()[:4] == b"\x89PNG"
