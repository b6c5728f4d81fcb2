import { isDeepStrictEqual } from 'node:util';
import type { Pool, PoolClient } from 'pg';
import type { MigrationConfig } from './config';
import { ident } from './db';
import { insertFromStaging, insertTemplatesFromStaging, stagingColumns, streamWindow } from './backfill';
import { MigrationError, VerificationFailedError, WindowNotFoundError } from './errors';
import { MAPPINGS, TABLE_ORDER, TENANT_SQL, type ColumnMapping, type MappedTable } from './mapping';
import { bindWindow, qualified, type Bound, type WindowRow } from './windows';
import type { QueuePort } from '../ports/queue';

/**
 * Phase 3. Per table and window, a row count and an order-independent checksum of the mapped
 * columns, computed in SQL on both sides: V1 projected through the mapping, V2 as stored.
 *
 * The digest. Each column is hashed with its type's hash function (jsonb hashes its canonical
 * binary form, so key order and whitespace do not matter). A row's digest chains its columns:
 * each column's hash is seeded with the hash of the columns before it, in a fixed order, so
 * the digest binds every value to its row and its column (values swapped between columns or
 * between rows show). A row with a NULL column (a strict hash gives NULL) takes instead the
 * XOR of its columns' hashes, each seeded by its position, with a fixed number per position
 * for a NULL. A window's checksum is the sum of its rows' digests (numeric, no overflow), so
 * equal multisets of rows give equal checksums and a missing, extra, duplicated or changed row
 * changes it.
 *
 * Instants hash as the count of microseconds since 2000-01-01 UTC that both timestamp types
 * store, so no session time zone enters a digest: V1's `timestamp` columns hold UTC and are
 * hashed as stored; V2 hashes the interval since 2000-01-01 UTC, whose hash is that of the
 * same count (infinities, which an interval cannot hold on every version, through the
 * session's UTC). Columns that are one value for every V1 row (the tenant, a literal such as
 * quality) come first in the chain, so V1 hashes them once per query (an InitPlan), not per
 * row; every V2 row still hashes its stored values.
 *
 * Cost (1M telemetry rows, one backend per side): counting reads no column (0.04-0.08 s);
 * hashing every column of every row is 0.30 s (V1) and 0.45 s (V2) of CPU more, and putting
 * rows in windows 0.15 s more per side. Both sides run at once, one core each.
 */

export interface VerifyDeps {
  v1: Pool;
  v2: Pool;
  config: MigrationConfig;
}

const control = (config: MigrationConfig) => ident(config.schemas.control);

/** A column as the verifier compares it: the V1 expression and the V2 expression, same type. */
interface VerifiedColumn {
  name: string;
  kind: ColumnMapping['kind'];
  v1: string;
  v2: string;
}

function verifiedColumns(table: MappedTable, config: MigrationConfig): VerifiedColumn[] {
  const columns: VerifiedColumn[] = MAPPINGS[table].columns.map((c) => ({
    name: c.v2,
    kind: c.kind,
    v1: c.sql,
    v2: ident(c.v2),
  }));
  if (table === 'devices') {
    // The template must be the tenant's template of the V1 device type.
    columns.push({
      name: 'template_id',
      kind: 'text',
      v1: `"type"`,
      v2: `(SELECT t.device_type FROM ${qualified(config.schemas.v2, 'device_templates')} t
             WHERE t.id = template_id AND t.tenant_id = ${qualified(config.schemas.v2, 'devices')}.tenant_id)`,
    });
  }
  return columns;
}

const typed = (kind: ColumnMapping['kind'], expr: string) =>
  kind === 'json'
    ? `(${expr})::jsonb`
    : kind === 'instant'
      ? `(${expr})::timestamptz`
      : kind === 'bigint'
        ? `(${expr})::bigint`
        : `(${expr})::text COLLATE "C"`;

const HASH: Record<ColumnMapping['kind'], string> = {
  json: 'jsonb_hash_extended',
  instant: 'timestamp_hash_extended',
  bigint: 'hashint8extended',
  text: 'hashtextextended',
};

/** A V1 instant mapped as `("column" AT TIME ZONE 'UTC')`: the column holds the UTC wall time. */
const UTC_COLUMN = /^\(("(?:[^"]|"")+") AT TIME ZONE 'UTC'\)$/;

/** True for a V1 expression that is one value for every row (the tenant, a literal). */
const isConstant = (expr: string) => expr === TENANT_SQL || /^'(?:[^']|'')*'$/.test(expr);

/** A column's hash with the given seed (an SQL expression), NULL when the value is. */
function hashColumn(column: VerifiedColumn, side: 'v1' | 'v2', seed: string): string {
  const expr = side === 'v1' ? column.v1 : column.v2;
  if (column.kind === 'instant' && side === 'v1') {
    // `timestamp` as stored is the UTC wall time, whose value is the instant's.
    const utc = UTC_COLUMN.exec(expr);
    return `timestamp_hash_extended(${utc ? `${utc[1]}::timestamp` : `(${expr})::timestamptz::timestamp`}, ${seed})`;
  }
  if (column.kind === 'instant') {
    // The interval since 2000-01-01 UTC hashes as that count of microseconds, as
    // timestamp_hash_extended does, without a time zone conversion per row.
    const value = typed('instant', expr);
    return `CASE WHEN isfinite(${value})
      THEN interval_hash_extended(${value} - '2000-01-01 00:00:00+00'::timestamptz, ${seed})
      ELSE timestamp_hash_extended(${value}::timestamp, ${seed}) END`;
  }
  return `${HASH[column.kind]}(${typed(column.kind, expr)}, ${seed})`;
}

/** A row's digest (see the comment at the top). */
function rowDigest(table: MappedTable, config: MigrationConfig, side: 'v1' | 'v2'): string {
  const columns = verifiedColumns(table, config).map((c, i) => ({
    c,
    seed: i + 1,
    constant: isConstant(c.v1),
  }));
  const xor: string[] = [];
  const once: string[] = [];
  for (const { c, seed, constant } of columns)
    (side === 'v1' && constant ? once : xor).push(
      `coalesce(${hashColumn(c, side, String(seed))}, ${seed * 7919 + 17})`,
    );
  if (once.length > 0) xor.push(`(SELECT ${once.join(' # ')})`);
  const order = [
    ...columns.filter((x) => x.constant),
    ...columns.filter((x) => !x.constant && x.c.kind === 'instant'),
    ...columns.filter((x) => !x.constant && x.c.kind !== 'instant'),
  ];
  let chain = '0';
  order.forEach((x, i) => {
    chain = hashColumn(x.c, side, chain);
    if (side === 'v1' && x.constant && !order[i + 1]?.constant) chain = `(SELECT ${chain})`;
  });
  return `coalesce(${chain}, ${xor.join(' # ')})`;
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

interface WindowSums {
  rows: number;
  checksum: string;
}

/** Transaction-local planner settings of the checksum queries (see sliceSums). */
const PLANNER_SETTINGS = `SET LOCAL enable_sort = off`;

/**
 * One pass over a run of consecutive windows on one side: each row is put in its window with
 * width_bucket over the windows' lower bounds, then counted and summed per window, hashed into
 * a few groups. The planner cannot know there are only a few: it would sort every row by its
 * window (spilling to disk), so sorting is off for the query.
 */
async function sliceSums(
  client: PoolClient,
  deps: VerifyDeps,
  table: MappedTable,
  windows: WindowRow[],
  side: 'v1' | 'v2',
): Promise<Map<number, WindowSums>> {
  const { config } = deps;
  await client.query(`SELECT set_config('migration.tenant_id', $1, true)`, [config.tenant.id]);
  const range = await bindWindow(
    client,
    table,
    { lower_bound: windows[0].lower_bound, upper_bound: windows[windows.length - 1].upper_bound },
    side,
  );
  await client.query(PLANNER_SETTINGS);
  const starts = windows.slice(1).map((w) => w.lower_bound as Bound);
  const source = sourceTable(table, config, side);
  let sql: string;
  let params: unknown[];
  if (MAPPINGS[table].windowKey === 'id') {
    sql = `SELECT width_bucket(id COLLATE "C", $1::text[]) AS bucket, count(*) AS n, coalesce(sum(h), 0)::text AS s
             FROM (SELECT id, ${rowDigest(table, config, side)} AS h FROM ${source} WHERE ${range}) x GROUP BY 1`;
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
    const id = v1 ? 'id' : 'legacy_id';
    sql = `SELECT CASE WHEN b > 0 AND ts = (${bounds})[b] THEN width_bucket(ROW(ts, k), ${rowBounds}) ELSE b END AS bucket,
                  count(*) AS n, coalesce(sum(h), 0)::text AS s
             FROM (SELECT width_bucket("timestamp", ${bounds}) AS b, "timestamp" AS ts, ${id} AS k,
                          ${rowDigest(table, config, side)} AS h
                     FROM ${source} WHERE ${range}${v1 ? '' : ' AND legacy_id IS NOT NULL'} OFFSET 0) x
            GROUP BY 1`;
    params = [starts.map((b) => b.ts), starts.map((b) => b.id)];
  }
  const { rows } = await client.query<{ bucket: number; n: string; s: string }>(sql, params);
  const sums = new Map<number, WindowSums>();
  for (const w of windows) sums.set(w.id, { rows: 0, checksum: '0' });
  for (const r of rows) sums.set(windows[r.bucket].id, { rows: Number(r.n), checksum: r.s });
  return sums;
}

async function onClient<T>(pool: Pool, fn: (c: PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    // Both sides read instants in UTC, so digests never depend on a session's time zone.
    await client.query(`SET LOCAL TimeZone = 'UTC'`);
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}

async function loadWindows(v2: Pool, config: MigrationConfig, ids: number[]): Promise<WindowRow[]> {
  const { rows } = await v2.query<WindowRow>(
    `SELECT id::int AS id, table_name, seq, lower_bound, upper_bound, expected_rows::int AS expected_rows, status, attempts
       FROM ${control(config)}.windows WHERE id = ANY($1::bigint[]) ORDER BY seq`,
    [ids],
  );
  if (rows.length !== ids.length) {
    const found = new Set(rows.map((r) => r.id));
    throw new WindowNotFoundError(ids.find((id) => !found.has(id)) ?? ids[0]);
  }
  return rows;
}

/** Counts and checksums a set of consecutive windows of one table on both sides, concurrently. */
export async function checkWindows(
  deps: VerifyDeps,
  windowIds: number[],
): Promise<{ window: WindowRow; v1: WindowSums; v2: WindowSums; matched: boolean }[]> {
  const windows = await loadWindows(deps.v2, deps.config, windowIds);
  const table = windows[0].table_name;
  const [v1, v2] = await Promise.all([
    onClient(deps.v1, (c) => sliceSums(c, deps, table, windows, 'v1')),
    onClient(deps.v2, (c) => sliceSums(c, deps, table, windows, 'v2')),
  ]);
  return windows.map((window) => {
    const a = v1.get(window.id)!;
    const b = v2.get(window.id)!;
    return { window, v1: a, v2: b, matched: a.rows === b.rows && a.checksum === b.checksum };
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
  const ctl = control(config);
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
  const ctl = control(config);
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
  const ctl = control(deps.config);
  const slice = await deps.v2.query<{ run_id: string; window_ids: string[]; status: string }>(
    `SELECT run_id, window_ids, status FROM ${ctl}.verification_slices WHERE id = $1`,
    [sliceId],
  );
  if (slice.rows.length === 0)
    throw new MigrationError(`Verification slice ${sliceId} does not exist`, { sliceId });
  const { run_id: runId, window_ids: windowIds } = slice.rows[0];
  try {
    const results = await checkWindows(deps, windowIds.map(Number));
    await recordResults(deps, Number(runId), results);
    await deps.v2.query(
      `UPDATE ${ctl}.verification_slices SET status = 'done', finished_at = now(), attempts = attempts + 1 WHERE id = $1`,
      [sliceId],
    );
    return { windows: results.length, mismatched: results.filter((r) => !r.matched).length };
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

async function recordResults(
  deps: VerifyDeps,
  runId: number,
  results: Awaited<ReturnType<typeof checkWindows>>,
  repairAttempts = 0,
): Promise<void> {
  await deps.v2.query(
    `INSERT INTO ${control(deps.config)}.verification_windows
       (run_id, window_id, v1_rows, v2_rows, v1_checksum, v2_checksum, matched, repair_attempts)
     SELECT $1, w, a, b, ca::numeric, cb::numeric, m, $8
       FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::boolean[]) AS u(w, a, b, ca, cb, m)
     ON CONFLICT (run_id, window_id) DO UPDATE SET v1_rows = EXCLUDED.v1_rows, v2_rows = EXCLUDED.v2_rows,
       v1_checksum = EXCLUDED.v1_checksum, v2_checksum = EXCLUDED.v2_checksum, matched = EXCLUDED.matched,
       repair_attempts = EXCLUDED.repair_attempts, checked_at = now()`,
    [
      runId,
      results.map((r) => r.window.id),
      results.map((r) => r.v1.rows),
      results.map((r) => r.v2.rows),
      results.map((r) => r.v1.checksum),
      results.map((r) => r.v2.checksum),
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
  const ctl = control(config);
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
        ? `(${rowDigest(table, deps.config, side)})::text AS digest`
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
    // A Bernoulli sample of about twice the size wanted, so a small table still yields enough.
    const keys = (
      await deps.v1.query<{ k: string }>(
        `SELECT id::text AS k FROM ${source}
           TABLESAMPLE BERNOULLI (least(100, greatest(0.001, $1::float8 * 100 /
             greatest(1, (SELECT reltuples FROM pg_class WHERE oid = $2::regclass)))))
          LIMIT $3`,
        [sampleSize * 2, `${deps.config.schemas.v1}.${MAPPINGS[table].v1Table}`, sampleSize],
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

async function mismatchedWindows(deps: VerifyDeps, runId: number): Promise<WindowRow[]> {
  const { rows } = await deps.v2.query<WindowRow>(
    `SELECT w.id::int AS id, w.table_name, w.seq, w.lower_bound, w.upper_bound, w.expected_rows::int AS expected_rows, w.status, w.attempts
       FROM ${control(deps.config)}.verification_windows v JOIN ${control(deps.config)}.windows w ON w.id = v.window_id
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
  const ctl = control(deps.config);
  const run = await deps.v2.query<{ scope: 'full' | 'incremental' }>(
    `SELECT scope FROM ${ctl}.verification_runs WHERE id = $1`,
    [runId],
  );
  const totals = await deps.v2.query<{
    table_name: string;
    windows: string;
    bad: string;
    a: string;
    b: string;
  }>(
    `SELECT w.table_name, count(*) AS windows, count(*) FILTER (WHERE NOT v.matched) AS bad, sum(v.v1_rows) AS a, sum(v.v2_rows) AS b
       FROM ${ctl}.verification_windows v JOIN ${ctl}.windows w ON w.id = v.window_id WHERE v.run_id = $1 GROUP BY 1`,
    [runId],
  );
  const tables: VerificationReport['tables'] = {};
  for (const r of totals.rows) {
    tables[r.table_name] = {
      windows: Number(r.windows),
      mismatched: Number(r.bad),
      v1Rows: Number(r.a),
      v2Rows: Number(r.b),
    };
  }
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
    `UPDATE ${control(deps.config)}.verification_runs SET status = $2, finished_at = now(), report = $3 WHERE id = $1`,
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
      const [result] = await checkWindows(deps, [window.id]);
      await recordResults(deps, runId, [result], attempts);
      clean = result.matched;
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
  const ctl = control(deps.config);
  const touched = [...(await touchedWindows(deps, since))];
  const run = await deps.v2.query<{ id: string }>(
    `INSERT INTO ${ctl}.verification_runs (scope, since) VALUES ('incremental', $1) RETURNING id`,
    [since],
  );
  const runId = Number(run.rows[0].id);
  for (const windowId of touched) await recordResults(deps, runId, await checkWindows(deps, [windowId]));
  const report = await buildReport(deps, runId);
  await finishVerification(deps, report);
  return report;
}
