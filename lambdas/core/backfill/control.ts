import type { Pool } from 'pg';
import { z } from 'zod';
import type { MigrationConfig } from '../config';
import { describeIssues } from '../config';
import { controlSchema, withTransaction } from '../db';
import { InvalidInputError } from '../errors';
import type { Probe } from './pressure';

/**
 * The backfill control: what ops set (pause, a rows-per-second ceiling, a window size, the
 * automatic throttle on or off), stored in `<control>.backfill_control` and read by every
 * worker before each window or verification slice, so a change holds from the next window on.
 * Why the control schema and not an SSM parameter: the worker already reads V2 for every
 * window (one more primary-key row is free), the change and its audit event commit together,
 * SSM's shared throughput stays for the backend's traffic switch, and it works the same locally.
 */

export type ThrottleState = 'running' | 'paused' | 'limited' | 'pressure';

export interface BackfillControl {
  paused: boolean;
  rowsPerSecond: number | null;
  windowRows: number | null;
  autoThrottle: boolean;
  reason: string | null;
  changedBy: string | null;
  changedAt: string;
  /** What the workers are doing about it, and why. */
  state: ThrottleState;
  stateCause: string | null;
  stateSince: string;
  lastProbe: (Probe & { pressureAt?: string }) | null;
}

export interface ControlRow {
  paused: boolean;
  rows_per_second: number | null;
  window_rows: number | null;
  auto_throttle: boolean;
  reason: string | null;
  changed_by: string | null;
  changed_at: Date;
  state: ThrottleState;
  state_cause: string | null;
  state_since: Date;
  last_probe: BackfillControl['lastProbe'];
}

export const toControl = (r: ControlRow): BackfillControl => ({
  paused: r.paused,
  rowsPerSecond: r.rows_per_second,
  windowRows: r.window_rows,
  autoThrottle: r.auto_throttle,
  reason: r.reason,
  changedBy: r.changed_by,
  changedAt: r.changed_at.toISOString(),
  state: r.state,
  stateCause: r.state_cause,
  stateSince: r.state_since.toISOString(),
  lastProbe: r.last_probe,
});

export type Db = Pick<Pool, 'query'>;

/** The control as it reads before the control schema exists (nothing held back). */
export const NO_CONTROL: BackfillControl = {
  paused: false,
  rowsPerSecond: null,
  windowRows: null,
  autoThrottle: true,
  reason: null,
  changedBy: null,
  changedAt: new Date(0).toISOString(),
  state: 'running',
  stateCause: null,
  stateSince: new Date(0).toISOString(),
  lastProbe: null,
};

/**
 * The current control (one row by primary key); NO_CONTROL where the control schema predates it
 * (workers updated while an older orchestrator ran: nothing is held back until it migrates).
 */
export async function readControl(
  v2: Db,
  config: Pick<MigrationConfig, 'schemas'>,
): Promise<BackfillControl> {
  try {
    const { rows } = await v2.query<ControlRow>(
      `SELECT * FROM ${controlSchema(config)}.backfill_control WHERE id = 1`,
    );
    return rows[0] ? toControl(rows[0]) : NO_CONTROL;
  } catch (error) {
    if ((error as { code?: string }).code === '42P01') return NO_CONTROL;
    throw error;
  }
}

/**
 * What ops may change, from the console (`{"action":"throttle", …}`) or `migrate throttle`:
 * `pause` true pauses, false resumes; `rowsPerSecond` and `windowRows` set a ceiling and a window
 * size (null lifts them); `autoThrottle` turns the V1 probe on or off.
 */
export const controlChangeSchema = z
  .object({
    pause: z.boolean().optional(),
    rowsPerSecond: z.number().int().min(1).max(10_000_000).nullable().optional(),
    windowRows: z.number().int().min(100).max(5_000_000).nullable().optional(),
    autoThrottle: z.boolean().optional(),
    reason: z.string().trim().min(1).max(500).optional(),
  })
  .strict()
  .refine(
    (c) =>
      c.pause !== undefined ||
      c.rowsPerSecond !== undefined ||
      c.windowRows !== undefined ||
      c.autoThrottle !== undefined,
    { message: 'say what to change: pause, rowsPerSecond, windowRows or autoThrottle' },
  );
export type ControlChange = z.infer<typeof controlChangeSchema>;

/** Validates a control change; bad input is InvalidInputError naming the field, and changes nothing. */
export function parseControlChange(input: unknown): ControlChange {
  const result = controlChangeSchema.safeParse(input);
  if (!result.success) throw new InvalidInputError('throttle input', describeIssues(result.error));
  return result.data;
}

/**
 * Applies an ops change in one transaction with its audit event (from, to, who, why). A pause
 * or resume moves the workers' state at once (the period is recorded); a ceiling and a window
 * size hold from each worker's next window.
 */
export async function changeControl(
  ctx: { v2: Pool; config: Pick<MigrationConfig, 'schemas'>; actor: string },
  change: ControlChange,
): Promise<BackfillControl> {
  const ctl = controlSchema(ctx.config);
  return withTransaction(ctx.v2, async (client) => {
    const before = toControl(
      (await client.query<ControlRow>(`SELECT * FROM ${ctl}.backfill_control WHERE id = 1 FOR UPDATE`))
        .rows[0],
    );
    const after = {
      paused: change.pause ?? before.paused,
      rowsPerSecond: change.rowsPerSecond === undefined ? before.rowsPerSecond : change.rowsPerSecond,
      windowRows: change.windowRows === undefined ? before.windowRows : change.windowRows,
      autoThrottle: change.autoThrottle ?? before.autoThrottle,
    };
    await client.query(
      `UPDATE ${ctl}.backfill_control
          SET paused = $1, rows_per_second = $2, window_rows = $3, auto_throttle = $4,
              reason = $5, changed_by = $6, changed_at = now(),
              next_start_at = CASE WHEN rows_per_second IS DISTINCT FROM $2 THEN now() ELSE next_start_at END
        WHERE id = 1`,
      [
        after.paused,
        after.rowsPerSecond,
        after.windowRows,
        after.autoThrottle,
        change.reason ?? null,
        ctx.actor,
      ],
    );
    if (after.paused !== before.paused) {
      await moveState(
        client,
        ctl,
        after.paused ? 'paused' : 'running',
        after.paused ? pauseCause(ctx.actor, change.reason) : null,
      );
    }
    await client.query(
      `INSERT INTO ${ctl}.audit_log (actor, action, details) VALUES ($1, 'throttle.changed', $2)`,
      [
        ctx.actor,
        JSON.stringify({
          from: pick(before),
          to: after,
          ...(change.reason ? { reason: change.reason } : {}),
        }),
      ],
    );
    return toControl(
      (await client.query<ControlRow>(`SELECT * FROM ${ctl}.backfill_control WHERE id = 1`)).rows[0],
    );
  });
}

const pick = (c: BackfillControl) => ({
  paused: c.paused,
  rowsPerSecond: c.rowsPerSecond,
  windowRows: c.windowRows,
  autoThrottle: c.autoThrottle,
});

const pauseCause = (actor: string, reason?: string) => `paused by ${actor}${reason ? `: ${reason}` : ''}`;

/**
 * Sets the workers' state when it changes, closing the open throttle period and opening one for
 * a held-back state. Returns whether it changed.
 */
export async function moveState(
  db: Db,
  ctl: string,
  state: ThrottleState,
  cause: string | null,
): Promise<boolean> {
  const { rowCount } = await db.query(
    `UPDATE ${ctl}.backfill_control SET state = $1, state_cause = $2, state_since = now()
      WHERE id = 1 AND (state <> $1 OR state_cause IS DISTINCT FROM $2)`,
    [state, cause],
  );
  if (!rowCount) return false;
  await db.query(`UPDATE ${ctl}.throttle_periods SET ended_at = now() WHERE ended_at IS NULL`);
  if (state !== 'running') {
    await db.query(`INSERT INTO ${ctl}.throttle_periods (state, cause) VALUES ($1, $2)`, [state, cause]);
  }
  return true;
}

/** Whether ops have paused the workers (false before the control schema exists). */
export async function isPaused(v2: Pool, config: Pick<MigrationConfig, 'schemas'>): Promise<boolean> {
  return (await readControl(v2, config)).paused;
}

/**
 * Once the backfill is complete nothing is held back any more: the open period ends. (A pause
 * stays set: it also holds verification slices.)
 */
export async function settleThrottle(v2: Pool, config: Pick<MigrationConfig, 'schemas'>): Promise<void> {
  const ctl = controlSchema(config);
  await withTransaction(v2, async (client) => {
    const { rows } = await client.query<{ paused: boolean }>(
      `SELECT paused FROM ${ctl}.backfill_control WHERE id = 1 FOR UPDATE`,
    );
    if (!rows[0]?.paused) await moveState(client, ctl, 'running', null);
  });
}

export interface ThrottlePeriod {
  state: Exclude<ThrottleState, 'running'>;
  cause: string;
  startedAt: string;
  endedAt: string | null;
}

/** Every period in which the workers were held back, oldest first. */
export async function throttlePeriods(
  v2: Pool,
  config: Pick<MigrationConfig, 'schemas'>,
): Promise<ThrottlePeriod[]> {
  const { rows } = await v2.query<{
    state: ThrottlePeriod['state'];
    cause: string;
    started_at: Date;
    ended_at: Date | null;
  }>(
    `SELECT state, cause, started_at, ended_at FROM ${controlSchema(config)}.throttle_periods ORDER BY started_at, id`,
  );
  return rows.map((r) => ({
    state: r.state,
    cause: r.cause,
    startedAt: r.started_at.toISOString(),
    endedAt: r.ended_at?.toISOString() ?? null,
  }));
}
