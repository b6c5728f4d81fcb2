-- The compression policy of the telemetry hypertable: chunks older than {{compress_after}} are
-- compressed by a TimescaleDB background job. Added by cleanup (lambdas/core/storage.ts), after
-- the last phase that rewrites history, with search_path at the V2 schema.
SELECT add_compression_policy('telemetry', INTERVAL {{compress_after}}, if_not_exists => TRUE);
