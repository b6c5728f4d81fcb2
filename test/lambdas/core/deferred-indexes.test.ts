import type { Pool, PoolClient } from 'pg';
import { runBackfillLocally } from '../../../lambdas/adapters/local/local-backfill';
import {
  buildDeferredIndexes,
  buildReadyPartitionIndexes,
  copyWindow,
  pendingIndexes,
  planBackfill,
  type BackfillDeps,
} from '../../../lambdas/core/backfill';
import type { MigrationConfig } from '../../../lambdas/core/config';
import { freshDatabases } from '../../support/pg';
import { seedV1, testConfig } from '../../support/fixtures';
import { prepared } from '../../support/migration';
import { expectAllInSync } from '../../support/in-sync';
import { describeEachStorage, type StorageCase } from '../../support/servers';
import { deferTelemetryIndexes } from '../../../lambdas/core/backfill/deferred-indexes';

/**
 * V2 telemetry's secondary index, dropped while the backfill copies and built when its last
 * window is done (lambdas/core/backfill/deferred-indexes.ts), on both storages.
 */

const small = {
  batch: { telemetryWindowRows: 2000, entityWindowRows: 50, concurrency: 2, maxReceiveCount: 3 },
};

const INDEX = 'telemetry_tenant_device_ts';

async function setup(prefix: string, storage: StorageCase) {
  const dbs = await freshDatabases(prefix, storage.server);
  await seedV1(dbs.v1, { devices: 20, telemetry: 8000, seed: 11 });
  const config = testConfig(dbs, small);
  await prepared(dbs, config);
  const deps: BackfillDeps = { v1: dbs.v1, v2: dbs.v2, config };
  return { dbs, config, deps };
}

/** Every index on V2 telemetry itself: name, definition, valid, unique. */
async function telemetryIndexes(v2: Pool, config: MigrationConfig) {
  const { rows } = await v2.query<{ name: string; def: string; valid: boolean; is_unique: boolean }>(
    `SELECT c.relname AS name, pg_get_indexdef(i.indexrelid) AS def, i.indisvalid AS valid, i.indisunique AS is_unique
       FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
      WHERE i.indrelid = $1::regclass ORDER BY c.relname`,
    [`"${config.schemas.v2}".telemetry`],
  );
  return rows;
}

/**
 * The partitions (or chunks) holding telemetry, and how many of them have an index whose
 * columns are the deferred index's, valid.
 */
async function partsWithIndex(
  v2: Pool,
  config: MigrationConfig,
): Promise<{ parts: number; indexed: number }> {
  const { rows } = await v2.query<{ parts: number; indexed: number }>(
    `WITH parts AS (
       SELECT inhrelid AS rel FROM pg_inherits WHERE inhparent = $1::regclass
       UNION ALL
       SELECT format('%I.%I', chunk_schema, chunk_name)::regclass
         FROM timescaledb_information.chunks WHERE hypertable_name = 'telemetry' AND hypertable_schema = $2
     )
     SELECT count(*)::int AS parts,
            count(*) FILTER (WHERE EXISTS (
              SELECT 1 FROM pg_index i
               WHERE i.indrelid = parts.rel AND i.indisvalid AND NOT i.indisunique
                 AND pg_get_indexdef(i.indexrelid) LIKE '%(tenant_id, device_id, "timestamp" DESC)%'))::int AS indexed
       FROM parts`,
    [`"${config.schemas.v2}".telemetry`, config.schemas.v2],
  );
  return rows[0];
}

/**
 * Has every client `pool` hands out read its session's sort settings right before it runs an
 * index build (a CREATE INDEX that is not `ON ONLY` a partitioned table), into `seen`.
 */
function spyOnBuilds(pool: Pool, seen: { mem: string; workers: string }[]) {
  const wrapped = new WeakSet<PoolClient>();
  const wrap = (client: PoolClient) => {
    if (wrapped.has(client)) return client;
    wrapped.add(client);
    const query = client.query.bind(client) as (...args: unknown[]) => unknown;
    (client as unknown as { query: unknown }).query = (...args: unknown[]) => {
      const text = args[0];
      if (typeof text !== 'string' || !/^\s*CREATE INDEX/.test(text) || /\bON ONLY\b/.test(text))
        return query(...args);
      return (async () => {
        const r = (await query(
          `SELECT current_setting('maintenance_work_mem') AS mem, current_setting('max_parallel_maintenance_workers') AS workers`,
        )) as { rows: { mem: string; workers: string }[] };
        seen.push(r.rows[0]);
        return query(...args);
      })();
    };
    return client;
  };
  const connect = pool.connect.bind(pool) as (...args: unknown[]) => unknown;
  const own = pool as unknown as { connect: unknown };
  own.connect = (...args: unknown[]) => {
    const callback = args[0] as ((e: Error | undefined, c?: PoolClient, done?: unknown) => void) | undefined;
    if (typeof callback === 'function')
      return connect((e: Error | undefined, c: PoolClient, done: unknown) => callback(e, c && wrap(c), done));
    return (connect() as Promise<PoolClient>).then(wrap);
  };
  return { pool, restore: () => delete (own as { connect?: unknown }).connect };
}

describeEachStorage('deferred telemetry indexes', (storage) => {
  const noChunks = storage.storage === 'partitioned';
  // Native partitions: the chunks view does not exist on embedded PostgreSQL.
  const parts = async (v2: Pool, config: MigrationConfig) =>
    noChunks
      ? (
          await v2.query<{ parts: number; indexed: number }>(
            `SELECT count(*)::int AS parts,
                    count(*) FILTER (WHERE EXISTS (
                      SELECT 1 FROM pg_index i WHERE i.indrelid = h.inhrelid AND i.indisvalid AND NOT i.indisunique
                         AND pg_get_indexdef(i.indexrelid) LIKE '%(tenant_id, device_id, "timestamp" DESC)%'))::int AS indexed
               FROM pg_inherits h WHERE h.inhparent = $1::regclass`,
            [`"${config.schemas.v2}".telemetry`],
          )
        ).rows[0]
      : partsWithIndex(v2, config);

  let ctx: Awaited<ReturnType<typeof setup>> | undefined;
  afterEach(async () => {
    await ctx?.dbs.drop();
    ctx = undefined;
  });

  it('drops the index when telemetry is planned and builds it, as it was defined, when the backfill ends', async () => {
    ctx = await setup('defer_idx', storage);
    const { dbs, config, deps } = ctx;
    const before = await telemetryIndexes(dbs.v2, config);
    expect(before.map((i) => i.name)).toContain(INDEX);

    const plan = await planBackfill(deps);
    expect(plan.indexesDeferred).toEqual(before.filter((i) => !i.is_unique).map((i) => i.name));
    const during = await telemetryIndexes(dbs.v2, config);
    expect(during.map((i) => i.name)).not.toContain(INDEX);
    // The keys every statement of the backfill and the dual writer rely on stay.
    expect(during).toEqual(before.filter((i) => i.is_unique));
    expect((await pendingIndexes(dbs.v2, config)).map((i) => i.name)).toContain(INDEX);
    // Planning again (a rerun, a second planner) drops and records nothing more.
    expect((await planBackfill(deps)).indexesDeferred).toEqual([]);

    const progress = await runBackfillLocally(deps);
    expect(progress.complete).toBe(true);
    await expectAllInSync(dbs, config);
    expect(await telemetryIndexes(dbs.v2, config)).toEqual(before);
    const after = await parts(dbs.v2, config);
    expect(after.parts).toBeGreaterThan(1);
    expect(after.indexed).toBe(after.parts);
    expect(await pendingIndexes(dbs.v2, config)).toEqual([]);
    const recorded = await dbs.v2.query(
      `SELECT built_at IS NOT NULL AS built, build_seconds >= 0 AS timed FROM migration_control.deferred_indexes WHERE index_name = $1`,
      [INDEX],
    );
    expect(recorded.rows).toEqual([{ built: true, timed: true }]);
  });

  it('a device deleted while the index is absent still takes its telemetry with it', async () => {
    ctx = await setup('defer_cascade', storage);
    const { dbs, config, deps } = ctx;
    await planBackfill(deps);
    await runBackfillLocally(deps);
    // Dropped again, as during a load, to delete under the same conditions.
    await dbs.v2.query(`DROP INDEX "${config.schemas.v2}".${INDEX}`);
    const victim = await dbs.v2.query<{ device_id: string; n: number }>(
      `SELECT device_id, count(*)::int AS n FROM telemetry GROUP BY device_id ORDER BY device_id LIMIT 1`,
    );
    expect(victim.rows[0].n).toBeGreaterThan(0);
    await dbs.v2.query(`DELETE FROM devices WHERE id = $1`, [victim.rows[0].device_id]);
    const left = await dbs.v2.query(`SELECT count(*)::int AS n FROM telemetry WHERE device_id = $1`, [
      victim.rows[0].device_id,
    ]);
    expect(left.rows[0].n).toBe(0);
  });

  it('a build cut short is finished by the next one', async () => {
    ctx = await setup('defer_resume', storage);
    const { dbs, config, deps } = ctx;
    const before = await telemetryIndexes(dbs.v2, config);
    await planBackfill(deps);
    await runBackfillLocally(deps);
    // Cut short: the index is dropped again and pending, then left half built.
    await dbs.v2.query(
      `UPDATE migration_control.deferred_indexes SET built_at = NULL WHERE index_name = $1`,
      [INDEX],
    );
    await dbs.v2.query(`DROP INDEX "${config.schemas.v2}".${INDEX}`);
    if (noChunks) {
      // The parent's index and one partition's, attached; the other partitions have none.
      const one = await dbs.v2.query<{ rel: string }>(
        `SELECT inhrelid::regclass::text AS rel FROM pg_inherits WHERE inhparent = $1::regclass ORDER BY 1 LIMIT 1`,
        [`"${config.schemas.v2}".telemetry`],
      );
      await dbs.v2.query(`CREATE INDEX ${INDEX} ON ONLY telemetry (tenant_id, device_id, "timestamp" DESC)`);
      await dbs.v2.query(
        `CREATE INDEX half_built ON ${one.rows[0].rel} (tenant_id, device_id, "timestamp" DESC)`,
      );
      await dbs.v2.query(`ALTER INDEX ${INDEX} ATTACH PARTITION half_built`);
      expect((await parts(dbs.v2, config)).indexed).toBe(1);
    } else {
      // A per-chunk build stopped part-way leaves the hypertable's index invalid.
      await dbs.v2.query(`CREATE INDEX ${INDEX} ON telemetry (tenant_id, device_id, "timestamp" DESC)`);
      await dbs.v2.query(`UPDATE pg_index SET indisvalid = false WHERE indexrelid = $1::regclass`, [
        `"${config.schemas.v2}".${INDEX}`,
      ]);
    }
    expect((await telemetryIndexes(dbs.v2, config)).find((i) => i.name === INDEX)?.valid).toBe(false);

    const built = await buildDeferredIndexes(dbs.v2, config);
    expect(built.map((b) => b.name)).toEqual([INDEX]);
    expect(await telemetryIndexes(dbs.v2, config)).toEqual(before);
    const after = await parts(dbs.v2, config);
    expect(after.indexed).toBe(after.parts);
    // Nothing left to build: a second call does nothing.
    expect(await buildDeferredIndexes(dbs.v2, config)).toEqual([]);
  });

  it('sorts each build in 4MB runs in its own backend, and leaves the pooled sessions as they were', async () => {
    ctx = await setup('defer_sort', storage);
    const { dbs, deps } = ctx;
    // Before each index build, the session it runs on is asked for its settings.
    const seen: { mem: string; workers: string }[] = [];
    const spied = spyOnBuilds(dbs.v2, seen);
    try {
      await planBackfill(deps);
      expect((await runBackfillLocally({ ...deps, v2: spied.pool })).complete).toBe(true);
    } finally {
      spied.restore();
    }
    // Every partition's build (native partitions), or the hypertable's per-chunk build of each index.
    expect(seen.length).toBeGreaterThanOrEqual(noChunks ? (await parts(dbs.v2, ctx.config)).parts : 2);
    expect(new Set(seen.map((s) => `${s.mem} ${s.workers}`))).toEqual(new Set(['4MB 0']));
    // No pooled session keeps them.
    const { rows: defaults } = await dbs.v2.query<{ name: string; reset_val: string }>(
      `SELECT name, reset_val FROM pg_settings WHERE name IN ('maintenance_work_mem', 'max_parallel_maintenance_workers')`,
    );
    const clients = await Promise.all([1, 2, 3, 4].map(() => dbs.v2.connect()));
    try {
      for (const client of clients) {
        const now = await client.query<{ name: string; setting: string }>(
          `SELECT name, setting FROM pg_settings WHERE name IN ('maintenance_work_mem', 'max_parallel_maintenance_workers')`,
        );
        expect(now.rows.map((r) => [r.name, r.setting]).sort()).toEqual(
          defaults.map((d) => [d.name, d.reset_val]).sort(),
        );
      }
    } finally {
      for (const client of clients) client.release();
    }
  });

  it('keeps the index where writes hold telemetry past the lock timeout', async () => {
    ctx = await setup('defer_locked', storage);
    const { dbs, config } = ctx;
    const holder = await dbs.v2.connect();
    try {
      await holder.query('BEGIN');
      // As an open dual-write transaction holds it.
      await holder.query('LOCK TABLE telemetry IN ROW EXCLUSIVE MODE');
      const started = Date.now();
      expect(await deferTelemetryIndexes(dbs.v2, config)).toEqual([]);
      expect(Date.now() - started).toBeGreaterThanOrEqual(4000);
      expect(Date.now() - started).toBeLessThan(15_000);
    } finally {
      await holder.query('ROLLBACK');
      holder.release();
    }
    expect((await telemetryIndexes(dbs.v2, config)).map((i) => i.name)).toContain(INDEX);
    expect(await pendingIndexes(dbs.v2, config)).toEqual([]);
  });
});

/**
 * On native partitions, a monthly partition whose windows are all done gets its index while the
 * rest still copies (buildReadyPartitionIndexes); a partition a window still copies into does not.
 */
describe('deferred telemetry indexes built while the backfill copies, on native partitions', () => {
  let dbs: Awaited<ReturnType<typeof freshDatabases>> | undefined;
  afterEach(async () => {
    await dbs?.drop();
    dbs = undefined;
  });

  /** The monthly partitions that have the deferred index attached. */
  const indexedParts = async (v2: Pool, config: MigrationConfig) =>
    (
      await v2.query<{ name: string }>(
        `SELECT c.relname AS name FROM pg_inherits h
           JOIN pg_class c ON c.oid = h.inhrelid
          WHERE h.inhparent = $1::regclass
            AND EXISTS (SELECT 1 FROM pg_inherits hi JOIN pg_index x ON x.indexrelid = hi.inhrelid
                         WHERE hi.inhparent = to_regclass($2) AND x.indrelid = h.inhrelid)
          ORDER BY 1`,
        [`"${config.schemas.v2}".telemetry`, `"${config.schemas.v2}".${INDEX}`],
      )
    ).rows.map((r) => r.name);

  it('builds the months whose windows are done, leaves those still copying, and the backfill ends with all of them', async () => {
    dbs = await freshDatabases('defer_ready');
    await seedV1(dbs.v1, { devices: 2, telemetry: 0, seed: 5 });
    // 150 rows a day from 2025-09-10 on: five months, in windows of 400 rows.
    await dbs.v1.query(
      `INSERT INTO device_data ("deviceId", "timestamp", data, protocol, source)
       SELECT (SELECT min(id) FROM devices), '2025-09-10'::timestamp + i * interval '576 seconds', '{"v":1}'::jsonb, 'MQTT', 'sensor'
         FROM generate_series(0, 150 * 130 - 1) AS i`,
    );
    const config = testConfig(dbs, {
      telemetryStorage: 'partitioned',
      batch: { telemetryWindowRows: 400, entityWindowRows: 50, concurrency: 2, maxReceiveCount: 3 },
    });
    await prepared(dbs, config);
    const deps: BackfillDeps = { v1: dbs.v1, v2: dbs.v2, config };
    await planBackfill(deps);
    for (const table of ['users', 'devices', 'device_templates', 'alerts']) {
      const ids = await dbs.v2.query<{ id: string }>(
        `SELECT id FROM migration_control.windows WHERE table_name = $1 ORDER BY seq`,
        [table],
      );
      for (const { id } of ids.rows) await copyWindow(deps, Number(id));
    }
    // Nothing is ready before a telemetry window is done.
    expect(await buildReadyPartitionIndexes(dbs.v2, config, 100)).toBe(0);
    expect(await indexedParts(dbs.v2, config)).toEqual([]);

    // The windows of the first two months and a half, in order.
    const windows = await dbs.v2.query<{ id: string; lower: { ts: string } | null }>(
      `SELECT id, lower_bound AS lower FROM migration_control.windows WHERE table_name = 'telemetry' ORDER BY seq`,
    );
    const next = windows.rows.findIndex((w) => w.lower !== null && w.lower.ts >= '2025-11-15');
    for (const w of windows.rows.slice(0, next)) await copyWindow(deps, Number(w.id));
    const built = await buildReadyPartitionIndexes(dbs.v2, config, 100);
    // September and October are done; November is still being copied, and later months too.
    expect(await indexedParts(dbs.v2, config)).toEqual(['telemetry_p202509', 'telemetry_p202510']);
    expect(built).toBe(2);
    // The parent's index is not valid until every partition has its own.
    const valid = async () =>
      (
        await dbs!.v2.query<{ valid: boolean }>(
          `SELECT indisvalid AS valid FROM pg_index WHERE indexrelid = $1::regclass`,
          [`"${config.schemas.v2}".${INDEX}`],
        )
      ).rows[0].valid;
    expect(await valid()).toBe(false);

    const progress = await runBackfillLocally(deps);
    expect(progress.complete).toBe(true);
    await expectAllInSync(dbs, config);
    expect(await valid()).toBe(true);
    const partitions = await dbs.v2.query(`SELECT 1 FROM pg_inherits WHERE inhparent = $1::regclass`, [
      `"${config.schemas.v2}".telemetry`,
    ]);
    expect(await indexedParts(dbs.v2, config)).toHaveLength(partitions.rows.length);
    expect(await pendingIndexes(dbs.v2, config)).toEqual([]);
  });
});
