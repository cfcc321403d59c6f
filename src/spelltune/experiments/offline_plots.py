"""The page template that makes `dvc plots show` / `dvc plots diff` draw with no network.

DVC's own page loads vega, vega-lite and vega-embed from a CDN, so on an air-gapped box
every curve is blank. `.dvc/config` points `plots.html_template` at the page this writes,
which carries the three libraries inline, bundled by the `vl-convert-python` package (no
download: the JavaScript ships inside its wheel). `make` writes it once after installing:

    python -m spelltune.experiments.offline_plots          # -> .dvc/plots/offline.html
"""

from __future__ import annotations

import argparse
from pathlib import Path

TEMPLATE = Path(".dvc/plots/offline.html")
# DVC's plot specs use Vega-Lite 5 (their $schema), as DVC's CDN page does.
VEGA_LITE = "5.20"

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <script type="text/javascript">
__BUNDLE__
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def write(dest: Path = TEMPLATE) -> Path:
    import vl_convert

    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE)
    if "</script" in bundle:  # would end the inline script early
        raise RuntimeError("the vega bundle contains '</script': cannot inline it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    tmp.write_text(PAGE.replace("__BUNDLE__", bundle), encoding="utf8")
    tmp.replace(dest)
    return dest


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m spelltune.experiments.offline_plots", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=TEMPLATE, help="where to write it (default: %(default)s)")
    args = parser.parse_args(argv)
    print(f"wrote {write(args.out)} (vega-lite {VEGA_LITE}, vega, vega-embed inline)")


if __name__ == "__main__":
    main()
