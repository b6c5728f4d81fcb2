-- The migration's own state, in the V2 database, in the configured control schema.
CREATE TABLE migration_state (
  id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
  phase text NOT NULL DEFAULT 'none',
  status text NOT NULL DEFAULT 'idle',
  updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO migration_state (id) VALUES (1);

-- Every change the migration makes, with what triggered it.
CREATE TABLE audit_log (
  id bigserial PRIMARY KEY,
  at timestamptz NOT NULL DEFAULT now(),
  actor text NOT NULL,
  action text NOT NULL,
  details jsonb NOT NULL DEFAULT '{}'
);

-- Phase 1 facts: what was backed up, which telemetry storage was chosen.
CREATE TABLE backups (
  id text PRIMARY KEY,
  kind text NOT NULL,
  location text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  verified_at timestamptz,
  row_counts jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE telemetry_storage (
  id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
  kind text NOT NULL CHECK (kind IN ('timescaledb', 'partitioned')),
  reason text NOT NULL,
  chosen_at timestamptz NOT NULL DEFAULT now()
);
