"""A chunk's flicker figures, and a video's from its chunks': pure Python, so the Airflow side sums
them without OpenCV, numpy or torch (the measurement itself is ``scoring.flicker``)."""

from __future__ import annotations

DEFAULT_EVERY = 8  # in a chunk, the pair (i, i+1) for every 8th frame i: ~1.3% of a pop-art chunk's time
FLOW_SIDE = 640  # flow and error run on frames whose longer side is at most this


def combine(parts: list[dict | None]) -> dict | None:
    """A video's flicker from its chunks' summaries (pairs across chunk boundaries are not
    sampled: each chunk measures its own frames)."""
    parts = [p for p in parts if p and p.get("pairs")]
    if not parts:
        return None
    pairs = sum(p["pairs"] for p in parts)
    styled = sum(p["styled_sum"] for p in parts) / pairs
    source = sum(p["source_sum"] for p in parts) / pairs
    return {"warping_error": round(styled, 6), "source_warping_error": round(source, 6),
            "ratio": round(styled / source, 3) if source > 0 else None, "pairs": pairs,
            "every": parts[0]["every"], "flow": f"OpenCV DIS (fast) at <= {FLOW_SIDE} px"}
