"""InfluxDB 2.x sink for breakdowns and window statistics (design §5).

Measurements (all durations in ns):

* ``latscope_segment`` — one point per (window, src/dst host, flow, segment); tags
  ``src_host dst_host flow segment layer device``; fields ``count mean p50 p90 p99 max``
  and ``pos`` (the segment's position on the path, for stacking in path order);
  time = window start.
* ``latscope_flow`` — end-to-end delay per (window, flow), same fields; tags
  ``src_host dst_host flow``.
* ``latscope_sample`` — optional raw per-sample breakdown: tags ``src_host dst_host flow
  complete``; fields ``seq``, ``end_to_end`` (complete samples), one field per segment
  named ``from→to`` and per layer ``layer_<name>`` (the sample's total in that layer, for
  per-layer CDFs); time = the sample's first point (reference clock on the wall).
* ``latscope_stream`` — the worker's counters, tag ``worker``.

Same series + same timestamp overwrite in InfluxDB, so replays after a restart are
idempotent. This module builds the lines (by hand: influxdb-client's Point is several times
slower per sample); ``sinks/influx_writer.py`` sends them, batched and retried.
"""

from __future__ import annotations

from collections.abc import Mapping
from operator import itemgetter

from latscope.stream.sketch import Sketch

M_SEGMENT = "latscope_segment"
M_FLOW = "latscope_flow"
M_SAMPLE = "latscope_sample"
M_STREAM = "latscope_stream"
STAT_FIELDS = ("count", "mean", "p50", "p90", "p99", "max")

_TAG_ESC = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_STR_ESC = str.maketrans({'"': r"\"", "\\": "\\\\"})


def _tags(tags: Mapping[str, str]) -> str:
    # Empty tag values are not allowed by line protocol: an absent device is no tag.
    return "".join(f",{k}={str(v).translate(_TAG_ESC)}" for k, v in sorted(tags.items()) if v)


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
                extra: Mapping[str, str] = {}) -> str:
    """One raw sample point. Hot path (design §9): a (flow, hosts) tag set and a path's
    segment and layer fields are escaped and laid out once and cached; per sample only
    numbers are formatted."""
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
    line = f"{head}{int(bd['seq'])}i"
    e2e = bd.get("end_to_end_ns")
    if e2e is not None:
        line += f",end_to_end={int(e2e)}i"
    segs = bd["segments"]
    if segs:
        key = tuple(map(_SEG_NAME_LAYER, segs))
        shape = _SAMPLE_SHAPES.get(key)
        if shape is None:
            shape = _sample_shape(key)
        fmt, layer_segments = shape
        ds = [*map(int, map(_SEG_DURATION, segs))]
        get = ds.__getitem__
        line += fmt % (*ds, *[sum(map(get, idx)) for idx in layer_segments])
    return f"{line} {wall_ns}"


def _sample_shape(key: tuple[tuple[str, str, str], ...]) -> tuple[str, list[tuple[int, ...]]]:
    """A path's segment fields as one %-format (``,from→to=%di`` each, then
    ``,layer_<name>=%di`` per layer in order of appearance) and each layer's segments."""
    layers: dict[str, list[int]] = {}
    fmt = []
    for i, (frm, to, layer) in enumerate(key):
        fmt.append("," + f"{frm}→{to}".translate(_TAG_ESC).replace("%", "%%") + "=%di")
        layers.setdefault(layer, []).append(i)
    fmt += [f",layer_{k}".replace("%", "%%") + "=%di" for k in layers]
    if len(_SAMPLE_SHAPES) > _CACHE_MAX:
        _SAMPLE_SHAPES.clear()
    shape = _SAMPLE_SHAPES[key] = "".join(fmt), [tuple(v) for v in layers.values()]
    return shape


_SAMPLE_HEADS: dict[tuple, str] = {}    # measurement and tags of a (flow, hosts, extra)
_SAMPLE_SHAPES: dict[tuple, tuple[str, list[tuple[int, ...]]]] = {}   # see _sample_shape
_SEG_NAME_LAYER = itemgetter("from", "to", "layer")
_SEG_DURATION = itemgetter("duration_ns")
_CACHE_MAX = 50_000


def counters_line(worker: str, counters: Mapping[str, int], now_ns: int,
                  extra: Mapping[str, str] = {}) -> str:
    fields = ",".join(f"{k}={int(v)}i" for k, v in sorted(counters.items()))
    return f"{M_STREAM}{_tags({'worker': worker, **extra})} {fields} {now_ns}"
