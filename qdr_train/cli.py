"""``qdr-train MODE [options] [key=value ...]``: splits arguments and calls the API of the same name."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from qdr_train.config import AUTO, AUTO_EVAL, CONDITIONS, ConfigError, load_config


def _fit(args: argparse.Namespace) -> int:
    from qdr_train.engine.trainer import Trainer
    cfg = load_config(args.task, args.config, args.overrides)
    trainer = Trainer(cfg, resume=args.resume)
    run_dir = trainer.fit()
    if trainer.main:
        print(f"run folder: {run_dir}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from qdr_train.data.datasets import data_root
    from qdr_train.evaluation.evaluator import evaluate, format_table
    if args.task == AUTO:
        raise ConfigError(f"eval scores one condition at a time: --task {'|'.join(CONDITIONS)} "
                          f"(auto is scored on {', '.join(AUTO_EVAL)} and clean)")
    cfg = load_config(args.task, args.config, args.overrides)
    clean = args.clean or (None if args.pairs else data_root(cfg["data"]["root"]) / cfg["data"]["val"])
    report = evaluate(cfg, args.model, clean_dir=clean, pairs_dir=args.pairs, severity=args.severity,
                      limit=args.limit, baseline=not args.no_baseline, threads=args.threads, jpeg_quality=args.jpeg)
    return _show(report, format_table(report), args.json)


def _show(report: dict[str, Any], text: str, json_path: str | None) -> int:
    """Print a report's text and write the report as JSON when asked (the eval-like modes' ending)."""
    from qdr_train.evaluation.evaluator import write_json
    print(text)
    if json_path:
        write_json(report, json_path)
        print(f"wrote {json_path}")
    return 0


def _conditions(args: argparse.Namespace) -> int:
    from qdr_train.data.datasets import data_root
    from qdr_train.evaluation.condition_eval import evaluate_conditions, format_conditions
    cfg = load_config("auto", args.config, args.overrides)
    clean = args.clean or data_root(cfg["data"]["root"]) / cfg["data"]["val"]
    report = evaluate_conditions(cfg, args.model, clean, args.seeds, args.limit, args.threads)
    return _show(report, format_conditions(report), args.json)


def _real_lowlight(args: argparse.Namespace) -> int:
    from qdr_train.data.datasets import data_root
    from qdr_train.evaluation.evaluator import load_restorer
    from qdr_train.evaluation.real_lowlight import score_real_lowlight
    folder = args.folder or data_root() / "lowlight_real" / "DICM"
    report = score_real_lowlight(load_restorer(args.model, args.threads), folder, args.mosaic)
    report["model"] = str(args.model)
    if args.mosaic:
        print(f"wrote {args.mosaic}")
    return _show(report, json.dumps(report["summary"], indent=2), args.json)


def _export(args: argparse.Namespace) -> int:
    from qdr_train.engine.checkpoint import safe_load
    from qdr_train.export.onnx import export_model_file
    run_cfg = Path(args.model).parent / "config.yaml"
    config = None
    if run_cfg.exists():
        import yaml
        config = yaml.safe_load(run_cfg.read_text())
    safe_load(args.model)
    for path in export_model_file(args.model, args.out, config):
        print(f"wrote {path}")
    return 0


def _release(args: argparse.Namespace) -> int:
    from qdr_train.release.release import release
    card = release(args.run, args.models, args.results, args.command, args.threads, args.eval_data)
    print(json.dumps({k: card[k] for k in ("task", "precision", "iterations", "mean", "files")}, indent=2))
    return 0


def _ablate(args: argparse.Namespace) -> int:
    from qdr_train.release.ablation import AblationError, format_ablation, format_summary, run_ablation, summarize
    try:
        results = run_ablation(args.task, args.out, args.overrides, args.variants, args.seeds, args.teacher,
                               args.limit, args.threads, args.jobs, args.report_only)
    except AblationError as exc:
        print(f"qdr-train ablate: {exc}", file=sys.stderr)
        return 1
    print("\n".join(format_ablation(r) for r in results))
    if len(results) > 1:
        print(format_summary(summarize(results)))
    return 0


def _pick(args: argparse.Namespace) -> int:
    from qdr_train.release.pick import MAX_DROP_DB, compare_to_shipped, format_pick, pick_student
    # read before the pick: --against and --json may name the same file (release_auto.sh)
    shipped = json.loads(Path(args.against).read_text()) if args.against else None
    report = pick_student(args.ablation, args.task, args.variant, args.teacher, args.data, args.overrides,
                          args.limit, args.threads, args.also)
    _show(report, format_pick(report), args.json)
    print(f"run folder: {report['run']}")
    if shipped is None:
        return 0
    better, verdict = compare_to_shipped(report, shipped, MAX_DROP_DB if args.max_drop is None else args.max_drop)
    print(verdict)
    return 0 if better else 3


def _screen(args: argparse.Namespace) -> int:
    from qdr_train.release.pick import MAX_DROP_DB
    from qdr_train.release.screen import format_screen, screen, verdicts
    report = screen(args.models, args.data, args.also, args.against, args.task, args.limit, args.threads)
    _show(report, format_screen(report), args.json)
    if args.against is None:
        return 0
    ok, verdict = verdicts(report, MAX_DROP_DB if args.max_drop is None else args.max_drop)
    print(verdict)
    return 0 if ok else 3


def _average(args: argparse.Namespace) -> int:
    from qdr_train.engine.average import average_runs
    info = average_runs(args.runs, args.out)
    print(f"wrote {args.out}/model.pt: the mean of {len(args.runs)} runs' weights ({info['step']} steps among them); "
          f"screen it with qdr-train screen {args.out}/model.pt --against <the shipped model> --data <selection set>")
    return 0


def _check_int8(args: argparse.Namespace) -> int:
    from qdr_train.export.check import check_int8
    report = check_int8(args.path, cpu=args.cpu)
    print(report.summary())
    return 0 if report.ok else 1


def _build_engine(args: argparse.Namespace) -> int:
    from qdr_ros.inference.base import BackendUnavailable
    from qdr_ros.inference.tensorrt_build import EngineBuildError, ShapeProfile, build_or_load_engine

    profile = ShapeProfile(args.min, args.opt, args.max)
    try:
        engine = build_or_load_engine(args.onnx, args.cache_dir, profile, args.device, fp16=not args.no_fp16,
                                      dla_core=args.dla_core, force_rebuild=args.force)
    except EngineBuildError as exc:
        print(f"qdr-train build-engine: {exc}", file=sys.stderr)
        return 1
    except BackendUnavailable as exc:
        print(f"qdr-train build-engine: {exc}\nThe INT8 ONNX is TensorRT-ready; on the robot run this command there, "
              f"or: trtexec --onnx={args.onnx} --int8 --fp16 --saveEngine=efm_int8.engine", file=sys.stderr)
        return 3
    print(f"engine: {engine}")
    return 0


def _frame_size(text: str) -> tuple[int, int]:
    """Parse ``HxW`` (e.g. 480x640) into two positive ints; argparse reports anything else with the option name."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HxW, e.g. 480x640") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: height and width must be positive")
    return h, w


def _count(text: str) -> int:
    """Parse a non-negative image count (0 = all)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give N >= 0 (0 = every image)")
    return value


def _info(args: argparse.Namespace) -> int:
    from qdr_train.evaluation.budget import measure_budget
    cfg = load_config(None, args.config, args.overrides)
    report = measure_budget(cfg["model"], args.model, args.height, args.width, args.threads, args.runs)
    for key, value in report.items():
        print(f"{key:>24}: {value}")
    return 0 if report["within_budget"] else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qdr-train", description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="YAML file overriding the defaults")
        p.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. train.iters=2000")

    fit = sub.add_parser("fit", help="train a stage (fp32 teacher or an INT8 recipe)")
    fit.add_argument("--task", help="denoise | derain | lowlight | dehaze")
    fit.add_argument("--resume", action="store_true", help="continue the run from its last.pt")
    with_config(fit)
    fit.set_defaults(func=_fit)

    ev = sub.add_parser("eval", help="PSNR/SSIM of input, model and classical baseline")
    ev.add_argument("--task", required=True)
    ev.add_argument("--model", required=True, nargs="+",
                    help="model file / checkpoint (.pt) or ONNX file (FP32 or INT8); several: a chain, in turn")
    src = ev.add_mutually_exclusive_group()
    src.add_argument("--clean", help="clean images, degraded deterministically (default: data.val, Kodak24)")
    src.add_argument("--pairs", help="folder with input/ and target/ (real degraded pairs)")
    ev.add_argument("--severity", type=float, help="0..1 in the training range instead of the documented level")
    ev.add_argument("--limit", type=_count, default=0, help="first N images only")
    ev.add_argument("--jpeg", type=int, metavar="QUALITY",
                    help="take each clean photo JPEG-compressed at QUALITY as the reference (a compressed camera)")
    ev.add_argument("--no-baseline", action="store_true", help="skip the classical baseline")
    ev.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: physical cores)")
    ev.add_argument("--json", help="write the full report (per image and mean) here")
    with_config(ev)
    ev.set_defaults(func=_eval)

    co = sub.add_parser("conditions", help="recall of a model's condition output per label, every condition x seeds")
    co.add_argument("--model", required=True, help="ONNX file with a condition output (e.g. models/auto/efm_int8.onnx)")
    co.add_argument("--clean", help="clean images (default: data.val, Kodak24)")
    co.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    co.add_argument("--limit", type=_count, default=0)
    co.add_argument("--threads", type=int, default=0)
    co.add_argument("--json", help="write every frame's labels and the summary here")
    with_config(co)
    co.set_defaults(func=_conditions)

    rl = sub.add_parser("real-lowlight", help="brightening and extra clipping on real dark photos (DICM, no reference)")
    rl.add_argument("--model", required=True, help="model file (.pt) or ONNX file")
    rl.add_argument("--folder", help="dark photos (default: <data>/lowlight_real/DICM)")
    rl.add_argument("--mosaic", help="write an input | output mosaic here, e.g. out/dicm_auto.jpg")
    rl.add_argument("--json", help="write the per-image numbers and the summary here")
    rl.add_argument("--threads", type=int, default=0)
    rl.set_defaults(func=_real_lowlight)

    ex = sub.add_parser("export", help="write ONNX (FP32, or INT8 Q/DQ + CPU twin for a quantized model)")
    ex.add_argument("--model", required=True, help="qdr model file or checkpoint (.pt)")
    ex.add_argument("--out", required=True, help="output folder, e.g. models/denoise")
    ex.set_defaults(func=_export)

    rel = sub.add_parser("release", help="ship a finished run: models/<task>/ files, ONNX, evaluation, model card")
    rel.add_argument("--run", required=True, help="run folder holding model.pt and config.yaml")
    rel.add_argument("--models", default="models")
    rel.add_argument("--results", default="results/eval")
    rel.add_argument("--command", default="", help="the training command, recorded in the model card")
    rel.add_argument("--threads", type=int, default=0)
    rel.add_argument("--eval-data", default="", help="held-out set under the data root (default: the run's data.val)")
    rel.set_defaults(func=_release)

    ab = sub.add_parser("ablate", help="train + export + evaluate every INT8 variant per task and seed; writes tables")
    ab.add_argument("--task", required=True, nargs="+", help="one or more of denoise derain lowlight dehaze")
    ab.add_argument("--teacher", help="FP32 model file (one task only; default models/<task>/efm_fp32.pt)")
    ab.add_argument("--out", default="results/ablation", help="output root; one folder per task (default %(default)s)")
    ab.add_argument("--variants", nargs="+", help="subset of: ptq qat qat_out qat_dec qdr_fixed qdr")
    ab.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed, table shows mean and std")
    ab.add_argument("--jobs", type=int, default=1, help="runs in parallel processes (each gets cores/jobs threads)")
    ab.add_argument("--report-only", action="store_true", help="table the results already there; train nothing")
    ab.add_argument("--limit", type=_count, default=0, help="evaluate on the first N images only")
    ab.add_argument("--threads", type=int, default=0, help="torch and ONNX Runtime threads per run (0: cores/jobs)")
    ab.add_argument("overrides", nargs="*", help="key=value config overrides for every variant")
    ab.set_defaults(func=_ablate)

    pk = sub.add_parser("pick", help="of an ablation's seeds, the INT8 student that keeps most of its teacher")
    pk.add_argument("--ablation", required=True, help="an ablation's task folder, e.g. results/ablation/auto/auto")
    pk.add_argument("--task", required=True, help="the ablation's task (auto is scored on its six conditions)")
    pk.add_argument("--teacher", required=True, help="the FP32 model file the students distilled")
    pk.add_argument("--variant", default="qdr", help="which variant's seeds to choose from (default %(default)s)")
    pk.add_argument("--data", required=True, help="selection set under the data root: not trained on, not reported")
    pk.add_argument("--also", nargs="+", default=[], metavar="SET",
                    help="further selection sets (a folder or a quoted glob of folders under the data root) the "
                         "picked student is scored on; with --against it may not fall below the shipped one there")
    pk.add_argument("--limit", type=_count, default=0, help="score the first N images of each set only")
    pk.add_argument("--threads", type=int, default=0)
    pk.add_argument("--json", help="also write the report here")
    pk.add_argument("--against", help="the shipped student's pick report: exit 3 unless the pick beats it")
    pk.add_argument("--max-drop", type=float,
                    help="with --against: exit 3 too if any condition falls more than this many dB below the shipped "
                         "student's (default: MAX_DROP_DB of qdr_train/release/pick.py, 0.3)")
    pk.add_argument("overrides", nargs="*", help="key=value overrides the ablation ran with (levels, seed)")
    pk.set_defaults(func=_pick)

    sc = sub.add_parser("screen", help="FP32 candidates on the release gate's selection sets, before a release")
    sc.add_argument("models", nargs="+", help="FP32 model files or runs' model.pt to compare")
    sc.add_argument("--task", default="auto", help="the task they are scored on (auto: its six conditions)")
    sc.add_argument("--data", required=True, help="selection set under the data root: not trained on, not reported")
    sc.add_argument("--also", nargs="+", default=[], metavar="SET",
                    help="further selection sets (a folder or a quoted glob of folders under the data root)")
    sc.add_argument("--against", help="the shipped FP32 model: exit 3 unless every other model holds against it "
                                      "by the release gate's rules on every set")
    sc.add_argument("--max-drop", type=float,
                    help="with --against: how many dB one condition may fall (default: pick's, 0.3)")
    sc.add_argument("--limit", type=_count, default=0, help="score the first N images of each set only")
    sc.add_argument("--threads", type=int, default=0)
    sc.add_argument("--json", help="also write the report here")
    sc.set_defaults(func=_screen)

    av = sub.add_parser("average", help="average the weights of FP32 runs of one graph into a new run folder")
    av.add_argument("runs", nargs="+", help="run folders (model.pt + config.yaml), e.g. fine-tunes of one model")
    av.add_argument("--out", required=True, help="the new run folder, e.g. runs/auto_avg")
    av.set_defaults(func=_average)

    chk = sub.add_parser("check-int8", help="prove an INT8 ONNX follows TensorRT's Q/DQ rules (exit 0 = holds)")
    chk.add_argument("path")
    chk.add_argument("--cpu", action="store_true", help="check the uint8 CPU twin (zero point 128) instead")
    chk.set_defaults(func=_check_int8)

    eng = sub.add_parser("build-engine", help="build (or find in the cache) the TensorRT INT8 engine of a Q/DQ ONNX")
    eng.add_argument("onnx")
    eng.add_argument("--cache-dir", help="engine cache (default $QDR_ENGINE_CACHE or ~/.cache/qdr/engines)")
    eng.add_argument("--min", type=_frame_size, default="64x64", help="smallest frame HxW of the profile")
    eng.add_argument("--opt", type=_frame_size, default="480x640", help="frame HxW TensorRT tunes for")
    eng.add_argument("--max", type=_frame_size, default="1080x1920", help="largest frame HxW of the profile")
    eng.add_argument("--device", type=int, default=0, help="CUDA device id the engine is built on (and for)")
    eng.add_argument("--dla-core", type=int, default=-1, help="build for this DLA core (Jetson); -1 = GPU")
    eng.add_argument("--force", action="store_true", help="rebuild even when the cache holds the engine")
    eng.add_argument("--no-fp16", action="store_true",
                     help="keep float layers at FP32 (TensorRT without strong typing only; strongly typed "
                     "networks take every precision from the model)")
    eng.set_defaults(func=_build_engine)

    info = sub.add_parser("info", help="parameters, MACs and ONNX Runtime FPS (FP32 and INT8) against the budget")
    info.add_argument("--model", help="model file (.pt); default: the configured architecture, untrained")
    info.add_argument("--height", type=int, default=480)
    info.add_argument("--width", type=int, default=640)
    info.add_argument("--threads", type=int, default=0)
    info.add_argument("--runs", type=int, default=20)
    with_config(info)
    info.set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"qdr-train {args.mode}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
