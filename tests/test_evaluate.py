"""Held-out evaluation (``echovids eval``): a real build of the kept clips, queries from the held-out ones."""

from __future__ import annotations

from pathlib import Path

from core.config import Settings
from core.evaluate import evaluate, load_records, split
from tests.index_fixtures import small_shards


def test_evaluation_builds_without_the_held_out_clips_and_scores_them(bal_train_dir: Path, audioset_meta: Path,
                                                                       tmp_path: Path):
    shards = small_shards(bal_train_dir, 120)
    settings = Settings(data_dir=tmp_path / "unused", audioset_meta=audioset_meta)
    result = evaluate(settings, shards, seed=3, holdout=0.2, max_queries=40, near_dup_queries=40,
                      data_dir=tmp_path / "eval")

    records = load_records(shards)
    kept, held = split(records, 3, 0.2)
    protocol = result["protocol"]
    assert (protocol["indexed_clips"], protocol["held_out_clips"], protocol["queries"]) == (len(kept), len(held), 40)
    assert not set(kept) & set(held)
    for method in (result["ours"], *result["baselines"].values()):
        assert 0.0 <= method["p_at_5"] <= 1.0 and 0.0 <= method["strict_p_at_5"] <= 1.0
    # The ranking beats the raw-Euclidean seed baseline even on a small index.
    assert result["ours"]["p_at_5"] > result["baselines"]["a_mean_seconds_euclidean_uint8"]["p_at_5"]
    # A noisy window of an indexed clip finds its own clip: the index really holds the kept clips.
    assert result["near_duplicate"]["top1_same_video"] >= 0.9
    # "Heard" is judged on the same queries with the label head the build trained: a label of the clip
    # (or of its ontology family) comes first for some of them, and the looser measures never count less.
    heard = result["heard"]
    assert heard["queries"] == 40
    assert 0.0 < heard["first_exact"] <= heard["first_in_family"] <= 1.0
    assert heard["first_exact"] <= heard["in_heard"] <= 1.0
    assert not (tmp_path / "unused").exists()  # the evaluation writes only where it was told
