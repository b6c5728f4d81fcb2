import { isDeepStrictEqual } from 'node:util';
import type { Pool, PoolClient } from 'pg';
import type { MigrationConfig } from './config';
import { controlSchema, ident, withTransaction } from './db';
import { insertFromStaging, insertTemplatesFromStaging, stagingColumns, streamWindow } from './backfill';
import { MigrationError, VerificationFailedError, WindowNotFoundError } from './errors';
import { STORED_DIGEST, rowDigest, typed, verifiedColumns } from './digest';
import { MAPPINGS, TABLE_ORDER, type ColumnMapping, type MappedTable } from './mapping';
import { bindWindow, qualified, type Bound, type WindowRow } from './windows';
import type { QueuePort } from '../ports/queue';

/**
 * Phase 3. Per table and window, a row count and an order-independent checksum of the mapped
 * columns, computed in SQL on both sides: V1 projected through the mapping, V2 as stored (the
 * digest of each row is described in digest.ts).
 *
 * A slice (a run of consecutive windows, the unit of fan-out) is checked in one pass a side:
 * first one count and checksum of the whole slice on each side. A slice's checksum is the sum
 * of its windows' checksums, so when the two agree every window agrees (a difference in one
 * window would have to be cancelled exactly by a 64-bit hash difference in another). Only a
 * slice that differs is counted again window by window, to name its mismatched windows.
 *
 * Cost (1M telemetry rows, 2 cores): counting reads no column; V1 hashes every mapped column of
 * every row (about 0.3 s of CPU, in parallel workers where the planner chooses them), while V2
 * telemetry on native partitions sums the digest PostgreSQL stored with each row. Putting rows
 * in windows costs about 0.15 s of CPU a side more, paid only by a slice that differs.
 */

export interface VerifyDeps {
  v1: Pool;
  v2: Pool;
  config: MigrationConfig;
}

/** The key the windows split on, on each side. */
function keyExpressions(table: MappedTable, side: 'v1' | 'v2'): { ts?: string; id: string } {
  if (MAPPINGS[table].windowKey === 'id') return { id: `id COLLATE "C"` };
  return side === 'v1'
    ? { ts: `"timestamp"`, id: 'id' }
    : { ts: `("timestamp" AT TIME ZONE 'UTC')`, id: 'legacy_id' };
}

const sourceTable = (table: MappedTable, config: MigrationConfig, side: 'v1' | 'v2') =>
  side === 'v1'
    ? qualified(config.schemas.v1, MAPPINGS[table].v1Table)
    : qualified(config.schemas.v2, MAPPINGS[table].v2Table);

export interface WindowSums {
  rows: number;
  checksum: string;
}

/** One window's result; a window of a matching slice has no counts of its own (see the top). */
export interface WindowResult {
  window: WindowRow;
  v1?: WindowSums;
  v2?: WindowSums;
  matched: boolean;
}

export interface SliceResult {
  /** Both sides' counts and checksums of the whole slice. */
  v1: WindowSums;
  v2: WindowSums;
  /** True when the totals agree: every window matched, none was counted on its own. */
  matched: boolean;
  windows: WindowResult[];
}

const sumsEqual = (a: WindowSums, b: WindowSums) => a.rows === b.rows && a.checksum === b.checksum;

/**
 * The digest expression of a side's rows. V2 telemetry sums the digest stored with each row
 * when the column is there and its comment names the current digest, else hashes the rows
 * here. The stored column is read alone: an expression that named the other columns too would
 * make every row's text and jsonb columns be unpacked, even if never hashed. (A stored digest
 * is never NULL; if one were, the sum would miss it and the slice would show as mismatched.)
 */
async function sideDigest(
  client: PoolClient,
  config: MigrationConfig,
  table: MappedTable,
  side: 'v1' | 'v2',
): Promise<string> {
  const computed = rowDigest(table, side, config);
  if (side === 'v1' || table !== STORED_DIGEST.table) return computed;
  const { rows } = await client.query<{ comment: string | null }>(
    `SELECT col_description(a.attrelid, a.attnum) AS comment FROM pg_catalog.pg_attribute a
      WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND a.attgenerated = 's' AND NOT a.attisdropped`,
    [sourceTable(table, config, side), STORED_DIGEST.column],
  );
  return rows[0]?.comment === STORED_DIGEST.version ? ident(STORED_DIGEST.column) : computed;
}

/** A slice's rows on one side, in that side's snapshot transaction. */
interface SliceScope {
  client: PoolClient;
  table: MappedTable;
  windows: WindowRow[];
  side: 'v1' | 'v2';
  /** The table and the filter of the slice's rows. */
  from: string;
  /** The digest expression of a row. */
  digest: string;
}

/** Sets the tenant and binds the slice's range on the side's transaction; the slice's scope. */
async function sliceScope(
  client: PoolClient,
  config: MigrationConfig,
  table: MappedTable,
  windows: WindowRow[],
  side: 'v1' | 'v2',
): Promise<SliceScope> {
  await client.query(`SELECT set_config('migration.tenant_id', $1, true)`, [config.tenant.id]);
  const range = await bindWindow(
    client,
    table,
    { lower_bound: windows[0].lower_bound, upper_bound: windows[windows.length - 1].upper_bound },
    side,
  );
  const nativeOnly = side === 'v2' && MAPPINGS[table].windowKey !== 'id' ? ' AND legacy_id IS NOT NULL' : '';
  return {
    client,
    table,
    windows,
    side,
    from: `${sourceTable(table, config, side)} WHERE ${range}${nativeOnly}`,
    digest: await sideDigest(client, config, table, side),
  };
}

/** The count and checksum of a whole slice on one side: one aggregate, no grouping. */
async function sliceTotal({ client, from, digest }: SliceScope): Promise<WindowSums> {
  const { rows } = await client.query<{ n: string; s: string }>(
    `SELECT count(*) AS n, coalesce(sum(${digest}), 0)::text AS s FROM ${from}`,
  );
  return { rows: Number(rows[0].n), checksum: rows[0].s };
}

/**
 * The count and checksum of each window of a slice on one side, in one pass: each row is put
 * in its window with width_bucket over the windows' lower bounds, then counted and summed per
 * window, hashed into a few groups. The planner cannot know there are only a few: it would
 * sort every row by its window (spilling to disk), so sorting is off for the query.
 */
async function windowSums({
  client,
  table,
  windows,
  side,
  from,
  digest,
}: SliceScope): Promise<Map<number, WindowSums>> {
  await client.query(`SET LOCAL enable_sort = off`);
  const starts = windows.slice(1).map((w) => w.lower_bound as Bound);
  let sql: string;
  let params: unknown[];
  if (MAPPINGS[table].windowKey === 'id') {
    sql = `SELECT width_bucket(id COLLATE "C", $1::text[]) AS bucket, count(*) AS n, coalesce(sum(h), 0)::text AS s
             FROM (SELECT id, ${digest} AS h FROM ${from}) x GROUP BY 1`;
    params = [starts.map((b) => b.id)];
  } else {
    // Windows split on (timestamp, id): width_bucket on the timestamp places every row but
    // those on a bound's timestamp, which take the (timestamp, id) comparison. V2 compares its
    // instants with the bounds converted once from V1's UTC wall times. OFFSET 0 keeps the
    // subquery, so each row's width_bucket is computed once, not once per use.
    const v1 = side === 'v1';
    const bounds = v1
      ? '$1::timestamp[]'
      : `(SELECT coalesce(array_agg(t AT TIME ZONE 'UTC' ORDER BY o), '{}') FROM unnest($1::timestamp[]) WITH ORDINALITY AS u(t, o))`;
    const rowBounds = `(SELECT array_agg(ROW(${v1 ? 't' : `t AT TIME ZONE 'UTC'`}, i) ORDER BY o)
                          FROM unnest($1::timestamp[], $2::bigint[]) WITH ORDINALITY AS u(t, i, o))`;
    sql = `SELECT CASE WHEN b > 0 AND ts = (${bounds})[b] THEN width_bucket(ROW(ts, k), ${rowBounds}) ELSE b END AS bucket,
                  count(*) AS n, coalesce(sum(h), 0)::text AS s
             FROM (SELECT width_bucket("timestamp", ${bounds}) AS b, "timestamp" AS ts, ${v1 ? 'id' : 'legacy_id'} AS k,
                          ${digest} AS h
                     FROM ${from} OFFSET 0) x
            GROUP BY 1`;
    params = [starts.map((b) => b.ts), starts.map((b) => b.id)];
  }
  const { rows } = await client.query<{ bucket: number; n: string; s: string }>(sql, params);
  const sums = new Map<number, WindowSums>();
  for (const w of windows) sums.set(w.id, { rows: 0, checksum: '0' });
  for (const r of rows) sums.set(windows[r.bucket].id, { rows: Number(r.n), checksum: r.s });
  return sums;
}

/** Opens a read-only REPEATABLE READ transaction that reads instants in UTC. */
async function beginSnapshot(pool: Pool, clients: PoolClient[]): Promise<PoolClient> {
  const client = await pool.connect();
  clients.push(client);
  await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  // Both sides read instants in UTC, so digests never depend on a session's time zone.
  await client.query(`SET LOCAL TimeZone = 'UTC'`);
  return client;
}

/** Runs `fn` in one snapshot transaction per pool given, held for the whole of `fn`. */
async function inSnapshots<T>(pools: Pool[], fn: (clients: PoolClient[]) => Promise<T>): Promise<T> {
  const clients: PoolClient[] = [];
  try {
    for (const pool of pools) await beginSnapshot(pool, clients);
    const result = await fn(clients);
    for (const client of clients) await client.query('COMMIT');
    return result;
  } catch (error) {
    for (const client of clients) await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    for (const client of clients) client.release();
  }
}

const onClient = <T>(pool: Pool, fn: (c: PoolClient) => Promise<T>): Promise<T> =>
  inSnapshots([pool], ([client]) => fn(client));

async function loadWindows(v2: Pool, config: MigrationConfig, ids: number[]): Promise<WindowRow[]> {
  const { rows } = await v2.query<WindowRow>(
    `SELECT id::int AS id, table_name, seq, lower_bound, upper_bound, expected_rows::int AS expected_rows, status, attempts
       FROM ${controlSchema(config)}.windows WHERE id = ANY($1::bigint[]) ORDER BY seq`,
    [ids],
  );
  if (rows.length !== ids.length) {
    const found = new Set(rows.map((r) => r.id));
    throw new WindowNotFoundError(ids.find((id) => !found.has(id)) ?? ids[0]);
  }
  const tables = new Set(rows.map((r) => r.table_name));
  if (tables.size > 1)
    throw new MigrationError(`A verification slice spans tables (${[...tables].join(', ')})`, { ids });
  return rows;
}

/**
 * Checks a set of consecutive windows of one table on both sides, both sides at once in one
 * snapshot each: the slice's totals first, then, only when they differ (or for a single
 * window, whose totals are its own), each window's.
 */
export async function checkWindows(deps: VerifyDeps, windowIds: number[]): Promise<SliceResult> {
  const windows = await loadWindows(deps.v2, deps.config, windowIds);
  const table = windows[0].table_name;
  const { config } = deps;
  return inSnapshots([deps.v1, deps.v2], async ([c1, c2]) => {
    // Each side's settings, range and digest, once for both passes.
    const scopes = await Promise.all([
      sliceScope(c1, config, table, windows, 'v1'),
      sliceScope(c2, config, table, windows, 'v2'),
    ]);
    const [v1, v2] = await Promise.all(scopes.map(sliceTotal));
    const matched = sumsEqual(v1, v2);
    if (windows.length === 1) return { v1, v2, matched, windows: [{ window: windows[0], v1, v2, matched }] };
    if (matched) return { v1, v2, matched, windows: windows.map((window) => ({ window, matched: true })) };
    const [a, b] = await Promise.all(scopes.map(windowSums));
    return {
      v1,
      v2,
      matched,
      windows: windows.map((window) => {
        const x = a.get(window.id)!;
        const y = b.get(window.id)!;
        return { window, v1: x, v2: y, matched: sumsEqual(x, y) };
      }),
    };
  });
}

// ---------------------------------------------------------------------------------------------
// Runs and slices

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

/** Windows changed since `since`: their V1 rows were created or updated after it, or they are open-ended. */
async function touchedWindows(deps: VerifyDeps, since: Date): Promise<Set<number>> {
  const { v1, v2, config } = deps;
  const ctl = controlSchema(config);
  const touched = new Set<number>();
  const windows = (
    await v2.query<WindowRow>(
      `SELECT id::int AS id, table_name, seq, lower_bound, upper_bound FROM ${ctl}.windows ORDER BY table_name, seq`,
    )
  ).rows;
  const changed: Record<MappedTable, string> = {
    users: `"updatedAt" >= $1 OR "createdAt" >= $1`,
    devices: `"updatedAt" >= $1 OR "createdAt" >= $1 OR "lastSeenAt" >= $1`,
    telemetry: `"timestamp" >= $1`,
    alerts: `"createdAt" >= $1 OR "resolvedAt" >= $1`,
  };
  const sinceUtc = since.toISOString().replace('T', ' ').replace('Z', '');
  for (const table of TABLE_ORDER) {
    const ws = windows.filter((w) => w.table_name === table);
    if (ws.length === 0) continue;
    touched.add(ws[ws.length - 1].id);
    const key = keyExpressions(table, 'v1');
    const { rows } = await v1.query<{ ts: string | null; id: string }>(
      `SELECT ${key.ts ? `${key.ts}::text` : 'NULL'} AS ts, ${key.id}::text AS id
         FROM ${sourceTable(table, config, 'v1')} WHERE ${changed[table]}`,
      [sinceUtc],
    );
    for (const r of rows) {
      // The last window whose lower bound is at or below the row's key.
      const at = ws.findLastIndex((w) => !w.lower_bound || compareKey(w.lower_bound, r) <= 0);
      if (at >= 0) touched.add(ws[at].id);
    }
  }
  // Windows that were mismatched or repaired since then are checked again too.
  const recent = await v2.query<{ window_id: string }>(
    `SELECT DISTINCT window_id FROM ${ctl}.verification_windows WHERE checked_at >= $1 AND (NOT matched OR repair_attempts > 0)`,
    [since],
  );
  for (const r of recent.rows) touched.add(Number(r.window_id));
  return touched;
}

function compareKey(bound: Bound, row: { ts: string | null; id: string }): number {
  if (bound.ts !== undefined && row.ts !== null) {
    if (bound.ts !== row.ts) return bound.ts < row.ts ? -1 : 1;
    const a = BigInt(bound.id);
    const b = BigInt(row.id);
    return a === b ? 0 : a < b ? -1 : 1;
  }
  return Buffer.compare(Buffer.from(bound.id), Buffer.from(row.id));
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
        (error as Error).message,
      ])
      .catch(() => undefined);
    throw error;
  }
}

/** Records window results of a run (a window of a matching slice without counts of its own). */
async function recordResults(
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

// ---------------------------------------------------------------------------------------------
// Findings: which rows and columns differ

export interface RowDifference {
  key: string;
  /** `missing` from V2, `extra` in V2, or `changed` with the differing columns. */
  kind: 'missing' | 'extra' | 'changed';
  columns?: { column: string; v1: unknown; v2: unknown }[];
}

export interface WindowMismatch {
  table: MappedTable;
  windowId: number;
  seq: number;
  v1Rows: number;
  v2Rows: number;
  differences: RowDifference[];
  /** True when more rows differ than were listed. */
  truncated: boolean;
}

/**
 * Rows of one table on one side, keyed by V1 id (telemetry: legacy_id, so a changed
 * timestamp is a changed column, not a missing row plus an extra one): either a window's
 * rows, or the rows of the given keys (looked up through the key's index).
 */
async function tableRows(
  deps: VerifyDeps,
  table: MappedTable,
  side: 'v1' | 'v2',
  select: 'digest' | 'values',
  scope: { window: WindowRow } | { keys: string[] },
): Promise<Map<string, Record<string, unknown>>> {
  const columns = verifiedColumns(table, deps.config);
  const key = keyExpressions(table, side);
  return onClient(side === 'v1' ? deps.v1 : deps.v2, async (client) => {
    await client.query(`SELECT set_config('migration.tenant_id', $1, true)`, [deps.config.tenant.id]);
    const idColumn = key.id.replace(' COLLATE "C"', '');
    let where: string;
    let params: unknown[] = [];
    if ('window' in scope) {
      where = await bindWindow(client, table, scope.window, side);
      if (side === 'v2' && table === 'telemetry') where += ' AND legacy_id IS NOT NULL';
    } else {
      where = `${idColumn} = ANY($1::${key.ts ? 'bigint' : 'text'}[])`;
      params = [scope.keys];
    }
    const fields =
      select === 'digest'
        ? `(${rowDigest(table, side, deps.config)})::text AS digest`
        : columns.map((c) => `${typed(c.kind, side === 'v1' ? c.v1 : c.v2)} AS ${ident(c.name)}`).join(', ');
    const { rows } = await client.query(
      `SELECT ${idColumn}::text AS k, ${fields} FROM ${sourceTable(table, deps.config, side)} WHERE ${where}`,
      params,
    );
    return new Map(rows.map((r) => [String(r.k), r]));
  });
}

function sameValue(kind: ColumnMapping['kind'], a: unknown, b: unknown): boolean {
  if (a === null || b === null) return a === b;
  if (kind === 'instant') return (a as Date).getTime() === (b as Date).getTime();
  if (kind === 'json') return isDeepStrictEqual(a, b);
  return String(a) === String(b);
}

/** Finds the rows of a mismatched window that are missing, extra or changed, naming columns. */
export async function explainWindow(
  deps: VerifyDeps,
  window: WindowRow,
  limit = 50,
): Promise<WindowMismatch> {
  const [a, b] = await Promise.all([
    tableRows(deps, window.table_name, 'v1', 'digest', { window }),
    tableRows(deps, window.table_name, 'v2', 'digest', { window }),
  ]);
  const differences: RowDifference[] = [];
  const changedKeys: string[] = [];
  let total = 0;
  for (const [k, row] of a) {
    const other = b.get(k);
    if (!other) {
      total++;
      if (differences.length < limit) differences.push({ key: k, kind: 'missing' });
    } else if (other.digest !== row.digest) {
      total++;
      if (changedKeys.length < limit) changedKeys.push(k);
    }
  }
  for (const k of b.keys()) {
    if (!a.has(k)) {
      total++;
      if (differences.length < limit) differences.push({ key: k, kind: 'extra' });
    }
  }
  if (changedKeys.length > 0) {
    const columns = verifiedColumns(window.table_name, deps.config);
    const [va, vb] = await Promise.all([
      tableRows(deps, window.table_name, 'v1', 'values', { keys: changedKeys }),
      tableRows(deps, window.table_name, 'v2', 'values', { keys: changedKeys }),
    ]);
    for (const k of changedKeys) {
      const x = va.get(k);
      const y = vb.get(k);
      if (!x || !y) continue;
      const diff = columns
        .filter((c) => !sameValue(c.kind, x[c.name], y[c.name]))
        .map((c) => ({ column: c.name, v1: x[c.name], v2: y[c.name] }));
      differences.push({ key: k, kind: 'changed', columns: diff });
    }
  }
  return {
    table: window.table_name,
    windowId: window.id,
    seq: window.seq,
    v1Rows: a.size,
    v2Rows: b.size,
    differences,
    truncated: total > differences.length,
  };
}

/** A deep compare of a random sample of each table's rows, naming each differing column. */
export async function sampleCompare(
  deps: VerifyDeps,
  sampleSize: number,
  tables: MappedTable[] = TABLE_ORDER,
): Promise<{ checked: number; differences: (RowDifference & { table: MappedTable })[] }> {
  const differences: (RowDifference & { table: MappedTable })[] = [];
  let checked = 0;
  for (const table of tables) {
    const source = sourceTable(table, deps.config, 'v1');
    // Twice as many random pages as rows wanted (all of a small table), then rows picked at
    // random among theirs: spread over the table, without reading every page as a per-row
    // (Bernoulli) sample would.
    const keys = (
      await deps.v1.query<{ k: string }>(
        `SELECT id::text AS k FROM ${source}
           TABLESAMPLE SYSTEM (least(100, $1::float8 * 100 /
             greatest(1, pg_relation_size($2::regclass) / current_setting('block_size')::float8)))
          ORDER BY random() LIMIT $3`,
        [sampleSize * 2, source, sampleSize],
      )
    ).rows.map((r) => r.k);
    if (keys.length === 0) continue;
    const columns = verifiedColumns(table, deps.config);
    const [va, vb] = await Promise.all([
      tableRows(deps, table, 'v1', 'values', { keys }),
      tableRows(deps, table, 'v2', 'values', { keys }),
    ]);
    for (const [k, x] of va) {
      checked++;
      const y = vb.get(k);
      if (!y) {
        differences.push({ table, key: k, kind: 'missing' });
        continue;
      }
      const diff = columns
        .filter((c) => !sameValue(c.kind, x[c.name], y[c.name]))
        .map((c) => ({ column: c.name, v1: x[c.name], v2: y[c.name] }));
      if (diff.length > 0) differences.push({ table, key: k, kind: 'changed', columns: diff });
    }
  }
  return { checked, differences };
}

// ---------------------------------------------------------------------------------------------
// Finishing a run, repair

export interface VerificationReport {
  runId: number;
  scope: 'full' | 'incremental';
  clean: boolean;
  checkedAt: string;
  tables: Record<string, { windows: number; mismatched: number; v1Rows: number; v2Rows: number }>;
  mismatches: WindowMismatch[];
  sample: { checked: number; differences: (RowDifference & { table: MappedTable })[] };
  repaired: { windowId: number; table: string; attempts: number; clean: boolean; error?: string }[];
}

export interface TableTotals {
  windows: number;
  mismatched: number;
  v1Rows: number;
  v2Rows: number;
  /** The sums of the digests on each side, modulo 2^64, as decimal text. */
  v1Checksum: string;
  v2Checksum: string;
}

/**
 * Per table, a run's windows checked and mismatched and its rows and checksums on each side:
 * the windows counted on their own, plus the totals of the slices whose windows were not.
 */
export async function runTotals(
  v2: Pool,
  config: MigrationConfig,
  runId: number,
): Promise<Record<string, TableTotals>> {
  const ctl = controlSchema(config);
  const { rows } = await v2.query<{
    table_name: string;
    windows: number;
    bad: number;
    a: string | null;
    b: string | null;
    ca: string | null;
    cb: string | null;
  }>(
    `SELECT table_name, sum(windows)::int AS windows, sum(bad)::int AS bad, sum(a) AS a, sum(b) AS b,
            (sum(ca) % 18446744073709551616)::text AS ca, (sum(cb) % 18446744073709551616)::text AS cb
       FROM (SELECT w.table_name, 1 AS windows, (NOT v.matched)::int AS bad, v.v1_rows AS a, v.v2_rows AS b,
                    v.v1_checksum AS ca, v.v2_checksum AS cb
               FROM ${ctl}.verification_windows v JOIN ${ctl}.windows w ON w.id = v.window_id
              WHERE v.run_id = $1
             UNION ALL
             SELECT s.table_name, 0, 0, s.v1_rows, s.v2_rows, s.v1_checksum, s.v2_checksum
               FROM ${ctl}.verification_slices s
              WHERE s.run_id = $1 AND s.matched
                -- Only slices whose windows have no counts of their own (a one-window slice's
                -- window has its counts, which are the slice's).
                AND NOT EXISTS (SELECT 1 FROM ${ctl}.verification_windows v
                                 WHERE v.run_id = s.run_id AND v.window_id = ANY (s.window_ids)
                                   AND v.v1_rows IS NOT NULL)) t
      GROUP BY table_name`,
    [runId],
  );
  return Object.fromEntries(
    rows.map((r) => [
      r.table_name,
      {
        windows: r.windows,
        mismatched: r.bad,
        v1Rows: Number(r.a ?? 0),
        v2Rows: Number(r.b ?? 0),
        v1Checksum: r.ca ?? '0',
        v2Checksum: r.cb ?? '0',
      },
    ]),
  );
}

async function mismatchedWindows(deps: VerifyDeps, runId: number): Promise<WindowRow[]> {
  const { rows } = await deps.v2.query<WindowRow>(
    `SELECT w.id::int AS id, w.table_name, w.seq, w.lower_bound, w.upper_bound, w.expected_rows::int AS expected_rows, w.status, w.attempts
       FROM ${controlSchema(deps.config)}.verification_windows v JOIN ${controlSchema(deps.config)}.windows w ON w.id = v.window_id
      WHERE v.run_id = $1 AND NOT v.matched ORDER BY w.table_name, w.seq`,
    [runId],
  );
  return rows;
}

/** Builds the run's report from the recorded results: every mismatched table and window, named. */
export async function buildReport(
  deps: VerifyDeps,
  runId: number,
  options: { sampleSize?: number } = {},
): Promise<VerificationReport> {
  const ctl = controlSchema(deps.config);
  const run = await deps.v2.query<{ scope: 'full' | 'incremental' }>(
    `SELECT scope FROM ${ctl}.verification_runs WHERE id = $1`,
    [runId],
  );
  const tables: VerificationReport['tables'] = {};
  for (const [name, t] of Object.entries(await runTotals(deps.v2, deps.config, runId)))
    tables[name] = { windows: t.windows, mismatched: t.mismatched, v1Rows: t.v1Rows, v2Rows: t.v2Rows };
  const mismatches: WindowMismatch[] = [];
  for (const window of await mismatchedWindows(deps, runId))
    mismatches.push(await explainWindow(deps, window));
  const sample = options.sampleSize
    ? await sampleCompare(deps, options.sampleSize, Object.keys(tables) as MappedTable[])
    : { checked: 0, differences: [] };
  return {
    runId,
    scope: run.rows[0]?.scope ?? 'full',
    clean: mismatches.length === 0 && sample.differences.length === 0,
    checkedAt: new Date().toISOString(),
    tables,
    mismatches,
    sample,
    repaired: [],
  };
}

/** Records a run's outcome and report. */
export async function finishVerification(deps: VerifyDeps, report: VerificationReport): Promise<void> {
  await deps.v2.query(
    `UPDATE ${controlSchema(deps.config)}.verification_runs SET status = $2, finished_at = now(), report = $3 WHERE id = $1`,
    [report.runId, report.clean ? 'passed' : 'failed', JSON.stringify(report)],
  );
}

/**
 * Re-copies one window from V1: V2 rows of the window that V1 no longer has are removed, the
 * rest are written from V1 (overwriting V2), in one transaction.
 */
export async function repairWindow(
  deps: VerifyDeps,
  windowId: number,
): Promise<{ deleted: number; written: number }> {
  const [window] = await loadWindows(deps.v2, deps.config, [windowId]);
  const { v1, v2, config } = deps;
  const table = window.table_name;
  const m = MAPPINGS[table];
  const v1Client = await v1.connect();
  const v2Client = await v2.connect();
  try {
    await v1Client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    await v2Client.query('BEGIN');
    await v2Client.query(`CREATE TEMP TABLE stage (${stagingColumns(table)}) ON COMMIT DROP`);
    await streamWindow(v1Client, v2Client, config, window, 'pg_temp.stage');
    await v1Client.query('COMMIT');
    await v2Client.query(`SELECT set_config('migration.tenant_id', $1, true)`, [config.tenant.id]);
    const where = await bindWindow(v2Client, table, window, 'v2');
    const t = ident(m.v2Table);
    const keyMatch =
      table === 'telemetry'
        ? `s.legacy_id = ${t}.legacy_id AND s."timestamp" = ${t}."timestamp"`
        : `s.id = ${t}.id`;
    const deleted = await v2Client.query(
      `DELETE FROM ${qualified(config.schemas.v2, m.v2Table)} WHERE ${where}
          ${table === 'telemetry' ? 'AND legacy_id IS NOT NULL' : ''}
          AND NOT EXISTS (SELECT 1 FROM pg_temp.stage s WHERE ${keyMatch})`,
    );
    if (table === 'devices') await v2Client.query(insertTemplatesFromStaging(config));
    const written = await v2Client.query(insertFromStaging(config, table, '', 'update'));
    await v2Client.query('COMMIT');
    return { deleted: deleted.rowCount ?? 0, written: written.rowCount ?? 0 };
  } catch (error) {
    await v1Client.query('ROLLBACK').catch(() => undefined);
    await v2Client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    v1Client.release();
    v2Client.release();
  }
}

/**
 * Repairs every mismatched window of a run and re-verifies it, up to `maxAttempts` times.
 * Returns the report with the repairs; windows still mismatched fail it.
 */
export async function repairRun(
  deps: VerifyDeps,
  runId: number,
  options: { maxAttempts?: number; sampleSize?: number } = {},
): Promise<VerificationReport> {
  const repaired: VerificationReport['repaired'] = [];
  for (const window of await mismatchedWindows(deps, runId)) {
    let clean = false;
    let attempts = 0;
    let lastError: string | undefined;
    while (!clean && attempts < (options.maxAttempts ?? 3)) {
      attempts++;
      try {
        await repairWindow(deps, window.id);
      } catch (error) {
        // A repair that cannot write leaves the window mismatched; it is named below.
        lastError = `${(error as Error).name}: ${(error as Error).message}`;
      }
      const { windows: results } = await checkWindows(deps, [window.id]);
      await recordResults(deps.v2, deps.config, runId, results, attempts);
      clean = results[0].matched;
    }
    repaired.push({
      windowId: window.id,
      table: window.table_name,
      attempts,
      clean,
      ...(lastError && !clean ? { error: lastError } : {}),
    });
  }
  const report = await buildReport(deps, runId, { sampleSize: options.sampleSize });
  return { ...report, repaired };
}

/**
 * The cutover's drift check: re-verifies only the windows touched since `since`, window by
 * window, as an incremental run recorded like any other. No repair: drift fails the gate.
 */
export async function verifyTouchedWindows(deps: VerifyDeps, since: Date): Promise<VerificationReport> {
  const ctl = controlSchema(deps.config);
  const touched = [...(await touchedWindows(deps, since))];
  const run = await deps.v2.query<{ id: string }>(
    `INSERT INTO ${ctl}.verification_runs (scope, since) VALUES ('incremental', $1) RETURNING id`,
    [since],
  );
  const runId = Number(run.rows[0].id);
  for (const windowId of touched)
    await recordResults(deps.v2, deps.config, runId, (await checkWindows(deps, [windowId])).windows);
  const report = await buildReport(deps, runId);
  await finishVerification(deps, report);
  return report;
}
