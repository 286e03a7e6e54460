"""Container HEALTHCHECK: exit 0 when /health/live answers 200, else 1.

Uses only the standard library, so the image needs no curl or wget.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/health/live"
    # No proxy: HTTP(S)_PROXY in the environment must not route loopback away.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as error:
        # A 4xx/5xx answer arrives as an exception that still holds the open
        # response; close it, or Python 3.14 reports the leak as it exits.
        error.close()
        return 1
    except OSError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
