"""Data command line: list formats, inspect a source, prepare it for pretraining.

  python -m ecgjax.data formats
  python -m ecgjax.data inspect SPEC [--json] [--workers N]
  python -m ecgjax.data prepare SPEC OUT [--preset st_mem|ecg_fm|ecgfounder]
      [--fs 250 --leads I,II,... --bandpass 0.67,40 ...] [--workers N]
      [--shard_size 4096] [--dtype float16|float32] [--overwrite]
  python -m ecgjax.data prepare image:DIR OUT [--preset eianet|raw]
      [--preprocessing '{"height": 512, "width": 724}'] [--workers N] [--overwrite]

A bad spec (unknown format or option, missing path), a bad flag or an
existing OUT prints one line to stderr and exits with status 2.
"""

from __future__ import annotations

import json
import sys

from absl import flags

from ecgjax import cli
from ecgjax.errors import UserError

_JSON = flags.DEFINE_bool(
    "json", False, "inspect: print the summary as one JSON object (last line)")
_WORKERS = flags.DEFINE_integer(
    "workers", None, "processes reading records (default: one per CPU core; "
    "0: this process)")
_PRESET = flags.DEFINE_string(
    "preset", None, "prepare: reference preprocessing (signals: st_mem, ecg_fm, "
    "ecgfounder; printouts: eianet (default), raw); the flags below override its fields")
_FS = flags.DEFINE_float("fs", None, "prepare: sampling rate, Hz")
_SAMPLES = flags.DEFINE_integer(
    "samples", None, "prepare: crop length recorded in the contract (cropping "
    "stays online; default with no preset: 10 s)")
_LEADS = flags.DEFINE_string("leads", None, "prepare: lead order, e.g. I,II,V1")
_BANDPASS = flags.DEFINE_string(
    "bandpass", None, "prepare: high-pass,low-pass Hz (e.g. 0.67,40) or none")
_FILTER_ORDER = flags.DEFINE_integer("filter_order", None, "prepare: Butterworth order")
_RESAMPLE = flags.DEFINE_string("resample_method", None, "prepare: fft, poly or linear")
_STANDARDIZE = flags.DEFINE_string(
    "standardize", None, "prepare: global, per_lead or none (applied online)")
_PP_JSON = flags.DEFINE_string(
    "preprocessing", None, "prepare: JSON object of further Preprocessing "
    "fields, e.g. '{\"notch\": 50}' (printouts: ImagePreprocessing fields, e.g. "
    "'{\"height\": 256, \"width\": 362}')")
_SHARD_SIZE = flags.DEFINE_integer("shard_size", 4096, "prepare: records per shard (at most)")
_DTYPE = flags.DEFINE_enum("dtype", "float16", ["float16", "float32"],
                           "prepare: sample dtype on disk")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "prepare: replace an existing OUT")

_USAGE = __doc__.split("\n\n")[1]


class UsageError(UserError):
  """A mistake in the command line or spec: one line, exit status 2."""


def _preprocessing():
  from ecgjax.data import transforms  # pylint: disable=g-import-not-at-top
  if _PRESET.value:
    make = getattr(transforms, "preset", None)
    if make is not None:
      base = make(_PRESET.value).to_dict()
    else:  # Older transforms without the preset registry.
      known = {"st_mem": transforms.st_mem_preprocessing,
               "ecg_fm": transforms.ecg_fm_preprocessing}
      if _PRESET.value not in known:
        raise ValueError(f"unknown preset {_PRESET.value!r}; known: {sorted(known)}")
      base = known[_PRESET.value]().to_dict()
  elif _FS.value is None:
    raise UsageError("prepare needs --preset NAME or at least --fs HZ")
  else:
    base = {"fs": _FS.value, "samples": int(round(10 * _FS.value)),
            "bandpass": None}
  for key, flag in (("fs", _FS), ("samples", _SAMPLES), ("leads", _LEADS),
                    ("filter_order", _FILTER_ORDER), ("resample_method", _RESAMPLE)):
    if flag.value is not None:
      base[key] = flag.value.split(",") if key == "leads" else flag.value
  if _BANDPASS.value is not None:
    band = _BANDPASS.value.strip().lower()
    base["bandpass"] = None if band == "none" else [float(f) for f in band.split(",")]
  if _STANDARDIZE.value is not None:
    base["standardize"] = None if _STANDARDIZE.value == "none" else _STANDARDIZE.value
  if _PP_JSON.value:
    extra = json.loads(_PP_JSON.value)
    if not isinstance(extra, dict):
      raise UsageError("--preprocessing must be a JSON object")
    base.update(extra)
  return transforms.Preprocessing.from_dict(base)


# Flags that only mean something for signals: an image contract refuses them by name.
_SIGNAL_FLAGS = ("fs", "samples", "leads", "bandpass", "filter_order", "resample_method",
                 "standardize", "dtype")


def _image_preprocessing():
  from ecgjax.data import images  # pylint: disable=g-import-not-at-top
  given = [f"--{n}" for n in _SIGNAL_FLAGS if flags.FLAGS[n].present]
  if given:
    raise UsageError(f"{', '.join(given)}: signal options; an image source is prepared with "
                     "--preset eianet|raw and --preprocessing JSON (height, width, stages)")
  extra = json.loads(_PP_JSON.value) if _PP_JSON.value else {}
  if not isinstance(extra, dict):
    raise UsageError("--preprocessing must be a JSON object")
  try:
    return images.preset(_PRESET.value or "eianet", **extra)
  except TypeError as e:  # an unknown field
    raise UsageError(f"bad image preprocessing: {e}") from None


def _open(spec: str):
  from ecgjax.data import sources  # pylint: disable=g-import-not-at-top
  try:
    return sources.open_source(spec)
  except (ValueError, TypeError, OSError) as e:
    raise UsageError(str(e)) from None


def _formats() -> None:
  from ecgjax.data import sources, specs  # pylint: disable=g-import-not-at-top
  sources._register_builtin_formats()  # pylint: disable=protected-access
  for name in specs.known_formats():
    info = specs.get_format(name)
    print(f"{name}: {info.help}")
    for key, opt in sorted(info.all_options.items()):
      default = "" if opt.default is None else f" (default {opt.default})"
      print(f"    {key}={default}  {opt.help}")


def _inspect(spec: str) -> None:
  from ecgjax.data import inspect as inspect_lib  # pylint: disable=g-import-not-at-top
  _open(spec)
  summary = inspect_lib.inspect_source(spec, workers=_WORKERS.value)
  print(inspect_lib.format_summary(summary))
  if _JSON.value:
    print(json.dumps(summary))


def _prepare(spec: str, out: str) -> None:
  import os  # pylint: disable=g-import-not-at-top
  from ecgjax.data import prepare as prepare_lib  # pylint: disable=g-import-not-at-top
  if os.path.exists(out) and not _OVERWRITE.value:
    raise UsageError(f"{out} already exists; pass --overwrite to replace it")
  source = _open(spec)
  try:
    pp = _image_preprocessing() if source.modality == "image" else _preprocessing()
  except (ValueError, TypeError) as e:
    raise UsageError(f"bad preprocessing: {e}") from None
  meta = prepare_lib.prepare(spec, out, pp, workers=_WORKERS.value,
                             shard_size=_SHARD_SIZE.value, dtype=_DTYPE.value,
                             overwrite=_OVERWRITE.value)
  c = meta["counts"]
  for b in meta["bad_records"][:50]:
    print(f"skipped {b['record_id']}: {b['reason']}")
  if c["bad"] > 50:
    print(f"... and {c['bad'] - 50} more bad records: see {out}/meta.json")
  contract = dict(meta["preprocessing"])
  key = "config.input"
  if contract.pop("modality", None) == "image":
    key = "input=image and config.image"
  print(f"prepared {c['records']} of {c['source_records']} records ({c['bad']} bad) "
        f"into {c['shards']} shards in {out} ({meta['seconds']} s); train on "
        f"'prepared:{out}' with {key} = {json.dumps(contract)}")


def main(argv: list[str]) -> int:
  args = argv[1:]
  commands = {"formats": (0, _formats), "inspect": (1, _inspect),
              "prepare": (2, _prepare)}
  try:
    if not args or args[0] not in commands or len(args) - 1 != commands[args[0]][0]:
      raise UsageError(f"usage:\n{_USAGE}")
    commands[args[0]][1](*args[1:])
  except UsageError as e:
    print(f"{cli.program_name()}: error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  cli.run(main)
