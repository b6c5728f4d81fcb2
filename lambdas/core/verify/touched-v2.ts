import { controlSchema, ident } from '../db';
import { MAPPINGS, TABLE_ORDER } from '../mapping';
import type { WindowRow } from '../windows';
import { sourceTable, windowBuckets, type VerifyDeps } from './checksums';

/**
 * Windows whose V2 rows of the tenant were created or updated since `since` (any of the table's
 * V2 instant columns, from the mapping, is at or after it). While V2 is the write primary, a
 * row V2 holds and V1 missed (a failed mirror) is found only here: `touchedWindows` looks at V1.
 */
export async function touchedWindowsInV2(deps: VerifyDeps, since: Date): Promise<Set<number>> {
  const { v2, config } = deps;
  const touched = new Set<number>();
  const windows = (
    await v2.query<WindowRow>(
      `SELECT id::int AS id, table_name, seq, lower_bound, upper_bound FROM ${controlSchema(config)}.windows ORDER BY table_name, seq`,
    )
  ).rows;
  for (const table of TABLE_ORDER) {
    const ws = windows.filter((w) => w.table_name === table);
    if (ws.length === 0) continue;
    // The bounds are the first parameters ($1, or $1 and $2), then `since` and the tenant.
    const n = MAPPINGS[table].windowKey === 'id' ? 2 : 3;
    const changed = MAPPINGS[table].columns
      .filter((c) => c.kind === 'instant')
      .map((c) => `${ident(c.v2)} >= $${n}::timestamptz`)
      .join(' OR ');
    const keyed = table === 'telemetry' ? ' AND legacy_id IS NOT NULL' : '';
    const buckets = windowBuckets(
      table,
      'v2',
      ws,
      `${sourceTable(table, config, 'v2')} WHERE tenant_id = $${n + 1}${keyed} AND (${changed})`,
      '',
    );
    const { rows } = await v2.query<{ bucket: number }>(`SELECT DISTINCT bucket FROM (${buckets.sql}) w`, [
      ...buckets.params,
      since,
      config.tenant.id,
    ]);
    for (const r of rows) touched.add(ws[r.bucket].id);
  }
  return touched;
}
