"""How the console writes states and numbers."""

from __future__ import annotations

from ewg_tui.screens.verb_catalog import VERBS, VERBS_BY_ACTION, stage_choices
from ewg_tui.widgets import formatting as fmt
from ewg_tui.widgets.error_detail import recovery_hint


def test_waiting_retry_counts_down_then_is_due():
    row = {"status": "retrying", "attempts": 1, "next_attempt_at": 114.2}
    assert fmt.status_label(row, 100.0, 3) == "retry 2/3 in 14s"
    assert fmt.status_label(row, 114.0, 3) == "retry 2/3 due"


def test_durations_sizes_and_ids():
    assert [fmt.duration(s) for s in (4, 125, 3720, 90000)] == ["4s", "2m05s", "1h02m", "1d01h"]
    assert fmt.megabytes(52000) == "50.8 GB" and fmt.size(2048) == "2.0 KB"
    short = fmt.middle_ellipsis("tech_talk_weekly_ep001_2026-11-29", 20)
    assert len(short) == 20 and short.endswith("ep001_2026-11-29")


def test_sparkline_scales_into_blocks():
    assert fmt.sparkline([0, 50, 100], 10, 0, 100) == "▁▅█"
    assert fmt.sparkline([5, 5], 10) == "▁▁"
    assert len(fmt.sparkline(list(range(100)), 8)) == 8


def test_every_verb_has_a_distinct_key_and_title():
    keys = [v.key for v in VERBS]
    assert len(keys) == len(set(keys))
    reserved = {
        "q",
        "p",
        "a",
        "i",
        "l",
        "j",
        "k",
        "g",
        "G",
        "space",
        "slash",
        "question_mark",
        "colon",
        "1",
        "2",
        "3",
    }
    assert not reserved & set(keys)


def test_stage_choices_offer_only_reachable_stages():
    reprocess, rollback = VERBS_BY_ACTION["reprocess"], VERBS_BY_ACTION["rollback"]
    row = {"kind": "episode", "stage": "transcribed"}
    assert [v for v, _ in stage_choices(reprocess, row)] == ["", "transcribed", "enriched"]
    assert [v for v, _ in stage_choices(rollback, row)] == ["discovered"]


def test_recovery_hint_names_the_key_the_engine_suggests():
    assert recovery_hint({"status": "failed", "error_class": "persistent"}).startswith("R force reprocess")
    assert "e extend" in recovery_hint({"status": "running", "verdict": "STALLED"})
    assert recovery_hint({"status": "stopped"}).startswith("u resume")
