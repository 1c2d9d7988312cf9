"""Episode stage `rendered`: a self-contained HTML page and metadata.json.

The page inlines its CSS and a few lines of JavaScript (transcript search),
so it can be copied anywhere or opened from disk. Autoescaping is on: titles
and transcript text come from files we do not control.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from ..stages import StageContext
from .common import episode_date, read_input, timestamp, write_json

PAGE = jinja2.Environment(
    autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
).from_string("""\
<!doctype html>
<html lang="{{ language }}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }} · {{ show }}</title>
<meta name="description" content="{{ summary }}">
<meta name="keywords" content="{{ keywords | map(attribute='phrase') | join(', ') }}">
<style>
body { font: 16px/1.5 system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
header p { color: #555; margin: 0; }
.tags span { display: inline-block; background: #eef; border-radius: 1em; padding: 0 .6em; margin: .15em; }
#search { width: 100%; padding: .4em; font-size: 1rem; }
#transcript { list-style: none; padding: 0; }
#transcript li { padding: .15em 0; }
#transcript time, .clips time { font-family: monospace; color: #777; margin-right: .6em; }
#transcript li.hidden { display: none; }
</style>
</head>
<body>
<header>
<h1>{{ title }}</h1>
<p><span class="show">{{ show }}</span> · <time datetime="{{ date }}">{{ date }}</time> · {{ duration_text }}</p>
</header>
<section id="summary"><h2>Summary</h2><p>{{ summary }}</p></section>
{% if llm_summary %}<section id="llm-summary"><h2>Summary ({{ llm_model }})</h2><p>{{ llm_summary }}</p></section>{% endif %}
<section id="keywords"><h2>Keywords</h2><p class="tags">{% for kw in keywords %}<span>{{ kw.phrase }}</span>{% endfor %}</p>
{% if topics %}<p>Topics: {{ topics | map(attribute='name') | join(', ') }}</p>{% endif %}</section>
<section id="clips"><h2>Clips</h2>
{% if clips %}<ol class="clips">{% for clip in clips %}
<li id="clip-{{ clip.key }}"><time>{{ clip.start_text }}–{{ clip.end_text }}</time>{{ clip.title }}</li>{% endfor %}
</ol>{% else %}<p>No clips were selected for this episode.</p>{% endif %}</section>
<section><h2>Transcript</h2>
<input id="search" type="search" placeholder="Search the transcript" aria-label="Search the transcript">
<ol id="transcript">{% for seg in segments %}
<li data-start="{{ seg.start }}"><time>{{ seg.start_text }}</time>{{ seg.text }}</li>{% endfor %}
</ol></section>
<script>
document.getElementById("search").addEventListener("input", function (e) {
  var q = e.target.value.toLowerCase();
  document.querySelectorAll("#transcript li").forEach(function (li) {
    li.classList.toggle("hidden", q !== "" && li.textContent.toLowerCase().indexOf(q) === -1);
  });
});
</script>
</body>
</html>
""")


def run_rendered(ctx: StageContext) -> None:
    probe = read_input(ctx, "discovered", "probe.json")
    transcript = read_input(ctx, "transcribed", "segments.json")
    enrichment = read_input(ctx, "enriched", "enrichment.json")
    editorial = read_input(ctx, "editorial", "editorial.json")
    ctx.progress(0.2, "rendering page")
    date = episode_date(ctx.item.id, probe.get("mtime"))
    title = ctx.item.title or Path(ctx.item.source).stem
    clips = [
        {
            **clip,
            "id": f"{ctx.item.id}__{clip['key']}",
            "start_text": timestamp(clip["start"]),
            "end_text": timestamp(clip["end"]),
        }
        for clip in editorial.get("clips", [])
    ]
    segments = [{**seg, "start_text": timestamp(seg["start"])} for seg in transcript["segments"]]
    llm = enrichment.get("llm") or {}
    html = PAGE.render(
        language=ctx.options.get("language", "en"),
        title=title,
        show=ctx.item.show,
        date=date,
        duration_text=timestamp(probe["duration"]),
        summary=enrichment.get("summary", ""),
        llm_summary=llm.get("summary"),
        llm_model=llm.get("model"),
        keywords=enrichment.get("keywords", []),
        topics=enrichment.get("topics", []),
        clips=clips,
        segments=segments,
    )
    ctx.cancel.check()
    (ctx.output_dir / "index.html").write_text(html, encoding="utf-8")
    write_json(
        ctx.output_dir / "metadata.json",
        {
            "id": ctx.item.id,
            "title": title,
            "show": ctx.item.show,
            "date": date,
            "source": ctx.item.source,
            "duration": probe["duration"],
            "summary": enrichment.get("summary", ""),
            "llm_summary": llm.get("summary"),
            "keywords": [kw["phrase"] for kw in enrichment.get("keywords", [])],
            "topics": [t["name"] for t in enrichment.get("topics", [])],
            "clips": [{k: c[k] for k in ("id", "key", "start", "end", "title")} for c in clips],
            "transcript": {"source": transcript.get("source"), "segments": len(segments)},
            "page": "index.html",
        },
    )
    ctx.progress(1.0, "page written")
