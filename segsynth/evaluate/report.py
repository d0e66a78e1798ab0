"""Evaluation reports: tables, a bar chart, galleries of the worst cases, human preferences.

    write_report("outputs/eval/report", rows, items=items, models=["dis", "ours"], predictions=...)

The report is one self-contained folder, readable without segsynth: ``report.md`` and
``index.html`` (same content), ``ssim_box_by_model.png`` (mean SSIM per model with 95%
error bars), ``gallery_<model>.png`` (worst cases first: image | truth | every model),
CSV tables (``overall.csv``, ``by_category.csv``, ``by_bg_kind.csv``, ``samples.csv``),
``preferences.csv`` when annotators' choices are given, ``config.yaml`` and ``command.txt``.

``rows`` are per-sample dicts as in ``samples.parquet`` (see ``segsynth.evaluate.job``).
Plots use matplotlib's Agg backend; galleries are drawn with OpenCV.
"""
from __future__ import annotations

import csv
import html
import io as _pyio
import json
import logging
import math
from pathlib import Path
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from segsynth import io
from segsynth import metrics as M

log = logging.getLogger(__name__)

LABELS = {
    "ssim_box": "SSIM (box)", "iou": "IoU", "accuracy": "Accuracy", "mae": "MAE", "max_f": "max F (per sample)",
    "max_f_dataset": "max F", "weighted_f": "weighted F", "s_measure": "S-measure", "e_measure": "E-measure (mean)",
    "boundary_iou": "Boundary IoU", "ap": "AP",
}
MAIN_METRICS = ("ssim_box", "iou", "mae", "max_f_dataset", "s_measure")
GROUP_METRICS = ("ssim_box", "iou", "mae")


# ---------------------------------------------------------------- human preferences
_PREF_ALIASES = {"item": ("item", "stem", "item_id", "sample_id"),
                 "annotator": ("annotator", "user", "annotator_id", "reviewer"),
                 "choice": ("choice", "model", "chosen", "winner")}


def load_preferences(path: str) -> list[dict]:
    """Annotators' choices -> rows ``{item, annotator, choice}`` (all strings).

    Reads a CSV (or ``.parquet``, ``.jsonl``) with columns ``item, annotator, choice``; the
    aliases ``stem``/``item_id``, ``user``/``reviewer``, ``model``/``chosen``/``winner`` are
    accepted. A review task folder (``segsynth review``, with ``task.sqlite``) is read directly,
    as its export's ``answers.csv`` is. Rows with an empty choice, and skips, are left out.
    """
    if not io.is_uri(path) and (Path(path) / "task.sqlite").is_file():
        from segsynth.review.export import answer_rows
        from segsynth.review.store import Store

        raw = answer_rows(Store(path))
    elif str(path).endswith(".parquet"):
        raw = io.read_parquet(path).to_pylist()
    elif str(path).endswith((".jsonl", ".ndjson")):
        raw = [json.loads(line) for line in io.read_bytes(path).decode("utf-8").splitlines() if line.strip()]
    else:
        raw = list(csv.DictReader(_pyio.StringIO(io.read_bytes(path).decode("utf-8-sig"))))
    if not raw:
        return []
    cols = {}
    for want, aliases in _PREF_ALIASES.items():
        found = next((a for a in aliases if a in raw[0]), None)
        if found is None:
            raise ValueError(f"{path}: no {want!r} column (or one of {list(aliases)}); found {list(raw[0])}")
        cols[want] = found
    out = []
    for r in raw:
        choice = r.get(cols["choice"])
        if choice is None or str(choice).strip() in ("", "skip"):
            continue
        out.append({k: str(r[c]).strip() for k, c in cols.items()})
    return out


def preference_summary(prefs: Iterable[Mapping], min_agree: int = 2) -> dict:
    """Both views of the method's human study, per choice (model).

    - ``agreement``: items where at least ``min_agree`` annotators picked the same model; each
      such item counts for that model (an item where two models each reach ``min_agree`` is a
      tie and counts for neither). ``share`` is of the agreed items.
    - ``mentions``: every choice counts once; ``share`` is of all choices.

    Returns ``{items, agreed_items, ties, mentions_total, agreement: [{choice, items, share}],
    mentions: [{choice, mentions, share}]}``, each list sorted by count, highest first. An
    annotator who answered one item twice counts once (their last answer).
    """
    last: dict[tuple[str, str], str] = {}
    for p in prefs:
        last[(p["item"], p["annotator"])] = p["choice"]
    by_item: dict[str, Counter] = defaultdict(Counter)
    for (item, _), choice in last.items():
        by_item[item][choice] += 1
    mentions = Counter(last.values())
    agreed, ties = Counter(), 0
    for counts in by_item.values():
        top = [c for c, n in counts.items() if n >= min_agree]
        if len(top) == 1:
            agreed[top[0]] += 1
        elif len(top) > 1:
            ties += 1
    n_agreed, n_mentions = sum(agreed.values()), sum(mentions.values())
    choices = sorted(set(mentions), key=lambda c: (-agreed[c], -mentions[c], c))
    return {
        "items": len(by_item),
        "agreed_items": n_agreed,
        "ties": ties,
        "mentions_total": n_mentions,
        "min_agree": min_agree,
        "agreement": [{"choice": c, "items": agreed[c], "share": agreed[c] / n_agreed if n_agreed else float("nan")}
                      for c in choices],
        "mentions": [{"choice": c, "mentions": mentions[c], "share": mentions[c] / n_mentions if n_mentions else float("nan")}
                     for c in sorted(mentions, key=lambda c: (-mentions[c], c))],
    }


# ---------------------------------------------------------------- tables
def fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def fmt_ci(row: Mapping, metric: str, digits: int = 3) -> str:
    """``"0.839 [0.821, 0.856]"`` from a :func:`segsynth.metrics.summarize` row."""
    if metric not in row:
        return "–"
    mean, lo, hi = row[metric], row.get(metric + "_lo"), row.get(metric + "_hi")
    if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)) or fmt(lo, digits) == fmt(hi, digits):
        return fmt(mean, digits)
    return f"{fmt(mean, digits)} [{fmt(lo, digits)}, {fmt(hi, digits)}]"


class Table:
    """A header and string rows, rendered as Markdown, HTML or CSV."""

    def __init__(self, header: Sequence[str], rows: Sequence[Sequence[Any]]):
        self.header, self.rows = list(header), [[str(c) for c in r] for r in rows]

    def markdown(self) -> str:
        def esc(s):
            return s.replace("|", "\\|")
        lines = ["| " + " | ".join(esc(h) for h in self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in self.rows]
        return "\n".join(lines)

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def csv_bytes(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> bytes:
    columns = list(columns or (rows[0].keys() if rows else []))
    buf = _pyio.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k) for k in columns})
    return buf.getvalue().encode()


def overall_table(summary: Sequence[Mapping], metrics: Sequence[str]) -> Table:
    header = ["model", "n"] + [LABELS.get(m, m) + (" ↓" if m == "mae" else "") for m in metrics]
    return Table(header, [[r["model"], r["n"]] + [fmt_ci(r, m) for m in metrics] for r in summary])


def group_table(summary: Sequence[Mapping], group: str, metrics: Sequence[str]) -> Table:
    header = [group, "model", "n"] + [LABELS.get(m, m) for m in metrics]
    return Table(header, [[r[group], r["model"], r["n"]] + [fmt_ci(r, m) for m in metrics] for r in summary])


# ---------------------------------------------------------------- plots and galleries
def bar_chart(summary: Sequence[Mapping], path: str, metric: str = "ssim_box", title: str | None = None) -> str:
    """A bar per model with its mean ``metric`` and 95% error bars -> PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [str(r["model"]) for r in summary]
    means = np.array([r[metric] for r in summary], np.float64)
    lo = np.array([r.get(metric + "_lo", r[metric]) for r in summary], np.float64)
    hi = np.array([r.get(metric + "_hi", r[metric]) for r in summary], np.float64)
    fig, ax = plt.subplots(figsize=(max(3.5, 1.1 * len(names) + 1.5), 3.6), dpi=120)
    colors = plt.cm.tab10(np.arange(len(names)) % 10)
    ax.bar(names, means, yerr=np.vstack([means - lo, hi - means]), capsize=6, color=colors, edgecolor="black", linewidth=0.6)
    for i, m in enumerate(means):
        ax.text(i, m / 2 if m > 0.15 else m + 0.02, f"{m:.3f}", ha="center", va="center", fontsize=9)
    ax.set_ylabel(LABELS.get(metric, metric) + (" (lower is better)" if not M.METRICS.get(metric, True) else ""))
    ax.set_ylim(0, 1.0 if M.METRICS.get(metric, True) or np.nanmax(hi) <= 1 else None)
    ax.set_title(title or f"mean {LABELS.get(metric, metric)}, 95% interval", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    plt.setp(ax.get_xticklabels(), rotation=20 if len(names) > 3 else 0, ha="right" if len(names) > 3 else "center")
    fig.tight_layout()
    buf = _pyio.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    io.write_bytes(path, buf.getvalue())
    return path


def _thumb(arr: np.ndarray, height: int) -> np.ndarray:
    import cv2

    if arr.ndim == 2:
        arr = cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)
    h, w = arr.shape[:2]
    width = max(int(round(w * height / h)), 1)
    return cv2.resize(arr, (width, height), interpolation=cv2.INTER_AREA)


def _cell(tile: np.ndarray, text: str, width: int, bar: int = 18) -> np.ndarray:
    """A white cell ``width`` wide: the label on top, the tile centred with a grey frame."""
    import cv2

    h, w = tile.shape[:2]
    out = np.full((h + bar + 2, width + 2, 3), 255, np.uint8)
    x0 = (width - w) // 2 + 1
    out[bar + 1:bar + 1 + h, x0:x0 + w] = tile
    cv2.rectangle(out, (x0 - 1, bar), (x0 + w, bar + h + 1), (160, 160, 160), 1)
    cv2.putText(out, text[: max(width // 7, 4)], (3, bar - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def gallery(cases: Sequence[Mapping], models: Sequence[str], path: str, metric: str = "ssim_box",
            height: int = 128, gap: int = 4) -> str:
    """Worst cases as rows ``image | truth | model 1 | model 2 ...`` -> PNG at ``path``.

    ``cases``: dicts with ``stem``, ``image (H, W, 3) uint8``, ``truth (H, W) uint8`` and
    ``preds``: ``{model: ((H, W) uint8 or None, metric value)}``. Every tile is ``height``
    pixels high, framed and labelled (stem, "truth", model and its ``metric``); a missing
    prediction is a grey tile.
    """
    if not cases:
        raise ValueError("gallery: no cases to draw")
    table = []
    for case in cases:
        truth = _thumb(case["truth"], height)
        tiles = [(_thumb(case["image"], height), str(case["stem"])), (truth, "truth")]
        for m in models:
            pred, value = case["preds"].get(m, (None, None))
            tile = np.full_like(truth, 200) if pred is None else _thumb(pred, height)
            tiles.append((tile, f"{m} {fmt(value, 2)}" if value is not None else m))
        table.append(tiles)
    width = max(max(t.shape[1] for t, _ in tiles) for tiles in table)
    width = max(width, 7 * max(len(m) + 5 for m in models))  # room for the labels
    rows = []
    for tiles in table:
        cells = [_cell(t, text, width) for t, text in tiles]
        sep = np.full((cells[0].shape[0], gap, 3), 255, np.uint8)
        rows.append(np.concatenate([x for c in cells for x in (c, sep)][:-1], 1))
        rows.append(np.full((gap, rows[-1].shape[1], 3), 255, np.uint8))
    sheet = np.concatenate(rows[:-1], 0)
    io.write_bytes(path, io.encode_png(sheet, compression=6))
    return path


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# ---------------------------------------------------------------- the report
class ReportDoc:
    """The report's two renderings built section by section: ``report.md`` and ``index.html``."""

    STYLE = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}img{max-width:100%}pre{background:#f5f5f5;padding:1em;overflow:auto}")

    def __init__(self, title: str):
        self.title = title
        self.md: list[str] = [f"# {title}", ""]
        self.parts: list[str] = [f"<h1>{html.escape(title)}</h1>"]

    def section(self, heading: str, text: str = "", table: Table | None = None, image: str | None = None,
                code: str | None = None) -> None:
        self.md.extend([f"## {heading}", ""])
        self.parts.append(f"<h2>{html.escape(heading)}</h2>")
        if text:
            self.md.extend([text, ""])
            self.parts.append(f"<p>{html.escape(text)}</p>")
        if table is not None:
            self.md.extend([table.markdown(), ""])
            self.parts.append(table.html())
        if image:
            self.md.extend([f"![{heading}]({image})", ""])
            self.parts.append(f'<p><img src="{html.escape(image)}" alt="{html.escape(heading)}"></p>')
        if code is not None:
            self.md.extend(["```", code.rstrip(), "```", ""])
            self.parts.append(f"<pre>{html.escape(code)}</pre>")

    def write(self, folder: str) -> None:
        io.write_bytes(io.join(folder, "report.md"), "\n".join(self.md).encode())
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{self.STYLE}</style></head><body>{''.join(self.parts)}</body></html>")
        io.write_bytes(io.join(folder, "index.html"), page.encode())


@dataclass
class Summaries:
    """The per-model means and the per-group tables one report shows and writes."""

    models: list[str]
    metrics: list[str]
    overall: list[dict]
    by_cat: list[dict]
    by_bg: list[dict]

    @classmethod
    def of(cls, rows: list[Mapping], models: Sequence[str] | None, interval: str) -> "Summaries":
        models = list(models or dict.fromkeys(r["model"] for r in rows))
        metrics = [m for m in M.METRICS if any(m in r for r in rows)]
        order = {m: i for i, m in enumerate(models)}
        overall = sorted(M.summarize(rows, by=["model"], metrics=metrics, method=interval),
                         key=lambda r: order.get(r["model"], 99))

        def grouped(key):  # groups sorted by name, models in the given order inside each group
            out = M.summarize(rows, by=[key, "model"], metrics=GROUP_METRICS, method=interval)
            return sorted(out, key=lambda r: (str(r[key]), order.get(r["model"], 99)))

        by_bg = grouped("bg_kind") if any(r.get("bg_kind") for r in rows) else []
        return cls(models, metrics, overall, grouped("category"), by_bg)


def _summary_sections(doc: ReportDoc, folder: str, rows: list[Mapping], s: Summaries, data: str, interval: str) -> None:
    main = [m for m in MAIN_METRICS if s.overall and m in s.overall[0]]
    rest = [m for m in s.metrics if m not in main]
    n_items = len({r["stem"] for r in rows})
    ci = "percentile bootstrap" if interval == "bootstrap" else "Student t"
    doc.section("Overall", f"{n_items} items{f' from {data}' if data else ''}; mean per model with its 95% interval "
                f"({ci}). SSIM (box): prediction and truth cropped to the truth's bounding box, Gaussian window "
                "sigma 1.5, data range 1. IoU at the configured threshold. max F: maximum of the mean F-measure "
                "curve (beta^2 0.3). MAE: lower is better.", overall_table(s.overall, main))
    if rest:
        doc.section("All metrics", "Per-sample metrics averaged over items (max F here is each sample's own best threshold).",
                    overall_table(s.overall, rest))
    if s.overall:
        bar_chart(s.overall, io.join(folder, "ssim_box_by_model.png"), "ssim_box")
        doc.section("Mean SSIM per model", "", image="ssim_box_by_model.png")
    if len({r["category"] for r in s.by_cat}) > 1:
        doc.section("Per category", "", group_table(s.by_cat, "category", GROUP_METRICS))
    if s.by_bg:
        doc.section("Per background kind", "white: near-white background (catalog style); plain: low variation; "
                    "scene: anything else (estimated from the pixels away from the object unless categories.csv names it).",
                    group_table(s.by_bg, "bg_kind", GROUP_METRICS))


def _gallery_cases(rows: list[Mapping], model: str, models: list[str], by_stem: Mapping, predictions: str,
                   metric: str, size: int) -> list[dict]:
    """``model``'s worst items by ``metric``: image, truth and every model's mask and score."""
    value = {(r["model"], r["stem"]): r.get(metric) for r in rows}
    cases = []
    for r in M.worst([r for r in rows if r["model"] == model], metric, size):
        it = by_stem.get(r["stem"])
        if it is None:
            continue
        try:
            case = {"stem": r["stem"], "image": io.read_image(it["image"]), "truth": io.read_mask(it["mask"]), "preds": {}}
            for m in models:
                p = io.join(predictions, m, f"{r['stem']}.png")
                case["preds"][m] = (io.read_mask(p) if io.exists(p) else None, value.get((m, r["stem"])))
        except (io.ImageDecodeError, OSError) as e:
            log.warning("gallery: %s left out: %s", r["stem"], e)
            continue
        cases.append(case)
    return cases


def _gallery_sections(doc: ReportDoc, folder: str, rows: list[Mapping], models: list[str], items: Sequence[Mapping],
                      predictions: str, metric: str, size: int) -> None:
    """A gallery of the worst cases, one per model."""
    by_stem = {str(it["stem"]): it for it in items}
    label = LABELS.get(metric, metric)
    for model in models:
        cases = _gallery_cases(rows, model, models, by_stem, predictions, metric, size)
        if cases:
            name = f"gallery_{_safe(model)}.png"
            gallery(cases, models, io.join(folder, name), metric)
            doc.section(f"Worst cases of {model}", f"The {len(cases)} items where {model} scores lowest on "
                        f"{label}, worst first: image | truth | " + " | ".join(models)
                        + f" (each labelled with its {label}).", image=name)


def _preference_sections(doc: ReportDoc, folder: str, preferences: Sequence[Mapping]) -> None:
    ps = preference_summary(preferences)
    doc.section("Human preference: agreed items",
                f"{ps['agreed_items']} of {ps['items']} items where at least {ps['min_agree']} annotators picked "
                f"the same model ({ps['ties']} ties left out).",
                Table(["model", "items", "share"], [[p["choice"], p["items"], fmt(p["share"])] for p in ps["agreement"]]))
    doc.section("Human preference: all mentions", f"{ps['mentions_total']} choices in all.",
                Table(["model", "mentions", "share"], [[p["choice"], p["mentions"], fmt(p["share"])] for p in ps["mentions"]]))
    io.write_bytes(io.join(folder, "preferences.json"), json.dumps(ps, indent=2).encode())


def _provenance_sections(doc: ReportDoc, folder: str, command: str | None, config: Mapping | None,
                         cards: Mapping | None) -> None:
    """The command, the config and the model cards: in the report and as files beside it."""
    import yaml

    if command:
        io.write_bytes(io.join(folder, "command.txt"), (command + "\n").encode())
        doc.section("Command", code=command)
    if config is not None:
        text = yaml.safe_dump(dict(config), sort_keys=False)
        io.write_bytes(io.join(folder, "config.yaml"), text.encode())
        doc.section("Config", code=text)
    if cards:
        text = json.dumps(cards, indent=2, default=str)
        io.write_bytes(io.join(folder, "models.json"), text.encode())
        doc.section("Models", code=text)


def _write_tables(folder: str, rows: list[Mapping], s: Summaries) -> None:
    flat = [{k: v for k, v in r.items() if k != "f_curve"} for r in rows]
    io.write_bytes(io.join(folder, "samples.csv"), csv_bytes(flat))
    io.write_bytes(io.join(folder, "overall.csv"), csv_bytes(s.overall))
    io.write_bytes(io.join(folder, "by_category.csv"), csv_bytes(s.by_cat))
    if s.by_bg:
        io.write_bytes(io.join(folder, "by_bg_kind.csv"), csv_bytes(s.by_bg))


def write_report(folder: str, rows: Sequence[Mapping], items: Sequence[Mapping] | None = None,
                 models: Sequence[str] | None = None, predictions: str | None = None,
                 config: Mapping | None = None, command: str | None = None, cards: Mapping | None = None,
                 gallery_size: int = 8, gallery_metric: str = "ssim_box", preferences: Sequence[Mapping] | None = None,
                 interval: str = "bootstrap", skipped: Mapping | None = None, title: str = "segsynth evaluation") -> str:
    """Write the report folder; returns its path.

    ``rows``: per-sample dicts (``model, stem, category, bg_kind`` and metrics, optional
    ``f_curve``). ``items``: the labelled items (``stem, image, mask`` paths) and
    ``predictions``: the folder of ``<model>/<stem>.png`` soft masks, both needed for the
    galleries (left out when missing). ``preferences``: rows from :func:`load_preferences`.
    """
    rows = list(rows)
    s = Summaries.of(rows, models, interval)
    doc = ReportDoc(title)
    _summary_sections(doc, folder, rows, s, (config or {}).get("data", ""), interval)
    if items is not None and predictions is not None and gallery_size > 0 and rows:
        _gallery_sections(doc, folder, rows, s.models, items, predictions, gallery_metric, gallery_size)
    if preferences:
        _preference_sections(doc, folder, preferences)
    if skipped:
        doc.section("Skipped items", "Unreadable or mismatched pairs, left out of every table.",
                    Table(["model", "stem", "error"], [[m, e["stem"], e["error"]] for m, errs in skipped.items() for e in errs]))
    _provenance_sections(doc, folder, command, config, cards)
    _write_tables(folder, rows, s)
    doc.write(folder)
    return folder
