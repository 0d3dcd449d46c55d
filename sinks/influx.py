"""InfluxDB 2.x sink for breakdowns and window statistics (design §5).

Measurements (all durations in ns):

* ``latscope_segment`` — one point per (window, src/dst host, flow, segment); tags
  ``src_host dst_host flow segment layer device``; fields ``count mean p50 p90 p99 max``
  and ``pos`` (the segment's position on the path, for stacking in path order);
  time = window start.
* ``latscope_socket_wait`` — why a sampled byte waited in a socket (issue #15): one point
  per sample and socket segment that carries causes (socket_wait_lines);
* ``latscope_flow`` — end-to-end delay per (window, flow), same fields; tags
  ``src_host dst_host flow``.
* ``latscope_sample`` — optional raw per-sample breakdown: tags ``src_host dst_host flow
  complete``; fields ``seq``, ``end_to_end`` (complete samples), one field per segment
  named ``from→to`` and per layer ``layer_<name>`` (the sample's total in that layer, for
  per-layer CDFs); time = the sample's first point (reference clock on the wall).
* ``latscope_stream`` — the worker's counters, tag ``worker``.

Same series + same timestamp overwrite in InfluxDB, so replays after a restart are
idempotent.

Names (measurement, tag keys and values, field keys) are escaped for line protocol: comma,
'=' and space with a backslash, which InfluxDB takes off again. Line protocol cannot carry a
newline or carriage return in a name at all, nor a backslash before a separator (it would
escape the separator), so those are written as backslash-n, backslash-r and two
backslashes (backslash-x5c for a name's last character) and stored so: ``unescape_name``
gives the name back. Names without them (all LatScope makes itself) are stored as they are.

This module builds the lines (by hand: influxdb-client's Point is several times
slower per sample); ``sinks/influx_writer.py`` sends them, batched and retried.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from operator import itemgetter

from latscope.sinks._native import sample_line as _native_line
from latscope.stats.sketch import Sketch

M_SEGMENT = "latscope_segment"
M_FLOW = "latscope_flow"
M_SAMPLE = "latscope_sample"
M_STREAM = "latscope_stream"
M_SOCKET_WAIT = "latscope_socket_wait"
STAT_FIELDS = ("count", "mean", "p50", "p90", "p99", "max")

_NAME_ESC = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ ", "\\": "\\\\",
                           "\n": "\\n", "\r": "\\r"})
_UNESCAPE = {"\\": "\\", "n": "\n", "r": "\r", "x5c": "\\"}
_STORED_ESCAPE = re.compile(r"\\(x5c|[\\nr])")
_SEPARATOR_ESC = re.compile(r"\\([,= ])")


def escape_name(name: object) -> str:
    """A measurement, tag key or value, or field key as line protocol takes it."""
    name = str(name)
    out = name.translate(_NAME_ESC)
    if name.endswith("\\"):   # its two-backslash form would escape the separator after it
        out = out[:-2] + "\\x5c"
    return out


def stored_name(name: object) -> str:
    """A name as InfluxDB stores it once written (what a Flux filter compares with)."""
    return _SEPARATOR_ESC.sub(r"\1", escape_name(name))


def unescape_name(stored: str) -> str:
    """A name as InfluxDB stores it (escape_name, less the separators' escapes) -> the
    name that was written."""
    return _STORED_ESCAPE.sub(lambda m: _UNESCAPE[m.group(1)], stored)


def _tags(tags: Mapping[str, str]) -> str:
    # Empty tag values are not allowed by line protocol: an absent device is no tag.
    return "".join(f",{escape_name(k)}={escape_name(v)}" for k, v in sorted(tags.items()) if v)


def _stats_fields(stats: Mapping[str, float]) -> str:
    parts = [f"count={int(stats['count'])}i"]
    parts += [f"{k}={float(stats[k])}" for k in STAT_FIELDS[1:]]
    return ",".join(parts)


def window_line(tags: Mapping[str, str], sketch: Sketch, start_ns: int,
                extra: Mapping[str, str] = {}, pos: int = 0) -> str:
    """One window's statistics: a latscope_segment point, or latscope_flow for end-to-end.

    ``extra``: tags added to every point (e.g. ``run`` of a demo or test).
    """
    fields = _stats_fields(sketch.summary())
    if tags.get("segment") == "end_to_end":
        m = M_FLOW
        tags = {k: tags[k] for k in ("src_host", "dst_host", "flow")}
    else:
        m = M_SEGMENT
        fields += f",pos={pos}i"
    return f"{m}{_tags({**tags, **extra})} {fields} {start_ns}"


def sample_line(bd: Mapping, flow: str, wall_ns: int,
                extra: Mapping[str, str] = {}, *, native: bool = True) -> str:
    """One raw sample point. Hot path (design §9): a (flow, hosts) tag set and a path's
    segment and layer fields are escaped and laid out once and cached; per sample only
    numbers are formatted, in C (sinks/native/line.c). ``native=False``: in Python only,
    the reference, which also formats what C hands back (non-int numbers, past 64 bits)."""
    complete = bool(bd["complete"])
    try:
        tk = (bd["src_host"], bd["dst_host"], flow, complete, *extra.items())
        head = _SAMPLE_HEADS.get(tk)
    except TypeError:   # an unhashable tag value: not cached
        tk, head = None, None
    if head is None:
        tags = {"src_host": bd["src_host"], "dst_host": bd["dst_host"], "flow": flow,
                "complete": "true" if complete else "false", **extra}
        head = f"{M_SAMPLE}{_tags(tags)} seq="
        if tk is not None:
            if len(_SAMPLE_HEADS) > _CACHE_MAX:
                _SAMPLE_HEADS.clear()
            _SAMPLE_HEADS[tk] = head
    seq = bd["seq"]
    e2e = bd.get("end_to_end_ns")
    segs = bd["segments"]
    shape = _NO_SEGMENTS
    if segs:
        key = tuple(map(_SEG_NAME_LAYER, segs))
        shape = _SAMPLE_SHAPES.get(key) or _sample_shape(key)
    if native:
        line = _native_line(head, seq, e2e, segs, shape[2], shape[3], wall_ns)
        if line is not NotImplemented:
            return line
    # Python: non-int numbers (int() taken, as the fields are integers), sums beyond 64 bits.
    line = f"{head}{int(seq)}i"
    if e2e is not None:
        line += f",end_to_end={int(e2e)}i"
    if segs:
        fmt, layer_segments = shape[:2]
        ds = [*map(int, map(_SEG_DURATION, segs))]
        get = ds.__getitem__
        line += fmt % (*ds, *[sum(map(get, idx)) for idx in layer_segments])
    return f"{line} {wall_ns}"


_Shape = tuple[str, list[tuple[int, ...]], tuple[str, ...] | None, bytes]


def _sample_shape(key: tuple[tuple[str, str, str], ...]) -> _Shape:
    """A path's segment fields as one %-format (``,from→to=%di`` each, then
    ``,layer_<name>=%di`` per layer in order of appearance) and each layer's segments, for
    Python; for C the same field names as ``,name=`` and each segment's layer ordinal
    (bytes: a path of over 255 layers, absurd, is left to Python)."""
    layers: dict[str, list[int]] = {}
    names = []
    for i, (frm, to, layer) in enumerate(key):
        names.append("," + escape_name(f"{frm}→{to}") + "=")
        layers.setdefault(layer, []).append(i)
    names += [f",{escape_name('layer_' + k)}=" for k in layers]
    fmt = "".join(n.replace("%", "%%") + "%di" for n in names)
    ordinal = {k: j for j, k in enumerate(layers)}
    c_names, layer_of = None, b""
    if len(layers) < 256:
        c_names, layer_of = tuple(names), bytes(ordinal[layer] for _, _, layer in key)
    if len(_SAMPLE_SHAPES) > _CACHE_MAX:
        _SAMPLE_SHAPES.clear()
    shape = _SAMPLE_SHAPES[key] = fmt, [tuple(v) for v in layers.values()], c_names, layer_of
    return shape


_SAMPLE_HEADS: dict[tuple, str] = {}    # measurement and tags of a (flow, hosts, extra)
_SAMPLE_SHAPES: dict[tuple, _Shape] = {}   # see _sample_shape
_NO_SEGMENTS: _Shape = ("", [], (), b"")
_SEG_NAME_LAYER = itemgetter("from", "to", "layer")
_SEG_DURATION = itemgetter("duration_ns")
_CACHE_MAX = 50_000


def socket_wait_lines(bd: Mapping, flow: str, wall_ns: int,
                      extra: Mapping[str, str] = {}) -> list[str]:
    """The socket-wait causes of a sample's socket segments that carry them (Segment.wait),
    one latscope_socket_wait point each: tags ``src_host dst_host flow segment host``
    (``segment`` named ``from→to`` as in latscope_sample, ``host`` the socket's); fields
    ``duration`` (ns), per cause its µs (``<cause>_us``) and its share of the segment
    (``<cause>``: µs * 1000 / duration), and ``unknown``: the share no cause claims
    (1 - their sum, never below 0). A time-weighted share over many samples is
    sum(<cause>_us) * 1000 / sum(duration). Time = the sample's, as latscope_sample."""
    out = []
    for seg in bd["segments"]:
        wait = seg.get("wait")
        if not wait:
            continue
        d = int(seg["duration_ns"])
        tags = {"src_host": bd["src_host"], "dst_host": bd["dst_host"], "flow": flow,
                "segment": f"{seg['from']}→{seg['to']}",
                "host": str(seg["to"]).split(":", 1)[0], **extra}
        fields = [f"duration={d}i"]
        known = 0.0
        for k, us in wait.items():
            share = us * 1000 / d if d > 0 else 0.0
            known += share
            fields += [f"{escape_name(k)}={int(us)}i",
                       f"{escape_name(k.removesuffix('_us'))}={share:.6g}"]
        fields.append(f"unknown={max(0.0, 1.0 - known):.6g}")
        out.append(f"{M_SOCKET_WAIT}{_tags(tags)} {','.join(fields)} {wall_ns}")
    return out


def counters_line(worker: str, counters: Mapping[str, int], now_ns: int,
                  extra: Mapping[str, str] = {}) -> str:
    fields = ",".join(f"{escape_name(k)}={int(v)}i" for k, v in sorted(counters.items()))
    return f"{M_STREAM}{_tags({'worker': worker, **extra})} {fields} {now_ns}"
