"""`python -m bento_compile.adapters.server`: the HTTP server every container and device runs.

Configured by environment, the way platforms configure containers:
BENTO_COMPILE_BENTO (the Bento folder), PORT (Cloud Run / Knative set it),
HOST (default 127.0.0.1; containers pass 0.0.0.0), BENTO_COMPILE_LOAD (background).
"""

from __future__ import annotations

import os

from .http_app import create_app


def run(bento_dir: str, host: str = "127.0.0.1", port: int = 3000, load_mode: str = "background",
        log_level: str = "info") -> None:
    import uvicorn

    app = create_app(bento_dir, load_mode=load_mode)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


def main() -> None:
    bento = os.environ.get("BENTO_COMPILE_BENTO")
    if not bento:
        raise SystemExit("set BENTO_COMPILE_BENTO to the Bento folder to serve")
    run(bento, os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "3000")),
        os.environ.get("BENTO_COMPILE_LOAD", "background"))


if __name__ == "__main__":
    main()
