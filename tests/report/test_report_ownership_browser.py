"""The ownership reports in a real browser (Debian's headless chromium driven by Playwright).

Checks that the protect report and a verify run's report load nothing but themselves and their
data: URIs, that every image decodes and shows, that the visibility panels arrive at the
triggers' own size (enlarged only on screen), and that nothing overflows a phone-width
viewport; keeps full-page screenshots in test-artifacts/ (ownership.png, ownership-phone.png,
verification.png).
"""

from __future__ import annotations

import json

import pytest
from test_report_browser import ARGS, chromium

from copymark.report.ownership import write_protect_report, write_verify_report


@pytest.mark.browser
def test_ownership_reports_render_in_chromium(owner, tmp_path, artifacts_dir):
    sync_api = pytest.importorskip("playwright.sync_api")
    protect_html = write_protect_report(owner["protected"], out=tmp_path / "protect.html")
    verify_html = write_verify_report(owner["v-owned"], out=tmp_path / "verify.html")
    size = json.loads((owner["protected"] / "kit" / "manifest.json").read_text())["model"]["input_size"]
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=ARGS)
        try:
            for html, width, shot, panels in (
                (protect_html, 1200, "ownership.png", 6 * 5),
                (protect_html, 390, "ownership-phone.png", 6 * 5),
                (verify_html, 1200, "verification.png", 0),
            ):
                page = browser.new_page(viewport={"width": width, "height": 900})
                requests: list[str] = []
                page.on("request", lambda r, seen=requests: seen.append(r.url))
                page.goto(html.as_uri(), wait_until="load")
                imgs = page.evaluate(
                    "Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight, "
                    "i.getBoundingClientRect().width, i.dataset.panel || null])"
                )
                assert len(imgs) >= 1
                for complete, nw, nh, shown, _ in imgs:
                    assert complete and nw > 0 and nh > 0 and 0 < shown <= width
                shown_panels = [(nw, nh, shown) for _, nw, nh, shown, kind in imgs if kind]
                assert len(shown_panels) == panels
                assert all((nw, nh) == (size, size) and shown > size for nw, nh, shown in shown_panels)
                assert page.locator("span.verdict").first.is_visible()
                # the page loads only itself and its data: URIs
                assert all(u.startswith(("file:", "data:")) for u in requests), requests
                # no horizontal overflow of the page (wide tables scroll inside their own box)
                assert page.evaluate("document.documentElement.scrollWidth") <= width
                page.screenshot(path=str(artifacts_dir / shot), full_page=True)
                page.close()
        finally:
            browser.close()
