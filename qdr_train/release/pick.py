"""Pick the INT8 student to ship: of an ablation's seeds of one variant, the one that keeps most of its teacher.

A few hundred QAT steps land each seed somewhere different (auto_f1's three QDR seeds kept 97.3-99.4% of
their teacher's gain on CBSD68), so shipping seed 0 ships a draw. A release instead scores every seed's
exported ONNX on a selection set that the student never trained on and that no reported number uses
(CBSD68 for ``auto``; Kodak24 stays held out), takes the seed with the highest gain recovery on the mean
over the task's conditions, and records every seed's score beside the choice.

``against`` makes the same set decide whether a new teacher ships at all: its picked student must
score a higher mean PSNR there than the shipped student's pick report says. The shipped file is the
INT8 model, so a teacher that is better in FP32 but whose student is not better is not a release. Nor is
one that changes a clean photo of the set the shipped student passed: the picked student's clean frames
(the set's photos as input) are counted, and fewer of them coming back bit for bit stops the release. A
mean over degraded frames cannot see that (auto_w2f4 brightened a mid-grey sand photo that auto_w1 passed).

``also`` names further selection sets on which the picked student is scored as well, and with ``against``
it may not fall below the shipped student there either. One set of 481x321 photos missed what camera-sized
frames showed: auto_n3 lost 0.07 dB of rain_haze against auto_w2f4 on CBSD68 and 0.66 on Kodak24, and the
21 COCO photos of the detection sets (640 pixels wide, never trained on, not held out) show 0.56.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path
from statistics import mean
from typing import Any

import yaml

from qdr_ros.core.model_info import file_sha256
from qdr_train.config import CONFIG_DIR, load_config
from qdr_train.data.datasets import HELD_OUT, data_root, shared_images
from qdr_train.evaluation.evaluator import evaluate
from qdr_train.release.ablation import condition_reports, gain_recovery, reference_scores


MAX_DROP_DB = 0.3  # how far one condition may fall below the shipped student's on the selection set
INPUT_TOLERANCE_DB = 1e-3  # same frames, same input PSNR: more apart than this, the frames differ


def _students(folder: Path, variant: str, teacher: Path) -> dict[int, dict[str, Any]]:
    """Seed -> the stored result of every finished run of ``variant`` under an ablation's task folder.

    Only students of ``teacher`` (its sha256, as each result records it): seeds left from an ablation
    of an earlier teacher are no candidates.
    """
    sha = file_sha256(teacher)
    found, others = {}, []
    for path in sorted(folder.glob(f"seed*/{variant}/result.json")):
        stored = json.loads(path.read_text())
        seed = int(path.parent.parent.name.removeprefix("seed"))
        if stored.get("settings", {}).get("teacher_sha256") == sha:
            found[seed] = stored
        else:
            others.append(seed)
    if not found:
        stale = f"; seeds {others} were distilled from another teacher (or record none)" if others else ""
        raise FileNotFoundError(f"no finished {variant} run of teacher {teacher} under {folder} "
                                f"(seed*/{variant}/result.json{stale}); "
                                f"run qdr-train ablate --variants {variant} --teacher {teacher} first")
    return found


def selection_folders(root: Path, selection: str) -> list[str]:
    """Return the folders (relative to the data root) a selection set names: one, or a glob pattern's matches."""
    if not any(c in selection for c in "*?["):
        return [selection]
    return sorted(str(Path(p).relative_to(root)) for p in glob.glob(str(root / selection)) if Path(p).is_dir())


def require_sets(root: Path, names: list[str]) -> None:
    """Stop with a clear message when a selection set names no folder, or holds an evaluation image (``HELD_OUT``)."""
    for name in names:
        found = selection_folders(root, name)
        if not found or not (root / found[0]).is_dir():
            raise FileNotFoundError(f"selection set {root / name} not found; pass a folder (or a glob of folders) "
                                    "under the data root")
        for held in HELD_OUT:
            if shared_images(root, [name], held):
                raise ValueError(f"selection set {name} holds images of the evaluation set {held}: models are "
                                 "never chosen on held-out data; choose on CBSD68 or the COCO photos")


def check_untrained(runs: list[Path], root: Path, selections: list[str]) -> None:
    """Refuse a selection set any of whose images one of the run folders trained on."""
    for run in runs:
        trained_on = yaml.safe_load((run / "config.yaml").read_text())["data"]["train"]
        for selection in selections:
            if shared_images(root, trained_on, selection):
                raise ValueError(f"selection set {selection} is in the data.train of {run}; choose on a set "
                                 "it never trained on (e.g. train with a data.train that leaves it out)")


def pick_student(folder: str | Path, task: str, variant: str, teacher: str | Path, selection: str,
                 overrides: list[str] | None = None, limit: int = 0, threads: int = 0,
                 also: list[str] | None = None) -> dict[str, Any]:
    """Score each seed of ``variant`` in ``folder`` (``<ablate --out>/<task>``) on ``selection``; return the pick.

    The report holds input, teacher and per-seed PSNR per condition, each seed's gain recovery (mean over
    conditions of (INT8 - input) / (FP32 - input), as the ablation tables it) and ``run``, the picked seed's
    run folder for ``qdr-train release``; ``also`` the picked seed's scores on each further set.
    """
    folder = Path(folder)
    students = _students(folder, variant, Path(teacher))
    cfg = load_config(task, CONFIG_DIR / "int8.yaml", list(overrides or []) + [f"data.val={selection}"])
    root = data_root(cfg["data"]["root"])
    require_sets(root, [selection, *(also or [])])
    runs = {seed: folder / f"seed{seed}" / "runs" / variant for seed in students}
    check_untrained(list(runs.values()), root, [selection, *(also or [])])
    reference = reference_scores(task, Path(teacher), folder / "pick",
                                 list(overrides or []) + [f"data.val={selection}"], limit, threads)
    conditions = list(reference)
    seeds: dict[int, dict[str, Any]] = {}
    for seed, stored in students.items():
        reports = condition_reports(cfg, stored["onnx"], root / selection, limit, threads)
        psnr = {c: report["mean"]["output"]["psnr"] for c, report in reports.items()}
        recovery = {c: gain_recovery(psnr[c], reference[c]["input"]["psnr"], reference[c]["fp32"]["psnr"])
                    for c in conditions}
        seeds[seed] = {"psnr": psnr, "mean_psnr": mean(psnr.values()), "gain_recovery": mean(recovery.values()),
                       "per_condition_recovery": recovery}
    best = max(seeds, key=lambda s: seeds[s]["gain_recovery"])
    model = students[best]["onnx"]
    return {"task": task, "variant": variant, "selection": selection, "images": reference[conditions[0]]["images"],
            "input": {c: reference[c]["input"]["psnr"] for c in conditions},
            "fp32": {c: reference[c]["fp32"]["psnr"] for c in conditions},
            "seeds": seeds, "seed": best, "run": str(runs[best]),
            "clean": clean_frames(cfg, model, root / selection, limit, threads),
            "also": {name: set_scores(cfg, model, root / name, limit, threads) for name in also or []}}


def set_scores(cfg: dict[str, Any], model: str | Path, clean: Path, limit: int, threads: int) -> dict[str, Any]:
    """One model on one further selection set: input and output PSNR per condition, their mean, clean frames."""
    reports = condition_reports(cfg, model, clean, limit, threads)
    psnr = {c: report["mean"]["output"]["psnr"] for c, report in reports.items()}
    return {"images": len(next(iter(reports.values()))["images"]),
            "input": {c: report["mean"]["input"]["psnr"] for c, report in reports.items()},
            "psnr": psnr, "mean_psnr": mean(psnr.values()),
            "clean": clean_frames(cfg, model, clean, limit, threads)}


def clean_frames(cfg: dict[str, Any], model: str | Path, clean: Path, limit: int, threads: int) -> dict[str, Any]:
    """How ``model`` treats the set's photos given as they are: how many come back bit for bit, and which do not."""
    report = evaluate({**cfg, "task": "clean"}, model, clean_dir=clean, limit=limit, baseline=False, threads=threads,
                      progress=False)
    changed = [image["name"] for image in report["images"] if image["mse"] > 0]
    return {"images": len(report["images"]), "exact": len(report["images"]) - len(changed), "changed": changed,
            "psnr_pooled": report["psnr_pooled"], "changed_pixels": report["changed_pixels"]}


def compare_to_shipped(report: dict[str, Any], shipped: dict[str, Any], max_drop: float = MAX_DROP_DB
                       ) -> tuple[bool, str]:
    """Whether the picked student beats the shipped one's pick report on the same selection sets, and why.

    Better means a higher mean PSNR over the degraded conditions, no condition more than ``max_drop`` dB
    below the shipped student's (a mean can buy one condition with another: auto_n2 gained on noise
    and lost 0.6-0.8 dB on haze on Kodak24) and at least as many clean photos passed bit for bit. On each
    ``also`` set the same holds, except that a mean equal to the shipped student's is enough: those sets
    guard against a loss the first set misses. A shipped report of another set or task, or without a
    clean count or an ``also`` set's scores, is an error, not a pass.
    """
    if "clean" not in shipped:
        raise ValueError("the shipped pick report has no 'clean' block (made before pick counted clean photos), so "
                         "the gate cannot compare clean frames; rerun qdr-train pick --json on the shipped "
                         "student's ablation to rewrite it")
    same = ("task", "selection", "images")
    if any(report[k] != shipped.get(k) for k in same) or set(report["input"]) != set(shipped.get("input", {})):
        raise ValueError("the shipped pick report was made on another set or task ("
                         + ", ".join(f"{k} {shipped.get(k)!r} vs {report[k]!r}" for k in same)
                         + "); rerun qdr-train pick for the shipped model on the same set")
    _same_frames(report["input"], shipped["input"], report["selection"])
    picked = {**report["seeds"][report["seed"]], "clean": report["clean"]}
    before = {**shipped["seeds"][str(shipped["seed"])], "clean": shipped["clean"]}
    ok, lines = holds(picked, before, f"{report['images']} images of {report['selection']}", True, max_drop)
    lines[0] = f"picked seed {report['seed']}: {lines[0]}"
    for name, scores in report.get("also", {}).items():
        old = shipped.get("also", {}).get(name)
        if old is None or old["images"] != scores["images"]:
            raise ValueError(f"the shipped pick report has no scores on {name} ({scores['images']} images); rerun "
                             f"qdr-train pick --also {name!r} --json on the shipped student's ablation to add them")
        _same_frames(scores["input"], old.get("input", {}), name)
        kept, more = holds(scores, old, f"{scores['images']} images of {name}", False, max_drop)
        ok, lines = ok and kept, lines + more
    return ok, "\n".join(lines)


def _same_frames(new: dict[str, float], old: dict[str, float], where: str) -> None:
    """Refuse a comparison of scores on different degraded frames: their input PSNRs are the frames' fingerprint.

    Other ``levels`` or another ``eval_seed`` make other inputs of the same photos, easier or harder; a
    student scored on easier frames than the shipped one would pass the gate on the frames alone.
    """
    moved = {c: new[c] - old.get(c, float("nan")) for c in new}
    if any(not abs(d) <= INPUT_TOLERANCE_DB for d in moved.values()):
        raise ValueError(f"the shipped pick report's inputs on {where} differ from these ("
                         + ", ".join(f"{c} {d:+.4f} dB" for c, d in moved.items()) + "): scored at other levels or "
                         "another eval_seed; rerun qdr-train pick for the shipped student with the same settings")


def holds(new: dict[str, Any], old: dict[str, Any], where: str, strict: bool, max_drop: float,
          whose: str = "the shipped student's") -> tuple[bool, list[str]]:
    """Apply the gate on one set: a higher (``strict``) or equal mean, no condition ``max_drop`` dB down, clean kept."""
    gain = new["mean_psnr"] - old["mean_psnr"]
    ok = gain > 0 if strict else gain >= 0
    word = ("better" if ok else "NOT better") if strict else ("not lower" if ok else "LOWER")
    lines = [f"mean PSNR {new['mean_psnr']:.3f} dB on {where} against {whose} "
             f"{old['mean_psnr']:.3f} dB ({gain:+.3f}): {word}"]
    fell = {c: new["psnr"][c] - old["psnr"][c] for c in new["psnr"] if new["psnr"][c] < old["psnr"][c] - max_drop}
    lines.append(f"  no condition more than {max_drop:.2f} dB below {whose}: "
                 + ("kept" if not fell else "FELL: " + ", ".join(f"{c} {d:+.2f} dB" for c, d in fell.items())))
    now, before = new["clean"], old["clean"]
    kept = now["exact"] >= before["exact"]
    lost = sorted(set(now["changed"]) - set(before["changed"]))
    lines.append(f"  clean frames passed bit for bit: {now['exact']} of {now['images']} against {whose} "
                 f"{before['exact']} of {before['images']}: {'kept' if kept else 'FEWER'}"
                 + (f" (now changed: {', '.join(lost)})" if lost else ""))
    return ok and not fell and kept, lines


def format_pick(report: dict[str, Any]) -> str:
    """Markdown: PSNR per condition for input, teacher and each seed, with each seed's gain recovery."""
    conditions = list(report["input"])
    lines = [f"### {report['task']} INT8 {report['variant']}: seed picked on {report['images']} images of "
             f"{report['selection']}", "",
             "| model | " + " | ".join(conditions) + " | mean | gain recovery |",
             "|---|" + "---|" * (len(conditions) + 2)]
    for name, psnr in (("degraded input", report["input"]), ("FP32 teacher", report["fp32"])):
        lines.append(f"| {name} | " + " | ".join(f"{psnr[c]:.2f}" for c in conditions)
                     + f" | {mean(psnr.values()):.2f} | |")
    for seed, row in sorted(report["seeds"].items()):
        mark = "**" if seed == report["seed"] else ""
        lines.append(f"| {mark}seed {seed}{mark} | " + " | ".join(f"{row['psnr'][c]:.2f}" for c in conditions)
                     + f" | {row['mean_psnr']:.2f} | {mark}{100 * row['gain_recovery']:.2f}%{mark} |")
    clean = report["clean"]
    lines += ["", f"Clean photos as input, seed {report['seed']}: {clean['exact']} of {clean['images']} come back "
              f"bit for bit (pooled PSNR {clean['psnr_pooled']:.2f} dB, {100 * clean['changed_pixels']:.3f}% of "
              "pixels changed)" + (f"; changed: {', '.join(clean['changed'])}" if clean["changed"] else "")]
    for name, scores in report.get("also", {}).items():
        lines += ["", f"Seed {report['seed']} on {scores['images']} images of {name} as well:", "",
                  "| model | " + " | ".join(conditions) + " | mean |", "|---|" + "---|" * (len(conditions) + 1)]
        for row, psnr in (("degraded input", scores["input"]), (f"seed {report['seed']}", scores["psnr"])):
            lines.append(f"| {row} | " + " | ".join(f"{psnr[c]:.2f}" for c in conditions)
                         + f" | {mean(psnr.values()):.2f} |")
        clean = scores["clean"]
        lines += ["", f"Clean photos as input: {clean['exact']} of {clean['images']} come back bit for bit"
                  + (f"; changed: {', '.join(clean['changed'])}" if clean["changed"] else "")]
    return "\n".join(lines) + "\n"
