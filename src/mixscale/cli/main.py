"""``mixscale``: one executable, subcommands over :mod:`mixscale.api`.

Only argparse is imported at start-up, so ``mixscale --help`` answers at once;
each command imports what it needs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a network from a YAML config",
                       description="Train a network. The resolved config, checkpoints (best, last), "
                                   "logs/metrics.csv and model.safetensors go to the config's run_dir.")
    p.add_argument("config", help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.SUB=VALUE",
                   help="override a config value (repeatable), e.g. --set trainer.max_epochs=5")
    p.add_argument("--resume", action="store_true", help="continue the run in run_dir from its last checkpoint")
    p.add_argument("--members", type=int, default=None, metavar="N",
                   help="train N ensemble members (seeds differ) and write run_dir/ensemble.safetensors")
    p.add_argument("--bootstrap", action="store_true",
                   help="each member also trains on its own block bootstrap of the labelled data")


def _add_slice_axis(p, text: str) -> None:
    """``--axis`` (and its long name ``--slice-axis``), the API's ``slice_axis``."""
    p.add_argument("--axis", "--slice-axis", dest="slice_axis", type=int, default=None, help=text)


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="apply a model file to an image, stack or volume",
                       description="Apply a model file. An output ending in .zarr is written block by block "
                                   "with bounded memory: resumable (rerun the same command), on Dask "
                                   "(--scheduler), shardable over job arrays (--num-parts/--part-id).")
    p.add_argument("model", help="model.safetensors written by 'mixscale train'")
    p.add_argument("input", help="image address: file.tif, file.h5:/path, file.zarr, 'slices/*.png', ...")
    p.add_argument("-o", "--output", required=True, help="output address (any supported format)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default: cpu)")
    _add_slice_axis(p, "for a 2D model and a 3D input: predict slice by slice along this axis")
    p.add_argument("--batch-size", type=int, default=1, help="slices per forward pass (default: 1)")
    p.add_argument("--probabilities", action="store_true", help="write class probabilities instead of labels")
    p.add_argument("--ome-zarr", default=None, metavar="OUT",
                   help="with a .zarr output: once complete, also write it as OME-Zarr (NGFF 0.5, pyramid) to OUT "
                        "(as 'mixscale ome-zarr' does, with the input's voxel size)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--tile-shape", type=int, nargs="+", default=None, metavar="N",
                   help="predict in tiles of this shape (one int, or one per axis), blended, with the "
                        "network's receptive field as context: bounded memory, same result")
    p.add_argument("--overlap", type=float, default=0.25, help="fraction of a tile shared with neighbours")
    p.add_argument("--blend", choices=["gaussian", "constant"], default="gaussian")
    p.add_argument("--channel-axis", type=int, default=None,
                   help="axis of the input holding channels (multi-channel models; default 0)")
    p.add_argument("--tta", action="store_true", help="test-time augmentation: average over flips/rotations")
    p.add_argument("--uncertainty", action="store_true",
                   help="also write prob_mean, prob_std, entropy, mutual_info (an ensemble's members, or the "
                        "--tta transforms of one model); needs a .zarr output")
    p.add_argument("--sets", action="store_true",
                   help="also write conformal prediction sets (bitmask) and set_size; needs a model calibrated "
                        "with 'mixscale calibrate' and a .zarr output")
    p.add_argument("--risk-mask", action="store_true",
                   help="also write risk_mask, the class mask calibrated with 'mixscale calibrate --fnr-class' "
                        "(its mean false-negative rate is controlled); needs a .zarr output")
    p.add_argument("--lower-bound", type=float, nargs=2, default=None, metavar=("K", "T"),
                   help="also write lower_bound: class c where mean - K * std > T over an ensemble's members "
                        "(or the --tta transforms); needs a .zarr output")
    g = p.add_argument_group("block-wise prediction (output *.zarr)")
    g.add_argument("--block-shape", type=int, nargs="+", default=None, metavar="N",
                   help="output block (= zarr shard) per spatial axis (default: a few slices x the plane, "
                        "or 128-cubes for 3D models)")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="threads (default), sync, processes, or a dask.distributed address tcp://host:8786")
    g.add_argument("--workers", dest="blocks_in_flight", type=int, default=None,
                   help="blocks computed at once by local schedulers (default 2)")
    g.add_argument("--num-parts", type=int, default=1, help="split the blocks into this many parts (job arrays)")
    g.add_argument("--part-id", type=int, default=0, help="which part this process computes (0-based)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_ensemble(sub) -> None:
    p = sub.add_parser("ensemble", help="combine model files into one ensemble file",
                       description="Combine model files of one task, classes, channels and spatial dims (any "
                                   "architectures) into one ensemble file, accepted wherever a model file is.")
    p.add_argument("members", nargs="+", help="model files (at least 2)")
    p.add_argument("-o", "--output", required=True, help="ensemble file to write (*.safetensors)")
    p.add_argument("--combine", choices=["probabilities", "logits"], default="probabilities",
                   help="mean of the members' probabilities (default) or softmax of the mean of their logits")


def _add_calibrate(sub) -> None:
    p = sub.add_parser("calibrate", help="temperature scaling and conformal prediction sets on labelled images",
                       description="Fit temperature scaling (NLL) and a split-conformal threshold on held-out "
                                   "labelled pixels; write a calibrated copy of the model file. Sets then hold "
                                   "the true class of a new pixel with probability >= 1 - alpha.")
    p.add_argument("model", help="model or ensemble file")
    p.add_argument("images", help="calibration image address (a stack counts as one; use --axis for 2D models)")
    p.add_argument("labels", help="its labels (unlabelled pixels are skipped)")
    p.add_argument("-o", "--output", required=True, help="calibrated model file to write")
    p.add_argument("--alpha", type=float, default=0.1, help="miscoverage of the sets (default: 0.1)")
    p.add_argument("--score", choices=["lac", "aps", "raps"], default="lac", help="non-conformity score")
    p.add_argument("--per-class", action="store_true", help="class-conditional thresholds (coverage per class)")
    p.add_argument("--no-temperature", action="store_true", help="skip temperature scaling")
    p.add_argument("--label-convention", choices=["dense", "scribble"], default="dense")
    _add_slice_axis(p, "for a 2D model on a stack: the slicing axis")
    p.add_argument("--allow-training-images", action="store_true", help="calibrate on training images anyway")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--randomized", action="store_true", help="randomised APS/RAPS scores (coverage exactly 1 - alpha)")
    g = p.add_argument_group("conformal risk control of a class mask (predict --risk-mask)")
    g.add_argument("--fnr-class", default=None, metavar="CLASS",
                   help="class (name or index) whose mask p >= 1 - lambda keeps a mean false-negative rate")
    g.add_argument("--fnr-alpha", type=float, default=0.1, help="the false-negative rate to keep to (default 0.1)")
    g.add_argument("--fnr-tile", type=int, nargs="+", default=None, metavar="N",
                   help="control the rate over tiles of this shape instead of whole images (slices)")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="metrics of a prediction against ground truth (labelled pixels only)",
                       description="Metrics on labelled pixels. PRED may be labels, class probabilities, or a "
                                   "block-wise output store (out.zarr): with probabilities the report adds "
                                   "calibration (ECE, MCE, Brier, NLL, AUROC/AURC of entropy, 1 - max p, and "
                                   "of mutual_info and std from an --uncertainty store).")
    p.add_argument("pred")
    p.add_argument("target")
    p.add_argument("--task", choices=["segmentation", "regression"], default="segmentation")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--ignore-index", type=int, default=-1)
    p.add_argument("--label-convention", choices=["dense", "scribble"], default="dense",
                   help="dense: classes 0..C-1, unlabelled = ignore index; scribble: 0 = unlabelled, 1..K")
    p.add_argument("--data-range", type=float, default=None, help="required for regression (PSNR, SSIM)")
    p.add_argument("-o", "--output", action="append", default=[],
                   help="write metrics to .json or .csv (repeatable); an existing file needs --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace existing -o files")
    p.add_argument("--figures", default=None, metavar="DIR",
                   help="write reliability.png (pred holds probabilities) and, with --image and an "
                        "--uncertainty store, uncertainty_panel.png")
    p.add_argument("--image", default=None, help="the input image, for the uncertainty panel")
    p.add_argument("--panel-slice", type=int, default=None, help="slice of a volume for the panel (default: middle)")


def _add_detect(sub) -> None:
    p = sub.add_parser("detect", help="find objects (points) with a detection model",
                       description="Score the patch around every pixel with a detection model (patch classifier), "
                                   "keep the peaks of the object probability: a CSV of y,x (or z,y,x), class, score.")
    p.add_argument("model", help="model.safetensors trained with task 'detection'")
    p.add_argument("input", help="image address: file.tif, file.h5:/path, file.zarr, ...")
    p.add_argument("-o", "--output", required=True,
                   help="points CSV to write, or a RELION STAR file (ending in .star)")
    p.add_argument("--threshold", type=float, default=0.5, help="minimum object probability (default: 0.5)")
    p.add_argument("--min-distance", type=float, default=3.0, help="minimum pixels between detections (default: 3)")
    p.add_argument("--stride", type=int, default=1, help="score every n-th pixel only (default: 1, every pixel)")
    p.add_argument("--batch-size", type=int, default=1024, help="patches per forward pass with --stride > 1")
    p.add_argument("--tile-shape", type=int, nargs="+", default=None, metavar="N",
                   help="compute the score map in tiles of this shape (bounded memory, same result)")
    p.add_argument("--tta", action="store_true", help="average the score map over flips/rotations")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default: cpu)")
    p.add_argument("--channel-axis", type=int, default=None, help="axis of the input holding channels")
    p.add_argument("--star", choices=("relion5", "relion4"), default=None,
                   help="STAR convention of a .star output: relion5 (Angstrom from the tomogram centre; default "
                        "for volumes) or relion4 (pixels; the only one for 2D images)")
    p.add_argument("--voxel-size", type=float, nargs="+", default=None, metavar="A",
                   help="Angstrom per voxel for --star relion5: one number or Z Y X (default: the input's header)")
    p.add_argument("--binning", type=float, default=1.0,
                   help="--star relion4: pixels of the written coordinates per input voxel (default: 1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")


def _add_simulate(sub) -> None:
    p = sub.add_parser("simulate", help="simulated data with ground truth (tomography of foams)")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    t = kinds.add_parser("tomo", help="foam phantoms, analytic projections, FBP/SIRT/TV reconstructions -> zarr",
                         description="Foam phantoms (a cylinder minus spherical voids), parallel-beam projections "
                                     "computed from the spheres, FBP from the few and the many angles, SIRT and "
                                     "TV baselines tuned on object 1, and subset reconstructions for "
                                     "Noise2Inverse, into one resumable zarr store (object0/, object1/, ...).")
    t.add_argument("--out", required=True, help="zarr store to write (*.zarr); rerun the same command to resume")
    t.add_argument("--objects", type=int, default=3, help="foams (0: train, 1: validate and tune, 2: test)")
    t.add_argument("--shape", type=int, nargs=3, default=[16, 128, 128], metavar=("Z", "Y", "X"),
                   help="slices and their size per object (Y == X; default: 16 128 128)")
    t.add_argument("--angles", type=int, nargs=2, default=[64, 1024], metavar=("FEW", "MANY"),
                   help="projection counts of the sparse scan and of the reference scan (default: 64 1024)")
    t.add_argument("--photons", type=float, default=None, help="incoming photons per detector bin (Poisson "
                                                                  "noise on every scan; default: noise-free)")
    t.add_argument("--angular-range", type=float, default=180.0, metavar="DEG",
                   help="degrees covered by the FEW angles (limited angle below 180; default: 180)")
    t.add_argument("--splits", type=int, default=None, metavar="K",
                   help="K interleaved subsets of the MANY angles, reconstructed each (Noise2Inverse)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--voids", type=int, default=None, help="voids per foam (default 500)")
    t.add_argument("--slab", type=int, default=8, help="slices per block written (default: 8)")
    t.add_argument("--device", default="cpu", help="where reconstructions run: cpu, cuda ... (default: cpu)")
    t.add_argument("--overwrite", action="store_true", help="replace a store made with other settings")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="a model file as ONNX or TorchScript, to run without mixscale",
                       description="The whole prediction (input normalisation, network, probabilities or target "
                                   "units) as one graph with dynamic batch and spatial sizes: input (N, C, *S) "
                                   "float32 in the training images' units. ONNX needs pip install "
                                   "'mixscale[onnx]'.")
    p.add_argument("model", help="model file (.safetensors)")
    p.add_argument("-o", "--output", required=True,
                   help="file to write: *.onnx, *.pt / *.ts (TorchScript), *.zip (BioImage Model Zoo package)")
    p.add_argument("--format", choices=["onnx", "torchscript", "bioimageio"], default=None,
                   help="default: from the output's ending")
    p.add_argument("--name", default=None, help="zoo package: the model's name")
    p.add_argument("--author", action="append", default=None, help="zoo package: an author (repeat for more)")
    p.add_argument("--license", default=None, help="zoo package: SPDX licence (default: CC-BY-4.0)")
    p.add_argument("--raw", action="store_true", help="the network alone: normalised input -> logits")
    p.add_argument("--static", action="store_true",
                   help="fixed sizes (nets with a fixed input shape: the autoencoder, the patch classifier)")


def _cmd_export(args) -> None:
    from mixscale import api

    t0 = time.perf_counter()
    given = {"name": args.name, "authors": tuple(args.author) if args.author else None, "license": args.license}
    path = api.export(args.model, args.output, format=args.format, raw=args.raw, static=args.static,
                      **{k: v for k, v in given.items() if v is not None})
    print(f"wrote {path} in {time.perf_counter() - t0:.1f} s")


def _add_ome(sub) -> None:
    p = sub.add_parser("ome-zarr", help="a block-wise prediction (out.zarr) as OME-Zarr (NGFF 0.5) with a pyramid",
                       description="Probabilities (or the regression prediction, else the input) as the image, the "
                                   "labels under labels/segmentation with colours; levels halve every space axis "
                                   "(mean for images, every second pixel for labels); chunks are the prediction's "
                                   "blocks. napari (with napari-ome-zarr) and Neuroglancer open it.")
    p.add_argument("store", help="a complete block-wise prediction store")
    p.add_argument("-o", "--output", required=True, help="new OME-Zarr folder (*.zarr)")
    p.add_argument("--voxel-size", type=float, nargs="+", default=None, metavar="SIZE",
                   help="one number, or Z Y X (default: what the input records: MRC, OME-Zarr, TIFF, HDF5)")
    p.add_argument("--unit", default=None, help="unit of --voxel-size: micrometer, nanometer, angstrom ...")
    p.add_argument("--levels", type=int, default=None, help="pyramid levels (default: down to 16 pixels)")


def _cmd_ome(args) -> None:
    from mixscale import api

    size = args.voxel_size[0] if args.voxel_size and len(args.voxel_size) == 1 else args.voxel_size
    print(f"wrote {api.to_ome_zarr(args.store, args.output, voxel_size=size, unit=args.unit, levels=args.levels)}")


def _add_import(sub) -> None:
    p = sub.add_parser("import", help="the mixscale model file of a BioImage Model Zoo package from mixscale export",
                       description="Extracts the attached model file, checks that it reproduces the package's "
                                   "test output exactly, and writes it (never unpickles).")
    p.add_argument("package", help="package (.zip)")
    p.add_argument("-o", "--output", required=True, help="model file to write (.safetensors)")
    p.add_argument("--overwrite", action="store_true")


def _cmd_import(args) -> None:
    from mixscale import api

    print(f"wrote {api.import_package(args.package, args.output, overwrite=args.overwrite)}")


def _cmd_simulate(args) -> None:
    from mixscale.recipes.tomography import TomoSimulation, simulate_tomo

    t0 = time.perf_counter()
    spec = TomoSimulation(objects=args.objects, shape=tuple(args.shape), angles=tuple(args.angles),
                          photons=args.photons, angular_range=args.angular_range, splits=args.splits,
                          seed=args.seed, voids=args.voids, slab=args.slab)
    result = simulate_tomo(args.out, spec, overwrite=args.overwrite, progress=not args.no_progress,
                           device=args.device)
    tuned = result["tuned"]
    print(f"wrote {result['path']} in {time.perf_counter() - t0:.1f} s: objects 0..{spec.objects - 1}, each with "
          f"{', '.join(result['arrays'])}\nbaselines tuned on object {tuned['object']}: SIRT "
          f"{tuned['sirt_iterations']} iterations, TV weight {tuned['tv_weight']:.3g}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mixscale", description="Deep learning for scientific images: "
                                     "MS-D networks and U-Nets, trained from few labels.")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="-v: debug log output and tracebacks of errors (default: info)")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
    _add_predict(sub)
    _add_detect(sub)
    _add_ensemble(sub)
    _add_calibrate(sub)
    _add_evaluate(sub)
    _add_simulate(sub)
    _add_export(sub)
    _add_import(sub)
    _add_ome(sub)
    p = sub.add_parser("gui", help="open napari with the Train & predict widget (needs mixscale[napari,qt])")
    p.add_argument("image", nargs="?", default=None, help="an image to open (TIFF, zarr, HDF5, MRC, ...)")
    p = sub.add_parser("info", help="shape, dtype, chunks of an image file, or a model file's metadata")
    p.add_argument("file")
    p = sub.add_parser("demo", help="synthetic data -> train MS-D -> predict -> evaluate -> figures")
    p.add_argument("--out", default="runs/demo", help="run directory (must not exist yet)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the demo's own)")
    return parser


def _cmd_train(args) -> None:
    from mixscale import api

    t0 = time.perf_counter()
    overrides = args.overrides + ([f"ensemble.members={args.members}"] if args.members is not None else [])
    overrides += ["ensemble.bootstrap=true"] if args.bootstrap else []
    result = api.train(args.config, overrides=overrides, resume=args.resume)
    if args.members and args.members > 1:
        print(f"trained {args.members} ensemble members in {time.perf_counter() - t0:.1f} s")
    else:
        print(f"trained {result.epochs} epochs in {time.perf_counter() - t0:.1f} s; best val_loss "
              f"{result.best_val_loss if result.best_val_loss is not None else float('nan'):.4f}")
    print(f"run directory: {result.run_dir}\nmodel file:    {result.model_path}")


def _cmd_predict(args) -> None:
    from mixscale import api

    t0 = time.perf_counter()
    common = dict(device=args.device, slice_axis=args.slice_axis, batch_size=args.batch_size, probabilities=args.probabilities,
                  overwrite=args.overwrite, channel_axis=args.channel_axis, overlap=args.overlap, blend=args.blend,
                  tta=args.tta, tile_shape=_one_or_tuple(args.tile_shape))
    if args.output.rstrip("/").endswith(".zarr"):
        check_block_options(args.scheduler, args.blocks_in_flight)  # before the store is created
        common.update(uncertainty=args.uncertainty, sets=args.sets, risk_mask=args.risk_mask,
                      lower_bound=args.lower_bound)
        s = api.predict_blocks(args.model, args.input, args.output, **common, scheduler=args.scheduler,
                               block_shape=_one_or_tuple(args.block_shape), blocks_in_flight=args.blocks_in_flight,
                               num_parts=args.num_parts, part_id=args.part_id, progress=not args.no_progress)
        state = "complete" if s["complete"] else "incomplete: other parts or a rerun still have blocks to do"
        print(f"wrote {s['output']}: {s['computed']} blocks computed, {s['skipped']} already done, of "
              f"{s['blocks']} ({state}); {s['voxels_per_second'] / 1e6:.3g} Mvoxels/s, {s['seconds']:.1f} s")
        if args.ome_zarr and s["complete"]:
            print(f"wrote {api.to_ome_zarr(args.output, args.ome_zarr)} (OME-Zarr)")
        return
    if args.ome_zarr:
        raise ValueError("--ome-zarr needs a .zarr output (block-wise prediction), which it converts")
    for flag, dest in (("--block-shape", "block_shape"), ("--scheduler", "scheduler"),
                       ("--workers", "blocks_in_flight")):
        if getattr(args, dest) is not None:
            raise ValueError(f"{flag} needs a .zarr output (block-wise prediction)")
    if args.num_parts != 1 or args.part_id != 0:
        raise ValueError("--num-parts/--part-id need a .zarr output (block-wise prediction)")
    if args.uncertainty or args.sets or args.risk_mask or args.lower_bound:
        raise ValueError("--uncertainty, --sets, --risk-mask and --lower-bound need a .zarr output (they write "
                         "several arrays)")
    out = api.predict(args.model, args.input, args.output, **common)
    print(f"wrote {args.output}: shape {out.shape}, {out.dtype} ({time.perf_counter() - t0:.1f} s)")


#: the local Dask schedulers of block-wise prediction (mixscale.infer.blocks.LOCAL_SCHEDULERS; a test keeps
#: the two equal: the command line may import only api, config and recipes)
LOCAL_SCHEDULERS = ("threads", "sync", "processes")


def check_block_options(scheduler: str | None, workers: int | None) -> None:
    """``--scheduler`` and ``--workers`` of block-wise prediction, checked before anything is written.

    Examples
    --------
    >>> check_block_options("threads", 2)
    >>> check_block_options("threads", 0)
    Traceback (most recent call last):
    ...
    ValueError: --workers=0 is not allowed; expected an integer >= 1
    """
    from mixscale._checks import check_int, not_allowed

    if workers is not None:
        check_int("--workers", workers, minimum=1)
    if scheduler is not None and scheduler not in LOCAL_SCHEDULERS and ":" not in scheduler:
        raise not_allowed("--scheduler", scheduler, f"one of {list(LOCAL_SCHEDULERS)} or a dask.distributed "
                                                    "address such as tcp://host:8786")


def _cmd_ensemble(args) -> None:
    from mixscale import api

    path = api.ensemble(args.members, args.output, combine=args.combine)
    print(f"wrote {path}: an ensemble of {len(args.members)} members")


def _cmd_calibrate(args) -> None:
    from mixscale import api

    r = api.calibrate(args.model, args.images, args.labels, args.output, alpha=args.alpha, score=args.score,
                      per_class=args.per_class, temperature=not args.no_temperature,
                      label_convention=args.label_convention, slice_axis=args.slice_axis,
                      allow_training_images=args.allow_training_images, overwrite=args.overwrite,
                      fnr_class=args.fnr_class, fnr_alpha=args.fnr_alpha, fnr_tile=_one_or_tuple(args.fnr_tile),
                      **({"randomized": True} if args.randomized else {}))
    c = r["conformal"]
    print(f"wrote {args.output}: temperature {r['temperature']:.4f}; {c['score']} sets at alpha {c['alpha']} from "
          f"{c['n']} pixels, threshold {c['threshold']}")
    if "risk" in r:
        k = r["risk"]
        print(f"risk control of class {k['class']}: mask p >= 1 - {k['lambda']:.4f}, mean false-negative rate <= "
              f"{k['alpha']} over {k['n']} {k['unit']}s")


def _cmd_detect(args) -> None:
    from mixscale import api

    t0 = time.perf_counter()
    found = api.detect(args.model, args.input, threshold=args.threshold, min_distance=args.min_distance,
                       stride=args.stride, batch_size=args.batch_size, tta=args.tta, device=args.device,
                       output=args.output, overwrite=args.overwrite, channel_axis=args.channel_axis,
                       tile_shape=_one_or_tuple(args.tile_shape), star=args.star,
                       voxel_size=_one_or_tuple(args.voxel_size), binning=args.binning)
    names = found["class_names"] or []
    counts = {}
    for c in found["classes"].tolist():
        name = names[c] if c < len(names) else f"class {c}"
        counts[name] = counts.get(name, 0) + 1
    per_class = ", ".join(f"{k}: {v}" for k, v in counts.items()) or "none"
    print(f"wrote {args.output}: {len(found['points'])} detections ({per_class}; {time.perf_counter() - t0:.1f} s)")


def _one_or_tuple(values):
    """argparse's ``nargs='+'`` list -> one value or a tuple (None stays None)."""
    if values is None:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _cmd_evaluate(args) -> None:
    from mixscale import api

    outputs = list(dict.fromkeys(args.output))
    for path in outputs:  # before any work: an existing file is refused, not found out at the end
        api.check_metrics_output(path, overwrite=args.overwrite)
    report = api.evaluate(args.pred, args.target, num_classes=args.num_classes, ignore_index=args.ignore_index,
                          label_convention=args.label_convention, task=args.task, data_range=args.data_range,
                          figures=args.figures, image=args.image, panel_slice=args.panel_slice)
    for path in outputs:
        api.write_metrics(report, path, overwrite=args.overwrite)
    print(format_table(api.flatten_scalars(report)))
    for path in report.get("figures", []):
        print(f"figure: {path}")


def format_table(values: dict[str, float]) -> str:
    """Two aligned columns, metric and value."""
    width = max((len(k) for k in values), default=6)
    return "\n".join([f"{'metric':<{width}}  value"] + [f"{k:<{width}}  {v:.4f}" for k, v in values.items()])


def _cmd_info(args) -> None:
    from mixscale import api

    for k, v in api.info(args.file).items():
        if isinstance(v, dict) and v:  # a store's arrays: one per line
            print(f"{k:>16}:")
            for name, what in v.items():
                print(f"{'':>18}{name}: {what}")
        else:
            print(f"{k:>16}: {v}")


def _cmd_gui(args) -> None:
    from mixscale import api

    api.gui(args.image)


def _cmd_demo(args) -> None:
    from mixscale.recipes.demo import run_demo

    t0 = time.perf_counter()
    s = run_demo(args.out, epochs=args.epochs)
    print(f"\nmixscale demo finished in {time.perf_counter() - t0:.0f} s ({s['epochs']} epochs of a 2D MS-D)")
    print(f"  held-out macro F1   {s['f1_macro']:.3f}   (majority-class baseline {s['baseline_f1_macro']:.3f})")
    print(f"  held-out accuracy   {s['accuracy']:.3f}   (majority-class baseline {s['baseline_accuracy']:.3f})")
    print(f"  adjusted Rand index {s['ari']:.3f}")
    print(f"  run directory: {s['run_dir']}\n  model file:    {s['model']}\n  predictions:   {s['predictions']}")
    print(f"  metrics:       {s['metrics']}")
    for fig in s["figures"]:
        print(f"  figure:        {fig}")


COMMANDS = {"gui": _cmd_gui, "train": _cmd_train, "predict": _cmd_predict, "detect": _cmd_detect, "ensemble": _cmd_ensemble,
            "calibrate": _cmd_calibrate,
            "evaluate": _cmd_evaluate,
            "info": _cmd_info, "demo": _cmd_demo, "simulate": _cmd_simulate,
            "export": _cmd_export, "import": _cmd_import,
            "ome-zarr": _cmd_ome}


#: commands that train (and so import Lightning)
LIGHTNING_COMMANDS = ("train", "demo")
#: Lightning's loggers: its top one carries a console handler of its own besides propagating to the root
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")
#: where Lightning logs its rank-zero messages, the cloud advertisements among them
RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
#: third-party packages whose deprecation notices are not the user's to act on
QUIET_DEPRECATIONS = r"(lightning|pytorch_lightning|lightning_fabric|torch|torchmetrics)(\.|$)"


class _NoAdvertisement(logging.Filter):
    """Drops Lightning's tips about its cloud products (litlogger, litmodels)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            return True
        return not (text.lstrip().startswith("\N{ELECTRIC LIGHT BULB}") or "litlogger" in text or "litmodels" in text)


_NO_ADVERTISEMENT = _NoAdvertisement()


def configure_logging(level: int, *, lightning: bool = False) -> None:
    """Log records once each, as ``LEVEL name: message`` on stderr; no advertisements, no third-party
    deprecation notices (unless ``-W``/``PYTHONWARNINGS`` asks for them).

    Parameters
    ----------
    level : int
        The root logger's level.
    lightning : bool
        The command trains: import Lightning now and take away the console handler its import
        gives its top logger, so that its records reach the root handler only (not twice).
    """
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for name in RANK_ZERO_LOGGERS:  # a logger's filter sees every record logged on it, whatever the handlers
        logging.getLogger(name).addFilter(_NO_ADVERTISEMENT)
    if not sys.warnoptions:
        import warnings

        for category in (DeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=category, module=QUIET_DEPRECATIONS)
    if lightning:
        _route_lightning_to_root()


def _route_lightning_to_root() -> None:
    """Lightning adds a stderr handler to its ``lightning`` logger on import and its records propagate to
    the root as well: every line came out twice. Keep the root's handlers only."""
    import lightning  # noqa: F401  (the import installs the handler)

    root = logging.getLogger()
    if not root.handlers:
        return
    for name in LIGHTNING_LOGGERS:
        log = logging.getLogger(name)
        for handler in list(log.handlers):
            if type(handler) is logging.StreamHandler and handler not in root.handlers:
                log.removeHandler(handler)
        log.propagate = True


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mixscale`` executable; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from mixscale import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose + 1, 2)]
    configure_logging(level, lightning=args.command in LIGHTNING_COMMANDS)
    from mixscale._extras import MissingExtraError
    from mixscale._lock import LockedError

    try:
        COMMANDS[args.command](args)
    except (ValueError, OSError, LockedError, MissingExtraError) as exc:  # bad input, files, a writer, an extra
        if args.verbose:
            traceback.print_exc()
        print(f"mixscale {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
