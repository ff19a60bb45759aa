"""The command line: `python -m collab_core {train,lr-find,evaluate,recommend,similar,explain,export}`.

Exit status 0 on success, 2 on bad input or usage (one line `error: ...` on stderr), 1 on an
unexpected failure. With --json the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from collab_core import recipes
from collab_core.config import FAMILY_DEFAULTS, FIELDS, FOLDS, PRESETS, TrainConfig
from collab_core.errors import CollabError
from collab_core.recipes import Recipe
from collab_core.record import StoredModel
from collab_core.settings import Settings
from collab_core.sources import source_key
from collab_core.store import ModelStore

if TYPE_CHECKING:
    from collab_core.data import Dataset
    from collab_core.learner import Trained

# torch, pandas and the rest are imported inside the commands that need them: a request already in
# the store is answered from its JSON alone, in a fraction of the time torch takes to import

BIG_DATA = 1_000_000  # ratings from which `train` prints its memory estimate before it starts


class UsageError(CollabError):
    """Bad command-line usage (exit status 2)."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: one line, exit 2
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m collab_core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    data = Parser(add_help=False)
    group = data.add_argument_group("data options")
    group.add_argument("--data", help="ml-100k folder or zip, MovieLens CSV folder, or a ratings table")
    for role in ("user", "item", "rating", "timestamp", "title"):
        group.add_argument(
            f"--{role}-col", help=f"{role} column of a ratings table (name or 0-based position)"
        )
    group.add_argument("--models-dir", type=Path, help="the model store (default: models/ of the repo)")
    group.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    model = Parser(add_help=False)
    group = model.add_argument_group("model options (unset ones come from the preset)")
    group.add_argument(
        "--preset",
        choices=["auto", *PRESETS],
        help="auto (the default): the book's recipe where its estimated time fits the budget, "
        "else row-wise sparse AdamW sized to the data; book (the chapter's recipe); fast",
    )
    how = group.add_mutually_exclusive_group()  # a fold file fixes its own validation share
    for name, spec in FIELDS.items():
        where = how if name in ("split", "valid_pct") else group
        where.add_argument(spec.flag, dest=name, help=spec.help, **_flag_kind(spec.kind, spec.choices))
    p = sub.add_parser("train", parents=[data, model], help="train a model (or load it from the store)")
    p.add_argument("--no-save", action="store_true", help="do not read or write the model store")
    p.add_argument("--distributed", action="store_true", help="one of torchrun's processes (DDP)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of results")
    p.add_argument("--snapshot-movies", type=int, metavar="N",
                   help="keep the embeddings of the N most-rated movies a few times per epoch, for the "
                   "map's animation (default 1000; 0: none)")  # fmt: skip
    p = sub.add_parser("lr-find", parents=[data, model], help="sweep the learning rate, suggest one")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("evaluate", parents=[data, model], help="train and score on fold files")
    p.add_argument("--folds", default="u1,u2,u3,u4,u5", help="comma-separated, from u1..u5, ua, ub")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("recommend", parents=[data, model], help="top unseen movies for a user")
    p.add_argument("--user", required=True)
    p.add_argument("--n", type=int, default=10)
    what = "what if the user rated TITLE so (STARS '-' removes the rating); repeatable"
    p.add_argument("--rate", action="append", default=[], metavar="TITLE=STARS", help=what)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("similar", parents=[data, model], help="nearest movies to a movie")
    p.add_argument("--movie", required=True, help="a title (or an id with --item-key id)")
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--metric", choices=["cosine", "euclidean"], default="cosine")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser(
        "explain", parents=[data, model], help="where a user's prediction for a movie comes from"
    )
    p.add_argument("--user", required=True)
    p.add_argument("--movie", required=True, help="a title (or an id with --item-key id)")
    p.add_argument(
        "--top", type=int, default=5, help="factors shown one by one (dot models; the rest summed)"
    )
    p.add_argument("--n", type=int, default=5, help="rated movies shown as 'because you rated'")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("compare", parents=[data], help="two stored models of one dataset side by side")
    p.add_argument("key_a", metavar="KEY_A", help="a store key, as `train --json` prints it")
    p.add_argument("key_b", metavar="KEY_B")
    p.add_argument("--k", type=int, default=10, help="neighbours per movie, and the ranking cut-off")
    p.add_argument("--min-ratings", type=int, default=20, help="movies with fewer ratings are left out")
    p.add_argument("--n", type=int, default=20, help="rows of the most-changed and disagreement lists")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("download", help="fetch ml-100k into the cache folder (verified), print where it is")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("synth", help="write a MovieLens-25M-shaped synthetic ratings folder")
    p.add_argument("out", type=Path, help="the folder to write ratings.csv and movies.csv into")
    p.add_argument("--users", type=int, help="default: MovieLens 25M's 162,541")
    p.add_argument("--items", type=int, help="default: 59,047")
    p.add_argument("--ratings", type=int, help="default: 25,000,095")
    p.add_argument("--seed", type=int)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("export", parents=[data], help="a stored model's movie vectors and metadata as files")
    p.add_argument("--model-key", required=True, help="a store key, as `train --json` prints it")
    p.add_argument(
        "--format",
        choices=["projector", "csv"],
        default="projector",
        help="projector: vectors.tsv + metadata.tsv for TensorFlow's Embedding Projector; "
        "csv: items.csv, item_vectors.csv, users.csv",
    )
    p.add_argument("out", type=Path, metavar="OUT_DIR", help="the folder to write into (made if missing)")
    p.add_argument("--json", action="store_true")
    add_simulate_parser(sub, data)
    return parser


def add_simulate_parser(sub, data: argparse.ArgumentParser) -> None:
    """`simulate`: the feedback loop of recommendations and the ratings they cause (simulate.py; unset
    options take its defaults there, so that building the parser imports no torch)."""
    p = sub.add_parser("simulate", parents=[data], help="simulate the recommender's feedback loop")
    p.add_argument("--rounds", type=int, required=True, help="rounds of recommend -> consume -> retrain")
    p.add_argument("--policy", required=True, help="topk, explore or damped")
    p.add_argument("--k", type=int, help="movies shown per user and round (10)")
    p.add_argument("--explore-share", type=float, help="explore: share of the k slots explored (0.2)")
    p.add_argument("--explore-from", help="explore: random (default) or longtail (the less popular half)")
    p.add_argument("--damping", type=float, help="damped: score - DAMPING * log(1 + ratings) (0.1)")
    p.add_argument("--choice", help="choice model: logistic (default) or linear")
    p.add_argument("--center", type=float, help="logistic choice: true rating at P(consume) = 1/2 (3.5)")
    p.add_argument("--temperature", type=float, help="logistic choice: temperature (0.5)")
    p.add_argument("--finetune-epochs", type=int, help="epochs per round from the last weights; 0: never (2)")
    p.add_argument("--users-per-round", type=int, help="users shown a list each round (default: all)")
    p.add_argument("--seed", type=int, help="seeds everything (42)")
    p.add_argument("--seed-share", type=float, help="share of each user's ratings seeding the system (0.2)")
    p.add_argument("--probe-share", type=float, help="real ratings held out for the probe RMSE (0.1)")
    p.add_argument("--noise-sd", type=float, help="rating noise sd (default: the true model's residual sd)")
    p.add_argument("--json", action="store_true")


def _flag_kind(kind: type, choices: tuple[str, ...]) -> dict:
    """argparse's arguments for a config field of this type (unset flags stay None: the preset's)."""
    if choices:
        return {"choices": list(choices)}
    if kind is bool:
        return {"action": "store_true", "default": None}
    if kind is tuple:
        return {"type": float, "nargs": 2, "metavar": ("LOW", "HIGH")}
    return {"type": kind}


CONFIG_FIELDS = tuple(FIELDS)


def given_fields(args: argparse.Namespace, split: str | None = None) -> dict:
    """The config fields set by flags (they override whichever recipe is chosen), and the model
    family's defaults (config.FAMILY_DEFAULTS) for fields no flag set, unless a preset was named."""
    given = {name: getattr(args, name) for name in CONFIG_FIELDS if getattr(args, name) is not None}
    if getattr(args, "preset", None) in (None, "auto"):
        given = {**FAMILY_DEFAULTS.get(given.get("model"), {}), **given}
    if "y_range" in given:
        given["y_range"] = tuple(given["y_range"])
    if split is not None:
        given["split"] = split
    return given


def choose_recipe(args: argparse.Namespace, settings: Settings, dataset: Dataset | None = None,
                  split: str | None = None) -> Recipe | None:  # fmt: skip
    """The recipe this run trains: --preset book/fast as asked, else the rule of recipes.py (the
    book's recipe where its estimate fits the budget, else row-wise sparse AdamW); flags override
    fields of either. Without the dataset, the data's size noted by an earlier run and the cached
    speed are used (torch-free); None when they are not known yet."""
    given = given_fields(args, split)
    if dataset is not None:
        size = recipes.DataSize.of(dataset)
        speed = recipes.machine_speed(size, settings.cache_dir)  # measured once per machine and shape
    else:
        size = recipes.remembered_size(data_signature(args, settings), settings.cache_dir)
        speed = None if size is None else recipes.cached_speed(size, settings.cache_dir)
        if speed is None:
            return None
    if args.preset in PRESETS:
        return recipes.named_recipe(args.preset, size, speed, **given)
    return recipes.default_recipe(size, speed, settings.train_budget, **given)


def print_recipe(recipe: Recipe, args: argparse.Namespace, n_ratings: int) -> None:
    """One line before training starts: what it will train and how long it should take here.

    The first line of stdout, before the epoch table; from BIG_DATA ratings on stdout starts with the
    memory estimate, so there it goes to stderr; with --json on small data it is left out, so that
    output stays exactly as it was.
    """
    line = f"recipe {recipe.describe()} on this machine"
    if n_ratings >= BIG_DATA:
        print(line, file=sys.stderr, flush=True)
    elif not getattr(args, "json", False):
        print(line, flush=True)


ROLES = ("user", "item", "rating", "timestamp", "title")


def load_data(args: argparse.Namespace, settings: Settings) -> Dataset:
    from collab_core.data import load_dataset

    columns = {f"{r}_col": getattr(args, f"{r}_col") for r in ROLES}
    bar = ProgressBar("downloading ml-100k")
    try:
        dataset = load_dataset(
            args.data, data_dir=settings.data_dir, cache_dir=settings.cache_dir, progress=bar,
            columns=columns, download_url=settings.ml100k_url,
        )  # fmt: skip
    finally:  # ends the bar's line, so an error after a cut download starts a line of its own
        bar.close()
    for message in dataset.warnings:
        print(f"warning: {message}", file=sys.stderr)
    return dataset


def store_from_args(args: argparse.Namespace, settings: Settings) -> ModelStore:
    return ModelStore(args.models_dir or settings.models_dir)


def data_signature(args: argparse.Namespace, settings: Settings) -> str | None:
    """Names the data this run will read (sources.source_key, as the table cache does) without reading it."""
    path = args.data or settings.data_dir or settings.cache_dir / "ml-100k"
    return source_key(Path(path), {f"{r}_col": getattr(args, f"{r}_col") for r in ROLES})


class ProgressBar:
    """A one-line download bar on stderr: percent, size and speed."""

    def __init__(self, label: str):
        self.label, self.start, self.shown = label, time.perf_counter(), False

    def __call__(self, done: int, total: int | None) -> None:
        speed = done / max(time.perf_counter() - self.start, 1e-9) / 1e6
        size = f"{done / 1e6:.1f}/{total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
        pct = f"{100 * done / total:5.1f}% " if total else ""
        print(f"\r{self.label}: {pct}{size} at {speed:.1f} MB/s", end="", file=sys.stderr, flush=True)
        self.shown = True

    def close(self) -> None:
        if self.shown:
            print(file=sys.stderr)


class EpochTable:
    """Prints fastai's table (epoch, train_loss, valid_loss, time) as epochs end."""

    def __init__(self, out=None):
        self.out = out or sys.stdout  # looked up now, so a redirected stdout is followed
        print(f"{'epoch':<7}{'train_loss':<12}{'valid_loss':<12}time", file=self.out, flush=True)

    def __call__(self, event: object) -> None:
        from collab_core.train import EpochEvent

        if isinstance(event, EpochEvent):
            minutes, seconds = divmod(round(event.seconds), 60)
            print(f"{event.epoch:<7}{event.train_loss:<12.6f}{event.valid_loss:<12.6f}"
                  f"{minutes:02d}:{seconds:02d}", file=self.out, flush=True)  # fmt: skip


def cmd_train(args: argparse.Namespace, settings: Settings) -> dict | None:
    if args.snapshot_movies is not None and args.snapshot_movies < 0:
        raise UsageError(f"--snapshot-movies must be 0 or more, not {args.snapshot_movies}")
    store = None if args.no_save else store_from_args(args, settings)
    signature = data_signature(args, settings)
    early = choose_recipe(args, settings)  # from the size an earlier run noted: no data read, no torch
    if early is not None and store is not None and not args.distributed:  # answered from the store's JSON
        record = store.stored_record(signature, early.config)
        if record is not None:
            return _report_stored(record, store.root, early.config)
    if early is not None and not args.distributed:  # a big run's estimate comes before its data loads
        print_recipe(early, args, recipes.remembered_size(signature, settings.cache_dir).ratings)
    dataset = load_data(args, settings)  # before torch is imported: bad data is reported in a second
    recipes.remember_size(signature, recipes.DataSize.of(dataset), settings.cache_dir)
    recipe = choose_recipe(args, settings, dataset)
    config = recipe.config
    from collab_core import distributed
    from collab_core.learner import get_or_train, kept_inputs
    from collab_core.snapshots import N_ITEMS

    keep = {"snapshot_items": N_ITEMS if args.snapshot_movies is None else args.snapshot_movies}
    if len(dataset.ratings) >= BIG_DATA:
        print_memory_estimate(dataset, config)  # and refuses here if it does not fit
    if (early is None or recipe.config != early.config) and not args.distributed:
        print_recipe(recipe, args, len(dataset.ratings))  # (not under torchrun: the estimate is of one CPU)
    if args.distributed:  # every rank trains; rank 0 reports and saves
        rank, world, device = distributed.init_from_env(args.device)
        try:
            if rank != 0:
                get_or_train(dataset, config, None, device, reuse=False, snapshot_items=0)
                return None
            print(f"distributed: {world} processes on {device}")
            trained = get_or_train(dataset, config, store, device, callback=EpochTable(), reuse=False, **keep)
        finally:
            distributed.leave()
    else:
        kept = kept_inputs(dataset, config, settings.cache_dir)  # big data: read back, not made again
        trained = get_or_train(dataset, config, store, args.device, callback=EpochTable(), **keep, **kept)
    if store is not None:  # only a run that ended well leaves a note in the store
        store.remember_fingerprint(signature, dataset.fingerprint)
    if trained.from_store:
        return _report_stored(trained.record, store.root, config)
    return _train_json(trained.record, config, from_store=False)


def print_memory_estimate(dataset: Dataset, config: TrainConfig) -> None:
    """Before a big run: what training will take (an upper estimate) and what the machine has."""
    from collab_core import memory

    r = dataset.ratings
    n_parameters = memory.n_parameters(config.model, r.user.nunique() + 1, r.item.nunique() + 1,
                                       config.n_factors)  # fmt: skip
    needed, available = memory.training_bytes(len(r), n_parameters), memory.available_bytes()
    free = "available unknown" if available is None else f"{memory.format_bytes(available)} available"
    print(f"memory: training needs up to {memory.format_bytes(needed)} ({free})", flush=True)
    memory.check_memory(needed, available)  # the run's own check, before the recipe line


def _report_stored(record: StoredModel, root: Path, config: TrainConfig) -> dict:
    print(f"loaded from {root / record.key}.pt (trained in {record.fit_seconds:.2f} s)")
    history = record.history
    for epoch, (t, v) in enumerate(zip(history.train_loss, history.valid_loss)):
        print(f"{epoch:<7}{t:<12.6f}{v:<12.6f}(stored)")
    return _train_json(record, config, from_store=True)


def _train_json(record: StoredModel, config: TrainConfig, from_store: bool) -> dict:
    classes = {}  # a cross-entropy model's own figures (its train_loss is the cross-entropy)
    if record.metrics.accuracy is not None:
        classes = {"valid_accuracy": record.metrics.accuracy, "valid_log_loss": record.metrics.log_loss,
                   "valid_log_loss_per_epoch": list(record.history.valid_log_loss)}  # fmt: skip
    return {
        "model": config.model,
        "key": record.key,
        "from_store": from_store,
        "train_loss": list(record.history.train_loss),
        "valid_loss": list(record.history.valid_loss),
        "valid_rmse": record.metrics.rmse,
        "valid_mae": record.metrics.mae,
        "fit_seconds": record.fit_seconds,
        "device": record.device,
        "config": config.to_dict(),
        "snapshots": record.snapshots,  # frames of the movie map through training stored (--no-save: taken)
        **classes,
    }


def cmd_lr_find(args: argparse.Namespace, settings: Settings) -> dict:
    from collab_core.learner import find_lr

    dataset = load_data(args, settings)
    config = choose_recipe(args, settings, dataset).config
    found = find_lr(dataset, config, args.device)
    print(f"suggested lr: {found.suggestion:.2e} (valley; {len(found.lrs)} batches swept)")
    return {"model": config.model, "suggestion": found.suggestion, "lrs": found.lrs, "losses": found.losses}


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> dict:
    from collab_core.learner import get_or_train

    dataset = load_data(args, settings)
    folds = [f.strip() for f in args.folds.split(",") if f.strip()]
    unknown = [f for f in folds if f not in FOLDS]
    if unknown or not folds:
        raise UsageError(f"unknown fold {unknown[0] if unknown else '(none)'}; use {', '.join(FOLDS)}")
    store = store_from_args(args, settings)
    rows = []
    print_recipe(choose_recipe(args, settings, dataset, split=folds[0]), args, len(dataset.ratings))
    print(f"{'fold':<6}{'rmse':<10}{'mae':<10}fit_s")
    for fold in folds:
        recipe = choose_recipe(args, settings, dataset, split=fold)
        trained = get_or_train(dataset, recipe.config, store, args.device)
        m, seconds = trained.record.metrics, trained.record.fit_seconds
        rows.append({"fold": fold, "rmse": m.rmse, "mae": m.mae, "mse": m.mse, "fit_seconds": seconds})
        print(f"{fold:<6}{m.rmse:<10.4f}{m.mae:<10.4f}{seconds:.2f}", flush=True)
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("rmse", "mae", "mse")}
    print(f"{'mean':<6}{mean['rmse']:<10.4f}{mean['mae']:<10.4f}")
    return {
        "model": recipe.config.model,
        "folds": rows,
        "mean_rmse": mean["rmse"],
        "mean_mae": mean["mae"],
    }


def _trained(args: argparse.Namespace, settings: Settings) -> Trained:
    """The model recommend/similar answer with: from the store, trained (and saved) if missing."""
    store = store_from_args(args, settings)
    from collab_core.learner import get_or_train, kept_inputs

    dataset = load_data(args, settings)
    recipe = choose_recipe(args, settings, dataset)
    print_recipe(recipe, args, len(dataset.ratings))
    kept = kept_inputs(dataset, recipe.config, settings.cache_dir)
    trained = get_or_train(dataset, recipe.config, store, args.device, **kept)
    path = store.root / f"{trained.key}.pt"
    where = f"loaded from {path}" if trained.from_store else f"trained and saved as {path}"
    print(f"model {trained.config.model}: {where}", file=sys.stderr)
    return trained


def cmd_recommend(args: argparse.Namespace, settings: Settings) -> dict:
    from collab_core.ranking import recommend

    if args.rate:
        return _what_if(args, settings)
    trained = _trained(args, settings)
    table = recommend(trained, args.user, n=args.n)
    print(table.to_string(index=False))
    return {"user": args.user, "model": trained.config.model, "key": trained.key,
            "recommendations": _records(table)}  # fmt: skip


def _what_if(args: argparse.Namespace, settings: Settings) -> dict:
    """recommend --rate: the list after the edits, with each movie's rank before them."""
    from collab_core.whatif import what_if

    edits = parse_rates(args.rate)  # bad flags fail before the model is read
    trained = _trained(args, settings)
    table = what_if(trained, args.user, edits, n=args.n).recommendations
    print(table.drop(columns=["genres", "year"]).to_string(index=False))
    rated = [{"title": title, "rating": rating} for title, rating in edits.items()]
    return {"user": args.user, "model": trained.config.model, "key": trained.key, "what_if": rated,
            "recommendations": _records(table)}  # fmt: skip


def parse_rates(rates: list[str]) -> dict[str, float | None]:
    """--rate "TITLE=STARS" flags -> {title: stars}, None for "TITLE=-" (remove the rating)."""
    edits: dict[str, float | None] = {}
    for rate in rates:
        title, sep, stars = rate.rpartition("=")
        if not sep or not title.strip():
            raise UsageError(f"--rate takes TITLE=STARS (or TITLE=- to remove a rating), not {rate!r}")
        if stars.strip() == "-":
            edits[title.strip()] = None
            continue
        try:
            edits[title.strip()] = float(stars)
        except ValueError:
            raise UsageError(f"--rate {rate!r}: the stars must be a number (or '-'), not {stars!r}") from None
    return edits


def cmd_explain(args: argparse.Namespace, settings: Settings) -> dict:
    from collab_core.explain import because_you_rated, breakdown

    trained = _trained(args, settings)
    found = breakdown(trained, args.user, args.movie, top=args.top)
    because = because_you_rated(trained, args.user, args.movie, n=args.n)
    link = found.link
    print(f"user {found.user}, {found.title}: predicted {found.prediction:.3f}")
    for part in found.parts:
        print(f"  {part.name:<24}{part.value:+.4f}")
    print(f"  {'raw score':<24}{found.raw:+.4f} -> {link} -> {found.prediction:.3f}")
    if found.position is not None:
        print(f"  {found.position:.0%} of the way from {found.y_range[0]:g} to {found.y_range[1]:g}")
    print(f"  ({found.method}; parts sum to the raw score within {abs(found.residual):.1e})")
    print("because you rated:")
    print(because.to_string(index=False))
    return {"user": found.user, "movie": found.title, "model": trained.config.model, "key": trained.key,
            **found.to_dict(), "because": _records(because)}  # fmt: skip


def cmd_similar(args: argparse.Namespace, settings: Settings) -> dict:
    from collab_core.analysis import nearest_items

    trained = _trained(args, settings)
    table = nearest_items(trained, args.movie, n=args.n, metric=args.metric)
    print(table.to_string(index=False))
    return {"movie": args.movie, "metric": args.metric, "model": trained.config.model, "key": trained.key,
            "similar": _records(table)}  # fmt: skip


def cmd_compare(args: argparse.Namespace, settings: Settings) -> dict:
    from collab_core.compare import compare, most_changed

    a, b = stored_models(args, settings, args.key_a, args.key_b)
    found = compare(a, b, k=args.k, min_ratings=args.min_ratings, n=args.n)
    result = found.to_dict(args.n)
    if not args.json:
        print_comparison(found, most_changed(found.stability, args.n), result["bias_correlation"])
    return result


def stored_key(store: ModelStore, key: str) -> StoredModel:
    """The record of a store key (or of a unique prefix of one), else a UsageError saying why."""
    if not key or not all(c in "0123456789abcdef" for c in key):
        raise UsageError(f"{key!r} is not a store key (the 16 hex digits `train --json` prints as key)")
    found = [r for r in store.list() if r.key.startswith(key)]
    if not found:
        raise UsageError(f"model key {key!r} is not in the store {store.root}")
    if len(found) > 1:
        raise UsageError(f"model {key} is ambiguous in {store.root}: {', '.join(r.key for r in found)}")
    return found[0]


def stored_models(args: argparse.Namespace, settings: Settings, *keys: str) -> list[Trained]:
    """Models of the store by key (or unique prefix), opened on the data the options name. The keys
    are checked before the data is read; a key not in the store, or of a model trained on other
    data, is a UsageError that says which."""
    store = store_from_args(args, settings)
    records = [stored_key(store, key) for key in keys]
    dataset = load_data(args, settings)
    for record in records:
        if record.data.fingerprint != dataset.fingerprint:
            raise UsageError(f"model {record.key} was trained on {record.data.name} "
                             f"({record.data.n_ratings:,} ratings), not on the data given "
                             f"({dataset.name}): pass its data with --data")  # fmt: skip
    from collab_core.learner import load_trained

    return [load_trained(dataset, record, store, args.device) for record in records]


def print_comparison(found, changed, bias_correlation: float | None) -> None:
    """The comparison as a readable report."""
    a, b = found.a.record, found.b.record
    print(f"A: {a.label}\nB: {b.label}\n")
    print(f"metrics ({found.metrics.note}):")
    print(found.metrics.table.to_string(float_format="{:.4f}".format))
    s = found.stability
    print(f"\nneighbour overlap (mean Jaccard of the {s.note}): {s.mean:.3f}")
    print("movies by neighbours shared: " + ", ".join(f"{i}: {c}" for i, c in s.histogram.items()))
    print(f"alignment error {found.alignment.error:.4f} (0 = same map up to a rotation, max 1.414; "
          f"{found.alignment.note})")  # fmt: skip
    print("\nmost changed neighbourhoods:")
    for _, row in changed.iterrows():
        print(f"  {row['title']} ({row['n_ratings']} ratings, Jaccard {row['jaccard']:.2f})")
        print(f"    A: {'; '.join(row['neighbours_a'][:5])}\n    B: {'; '.join(row['neighbours_b'][:5])}")
    print("\nbiggest disagreements:")
    print(found.disagreements.to_string(index=False, float_format="{:.2f}".format))
    if found.biases is not None:
        n = len(found.biases)
        print(f"\nmovie biases: correlation of A and B {bias_correlation:.3f} over {n:,} movies")
    print(f"\ncompared in {found.seconds:.2f} s")


def cmd_download(args: argparse.Namespace, settings: Settings) -> dict:
    from collab_core.download import download_ml100k

    bar = ProgressBar("downloading ml-100k")
    try:
        folder = download_ml100k(settings.cache_dir, settings.ml100k_url, progress=bar)
    finally:
        bar.close()
    print(folder)
    return {"folder": str(folder)}


def cmd_synth(args: argparse.Namespace, settings: Settings) -> dict:
    from collab_core.synth import SynthSpec, write_synth

    given = {"n_users": args.users, "n_items": args.items, "n_ratings": args.ratings, "seed": args.seed}
    spec = SynthSpec(**{k: v for k, v in given.items() if v is not None})
    start = time.perf_counter()
    folder = write_synth(args.out, spec)
    seconds = time.perf_counter() - start
    size = (folder / "ratings.csv").stat().st_size
    print(f"wrote {spec.n_ratings:,} ratings of {spec.n_users:,} users on {spec.n_items:,} items "
          f"to {folder} ({size / 1e6:.0f} MB) in {seconds:.1f} s")  # fmt: skip
    return {"folder": str(folder), "ratings": spec.n_ratings, "bytes": size, "seconds": seconds}


def cmd_export(args: argparse.Namespace, settings: Settings) -> dict:
    from collab_core.export import write_export

    (trained,) = stored_models(args, settings, args.model_key)
    rows = write_export(trained, args.out, args.format)
    for name, n in rows.items():
        print(f"wrote {args.out / name} ({n:,} rows)")
    factors = int(trained.item_vectors[0].shape[1])
    return {"model_key": trained.key, "model": trained.config.model, "format": args.format,
            "out_dir": str(args.out), "files": rows, "factors": factors}  # fmt: skip


POLICY_OPTIONS = ("policy", "rounds", "k", "explore_share", "explore_from", "damping", "choice", "center",
                  "temperature", "finetune_epochs", "users_per_round")  # fmt: skip
WORLD_OPTIONS = ("seed", "seed_share", "probe_share", "noise_sd")
SIM_HEADER = (
    "round  coverage  gini    gini_round  gini_data  mean_popularity  probe_rmse  top5_share  "
    "consumed  seconds"
)


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> dict:
    from collab_core.simulate import PolicyParams, WorldParams, build_world, exposure_change, run_policy

    def given(names: tuple[str, ...]) -> dict:
        return {name: getattr(args, name) for name in names if getattr(args, name) is not None}

    policy, world_params = PolicyParams(**given(POLICY_OPTIONS)), WorldParams(**given(WORLD_OPTIONS))
    dataset = load_data(args, settings)  # the parameters are checked first: a bad one costs no load
    world = build_world(dataset, world_params, args.device)
    print(f"world: true model (fast recipe, all ratings but the probe) probe RMSE "
          f"{world.true_probe_rmse:.4f}, noise sd {world.noise_sd:.3f}; the system starts from "
          f"{len(world.seed_rows):,} seed ratings, probe RMSE {world.initial_probe_rmse:.4f}; "
          f"built in {world.seconds:.1f} s", flush=True)  # fmt: skip
    print(SIM_HEADER, flush=True)

    def show(r) -> None:
        print(f"{r.round:<7d}{r.coverage:<10.3f}{r.gini:<8.3f}{r.gini_round:<12.3f}{r.gini_data:<11.3f}"
              f"{r.mean_popularity:<17.1f}{r.probe_rmse:<12.4f}{r.top5_share:<12.3f}{r.consumed:<10d}"
              f"{r.seconds:.2f}", flush=True)  # fmt: skip

    sim = run_policy(world, policy, callback=show)
    gained, lost = exposure_change(sim, n=5)
    print(f"{policy.policy}: {len(sim.rounds)} rounds in {sim.seconds:.1f} s "
          f"(+ {world.seconds:.1f} s to build the world)")  # fmt: skip
    return {**sim.to_dict(), "world_seconds": world.seconds, "gained": gained, "lost": lost}


def _records(table) -> list[dict]:
    return json.loads(table.to_json(orient="records"))


COMMANDS = {
    "train": cmd_train,
    "lr-find": cmd_lr_find,
    "evaluate": cmd_evaluate,
    "recommend": cmd_recommend,
    "similar": cmd_similar,
    "explain": cmd_explain,
    "download": cmd_download,
    "compare": cmd_compare,
    "synth": cmd_synth,
    "export": cmd_export,
    "simulate": cmd_simulate,
}


def main(argv: Sequence[str] | None = None) -> int:
    warnings.showwarning = lambda message, *a, **k: print(f"warning: {message}", file=sys.stderr)
    try:
        args = build_parser().parse_args(argv)
        result = COMMANDS[args.command](args, Settings.from_env())
    except CollabError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    if getattr(args, "json", False) and result is not None:
        print(json.dumps(result, default=_json_default))
    return 0


def _json_default(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)
