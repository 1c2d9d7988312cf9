"""The built-in AI-EWG stages, on real media files (PyAV, jinja2, YAKE).

Importing this package registers every stage in `engine.stages.BUILTIN`, so a
stage configured with kind = "builtin" resolves to the function named here.
Modules are imported lazily by the engine (by their "module:function" path):
registering costs nothing and needs none of the media libraries.
"""

from __future__ import annotations

from ..stages import BUILTIN

STAGES: dict[tuple[str, str], str] = {
    ("episode", "discovered"): "engine.media.probe:run_discovered",
    ("episode", "transcribed"): "engine.media.transcribe:run_transcribed",
    ("episode", "enriched"): "engine.media.enrich:run_enriched",
    ("episode", "editorial"): "engine.media.editorial:run_editorial",
    ("episode", "rendered"): "engine.media.page:run_rendered",
    ("clip", "generated"): "engine.media.clips:run_generated",
    ("clip", "rendered"): "engine.media.clips:run_clip_rendered",
}

BUILTIN.update(STAGES)
