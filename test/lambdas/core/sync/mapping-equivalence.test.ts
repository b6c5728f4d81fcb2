import { Pool } from 'pg';
import { runBackfillLocally } from '../../../../lambdas/adapters/local/local-backfill';
import { applyV1Schema } from '../../../../lambdas/adapters/local/v1-generator';
import type { MigrationConfig } from '../../../../lambdas/core/config';
import { MAPPINGS, TABLE_ORDER, type MappedTable } from '../../../../lambdas/core/mapping';
import { runPrepare } from '../../../../lambdas/core/prepare';
import { repairRow } from '../../../../lambdas/core/sync/repair';
import { V1_QUERY_TYPES } from '../../../../lambdas/core/sync/v1-read';
import { ShadowReader, type ShadowMismatch } from '../../../../client/shadow-reader';
import type { BackupPort } from '../../../../lambdas/ports/backup';
import { testConfig } from '../../../support/fixtures';
import { prepared } from '../../../support/migration';
import { extraDatabase, freshDatabases, type ExtraDatabase, type TestDatabases } from '../../../support/pg';
import { describeEachStorage } from '../../../support/servers';
import { differences, digests } from '../../../support/row-digests';
import { insertV1Batch, propertyRun, v1Batch } from '../../../support/v1-arbitraries';

/**
 * The mapping has one implementation in SQL, used two ways: the backfill copies whole windows
 * (COPY of the projection), and single rows (dual writer, repair worker) are written by the
 * row sync. This property test writes the same generated V1 rows both ways into two V2
 * databases and requires identical V2 rows and identical digests, equal to V1's. The rows are
 * drawn across every column's domain; the seed (MAPPING_SEED to replay one) is in the title.
 */
const { seed: SEED, rows: ROWS } = propertyRun('MAPPING', 1000);

/** Phase 1 for the second V2: its backup is the first one's business, so none is taken here. */
const noBackup: BackupPort = {
  start: async (label) => ({ id: label, kind: 'export', location: label }),
  status: async () => 'available',
  verify: async () => ({ evidence: { skipped: 'the row-sync side of the mapping test' } }),
};

/** Every V2 column of every row, as PostgreSQL prints it (telemetry's surrogate id aside). */
async function v2Content(pool: Pool, table: MappedTable): Promise<Map<string, string>> {
  const m = MAPPINGS[table];
  const columns = (
    await pool.query<{ c: string }>(
      `SELECT column_name AS c FROM information_schema.columns
        WHERE table_schema = 'public' AND table_name = $1 AND column_name NOT IN ('id', 'row_digest')
        ORDER BY ordinal_position`,
      [m.v2Table],
    )
  ).rows.map((r) => `"${r.c}"`);
  const key = table === 'telemetry' ? 'legacy_id' : 'id';
  await pool.query(`SET TimeZone = 'UTC'`);
  const { rows } = await pool.query<{ k: string; v: string }>(
    `SELECT ${key}::text AS k, ROW(${columns.join(', ')})::text AS v FROM ${m.v2Table}`,
  );
  return new Map(rows.map((r) => [r.k, r.v]));
}

describeEachStorage(
  `one mapping: backfill and row sync agree on generated V1 rows (MAPPING_SEED=${SEED}, ${ROWS} rows a table)`,
  (storage) => {
    let dbs: TestDatabases;
    let rowSyncDb: ExtraDatabase;
    let rowSyncV2: Pool;
    let config: MigrationConfig;
    let rowSyncConfig: MigrationConfig;

    beforeAll(async () => {
      dbs = await freshDatabases('map', storage.server);
      rowSyncDb = await extraDatabase(`${dbs.v2Name}_rows`, storage.server);
      rowSyncV2 = rowSyncDb.pool;
      config = testConfig(dbs, { telemetryStorage: storage.storage });
      rowSyncConfig = testConfig(
        { v1Url: dbs.v1Url, v2Url: rowSyncDb.url },
        { telemetryStorage: storage.storage },
      );
      await applyV1Schema(dbs.v1);
      // A hypertable refuses instants beyond its range (the backfill then fails that window with
      // UnmappableRowError naming the row): its batch draws telemetry instants inside it.
      await insertV1Batch(
        dbs.v1,
        v1Batch(SEED, ROWS, storage.storage === 'timescaledb' ? { telemetry: 'hypertable' } : {}),
      );
      await prepared(dbs, config);
      await runPrepare({ v1: dbs.v1, v2: rowSyncV2, config: rowSyncConfig, actor: 'test', backup: noBackup });
      // One way: the backfill's windows. The other: every row through the single-row sync.
      await runBackfillLocally({ v1: dbs.v1, v2: dbs.v2, config });
      const deps = { v1: dbs.v1, v2: rowSyncV2, tenantId: config.tenant.id };
      for (const table of TABLE_ORDER) {
        const { rows } = await dbs.v1.query<{ id: string }>(
          `SELECT id::text AS id FROM ${MAPPINGS[table].v1Table} ORDER BY id`,
        );
        for (let i = 0; i < rows.length; i += 8)
          await Promise.all(rows.slice(i, i + 8).map((r) => repairRow(deps, table, r.id)));
      }
    }, 600_000);

    afterAll(async () => {
      await rowSyncDb?.drop();
      await dbs?.drop();
    });

    it.each(TABLE_ORDER)('%s: identical V2 rows both ways', async (table) => {
      const [backfilled, synced] = await Promise.all([v2Content(dbs.v2, table), v2Content(rowSyncV2, table)]);
      expect(backfilled.size).toBeGreaterThan(0);
      expect(differences(backfilled, synced)).toEqual([]);
      expect(synced.size).toBe(backfilled.size);
    });

    it.each(TABLE_ORDER)("%s: every row's V2 digest equals its V1 digest, both ways", async (table) => {
      const [v1, backfilled, synced] = await Promise.all([
        digests(dbs.v1, config, table, 'v1'),
        digests(dbs.v2, config, table, 'v2'),
        digests(rowSyncV2, rowSyncConfig, table, 'v2'),
      ]);
      expect(v1.size).toBeGreaterThan(0);
      expect(differences(v1, backfilled)).toEqual([]);
      expect(differences(v1, synced)).toEqual([]);
    });

    it.each(TABLE_ORDER)(
      '%s: shadow reads of every row find V2 as the backend would read V1',
      async (table) => {
        const mismatches: ShadowMismatch[] = [];
        const errors: string[] = [];
        const reader = new ShadowReader({
          v2: rowSyncV2,
          tenantId: config.tenant.id,
          sampleRate: 1,
          maxInFlight: 10_000,
          onMismatch: (m) => mismatches.push(m),
          onError: (e) => errors.push(e.message),
        });
        const { rows } = await dbs.v1.query({
          text: `SELECT * FROM ${MAPPINGS[table].v1Table}`,
          types: V1_QUERY_TYPES,
        });
        expect(rows.length).toBeGreaterThan(0);
        for (const row of rows) reader.observe(table, row);
        await reader.idle();
        expect(errors).toEqual([]);
        expect(mismatches.slice(0, 5)).toEqual([]);
      },
    );

    it('device templates are the same both ways', async () => {
      const sql = `SELECT string_agg(id || ':' || device_type, '|' ORDER BY id) AS t FROM device_templates`;
      const [a, b] = await Promise.all([dbs.v2.query(sql), rowSyncV2.query(sql)]);
      expect(b.rows[0].t).toBe(a.rows[0].t);
    });
  },
);
