"""The HTTP service: `create_app(workspace)` (FastAPI), served by `shortlist serve` (uvicorn).

A face on top of the house, like the command line: it imports the pipeline and the item
search; nothing below imports it. See docs/service.md.
"""

from shortlist.service.app import create_app

__all__ = ["create_app"]
