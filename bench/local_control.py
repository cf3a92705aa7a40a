"""Local control: the student in the robot host's own process, driving the control loop at 500 Hz and 1 kHz.

For each student (the default state MLP and pixel conv students of ``distill``, stand-ins with random
weights unless ``--state-model``/``--pixel-model`` name exported ones) and each rate, the loop drives
a robot that replays recorded observations of the task (rendered frames for pixels) for ``--seconds``,
with the policy in onnxruntime in this process (``agent_runtime.local_policy.LocalPolicy``) and the
loop's default deadline (80% of the period), under the default scheduler and, with
``--realtime-priority``, under SCHED_FIFO. Reported: the achieved rate, tick-to-action latency
p50/p99, jitter p99, misses and overruns.

Targets (issue 18): 1 kHz with zero misses over 60 s for the state student; 500 Hz for the pixel student.

Usage: python -m bench.local_control [--seconds 60] [--rates 500 1000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from agent_runtime.local_policy import LocalPolicy
from agent_runtime.loop import LoopConfig, run_loop
from agent_runtime.onnx_policy import OnnxPolicy
from bench.serve_students import build_student, record_observations, spec_for
from bench.serve_workers import RecordedRobot, load_observations


def drive(
    model: Path, observations: Path, rate_hz: float, seconds: float, realtime_priority: int | None = None
) -> dict[str, Any]:
    """One loop: ``model`` driving the recorded robot at ``rate_hz`` for ``seconds``."""
    recorded = load_observations(observations)
    spec = OnnxPolicy(model).spec  # the recorded robot observes what the policy takes
    policy = LocalPolicy(model, spec)
    robot = RecordedRobot(spec, recorded, offset=0)
    config = LoopConfig(rate_hz=rate_hz, duration_s=seconds, realtime_priority=realtime_priority)
    stats = run_loop(robot, policy, config)
    return stats.summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="inverted_pendulum")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rates", nargs="+", type=float, default=[500.0, 1000.0])
    parser.add_argument("--students", nargs="+", choices=["state", "pixels"], default=["state", "pixels"])
    parser.add_argument("--realtime-priority", type=int, nargs="+", default=[0],
                        help="SCHED_FIFO priorities to run each row at (0: the default scheduler)")  # fmt: skip
    parser.add_argument("--state-model", type=Path, help="an exported state student (default: a stand-in)")
    parser.add_argument("--pixel-model", type=Path, help="an exported pixel student (default: a stand-in)")
    args = parser.parse_args()
    from bench.machine import describe

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.students:
            observations = record_observations(args.preset, mode, 200, Path(tmp) / f"{mode}.npz")
            given = args.state_model if mode == "state" else args.pixel_model
            model = given or build_student(spec_for(args.preset, mode), observations, Path(tmp) / f"{mode}.onnx")
            for priority in args.realtime_priority:
                for rate in args.rates:
                    summary = drive(model, observations, rate, args.seconds, priority or None)
                    rows.append((mode, rate, priority, summary))
                    print(json.dumps({"student": mode, "rate_hz": rate, "priority": priority, **summary}), flush=True)
    print(f"\nmachine: {describe()}; {args.seconds:g} s per row, deadline 80% of the period")
    print("| student | rate | scheduler | achieved Hz | tick-to-action p50 / p99 (ms) | jitter p99 (ms) | misses "
          "| overruns |")  # fmt: skip
    print("|---|---:|---|---:|---|---:|---:|---:|")
    for mode, rate, priority, s in rows:
        lat, jit = s["latency"], s["jitter"]
        scheduler = f"SCHED_FIFO {priority}" if priority else "default"
        print(
            f"| {mode} | {rate:g} Hz | {scheduler} | {s['achieved_hz']:.1f} | "
            f"{lat['p50_ms']:.3f} / {lat['p99_ms']:.3f} | {jit['p99_ms']:.3f} | {s['misses']} of {s['steps']} | "
            f"{s['overruns']} |"
        )


if __name__ == "__main__":
    main()
