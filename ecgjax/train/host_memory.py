"""Give freed host memory back to the operating system between the phases of a run.

XLA:CPU compiles and initialises through many small allocations; once freed, glibc keeps
those pages in its free lists, fragmented, while the step's own buffers (hundreds of MiB,
mapped afresh) land elsewhere. The process then holds both: at ST-MEM B/75 batch 8 about
300 MiB after initialising and 300 MiB after compiling. `malloc_trim(0)` returns them (it
costs milliseconds), and `limit_arenas` keeps the threads from each holding their own free
lists. Both do nothing where glibc is not the allocator. The programs (ecgjax.apps) and the
step benchmark call them; a library import never changes the process's allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os


@functools.lru_cache(maxsize=1)
def _libc():
  name = ctypes.util.find_library("c")
  if not name:
    return None
  try:
    lib = ctypes.CDLL(name)
  except OSError:
    return None
  return lib if hasattr(lib, "malloc_trim") else None


# glibc gives each thread that allocates its own arena (up to 8 per core), and each arena
# keeps its freed pages; XLA's compiler and runtime threads thereby held ~50 MiB more at the
# ST-MEM B/75 step than with a few arenas, at no measured cost in speed.
DEFAULT_ARENAS = 4
_M_ARENA_MAX = -8  # mallopt's parameter number (malloc.h)


def limit_arenas(n: int = DEFAULT_ARENAS) -> bool:
  """Caps glibc's malloc arenas unless MALLOC_ARENA_MAX is set; call before threads start."""
  if os.environ.get("MALLOC_ARENA_MAX") or os.environ.get("GLIBC_TUNABLES", "").find(
      "arena_max") >= 0:
    return False  # the user's choice stands
  lib = _libc()
  if lib is None or not hasattr(lib, "mallopt"):
    return False
  return bool(lib.mallopt(ctypes.c_int(_M_ARENA_MAX), ctypes.c_int(n)))


def release_free_memory() -> bool:
  """Returns glibc's free heap pages to the OS; False where that is not available."""
  lib = _libc()
  if lib is None:
    return False
  gc.collect()  # tracing leaves reference cycles; collected first, their pages go back too
  lib.malloc_trim(ctypes.c_size_t(0))
  return True


def rss_mib() -> float | None:
  """The process's resident set now, in MiB (Linux), else None."""
  try:
    with open("/proc/self/statm", encoding="ascii") as f:
      pages = int(f.read().split()[1])
  except (OSError, ValueError, IndexError):
    return None
  import resource  # pylint: disable=g-import-not-at-top
  return pages * resource.getpagesize() / 2**20
