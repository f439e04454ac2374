"""`uniqa app` in a real browser: start it on a free port, drive it with headless Chromium (Debian's
`chromium` and `chromium-driver`, `selenium` from PyPI; nothing downloaded at run time), upload
three images and a bad file, wait for the ranking, compare its scores with `pipeline("image-quality")`,
ask for a Grad-CAM overlay, and save a screenshot (`UNIQA_APP_SCREENSHOT=path.png` keeps it).

Skipped, saying why, where Chromium or chromedriver is missing, except under
`UNIQA_REQUIRE_BROWSER=1` (set by `.ci/run`), where that is a failure.
"""

import os
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
from transformers import pipeline

from modeling_uniqa.app.gradio_app import example_images
from tests.helpers import free_port, kill_process_tree

pytestmark = pytest.mark.slow

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_TIMEOUT = 300  # seconds, for loaded CI machines; the target (first page within 10 s) is measured by benchmarks/bench_app.py
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def _browser_paths() -> tuple:
    browser = next((path for path in map(shutil.which, CHROMIUM_CANDIDATES) if path), None)
    driver = shutil.which("chromedriver") or next((path for path in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver") if os.path.exists(path)), None)
    missing = [name for name, path in (("chromium", browser), ("chromedriver (Debian: chromium-driver)", driver)) if not path]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append('selenium (pip install "uniqa-hf[test]")')
    if missing:
        reason = f"no {', '.join(missing)}: install with `apt-get install chromium chromium-driver` and pip's selenium"
        if os.environ.get("UNIQA_REQUIRE_BROWSER") == "1":
            pytest.fail(f"UNIQA_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    return browser, driver


def _wait_for_page(url: str, process: subprocess.Popen, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if process.poll() is not None:
            raise AssertionError(f"uniqa app exited with {process.returncode} before serving {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except OSError:
            time.sleep(0.25)
    raise AssertionError(f"uniqa app did not serve {url} within {timeout} s")


@pytest.fixture
def served_app(tmp_path):
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "PYTHONPATH": os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")]))}
    log = open(tmp_path / "app.log", "w")  # noqa: SIM115 (closed below, after the process)
    # As the `uniqa` console script starts it: the page process, and the model in a worker process.
    process = subprocess.Popen([sys.executable, "-m", "uniqa_app.command", "app", "--port", str(port)], cwd=REPO_ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for_page(url, process, START_TIMEOUT)
        yield url
    finally:
        kill_process_tree(process)
        log.close()


def test_upload_rank_and_explain_in_chromium(served_app, tmp_path):
    browser, driver_path = _browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    examples = {os.path.basename(path): path for path in example_images()}
    images = [examples[name] for name in ("cat-sharp.jpg", "coffee-noisy.jpg", "rocket-pixelated.jpg")]
    os.makedirs(tmp_path / "upload")
    bad = tmp_path / "upload" / "notes.jpg"
    bad.write_text("not an image\n")
    expected = {os.path.basename(path): result for path, result in zip(images, pipeline("image-quality")(images))}

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1500"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    screenshot = os.environ.get("UNIQA_APP_SCREENSHOT") or str(tmp_path / "uniqa-app.png")
    try:
        driver.get(served_app)
        wait = WebDriverWait(driver, 120)
        upload = wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#uniqa-upload input[type=file]")))
        upload.send_keys("\n".join([*images, str(bad)]))
        wait.until(lambda page: len(page.find_elements(By.CSS_SELECTOR, "#uniqa-ranking tr.uniqa-row")) == 3)
        rows = driver.find_elements(By.CSS_SELECTOR, "#uniqa-ranking tr.uniqa-row")
        shown = []
        for row in rows:
            name, rank = row.get_attribute("data-file"), int(row.get_attribute("data-rank"))
            values = {cell.get_attribute("data-key"): float(cell.text) for cell in row.find_elements(By.CSS_SELECTOR, "td[data-key]")}
            assert row.find_element(By.CSS_SELECTOR, ".uniqa-rank").text == str(rank)
            assert set(values) == set(expected[name]) == {"score", "mos"}
            for key, value in values.items():
                assert abs(value - expected[name][key]) <= 1e-5, (name, key, value, expected[name][key])
            shown.append((rank, name))
        ranking = sorted(expected, key=lambda name: -expected[name]["score"])
        assert [name for _, name in sorted(shown)] == ranking and [rank for rank, _ in shown] == [1, 2, 3]  # best first, in page order
        error_row = driver.find_element(By.CSS_SELECTOR, "#uniqa-ranking tr.uniqa-error")
        assert error_row.get_attribute("data-file") == "notes.jpg" and "Could not be scored" in error_row.text
        assert "Scored 3 of 4 images" in driver.find_element(By.ID, "uniqa-status").text

        button = next(element for element in driver.find_elements(By.TAG_NAME, "button") if element.text.strip() == "Show heat map")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
        button.click()
        wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#uniqa-cam img"))
        driver.execute_script("window.scrollTo(0, 0);")
        height = driver.execute_script("return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)")
        driver.set_window_size(1400, min(int(height) + 200, 4000))
        time.sleep(0.5)
        os.makedirs(os.path.dirname(os.path.abspath(screenshot)), exist_ok=True)
        assert driver.save_screenshot(screenshot)

        # The examples button replaces the uploads with the shipped photos, all scored.
        button = next(element for element in driver.find_elements(By.TAG_NAME, "button") if element.text.strip() == "Try the example images")
        button.click()
        wait.until(lambda page: len(page.find_elements(By.CSS_SELECTOR, "#uniqa-ranking tr.uniqa-row")) == len(example_images()))
        assert not driver.find_elements(By.CSS_SELECTOR, "#uniqa-ranking tr.uniqa-error")
    finally:
        driver.quit()
    assert os.path.getsize(screenshot) > 10_000
