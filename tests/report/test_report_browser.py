"""The report in a real browser: Debian's headless chromium driven by Playwright.

Checks that the tables are visible, every image decodes and renders (naturalWidth > 0), the
page makes no request outside itself, and nothing overflows a phone-width viewport; keeps
full-page screenshots in test-artifacts/ (report.png, report-phone.png, report-sr.png).
"""

from __future__ import annotations

import shutil

import pytest

from copymark.report.html import write_report

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium() -> str:
    """Debian's chromium (the root conftest skips browser tests when it is absent)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "chromium not found"
    return path


@pytest.mark.browser
def test_report_renders_in_chromium(style_run, sr_run, artifacts_dir):
    sync_api = pytest.importorskip("playwright.sync_api")
    style_html = write_report(style_run)
    sr_html = write_report(sr_run)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=ARGS)
        try:
            for html, width, shot in (
                (style_html, 1200, "report.png"),
                (style_html, 390, "report-phone.png"),
                (sr_html, 1200, "report-sr.png"),
            ):
                page = browser.new_page(viewport={"width": width, "height": 900})
                requests: list[str] = []
                page.on("request", lambda r, seen=requests: seen.append(r.url))
                page.goto(html.as_uri(), wait_until="load")
                tables = page.locator("table.metrics")
                assert tables.count() == 1
                assert tables.first.is_visible()
                for key in ("A", "B", "C"):
                    assert page.locator(f"tbody.table-{key}").first.is_visible()
                imgs = page.evaluate(
                    "Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width])"
                )
                assert len(imgs) >= 3
                for complete, nw, nh, shown in imgs:
                    assert complete and nw > 0 and nh > 0 and shown > 0
                    assert shown <= width  # scaled to fit, never wider than the viewport
                # the page loads only itself and its data: URIs
                assert all(u.startswith(("file:", "data:")) for u in requests), requests
                # no horizontal overflow of the page (wide tables scroll inside their own box)
                assert page.evaluate("document.documentElement.scrollWidth") <= width
                page.screenshot(path=str(artifacts_dir / shot), full_page=True)
                page.close()
            assert (artifacts_dir / "report.png").stat().st_size > 10_000
        finally:
            browser.close()
