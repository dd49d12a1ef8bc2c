"""The try-it page `tfllm serve` shows at `/`, driven in a real headless Chromium.

The browser tests need Debian's `chromium` (`apt-get install chromium`, as root; it is not on a fresh
machine and pip cannot install it) and the `playwright` package, which drives it through
`executable_path` without downloading a browser of its own; without them they skip. The HTTP checks
(page, listing, token and Host rules) always run.
"""

import contextlib
import os
import shutil
import socket
import urllib.error
import urllib.request

import pytest

from conftest import serving_process
from tfllm.serving import fixtures

pytestmark = pytest.mark.slow  # two server start-ups and a browser

CHROMIUM = "/usr/bin/chromium"
TOKEN = "page-test-token"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port, path, headers=None):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def _save_translator(path):
    """A toy with a translation export's signature: `serving_default(source, max_new_tokens) -> translation`."""
    import tensorflow as tf

    class ToyTranslator(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="source"),
                                      tf.TensorSpec([None], tf.int32, name="max_new_tokens")])
        def translate(self, source, max_new_tokens):
            return {"translation": tf.strings.substr(tf.strings.upper(source), tf.zeros_like(max_new_tokens), max_new_tokens)}

    module = ToyTranslator()
    tf.saved_model.save(module, path, signatures={"serving_default": module.translate})


@pytest.fixture(scope="module")
def savedmodels(tmp_path_factory):
    base = fixtures.build_savedmodels(str(tmp_path_factory.mktemp("page") / "savedmodels"))
    _save_translator(os.path.join(base, "translator", "1"))
    return base


@contextlib.contextmanager
def _serving(savedmodels, tmp_path_factory, token=None):
    """Yields the port of a server on `savedmodels`, with `--auth-token TOKEN` if given (and
    never the caller's TFLLM_AUTH_TOKEN)."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("page-server") / "server.log"
    args = [savedmodels, "--port", port, "--grpc-port", "0"] + (["--auth-token", token] if token else [])
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with serving_process(args, lambda: _get(port, "/v1/models/shakespeare", headers)[0] == 200, log_path,
                         env={"TFLLM_AUTH_TOKEN": None}):
        yield port


@pytest.fixture(scope="module")
def server(savedmodels, tmp_path_factory):
    with _serving(savedmodels, tmp_path_factory) as port:
        yield port


@pytest.fixture(scope="module")
def token_server(savedmodels, tmp_path_factory):
    with _serving(savedmodels, tmp_path_factory, token=TOKEN) as port:
        yield port


def test_the_page_and_its_files_are_served_with_a_strict_policy(server):
    status, headers, body = _get(server, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert 'src="static/app.js"' in body
    assert "script-src 'self'" in headers["content-security-policy"]
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        status, headers, _ = _get(server, f"/static/{name}")
        assert status == 200 and kind in headers["content-type"]
    assert _get(server, "/static/../rest.py")[0] == 404
    assert _get(server, "/static/nothing.js")[0] == 404
    # Only at /: its URLs are relative, so /static/index.html loaded without its script and style.
    status, _, body = _get(server, "/static/index.html")
    assert status == 404 and "Not found" in body


def test_models_are_listed_with_their_signatures(server):
    import json

    status, _, body = _get(server, "/v1/models")
    assert status == 200
    models = {m["name"]: m for m in json.loads(body)["models"]}
    assert set(models) == {"reviews", "shakespeare", "translator"}
    reviews = models["reviews"]["signatures"]
    assert reviews["serving_default"]["inputs"] == {"text": {"dtype": "string", "shape": [None]}}
    assert set(reviews["serving_default"]["outputs"]) == {"probabilities", "label"}
    assert "word_count" in reviews
    assert set(models["shakespeare"]["signatures"]["serving_default"]["inputs"]) == {"prompt", "max_new_tokens"}


def test_token_and_host_rules(token_server):
    # The page loads without the token (a browser cannot send one when it navigates); the API needs it.
    assert _get(token_server, "/")[0] == 200
    assert _get(token_server, "/static/app.js")[0] == 200
    assert _get(token_server, "/v1/models")[0] == 401
    assert _get(token_server, "/v1/models", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    # DNS rebinding: a page reached under another name is refused, the try-it page included.
    assert _get(token_server, "/", {"Host": "attacker.example"})[0] == 400
    assert _get(token_server, "/v1/models", {"Host": "attacker.example",
                                             "Authorization": f"Bearer {TOKEN}"})[0] == 400


# --- in a real browser ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) and shutil.which(CHROMIUM)):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"])
        yield browser
        browser.close()


def expect(locator):
    # Playwright's waits that poll a JavaScript string need eval, which the page's CSP forbids (as it should).
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def _open(browser, port):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"http://127.0.0.1:{port}/")
    return page, errors


def test_classify_and_see_the_words_highlighted(browser, server):
    page, errors = _open(browser, server)
    page.wait_for_selector("#model option", state="attached")
    assert page.locator("#model option").all_text_contents() == [
        "reviews v1 (classify)", "shakespeare v1 (generate)", "translator v1 (translate)"]
    page.select_option("#model", "reviews")
    assert page.is_visible("#classify") and not page.is_visible("#generate")
    page.fill("#text", "a good good film , not bad")
    page.click("#classify-run")
    page.wait_for_selector("#highlighted .word", state="attached")
    # The toy model scores good minus bad words: two goods and one bad say positive.
    assert page.text_content("#label").startswith("Label: positive")
    rows = page.locator("#probabilities tr").all_inner_texts()
    assert len(rows) == 2 and rows[1].startswith("positive")
    words = page.locator("#highlighted .word")
    scores = {words.nth(i).text_content(): float(words.nth(i).get_attribute("data-score"))
              for i in range(words.count())}
    assert list(scores) == ["a", "good", "film", ",", "not", "bad"]
    assert scores["good"] > 0 and scores["bad"] < 0
    assert all(abs(scores[w]) < 1e-6 for w in ("a", "film", ",", "not"))  # words the model ignores
    assert errors == []


def test_generate_with_decoding_options(browser, server):
    page, errors = _open(browser, server)
    page.wait_for_selector("#model option", state="attached")
    page.select_option("#model", "shakespeare")
    assert page.is_visible("#generate") and not page.is_visible("#classify")
    assert page.locator("#options [data-name]").count() == 1  # the toy generator takes max_new_tokens only
    page.fill("#prompt", "To be")
    page.fill("#options [data-name=max_new_tokens]", "3")
    page.click("#generate-run")
    expect(page.locator("#status")).to_have_text("Done.", timeout=30000)
    expect(page.locator("#output")).to_have_text("To be la la la")
    # The model's own refusal comes back as the page's status line.
    page.fill("#options [data-name=max_new_tokens]", "500")
    page.click("#generate-run")
    expect(page.locator("#status")).to_have_class("error")
    assert "max_new_tokens" in page.text_content("#status")
    assert [e for e in errors if "400" not in e] == []  # the browser logs the refused request itself


def test_translate(browser, server):
    page, errors = _open(browser, server)
    page.wait_for_selector("#model option", state="attached")
    page.select_option("#model", "translator")
    expect(page.locator("#generate-title")).to_have_text("Translate")
    page.fill("#prompt", "bonjour le monde")
    page.fill("#options [data-name=max_new_tokens]", "7")
    page.click("#generate-run")
    expect(page.locator("#output")).to_have_text("BONJOUR", timeout=30000)
    assert errors == []


def test_the_page_asks_for_the_token_and_then_works(browser, token_server):
    page, _ = _open(browser, token_server)
    expect(page.locator("#status")).to_have_class("error")
    assert "token" in page.text_content("#status").lower()
    assert page.locator("#model option").count() == 0
    page.fill("#token", TOKEN)
    page.dispatch_event("#token", "change")
    page.wait_for_selector("#model option", state="attached")
    page.select_option("#model", "reviews")
    page.fill("#text", "good")
    page.click("#classify-run")
    expect(page.locator("#label")).to_contain_text("Label: positive")
