"""`infbench estimate --web` in a real browser: Debian's headless chromium, driven by Playwright.

The server is the real command on a free port; the browser picks a model, uploads one, changes
settings and uploads a bad file, and the test reads what the page shows. The screenshot of the
page with an answer is saved where the test prints it (ESTIMATE_WEB_SCREENSHOT, else the test's
temporary folder). Skipped, saying why, without chromium (`apt-get install chromium`, as
.ci/chromium.sh does) or the playwright and starlette packages.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "tests" / "data" / "configs"
# What headless chromium needs on these machines: no sandbox (root), no GPU, no network chatter.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def server(tmp_path):
    pytest.importorskip("starlette", reason="the page needs infbench[web] (starlette, uvicorn, python-multipart)")
    pytest.importorskip("torch")
    (tmp_path / "config" / "models").mkdir(parents=True)
    for name in ("qwen3-30b-a3b", "meta-llama-3-8b"):
        shutil.copy(CONFIGS / f"{name}.json", tmp_path / "config" / "models" / f"{name}.json")
    env = dict(os.environ, PYTHONPATH=str(REPO / "workflow"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "infbench.cli", "estimate", "--web", "--port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    line = proc.stdout.readline()
    assert "serving on http://127.0.0.1:" in line, line
    yield line.split("serving on ")[1].split()[0]
    proc.terminate()
    proc.wait(timeout=10)


def test_page_answers_uploads_and_bad_input_in_a_real_browser(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    if not os.path.exists(CHROMIUM):
        pytest.skip("no chromium: apt-get install -y chromium (what .ci/chromium.sh does)")
    shot = Path(os.environ.get("ESTIMATE_WEB_SCREENSHOT", tmp_path / "estimate-web.png"))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page()
        page.goto(server)
        # The first model under config/models is picked and estimated at once.
        page.wait_for_selector("#answer.fits, #answer.nofit", timeout=60_000)
        assert page.locator("#model option").count() == 3  # "(pick one)" and the two configs
        assert page.locator("#table tr").count() == 1 + 19  # header + every catalogue GPU
        assert page.locator("#chart rect.part").count() > 19

        # Upload gpt-oss-120b's config: MXFP4 weights read from its quantization_config.
        page.set_input_files("#upload", str(CONFIGS / "gpt-oss-120b.json"))
        page.wait_for_function("document.querySelector('#answer').textContent.startsWith('gpt-oss-120b')")
        answer = page.inner_text("#answer")
        assert "Answer: fits on" in answer and "mxfp4 weights" in answer and "tok/s" in answer
        page.screenshot(path=str(shot), full_page=True)
        print(f"\nestimate --web screenshot: {shot}")

        # One GPU, four of them, 16K context: the same numbers the CLI gives.
        page.select_option("#gpu", "A100-80GB")
        page.select_option("#tp", "4")
        page.fill("#max_model_len", "16384")
        page.dispatch_event("#max_model_len", "change")
        page.wait_for_function("document.querySelectorAll('#table tr').length === 2")
        page.wait_for_function("document.querySelector('#answer').textContent.includes('16,384')")
        cli = subprocess.run(
            [sys.executable, "-m", "infbench.cli", "estimate", str(CONFIGS / "gpt-oss-120b.json"),
             "--gpu", "A100-80GB", "--tensor-parallel-size", "4", "--max-model-len", "16384", "--json"],
            env=dict(os.environ, PYTHONPATH=str(REPO / "workflow"), XDG_CACHE_HOME=str(tmp_path / "cache")),
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        tokens = json.loads(cli.stdout)["vllm"]["gpus"][0]["kv_tokens"]
        assert f"{tokens:,}" in page.inner_text("#table")

        # A bad upload: a clear message on the page, no answer, no traceback.
        bad = tmp_path / "config.json"
        bad.write_text("this is not json")
        page.set_input_files("#upload", str(bad))
        page.wait_for_selector("#error", state="visible")
        error = page.inner_text("#error")
        assert "Error: the uploaded config.json is not JSON" in error and "Traceback" not in error
        assert page.inner_text("#answer") == ""
        browser.close()
    assert shot.stat().st_size > 10_000
