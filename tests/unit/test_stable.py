"""Live values that hold still (onvifcam.cameras.stable): snapping, rounding, hysteresis."""

from __future__ import annotations

import random

import pytest

from onvifcam.cameras.stable import StableRates, Steady, round_sig, snap_fps


@pytest.mark.parametrize(
    ("raw", "out"),
    [(25.3, 25.0), (24.6, 25.0), (29.9, 29.97), (23.98, 23.976), (59.9, 59.94), (17.0, 17.0)],
)
def test_snap_fps(raw: float, out: float) -> None:
    assert snap_fps(raw) == out


def test_round_sig() -> None:
    assert [round_sig(x) for x in (6597, 6441, 6319, 1234, 99.4, 0.2)] == [
        6600,
        6400,
        6300,
        1200,
        99,
        1,
    ]


def test_a_noisy_steady_stream_reads_the_same_every_poll() -> None:
    """The issue's symptom: 25, 24, 23 fps and 6597, 6441, 6319 kbit/s on one stream."""
    rng = random.Random(7)
    rates = StableRates()
    seen = []
    for tick in range(120):
        rates.feed(None, 25 + rng.uniform(-2, 2), 6_400_000 * rng.uniform(0.7, 1.3), 50)
        if tick >= 15:
            seen.append((rates.fps.value, rates.kbps.value, rates.gov.value))
    assert len(set(seen)) == 1, set(seen)
    assert seen[0][0] in (24.0, 25.0) and seen[0][2] == 50  # no SPS timing: the nearer rate
    assert 5500 <= seen[0][1] <= 7300


def test_a_real_change_is_followed_to_its_new_value() -> None:
    rates = StableRates()
    for _ in range(30):
        rates.feed(None, 30.0, 4_000_000.0, 60)
    assert (rates.fps.value, rates.kbps.value, rates.gov.value) == (30.0, 4000, 60)
    for _ in range(40):
        rates.feed(None, 15.0, 1_000_000.0, 30)
    assert (rates.fps.value, rates.gov.value) == (15.0, 30)
    assert rates.kbps.value == 1000 and rates.kbps.settled


def test_sps_frame_rate_wins_and_is_settled_at_once() -> None:
    rates = StableRates()
    rates.feed(50.0, 47.0, 0.0, None)
    assert rates.fps.value == 50.0 and rates.fps.settled


def test_steady_follows_a_new_value_then_settles() -> None:
    s = Steady(band=0.2, rounder=round)
    for c in (100, 90, 95, 96, 96, 96):
        s.update(c)
    assert s.value == 95 and s.settled  # the mean of the first five, settled
    assert s.update(96) == 95
    for c in (110, 85, 105):  # within the band of the average: no change
        s.update(c)
    assert s.value == 95
