"""The local stack: a single-node Kafka (KRaft, Maven jars) and InfluxDB (built from the Go
module proxy) under the cache directory, provisioned and started by ``latscope stack``."""
