import { Pool } from 'pg';
import { runBackfillLocally } from '../../../../lambdas/adapters/local/local-backfill';
import { applyV1Schema } from '../../../../lambdas/adapters/local/v1-generator';
import type { MigrationConfig } from '../../../../lambdas/core/config';
import { MAPPINGS, TABLE_ORDER, V1_COLUMNS, type MappedTable } from '../../../../lambdas/core/mapping';
import { INVERSE_MAPPINGS } from '../../../../lambdas/core/mapping-inverse';
import { syncRowToV1 } from '../../../../lambdas/core/sync/reverse';
import { compareKeys } from '../../../../lambdas/core/verify';
import { testConfig } from '../../../support/fixtures';
import { prepared } from '../../../support/migration';
import { extraDatabase, freshDatabases, type ExtraDatabase, type TestDatabases } from '../../../support/pg';
import { differences, digests } from '../../../support/row-digests';
import { insertV1Batch, propertyRun, v1Batch } from '../../../support/v1-arbitraries';

/**
 * The inverse mapping (V2 → V1, for the time V2 is the write primary) against the forward one,
 * on V1 rows generated across every column's domain: V1 is backfilled into V2, then every V2
 * row is synced back, once into an empty V1 and once onto the V1 it came from. Both results are
 * checked by the verifier's own SQL (compareKeys and rowDigest), not by the mapping under test,
 * and by plain equality of each column's stored value. The seed (INVERSE_SEED to replay one) is
 * in the title. On native partitions only: the arbitraries span PostgreSQL's whole timestamp
 * range, which a TimescaleDB hypertable refuses (UnmappableRowError at backfill); the inverse
 * sync on a hypertable is exercised by test/client/dual-writer-v2-primary.test.ts.
 */
const { seed: SEED, rows: ROWS } = propertyRun('INVERSE', 500);

/** V1 columns whose forward mapping sends two V1 values to one (NULL and a value): see mapping-inverse.ts. */
const LOSSY: Partial<Record<MappedTable, Record<string, string>>> = {
  devices: { config: `'{}'::jsonb` },
  telemetry: { source: `'migrated'` },
};

/** Every V1 row as PostgreSQL prints each column (and its row version), keyed by id. */
async function v1Rows(pool: Pool, table: MappedTable, columns = V1_COLUMNS[table].map((c) => c.name)) {
  await pool.query(`SET TimeZone = 'UTC'`);
  const { rows } = await pool.query<{ k: string; v: string; x: string }>(
    `SELECT id::text AS k, ROW(${columns.map((c) => `"${c}"`).join(', ')})::text AS v, xmin::text AS x
       FROM public.${MAPPINGS[table].v1Table}`,
  );
  return new Map(rows.map((r) => [r.k, { value: r.v, version: r.x }]));
}

describe(`the inverse mapping: V1 → V2 → V1 gives V1 back (INVERSE_SEED=${SEED}, ${ROWS} rows a table)`, () => {
  let dbs: TestDatabases;
  let config: MigrationConfig;
  let rebuiltDb: ExtraDatabase;
  let rebuilt: Pool;
  const before = new Map<MappedTable, Map<string, { value: string; version: string }>>();
  /** Per lossy column, V1's values as the mapping sends them (NULL as its image), and its NULLs. */
  const lossyBefore = new Map<string, { values: Map<string, string>; nulls: number }>();

  beforeAll(async () => {
    dbs = await freshDatabases('inv');
    rebuiltDb = await extraDatabase(`${dbs.v1Name}_rebuilt`);
    rebuilt = rebuiltDb.pool;
    config = testConfig(dbs, { telemetryStorage: 'partitioned' });
    await applyV1Schema(dbs.v1);
    await applyV1Schema(rebuilt);
    await insertV1Batch(dbs.v1, v1Batch(SEED, ROWS));
    await prepared(dbs, config);
    await runBackfillLocally({ v1: dbs.v1, v2: dbs.v2, config });
    for (const table of TABLE_ORDER) before.set(table, await v1Rows(dbs.v1, table));
    for (const [table, columns] of Object.entries(LOSSY) as [MappedTable, Record<string, string>][])
      for (const [column, image] of Object.entries(columns)) {
        const { rows } = await dbs.v1.query<{ k: string; v: string; n: boolean }>(
          `SELECT id::text AS k, coalesce("${column}", ${image})::text AS v, "${column}" IS NULL AS n
             FROM public.${MAPPINGS[table].v1Table}`,
        );
        lossyBefore.set(`${table}.${column}`, {
          values: new Map(rows.map((r) => [r.k, r.v])),
          nulls: rows.filter((r) => r.n).length,
        });
      }
    // Every V2 row back into V1, parents first: once into an empty V1, once onto V1 itself.
    const intoRebuilt = { v1: rebuilt, v2: dbs.v2, tenantId: config.tenant.id };
    const ontoV1 = { v1: dbs.v1, v2: dbs.v2, tenantId: config.tenant.id };
    for (const table of TABLE_ORDER) {
      const key = INVERSE_MAPPINGS[table].key;
      const { rows } = await dbs.v2.query<{ id: string }>(
        `SELECT ${key}::text AS id FROM ${MAPPINGS[table].v2Table} ORDER BY ${key}`,
      );
      for (let i = 0; i < rows.length; i += 8) {
        const chunk = rows.slice(i, i + 8);
        await Promise.all(chunk.map((r) => syncRowToV1(intoRebuilt, table, r.id)));
        await Promise.all(chunk.map((r) => syncRowToV1(ontoV1, table, r.id)));
      }
    }
  }, 600_000);

  afterAll(async () => {
    await rebuiltDb?.drop();
    await dbs?.drop();
  });

  it.each(TABLE_ORDER)(
    '%s: V1 rebuilt from V2 verifies clean against V2, row by row (compareKeys)',
    async (table) => {
      const ids = [...before.get(table)!.keys()];
      expect(ids.length).toBeGreaterThan(0);
      expect(await compareKeys({ v1: rebuilt, v2: dbs.v2, config }, table, ids)).toEqual([]);
    },
  );

  it.each(TABLE_ORDER)(
    '%s: every rebuilt row has the digest of its V1 row and of its V2 row',
    async (table) => {
      const [original, again, v2] = await Promise.all([
        digests(dbs.v1, config, table, 'v1'),
        digests(rebuilt, config, table, 'v1'),
        digests(dbs.v2, config, table, 'v2'),
      ]);
      expect(original.size).toBeGreaterThan(0);
      expect(differences(original, again)).toEqual([]);
      expect(differences(v2, again)).toEqual([]);
    },
  );

  it.each(TABLE_ORDER)('%s: the rebuilt V1 holds every V1 value exactly, column by column', async (table) => {
    const lossy = LOSSY[table] ?? {};
    const exact = V1_COLUMNS[table].map((c) => c.name).filter((c) => !(c in lossy));
    const [a, b] = await Promise.all([v1Rows(dbs.v1, table, exact), v1Rows(rebuilt, table, exact)]);
    expect(differences(a, b, (x, y) => x.value === y?.value)).toEqual([]);
    // A column the mapping sends NULL and a value alike comes back as that value (V2 shows no NULL).
    for (const column of Object.keys(lossy)) {
      const { values, nulls } = lossyBefore.get(`${table}.${column}`)!;
      expect(nulls).toBeGreaterThan(0);
      const { rows } = await rebuilt.query<{ k: string; v: string }>(
        `SELECT id::text AS k, "${column}"::text AS v FROM public.${MAPPINGS[table].v1Table}`,
      );
      expect(differences(values, new Map(rows.map((r) => [r.k, r.v])))).toEqual([]);
    }
  });

  it.each(TABLE_ORDER)(
    '%s: synced back onto V1, every V1 row is exactly as it was, not even rewritten',
    async (table) => {
      const after = await v1Rows(dbs.v1, table);
      expect(after.size).toBe(before.get(table)!.size);
      expect(
        differences(before.get(table)!, after, (x, y) => x.value === y?.value && x.version === y?.version),
      ).toEqual([]);
    },
  );
});
