"""The Videos page through Airflow's real API server and its real auth manager (simple auth, with
users of different roles), on a real cluster (``vidstyle cluster``: scheduler, triggerer, a
Celery worker, PostgreSQL, Redis, Azurite), and in headless Chromium (Debian's package, driven
by Selenium through Debian's chromedriver).

The permission tests ask the API as an anonymous caller, a viewer (may read runs, may not
trigger) and a user (may trigger). The browser test uploads a small video through the file
picker, waits for it to be done, opens its page, sees the preview, plays the styled video to its
end and re-styles it with another (uploaded) style. Screenshots are kept under
``.cache/videos-page/`` (printed) as the test's artifacts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.cluster.test_cluster import CLUSTER, cluster, wait_for
from tests.support import ROOT, free_port, make_video
from vidstyle.hooks.blob_store import BlobStore
from vidstyle.pipeline.identity import OutputSpec, Video
from vidstyle.pipeline.layout import Layout
from vidstyle.pipeline.ledger import FAILED, SUCCEEDED, Ledger
from vidstyle.pipeline.settings import Settings

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1500)]

USERS = {"vera": "viewer", "uma": "user"}
SHOTS = ROOT / ".cache" / "videos-page"


def standin_model(path: Path, seed: int) -> Path:
    import torch

    from scoring.transformer_net import TransformerNet

    torch.manual_seed(seed)
    torch.save(TransformerNet(width=4, blocks=1).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A cluster of its own (database, container, Celery queue, ports) and, beside its API server,
    a second one with sign-in: the simple auth manager with a viewer and a user, known passwords.
    Everything it started is stopped at the end, whatever happens."""
    tag = uuid.uuid4().hex[:8]
    container = f"videos-{tag}"
    base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {
        "VIDSTYLE_CLUSTER_DB": f"airflow_videos_{tag}", "VIDSTYLE_CLUSTER_CONTAINER": container,
        "VIDSTYLE_CLUSTER_API_PORT": str(free_port()),
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": f"videos-{tag}",  # no other cluster's worker takes these tasks
        "AIRFLOW__VIDSTYLE__CHUNK_FRAMES": "15", "AIRFLOW__VIDSTYLE__LOCAL_COMPILE": "False",
        "AIRFLOW__VIDSTYLE__ARRIVALS_POLL_SECONDS": "1", "AIRFLOW__VIDSTYLE__CLAIM_POKE_SECONDS": "3",
        # Small stand-in models (random weights, a few KiB) from storage: the page is under test, not the
        # styling; a built-in style gives the docs' picture a real before/after, at minutes of CPU more.
        "AIRFLOW__VIDSTYLE__DEFAULT_STYLE": os.environ.get("VIDEOS_TEST_STYLE", f"wasb://{container}/models/standin.pth")}
    cluster("reset", env=base)
    env = dict(line.split("=", 1) for line in cluster("env", env=base).split("\0") if "=" in line)
    store = BlobStore("wasb_default", container)
    store.ensure_container()
    models = tmp_path_factory.mktemp("models")
    store.upload(standin_model(models / "standin.pth", 0), "models/standin.pth")
    store.upload(standin_model(models / "second.pth", 1), "models/second.pth")  # an uploaded style to re-style with
    server = None
    try:
        cluster("start", "1", env=env, timeout=900)
        port = free_port()
        passwords = tmp_path_factory.mktemp("auth") / "passwords.json"
        secrets = {name: uuid.uuid4().hex for name in USERS}
        passwords.write_text(json.dumps(secrets))
        signed_in = env | {
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords), "AIRFLOW__API__PORT": str(port)}
        log = (tmp_path_factory.mktemp("logs") / "api-server.log").open("w")
        server = subprocess.Popen(["airflow", "api-server", "--port", str(port)], env=signed_in, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        wait_for("the signed-in API server", lambda: _healthy(url), 180, every=1)
        tokens = {name: _token(url, name, secrets[name]) for name in USERS}
        yield {"url": url, "tokens": tokens, "store": store, "env": env, "container": container}
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(60)
        for what in ("stop", "drop"):
            subprocess.run([*CLUSTER, what], env=base, capture_output=True, timeout=300)


def _healthy(url: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=2)
    except OSError:
        return False
    return True


def _token(url: str, user: str, password: str) -> str:
    request = urllib.request.Request(f"{url}/auth/token", json.dumps({"username": user, "password": password}).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["access_token"]


def call(site: dict, method: str, path: str, who: str | None = None, body: dict | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {site['tokens'][who]}"} if who else {})
    request = urllib.request.Request(f"{site['url']}{path}", json.dumps(body).encode() if body is not None else None,
                                     headers, method=method)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            return exc.code, json.loads(text or b"null") | {"location": exc.headers.get("Location")}
        except (ValueError, TypeError):
            return exc.code, {"location": exc.headers.get("Location")}


def storage(method: str, url: str, data: bytes | None = None, headers: dict | None = None) -> int:
    request = urllib.request.Request(url, data, headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def sas(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


# ---- permissions, through the real API server and auth manager ----

def test_anonymous_callers_are_refused_everywhere_and_the_page_sends_them_to_sign_in(site):
    for method, path, body in (("GET", "/videos/api/videos", None), ("GET", "/videos/api/styles", None),
                               ("GET", "/videos/api/videos/x-0123456789", None),
                               ("POST", "/videos/api/uploads", {"name": "a.mp4"}),
                               ("POST", "/videos/api/uploads/done", {"blob": "incoming/a.mp4"})):
        status, _ = call(site, method, path, body=body)
        assert status == 401, (method, path, status)
    for path in ("/videos/", "/videos/static/videos.js"):
        status, answer = call(site, "GET", path)
        assert status == 303 and "/auth/login" in answer["location"], (path, status)


def test_a_viewer_sees_videos_but_may_not_upload(site):
    assert call(site, "GET", "/videos/api/videos", "vera")[0] == 200
    assert call(site, "GET", "/videos/api/styles", "vera")[0] == 200
    for path, body in (("/videos/api/uploads", {"name": "a.mp4"}),
                       ("/videos/api/uploads/done", {"blob": "incoming/a.mp4"})):
        assert call(site, "POST", path, "vera", body)[0] == 403


def test_an_upload_link_writes_that_one_blob_only_and_expires_within_the_hour(site):
    for bad in ("../state/videos/x.json", "x.txt", "a/b.mp4"):
        assert call(site, "POST", "/videos/api/uploads", "uma", {"name": bad})[0] == 422, bad
    status, link = call(site, "POST", "/videos/api/uploads", "uma", {"name": "probe.mp4"})
    assert status == 200 and link["blob"] == "incoming/probe.mp4"
    params = sas(link["url"])
    assert params["sp"] == "cw" and params["sr"] == "b" and "sig" in params
    assert datetime.fromisoformat(params["se"].replace("Z", "+00:00")) <= datetime.now(UTC) + timedelta(minutes=61)
    assert "AccountKey" not in link["url"] and "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6" not in link["url"]
    assert storage("PUT", link["url"], b"bytes", {"x-ms-blob-type": "BlockBlob"}) == 201
    assert storage("GET", link["url"]) == 403  # write-only: it cannot read back
    other = link["url"].replace("incoming/probe.mp4", "incoming/other.mp4")
    assert storage("PUT", other, b"bytes", {"x-ms-blob-type": "BlockBlob"}) == 403  # that blob only
    assert call(site, "POST", "/videos/api/uploads", "uma", {"name": "probe.mp4"})[0] == 409  # never replaced
    site["store"].hook.blob_service_client.get_container_client(site["container"]).delete_blob("incoming/probe.mp4")


def test_the_list_pages_newest_first_with_filters_and_a_video_gives_read_only_links(site):
    store = site["store"]
    layout = Layout(Settings(container=site["container"]))
    ledger = Ledger(store, layout)
    made = []
    for i in range(5):  # entries only (no pipeline): the list reads the ledger, nothing else
        video = Video(site["container"], f"incoming/listed-{i}.mp4", f"v{i}", f"2026-12-0{i + 1}T10:00:00+00:00", 10)
        spec = OutputSpec("pop-art")
        status = FAILED if i == 1 else SUCCEEDED
        extra = {"error": "stylize_chunk (chunk 1 of 2): out of memory"} if status == FAILED else {
            "outputs": layout.outputs(video.blob, spec)}
        ledger.record(video, f"manual__listed-{i}", status, spec, is_default=False, **extra)
        made.append(video.video_id)
        time.sleep(1.1)  # creation times a second apart: the list's order is theirs
    seen, cursor = [], 0
    while cursor is not None:
        status, page = call(site, "GET", f"/videos/api/videos?limit=2&cursor={cursor}&style=pop-art", "vera")
        assert status == 200 and len(page["videos"]) <= 2
        seen += [v["video_id"] for v in page["videos"]]
        cursor = page["next_cursor"]
    assert seen == made[::-1]
    status, failed = call(site, "GET", "/videos/api/videos?state=failed&style=pop-art", "vera")
    assert [v["video_id"] for v in failed["videos"]] == [made[1]]
    assert failed["videos"][0]["outputs"][0]["failure"] == (
        "Failed in task stylize_chunk, chunk 1 of 2, because out of memory.")
    assert call(site, "GET", "/videos/api/videos?state=bogus", "vera")[0] == 422
    # A done output gets read-only links for its video and preview, and nothing else.
    paths = layout.outputs("incoming/listed-0.mp4", OutputSpec("pop-art"))
    for name in ("video", "preview"):
        store.hook.load_string(f"the {name}", site["container"], paths[name], overwrite=True)
    status, video = call(site, "GET", f"/videos/api/videos/{made[0]}", "vera")
    links = video["outputs"][0]["links"]
    assert sas(links["video"])["sp"] == "r" and storage("GET", links["video"]) == 200
    assert storage("PUT", links["video"], b"x", {"x-ms-blob-type": "BlockBlob"}) == 403
    assert storage("GET", links["video"].replace(paths["video"], paths["manifest"])) == 403
    assert call(site, "GET", "/videos/api/videos/no-such-0123456789", "vera")[0] == 404


# ---- the page in headless Chromium ----

@pytest.fixture(scope="module")
def browser():
    """Headless Chromium from Debian's package, driven through Debian's chromedriver (no download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver_path, "Debian's chromium and chromium-driver: scripts/test.sh installs them"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                 "--autoplay-policy=no-user-gesture-required", "--mute-audio"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def test_upload_in_the_browser_watch_it_finish_play_it_and_restyle_it(site, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    started = time.monotonic()
    driver = browser
    driver.get(f"{site['url']}/api/v2/monitor/health")  # on the origin first: then its cookie can be set
    driver.add_cookie({"name": "_token", "value": site["tokens"]["uma"], "path": "/"})
    driver.get(f"{site['url']}/videos/")
    wait = WebDriverWait(driver, 600, poll_frequency=0.5)
    wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, "#filter-style option[value*='second.pth']")))

    clip = make_video(tmp_path / "Beach day.mp4", seconds=1.0, size="256x144")
    driver.find_element(By.ID, "file").send_keys(str(clip))
    status = wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, "#upload-status[data-video-id]")))
    video_id = status.get_attribute("data-video-id")
    assert site["store"].exists("incoming/Beach day.mp4")
    row = f"tr[data-video-id='{video_id}']"
    wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, f"{row} [data-state='done']")))
    shot(driver, "list")

    driver.find_element(By.CSS_SELECTOR, f"{row} a").click()
    card = ".output[data-state='done']"
    preview = wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, f"{card} img.preview")))
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", preview))
    figures = driver.find_element(By.CSS_SELECTOR, f"{card} .figures").text
    assert "frames" in figures and "fps" in figures, figures
    assert driver.find_elements(By.CSS_SELECTOR, f"{card} svg.chart rect")
    video = driver.find_element(By.CSS_SELECTOR, f"{card} video.styled")
    driver.execute_script("arguments[0].muted = true; arguments[0].play();", video)
    wait.until(lambda d: d.execute_script("return arguments[0].ended || arguments[0].error && "
                                          "'error ' + arguments[0].error.code", video))
    assert driver.execute_script("return arguments[0].error", video) is None, "the browser could not play it"
    assert driver.execute_script("return arguments[0].duration", video) > 0.5
    shot(driver, "video")

    second = f"wasb://{site['container']}/models/second.pth"
    driver.find_element(By.CSS_SELECTOR, f"#restyle-style option[value='{second}']").click()
    driver.find_element(By.CSS_SELECTOR, "#restyle button[type=submit]").click()
    wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, "#restyle-status[data-run-id]")))
    wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, f".output[data-style='{second}'][data-state='done'] "
                                                                  "video.styled")))
    shot(driver, "restyled")

    # A failed output says where and why, in one sentence.
    layout = Layout(Settings(container=site["container"]))
    broken = Video(site["container"], "incoming/broken.mp4", "b1", "2026-12-06T08:00:00+00:00", 10)
    Ledger(site["store"], layout).record(broken, "manual__broken", FAILED, OutputSpec("pop-art"), is_default=False,
                                         error="split: no video stream in incoming/broken.mp4")
    driver.get(f"{site['url']}/videos/#/video/{broken.video_id}")
    failure = wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, ".output[data-state='failed'] .failure")))
    assert failure.text == "Failed in task split because no video stream in incoming/broken.mp4."

    # In Airflow's own UI: the Videos entry in its navigation frames the same page.
    driver.get(f"{site['url']}/plugin/videos")
    frame = wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, "iframe[src*='/videos/']")))
    driver.switch_to.frame(frame)
    wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, f"{row} [data-state='done']")))
    driver.switch_to.default_content()
    shot(driver, "in-airflow")
    print(f"browser test: {time.monotonic() - started:.0f} s")
