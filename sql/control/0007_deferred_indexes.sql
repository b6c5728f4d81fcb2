-- V2 telemetry's secondary indexes that the backfill drops while it copies and builds once when
-- its last window is done (lambdas/core/backfill/deferred-indexes.ts): which ones, as the
-- catalog defined them, and when each was built again. A row whose built_at is NULL is an index
-- V2 does not have yet: the backfill's end (or a rerun of it) builds it.
CREATE TABLE deferred_indexes (
  index_name text PRIMARY KEY,
  definition text NOT NULL,
  dropped_at timestamptz NOT NULL DEFAULT now(),
  built_at timestamptz,
  build_seconds double precision
);
