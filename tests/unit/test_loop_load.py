"""LoopLoad: how full the event loop is, and when it says a process is overloaded."""

from __future__ import annotations

import itertools
import logging

import pytest

from omni_rtc.loop_load import MAX_LAG_S, TICK_S, LoopLoad
from omni_rtc.metrics import Metrics
from tests.helpers import busy_loop, wait_for

MS = 0.001
TICK = 0.05


class Ticks:
    """Feeds a LoopLoad ticks of wall time with a given busy share and lag."""

    def __init__(self, load: LoopLoad) -> None:
        self.load, self.wall, self.cpu = load, 0.0, 0.0

    def run(self, count: int, busy: float, lag_s: float = 0.5 * MS) -> LoopLoad:
        tick = self.load.tick_s
        for _ in range(count):
            self.wall += tick + lag_s
            self.cpu += (tick + lag_s) * busy
            self.load.record(self.wall, self.cpu, lag_s)
        return self.load

    def seconds(self, seconds: float, busy: float, lag_s: float = 0.5 * MS) -> LoopLoad:
        return self.run(round(seconds / self.load.tick_s), busy, lag_s)

    def calls(
        self,
        seconds: float,
        lean: float,
        full: float,
        late_above: float = 1.0,
        lag_s: float = 0.5 * MS,
    ) -> list[float]:
        """Calls that cost ``lean`` of the core with every camera lean and ``full`` with
        none (a loop reads at most 100%; 25 ms late when busier than ``late_above``, else
        ``lag_s``), following the guard's share tick by tick; returns the shares seen."""
        shares = []
        for _ in range(round(seconds / self.load.tick_s)):
            busy = min(1.0, lean + (full - lean) * (1 - self.load.lean_share))
            self.run(1, busy=busy, lag_s=25 * MS if busy > late_above else lag_s)
            shares.append(self.load.lean_share)
        return shares


def share_steps(shares: list[float]) -> list[float]:
    """The shares seen, each run of equal ones once."""
    return [share for share, _ in itertools.groupby(shares)]


def window() -> tuple[LoopLoad, Ticks]:
    load = LoopLoad(0.9, tick_s=TICK, window_s=2.0)  # a window of 40 ticks
    return load, Ticks(load)


def test_a_loop_with_time_to_spare_is_not_overloaded() -> None:
    load, ticks = window()
    ticks.run(100, busy=0.7)
    assert not load.overloaded
    assert load.has_room(settled=10, starting=0)
    assert load.busy == pytest.approx(0.7)
    assert load.lag_s == pytest.approx(0.5 * MS)


def test_a_loop_busier_than_the_limit_is_overloaded() -> None:
    load, ticks = window()
    ticks.run(40, busy=0.5)
    ticks.run(20, busy=1.0)  # the window now averages 0.75
    assert not load.overloaded
    ticks.run(20, busy=1.0)
    assert load.overloaded
    assert "100% busy" in load.describe()


def test_a_late_loop_is_overloaded_even_when_its_thread_is_idle() -> None:
    load, ticks = window()  # (another process takes the core)
    ticks.run(40, busy=0.2)
    ticks.run(21, busy=0.2, lag_s=25 * MS)
    assert load.overloaded
    assert load.lag_s == pytest.approx(25 * MS)


def test_single_late_ticks_are_not_overload() -> None:
    load, ticks = window()
    for _ in range(20):
        ticks.run(3, busy=0.5)
        ticks.run(1, busy=0.5, lag_s=200 * MS)  # a key frame decoded on the loop, a GC pass
    assert not load.overloaded


def test_overload_ends_only_once_the_loop_has_time_again() -> None:
    load = LoopLoad(0.6, tick_s=TICK, window_s=2.0)  # (under the 90% where it goes lean)
    ticks = Ticks(load)
    ticks.run(40, busy=0.8)
    assert load.overloaded
    ticks.run(40, busy=0.55)  # under the limit, but not by enough
    assert load.overloaded
    ticks.run(40, busy=0.45)
    assert not load.overloaded
    assert not load.lean


def test_a_late_loop_is_overloaded_until_it_is_well_on_time() -> None:
    load, ticks = window()
    ticks.run(40, busy=0.2, lag_s=25 * MS)
    assert load.overloaded
    ticks.run(40, busy=0.2, lag_s=5 * MS)  # under 10 ms, but not by enough
    assert load.overloaded
    ticks.run(40, busy=0.2)
    assert load.lean  # on time, but lean (no call taken) for at least 10 s
    assert load.overloaded
    ticks.run(160, busy=0.2)
    assert not load.overloaded


def test_no_verdict_from_the_first_few_ticks() -> None:
    load, ticks = window()
    ticks.run(19, busy=1.0)
    assert not load.overloaded  # a slow start-up is not overload
    ticks.run(1, busy=1.0)
    assert load.overloaded


def test_a_zero_limit_never_refuses() -> None:
    load = LoopLoad(0.0)
    Ticks(load).run(100, busy=1.0, lag_s=1.0)
    assert not load.overloaded
    load.start()  # no probe either (outside a loop this would raise if it tried)


@pytest.mark.parametrize("limit", [-0.1, 1.5])
def test_a_limit_outside_one_core_is_refused(limit: float) -> None:
    with pytest.raises(ValueError, match="share of one core"):
        LoopLoad(limit)


async def test_the_probe_sees_a_busy_loop_and_its_recovery() -> None:
    load = LoopLoad(0.6, tick_s=0.01, window_s=0.3)
    load.start()
    load.start()  # idempotent
    try:
        with busy_loop():
            await wait_for(lambda: load.overloaded, 5)
            # busy, or late when other processes take the core from this busy loop
            assert load.busy > 0.6 or load.lag_s > MAX_LAG_S
        await wait_for(lambda: not load.overloaded, 5)
    finally:
        load.stop()
    load.stop()  # idempotent


def test_calls_just_taken_count_before_they_show_in_the_busy_share() -> None:
    now = [0.0]
    load = LoopLoad(0.85, tick_s=TICK, window_s=2.0, clock=lambda: now[0])
    Ticks(load).run(40, busy=0.72)  # 14 calls at ~5.1% each
    assert load.has_room(settled=14, starting=0)  # 72% + 5.1% for one more
    load.taken("a")
    load.taken("b")
    assert not load.has_room(settled=16, starting=0)  # 72% + 2 young + this one: 87.4%
    assert "2 calls just started" in load.describe()
    load.gone("b")  # one ended young: it is not projected any longer
    assert load.has_room(settled=15, starting=0)
    assert not load.has_room(settled=15, starting=1)  # one more being set up
    now[0] += 3.5  # (the young call now shows in the busy share, were it measured)
    assert "just started" not in load.describe()  # (not only once has_room forgot it)
    assert load.has_room(settled=15, starting=0)


def test_no_projection_from_fewer_than_three_calls() -> None:
    load, ticks = window()
    ticks.run(40, busy=0.5)  # something else keeps the loop busy (an embedding app)
    load.taken("a")
    assert load.has_room(settled=2, starting=1)  # 50% is not the cost of two calls
    ticks.run(40, busy=0.95)
    assert not load.has_room(settled=0, starting=0)  # but a full loop is full


def test_no_verdict_and_no_refusal_before_half_a_window() -> None:
    load, ticks = window()
    ticks.run(3, busy=1.0)
    assert load.has_room(settled=0, starting=0)


def test_no_room_while_overloaded_whatever_the_projection() -> None:
    load, ticks = window()
    ticks.run(40, busy=0.2, lag_s=25 * MS)
    assert not load.has_room(settled=0, starting=0)
    assert LoopLoad(0.0).has_room(settled=1000, starting=1000)


def test_a_lag_trip_clears_on_time_even_while_the_loop_stays_fairly_busy() -> None:
    load, ticks = window()
    ticks.run(40, busy=0.8, lag_s=25 * MS)  # (another process took the core a while)
    assert load.overloaded
    ticks.run(300, busy=0.8)  # on time again; 80% is under the 90% limit
    assert not load.overloaded


def test_a_low_limit_still_clears() -> None:
    load = LoopLoad(0.05, tick_s=TICK, window_s=2.0)
    ticks = Ticks(load)
    ticks.run(40, busy=0.5)
    assert load.overloaded
    ticks.run(40, busy=0.01)
    assert not load.overloaded


def test_a_disabled_guard_keeps_no_record_of_calls() -> None:
    load = LoopLoad(0.0)
    for i in range(1000):
        load.taken(str(i))
    assert "started" not in load.describe()


def default_limit(tick: float = TICK, calls: int = 24) -> tuple[LoopLoad, Ticks]:
    load = LoopLoad(0.75, tick_s=tick, window_s=2.0)  # --max-loop-busy 75: lean at 90%
    for i in range(calls):  # (settled calls: not projected as just started)
        load.cameras.taken(f"call-{i}")
    return load, Ticks(load)


TICKS = pytest.mark.parametrize("tick", [TICK, TICK_S], ids=["50ms-ticks", "default-ticks"])
"""Lean is judged in seconds, whatever the probe's tick."""


@TICKS
def test_a_nearly_full_loop_goes_lean_until_there_is_room_for_what_it_shed(tick: float) -> None:
    load, ticks = default_limit(tick)
    ticks.seconds(2, busy=0.8)
    assert load.overloaded
    assert not load.lean  # refusing calls is enough at 80%
    ticks.seconds(2, busy=0.95)  # a camera sends more: the calls it holds fill the loop
    assert load.lean_share == 1
    shares = ticks.calls(15, lean=0.6, full=0.95)  # full work costs 0.95 / 0.6 of lean
    assert load.lean  # > 75%; but 3/8 of the calls lean keep it at 82%, under 85%
    assert shares[-1] == 3 / 8
    assert set(shares) == {1, 3 / 8}
    assert load.busy == pytest.approx(0.6 + 0.35 * 5 / 8)
    assert not load.has_room(settled=10, starting=0)  # lean: no room for another call
    ticks.calls(10, lean=0.45, full=0.71)  # calls ended: 45% x 0.95 / 0.6 = 71% fits
    assert not load.lean
    assert not load.overloaded  # (71%: room for no more than 20 calls' share)
    assert load.has_room(settled=20, starting=0)


@TICKS
def test_the_cost_before_lean_is_that_of_its_last_half_second(tick: float) -> None:
    load, ticks = default_limit(tick)
    ticks.seconds(4, busy=0.85)
    ticks.seconds(0.7, busy=1.0)  # lean as the window reaches 90%; the last 0.5 s: 100%
    assert load.lean
    ticks.calls(15, lean=0.55, full=1.0)  # so full work costs 1.0 / 0.55 = 1.82x the lean
    assert load.lean  # work
    ticks.calls(10, lean=0.42, full=0.42 * 1.82)  # 76%: no room (judged from the last
    assert load.lean  # second, 95.5%: 73%, or the window, 90%: 69%)
    ticks.calls(10, lean=0.4, full=0.4 * 1.82)  # 73% fits
    assert not load.lean


@TICKS
def test_lean_lasts_at_least_its_hold_time(tick: float) -> None:
    load, ticks = default_limit(tick)
    ticks.seconds(4, busy=0.95)  # (light decoding first, for a window)
    assert load.lean
    ticks.seconds(5, busy=0.1)  # room for anything, but not on and off every window
    assert load.lean
    ticks.seconds(6, busy=0.1)
    assert not load.lean


@TICKS
def test_a_late_loop_goes_lean_until_it_is_on_time(tick: float) -> None:
    load, ticks = default_limit(tick)  # (another process takes the core)
    ticks.seconds(4, busy=0.3, lag_s=25 * MS)
    assert load.lean
    ticks.seconds(15, busy=0.3, lag_s=6 * MS)  # better, but still late
    assert load.lean
    ticks.seconds(3, busy=0.3)
    assert not load.lean


@TICKS
def test_lean_again_soon_after_keeps_the_larger_cost_of_full_work(tick: float) -> None:
    load, ticks = default_limit(tick)
    ticks.seconds(2, busy=0.95)
    ticks.calls(15, lean=0.5, full=0.95)  # full work seemed to cost 0.95 / 0.5 (capped at
    ticks.calls(10, lean=0.35, full=0.35 * 1.9)  # 2x)...
    assert not load.lean
    ticks.seconds(2, busy=1.0)  # lean again at once: a saturated loop reads 100% whatever
    assert load.lean  # the demand, so full work cost more than 0.35 x 1.9
    ticks.seconds(15, busy=0.8)  # this time 1.0 / 0.8 seems to be all it costs...
    ticks.calls(15, lean=0.5, full=0.5 * 1.25)  # ...0.5 x 1.25 would fit, 0.5 x 1.9 not
    assert load.lean
    ticks.calls(10, lean=0.35, full=0.35 * 1.25)
    assert not load.lean


@TICKS
def test_partly_lean_the_loop_stays_under_the_lean_limit_with_most_calls_in_full(
    tick: float,
) -> None:
    """Full work would take 105% of the core (a loop reads 100%), lean work 60%."""
    load, ticks = default_limit(tick)
    shares = ticks.calls(62, lean=0.6, full=1.05)
    steps = share_steps(shares)
    # the cost of full work seen: 1.0 / 0.6; 3/8 lean would hold it under 85%, but fewer
    # calls lean only to fit under 82.5% (a dead band): 1/2, 82.5% for the rest of the minute
    assert steps == [0, 1, 1 / 2]
    assert load.busy == pytest.approx(0.6 + 0.45 * 1 / 2)
    assert "(cameras of 50% of the calls at key frames only)" in load.describe()


@TICKS
def test_partly_lean_over_the_limit_makes_every_call_lean_and_learns_the_cost(
    tick: float,
) -> None:
    """Full work would take 120%: 1/2 lean (from the 100% read) is too little."""
    load, ticks = default_limit(tick)
    shares = ticks.calls(92, lean=0.6, full=1.2)
    steps = share_steps(shares)
    # every call lean again as the loop reaches 90%, the cost learnt from the last half
    # second's busy share (90% at 1/2: twice the lean work), then 5/8 lean holds
    assert steps == [0, 1, 1 / 2, 1, 5 / 8]
    assert load.busy == pytest.approx(0.6 + 0.6 * 3 / 8)


@TICKS
def test_partly_lean_it_stays_under_the_busy_share_at_which_it_got_late(tick: float) -> None:
    """Late above 80% busy (a thread of its own, another process on the core)."""
    load, ticks = default_limit(tick)
    shares = ticks.calls(92, lean=0.6, full=1.05, late_above=0.8)
    steps = share_steps(shares)
    # late at 82.5%, so aims at 77.5% (75%, going to fewer): 3/4 holds, on time
    assert steps == [0, 1, 1 / 2, 1, 3 / 4]
    assert load.busy == pytest.approx(0.6 + 0.45 * 1 / 4)
    assert load.lag_s < 1 * MS


@TICKS
def test_late_partly_lean_it_aims_under_the_busy_share_it_was_late_at(tick: float) -> None:
    """Each eighth of the calls costs 3% here: one eighth more lean (the least after being
    late) would still be late at 79.4%; aiming under 82.5% - 5% (- 2.5%) is not."""
    load, ticks = default_limit(tick)
    shares = ticks.calls(92, lean=0.7, full=0.95, late_above=0.79)
    steps = share_steps(shares)
    assert steps == [0, 1, 1 / 2, 1, 7 / 8]
    assert load.busy == pytest.approx(0.7 + 0.25 / 8)


@TICKS
def test_what_an_episode_learnt_is_kept_for_a_repeat_soon_after_only(tick: float) -> None:
    load, ticks = default_limit(tick)
    ticks.calls(2, lean=0.6, full=1.05)
    ticks.calls(60, lean=0.6, full=1.05, late_above=0.8)  # learns: late at 82.5%
    ticks.calls(15, lean=0.3, full=0.5)  # calls ended, or sent less: lean ends
    assert not load.lean  # (for a few seconds now)
    shares = ticks.calls(20, lean=0.6, full=1.05)  # lean again within 30 s
    assert shares[-1] == 3 / 4  # (aims under 77.5%, as it learnt)
    ticks.calls(15, lean=0.3, full=0.5)
    assert not load.lean
    ticks.seconds(40, busy=0.5)
    shares = ticks.calls(20, lean=0.6, full=1.05)  # lean again after 30 s: a new episode
    assert shares[-1] == 1 / 2
    ticks.calls(60, lean=0.6, full=1.05, late_above=0.8)  # learns again...
    load.stop()  # ...and forgets it all when the probe stops
    for i in range(24):
        load.cameras.taken(f"call-{i}")
    shares = ticks.calls(20, lean=0.6, full=1.05)
    assert shares[-1] == 1 / 2


@TICKS
def test_it_goes_back_to_full_work_only_under_the_busy_share_it_was_late_at(
    tick: float,
) -> None:
    load, ticks = default_limit(tick)
    ticks.calls(62, lean=0.6, full=1.05, late_above=0.7)  # late above 70%: learns it
    shares = ticks.calls(60, lean=0.4, full=0.72, late_above=0.7)  # fewer calls: 72%
    assert load.lean  # fits under 75%, but not under 65% (the 70% it got late at, - 5%)
    assert min(shares) > 0  # so it stays partly lean,
    assert max(shares[-round(20 / tick) :]) < 1  # (its last 20 s)
    assert load.busy < 0.7  # on time


@TICKS
def test_fewer_calls_lean_only_once_the_loop_is_on_time(tick: float) -> None:
    _, ticks = default_limit(tick)
    assert ticks.calls(62, lean=0.6, full=1.05)[-1] == 1 / 2
    ticks.calls(3, lean=0.6, full=1.05, lag_s=5 * MS)  # 5 ms late (not over 10 ms)
    shares = ticks.calls(30, lean=0.45, full=0.79, lag_s=5 * MS)  # and fewer calls
    assert set(shares) == {1 / 2}
    shares = ticks.calls(30, lean=0.45, full=0.79)  # on time
    assert shares[-1] < 1 / 2


@TICKS
def test_a_burst_partly_lean_does_not_make_full_work_seem_dearer_than_twice_lean(
    tick: float,
) -> None:
    _, ticks = default_limit(tick)
    assert ticks.calls(62, lean=0.6, full=1.05)[-1] == 1 / 2
    ticks.seconds(1.5, busy=1.0)  # a burst (key frames from every camera at once, say)
    shares = ticks.calls(40, lean=0.6, full=1.05)
    steps = share_steps(shares)
    assert steps == [1, 3 / 4]  # (the burst alone would say 2.8x)


@TICKS
def test_what_running_too_full_taught_is_forgotten_after_five_minutes(tick: float) -> None:
    load, ticks = default_limit(tick)
    assert ticks.calls(62, lean=0.6, full=1.05)[-1] == 1 / 2
    ticks.seconds(1.5, busy=1.0)  # a burst: full work seems to cost twice the lean work
    ticks.calls(30, lean=0.4, full=0.7)  # a third of the calls end: full work fits (70%)
    assert load.lean  # (as full work seems to cost 80%)
    shares = ticks.calls(300, lean=0.4, full=0.7)
    assert not load.lean  # five minutes after the burst: what it taught no longer holds
    assert shares[round(200 / tick)] > 0


def test_at_a_90_percent_limit_it_does_not_go_in_and_out_of_lean() -> None:
    load = LoopLoad(0.9, tick_s=TICK, window_s=2.0)  # lean at 90% too
    ticks = Ticks(load)
    for i in range(24):
        load.cameras.taken(f"call-{i}")
    shares = ticks.calls(300, lean=0.5, full=0.9)
    episodes = sum(1 for a, b in itertools.pairwise(shares) if not a and b)
    assert episodes == 1
    assert 0 < shares[-1] < 1  # (full work at 90% would be lean again at once)


@TICKS
def test_more_calls_lean_at_once_even_while_somewhat_late(tick: float) -> None:
    load, ticks = default_limit(tick)
    assert ticks.calls(62, lean=0.6, full=1.05)[-1] == 1 / 2
    ticks.calls(3, lean=0.6, full=1.05, lag_s=5 * MS)  # 5 ms late: not on time
    shares = ticks.calls(15, lean=0.67, full=1.1, lag_s=5 * MS)  # and cameras send more
    assert shares[-1] > 1 / 2
    assert load.busy < 0.9  # (not by running too full: it never reached 90%)


@TICKS
def test_a_share_is_kept_while_the_loop_is_within_its_aim_give_or_take(tick: float) -> None:
    load, ticks = default_limit(tick)
    assert ticks.calls(62, lean=0.6, full=1.05)[-1] == 1 / 2  # 82.5%
    shares = ticks.calls(60, lean=0.62, full=1.1)  # cameras send a little more: 86%
    assert set(shares) == {1 / 2}  # (85% aimed at, more lean over 87.5%)
    shares = ticks.calls(60, lean=0.58, full=1.0)  # a little less: 79%
    assert set(shares) == {1 / 2}  # (fewer lean under 82.5% only: 3/8 would be 84%)
    assert load.busy == pytest.approx(0.79)


@TICKS
def test_after_getting_too_full_partly_lean_it_never_sheds_as_little_again(tick: float) -> None:
    _, ticks = default_limit(tick)
    shares = ticks.calls(40, lean=0.5, full=1.0)  # full work: 2x lean (the most assumed)
    assert shares[-1] == 3 / 8  # 81%
    ticks.seconds(2, busy=1.0)  # a burst (key frames from every camera at once, say)
    shares = ticks.calls(40, lean=0.5, full=1.0)
    assert shares[0] == 1
    assert 3 / 8 < min(shares) < 1  # (what it knows of the costs alone says 3/8 again)


def test_the_calls_that_arrived_last_are_the_ones_lean_in_eighths() -> None:
    load, ticks = default_limit(TICK, calls=20)
    ticks.calls(30, lean=0.6, full=1.05)
    lean = [i for i in range(20) if load.lean_for(f"call-{i}")]
    assert lean == list(range(10, 20))  # 1/2 of 20 (as with 24 calls: 3/8, then 1/2)
    assert load.lean_share == 10 / 20
    load.gone("call-19")  # calls end: the share is that of the calls still up
    load.gone("call-0")
    assert load.lean_share == 9 / 18
    assert not load.lean_for("a-call-it-was-not-told-of")
    load.cameras.every = True
    assert load.lean_for("a-call-it-was-not-told-of")


@TICKS
def test_calls_ending_while_partly_lean_neither_end_lean_early_nor_flap(tick: float) -> None:
    """Each call costs 2.5% lean, 4.4% in full (24: 60% / 105%); the six that arrived
    first (in full) end, then the lean ones, one by one."""
    load, ticks = default_limit(tick)
    live = [f"call-{i}" for i in range(24)]

    def run(seconds: float) -> list[float]:
        shares = []
        for _ in range(round(seconds / tick)):
            busy = sum(0.025 if load.lean_for(c) else 0.04375 for c in live)
            ticks.run(1, busy=min(1.0, busy))
            shares.append(load.lean_share)
            assert load.busy < 0.9 or not 0 < shares[-1] < 1  # never 90% partly lean
        return shares

    run(40)
    for call in live[:6]:
        load.gone(call)
    live = live[6:]
    shares = run(40)
    assert load.lean  # 18 calls: 45% / 79%, over 75%: still lean, but fewer calls
    while load.lean and len(live) > 12:
        load.gone(live.pop())  # the latest (lean) calls end one by one
        shares += run(6)
    assert not load.lean  # 12 calls: 30% / 53%: full work fits
    changes = sum(1 for a, b in itertools.pairwise(shares) if a != b and b and a)
    assert changes <= 8  # (no flapping: a share is held 10 s at least)


def test_stopping_the_probe_drops_its_verdicts() -> None:
    load, ticks = default_limit()
    ticks.run(80, busy=1.0)
    assert load.lean
    assert load.overloaded
    load.stop()
    assert not load.lean
    assert not load.overloaded


def watched(load: LoopLoad) -> Metrics:
    """Metrics that export what ``load`` says, wired as the bridge wires them."""
    metrics = Metrics()
    metrics.watch_overload(lambda: load.overloaded, lambda: load.lean_share, lambda: load.light)
    return metrics


def test_the_metrics_say_which_processes_refuse_calls_and_which_are_lean() -> None:
    load, ticks = default_limit()
    metrics = watched(load)
    ticks.run(40, busy=0.8)
    text = metrics.render().decode()
    assert "omni_rtc_overloaded 1.0" in text
    assert "omni_rtc_video_lean 0.0" in text
    ticks.run(40, busy=0.95)
    assert "omni_rtc_video_lean 1.0" in metrics.render().decode()


def test_a_disabled_guard_never_goes_lean() -> None:
    load = LoopLoad(0.0, tick_s=TICK, window_s=2.0)
    Ticks(load).run(100, busy=1.0, lag_s=50 * MS)
    assert not load.lean


def test_going_lean_is_a_warning_once_per_five_minutes(caplog: pytest.LogCaptureFixture) -> None:
    _, ticks = default_limit()
    caplog.set_level(logging.INFO, logger="omni_rtc.load")
    for _ in range(10):  # lean, then full work again, ten times in ten minutes
        ticks.seconds(5, busy=0.95)
        ticks.seconds(55, busy=0.3)
    started = [r for r in caplog.records if "(fewer images) until it has" in r.getMessage()]
    assert len(started) == 10
    assert [r.levelno for r in started].count(logging.WARNING) == 2  # at 0 and 5 minutes


def test_a_process_at_capacity_says_so_once_per_five_minutes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    load = LoopLoad(0.6, tick_s=TICK, window_s=2.0)  # (under the 90% where it goes lean)
    ticks = Ticks(load)
    caplog.set_level(logging.INFO, logger="omni_rtc.load")
    for _ in range(10):  # in and out of overload for a minute
        ticks.run(60, busy=0.8)
        ticks.run(60, busy=0.4)
    said = [r for r in caplog.records if r.levelno >= logging.INFO and "calls" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING, logging.INFO]  # refusing, taking
    ticks.run(6000, busy=0.4)  # five minutes later
    ticks.run(60, busy=0.8)
    refusing = [r.getMessage() for r in caplog.records if "refusing" in r.getMessage()]
    assert "(and 9 more times since the last warning)" in refusing[-1]
