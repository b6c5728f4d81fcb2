import { isDeepStrictEqual } from 'node:util';
import type { MigrationConfig } from '../../lambdas/core/config';
import { MAPPINGS, mapRow, type MappedTable } from '../../lambdas/core/mapping';
import type { QueuePort } from '../../lambdas/ports/queue';
import { readV1Row, V1_QUERY_TYPES } from '../../client';
import type { TestDatabases } from '../support/pg';

export const TABLES: MappedTable[] = ['users', 'devices', 'telemetry', 'alerts'];

/** A queue port that keeps what it was sent; `fail` makes it reject like a failed SendMessageBatch. */
export function recordingQueue(): QueuePort & { bodies: string[]; fail: boolean } {
  const queue = {
    bodies: [] as string[],
    fail: false,
    async sendAll(bodies: readonly string[]) {
      if (queue.fail) throw new Error('SQS is unreachable (test)');
      queue.bodies.push(...bodies);
      return { sent: bodies.length, calls: 1 };
    },
  };
  return queue;
}

/** A router stand-in whose dual-write switch a test flips. */
export function dualWriteSwitch(on = true) {
  return {
    on,
    dualWriteEnabled() {
      return this.on;
    },
  };
}

export function recorder() {
  const metrics: [string, number][] = [];
  const count = (name: string) => metrics.filter(([n]) => n === name).reduce((a, [, v]) => a + v, 0);
  return { metrics, count, onMetric: (name: string, value: number) => void metrics.push([name, value]) };
}

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
 * Asserts that V2 holds exactly the mapped V1 row of `id` (every mapped column, compared as
 * node-postgres returns them), or no row when V1 has none. Returns the V2 row.
 */
export async function expectRowInSync(
  dbs: TestDatabases,
  config: MigrationConfig,
  table: MappedTable,
  id: string,
): Promise<Record<string, unknown> | undefined> {
  const v1Row = await readV1Row(dbs.v1, config.schemas.v1, table, id);
  const v2Rows = await v2RowsOf(dbs, table, id);
  if (!v1Row) {
    expect({ table, id, v2Rows: v2Rows.length }).toEqual({ table, id, v2Rows: 0 });
    return undefined;
  }
  expect({ table, id, v2Rows: v2Rows.length }).toEqual({ table, id, v2Rows: 1 });
  const expected = mapRow(table, v1Row, { tenantId: config.tenant.id });
  const differences: unknown[] = [];
  for (const [column, value] of Object.entries(expected)) {
    if (column === 'template_id') continue;
    if (!isDeepStrictEqual(v2Rows[0][column], value))
      differences.push({ column, v1: value, v2: v2Rows[0][column] });
  }
  if (table === 'devices' && v2Rows[0].template_type !== v1Row.type)
    differences.push({ column: 'template_id', v1: v1Row.type, v2: v2Rows[0].template_type });
  expect({ table, id, differences }).toEqual({ table, id, differences: [] });
  return v2Rows[0];
}

/** Asserts V2 equals V1 under the mapping for every row of every table. */
export async function expectAllInSync(dbs: TestDatabases, config: MigrationConfig): Promise<void> {
  for (const table of TABLES) {
    const m = MAPPINGS[table];
    const v1Ids = (await dbs.v1.query(`SELECT id::text AS id FROM ${m.v1Table}`)).rows.map((r) => r.id);
    const v2Ids = (await dbs.v2.query(`SELECT ${m.v2Key}::text AS id FROM ${m.v2Table}`)).rows.map(
      (r) => r.id,
    );
    expect({ table, ids: [...v2Ids].sort() }).toEqual({ table, ids: [...v1Ids].sort() });
    const differences: unknown[] = [];
    const v1Rows = (await dbs.v1.query({ text: `SELECT * FROM ${m.v1Table}`, types: V1_QUERY_TYPES })).rows;
    const v2Rows = new Map(
      (await dbs.v2.query(`SELECT * FROM ${m.v2Table}`)).rows.map((r) => [String(r[m.v2Key]), r]),
    );
    for (const v1Row of v1Rows) {
      const expected = mapRow(table, v1Row, { tenantId: config.tenant.id });
      const actual = v2Rows.get(String(v1Row.id)) ?? {};
      for (const [column, value] of Object.entries(expected)) {
        if (column === 'template_id') continue;
        if (!isDeepStrictEqual(actual[column], value))
          differences.push({ table, id: v1Row.id, column, v1: value, v2: actual[column] });
      }
    }
    expect(differences).toEqual([]);
  }
}
