import type { Pool, PoolClient } from 'pg';
import type { MigrationConfig } from '../config';
import { controlSchema, ident, withTransaction } from '../db';
import { qualified } from '../windows';
import { eachLimited } from '../each-limited';
import { recordedTelemetryStorage } from '../storage';

/**
 * V2 telemetry's secondary indexes, built once after the backfill instead of row by row while
 * it copies. Maintaining `(tenant_id, device_id, "timestamp" DESC)` (and, on a hypertable, any
 * other plain index) for every copied row costs about a third of a window's V2 time (README,
 * "Backfill performance"); one build over the copied rows at the end costs a fraction of that.
 *
 * Only indexes that no statement of the migration relies on while the backfill runs are
 * deferred: not the primary key and not a unique key (the backfill's and the dual writer's
 * `ON CONFLICT (legacy_id, "timestamp")` and every row lookup by `legacy_id` use them), nor an
 * index behind a constraint. What this costs while they are absent: V2 reads of telemetry by
 * tenant and device (nothing of the migration reads them; the backend reads V1 until the
 * cutover) and a device deletion's cascade to its telemetry scan the table instead of the index.
 *
 * Each dropped index is recorded (control schema `deferred_indexes`) in the transaction that
 * drops it, so a crash, a rerun or a second planner finds it and builds it; nothing is ever lost.
 */

export interface DeferredIndex {
  name: string;
  /** As the catalog defined it (`pg_get_indexdef`). */
  definition: string;
}

export interface BuiltIndex {
  name: string;
  seconds: number;
  /** Partitions (native partitioning) or chunks (TimescaleDB) it was built on, one at a time. */
  parts: number;
}

/** A drop waits this long at most for the dual writes' locks on telemetry, then gives up (indexes kept). */
const DROP_LOCK_TIMEOUT = '5s';
/** Index builds side by side: partitions of one index, or a hypertable's indexes. */
const BUILD_CONCURRENCY = 2;
/**
 * How one index build sorts: in runs of 4MB, merged, by its own backend (no parallel workers).
 * `(tenant_id, device_id, "timestamp" DESC)` leads with a constant `tenant_id`, so no abbreviated
 * key decides a comparison and each one reads both index tuples: one big in-memory sort misses
 * the CPU cache on nearly every comparison, a 4MB run mostly does not. Measured (CPU seconds,
 * 10M-row benchmark): a 3.3M-row monthly partition in 1GB 18.8, in 256MB 15.5, parallel in 256MB
 * 14.4, in 4MB 6.8–8.1; the hypertable's per-chunk build parallel in 256MB 33.2, in 4MB
 * 19.8–23.2; at 1M rows about the same either way (a 333k-row partition 1.2 against 0.8–0.9).
 * Parallel workers would also take cores from the windows still copying
 * (buildReadyPartitionIndexes).
 */
const BUILD_SORT_SETTINGS: [string, string][] = [
  ['maintenance_work_mem', '4MB'],
  ['max_parallel_maintenance_workers', '0'],
];

/** Sets BUILD_SORT_SETTINGS for the transaction (`local`) or the session. */
async function setBuildSort(client: PoolClient, local: boolean): Promise<void> {
  const last = 2 * BUILD_SORT_SETTINGS.length + 1;
  await client.query(
    `SELECT ${BUILD_SORT_SETTINGS.map((_, i) => `set_config($${2 * i + 1}, $${2 * i + 2}, $${last}::boolean)`).join(', ')}`,
    [...BUILD_SORT_SETTINGS.flat(), local],
  );
}

async function telemetryOid(client: Pool | PoolClient, config: MigrationConfig): Promise<number> {
  const { rows } = await client.query<{ oid: number }>(`SELECT $1::regclass::oid AS oid`, [
    `${ident(config.schemas.v2)}.telemetry`,
  ]);
  return rows[0].oid;
}

/**
 * Drops V2 telemetry's deferrable indexes for the backfill (see above) and records each; returns
 * what it dropped. Safe to call again: an index already recorded is gone, and one that exists is
 * recorded before it is dropped. Where the dual writes hold telemetry longer than a few seconds,
 * it changes nothing and returns [] (the backfill then maintains the indexes as it copies).
 */
export async function deferTelemetryIndexes(v2: Pool, config: MigrationConfig): Promise<DeferredIndex[]> {
  const ctl = controlSchema(config);
  try {
    return await withTransaction(
      v2,
      async (client) => {
        await client.query(`SELECT set_config('lock_timeout', $1, true)`, [DROP_LOCK_TIMEOUT]);
        const oid = await telemetryOid(client, config);
        const { rows } = await client.query<{ name: string; definition: string }>(
          `SELECT c.relname AS name, pg_catalog.pg_get_indexdef(i.indexrelid) AS definition
           FROM pg_catalog.pg_index i
           JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
          WHERE i.indrelid = $1 AND NOT i.indisunique AND NOT i.indisprimary
            AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conindid = i.indexrelid)
          ORDER BY c.relname`,
          [oid],
        );
        for (const index of rows) {
          await client.query(
            `INSERT INTO ${ctl}.deferred_indexes (index_name, definition) VALUES ($1, $2)
           ON CONFLICT (index_name) DO UPDATE SET definition = EXCLUDED.definition, dropped_at = now(),
                                                  built_at = NULL, build_seconds = NULL`,
            [index.name, index.definition],
          );
          // The name comes from the catalog, quoted as an identifier.
          await client.query(`DROP INDEX ${qualified(config.schemas.v2, index.name)}`);
        }
        return rows;
        // One try: a lock timeout means the writes are busy now; the backfill goes on with the indexes.
      },
      { attempts: 1 },
    );
  } catch (error) {
    // 55P03: the dual writes held telemetry past the lock timeout; keep the indexes.
    if ((error as { code?: string }).code === '55P03') return [];
    throw error;
  }
}

/** The indexes dropped for the backfill and not built yet. */
export async function pendingIndexes(v2: Pool, config: MigrationConfig): Promise<DeferredIndex[]> {
  const { rows } = await v2.query<{ name: string; definition: string }>(
    `SELECT index_name AS name, definition FROM ${controlSchema(config)}.deferred_indexes
      WHERE built_at IS NULL ORDER BY index_name`,
  );
  return rows;
}

/** `USING btree (…) [INCLUDE …] [WITH …] [WHERE …]`: the catalog's definition after the table. */
function methodAndColumns(index: DeferredIndex): string {
  const at = index.definition.indexOf(' USING ');
  if (at < 0) throw new Error(`deferred index ${index.name}: unexpected definition ${index.definition}`);
  return index.definition.slice(at + 1);
}

/**
 * Builds on native partitions: the parent's index first `ON ONLY` the parent (invalid, no rows
 * read), then each partition's in its own transaction, attached to it at once; the parent's index
 * is valid when the last partition's is attached. A dual write waits only for the build of the
 * partition it writes to. A partition that already has its index attached (built while the
 * backfill copied, a build cut short and run again, a partition created after the parent's
 * index) is skipped. With `ready`, only monthly partitions whose month no telemetry window still
 * to copy overlaps, at most `ready.limit` of them (see buildReadyPartitionIndexes).
 */
async function buildOnPartitions(
  v2: Pool,
  config: MigrationConfig,
  index: DeferredIndex,
  ready?: { limit: number },
): Promise<number> {
  const table = qualified(config.schemas.v2, 'telemetry');
  const using = methodAndColumns(index);
  const parent = qualified(config.schemas.v2, index.name);
  const parentName = `${ident(config.schemas.v2)}.${ident(index.name)}`;
  // A monthly partition (named by storage.ts's partitionName) whose month no window that is not
  // done overlaps: a window's rows run from its lower bound's instant to its upper bound's.
  const readyOnly = ready
    ? `AND c.relname ~ '^telemetry_p[0-9]{6}$'
       AND NOT EXISTS (
         SELECT 1 FROM ${controlSchema(config)}.windows w
          CROSS JOIN LATERAL (SELECT to_date(substring(c.relname FROM 12), 'YYYYMM')::timestamp AS m0) AS month
          WHERE w.table_name = 'telemetry' AND w.status <> 'done'
            AND (w.lower_bound IS NULL OR (w.lower_bound->>'ts')::timestamp < month.m0 + interval '1 month')
            AND (w.upper_bound IS NULL OR (w.upper_bound->>'ts')::timestamp >= month.m0))`
    : '';
  const { rows } = await v2.query<{ oid: number; name: string }>(
    `SELECT p.relid::oid AS oid, c.relname AS name
       FROM pg_catalog.pg_partition_tree($1::regclass) p
       JOIN pg_catalog.pg_class c ON c.oid = p.relid
      WHERE p.isleaf
        AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits h JOIN pg_catalog.pg_index x ON x.indexrelid = h.inhrelid
                         WHERE h.inhparent = to_regclass($2) AND x.indrelid = p.relid)
        ${readyOnly}
      ORDER BY c.relname LIMIT $3`,
    [`${ident(config.schemas.v2)}.telemetry`, parentName, ready?.limit ?? null],
  );
  if (rows.length === 0 && ready) return 0;
  // Only where it is missing: CREATE INDEX takes a SHARE lock on telemetry even when the index
  // exists, which would wait for every COPY in flight (and hold up the next ones) on each poll.
  const exists = await v2.query(`SELECT to_regclass($1) IS NOT NULL AS e`, [parentName]);
  if (!exists.rows[0].e)
    await v2.query(`CREATE INDEX IF NOT EXISTS ${ident(index.name)} ON ONLY ${table} ${using}`);
  await eachLimited(rows, BUILD_CONCURRENCY, async (partition) => {
    // A name of at most 63 bytes, unique per partition: the index's name and the partition's oid.
    const name = `${index.name.slice(0, 48)}_${partition.oid}`;
    await withTransaction(v2, async (client) => {
      await setBuildSort(client, true);
      await client.query(
        `CREATE INDEX IF NOT EXISTS ${ident(name)} ON ${qualified(config.schemas.v2, partition.name)} ${using}`,
      );
      await client.query(`ALTER INDEX ${parent} ATTACH PARTITION ${qualified(config.schemas.v2, name)}`);
    });
  });
  return rows.length;
}

/**
 * While the backfill still copies: on native partitions, builds the deferred indexes of the
 * monthly partitions whose windows are all done (at most `limit` partitions an index per call),
 * so that little is left to build when the last window is done. The windows copy in time order,
 * so the months fill one after another; a partition a window still copies into, the default
 * partition and the months the last window reaches (it runs to the end of time, as the dual
 * writes do) are left to buildDeferredIndexes. Returns the partitions built. Nothing on a
 * hypertable: TimescaleDB builds an index on every chunk at once.
 */
export async function buildReadyPartitionIndexes(
  v2: Pool,
  config: MigrationConfig,
  limit = 2,
): Promise<number> {
  const pending = await pendingIndexes(v2, config);
  if (pending.length === 0 || (await recordedTelemetryStorage(v2, config)) !== 'partitioned') return 0;
  let built = 0;
  for (const index of pending) built += await buildOnPartitions(v2, config, index, { limit });
  return built;
}

/**
 * Builds on a TimescaleDB hypertable one chunk at a time (`timescaledb.transaction_per_chunk`):
 * a dual write waits only for the build of the chunk it writes to. An index left invalid by a
 * build cut short is dropped and built again.
 */
async function buildOnHypertable(v2: Pool, config: MigrationConfig, index: DeferredIndex): Promise<number> {
  const table = qualified(config.schemas.v2, 'telemetry');
  const existing = await v2.query<{ valid: boolean }>(
    `SELECT i.indisvalid AS valid FROM pg_catalog.pg_index i WHERE i.indexrelid = to_regclass($1)`,
    [`${ident(config.schemas.v2)}.${ident(index.name)}`],
  );
  if (existing.rows[0]?.valid) return 0;
  if (existing.rows.length > 0) await v2.query(`DROP INDEX ${qualified(config.schemas.v2, index.name)}`);
  const client = await v2.connect();
  let broken = false;
  try {
    await setBuildSort(client, false);
    await client.query(
      `CREATE INDEX ${ident(index.name)} ON ${table} ${methodAndColumns(index)} WITH (timescaledb.transaction_per_chunk)`,
    );
    // The names are the constants above, not input.
    await client.query(BUILD_SORT_SETTINGS.map(([name]) => `RESET ${name}`).join('; '));
  } catch (error) {
    broken = true;
    throw error;
  } finally {
    client.release(broken);
  }
  const chunks = await v2.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM timescaledb_information.chunks WHERE hypertable_schema = $1 AND hypertable_name = 'telemetry'`,
    [config.schemas.v2],
  );
  return chunks.rows[0].n;
}

/**
 * Builds every index the backfill deferred and records each as built; returns what it built.
 * Safe to run again after a crash at any point (each step checks what is already there).
 */
export async function buildDeferredIndexes(v2: Pool, config: MigrationConfig): Promise<BuiltIndex[]> {
  const ctl = controlSchema(config);
  const pending = await pendingIndexes(v2, config);
  if (pending.length === 0) return [];
  // The storage Phase 1 set up (native partitions or a TimescaleDB hypertable).
  const partitioned = (await recordedTelemetryStorage(v2, config)) === 'partitioned';
  const built: BuiltIndex[] = [];
  // On a hypertable, its indexes side by side (each builds chunk after chunk).
  await eachLimited(pending, partitioned ? 1 : BUILD_CONCURRENCY, async (index) => {
    const started = performance.now();
    const parts = partitioned
      ? await buildOnPartitions(v2, config, index)
      : await buildOnHypertable(v2, config, index);
    const seconds = Math.round(performance.now() - started) / 1000;
    await v2.query(
      `UPDATE ${ctl}.deferred_indexes SET built_at = now(), build_seconds = $2 WHERE index_name = $1`,
      [index.name, seconds],
    );
    built.push({ name: index.name, seconds, parts });
  });
  return built.sort((a, b) => a.name.localeCompare(b.name));
}
