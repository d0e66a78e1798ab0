"""The review app in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright;
never a downloaded browser): answering by keyboard and by mouse, undo, editing from the side
list, reload and resume, checked against the task's SQLite file; a photo named like markup runs
nothing; a blind study's page and requests name no model; a task with a token loads its images.

The page's Content-Security-Policy refuses eval, so ``wait_for_function`` gets functions
(``"() => ..."``), never bare expressions."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from segsynth.testing import CHROMIUM as _CHROMIUM
from segsynth.testing import CHROMIUM_ARGS, AppServer
from segsynth.testing import make_review_task as make_task

CHROMIUM = Path(_CHROMIUM)
pytestmark = [pytest.mark.browser, pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: "
                                                       "`make browser` installs Debian's chromium")]


def Server(task: Path) -> AppServer:
    from segsynth.review.app import create_app

    return AppServer(create_app(task))


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))
        yield b
        b.close()


def _login(page, url: str, name: str) -> None:
    page.goto(url)
    page.fill("#login-name", name)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#item figure.candidate")


def _shown(page) -> str:
    return page.get_attribute("#item", "data-item") or ""


def _wait_item_change(page, old: str) -> str:
    page.wait_for_function("old => document.querySelector('#item').dataset.item !== old", arg=old)
    return _shown(page)


def test_keyboard_flow_undo_reload_and_edit(tmp_path, browser):
    store = make_task(tmp_path, k=1)
    with Server(tmp_path / "task") as url:
        page = browser.new_page()
        _login(page, url, "ana")
        first = _shown(page)
        page.keyboard.press("1")
        second = _wait_item_change(page, first)
        page.keyboard.press("0")  # none fits
        third = _wait_item_change(page, second)
        page.keyboard.press(" ")  # skip
        fourth = _wait_item_change(page, third)
        page.keyboard.press("Backspace")  # undo the skip: the skipped item comes back
        assert _wait_item_change(page, fourth) == third
        page.reload()  # a closed or reloaded tab loses nothing: the same item, leased to ana
        page.wait_for_selector("#item figure.candidate")
        assert _shown(page) == third
        page.keyboard.press("2")
        fifth = _wait_item_change(page, third)
        page.keyboard.press("h")
        assert page.is_visible("#help")
        page.keyboard.press("h")
        page.keyboard.press("ArrowLeft")  # back to the last answer, to change it
        page.wait_for_selector("#editing:not([hidden])")
        assert _shown(page) == third
        page.keyboard.press("1")
        assert _wait_item_change(page, third) == fifth
        page.wait_for_selector("#history li")
        answers = {a["item_id"]: a["meaning"] for a in store.answers()}
        assert answers == {first: "good", second: "none", third: "good"}
        history = store.answers(include_superseded=True)
        assert [(a["choice"], a["superseded"]) for a in history] == [("1", 0), ("none", 0), ("skip", 1), ("2", 1), ("1", 0)]
        assert all(a["latency_ms"] and a["latency_ms"] > 0 for a in history)
        assert page.inner_text("#progress-text").startswith("3 of 5 answers")


def test_mouse_flow_and_a_second_annotator(tmp_path, browser):
    store = make_task(tmp_path, kind="compare", k=1)
    with Server(tmp_path / "task") as url:
        ana, ben = browser.new_page(), browser.new_page()
        _login(ana, url, "ana")
        _login(ben, url, "ben")
        assert _shown(ana) != _shown(ben)  # one slot per item: the two never hold the same one
        a_item = _shown(ana)
        ana.click("#item figure.candidate[data-id='2']")
        _wait_item_change(ana, a_item)
        b_item = _shown(ben)
        ben.click("#tie-button")
        _wait_item_change(ben, b_item)
        ana.click("#actions button[data-choice=none]")  # both bad
        ana.wait_for_function("() => document.querySelectorAll('#history li').length === 2")
        got = sorted((a["annotator"], a["choice"]) for a in store.answers())
        assert got == [("ana", "2"), ("ana", "none"), ("ben", "tie")]
        shown = ana.inner_html("#item")
        assert "good" not in shown and "fat" not in shown  # the study is blind


IMAGES_SHOWN = ("() => { const imgs = [...document.querySelectorAll('#item img')];"
                " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }")
MARKUP_STEM = "<img src=x onerror=window.__xss=(window.__xss||0)+1>"


def test_a_photo_named_like_markup_is_shown_as_text_and_runs_nothing(tmp_path, browser):
    """The stem and category of a photo (a file name, a CSV cell) reach the page as text. The
    page's CSP would also refuse the inline handler; it is bypassed here, so the only defence
    under test is that no server value becomes markup."""
    from segsynth.config import load_config
    from segsynth.review.build import create
    from segsynth.review.config import ReviewConfig
    from segsynth.testing import make_review_inputs

    src = make_review_inputs(tmp_path / "in", corrupt=False)
    for folder, ext in ((Path(src["images"]) / "images", ".jpg"), (Path(src["good"]), ".png"), (Path(src["fat"]), ".png")):
        (folder / f"p0{ext}").rename(folder / f"{MARKUP_STEM}{ext}")
    category = "<b id=injected>chair</b>"
    (Path(src["images"]) / "categories.csv").write_text(f"stem,category\n{MARKUP_STEM},{category}\n")
    create(load_config(ReviewConfig, None, [
        f"images={src['images']}", f"out={tmp_path / 'task'}",
        f"candidates=[{{name: good, path: {src['good']}}}, {{name: fat, path: {src['fat']}}}]"]))
    with Server(tmp_path / "task") as url:
        page = browser.new_page(bypass_csp=True)
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        _login(page, url, "ana")
        page.wait_for_load_state("networkidle")  # a request for "x" and its onerror would be over by now
        assert page.evaluate("() => window.__xss") is None
        page.wait_for_function(IMAGES_SHOWN)  # the item id (in the image URLs) is quoted too
        first = _shown(page)
        assert first.endswith(MARKUP_STEM)
        assert page.inner_text("#item figure.photo .stem") == MARKUP_STEM
        assert page.inner_text("#item figure.photo .category") == category
        page.keyboard.press("1")
        _wait_item_change(page, first)
        page.wait_for_selector("#history li")
        assert page.inner_text("#history li .stem") == MARKUP_STEM  # the side list
        page.keyboard.press("ArrowLeft")  # and the edit banner
        page.wait_for_selector("#editing:not([hidden])")
        assert MARKUP_STEM in page.inner_text("#editing")
        page.keyboard.press("f")  # the flag message
        page.wait_for_function("() => document.querySelector('#message').textContent.startsWith('Flagged')")
        assert MARKUP_STEM in page.inner_text("#message")
        assert page.evaluate("() => window.__xss") is None and dialogs == []
        assert page.evaluate("() => document.querySelectorAll('img[src=\"x\"], #injected').length") == 0


def test_a_blind_study_names_no_model_and_a_token_task_loads_its_images(tmp_path, browser):
    store = make_task(tmp_path, kind="compare", k=1, token="s3cret")
    with Server(tmp_path / "task") as url:
        page = browser.new_page()
        requests = []
        page.on("request", lambda r: requests.append((r.url, r.headers.get("authorization"))))
        page.goto(url)
        page.wait_for_selector("#token-label:not([hidden])")  # the task answered 401: the form asks for the token
        page.fill("#login-name", "ana")
        page.fill("#login-token", "s3cret")
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("#item figure.candidate")
        items = []
        for _ in range(2):
            page.wait_for_function(IMAGES_SHOWN)  # fetched with the header, shown as blob: URLs
            items.append(_shown(page))
            html = page.inner_html("#item") + page.inner_html("#history")
            assert "/media/" not in html and "good" not in html and "fat" not in html and "blob:" in html
            assert not re.search(r"\bc\d_(checker|white|outline)", html)
            page.keyboard.press("t")
            _wait_item_change(page, items[-1])
        page.click("#item figure.candidate[data-id='1'] figcaption a")  # full size, in the page
        page.wait_for_function("() => { const i = document.querySelector('#full-image');"
                               " return i.complete && i.naturalWidth > 0; }")
        page.keyboard.press("Escape")
        media = [(u, auth) for u, auth in requests if "/media/" in u]
        views = [u for u, _ in media if "/media/view/" in u]
        assert len(views) >= 12 and all(auth == "Bearer s3cret" for _, auth in media)
        assert all(re.search(r"/media/view/[A-Za-z0-9_-]{16}/(checker|white|outline)\.jpg(\?size=full)?$", u)
                   for u in views), views
        assert not any(re.search(r"/c\d_|c\d\.png", u) or "token" in u for u, _ in requests)
        # one opaque id per (item, annotator, candidate): the two answered items and the one on screen
        assert len({u.split("/")[-2] for u in views}) == 2 * 3
        assert page.evaluate("() => localStorage.getItem('review.token')") is None  # this tab only
        assert [a["choice"] for a in store.answers()] == ["tie", "tie"]
