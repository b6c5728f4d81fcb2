import { isDeepStrictEqual } from 'node:util';
import { ident } from '../db';
import { rowDigest, typed, verifiedColumns } from '../digest';
import { TABLE_ORDER, type ColumnMapping, type MappedTable } from '../mapping';
import { bindWindow, type WindowRow } from '../windows';
import { keyExpressions, onClient, sourceTable, type VerifyDeps } from './checksums';

/** Findings: which rows of a window, or of a sample, differ, and in which columns. */

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
 * timestamp is a changed column, not a missing row plus an extra one): a window's rows, or
 * the rows of the given keys (looked up through the key's index), within a window or at the
 * given times when known. Telemetry rows are looked up with their time: on TimescaleDB's
 * compressed chunks a lookup by `legacy_id` alone reads every batch.
 */
async function tableRows(
  deps: VerifyDeps,
  table: MappedTable,
  side: 'v1' | 'v2',
  select: 'digest' | 'values',
  scope: { window: WindowRow; keys?: string[] } | { keys: string[]; times?: Date[] },
): Promise<Map<string, Record<string, unknown>>> {
  const columns = verifiedColumns(table, deps.config);
  const key = keyExpressions(table, side);
  return onClient(side === 'v1' ? deps.v1 : deps.v2, async (client) => {
    await client.query(`SELECT set_config('migration.tenant_id', $1, true)`, [deps.config.tenant.id]);
    const idColumn = key.id.replace(' COLLATE "C"', '');
    let where: string;
    let params: unknown[] = [];
    const byKeys = `${idColumn} = ANY($1::${key.ts ? 'bigint' : 'text'}[])`;
    if ('window' in scope) {
      where = await bindWindow(client, table, scope.window, side);
      if (side === 'v2' && table === 'telemetry') where += ' AND legacy_id IS NOT NULL';
      if (scope.keys) {
        where += ` AND ${byKeys}`;
        params = [scope.keys];
      }
    } else {
      where = byKeys;
      params = [scope.keys];
      if (scope.times && key.ts) {
        where += ` AND "timestamp" = ANY($2::timestamptz[])`;
        params.push(scope.times);
      }
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
    // Both sides have these rows in the window: looked up within it.
    const [va, vb] = await Promise.all([
      tableRows(deps, window.table_name, 'v1', 'values', { window, keys: changedKeys }),
      tableRows(deps, window.table_name, 'v2', 'values', { window, keys: changedKeys }),
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
    const va = await tableRows(deps, table, 'v1', 'values', { keys });
    // Telemetry is looked up at V1's times first; a row V2 holds at another time (a changed
    // timestamp) is found by its key alone then.
    const times = table === 'telemetry' ? [...va.values()].map((r) => r.timestamp as Date) : undefined;
    const vb = await tableRows(deps, table, 'v2', 'values', { keys, times });
    const elsewhere = times ? keys.filter((k) => va.has(k) && !vb.has(k)) : [];
    if (elsewhere.length > 0)
      for (const [k, row] of await tableRows(deps, table, 'v2', 'values', { keys: elsewhere }))
        vb.set(k, row);
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
