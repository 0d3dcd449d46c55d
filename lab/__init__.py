"""The lab beside the pipeline: the topology model and its routing check, the namespace
builder, the traffic tool, topology-wide clock sync and the demo. Production code
(``producers``, ``sync``, ``stream``, ``sinks``) never imports it; the CLI entry does.
"""
