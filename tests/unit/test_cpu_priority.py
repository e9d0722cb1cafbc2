"""``models.cpu_priority``: every thread of the process is reniced, never back up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap


def test_every_thread_is_lowered_and_a_later_call_never_raises_priority():
    # In a child process: a nice value cannot be lowered again without privilege.
    script = textwrap.dedent(
        """
        import json, os, threading
        from serve_app.models.cpu_priority import lower_priority, thread_priorities
        started, stop = threading.Event(), threading.Event()
        def idle():
            started.set(); stop.wait()
        worker = threading.Thread(target=idle); worker.start(); started.wait()
        before = thread_priorities()
        changed = lower_priority(5)
        after = thread_priorities()
        again = lower_priority(3)  # lower than what they have: left alone
        born = []
        t = threading.Thread(target=lambda: born.append(os.getpriority(os.PRIO_PROCESS, 0)))
        t.start(); t.join(); stop.set(); worker.join()
        print(json.dumps([before, changed, after, again, thread_priorities(), born]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    ).stdout  # fmt: skip
    before, changed, after, again, last, born = json.loads(out)
    assert len(before) >= 2 and min(before) < 5
    assert changed == sum(1 for n in before if n < 5)
    assert min(after) >= 5 and min(last) >= 5
    assert again == 0
    assert born == [max(5, min(after))]  # a new thread inherits its creator's
