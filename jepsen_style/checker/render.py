"""Pictures of a linearizability violation: a text timeline and an SVG.

Both draw the failure's excerpt on a shared time axis, one row per client
(split into lanes where a client's operations overlap, e.g. after a timeout).
Only the order of times matters for linearizability, so the axis is ordinal:
each distinct time gets a column, spaced so that labels fit where possible.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Callable

from jepsen_style.checker.linearizability import Failure
from jepsen_style.checker.operation import UNKNOWN, Operation

Describe = Callable[[Any, Any], str]

LEGEND = (
    "legend: [n] n-th operation of the longest linearizable order found; "
    "#### the operation that could not be linearized after it; "
    "...> outcome unknown (open until the end)"
)


@dataclass(frozen=True, slots=True)
class _Bar:
    op: Operation
    start: int
    end: int  # for an open operation: the right edge of the picture
    label: str
    stuck: bool
    open: bool


@dataclass(frozen=True, slots=True)
class _Layout:
    rows: list[tuple[str, list[_Bar]]]
    width: int


def _label(op: Operation, describe: Describe, order: dict[int, int]) -> str:
    text = describe(op.input, op.output if op.outcome_known else UNKNOWN)
    position = order.get(id(op))
    return f"[{position}] {text}" if position is not None else text


def _layout(ops: list[Operation], describe: Describe, linearized: list[Operation],
            stuck: Operation | None, max_width: int) -> _Layout:
    order = {id(op): n for n, op in enumerate(linearized, start=1)}
    labels = {id(op): _label(op, describe, order) for op in ops}
    times = sorted({op.call for op in ops} | {op.ret for op in ops if op.outcome_known})
    # Greedy columns: each time at least one column after the previous one and
    # far enough from the calls of the operations ending there to fit labels.
    column: dict[float, int] = {}
    ending: dict[float, list[Operation]] = {}
    for op in ops:
        if op.outcome_known:
            ending.setdefault(op.ret, []).append(op)
    previous = -1
    for moment in times:
        wanted = previous + 2
        for op in ending.get(moment, []):
            wanted = max(wanted, column[op.call] + len(labels[id(op)]) + 3)
        column[moment] = wanted
        previous = wanted
    open_width = max((len(labels[id(op)]) + 6 for op in ops if not op.outcome_known), default=0)
    natural = max([previous + 1] + [column[op.call] + open_width for op in ops if not op.outcome_known])
    scale = min(1.0, (max_width - 1) / max(natural, 1))
    place = {moment: int(col * scale) for moment, col in column.items()}
    width = max(int(natural * scale) + 1, 1)

    rows: list[tuple[str, list[_Bar]]] = []
    by_client: dict[Any, list[Operation]] = {}
    for op in sorted(ops, key=lambda o: (o.call, o.ret)):
        by_client.setdefault(op.client_id, []).append(op)
    for client in sorted(by_client, key=lambda c: (str(type(c)), c)):
        lanes: list[list[_Bar]] = []
        for op in by_client[client]:
            start = place[op.call]
            end = place[op.ret] if op.outcome_known else width - 1
            end = max(end, start + 1)
            bar = _Bar(op, start, end, labels[id(op)], op is stuck, not op.outcome_known)
            for lane in lanes:
                if lane[-1].end < start:
                    lane.append(bar)
                    break
            else:
                lanes.append([bar])
        for number, lane in enumerate(lanes):
            rows.append((f"p{client}" if number == 0 else "", lane))
    return _Layout(rows, width)


def render_text(failure: Failure, describe: Describe, max_width: int = 120) -> str:
    """A terminal picture of `failure.excerpt`, the stuck operation drawn with #."""
    layout = _layout(failure.excerpt, describe, failure.linearized, failure.stuck, max_width)
    gutter = max((len(name) for name, _ in layout.rows), default=0) + 1
    lines = []
    for name, bars in layout.rows:
        cells = [" "] * layout.width
        for bar in bars:
            _draw_bar(cells, bar)
        lines.append(name.ljust(gutter) + "".join(cells).rstrip())
    lines.append(LEGEND)
    if failure.stuck is not None:
        lines.append("cannot be linearized: " + _label(failure.stuck, describe, {})
                     + (f" ({failure.reason})" if failure.reason else ""))
    return "\n".join(lines)


def _draw_bar(cells: list[str], bar: _Bar) -> None:
    fill = "#" if bar.stuck else ("." if bar.open else "-")
    inner = bar.end - bar.start - 1
    label = bar.label
    if inner >= 1:
        text = label if len(label) <= inner else label[: max(inner - 1, 0)] + "~"
        pad = inner - len(text)
        left = pad // 2
        body = fill * left + text + fill * (pad - left)
    else:
        body = ""
    cells[bar.start] = "|"
    for offset, char in enumerate(body, start=bar.start + 1):
        cells[offset] = char
    cells[bar.end] = ">" if bar.open else "|"


_CHAR_PX = 7
_ROW_PX = 26
_MARGIN = 10


def render_svg(failure: Failure, describe: Describe, max_width: int = 160) -> str:
    """A standalone SVG of `failure.excerpt` (no scripts, no external resources)."""
    layout = _layout(failure.excerpt, describe, failure.linearized, failure.stuck, max_width)
    gutter = (max((len(name) for name, _ in layout.rows), default=0) + 2) * _CHAR_PX
    width = gutter + layout.width * _CHAR_PX + 2 * _MARGIN
    height = (len(layout.rows) + 2) * _ROW_PX + 2 * _MARGIN
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="monospace" font-size="12">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
    ]
    for row, (name, bars) in enumerate(layout.rows):
        y = _MARGIN + row * _ROW_PX
        parts.append(f'<text x="{_MARGIN}" y="{y + 16}" fill="#333">{html.escape(name)}</text>')
        for bar in bars:
            x = _MARGIN + gutter + bar.start * _CHAR_PX
            w = max((bar.end - bar.start) * _CHAR_PX, _CHAR_PX)
            if bar.stuck:
                style = 'fill="#f8d0d0" stroke="#c00000" stroke-width="2"'
            elif bar.open:
                style = 'fill="#eeeeee" stroke="#888888" stroke-dasharray="4 3"'
            else:
                style = 'fill="#dde8f6" stroke="#3060a0"'
            title = html.escape(bar.label + (" (outcome unknown)" if bar.open else ""))
            parts.append(
                f'<g><title>{title}</title><rect x="{x}" y="{y + 2}" width="{w}" height="{_ROW_PX - 6}" '
                f'rx="3" {style}/>'
                f'<text x="{x + 4}" y="{y + 16}" fill="#111">{html.escape(_fit(bar.label, w))}</text></g>'
            )
    y = _MARGIN + len(layout.rows) * _ROW_PX + 16
    if failure.stuck is not None:
        text = "red: cannot be linearized after the longest linearizable order found ([n] = its n-th operation)"
        parts.append(f'<text x="{_MARGIN}" y="{y}" fill="#c00000">{html.escape(text)}</text>')
    parts.append(f'<text x="{_MARGIN}" y="{y + _ROW_PX}" fill="#555">'
                 'dashed: outcome unknown, may take effect any time after its call or never</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _fit(label: str, width_px: int) -> str:
    room = max((width_px - 8) // _CHAR_PX, 1)
    return label if len(label) <= room else label[: max(room - 1, 0)] + "~"
