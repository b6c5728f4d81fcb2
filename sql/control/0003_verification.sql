-- Verification runs: per table and window, a row count and an order-independent checksum of
-- the mapped columns on both sides, the row-level findings of mismatched windows, and repairs.
CREATE TABLE verification_runs (
  id bigserial PRIMARY KEY,
  scope text NOT NULL CHECK (scope IN ('full', 'incremental')),
  since timestamptz,
  status text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'passed', 'failed')),
  started_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  report jsonb
);

-- The unit of fan-out: a run of consecutive windows of one table, verified in one pass a side.
CREATE TABLE verification_slices (
  id bigserial PRIMARY KEY,
  run_id bigint NOT NULL REFERENCES verification_runs(id) ON DELETE CASCADE,
  table_name text NOT NULL,
  window_ids bigint[] NOT NULL,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'queued', 'done', 'failed')),
  attempts int NOT NULL DEFAULT 0,
  last_error text,
  finished_at timestamptz
);
CREATE INDEX verification_slices_run ON verification_slices (run_id, status);

CREATE TABLE verification_windows (
  run_id bigint NOT NULL REFERENCES verification_runs(id) ON DELETE CASCADE,
  window_id bigint NOT NULL REFERENCES windows(id),
  v1_rows bigint NOT NULL,
  v2_rows bigint NOT NULL,
  v1_checksum numeric NOT NULL,
  v2_checksum numeric NOT NULL,
  matched boolean NOT NULL,
  details jsonb,
  repair_attempts int NOT NULL DEFAULT 0,
  checked_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (run_id, window_id)
);
