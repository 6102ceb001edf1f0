"""/docs renders the API in a real headless Chromium with no network beyond loopback: Swagger
UI's scripts come from the package, not a CDN (air-gapped clusters got a blank page)."""

import asyncio
import shutil

import httpx
import pytest

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


async def test_swagger_ui_renders_offline_in_chromium(allocator, tmp_path):
    assert CHROMIUM, "Debian's chromium is needed (apt-get install chromium; .ci/run installs it)"
    base = f"http://127.0.0.1:{allocator.http.port}"
    async with httpx.AsyncClient(base_url=base) as h:
        html = (await h.get("/docs")).text
        assert "cdn." not in html and "/static-offline-docs/swagger-ui-bundle.js" in html
        assert (await h.get("/static-offline-docs/swagger-ui-bundle.js")).status_code == 200
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        # everything but loopback is unreachable, as on an air-gapped cluster
        "--proxy-server=127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>;127.0.0.1",
        "--virtual-time-budget=15000",
        "--dump-dom",
        f"{base}/docs",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    dom, _ = await asyncio.wait_for(proc.communicate(), 120)
    dom = dom.decode()
    assert 'class="swagger-ui' in dom, dom[:2000]
    assert "opblock" in dom  # the operations were rendered from /openapi.json
    assert "/v1/namespaces/{namespace}/allocations" in dom
