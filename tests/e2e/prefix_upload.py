"""Uploads with py-rattler-build's prefix.dev client (`rattler-build upload prefix`), in its own
process, so that the CI environment it reads (GitHub Actions' or GitLab CI's variables, read by
the Rust extension) is the one the test gives it. With no key it does trusted publishing.

usage: prefix_upload.py <server-url> <channel> <file> [<api-key>]

Prints {"uploaded": true} or {"error": "<the client's error>"}.
"""

import json
import sys

import rattler_build


def main(url: str, channel: str, path: str, api_key: str | None = None):
    try:
        rattler_build.upload_package_to_prefix([path], url, channel, api_key=api_key)
    except Exception as error:  # reported as output so the test can show it
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}), flush=True)
        return
    print(json.dumps({"uploaded": True}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
