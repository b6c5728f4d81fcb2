import type { Pool } from 'pg';
import type { MigrationConfig } from '../config';
import { controlSchema } from '../db';
import { STAGES } from '../mapping';
import type { WorkMessage } from '../work-messages';
import type { QueuePort } from '../../ports/queue';
import type { BackfillDeps } from './copy';
import { readControl, type ThrottleState } from './control';

export interface TableProgress {
  windows: number;
  done: number;
  failed: number;
  queued: number;
  expectedRows: number;
  rowsCopied: number;
}

export interface BackfillProgress {
  planned: boolean;
  complete: boolean;
  windowsTotal: number;
  windowsDone: number;
  windowsFailed: number;
  rowsCopied: number;
  rowsExpected: number;
  rowsPerSecond: number;
  etaSeconds: number | null;
  elapsedSeconds: number;
  tables: Record<string, TableProgress>;
  failures: { windowId: number; table: string; error: string }[];
  /** Whether the workers are held back (paused by ops, under a ceiling, V1 under pressure), and why. */
  throttle: {
    state: ThrottleState;
    cause: string | null;
    since: string;
    paused: boolean;
    rowsPerSecond: number | null;
    windowRows: number | null;
  };
}

/** Windows total / done / failed, rows copied, rows per second and ETA, from the control schema. */
export async function backfillProgress(v2: Pool, config: MigrationConfig): Promise<BackfillProgress> {
  const ctl = controlSchema(config);
  const { rows } = await v2.query<{
    table_name: string;
    windows: string;
    done: string;
    failed: string;
    queued: string;
    expected: string;
    copied: string;
    first: Date | null;
    last: Date | null;
  }>(
    `SELECT table_name, count(*) AS windows,
            count(*) FILTER (WHERE status = 'done') AS done,
            count(*) FILTER (WHERE status = 'failed') AS failed,
            count(*) FILTER (WHERE status IN ('queued', 'running')) AS queued,
            sum(expected_rows) AS expected,
            coalesce(sum(rows_copied) FILTER (WHERE status = 'done'), 0) AS copied,
            min(started_at) AS first, max(finished_at) AS last
       FROM ${ctl}.windows GROUP BY table_name`,
  );
  const tables: Record<string, TableProgress> = {};
  let first: number | null = null;
  for (const r of rows) {
    tables[r.table_name] = {
      windows: Number(r.windows),
      done: Number(r.done),
      failed: Number(r.failed),
      queued: Number(r.queued),
      expectedRows: Number(r.expected),
      rowsCopied: Number(r.copied),
    };
    if (r.first && (first === null || r.first.getTime() < first)) first = r.first.getTime();
  }
  const sum = (k: keyof TableProgress) => Object.values(tables).reduce((a, t) => a + t[k], 0);
  const windowsTotal = sum('windows');
  const windowsDone = sum('done');
  const rowsCopied = sum('rowsCopied');
  const rowsExpected = sum('expectedRows');
  const elapsedSeconds = first === null ? 0 : Math.max(0, (Date.now() - first) / 1000);
  const rowsPerSecond = elapsedSeconds > 0 ? rowsCopied / elapsedSeconds : 0;
  const remaining = Math.max(0, rowsExpected - rowsCopied);
  const failures = (
    await v2.query<{ id: string; table_name: string; last_error: string }>(
      `SELECT id, table_name, last_error FROM ${ctl}.windows WHERE status = 'failed' ORDER BY id LIMIT 20`,
    )
  ).rows.map((r) => ({ windowId: Number(r.id), table: r.table_name, error: r.last_error }));
  const control = await readControl(v2, config);
  return {
    planned: windowsTotal > 0,
    complete: windowsTotal > 0 && windowsDone === windowsTotal,
    windowsTotal,
    windowsDone,
    windowsFailed: sum('failed'),
    rowsCopied,
    rowsExpected,
    rowsPerSecond: Math.round(rowsPerSecond),
    etaSeconds: remaining === 0 ? 0 : rowsPerSecond > 0 ? Math.round(remaining / rowsPerSecond) : null,
    elapsedSeconds: Math.round(elapsedSeconds * 10) / 10,
    tables,
    failures,
    throttle: {
      state: control.state,
      cause: control.stateCause,
      since: control.stateSince,
      paused: control.paused,
      rowsPerSecond: control.rowsPerSecond,
      windowRows: control.windowRows,
    },
  };
}

/**
 * Sends the windows that may start now: those of the first stage (users; devices; telemetry
 * and alerts) that is not complete yet, and that were not sent before. Called by the state
 * machine's poll loop (and the rehearsal) until the backfill is complete.
 */
export async function pumpBackfill(
  deps: BackfillDeps & { queue: QueuePort },
): Promise<{ enqueued: number; progress: BackfillProgress }> {
  const ctl = controlSchema(deps.config);
  let progress = await backfillProgress(deps.v2, deps.config);
  let enqueued = 0;
  // Paused: nothing is sent (work given back waits as pending until ops resume).
  if (progress.throttle.paused) return { enqueued, progress };
  for (const stage of STAGES) {
    const stageDone = stage.every(
      (t) => (progress.tables[t]?.done ?? 0) === (progress.tables[t]?.windows ?? 0),
    );
    const pending = await deps.v2.query<{ id: string }>(
      `SELECT id FROM ${ctl}.windows WHERE table_name = ANY($1::text[]) AND status = 'pending' ORDER BY table_name, seq`,
      [stage],
    );
    if (pending.rows.length > 0) {
      const ids = pending.rows.map((r) => Number(r.id));
      await deps.queue.sendAll(
        ids.map((windowId) => JSON.stringify({ type: 'copy-window', windowId } satisfies WorkMessage)),
      );
      await deps.v2.query(
        `UPDATE ${ctl}.windows SET status = 'queued', queued_at = now() WHERE id = ANY($1::bigint[]) AND status = 'pending'`,
        [ids],
      );
      enqueued += ids.length;
    }
    if (!stageDone) break;
  }
  if (enqueued > 0) progress = await backfillProgress(deps.v2, deps.config);
  return { enqueued, progress };
}
