"""Client commands: `agentmem export -o FILE` (wait, download, verify) and `agentmem import FILE` (upload, follow)."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
from tqdm import tqdm

from cli.client import auth_headers, watch_job

UPLOAD_BLOCK = 1 << 20


def _error(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return f"{response.status_code} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code}: {response.text[:500]}"


def export_to_file(output: Path, *, api_url: str, api_key: str | None, scope: str, scope_id: str | None,
                   include: list[str] | None, vectors: bool) -> int:
    """Start an export, follow it with a progress bar, download its archive to `output` and check its sha256."""
    body: dict = {"scope": scope, "vectors": vectors}
    if scope_id is not None:
        body["scope_id"] = scope_id
    if include:
        body["include"] = include
    with httpx.Client(base_url=api_url, timeout=httpx.Timeout(30, read=300), headers=auth_headers(api_key)) as client:
        response = client.post("/api/v1/exports", json=body)
        if response.status_code != 202:
            print(f"export refused: {_error(response)}", file=sys.stderr)
            return 2
        export_id = response.json()["id"]
        print(f"export {export_id}")
        if watch_job(export_id, api_url=api_url, api_key=api_key) != 0:
            return 1
        export = client.get(f"/api/v1/exports/{export_id}").json()
        partial = output.with_name(output.name + ".part")
        digest = hashlib.sha256()
        with client.stream("GET", f"/api/v1/exports/{export_id}/download") as download:
            if download.status_code != 200:
                download.read()
                print(f"download failed: {_error(download)}", file=sys.stderr)
                return 1
            with partial.open("wb") as handle, tqdm(total=export["size_bytes"], unit="B", unit_scale=True,
                                                    desc="download") as bar:
                for block in download.iter_bytes():
                    handle.write(block)
                    digest.update(block)
                    bar.update(len(block))
    if digest.hexdigest() != export["sha256"]:
        print(f"{partial}: sha256 {digest.hexdigest()} differs from the export's {export['sha256']}; kept as .part",
              file=sys.stderr)
        return 1
    partial.replace(output)
    counts = {name: m["count"] for name, m in export["manifest"]["members"].items()}
    print(f"wrote {output} ({export['size_bytes']} bytes): {json.dumps(counts)}; the server keeps it until "
          f"{export['expires_at']}")
    return 0


def _blocks(path: Path, bar: tqdm) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while block := handle.read(UPLOAD_BLOCK):
            bar.update(len(block))
            yield block


def import_file(path: Path, *, api_url: str, api_key: str | None, id_mode: str) -> int:
    """Upload an archive with a progress bar, then follow its import job; exit 0 if it succeeds."""
    if not path.is_file():
        print(f"{path}: no such file", file=sys.stderr)
        return 2
    with (httpx.Client(base_url=api_url, timeout=httpx.Timeout(30, read=600), headers=auth_headers(api_key)) as client,
          tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc="upload") as bar):
        response = client.post("/api/v1/imports", params={"id_mode": id_mode}, content=_blocks(path, bar),
                               headers={"Content-Type": "application/gzip",
                                        "Content-Length": str(path.stat().st_size)})
    if response.status_code != 202:
        print(f"import refused: {_error(response)}", file=sys.stderr)
        return 2
    job_id = response.json()["id"]
    print(f"import job {job_id}")
    return watch_job(job_id, api_url=api_url, api_key=api_key)
