import type { MigrationConfig } from '../../lambdas/core/config';
import { MAPPINGS, TABLE_ORDER as TABLES, type MappedTable } from '../../lambdas/core/mapping';
import { compareKeys } from '../../lambdas/core/verify';
import type { TestDatabases } from './pg';

/** The V2 rows of one V1 id (telemetry: by legacy_id), with the template's device type for devices. */
export async function v2RowsOf(dbs: TestDatabases, table: MappedTable, id: string) {
  const m = MAPPINGS[table];
  const sql =
    table === 'devices'
      ? `SELECT d.*, d.xmin::text AS row_version, t.device_type AS template_type FROM devices d JOIN device_templates t ON t.id = d.template_id WHERE d.id = $1`
      : `SELECT *, xmin::text AS row_version FROM ${m.v2Table} WHERE ${m.v2Key} = $1`;
  return (await dbs.v2.query(sql, [id])).rows;
}

/**
 * Asserts that V2 holds exactly the V1 row of `id` under the mapping, as the Phase 3 verifier
 * compares them (each column's hash in SQL on both sides, not the mapping under test), or no
 * row when V1 has none. Returns the V2 row.
 */
export async function expectRowInSync(
  dbs: TestDatabases,
  config: MigrationConfig,
  table: MappedTable,
  id: string,
): Promise<Record<string, unknown> | undefined> {
  const inV1 = (await dbs.v1.query(`SELECT 1 FROM ${MAPPINGS[table].v1Table} WHERE id = $1`, [id])).rows
    .length;
  const v2Rows = await v2RowsOf(dbs, table, id);
  expect({ table, id, v2Rows: v2Rows.length }).toEqual({ table, id, v2Rows: inV1 });
  const differences = await compareKeys({ v1: dbs.v1, v2: dbs.v2, config }, table, [id]);
  expect({ table, id, differences }).toEqual({ table, id, differences: [] });
  return v2Rows[0];
}

/** Asserts V2 equals V1 under the mapping for every row of every table, as the verifier compares them. */
export async function expectAllInSync(dbs: TestDatabases, config: MigrationConfig): Promise<void> {
  for (const table of TABLES) {
    const m = MAPPINGS[table];
    const v1Ids = (await dbs.v1.query(`SELECT id::text AS id FROM ${m.v1Table}`)).rows.map((r) => r.id);
    const v2Ids = (await dbs.v2.query(`SELECT ${m.v2Key}::text AS id FROM ${m.v2Table}`)).rows.map(
      (r) => r.id,
    );
    // Every row exactly once, and no other.
    expect({ table, ids: [...v2Ids].sort() }).toEqual({ table, ids: [...v1Ids].sort() });
    const differences = await compareKeys({ v1: dbs.v1, v2: dbs.v2, config }, table, v1Ids);
    expect({ table, differences }).toEqual({ table, differences: [] });
  }
}
