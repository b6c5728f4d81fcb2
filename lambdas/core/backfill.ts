import { pipeline } from 'node:stream/promises';
import type { Pool, PoolClient } from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { z } from 'zod';
import { parseMessageBody, type MigrationConfig } from './config';
import { controlSchema, ident, isTransient } from './db';
import {
  MigrationError,
  ParentRowsMissingError,
  TransientDatabaseError,
  UnmappableRowError,
  WindowCopyError,
  WindowNotFoundError,
} from './errors';
import {
  MAPPINGS,
  STAGES,
  TABLE_ORDER,
  TEMPLATE_ID_SQL,
  v1Projection,
  v2Columns,
  type MappedTable,
} from './mapping';
import { ensureMonthlyPartitions } from './storage';
import { bindWindow, qualified, type Bound, type WindowRow } from './windows';
import type { QueuePort } from '../ports/queue';

export interface BackfillDeps {
  v1: Pool;
  v2: Pool;
  config: MigrationConfig;
}

// ---------------------------------------------------------------------------------------------
// Messages

/** A work message names a window (or a verification slice), never carries rows. */
export const workMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('copy-window'), windowId: z.number().int().positive() }).strict(),
  z
    .object({
      type: z.literal('verify-slice'),
      runId: z.number().int().positive(),
      sliceId: z.number().int().positive(),
    })
    .strict(),
]);
export type WorkMessage = z.infer<typeof workMessageSchema>;

/** Parses a queue body; a malformed one gets InvalidMessageError (it will end in the DLQ). */
export function parseWorkMessage(body: string): WorkMessage {
  return parseMessageBody(workMessageSchema, body);
}

// ---------------------------------------------------------------------------------------------
// Planning

export interface PlanResult {
  tables: Record<MappedTable, { windows: number; expectedRows: number; planned: 'now' | 'before' }>;
  partitionsCreated: string[];
}

/** Window boundaries of a V1 table: every N-th key in key order starts a new window. */
async function boundaries(
  client: PoolClient,
  config: MigrationConfig,
  table: MappedTable,
): Promise<{ starts: Bound[]; total: number }> {
  const m = MAPPINGS[table];
  const source = qualified(config.schemas.v1, m.v1Table);
  const size = table === 'telemetry' ? config.batch.telemetryWindowRows : config.batch.entityWindowRows;
  const total = Number((await client.query(`SELECT count(*) AS n FROM ${source}`)).rows[0].n);
  if (m.windowKey === 'id') {
    const { rows } = await client.query<{ id: string }>(
      `SELECT id FROM (SELECT id COLLATE "C" AS id, row_number() OVER (ORDER BY id COLLATE "C") AS rn FROM ${source}) s
        WHERE rn % $1 = 1 AND rn > 1 ORDER BY id`,
      [size],
    );
    return { starts: rows.map((r) => ({ id: r.id })), total };
  }
  const { rows } = await client.query<{ ts: string; id: string }>(
    `SELECT ts::text AS ts, id::text AS id FROM (
       SELECT "timestamp" AS ts, id, row_number() OVER (ORDER BY "timestamp", id) AS rn FROM ${source}) s
      WHERE rn % $1 = 1 AND rn > 1 ORDER BY s.ts, s.id`,
    [size],
  );
  return { starts: rows.map((r) => ({ ts: r.ts, id: r.id })), total };
}

/**
 * Splits each V1 table into windows of about the target row count and records them in the
 * control schema. Planning again finds the recorded plan and adds nothing. For partitioned
 * telemetry, the monthly partitions of every month that holds data are created first.
 */
export async function planBackfill(deps: BackfillDeps): Promise<PlanResult> {
  const { v1, v2, config } = deps;
  const ctl = controlSchema(config);
  const result: PlanResult = { tables: {} as PlanResult['tables'], partitionsCreated: [] };
  const planned = new Map(
    (
      await v2.query<{ table_name: MappedTable; windows: number; expected_rows: string }>(
        `SELECT * FROM ${ctl}.backfill_plans`,
      )
    ).rows.map((r) => [r.table_name, r]),
  );
  for (const table of TABLE_ORDER) {
    const before = planned.get(table);
    if (before) {
      result.tables[table] = {
        windows: before.windows,
        expectedRows: Number(before.expected_rows),
        planned: 'before',
      };
      continue;
    }
    const reader = await v1.connect();
    let plan: { starts: Bound[]; total: number };
    try {
      await reader.query(`BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`);
      await reader.query(`SET LOCAL DateStyle = 'ISO, YMD'`);
      plan = await boundaries(reader, config, table);
      if (table === 'telemetry') {
        const storage = await v2.query(`SELECT kind FROM ${ctl}.telemetry_storage`);
        if (storage.rows[0]?.kind === 'partitioned') {
          const months = await reader.query<{ m: Date }>(
            `SELECT DISTINCT date_trunc('month', "timestamp") AT TIME ZONE 'UTC' AS m
               FROM ${qualified(config.schemas.v1, 'device_data')}
              WHERE "timestamp" > '-infinity' AND "timestamp" < 'infinity'
              ORDER BY 1 DESC LIMIT 1200`,
          );
          result.partitionsCreated = await ensureMonthlyPartitions(
            v2,
            config.schemas.v2,
            months.rows.map((r) => r.m),
          );
        }
      }
      await reader.query('COMMIT');
    } finally {
      reader.release();
    }
    const size = table === 'telemetry' ? config.batch.telemetryWindowRows : config.batch.entityWindowRows;
    const count = plan.starts.length + 1;
    const client = await v2.connect();
    try {
      await client.query('BEGIN');
      // Two planners at once: the second waits here, then finds the plan and adds nothing.
      await client.query(`LOCK TABLE ${ctl}.backfill_plans IN EXCLUSIVE MODE`);
      const again = await client.query(`SELECT windows FROM ${ctl}.backfill_plans WHERE table_name = $1`, [
        table,
      ]);
      if (again.rows.length > 0) {
        await client.query('ROLLBACK');
        result.tables[table] = {
          windows: again.rows[0].windows,
          expectedRows: plan.total,
          planned: 'before',
        };
        continue;
      }
      const lowers: (string | null)[] = [null, ...plan.starts.map((b) => JSON.stringify(b))];
      const uppers: (string | null)[] = [...plan.starts.map((b) => JSON.stringify(b)), null];
      const expected = lowers.map((_, i) =>
        i < count - 1 ? size : Math.max(0, plan.total - size * (count - 1)),
      );
      await client.query(
        `INSERT INTO ${ctl}.windows (table_name, seq, lower_bound, upper_bound, expected_rows)
         SELECT $1, s.seq, s.lo::jsonb, s.hi::jsonb, s.n
           FROM unnest($2::int[], $3::text[], $4::text[], $5::bigint[]) AS s(seq, lo, hi, n)`,
        [table, lowers.map((_, i) => i + 1), lowers, uppers, expected],
      );
      await client.query(
        `INSERT INTO ${ctl}.backfill_plans (table_name, windows, expected_rows) VALUES ($1, $2, $3)`,
        [table, count, plan.total],
      );
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
    result.tables[table] = { windows: count, expectedRows: plan.total, planned: 'now' };
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Progress and enqueueing

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

// ---------------------------------------------------------------------------------------------
// Copying one window

export interface CopyResult {
  windowId: number;
  table: MappedTable;
  rowsCopied: number;
  rowsInserted: number;
  path: 'fast' | 'staging' | 'skipped';
}

async function loadWindow(v2: Pool, config: MigrationConfig, windowId: number): Promise<WindowRow> {
  const { rows } = await v2.query<WindowRow>(
    `SELECT id::int AS id, table_name, seq, lower_bound, upper_bound, expected_rows::int AS expected_rows, status, attempts
       FROM ${controlSchema(config)}.windows WHERE id = $1`,
    [windowId],
  );
  if (rows.length === 0) throw new WindowNotFoundError(windowId);
  return rows[0];
}

const sqlState = (e: unknown) => (e as { code?: string }).code ?? '';

/** Streams the window's mapped V1 rows into `target` on V2 with COPY; returns the row count. */
export async function streamWindow(
  v1Client: PoolClient,
  v2Client: PoolClient,
  config: MigrationConfig,
  window: WindowRow,
  target: string,
): Promise<number> {
  const m = MAPPINGS[window.table_name];
  await v1Client.query(`SELECT set_config('migration.tenant_id', $1, true)`, [config.tenant.id]);
  const where = await bindWindow(v1Client, window.table_name, window, 'v1');
  // For telemetry, reading each device's slice through the ("deviceId", "timestamp") index
  // keeps a window's cost proportional to its size instead of a scan of the whole table.
  const viaDevices =
    window.table_name === 'telemetry'
      ? ` AND "deviceId" IN (SELECT id FROM ${qualified(config.schemas.v1, 'devices')})`
      : '';
  const source = copyTo(
    `COPY (SELECT ${v1Projection(window.table_name)} FROM ${qualified(config.schemas.v1, m.v1Table)} WHERE ${where}${viaDevices}) TO STDOUT`,
  );
  const sink = copyFrom(`COPY ${target} (${v2Columns(window.table_name).map(ident).join(', ')}) FROM STDIN`);
  const reading = v1Client.query(source);
  const writing = v2Client.query(sink);
  await pipeline(reading, writing);
  return Number(writing.rowCount ?? 0);
}

/** Column definitions of a staging table for a mapped table (V2 types, plus extras). */
export function stagingColumns(table: MappedTable): string {
  const types: Record<string, string> = {
    tenant_id: 'text',
    attributes: 'jsonb',
    metadata: 'jsonb',
    metrics: 'jsonb',
    legacy_id: 'bigint',
    created_at: 'timestamptz',
    updated_at: 'timestamptz',
    last_seen_at: 'timestamptz',
    resolved_at: 'timestamptz',
    timestamp: 'timestamptz',
  };
  return v2Columns(table)
    .map((c) => `${ident(c)} ${types[c] ?? 'text'}`)
    .join(', ');
}

/**
 * INSERT … SELECT from staging into the V2 table. The backfill keeps a row V2 already has
 * (`nothing`: a dual write is newer than the backfill's read); repair overwrites it with V1
 * (`update`: V1 is the source of truth).
 */
export function insertFromStaging(
  config: MigrationConfig,
  table: MappedTable,
  extraWhere = '',
  onConflict: 'nothing' | 'update' = 'nothing',
): string {
  const m = MAPPINGS[table];
  const target = qualified(config.schemas.v2, m.v2Table);
  const cols = m.columns.map((c) => ident(c.v2));
  const written = table === 'devices' ? [...cols, 'template_id'] : cols;
  const keyColumns = new Set(m.conflict.replace(/[()"\s]/g, '').split(','));
  const action =
    onConflict === 'nothing'
      ? 'DO NOTHING'
      : `DO UPDATE SET ${written
          .filter((c) => !keyColumns.has(c.replace(/"/g, '')))
          .map((c) => `${c} = EXCLUDED.${c}`)
          .join(', ')}`;
  const where = extraWhere ? `WHERE ${extraWhere}` : '';
  if (table === 'devices') {
    return `INSERT INTO ${target} (${written.join(', ')})
            SELECT ${cols.map((c) => `s.${c}`).join(', ')}, t.id FROM pg_temp.stage s
              JOIN ${qualified(config.schemas.v2, 'device_templates')} t ON t.tenant_id = s.tenant_id AND t.device_type = s.type
             ${where}
            ON CONFLICT ${m.conflict} ${action}`;
  }
  return `INSERT INTO ${target} (${cols.join(', ')}) SELECT ${cols.join(', ')} FROM pg_temp.stage s
           ${where} ON CONFLICT ${m.conflict} ${action}`;
}

/** Creates the default template of every device type in the staged devices (once per tenant and type). */
export function insertTemplatesFromStaging(config: MigrationConfig): string {
  return `INSERT INTO ${qualified(config.schemas.v2, 'device_templates')} (id, tenant_id, device_type, name, description)
          SELECT DISTINCT ${TEMPLATE_ID_SQL('s.tenant_id', 's.type')}, s.tenant_id, s.type, s.type, 'Default template created by the V1 migration'
            FROM pg_temp.stage s
          ON CONFLICT DO NOTHING`;
}

/**
 * Finds the first staged row that V2 refuses, with one savepoint per row, to name it. Only
 * runs after a bulk insert failed on data, so its cost is paid on the failure path alone.
 */
async function findUnmappableRow(
  v2Client: PoolClient,
  config: MigrationConfig,
  window: WindowRow,
  bulkError: unknown,
): Promise<never> {
  const m = MAPPINGS[window.table_name];
  const keyColumn = window.table_name === 'telemetry' ? 'legacy_id' : 'id';
  await v2Client.query('ROLLBACK TO SAVEPOINT before_insert');
  const rows = await v2Client.query<{ tid: string; key: string }>(
    `SELECT ctid::text AS tid, ${keyColumn}::text AS key FROM pg_temp.stage`,
  );
  for (const row of rows.rows) {
    await v2Client.query('SAVEPOINT one_row');
    try {
      await v2Client.query(insertFromStaging(config, window.table_name, `s.ctid = $1::tid`), [row.tid]);
      await v2Client.query('RELEASE SAVEPOINT one_row');
    } catch (error) {
      throw new UnmappableRowError(
        m.v1Table,
        window.id,
        `${m.v1Table}.id=${row.key}`,
        (error as Error).message,
        { cause: error },
      );
    }
  }
  throw new UnmappableRowError(m.v1Table, window.id, '(unknown)', (bulkError as Error).message, {
    cause: bulkError,
  });
}

/**
 * Copies one window V1 → V2 with the mapping, in one V2 transaction that also marks the window
 * done with its row count. Safe to run twice, or twice at once: rows already in V2 (an earlier
 * copy, or a newer dual write) are kept as they are, never duplicated or overwritten.
 * Telemetry first tries a straight COPY into the table; if any row of the window is already
 * there the unique key refuses it, and the window goes through a staging table and
 * `INSERT … ON CONFLICT DO NOTHING` instead.
 */
export async function copyWindow(
  deps: BackfillDeps,
  windowId: number,
  options: { receiveCount?: number } = {},
): Promise<CopyResult> {
  const { v1, v2, config } = deps;
  const ctl = controlSchema(config);
  const window = await loadWindow(v2, config, windowId);
  const table = window.table_name;
  if (window.status === 'done') return { windowId, table, rowsCopied: 0, rowsInserted: 0, path: 'skipped' };
  await v2.query(
    `UPDATE ${ctl}.windows SET status = 'running', attempts = attempts + 1, started_at = coalesce(started_at, now()) WHERE id = $1`,
    [windowId],
  );

  const attempt = async (fast: boolean): Promise<CopyResult> => {
    const v1Client = await v1.connect();
    const v2Client = await v2.connect();
    // A connection lost mid-copy surfaces as the failed query below; its 'error' event must
    // not also crash the process.
    const ignore = () => undefined;
    v1Client.on('error', ignore);
    v2Client.on('error', ignore);
    let broken = false;
    try {
      await v1Client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      await v2Client.query('BEGIN');
      let rowsCopied: number;
      let rowsInserted: number;
      if (fast) {
        rowsCopied = await streamWindow(
          v1Client,
          v2Client,
          config,
          window,
          qualified(config.schemas.v2, 'telemetry'),
        );
        rowsInserted = rowsCopied;
      } else {
        await v2Client.query(`CREATE TEMP TABLE stage (${stagingColumns(table)}) ON COMMIT DROP`);
        rowsCopied = await streamWindow(v1Client, v2Client, config, window, 'pg_temp.stage');
        if (table === 'devices') await v2Client.query(insertTemplatesFromStaging(config));
        await v2Client.query('SAVEPOINT before_insert');
        try {
          rowsInserted = (await v2Client.query(insertFromStaging(config, table))).rowCount ?? 0;
        } catch (error) {
          const code = sqlState(error);
          if (code.startsWith('22') || (code.startsWith('23') && code !== '23503' && code !== '23505')) {
            await findUnmappableRow(v2Client, config, window, error);
          }
          throw error;
        }
      }
      await v2Client.query(
        `UPDATE ${ctl}.windows SET status = 'done', rows_copied = $2, rows_inserted = $3, finished_at = now(), last_error = NULL
          WHERE id = $1`,
        [windowId, rowsCopied, rowsInserted],
      );
      await v2Client.query('COMMIT');
      await v1Client.query('COMMIT');
      return { windowId, table, rowsCopied, rowsInserted, path: fast ? 'fast' : 'staging' };
    } catch (error) {
      await v2Client.query('ROLLBACK').catch(() => {
        broken = true;
      });
      // A V1 COPY cut off half-way leaves its connection unusable: drop it rather than reuse.
      broken = true;
      throw error;
    } finally {
      v1Client.off('error', ignore);
      v2Client.off('error', ignore);
      v2Client.release(broken);
      v1Client.release(broken);
    }
  };

  try {
    if (table === 'telemetry') {
      try {
        return await attempt(true);
      } catch (error) {
        const code = sqlState(error);
        // Rows of this window are already in V2 (redelivery, a concurrent worker, dual writes),
        // or some row needs naming: take the careful path.
        if (!(code === '23505' || code.startsWith('22') || (code.startsWith('23') && code !== '23503')))
          throw error;
      }
    }
    return await attempt(false);
  } catch (error) {
    const named = classify(error, table, windowId);
    // On its last delivery a failing window goes to the DLQ: mark it failed, visibly.
    const lastDelivery = (options.receiveCount ?? 1) >= config.batch.maxReceiveCount;
    await v2
      .query(`UPDATE ${ctl}.windows SET status = $2, last_error = $3 WHERE id = $1 AND status <> 'done'`, [
        windowId,
        lastDelivery ? 'failed' : 'queued',
        `${named.name}: ${named.message}`,
      ])
      .catch(() => undefined);
    throw named;
  }
}

/** Gives every failure a name the queue, the DLQ and the state machine can act on. */
function classify(error: unknown, table: MappedTable, windowId: number): MigrationError {
  if (error instanceof MigrationError) return error;
  const code = sqlState(error);
  const message = (error as Error).message ?? String(error);
  if (code === '23503') return new ParentRowsMissingError(table, windowId, message, { cause: error });
  if (isTransient(error) || /Connection terminated|ECONNRESET|ECONNREFUSED/.test(message)) {
    return new TransientDatabaseError(
      `window ${windowId} of ${table}: ${message}`,
      { table, windowId },
      { cause: error },
    );
  }
  return new WindowCopyError(table, windowId, message, { cause: error });
}
