-- Backfill windows: the unit of copying, verification and repair. Bounds are V1 key values:
-- {"id": "<text id>"} for id windows, {"ts": "<V1 timestamp text>", "id": "<bigint>"} for
-- ("timestamp", id) windows; a NULL bound is open (the first and last window of a table).
CREATE TABLE windows (
  id bigserial PRIMARY KEY,
  table_name text NOT NULL CHECK (table_name IN ('users', 'devices', 'telemetry', 'alerts')),
  seq int NOT NULL,
  lower_bound jsonb,
  upper_bound jsonb,
  expected_rows bigint NOT NULL,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'queued', 'running', 'done', 'failed')),
  attempts int NOT NULL DEFAULT 0,
  rows_copied bigint,
  rows_inserted bigint,
  last_error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  queued_at timestamptz,
  started_at timestamptz,
  finished_at timestamptz,
  UNIQUE (table_name, seq)
);
CREATE INDEX windows_status ON windows (table_name, status);

-- One row per table once it has been planned (planning again adds nothing).
CREATE TABLE backfill_plans (
  table_name text PRIMARY KEY,
  windows int NOT NULL,
  expected_rows bigint NOT NULL,
  planned_at timestamptz NOT NULL DEFAULT now()
);
