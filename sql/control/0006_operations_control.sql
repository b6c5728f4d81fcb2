-- The backfill control: ops' hold on the workers (backfill windows and verification slices),
-- changed at any time from the console ({"action":"throttle",…}) or `migrate throttle`, and read
-- by every worker before each window: one row by primary key in the database the worker already
-- talks to, so it costs nothing extra, changes with its audit event in one transaction, and works
-- the same locally and on AWS.
CREATE TABLE backfill_control (
  id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
  -- Paused: workers copy and check nothing; a window they receive goes back to the planner.
  paused boolean NOT NULL DEFAULT false,
  -- A ceiling on V1 rows read per second by all workers together; NULL: none.
  rows_per_second int CHECK (rows_per_second > 0),
  -- Windows larger than this are split before they are copied; NULL: as planned.
  window_rows int CHECK (window_rows >= 100),
  -- Workers probe V1 before each window and wait while it shows pressure.
  auto_throttle boolean NOT NULL DEFAULT true,
  reason text,
  changed_by text,
  changed_at timestamptz NOT NULL DEFAULT now(),
  -- The rate limit's bucket: the earliest moment the next window may start.
  next_start_at timestamptz NOT NULL DEFAULT now(),
  -- What the workers last did about it, and why (the progress line, report and metric show it).
  state text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'paused', 'limited', 'pressure')),
  state_cause text,
  state_since timestamptz NOT NULL DEFAULT now(),
  -- The last V1 probe: {"commitMs":…, "activeSessions":…, "replicaLagSeconds":…, "at":…}.
  last_probe jsonb
);
INSERT INTO backfill_control (id) VALUES (1);

-- Every period in which the workers were held back, with its cause.
CREATE TABLE throttle_periods (
  id bigserial PRIMARY KEY,
  state text NOT NULL CHECK (state IN ('paused', 'limited', 'pressure')),
  cause text NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now(),
  ended_at timestamptz
);
CREATE INDEX throttle_periods_open ON throttle_periods (ended_at) WHERE ended_at IS NULL;

-- Local runs only (the rehearsal): the stand-in of the SSM parameters, kept with the migration's
-- state so that a rehearsal run again after a crash finds the switches where the last one left them.
CREATE TABLE local_parameters (
  name text PRIMARY KEY,
  value text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- A cutover continued after an interruption: its next step is a health gate at the level it
-- reached (traffic stays), before any further level.
ALTER TABLE cutover_state ADD COLUMN regate_pending boolean NOT NULL DEFAULT false;
