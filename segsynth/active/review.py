"""From the queue to people and back: the round's ``pick`` review task, and the auto-accept
policy that answers it without people.

The task's images are ``ROUND/queue/images/<stem>.<ext>`` (copies of the queued photos, with
``categories.csv``); its candidates are the teachers' masks (``ROUND/masks/<name>/``) and the
current model's (``ROUND/masks/model/``).
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

from segsynth import io
from segsynth.active.config import ActiveConfig
from segsynth.active.signals import binarize, boundary_entropy, iou
from segsynth.review.build import create
from segsynth.review.config import CandidateSource, ReviewConfig
from segsynth.review.store import Store

log = logging.getLogger(__name__)

MODEL_CANDIDATE = "model"


def write_queue_folder(queue: list[dict], folder: str) -> str:
    """The queued photos as ``folder/images/<stem>.<ext>`` plus ``folder/categories.csv``."""
    images = Path(folder) / "images"
    images.mkdir(parents=True, exist_ok=True)
    for q in queue:
        ext = Path(q["image"]).suffix.lower() or ".jpg"
        (images / f"{q['stem']}{ext}").write_bytes(io.read_bytes(q["image"]))
    with open(Path(folder) / "categories.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["stem", "category", "slice"])
        w.writerows((q["stem"], q["category"] or "unknown", q["slice"]) for q in queue)
    return str(images)


def make_task(cfg: ActiveConfig, queue_folder: str, model_masks: str, teacher_masks: dict[str, str],
              out: str, version: str) -> dict:
    """Create the round's pick task: which mask fits the product best (or none)."""
    cands = [CandidateSource(name=name, path=path) for name, path in teacher_masks.items() if Path(path).is_dir()]
    cands.append(CandidateSource(name=MODEL_CANDIDATE, path=model_masks, version=version))
    rc = ReviewConfig(kind="pick", images=queue_folder, candidates=tuple(cands), out=out,
                      annotators_per_item=cfg.select.annotators_per_item,
                      question="Which mask fits the product best? (0: none fits)")
    rc.check_inputs()
    return create(rc)


def _reference_masks(folder: str | None) -> dict[str, str]:
    if not folder:
        return {}
    masks = io.join(folder, "masks") if io.exists(io.join(folder, "masks")) else folder
    return {io.stem(p): p for p in io.list_files(masks, io.IMAGE_EXTS)}


def auto_accept(cfg: ActiveConfig, task: str, stem_of_key: dict[str, str] | None = None) -> dict:
    """Answer every open slot of ``task`` as ``cfg.auto_accept.annotator`` (see
    :class:`segsynth.active.config.AutoAcceptConfig`); returns counts per decision.

    Reference masks are looked up by the pool photo's original stem (``stem_of_key`` maps the
    task's file stems to it) and by the file stem itself.
    """
    a = cfg.auto_accept
    store = Store(task)
    refs = _reference_masks(a.reference)
    counts = {"teacher_agrees": 0, "teacher_confident": 0, "reference": 0, "none": 0}
    media = Path(task) / "media"
    while True:
        lease = store.next_item(a.annotator)
        if lease is None:
            break
        item = store.item(lease.item_id)
        cands = store.candidates(lease.item_id)
        soft = {cid: io.read_mask(str(media / lease.item_id / f"{cid}.png")) for cid in cands}
        masks = {cid: binarize(m) for cid, m in soft.items()}
        names = {cid: c["name"] for cid, c in cands.items()}
        choice, why = "none", "none"
        ref_path = refs.get((stem_of_key or {}).get(item["stem"], ""), refs.get(item["stem"]))
        model_cid = next((cid for cid, n in names.items() if n == MODEL_CANDIDATE), None)
        if ref_path is not None:
            ref = binarize(io.read_mask(ref_path))
            scores = {cid: iou(m, ref) if m.shape == ref.shape else 0.0 for cid, m in masks.items()}
            best = max(sorted(scores), key=scores.get)
            if scores[best] >= a.reference_min_iou:
                choice, why = best, "reference"
        elif model_cid is not None:
            agree = {cid: iou(m, masks[model_cid]) for cid, m in masks.items() if cid != model_cid}
            if agree:
                best = max(sorted(agree), key=agree.get)
                if agree[best] >= a.min_iou:
                    choice, why = best, "teacher_agrees"
            if choice == "none" and a.teacher_max_entropy is not None:
                sure = {cid: boundary_entropy(soft[cid]) for cid in agree
                        if a.min_area <= float(masks[cid].mean()) <= a.max_area}
                sure = {cid: e for cid, e in sure.items() if e <= a.teacher_max_entropy}
                if sure:
                    choice, why = min(sorted(sure), key=sure.get), "teacher_confident"
        if choice != "none":
            choice = str(lease.order.index(choice) + 1)  # the key a person would press
        store.answer(lease.item_id, a.annotator, choice)
        counts[why] += 1
    log.debug("auto-accept on %s: %s", task, counts)
    return counts


def answered(task: str) -> dict:
    """The task's progress (``segsynth.review.store.Store.progress``): done when no slot is open."""
    return Store(task).progress()


def wait_for_answers(task: str, poll_s: float = 5.0, timeout_s: float | None = None) -> dict:
    """Block until every slot of ``task`` has its answer (people answering in the review app),
    with a progress bar of the answers; returns the final progress. ``timeout_s``: give up then
    with a TimeoutError naming the task and how far it got (nothing is lost: run again)."""
    import time

    from segsynth import console

    start = time.monotonic()
    prog = answered(task)
    with console.progress(total=prog["slots"], desc="active review (waiting for people)", unit="answers") as bar:
        while True:
            bar.n = prog["answered"]
            bar.refresh()
            if prog["answered"] >= prog["slots"]:
                return prog
            if timeout_s is not None and time.monotonic() - start >= timeout_s:
                raise TimeoutError(f"{task}: {prog['answered']}/{prog['slots']} answers after {timeout_s:.0f} s; "
                                   f"answer the rest in `segsynth review serve {task}`, then run the round again")
            time.sleep(poll_s)
            prog = answered(task)
