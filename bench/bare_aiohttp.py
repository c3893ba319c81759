"""The floor of what aiohttp can do: N workers, one session, stream each body to a file.

    python bench/bare_aiohttp.py LIST OUT_DIR [--concurrency 64] [--uvloop]

LIST has one `URL<TAB>FILE_NAME` per line. Nothing else: no retries, no checks, no hashing,
no temp files, no state. Exits 1 if any download failed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import aiohttp

CHUNK = 64 * 1024


async def fetch_one(session: aiohttp.ClientSession, url: str, path: Path) -> bool:
    async with session.get(url) as resp:
        if resp.status != 200:
            return False
        with path.open("wb") as out:
            async for chunk in resp.content.iter_chunked(CHUNK):
                out.write(chunk)
    return True


async def worker(session: aiohttp.ClientSession, queue: asyncio.Queue[tuple[str, Path]], failed: list[str]) -> None:
    while True:
        try:
            url, path = queue.get_nowait()
        except asyncio.QueueEmpty:
            return
        try:
            ok = await fetch_one(session, url, path)
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            ok = False
            print(f"{url}: {err!r}", file=sys.stderr)
        if not ok:
            failed.append(url)


async def main(jobs: list[tuple[str, Path]], concurrency: int) -> int:
    queue: asyncio.Queue[tuple[str, Path]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    failed: list[str] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session, queue, failed) for _ in range(concurrency)))
    print(f"{len(jobs) - len(failed)} downloaded, {len(failed)} failed", file=sys.stderr)
    return 1 if failed else 0


def read_jobs(list_file: Path, out: Path) -> list[tuple[str, Path]]:
    jobs = []
    for line in list_file.read_text().splitlines():
        url, _, name = line.partition("\t")
        jobs.append((url, out / name))
    return jobs


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("list_file", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--uvloop", action="store_true", help="on uvloop's event loop instead of asyncio's")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    args.out.mkdir(parents=True, exist_ok=True)
    sys.exit(asyncio.run(main(read_jobs(args.list_file, args.out), args.concurrency)))
