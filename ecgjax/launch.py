"""Command-line flags and process setup shared by the training entry points.

Imports only absl and ml_collections: grain's spawned workers re-import the entry script, and
with it this module, so nothing heavy may happen at import.
"""

from __future__ import annotations

import dataclasses
import os

from absl import flags
from ml_collections import config_flags


@dataclasses.dataclass(frozen=True)
class LaunchFlags:
  """The flag holders an entry point reads in `main`."""
  config: flags.FlagHolder
  workdir: flags.FlagHolder
  distributed: flags.FlagHolder
  coordinator: flags.FlagHolder
  num_processes: flags.FlagHolder
  process_id: flags.FlagHolder
  library_logs: flags.FlagHolder
  compilation_cache: flags.FlagHolder


# One compilation cache for every entry point (the test suite shares one across its runs).
ENV_CACHE = "ECGJAX_COMPILATION_CACHE"


def define_flags(config_help: str, workdir_help: str) -> LaunchFlags:
  """Defines --config, --workdir and the multi-host and logging flags (once per program)."""
  holders = LaunchFlags(
      config=config_flags.DEFINE_config_file("config", None, config_help, lock_config=True),
      workdir=flags.DEFINE_string("workdir", None, workdir_help),
      distributed=flags.DEFINE_enum(
          "distributed", "auto", ["auto", "on", "off"],
          "call jax.distributed.initialize() (auto: when a cluster launcher reports several "
          "processes)"),
      coordinator=flags.DEFINE_string(
          "coordinator_address", None,
          "host:port of process 0, for launches without a cluster manager"),
      num_processes=flags.DEFINE_integer("num_processes", None, "processes in a hand launch"),
      process_id=flags.DEFINE_integer("process_id", None,
                                      "this process's index in a hand launch"),
      library_logs=flags.DEFINE_bool("library_logs", False,
                                     "show INFO logs of orbax, jax and grain"),
      compilation_cache=flags.DEFINE_string(
          "compilation_cache", "workdir",
          "persistent XLA compilation cache: 'workdir' (WORKDIR/jax_cache: a resumed run, and "
          "the splits of a CV run, compile once), a directory, or 'off'; when the flag is not "
          "given, $ECGJAX_COMPILATION_CACHE (one cache for every run) wins over 'workdir'"))
  flags.mark_flags_as_required(["config", "workdir"])
  return holders


def setup_process(f: LaunchFlags) -> None:
  """Quiets library logs (unless asked), turns on the compilation cache and joins the
  multi-host run when there is one."""
  from ecgjax.train import mesh, metrics  # pylint: disable=g-import-not-at-top
  if not f.library_logs.value:
    metrics.quiet_library_logs()
  cache = f.compilation_cache.value
  if not flags.FLAGS["compilation_cache"].present and ENV_CACHE in os.environ:
    cache = os.environ[ENV_CACHE]
  if cache != "off":
    enable_compilation_cache(os.path.join(f.workdir.value, "jax_cache") if cache == "workdir"
                             else cache)
  mesh.maybe_initialize_distributed(f.distributed.value, f.coordinator.value,
                                    f.num_processes.value, f.process_id.value)


def default_cache_dir() -> str:
  """Where entry points without a workdir keep compiled programs: $ECGJAX_COMPILATION_CACHE
  ('off' disables it), else ~/.cache/ecgjax/jax."""
  return os.environ.get(ENV_CACHE,
                        os.path.join(os.path.expanduser("~"), ".cache", "ecgjax", "jax"))


def enable_compilation_cache(path: str) -> None:
  """Persistent XLA compilation cache in `path` ('off': none): a rerun compiles nothing it
  compiled before (programs that took at least a second to compile are kept)."""
  if not path or path == "off":
    return
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_compilation_cache_dir", os.path.abspath(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
