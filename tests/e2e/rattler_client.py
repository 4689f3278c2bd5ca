"""Solves and installs with py-rattler (the engine of pixi), in its own process.

py-rattler's interpreter sometimes aborts at exit after its work is done, so the tests run it
as a child and judge it by the JSON it prints, not by its exit status.

usage: rattler_client.py <gateway|fetch> <channel-url> <prefix> <cache-dir> <platform> <spec>...
"""

import asyncio
import json
import sys

import rattler


async def main(mode: str, channel_url: str, prefix: str, cache: str, platform: str, specs: list[str]):
    channel = rattler.Channel(channel_url)
    platforms = [platform, "noarch"]
    # The authenticated client reads RATTLER_AUTH_FILE, as pixi does.
    client = rattler.Client.authenticated_client()
    if mode == "gateway":
        # The Gateway is what pixi uses: it asks for shards first and falls back to repodata.json.
        gateway = rattler.Gateway(cache_dir=cache, client=client)
        records = await rattler.solve(sources=[channel], specs=specs, platforms=platforms, gateway=gateway)
    else:
        sparse = await rattler.fetch_repo_data(
            channels=[channel],
            platforms=[rattler.Subdir(p) for p in platforms],
            cache_path=cache,
            callback=None,
            client=client,
        )
        records = await rattler.solve(sources=sparse, specs=specs, platforms=platforms)
    await rattler.install(records, target_prefix=prefix, cache_dir=f"{cache}/pkgs", show_progress=False, client=client)
    print(json.dumps({"records": [{"name": r.name.normalized, "version": str(r.version), "url": str(r.url), "sha256": r.sha256.hex() if r.sha256 else None} for r in records]}), flush=True)


if __name__ == "__main__":
    mode, url, prefix, cache, platform, *specs = sys.argv[1:]
    try:
        asyncio.run(main(mode, url, prefix, cache, platform, specs))
    except Exception as error:  # reported as output so the test can show it
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}), flush=True)
