"""``segsynth active score|select|accept|harvest|round``: the active-learning loop, and its Ray edge.

    segsynth active score   --config configs/active.yaml          # ROUND/scores.parquet, ranking
    segsynth active select  --config configs/active.yaml          # ROUND/queue.parquet + review task
    segsynth review serve outputs/active/round-1/review           # people pick the masks
    segsynth active harvest --config configs/active.yaml          # accepted/, control/, context/
    segsynth active round   --config configs/active.yaml          # all of it, as far as it can go
    python jobs/active.py --config configs/demo/active.yaml   # (the same, as a Ray job)

Scoring runs in Ray Data: the pool's photos flow through one actor pool for the current model
(:class:`segsynth.active.score.ModelPass`) and one per teacher (``TeacherPass``); teachers' masks
are cached by the photo's content hash in ``teacher_cache`` (default ``OUT/teachers``; they do not
change between rounds) and copied to ``ROUND/masks/<teacher>/`` for the review task. A round is the
folder ``OUT/round-N/`` (see docs/active-learning.md). ``round`` goes score -> select ->
(auto-accept) and, once every photo of the review task has its answers, harvest -> synth
(context samples) -> train (from the current model) -> eval (previous vs new model) -> the
round-over-round table ``OUT/rounds.md``; run it again after people have answered to go on.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import posixpath
import shutil
import sys
from pathlib import Path

from segsynth import console, io
from segsynth.active import review as AR
from segsynth.active.config import ActiveConfig
from segsynth.active.harvest import harvest
from segsynth.active.pool import pool_items
from segsynth.active.score import ModelPass, TeacherPass, finish_rows, scores_table, teacher_cache_dir, teacher_columns
from segsynth.active.select import category_ranking, select, write_ranking
from segsynth.config import ConfigError, apply_storage, dump_config, load_config, save_config, to_dict
from segsynth.evaluate.config import EvalModel

log = logging.getLogger(__name__)

ROUND_PREFIX = "round-"


# ---------------------------------------------------------------- rounds on disk
def round_dir(cfg: ActiveConfig, n: int) -> str:
    return io.join(cfg.out, f"{ROUND_PREFIX}{n}")


def latest_round(out: str) -> int:
    """The highest N of ``out/round-N`` (0 when there is none)."""
    p = Path(out)
    ns = [int(d.name[len(ROUND_PREFIX):]) for d in p.glob(f"{ROUND_PREFIX}*")
          if d.is_dir() and d.name[len(ROUND_PREFIX):].isdigit()] if p.is_dir() else []
    return max(ns, default=0)


def current_model(cfg: ActiveConfig, n: int) -> EvalModel:
    """The model round ``n`` scores with: the previous round's ``model/``, else ``cfg.model``."""
    prev = Path(round_dir(cfg, n - 1)) / "model" if n > 1 else None
    if prev is not None and prev.is_dir():
        return EvalModel(name=f"round-{n - 1}", kind="checkpoint", path=str(prev))
    if cfg.model is None:
        raise ConfigError("model: give the current model, e.g. model: {name: current, kind: checkpoint, "
                          "path: outputs/cpu/train/best}")
    return cfg.model


def _round_for(cfg: ActiveConfig, new: bool) -> int:
    if cfg.round is not None:
        return cfg.round
    last = latest_round(cfg.out)
    if new:
        done = last and (Path(round_dir(cfg, last)) / "model").is_dir()
        return last + 1 if (done or not last) else last
    if not last:
        raise io.InputError(f"out: {cfg.out} holds no round yet; run `segsynth active score` first")
    return last


# ---------------------------------------------------------------- score (Ray Data)
def check_scoring(cfg: ActiveConfig, model: EvalModel) -> tuple[list[dict], dict]:
    """Every input scoring needs, before anything is written or started: the pool's photos (and
    what was left out of it), the model, the teachers."""
    cfg.require_scoring()
    if model.path:
        io.require_input(model.path, "model.path")
    for t in cfg.teachers:
        if t.path:
            io.require_input(t.path, f"teachers ({t.name}).path")
    return pool_items(cfg.pool)


def score_pool(cfg: ActiveConfig, model: EvalModel, out: str, address: str | None = None,
               pool: tuple[list[dict], dict] | None = None) -> dict:
    """Score the pool with ``model`` into ``out``: ``scores.parquet``, ``masks/model/``,
    ``masks/<teacher>/`` (from the cache, which gets what it lacked), the category ranking
    (``ranking.csv``, ``ranking.png``). ``pool``: what :func:`check_scoring` returned, when the
    caller checked already."""
    from segsynth.ray_env import init_ray

    items, left_out = pool or check_scoring(cfg, model)
    io.require_output(out)
    ray = init_ray(address)
    compute = {"batch_size": cfg.batch_size, "num_cpus": cfg.cpus_per_worker, "num_gpus": cfg.gpus_per_worker or None,
               "compute": ray.data.ActorPoolStrategy(size=cfg.workers)}
    # small blocks: rows (and the teachers' cached masks) come back as they are done, so the
    # progress bar moves, and a stopped run loses at most a few photos of teacher work
    ds = ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // (cfg.batch_size * 4))))
    ds = ds.map_batches(ModelPass, fn_constructor_kwargs={"spec": to_dict(model), "boundary_band": cfg.boundary_band,
                                                          "tta_scale": cfg.tta_scale, "white": to_dict(cfg.white),
                                                          "categorize": to_dict(cfg.categorize)},
                        **compute)
    teacher_names = [t.name for t in cfg.teachers]
    caches = {t.name: teacher_cache(cfg, t) for t in cfg.teachers}  # (hashes each model file once)
    for t in cfg.teachers:  # one actor pool per teacher, streaming behind the model's
        ds = ds.map_batches(TeacherPass, fn_constructor_kwargs={"spec": to_dict(t), "cache": caches[t.name],
                                                                "on_white": cfg.teachers_on_white}, **compute)
    rows = []
    for r in console.progress(ds.iter_rows(), total=len(items), desc="active score", unit="photos"):
        r = dict(r)
        if r.get("model_png"):
            io.write_bytes(io.join(out, "masks", "model", f"{r['stem']}.png"), r.pop("model_png"))
        for t in teacher_names:
            png = r.pop(teacher_columns(t)[1], b"")
            if not png:
                continue
            cached = io.join(caches[t], f"{r['content_hash']}.png")
            if not io.exists(cached):  # written as the photos come: a stopped run keeps what it did
                io.write_bytes(cached, png)
            io.write_bytes(io.join(out, "masks", t, f"{r['stem']}.png"), png)
        rows.append(r)
    weights = dataclasses.asdict(cfg.weights)
    rows = sorted(finish_rows(rows, teacher_names, weights), key=lambda r: r["key"])
    io.write_parquet(scores_table(rows, teacher_names), io.join(out, "scores.parquet"))
    ranking = category_ranking(rows, cfg.select.threshold, cfg.select.min_count, cfg.select.rank_by)
    write_ranking(ranking, out, threshold=cfg.select.threshold)
    scored = [r for r in rows if not r.get("error") and not r.get("skipped")]
    summary = {"out": out, "model": model.name, "photos": len(rows), "scored": len(scored),
               "white_background": sum(bool(r.get("white_bg")) for r in rows),
               "skipped_white": sum(bool(r.get("skipped")) for r in rows),
               "unreadable": sum(bool(r.get("error")) for r in rows), **left_out,
               "worst_categories": [t["category"] for t in ranking[:cfg.select.worst_categories]]}
    io.write_bytes(io.join(out, "score_summary.json"), json.dumps(summary, indent=2).encode())
    return summary


SCORE_FILES = ("scores.parquet", "ranking.csv", "ranking.png", "masks")  # what scoring writes besides its summary


def copy_scores(src: Path, dest: Path) -> dict:
    """A scoring's files (:data:`SCORE_FILES`, ``score_summary.json``) from ``src`` into ``dest``,
    for a round that starts from scores made by the same model on the same pool; returns the
    summary, which names ``src`` as ``from``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in SCORE_FILES:
        if (src / name).is_dir():
            shutil.copytree(src / name, dest / name, dirs_exist_ok=True)
        elif (src / name).is_file():
            shutil.copyfile(src / name, dest / name)
    summary = {**json.loads((src / "score_summary.json").read_text()), "out": str(dest), "from": str(src)}
    io.write_bytes(str(dest / "score_summary.json"), json.dumps(summary, indent=2).encode())
    return summary


def teacher_cache(cfg: ActiveConfig, teacher: EvalModel) -> str:
    """Where ``teacher``'s masks are cached by content hash (see :func:`teacher_cache_dir`)."""
    return teacher_cache_dir(cfg.teacher_cache or io.join(cfg.out, "teachers"), to_dict(teacher))


def score(cfg: ActiveConfig, address: str | None = None) -> dict:
    n = _round_for(cfg, new=True)
    rd = round_dir(cfg, n)
    if io.exists(io.join(rd, "scores.parquet")) and cfg.round is None:
        log.info("round %d is scored already (%s); continuing from there", n, rd)
        return {**json.loads(io.read_bytes(io.join(rd, "score_summary.json"))), "round": n}
    model = current_model(cfg, n)
    pool = check_scoring(cfg, model)  # a wrong path fails here, before the round's folder exists
    save_config(cfg, rd)
    after = Path(round_dir(cfg, n - 1)) / "report" / "after"
    if n > 1 and (after / "scores.parquet").is_file() and (after / "score_summary.json").is_file():
        # the previous round ended by scoring this pool with this model: start from those scores
        return {**copy_scores(after, Path(rd)), "round": n}
    summary = score_pool(cfg, model, rd, address, pool=pool)
    return {**summary, "round": n}


# ---------------------------------------------------------------- select, accept, harvest (no Ray)
def select_round(cfg: ActiveConfig, address: str | None = None) -> dict:
    n = _round_for(cfg, new=False)
    rd = Path(round_dir(cfg, n))
    io.require_input(str(rd / "scores.parquet"), f"round {n}'s scores (run `segsynth active score`)", "file")
    if (rd / "review" / "task.sqlite").exists():
        raise io.InputError(f"round {n} has its review task already ({rd / 'review'}); harvest it, or delete "
                            f"{rd / 'review'} and {rd / 'queue.parquet'} to select again")
    rows = io.read_parquet(str(rd / "scores.parquet")).to_pylist()
    ranking = category_ranking(rows, cfg.select.threshold, cfg.select.min_count, cfg.select.rank_by)
    earlier = [Path(round_dir(cfg, k)) / "queue.parquet" for k in range(1, n)]
    reviewed = {key for q in earlier if q.is_file() for key in io.read_parquet(str(q), columns=["key"]).column("key").to_pylist()}
    queue, stats = select(rows, ranking, cfg.select, seed=cfg.seed + n, exclude=reviewed)
    if not queue:
        raise io.InputError(f"round {n}: nothing to review (no scored photo outside white backgrounds in the "
                            f"worst categories {stats['worst_categories']}); widen the pool or select.worst_categories")
    io.write_parquet(queue, str(rd / "queue.parquet"))
    queue_images = AR.write_queue_folder(queue, str(rd / "queue"))
    model = current_model(cfg, n)
    teachers = {t.name: str(rd / "masks" / t.name) for t in cfg.teachers}
    task = AR.make_task(cfg, str(Path(queue_images).parent), str(rd / "masks" / "model"), teachers, str(rd / "review"),
                        version=model.name)
    summary = {"round": n, "out": str(rd), "queue": str(rd / "queue.parquet"), "review": task["out"],
               "review_items": task["items"], **stats}
    (rd / "select_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def accept_round(cfg: ActiveConfig, address: str | None = None) -> dict:
    n = _round_for(cfg, new=False)
    rd = Path(round_dir(cfg, n))
    io.require_input(str(rd / "review"), f"round {n}'s review task (run `segsynth active select`)", "folder")
    queue = io.read_parquet(str(rd / "queue.parquet")).to_pylist()
    original = {q["stem"]: posixpath.basename(q["key"].split("/", 1)[1]) for q in queue}  # "<source>/<bg_id>" -> file stem
    counts = AR.auto_accept(cfg, str(rd / "review"), original)
    (rd / "auto_accept.json").write_text(json.dumps(counts, indent=2))  # which rule decided how many (harvest reports it)
    return {"round": n, "out": str(rd / "review"), "automatic": True, **counts}


def harvest_round(cfg: ActiveConfig, address: str | None = None) -> dict:
    n = _round_for(cfg, new=False)
    return {"round": n, **harvest(cfg, round_dir(cfg, n))}


# ---------------------------------------------------------------- the rest of a round: synth, train, eval
def _train_config(cfg: ActiveConfig, rd: Path, model: EvalModel, hv: dict, address: str | None):
    from segsynth.synth.config import SynthConfig
    from segsynth.train.config import DataSource, TrainConfig

    if not cfg.train_config:
        raise ConfigError("train_config: a round trains again; give the training config it starts from "
                          "(e.g. configs/cpu/train.yaml)")
    apply_storage(cfg.train_config, cfg.train_overrides, TrainConfig)  # a nested config is an entry point's too
    tcfg = load_config(TrainConfig, cfg.train_config, cfg.train_overrides)
    data = list(tcfg.data)
    n_base = len(data)
    if hv["accepted"]:
        data.append(DataSource(path=str(rd / "accepted"), kind="labelled", weight=cfg.harvest.weight))
    if hv["context_cutouts"]:
        from segsynth.synth import job as synth_job

        apply_storage(cfg.harvest.synth_config, cfg.harvest.synth_overrides, SynthConfig)
        scfg = load_config(SynthConfig, cfg.harvest.synth_config, cfg.harvest.synth_overrides)
        scfg = dataclasses.replace(scfg, cutouts=str(rd / "context"), out=str(rd / "context_synth"),
                                   size=tcfg.size, samples_per_cutout=cfg.harvest.context_samples_per_cutout,
                                   distractor_cutouts=None, scene_backgrounds=[], val_fraction=tcfg.val_fraction,
                                   contact_sheet=min(scfg.contact_sheet, 24))
        with console.stage_logs("synth", scfg.out):
            s = synth_job.run(scfg, address=address)
        console.result("synth", s, label="active synth (context)")
        data.append(DataSource(path=scfg.out, kind="synthetic", weight=cfg.harvest.context_weight))
    if model.kind != "checkpoint":
        raise ConfigError(f"model: {model.name} is a {model.kind}; training again starts from a checkpoint folder")
    tcfg = dataclasses.replace(tcfg, data=tuple(data), encoder_weights=str(Path(model.path).resolve()),
                               out=str(rd / "train"), name=f"active-{rd.name}")
    return with_share(tcfg, n_base, cfg.harvest.share)


def with_share(tcfg, n_base: int, share: float | None):
    """``tcfg`` with the weights of its sources after the first ``n_base`` (the harvest's)
    scaled so that they take ``share`` of an epoch's training rows (their ratio kept); as is
    when ``share`` is None or there is nothing to scale."""
    from segsynth.train.data import plan

    if share is None or len(tcfg.data) <= n_base:
        return tcfg
    rows = [r["train_rows"] for r in plan(tcfg).per_source if r["kind"] != "val_data"]
    base, extra = sum(rows[:n_base]), sum(rows[n_base:])
    if not base or not extra:
        return tcfg
    f = share / (1.0 - share) * base / extra
    data = (*tcfg.data[:n_base], *(dataclasses.replace(d, weight=d.weight * f) for d in tcfg.data[n_base:]))
    log.info("harvest share %.2f: its weights x%.2f (%d synthetic rows, %d harvest rows before)", share, f, base, extra)
    return dataclasses.replace(tcfg, data=data)


def finish_round(cfg: ActiveConfig, n: int, address: str | None = None) -> dict:
    """harvest -> context synth -> train -> eval -> the rounds table, for a fully answered round."""
    from segsynth.evaluate import job as eval_job
    from segsynth.evaluate.config import EvalConfig
    from segsynth.train import job as train_job

    rd = Path(round_dir(cfg, n))
    model = current_model(cfg, n)
    hv = harvest(cfg, str(rd))
    console.result("active", {"out": str(rd)}, label=f"active harvest ({hv['note']}): {hv['accepted']} accepted, "
                                                     f"{hv['accepted_control']} control, {hv['context_cutouts']} context cutouts")
    tcfg = _train_config(cfg, rd, model, hv, address)
    with console.stage_logs("train", tcfg.out):
        ts = train_job.run(tcfg, address=address)
    console.result("train", ts, label="active train")
    if not ts.get("best"):
        raise RuntimeError(f"round {n}: training wrote no best/ checkpoint ({tcfg.out})")
    if (rd / "model").exists():
        shutil.rmtree(rd / "model")
    shutil.copytree(ts["best"], rd / "model")
    new = EvalModel(name=f"round-{n}", kind="checkpoint", path=str(rd / "model"))
    before = dataclasses.replace(model, name=f"round-{n - 1}" if n > 1 else f"{model.name} (round 0)".replace("/", "-"))
    evals = {}
    # (the control slice's accepted masks are not an evaluation set: where the model's own mask
    # was accepted, the model before the round would score IoU 1 on it by construction)
    for ev in cfg.eval:
        ecfg = EvalConfig(data=ev.data, stems=ev.stems, split=ev.split, models=[before, new, *cfg.eval_models],
                          out=str(rd / "report" / ev.label), workers=cfg.workers, cpus_per_worker=cfg.cpus_per_worker,
                          gallery_size=4)
        with console.stage_logs("eval", ecfg.out):
            es = eval_job.run(ecfg, address=address, command=f"segsynth active round (round {n}, {ev.label})")
        console.result("eval", es, label=f"active eval {ev.label}")
        evals[ev.label] = es
    after = score_pool(cfg, new, str(rd / "report" / "after"), address) if cfg.rescore_after else None
    summary = {"round": n, "out": str(rd), "automatic": hv["automatic"], "harvest": hv, "model": str(rd / "model"),
               "train": {k: ts.get(k) for k in ("steps", "best_step", "best_score", "select_on")},
               "eval": {k: v.get("models") for k, v in evals.items()}, "after": after}
    (rd / "report").mkdir(parents=True, exist_ok=True)
    (rd / "report" / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    from segsynth.active.report import write_rounds

    summary["rounds"] = write_rounds(cfg.out)
    return summary


def run_rounds(cfg: ActiveConfig, address: str | None = None, wait_for_review: bool = False,
               poll_s: float = 5.0, review_timeout_s: float | None = None) -> dict:
    """Run rounds as far as they can go: ``cfg.rounds`` of them when auto-accept answers the
    review tasks; otherwise up to the review of the current round (run again once answered),
    or, with ``wait_for_review``, wait there until people have answered and go on."""
    done = []
    for _ in range(cfg.rounds):
        s = score(cfg, address)
        n = s["round"]
        rd = Path(round_dir(cfg, n))
        console.result("active", {"out": str(rd)}, label="active score: " + _headline("score", s))
        if not (rd / "review" / "task.sqlite").exists():
            sel = select_round(dataclasses.replace(cfg, round=n), address)
            console.result("active", {"out": sel["review"]}, label=f"active select: {sel['selected']} selected + "
                                                                    f"{sel['control']} control from {sel['worst_categories']}")
        if cfg.auto_accept.enabled:
            acc = accept_round(dataclasses.replace(cfg, round=n), address)
            console.result("active", {"out": acc["out"]}, label="active accept: " + _headline("accept", acc))
        progress = AR.answered(str(rd / "review"))
        if progress["answered"] < progress["slots"] and wait_for_review:
            console.result("active", {"out": str(rd / "review")},
                           label=f"active review: round {n} waits for {progress['slots'] - progress['answered']} "
                                 f"answers; answer them in `segsynth review serve {rd / 'review'}`")
            progress = AR.wait_for_answers(str(rd / "review"), poll_s=poll_s, timeout_s=review_timeout_s)
        if progress["answered"] < progress["slots"]:
            msg = (f"round {n} waits for people: {progress['answered']}/{progress['slots']} answers. "
                   f"Run `segsynth review serve {rd / 'review'}`, then this command again")
            console.result("active", {"out": str(rd)}, label=msg)
            return {"rounds": done, "waiting": n, "review": str(rd / "review"), "progress": progress, "out": cfg.out}
        done.append(finish_round(dataclasses.replace(cfg, round=n), n, address))
        cfg = dataclasses.replace(cfg, round=None)
    return {"rounds": [d["round"] for d in done], "out": cfg.out, "summaries": done,
            "table": io.join(cfg.out, "rounds.md")}


# ---------------------------------------------------------------- the command
COMMANDS = {"score": score, "select": select_round, "accept": accept_round, "harvest": harvest_round, "round": run_rounds}
HELP = {"score": "score the unlabelled pool with the current model and the teachers; rank categories",
        "select": "pick the photos to review (worst categories, top scores, a control slice); create the review task",
        "accept": "answer the review task with the auto-accept policy (no people)",
        "harvest": "accepted masks -> a labelled folder, a control folder and context cutouts",
        "round": "score -> select -> (auto-accept) -> harvest -> train -> eval, as far as the answers allow"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="active_command", metavar="<command>", required=True)
    for name, help_ in HELP.items():
        c = sub.add_parser(name, help=help_, description=f"segsynth active {name}: {help_}")
        c.add_argument("--config", help="active-learning YAML (segsynth.active.config.ActiveConfig)")
        c.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
        c.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
        c.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
        if name == "round":
            c.add_argument("--wait-for-review", action="store_true",
                           help="when people answer the review task (auto_accept off), wait for their answers and go on")
            c.add_argument("--poll-s", type=float, default=5.0, help="how often the waiting round looks at the answers")
        c.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. round=2 select.top_n=50")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(ActiveConfig, args.config, args.overrides)
    if args.print_config:
        sys.stdout.write(dump_config(cfg))
        return 0
    with console.stage_logs("active", cfg.out):
        if args.active_command == "round":
            summary = run_rounds(cfg, address=args.address, wait_for_review=args.wait_for_review, poll_s=args.poll_s)
        else:
            summary = COMMANDS[args.active_command](cfg, address=args.address)
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2, default=str) + "\n")
    else:
        console.result("active", {"out": summary.get("out", "")},
                       label=f"active {args.active_command}: " + _headline(args.active_command, summary))
    return 0


def _headline(cmd: str, s: dict) -> str:
    if cmd == "score":
        return (f"round {s.get('round')}: {s.get('scored')} of {s.get('photos')} photos scored "
                f"({s.get('skipped_white')} white skipped); worst: {', '.join(s.get('worst_categories') or [])}")
    if cmd == "select":
        return f"round {s.get('round')}: {s.get('review_items')} photos to review -> {s.get('review')}"
    if cmd == "accept":
        return (f"round {s.get('round')}: AUTOMATIC answers ({s.get('teacher_agrees')} teacher agrees, "
                f"{s.get('teacher_confident')} teacher confident, {s.get('reference')} by reference, {s.get('none')} none)")
    if cmd == "harvest":
        return (f"round {s.get('round')}: {s.get('accepted')} accepted, {s.get('accepted_control')} control, "
                f"{s.get('context_cutouts')} context cutouts ({s.get('note')})")
    if "waiting" in s:
        return f"round {s['waiting']} waits for the review at {s.get('review')}"
    return f"rounds {s.get('rounds')} done -> {s.get('table')}"
