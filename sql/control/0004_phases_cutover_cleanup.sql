-- Phase runs, the lock that lets one run act at a time, the cutover's progress, cleanup facts.
CREATE TABLE phase_runs (
  id bigserial PRIMARY KEY,
  phase text NOT NULL CHECK (phase IN ('PREPARE', 'BACKFILL', 'VERIFY', 'CUTOVER', 'CLEANUP')),
  status text NOT NULL CHECK (status IN ('running', 'done', 'failed')),
  actor text NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  result jsonb,
  error text
);
CREATE INDEX phase_runs_phase ON phase_runs (phase, started_at DESC);

CREATE TABLE migration_lock (
  id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
  holder text,
  acquired_at timestamptz,
  expires_at timestamptz
);
INSERT INTO migration_lock (id) VALUES (1);

CREATE TABLE cutover_state (
  id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
  schedule jsonb NOT NULL,
  level int NOT NULL DEFAULT -1,
  percentage int NOT NULL DEFAULT 0,
  status text NOT NULL DEFAULT 'idle' CHECK (status IN ('idle', 'running', 'held', 'rolled-back', 'complete')),
  reached_full_at timestamptz,
  last_gate_at timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE cleanup_state (
  id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
  dual_write_stopped_at timestamptz,
  archive_backup text,
  renamed_at timestamptz,
  archived_counts jsonb,
  dropped_at timestamptz
);
