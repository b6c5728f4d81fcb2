import type { Pool, PoolClient } from 'pg';
import type { MigrationConfig } from '../config';
import { controlSchema, ident, withTransaction } from '../db';
import { MigrationError, VerificationFailedError } from '../errors';
import { MAPPINGS, TABLE_ORDER, V1_COLUMNS, type MappedTable } from '../mapping';
import type { WindowRow } from '../windows';
import type { QueuePort } from '../../ports/queue';
import { checkWindows, sourceTable, windowBuckets, type VerifyDeps, type WindowResult } from './checksums';
import { safeMessage } from '../safe-error';

/** Verification runs: their slices fanned out to the workers, each slice's results, progress. */

/** The smallest slice the fan-out makes (windows), unless asked for smaller ones. */
export const MIN_WINDOWS_PER_SLICE = 40;

export interface StartOptions {
  /** Only windows touched since this time (the cutover's drift check); all windows when absent. */
  since?: Date;
  /** Windows per slice for the fan-out (default: the whole table, telemetry in `concurrency` slices). */
  windowsPerSlice?: number;
  /** Only these tables (default: all). */
  tables?: MappedTable[];
}

/**
 * Windows changed since `since`: their V1 rows were created or updated after it (any of the
 * table's V1 timestamp columns, from the mapping, is at or after it), or they are open-ended,
 * or they were mismatched or repaired since.
 */
export async function touchedWindows(deps: VerifyDeps, since: Date): Promise<Set<number>> {
  const { v1, v2, config } = deps;
  const ctl = controlSchema(config);
  const touched = new Set<number>();
  const windows = (
    await v2.query<WindowRow>(
      `SELECT id::int AS id, table_name, seq, lower_bound, upper_bound FROM ${ctl}.windows ORDER BY table_name, seq`,
    )
  ).rows;
  const sinceUtc = since.toISOString().replace('T', ' ').replace('Z', '');
  for (const table of TABLE_ORDER) {
    const ws = windows.filter((w) => w.table_name === table);
    if (ws.length === 0) continue;
    touched.add(ws[ws.length - 1].id);
    // The bounds are the first parameters ($1, or $1 and $2), `since` the next one.
    const since = `$${MAPPINGS[table].windowKey === 'id' ? 2 : 3}::timestamp`;
    const changed = V1_COLUMNS[table]
      .filter((c) => c.type === 'timestamp')
      .map((c) => `${ident(c.name)} >= ${since}`)
      .join(' OR ');
    const buckets = windowBuckets(
      table,
      'v1',
      ws,
      `${sourceTable(table, config, 'v1')} WHERE ${changed}`,
      '',
    );
    const { rows } = await v1.query<{ bucket: number }>(`SELECT DISTINCT bucket FROM (${buckets.sql}) w`, [
      ...buckets.params,
      sinceUtc,
    ]);
    for (const r of rows) touched.add(ws[r.bucket].id);
  }
  // Windows that were mismatched or repaired since then are checked again too.
  const recent = await v2.query<{ window_id: string }>(
    `SELECT DISTINCT window_id FROM ${ctl}.verification_windows WHERE checked_at >= $1 AND (NOT matched OR repair_attempts > 0)`,
    [since],
  );
  for (const r of recent.rows) touched.add(Number(r.window_id));
  return touched;
}

/** Creates a verification run and its slices, and sends one message per slice. */
export async function startVerification(
  deps: VerifyDeps & { queue: QueuePort },
  options: StartOptions = {},
): Promise<{ runId: number; slices: number; windows: number }> {
  const { v2, config } = deps;
  const ctl = controlSchema(config);
  const all = (
    await v2.query<{ id: string; table_name: MappedTable }>(
      `SELECT id, table_name FROM ${ctl}.windows ORDER BY table_name, seq`,
    )
  ).rows.map((r) => ({ id: Number(r.id), table: r.table_name }));
  if (all.length === 0)
    throw new VerificationFailedError('there are no backfill windows to verify: run the backfill first', []);
  const touched = options.since ? await touchedWindows(deps, options.since) : undefined;
  const run = await v2.query<{ id: string }>(
    `INSERT INTO ${ctl}.verification_runs (scope, since) VALUES ($1, $2) RETURNING id`,
    [options.since ? 'incremental' : 'full', options.since ?? null],
  );
  const runId = Number(run.rows[0].id);
  const slices: { table: MappedTable; ids: number[] }[] = [];
  for (const table of options.tables ?? TABLE_ORDER) {
    const ids = all.filter((w) => w.table === table && (!touched || touched.has(w.id))).map((w) => w.id);
    if (ids.length === 0) continue;
    // One pass per side per slice: slices spread the work over the workers, but each one also
    // scans its side's table, so they are not made smaller than MIN_WINDOWS_PER_SLICE.
    const per =
      options.windowsPerSlice ??
      Math.max(MIN_WINDOWS_PER_SLICE, Math.ceil(ids.length / config.batch.concurrency));
    // Incremental runs verify touched windows one by one: they are not consecutive.
    const step = touched ? 1 : per;
    for (let i = 0; i < ids.length; i += step) slices.push({ table, ids: ids.slice(i, i + step) });
  }
  const inserted = await v2.query<{ id: string }>(
    `INSERT INTO ${ctl}.verification_slices (run_id, table_name, window_ids, status)
     SELECT $1, t, string_to_array(w, ',')::bigint[], 'queued' FROM unnest($2::text[], $3::text[]) AS u(t, w) RETURNING id`,
    [runId, slices.map((s) => s.table), slices.map((s) => s.ids.join(','))],
  );
  await deps.queue.sendAll(
    inserted.rows.map((r) => JSON.stringify({ type: 'verify-slice', runId, sliceId: Number(r.id) })),
  );
  return { runId, slices: slices.length, windows: slices.reduce((a, s) => a + s.ids.length, 0) };
}

/** The worker's part: checks one slice and records each window's result. Idempotent. */
export async function verifySlice(
  deps: VerifyDeps,
  sliceId: number,
): Promise<{ windows: number; mismatched: number }> {
  const ctl = controlSchema(deps.config);
  const slice = await deps.v2.query<{ run_id: string; window_ids: string[]; status: string }>(
    `SELECT run_id, window_ids, status FROM ${ctl}.verification_slices WHERE id = $1`,
    [sliceId],
  );
  if (slice.rows.length === 0)
    throw new MigrationError(`Verification slice ${sliceId} does not exist`, { sliceId });
  const { run_id: runId, window_ids: windowIds } = slice.rows[0];
  try {
    const result = await checkWindows(deps, windowIds.map(Number));
    await withTransaction(deps.v2, async (client) => {
      await recordResults(client, deps.config, Number(runId), result.windows);
      await client.query(
        `UPDATE ${ctl}.verification_slices SET status = 'done', finished_at = now(), attempts = attempts + 1,
                v1_rows = $2, v2_rows = $3, v1_checksum = $4::numeric, v2_checksum = $5::numeric, matched = $6
          WHERE id = $1`,
        [sliceId, result.v1.rows, result.v2.rows, result.v1.checksum, result.v2.checksum, result.matched],
      );
    });
    return {
      windows: result.windows.length,
      mismatched: result.windows.filter((r) => !r.matched).length,
    };
  } catch (error) {
    await deps.v2
      .query(`UPDATE ${ctl}.verification_slices SET attempts = attempts + 1, last_error = $2 WHERE id = $1`, [
        sliceId,
        safeMessage(error),
      ])
      .catch(() => undefined);
    throw error;
  }
}

/** Records window results of a run (a window of a matching slice without counts of its own). */
export async function recordResults(
  db: Pool | PoolClient,
  config: MigrationConfig,
  runId: number,
  results: WindowResult[],
  repairAttempts = 0,
): Promise<void> {
  await db.query(
    `INSERT INTO ${controlSchema(config)}.verification_windows
       (run_id, window_id, v1_rows, v2_rows, v1_checksum, v2_checksum, matched, repair_attempts)
     SELECT $1, w, a, b, ca::numeric, cb::numeric, m, $8
       FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::boolean[]) AS u(w, a, b, ca, cb, m)
     ON CONFLICT (run_id, window_id) DO UPDATE SET v1_rows = EXCLUDED.v1_rows, v2_rows = EXCLUDED.v2_rows,
       v1_checksum = EXCLUDED.v1_checksum, v2_checksum = EXCLUDED.v2_checksum, matched = EXCLUDED.matched,
       repair_attempts = EXCLUDED.repair_attempts, checked_at = now()`,
    [
      runId,
      results.map((r) => r.window.id),
      results.map((r) => r.v1?.rows ?? null),
      results.map((r) => r.v2?.rows ?? null),
      results.map((r) => r.v1?.checksum ?? null),
      results.map((r) => r.v2?.checksum ?? null),
      results.map((r) => r.matched),
      repairAttempts,
    ],
  );
}

export interface VerificationProgress {
  runId: number;
  slices: number;
  slicesDone: number;
  complete: boolean;
  windowsChecked: number;
  windowsMismatched: number;
}

export async function verificationProgress(
  v2: Pool,
  config: MigrationConfig,
  runId: number,
): Promise<VerificationProgress> {
  const ctl = controlSchema(config);
  const s = await v2.query<{ n: string; done: string }>(
    `SELECT count(*) AS n, count(*) FILTER (WHERE status = 'done') AS done FROM ${ctl}.verification_slices WHERE run_id = $1`,
    [runId],
  );
  const w = await v2.query<{ n: string; bad: string }>(
    `SELECT count(*) AS n, count(*) FILTER (WHERE NOT matched) AS bad FROM ${ctl}.verification_windows WHERE run_id = $1`,
    [runId],
  );
  const slices = Number(s.rows[0].n);
  const slicesDone = Number(s.rows[0].done);
  return {
    runId,
    slices,
    slicesDone,
    complete: slices > 0 && slices === slicesDone,
    windowsChecked: Number(w.rows[0].n),
    windowsMismatched: Number(w.rows[0].bad),
  };
}
