"""`reidc tune`: MetaSchedule over the model's fused kernels, measured locally or through TVM's
RPC tracker, records in a target-keyed JSON database that `reidc compile --tuning-db` applies."""
