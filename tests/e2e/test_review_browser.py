"""The review app in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright;
never a downloaded browser): answering by keyboard and by mouse, undo, editing from the side
list, reload and resume, checked against the task's SQLite file."""
from __future__ import annotations

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
        ana.wait_for_function("document.querySelectorAll('#history li').length === 2")
        got = sorted((a["annotator"], a["choice"]) for a in store.answers())
        assert got == [("ana", "2"), ("ana", "none"), ("ben", "tie")]
        shown = ana.inner_html("#item")
        assert "good" not in shown and "fat" not in shown  # the study is blind
