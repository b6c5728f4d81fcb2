import type { Pool } from 'pg';
import type { MigrationConfig } from '../config';
import { throttleConfigSchema } from '../throttle-config';
import { controlSchema, withTransaction } from '../db';
import type { QueuePort } from '../../ports/queue';
import { probeV1, type Probe, type PressureThresholds } from './pressure';
import {
  isPaused,
  moveState,
  NO_CONTROL,
  readControl,
  toControl,
  type BackfillControl,
  type ControlRow,
  type ThrottleState,
} from './control';

/**
 * The workers' side of the backfill control (control.ts): each worker's turn before a window
 * (pause, ceiling, V1 pressure), V1 sampled while it copies, and the window size it takes now.
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
