"""Exports on the Hugging Face Hub: a Hub model repo is just an export directory.

  export = ecgjax.from_pretrained("runs/demo/stmem/export")      # a local directory
  export = ecgjax.from_pretrained("owner/ecg-encoder")            # a Hub repo (cached)
  ecgjax.push_to_hub("runs/demo/stmem/export", "owner/ecg-encoder")

  python -m ecgjax.hub push runs/demo/stmem/export owner/ecg-encoder [--private]
  python -m ecgjax.hub pull owner/ecg-encoder        # prints the local snapshot's path

Downloads go through `huggingface_hub.snapshot_download`, so its cache, `HF_HUB_OFFLINE=1`,
`HF_HUB_CACHE`/`HF_HOME` and tokens work as for any Hub library; uploads are one
`HfApi.upload_folder` call after `create_repo(exist_ok=True)`. Every export carries its model
card (README.md), which is what the Hub shows.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from ecgjax import export as export_lib

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_repo_id(name: str) -> bool:
  """"owner/name" (and not an existing local path)."""
  return bool(_REPO_ID.match(name)) and not os.path.exists(name)


def snapshot(repo_id: str, *, revision: str | None = None, cache_dir: str | None = None,
             token: str | bool | None = None) -> str:
  """The local directory of `repo_id` at `revision` (downloaded, or from the cache offline)."""
  import huggingface_hub  # pylint: disable=g-import-not-at-top
  from huggingface_hub import errors  # pylint: disable=g-import-not-at-top
  try:
    return huggingface_hub.snapshot_download(repo_id, revision=revision, cache_dir=cache_dir,
                                             token=token, library_name="ecgjax")
  except errors.LocalEntryNotFoundError:
    raise export_lib.ExportError(
        f"{repo_id}: not in the local Hub cache and the Hub cannot be reached (offline, or "
        "HF_HUB_OFFLINE=1); download it once online or pass a local export directory"
    ) from None
  except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError) as e:
    raise export_lib.ExportError(f"{repo_id}: no such Hub repo or revision ({e})") from None
  except errors.HfHubHTTPError as e:
    raise export_lib.ExportError(f"{repo_id}: the Hub refused the download: {e}") from None


def from_pretrained(name: str, *, revision: str | None = None, cache_dir: str | None = None,
                    token: str | bool | None = None) -> export_lib.Export:
  """An export from a local directory or a Hub repo id ("owner/name")."""
  if os.path.isdir(name) or not is_repo_id(name):
    if not os.path.isdir(name):
      raise export_lib.ExportError(f"{name}: no such export directory (and not a Hub repo id "
                                   "of the form owner/name)")
    return export_lib.load_export(name)
  return export_lib.load_export(snapshot(name, revision=revision, cache_dir=cache_dir,
                                         token=token))


def push_to_hub(directory: str, repo_id: str, *, private: bool | None = None,
                token: str | bool | None = None, revision: str | None = None,
                commit_message: str | None = None) -> str:
  """Uploads an export directory (checked first) as the Hub model repo `repo_id`; the commit's
  URL."""
  from huggingface_hub import HfApi  # pylint: disable=g-import-not-at-top
  export = export_lib.load_export(directory)  # never upload something that does not load
  if not os.path.isfile(os.path.join(export.directory, export_lib.CARD_FILE)):
    raise export_lib.ExportError(
        f"{export.directory} has no model card ({export_lib.CARD_FILE}; exports written before "
        "format 3 lack one): re-export it, or write one, before sharing")
  api = HfApi(token=token)
  api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
  info = api.upload_folder(
      repo_id=repo_id, folder_path=export.directory, repo_type="model", revision=revision,
      commit_message=commit_message or f"ecgjax export: {export.config['model']} "
                                       f"{export.config['variant']}")
  return str(getattr(info, "commit_url", info))


def main(argv: list[str] | None = None) -> int:
  """`python -m ecgjax.hub push|pull`."""
  from ecgjax import cli  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog="python -m ecgjax.hub", description=__doc__.split(
      "\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  push = sub.add_parser("push", help="upload an export directory as a Hub model repo")
  push.add_argument("export")
  push.add_argument("repo_id")
  push.add_argument("--private", action="store_true")
  push.add_argument("--revision")
  pull = sub.add_parser("pull", help="download a Hub repo's export; prints its local path")
  pull.add_argument("repo_id")
  pull.add_argument("--revision")
  args = parser.parse_args(argv)
  try:
    if args.command == "push":
      print(push_to_hub(args.export, args.repo_id, private=args.private or None,
                        revision=args.revision))
    else:
      print(from_pretrained(args.repo_id, revision=args.revision).directory)
  except export_lib.ExportError as e:
    cli.fail(str(e))
  return 0


if __name__ == "__main__":
  sys.exit(main())
