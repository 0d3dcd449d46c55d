"""What InfluxDB holds of a run: the truth the stream and fault tests compare the worker's
own counts with."""

from __future__ import annotations

from influxdb_client import InfluxDBClient

from latscope.sinks.settings import InfluxSettings


def windows_in_influx(influx: InfluxSettings, run: str) -> int:
    """Window statistics points (latscope_segment and latscope_flow) tagged run=RUN."""
    flux = f'''from(bucket: "{influx.bucket}") |> range(start: -1h)
      |> filter(fn: (r) => (r._measurement == "latscope_segment" or r._measurement == "latscope_flow")
                           and r.run == "{run}" and r._field == "count")'''
    with InfluxDBClient(url=influx.url, token=influx.token, org=influx.org) as client:
        rows = [rec for t in client.query_api().query(flux) for rec in t.records]
    return len({(r.get_measurement(), r.values.get("segment"), r.get_time()) for r in rows})


def sample_host_pairs(influx: InfluxSettings, since_s: float) -> dict[tuple[str, str], int]:
    """Complete raw samples (latscope_sample) written since ``since_s`` (Unix s), counted per
    (src_host, dst_host)."""
    flux = f'''from(bucket: "{influx.bucket}") |> range(start: {int(since_s)})
      |> filter(fn: (r) => r._measurement == "latscope_sample" and r.complete == "true"
                           and r._field == "seq")'''
    with InfluxDBClient(url=influx.url, token=influx.token, org=influx.org) as client:
        rows = [rec for t in client.query_api().query(flux) for rec in t.records]
    out: dict[tuple[str, str], int] = {}
    for r in rows:
        k = (r.values["src_host"], r.values["dst_host"])
        out[k] = out.get(k, 0) + 1
    return out
