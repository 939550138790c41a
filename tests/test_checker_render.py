from __future__ import annotations

import math
import xml.etree.ElementTree as ElementTree

from jepsen_style.checker.linearizability import Operation, check
from jepsen_style.checker.models import keyed_register_model, register_model
from jepsen_style.checker.operation import unknown_outcome
from jepsen_style.checker.render import render_svg, render_text


def stale_read_failure():
    ops = [
        Operation(0, ("write", 1), 0, "ok", 1),
        Operation(1, ("write", 2), 2, "ok", 3),
        unknown_outcome(2, ("write", 3), 2.5),
        Operation(1, ("read", None), 4, 1, 5),
    ]
    result = check(ops, register_model())
    assert result.failure is not None
    return result.failure


def test_text_timeline_marks_the_stuck_operation_and_the_order() -> None:
    text = render_text(stale_read_failure(), register_model().describe_operation)
    rows = text.splitlines()
    p1 = next(row for row in rows if row.startswith("p1"))
    assert "[2] write 2" in p1
    assert "#read 1#" in p1
    p2 = next(row for row in rows if row.startswith("p2"))
    assert p2.rstrip().endswith(">")  # open until the end
    assert "cannot be linearized: read 1" in text
    # Time order is kept: the write of 2 is left of the stuck read on the same row.
    assert p1.index("write 2") < p1.index("read 1")


def test_text_timeline_stays_within_width_for_twenty_operations() -> None:
    ops = [Operation(c, ("k%d" % (c % 3), "write", "value-%d" % c), c, "ok", c + 2.5) for c in range(19)]
    ops.append(Operation(30, ("k0", "read", None), 40, "nope", 41))
    failure = check(ops, keyed_register_model()).failure
    assert failure is not None
    text = render_text(failure, keyed_register_model().describe_operation, max_width=100)
    body = text.splitlines()[:-2]
    assert all(len(row) <= 100 + 5 for row in body)


def test_svg_is_well_formed_and_escapes_labels() -> None:
    ops = [
        Operation(0, ("write", "<b>&"), 0, "ok", 1),
        Operation(1, ("read", None), 2, "x<y", 3),
    ]
    failure = check(ops, register_model()).failure
    assert failure is not None
    svg = render_svg(failure, register_model().describe_operation)
    root = ElementTree.fromstring(svg)
    texts = "".join(root.itertext())
    assert "read x<y" in texts
    assert "write <b>&" in texts
    assert 'stroke="#c00000"' in svg  # the stuck operation is drawn in red


def test_unknown_read_and_infinite_times_do_not_break_layout() -> None:
    ops = [unknown_outcome(0, ("write", 1), 0), Operation(1, ("read", None), 1, 5, 2)]
    failure = check(ops, register_model()).failure
    assert failure is not None and failure.stuck == ops[1]
    assert math.inf not in [op.call for op in failure.excerpt]
    assert "read 5" in render_text(failure, register_model().describe_operation)
