"""Episode stage `enriched`: keywords, topics and an extractive summary.

Keywords come from YAKE (unsupervised, per document, deterministic). Topics
map the transcript onto a small lexicon (options.topics overrides the AI-EWG
default); when nothing matches, the strongest single-word keywords stand in.
The summary is the few sentences that carry the most keyword weight, in
their original order. With options.llm_service an Ollama-compatible model
also writes a summary (kept next to the extractive one).
"""

from __future__ import annotations

import re
from collections import Counter

import yake

from .. import errors
from ..errors import StageError
from ..stages import StageContext
from . import llm
from .common import option, read_input, write_json

DEFAULT_TOPICS: dict[str, list[str]] = {
    "Machine learning": [
        "neural network",
        "neural networks",
        "training",
        "model",
        "models",
        "learning",
        "reinforcement",
        "evaluation",
        "benchmark",
        "benchmarks",
    ],
    "Language models": ["language model", "language models", "llm", "gpt", "prompt", "tokens", "chatbot"],
    "Hardware": [
        "gpu",
        "gpus",
        "chip",
        "chips",
        "cluster",
        "clusters",
        "edge devices",
        "hardware",
        "silicon",
    ],
    "Robotics": ["robot", "robots", "robotics", "autonomous"],
    "Privacy and security": ["privacy", "security", "data protection", "encryption", "attack"],
    "Open source": ["open source", "open-source", "community", "license"],
    "Business": ["startup", "startups", "market", "cost", "cheaper", "funding", "teams", "production"],
}

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def extract_keywords(text: str, language: str, top: int, ngram: int) -> list[dict]:
    extractor = yake.KeywordExtractor(lan=language, n=ngram, top=top, dedupLim=0.9)
    found = extractor.extract_keywords(text)
    # YAKE: lower score = more relevant; ties are broken by phrase for a stable order.
    ranked = sorted(found, key=lambda kv: (round(kv[1], 12), kv[0].lower()))
    return [{"phrase": phrase, "score": round(float(score), 6)} for phrase, score in ranked]


def keyword_weights(keywords: list[dict]) -> dict[str, float]:
    """Rank-based weights (1.0 for the best keyword down to 1/n): YAKE's raw scores span many magnitudes."""
    n = len(keywords)
    return {kw["phrase"].lower(): (n - i) / n for i, kw in enumerate(keywords)}


def weight_of(text: str, weights: dict[str, float]) -> float:
    lowered = f" {re.sub(r'[^a-z0-9]+', ' ', text.lower())} "
    return sum(w for phrase, w in weights.items() if f" {phrase} " in lowered)


def find_topics(text: str, lexicon: dict[str, list[str]], keywords: list[dict], limit: int) -> list[dict]:
    lowered = f" {re.sub(r'[^a-z0-9]+', ' ', text.lower())} "
    counts = Counter()
    for topic, terms in lexicon.items():
        for term in terms:
            norm = re.sub(r"[^a-z0-9]+", " ", term.lower()).strip()
            if norm:
                counts[topic] += lowered.count(f" {norm} ")
    topics = [
        {"name": name, "mentions": n}
        for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        if n
    ]
    if not topics:
        singles = [kw["phrase"] for kw in keywords if " " not in kw["phrase"]]
        topics = [
            {"name": word.capitalize(), "mentions": lowered.count(f" {word.lower()} ")} for word in singles
        ]
    return topics[:limit]


def extractive_summary(segments: list[dict], weights: dict[str, float], sentences: int) -> list[str]:
    candidates: list[tuple[int, str]] = []
    for seg in segments:
        for sentence in _SENTENCE.split(seg["text"]):
            sentence = sentence.strip()
            if len(sentence.split()) >= 4:
                candidates.append((len(candidates), sentence))
    seen: set[str] = set()
    scored = []
    for order, sentence in candidates:
        if sentence.lower() in seen:
            continue  # captions repeat lines; a summary should not
        seen.add(sentence.lower())
        words = len(sentence.split())
        scored.append((weight_of(sentence, weights) / words**0.5, order, sentence))
    best = sorted(scored, key=lambda t: (-t[0], t[1]))[:sentences]
    return [sentence for _score, _order, sentence in sorted(best, key=lambda t: t[1])]


def _llm_summary(ctx: StageContext, text: str) -> dict | None:
    service = option(ctx, "llm_service", None, str)
    if not service:
        return None
    if service not in ctx.config.services:
        raise StageError(
            errors.CONFIG_ERROR,
            f"options.llm_service names {service!r}, but there is no [services.{service}] in ewg.toml",
            suggestion=f'Add [services.{service}] with url = "http://127.0.0.1:11434/api/tags", '
            "then restart and retry.",
        )
    if service not in ctx.stage_config.services:
        raise StageError(
            errors.CONFIG_ERROR,
            f"[stages.episode.enriched] uses the LLM service {service!r} but does "
            f"not list it in services, so it cannot wait as blocked while it is down",
            suggestion=f'Add services = ["{service}"] to [stages.episode.enriched], then retry.',
        )
    model = option(ctx, "llm_model", None, str)
    if not model:
        raise StageError(
            errors.CONFIG_ERROR,
            "options.llm_service is set but options.llm_model is not",
            suggestion='Set options.llm_model (e.g. "llama3.2") in [stages.episode.enriched].',
        )
    timeout = option(ctx, "llm_timeout", ctx.config.timeouts.api_requests, float)
    attempts = option(ctx, "llm_attempts", 3, int)
    limit = option(ctx, "llm_max_chars", 12000, int)
    prompt = (
        option(
            ctx,
            "llm_prompt",
            "Summarise this episode transcript in three sentences for a web page. "
            "Answer with the summary only.\n\n{transcript}",
            str,
        )
    ).replace("{transcript}", text[:limit])
    ctx.progress(0.6, f"asking {service} ({model})")
    url = ctx.config.services[service].url
    summary = llm.generate(
        service, url, model, prompt, timeout, attempts, wait_base=option(ctx, "llm_retry_wait", 0.5, float)
    )
    return {"service": service, "model": model, "summary": summary}


def run_enriched(ctx: StageContext) -> None:
    transcript = read_input(ctx, "transcribed", "segments.json")
    segments = transcript["segments"]
    text = "\n".join(seg["text"] for seg in segments)
    ctx.progress(0.1, "extracting keywords")
    keywords = extract_keywords(
        text,
        option(ctx, "language", "en", str),
        option(ctx, "keywords", 12, int),
        option(ctx, "keyword_ngram", 2, int),
    )
    ctx.cancel.check()
    weights = keyword_weights(keywords)
    lexicon = option(ctx, "topics", DEFAULT_TOPICS, dict)
    topics = find_topics(text, lexicon, keywords, option(ctx, "max_topics", 5, int))
    ctx.progress(0.4, "summarising")
    summary = extractive_summary(segments, weights, option(ctx, "summary_sentences", 3, int))
    ctx.cancel.check()
    generated = _llm_summary(ctx, text)
    write_json(
        ctx.output_dir / "enrichment.json",
        {
            "keywords": keywords,
            "topics": topics,
            "summary": " ".join(summary),
            "summary_sentences": summary,
            "llm": generated,
            "words": len(text.split()),
        },
    )
    ctx.progress(1.0, f"{len(keywords)} keywords, {len(topics)} topics")
