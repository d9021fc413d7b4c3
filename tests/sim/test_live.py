"""The live twin keeps real time and serialises access from other threads."""

from __future__ import annotations

import threading
import time

import pytest

from plant.config import PlantDescription
from plant.packml import Command, CommandRefused, State
from sim.live import LiveTwin
from sim.twin import Twin


@pytest.fixture(scope="module")
def twin(demo_plant: PlantDescription) -> Twin:
    return Twin(demo_plant)


def test_real_time_and_commands(twin: Twin) -> None:
    twin.reset()
    seen: list[float] = []
    with LiveTwin(twin) as live:
        live.add_listener(lambda tw: seen.append(tw.time_s), every_ticks=25)
        t0 = time.perf_counter()
        live.submit(lambda tw: tw.machine("cnc_1").command(Command.RESET)).result(2)
        time.sleep(1.0)
        wall = time.perf_counter() - t0
        sim_t = live.read(lambda tw: tw.time_s)
        assert sim_t == pytest.approx(wall, abs=0.15)
        assert live.read(lambda tw: tw.machine("cnc_1").state) == State.IDLE
        # A refused command comes back to the submitter as the machine's own error.
        fut = live.submit(lambda tw: tw.machine("cnc_1").command(Command.UNHOLD))
        with pytest.raises(CommandRefused, match="only accepted in HELD"):
            fut.result(2)
    assert len(seen) >= 8  # 10 Hz listener for ~1 s
    assert not live.running


def test_listener_errors_do_not_stop_the_twin(twin: Twin) -> None:
    twin.reset()
    done = threading.Event()

    def bad(tw: Twin) -> None:
        raise RuntimeError("boom")

    with LiveTwin(twin, speed=4.0) as live:
        live.add_listener(bad, name="bad")
        live.add_listener(lambda tw: done.set() if tw.time_s > 0.5 else None)
        assert done.wait(3)
    assert live.stats.listener_errors["bad"] > 10
