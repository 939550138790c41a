from __future__ import annotations

import math
import xml.etree.ElementTree as ElementTree

from jepsen_style.checker.linearizability import Operation, check
from jepsen_style.checker.models import keyed_register_model, kv_model, register_model
from jepsen_style.checker.operation import unknown_outcome
from jepsen_style.checker.render import render_svg, render_text


def append_order_failure():
    # Two concurrent appends read back in both orders; an unknown put open to the end.
    ops = [
        Operation(0, ("k", "append", "x"), 0, "ok", 10),
        Operation(1, ("k", "append", "y"), 0, "ok", 10),
        unknown_outcome(3, ("k", "put", "z"), 12.5),
        Operation(2, ("k", "get", None), 11, "xy", 12),
        Operation(2, ("k", "get", None), 13, "yx", 14),
    ]
    result = check(ops, kv_model())
    assert result.failure is not None
    return result.failure


def test_text_timeline_marks_the_stuck_operation_and_the_order() -> None:
    text = render_text(append_order_failure(), kv_model().describe_operation)
    rows = text.splitlines()
    p2 = next(row for row in rows if row.startswith("p2"))
    assert "[3] k: get 'xy'" in p2
    assert "#k: get 'yx'#" in p2
    assert "[1] k: append 'x'" in next(row for row in rows if row.startswith("p0"))
    p3 = next(row for row in rows if row.startswith("p3"))
    assert p3.rstrip().endswith(">")  # open until the end
    assert "cannot be linearized: k: get 'yx'" in text
    # Time order is kept: the first get is left of the stuck one on the same row.
    assert p2.index("'xy'") < p2.index("'yx'")


def test_text_for_a_failure_proven_without_search() -> None:
    ops = [
        Operation(0, ("write", 1), 0, "ok", 1),
        Operation(1, ("write", 2), 2, "ok", 3),
        Operation(1, ("read", None), 4, 1, 5),
    ]
    failure = check(ops, register_model()).failure
    assert failure is not None
    text = render_text(failure, register_model().describe_operation)
    assert "|#read 1#|" in text
    assert "write 2 replaced it after write 1" in text


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
        Operation(0, ("k", "append", "<b>"), 0, "ok", 10),
        Operation(1, ("k", "append", "&"), 0, "ok", 10),
        Operation(2, ("k", "get", None), 11, "<b>&", 12),
        Operation(2, ("k", "get", None), 13, "&<b>", 14),
    ]
    failure = check(ops, kv_model()).failure
    assert failure is not None
    svg = render_svg(failure, kv_model().describe_operation)
    root = ElementTree.fromstring(svg)
    texts = "".join(root.itertext())
    assert "get '&<b>'" in texts
    assert "append '<b>'" in texts
    assert 'stroke="#c00000"' in svg  # the stuck operation is drawn in red


def test_unknown_read_and_infinite_times_do_not_break_layout() -> None:
    ops = [unknown_outcome(0, ("write", 1), 0), Operation(1, ("read", None), 1, 5, 2)]
    failure = check(ops, register_model()).failure
    assert failure is not None and failure.stuck == ops[1]
    assert math.inf not in [op.call for op in failure.excerpt]
    assert "read 5" in render_text(failure, register_model().describe_operation)
