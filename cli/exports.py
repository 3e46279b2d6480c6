"""Client commands on the SDK: `agentmem export -o FILE` (wait, download, verify) and `agentmem import FILE`
(upload, follow)."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from agentmem import AgentMemError, APIError
from cli.client import connect, print_json, report_error, wait_as_json, watch_job

UPLOAD_BLOCK = 1 << 20


def export_to_file(output: Path, *, api_url: str, api_key: str | None, scope: str, scope_id: str | None,
                   include: list[str] | None, vectors: bool, as_json: bool = False) -> int:
    """Start an export, follow it with a progress bar, download its archive to `output` and check its sha256."""
    with connect(api_url, api_key, timeout=30) as client:
        try:
            job = client.exports.create(scope=scope, scope_id=scope_id, include=include, vectors=vectors)
        except AgentMemError as exc:
            report_error(exc, "export refused")
            return 2
        if not as_json:
            print(f"export job {job.id} queued")
            if watch_job(str(job.id), api_url=api_url, api_key=api_key, client=client) != 0:
                return 1
        elif job.wait(check=False).status != "succeeded":
            print_json({"export": client.exports.get(job.id).model_dump(mode="json"), "output": None})
            return 1
        partial = output.with_name(output.name + ".part")
        digest = hashlib.sha256()
        try:
            export = client.exports.get(job.id)
            with client.exports.download(job.id) as download, partial.open("wb") as handle, \
                    tqdm(total=export.size_bytes, unit="B", unit_scale=True, desc="download", disable=as_json) as bar:
                for block in download.iter_bytes():
                    handle.write(block)
                    digest.update(block)
                    bar.update(len(block))
        except AgentMemError as exc:
            report_error(exc, "download failed")
            return 1
    if digest.hexdigest() != export.sha256:
        print(f"{partial}: sha256 {digest.hexdigest()} differs from the export's {export.sha256}; kept as .part",
              file=sys.stderr)
        return 1
    partial.replace(output)
    if as_json:
        print_json({"export": export.model_dump(mode="json"), "output": str(output)})
        return 0
    counts = {name: m["count"] for name, m in (export.manifest or {}).get("members", {}).items()}
    print(f"wrote {output} ({export.size_bytes} bytes): {json.dumps(counts)}; the server keeps it until "
          f"{export.expires_at}")
    return 0


def _blocks(path: Path, bar: tqdm) -> Iterator[bytes]:
    bar.reset()  # a retried upload starts again from the first byte
    with path.open("rb") as handle:
        while block := handle.read(UPLOAD_BLOCK):
            bar.update(len(block))
            yield block


def import_file(path: Path, *, api_url: str, api_key: str | None, id_mode: str, as_json: bool = False) -> int:
    """Upload an archive with a progress bar, then follow its import job; exit 0 if it succeeds."""
    if not path.is_file():
        print(f"{path}: no such file", file=sys.stderr)
        return 2
    size = path.stat().st_size
    with connect(api_url, api_key, timeout=600) as client:
        with tqdm(total=size, unit="B", unit_scale=True, desc="upload", disable=as_json) as bar:
            try:
                job = client.exports.import_archive(lambda: _blocks(path, bar), size=size, id_mode=id_mode)
            except AgentMemError as exc:
                report_error(exc, "import refused")
                return 2 if isinstance(exc, APIError) else 1
        if not as_json:
            print(f"import job {job.id} queued")
            return watch_job(str(job.id), api_url=api_url, api_key=api_key, client=client)
        return wait_as_json(job)
