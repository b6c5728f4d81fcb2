import type { Pool, PoolClient } from 'pg';
import type { MigrationConfig } from '../config';
import { ident } from '../db';
import { STORED_DIGEST, rowDigest } from '../digest';
import { MAPPINGS, type MappedTable } from '../mapping';
import { bindWindow, loadWindows, qualified, type Bound, type WindowRow } from '../windows';

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
export function keyExpressions(table: MappedTable, side: 'v1' | 'v2'): { ts?: string; id: string } {
  if (MAPPINGS[table].windowKey === 'id') return { id: `id COLLATE "C"` };
  return side === 'v1'
    ? { ts: `"timestamp"`, id: 'id' }
    : { ts: `("timestamp" AT TIME ZONE 'UTC')`, id: 'legacy_id' };
}

/**
 * The V2 rows of the migrated tenant: V2 may hold other tenants' rows in the same key ranges
 * (the write switch makes that normal); verification never counts them and repair never
 * touches them. Reads the transaction's `migration.tenant_id` once per query (an InitPlan).
 */
export const V2_TENANT_FILTER = `tenant_id = (SELECT current_setting('migration.tenant_id'))`;

export const sourceTable = (table: MappedTable, config: MigrationConfig, side: 'v1' | 'v2') =>
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
  // V2 may hold other tenants' rows in the same key range: only the migrated tenant's count.
  const tenant = side === 'v2' ? ` AND ${V2_TENANT_FILTER}` : '';
  return {
    client,
    table,
    windows,
    side,
    from: `${sourceTable(table, config, side)} WHERE ${range}${nativeOnly}${tenant}`,
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
 * A query over `from` that puts each row in its window: `bucket` is the index of the window
 * among `windows` (0 for the first), from width_bucket over the windows' lower bounds, with the
 * `extra` select-list columns (named, as the query's outer columns). For ("timestamp", id) windows, width_bucket on the timestamp
 * places every row but those on a bound's timestamp, which take the (timestamp, id)
 * comparison; V2 compares its instants with the bounds converted once from V1's UTC wall
 * times. OFFSET 0 keeps the subquery, so each row's width_bucket is computed once, not once
 * per use. Bounds compare in PostgreSQL, as the windows were cut (never as text in JavaScript).
 */
export function windowBuckets(
  table: MappedTable,
  side: 'v1' | 'v2',
  windows: Pick<WindowRow, 'lower_bound'>[],
  from: string,
  extra: string,
): { sql: string; params: unknown[] } {
  const starts = windows.slice(1).map((w) => w.lower_bound as Bound);
  const more = extra ? `, ${extra}` : '';
  if (MAPPINGS[table].windowKey === 'id')
    return {
      sql: `SELECT width_bucket(id COLLATE "C", $1::text[]) AS bucket${more} FROM ${from}`,
      params: [starts.map((b) => b.id)],
    };
  const v1 = side === 'v1';
  const bounds = v1
    ? '$1::timestamp[]'
    : `(SELECT coalesce(array_agg(t AT TIME ZONE 'UTC' ORDER BY o), '{}') FROM unnest($1::timestamp[]) WITH ORDINALITY AS u(t, o))`;
  const rowBounds = `(SELECT array_agg(ROW(${v1 ? 't' : `t AT TIME ZONE 'UTC'`}, i) ORDER BY o)
                        FROM unnest($1::timestamp[], $2::bigint[]) WITH ORDINALITY AS u(t, i, o))`;
  return {
    sql: `SELECT CASE WHEN b > 0 AND ts = (${bounds})[b] THEN width_bucket(ROW(ts, k), ${rowBounds}) ELSE b END AS bucket, x.*
            FROM (SELECT width_bucket("timestamp", ${bounds}) AS b, "timestamp" AS ts, ${v1 ? 'id' : 'legacy_id'} AS k${more}
                    FROM ${from} OFFSET 0) x`,
    params: [starts.map((b) => b.ts), starts.map((b) => b.id)],
  };
}

/**
 * The count and checksum of each window of a slice on one side, in one pass: each row is put
 * in its window (`windowBuckets`), then counted and summed per window, hashed into a few
 * groups. The planner cannot know there are only a few: it would sort every row by its window
 * (spilling to disk), so sorting is off for the query.
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
  const buckets = windowBuckets(table, side, windows, from, `${digest} AS h`);
  const { rows } = await client.query<{ bucket: number; n: string; s: string }>(
    `SELECT bucket, count(*) AS n, coalesce(sum(h), 0)::text AS s FROM (${buckets.sql}) w GROUP BY 1`,
    buckets.params,
  );
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

export const onClient = <T>(pool: Pool, fn: (c: PoolClient) => Promise<T>): Promise<T> =>
  inSnapshots([pool], ([client]) => fn(client));
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
