"""A tiny app for tests/test_cli.py: ``GET /`` answers with the configured ``greeting.text``.

It reads the configuration with ``argv=[]``, so a value can only come from the system properties that the
``meshkit`` CLI sets from its ``-D`` arguments (or from files and the environment), not from ``sys.argv``.
"""

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from meshkit.config import AppConfig

app = FastAPI()


@app.get("/", response_class=PlainTextResponse)
def greeting() -> str:
    return AppConfig.load(argv=[]).get("greeting.text") or "(not set)"
