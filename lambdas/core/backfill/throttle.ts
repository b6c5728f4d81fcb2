import type { Pool } from 'pg';
import { z } from 'zod';
import type { MigrationConfig } from '../config';
import { describeIssues } from '../config';
import { throttleConfigSchema } from '../throttle-config';
import { controlSchema, withTransaction } from '../db';
import { InvalidInputError } from '../errors';
import type { QueuePort } from '../../ports/queue';
import { probeV1, type Probe, type PressureThresholds } from './pressure';

/**
 * The backfill control: what ops set (pause, a rows-per-second ceiling, a window size, the
 * automatic throttle on or off), stored in `<control>.backfill_control` and read by every
 * worker before each window or verification slice, so a change holds from the next window on.
 * Why the control schema and not an SSM parameter: the worker already reads V2 for every
 * window (one more primary-key row is free), the change and its audit event commit together,
 * SSM's shared throughput stays for the backend's traffic switch, and it works the same locally.
 */

export interface ThrottleSettings extends PressureThresholds {
  /** The automatic throttle waits this long at most for V1 to recover, and a window this long for its turn under a ceiling; then the window goes back to the planner. */
  maxWaitSeconds: number;
  /** First pause between probes while V1 shows pressure (doubling up to 8×). */
  pressureBackoffMs: number;
  /** Pressure stays the state this long after it was last seen (no flapping between windows). */
  pressureHoldSeconds: number;
  /** Windows larger than this are split while pressure was seen lately (null or absent: never). */
  pressureWindowRows?: number | null;
}

/**
 * The window size a worker copies at most now: ops' window size, and, while V1 showed pressure
 * within the hold time (and the automatic throttle is on), the smaller `pressureWindowRows`, so
 * that a window under pressure is short and the next probe comes soon. Null: as planned.
 */
export function windowRowsNow(
  control: BackfillControl,
  settings: ThrottleSettings,
  now = Date.now(),
): number | null {
  const pressureAt = control.lastProbe?.pressureAt;
  const pressed =
    control.autoThrottle &&
    settings.pressureWindowRows != null &&
    pressureAt !== undefined &&
    now - Date.parse(pressureAt) < settings.pressureHoldSeconds * 1000;
  const limits = [control.windowRows, pressed ? settings.pressureWindowRows! : null].filter(
    (n): n is number => n !== null,
  );
  return limits.length > 0 ? Math.min(...limits) : null;
}

/** The defaults of the configuration's `throttle` (for a production V1; the rehearsal sets its own). */
export const DEFAULT_THROTTLE: ThrottleSettings = throttleConfigSchema.parse({});

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

interface ControlRow {
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

const toControl = (r: ControlRow): BackfillControl => ({
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

type Db = Pick<Pool, 'query'>;

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
async function moveState(db: Db, ctl: string, state: ThrottleState, cause: string | null): Promise<boolean> {
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

/** Records what a worker found (atomic per statement; the periods follow the transitions). */
async function noteState(
  v2: Pool,
  config: Pick<MigrationConfig, 'schemas'>,
  state: ThrottleState,
  cause: string | null,
  holdSeconds: number,
): Promise<void> {
  const ctl = controlSchema(config);
  await withTransaction(v2, async (client) => {
    const current = toControl(
      (await client.query<ControlRow>(`SELECT * FROM ${ctl}.backfill_control WHERE id = 1 FOR UPDATE`))
        .rows[0],
    );
    // Ops' pause is the state until ops resume; a pressure seen lately outlasts one quiet probe.
    if (current.paused && state !== 'paused') return;
    if (current.state === 'pressure' && state !== 'pressure' && state !== 'paused') {
      const seen = current.lastProbe?.pressureAt ? Date.parse(current.lastProbe.pressureAt) : 0;
      if (Date.now() - seen < holdSeconds * 1000) return;
    }
    await moveState(client, ctl, state, cause);
  });
}

/**
 * Samples V1 while this worker copies (every `pressureBackoffMs`), until `stop()`: a probe taken
 * only before a window sees V1 when no worker copies (workers that start together also probe
 * together, between their windows) and so misses the load the backfill itself makes. A sample
 * over a threshold is recorded as pressure (the control's last probe and state), which the next
 * turn of every worker honours (see awaitTurn).
 */
export function sampleWhileWorking(
  deps: { v1: Pool; v2: Pool; config: Pick<MigrationConfig, 'schemas'> },
  settings: ThrottleSettings,
): { stop: () => Promise<void> } {
  const ctl = controlSchema(deps.config);
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let wake: (() => void) | undefined;
  const loop = (async () => {
    for (;;) {
      await new Promise<void>((resolve) => {
        wake = resolve;
        timer = setTimeout(resolve, settings.pressureBackoffMs);
      });
      if (stopped) return;
      const result = await probeV1(deps.v1, settings);
      if (stopped || !result.pressure) continue;
      await deps.v2.query(`UPDATE ${ctl}.backfill_control SET last_probe = $1 WHERE id = 1`, [
        JSON.stringify({ ...result.probe, pressureAt: result.probe.at }),
      ]);
      await noteState(deps.v2, deps.config, 'pressure', result.pressure, settings.pressureHoldSeconds);
    }
  })().catch(() => undefined);
  return {
    stop: async () => {
      stopped = true;
      clearTimeout(timer);
      wake?.();
      await loop;
    },
  };
}

export interface Turn {
  /** Whether the worker may do its window now; if not, the window goes back to the planner. */
  go: boolean;
  state: ThrottleState;
  cause: string | null;
  /** How long the worker waited for its turn. */
  waitedMs: number;
  /** The control as read (its window size is what the worker applies). */
  control: BackfillControl;
  probe?: Probe;
}

export interface TurnOptions {
  settings?: ThrottleSettings;
  sleep?: (ms: number) => Promise<void>;
}

const defaultSleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * A worker's turn for work that reads `rows` V1 rows: paused → no; the automatic throttle
 * probes V1 and waits (backing off) while it shows pressure; a rows-per-second ceiling reserves
 * the work's share of the bucket and waits for its start. Waiting longer than `maxWaitSeconds`
 * gives the window back (no delivery is spent waiting out a long pause or pressure).
 */
export async function awaitTurn(
  deps: { v1: Pool; v2: Pool; config: Pick<MigrationConfig, 'schemas'> },
  rows: number,
  options: TurnOptions = {},
): Promise<Turn> {
  const settings = options.settings ?? DEFAULT_THROTTLE;
  const sleep = options.sleep ?? defaultSleep;
  const ctl = controlSchema(deps.config);
  const started = Date.now();
  const waited = () => Date.now() - started;
  const budgetMs = settings.maxWaitSeconds * 1000;
  let backoff = settings.pressureBackoffMs;
  let probe: Probe | undefined;
  for (;;) {
    const control = await readControl(deps.v2, deps.config);
    if (control === NO_CONTROL)
      return { go: true, state: 'running', cause: null, waitedMs: waited(), control };
    if (control.paused) {
      return { go: false, state: 'paused', cause: control.stateCause, waitedMs: waited(), control, probe };
    }
    if (control.autoThrottle) {
      // Pressure a worker sampled while copying (sampleWhileWorking) holds for one backoff: a
      // fresh probe now, taken while fewer windows copy, would not see it.
      const sampledAt = control.lastProbe?.pressureAt ? Date.parse(control.lastProbe.pressureAt) : 0;
      if (Date.now() - sampledAt < settings.pressureBackoffMs && waited() + backoff <= budgetMs) {
        await sleep(backoff);
        backoff = Math.min(backoff * 2, settings.pressureBackoffMs * 8);
        continue;
      }
      const result = await probeV1(deps.v1, settings);
      probe = result.probe;
      const seen = result.pressure
        ? { ...probe, pressureAt: probe.at }
        : { ...probe, pressureAt: control.lastProbe?.pressureAt };
      await deps.v2.query(`UPDATE ${ctl}.backfill_control SET last_probe = $1 WHERE id = 1`, [
        JSON.stringify(seen),
      ]);
      if (result.pressure) {
        await noteState(deps.v2, deps.config, 'pressure', result.pressure, settings.pressureHoldSeconds);
        if (waited() + backoff > budgetMs) {
          return { go: false, state: 'pressure', cause: result.pressure, waitedMs: waited(), control, probe };
        }
        await sleep(backoff);
        backoff = Math.min(backoff * 2, settings.pressureBackoffMs * 8);
        continue;
      }
    }
    if (control.rowsPerSecond !== null) {
      const cause = `ceiling of ${control.rowsPerSecond.toLocaleString('en-US')} rows/s set by ${control.changedBy ?? 'ops'}`;
      // The bucket: this work starts at the bucket's next start (or now), which moves on by its share.
      const reserved = await deps.v2.query<{ wait_ms: number }>(
        `WITH c AS (SELECT greatest(next_start_at, clock_timestamp()) AS start_at, rows_per_second
                      FROM ${ctl}.backfill_control WHERE id = 1 FOR UPDATE)
         UPDATE ${ctl}.backfill_control b
            SET next_start_at = c.start_at + make_interval(secs => $1::float8 / c.rows_per_second)
           FROM c
          WHERE b.id = 1 AND c.rows_per_second IS NOT NULL
            AND c.start_at <= clock_timestamp() + make_interval(secs => $2::float8)
         RETURNING greatest(0, extract(epoch FROM c.start_at - clock_timestamp()) * 1000)::float8 AS wait_ms`,
        [rows, Math.max(0, (budgetMs - waited()) / 1000)],
      );
      await noteState(deps.v2, deps.config, 'limited', cause, settings.pressureHoldSeconds);
      if (reserved.rows.length === 0) {
        return { go: false, state: 'limited', cause, waitedMs: waited(), control, probe };
      }
      await sleep(reserved.rows[0].wait_ms);
      return { go: true, state: 'limited', cause, waitedMs: waited(), control, probe };
    }
    await noteState(deps.v2, deps.config, 'running', null, settings.pressureHoldSeconds);
    return { go: true, state: 'running', cause: null, waitedMs: waited(), control, probe };
  }
}

/**
 * Gives a window back to the planner (pending: the next pump sends it again), and a
 * verification slice back to its run (pending: the next poll sends it again). Only work that is
 * still waiting for a worker goes back.
 */
export async function deferWork(
  v2: Pool,
  config: Pick<MigrationConfig, 'schemas'>,
  work: { type: 'copy-window'; windowId: number } | { type: 'verify-slice'; sliceId: number },
): Promise<void> {
  const ctl = controlSchema(config);
  if (work.type === 'copy-window') {
    await v2.query(
      `UPDATE ${ctl}.windows SET status = 'pending' WHERE id = $1 AND status IN ('queued', 'failed')`,
      [work.windowId],
    );
  } else {
    await v2.query(
      `UPDATE ${ctl}.verification_slices SET status = 'pending' WHERE id = $1 AND status = 'queued'`,
      [work.sliceId],
    );
  }
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

/**
 * Sends again the verification slices of a run that were given back (paused, or held back too
 * long), unless the workers are paused. Sent first, marked after: a crash in between sends a
 * slice twice, which its idempotent check allows, never not at all.
 */
export async function resendDeferredSlices(
  deps: { v2: Pool; config: Pick<MigrationConfig, 'schemas'>; queue: QueuePort },
  runId: number,
): Promise<number> {
  if (await isPaused(deps.v2, deps.config)) return 0;
  const ctl = controlSchema(deps.config);
  const { rows } = await deps.v2.query<{ id: string }>(
    `SELECT id FROM ${ctl}.verification_slices WHERE run_id = $1 AND status = 'pending' ORDER BY id`,
    [runId],
  );
  if (rows.length === 0) return 0;
  await deps.queue.sendAll(
    rows.map((r) => JSON.stringify({ type: 'verify-slice', runId, sliceId: Number(r.id) })),
  );
  await deps.v2.query(
    `UPDATE ${ctl}.verification_slices SET status = 'queued' WHERE id = ANY($1::bigint[]) AND status = 'pending'`,
    [rows.map((r) => r.id)],
  );
  return rows.length;
}
