import { columnHash, columnText, rowDigest, verifiedColumns } from '../digest';
import { TABLE_ORDER, type MappedTable } from '../mapping';
import { bindWindow, type WindowRow } from '../windows';
import { keyExpressions, onClient, sourceTable, V2_TENANT_FILTER, type VerifyDeps } from './checksums';

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
 * timestamp is a changed column, not a missing row plus an extra one): either a window's
 * rows, or the rows of the given keys (looked up through the key's index), at the given times
 * when known. `digest` reads each row's digest; `columns` each column's own hash (`h0`, `h1`,
 * …) and its value as text (`v0`, …), and V1 telemetry its instant (`ts`).
 */
async function tableRows(
  deps: VerifyDeps,
  table: MappedTable,
  side: 'v1' | 'v2',
  select: 'digest' | 'columns',
  scope: { window: WindowRow } | { keys: string[]; times?: (string | null)[] },
): Promise<Map<string, Record<string, string | null>>> {
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
      if (scope.times && key.ts) {
        where += ` AND "timestamp" = ANY($2::timestamptz[])`;
        params.push(scope.times);
      }
    }
    // Another tenant's row of the same key is none of this migration's business.
    if (side === 'v2') where += ` AND ${V2_TENANT_FILTER}`;
    const fields =
      select === 'digest'
        ? `(${rowDigest(table, side, deps.config)})::text AS digest`
        : columns
            .map((c, i) => `(${columnHash(c, side)})::text AS h${i}, ${columnText(c, side)} AS v${i}`)
            .join(', ') + (side === 'v1' && key.ts ? `, ("timestamp" AT TIME ZONE 'UTC')::text AS ts` : '');
    const { rows } = await client.query(
      `SELECT ${idColumn}::text AS k, ${fields} FROM ${sourceTable(table, deps.config, side)} WHERE ${where}`,
      params,
    );
    return new Map(rows.map((r) => [String(r.k), r]));
  });
}

/**
 * Compares the rows of the given keys on both sides, each column by its own hash (the
 * verifier's, so a difference here is a difference of the digest): rows missing from V2,
 * extra in V2, or changed, naming each differing column with both values as text.
 */
export async function compareKeys(
  deps: VerifyDeps,
  table: MappedTable,
  keys: string[],
): Promise<RowDifference[]> {
  if (keys.length === 0) return [];
  const columns = verifiedColumns(table, deps.config);
  const [va, vb] =
    table === 'telemetry'
      ? await telemetryRows(deps, keys)
      : await Promise.all([
          tableRows(deps, table, 'v1', 'columns', { keys }),
          tableRows(deps, table, 'v2', 'columns', { keys }),
        ]);
  const differences: RowDifference[] = [];
  for (const k of keys) {
    const x = va.get(k);
    const y = vb.get(k);
    if (!x && !y) continue;
    if (!y) differences.push({ key: k, kind: 'missing' });
    else if (!x) differences.push({ key: k, kind: 'extra' });
    else {
      const diff = columns
        .map((c, i) => ({ c, i }))
        .filter(({ i }) => x[`h${i}`] !== y[`h${i}`])
        .map(({ c, i }) => ({ column: c.name, v1: x[`v${i}`], v2: y[`v${i}`] }));
      if (diff.length > 0) differences.push({ key: k, kind: 'changed', columns: diff });
    }
  }
  return differences;
}

/**
 * Telemetry rows of the given keys on both sides. V2 is looked up at V1's times (on
 * TimescaleDB's compressed chunks a lookup by `legacy_id` alone reads every batch); only keys
 * not found there (V1 has no such row, or V2 holds it at another time) are looked up by key
 * alone.
 */
async function telemetryRows(deps: VerifyDeps, keys: string[]) {
  const va = await tableRows(deps, 'telemetry', 'v1', 'columns', { keys });
  const found = [...va.keys()];
  const vb = await tableRows(deps, 'telemetry', 'v2', 'columns', {
    keys: found,
    times: found.map((k) => va.get(k)!.ts),
  });
  const elsewhere = keys.filter((k) => !vb.has(k));
  if (elsewhere.length > 0)
    for (const [k, row] of await tableRows(deps, 'telemetry', 'v2', 'columns', { keys: elsewhere }))
      vb.set(k, row);
  return [va, vb] as const;
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
  for (const d of await compareKeys(deps, window.table_name, changedKeys))
    if (d.kind === 'changed') differences.push(d);
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

/** A row difference found by the deep compare of a sample, with its table. */
export type SampleDifference = RowDifference & { table: MappedTable };

/** A deep compare of a random sample of each table's rows, naming each differing column. */
export async function sampleCompare(
  deps: VerifyDeps,
  sampleSize: number,
  tables: MappedTable[] = TABLE_ORDER,
): Promise<{ checked: number; differences: SampleDifference[] }> {
  const differences: SampleDifference[] = [];
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
    checked += keys.length;
    for (const d of await compareKeys(deps, table, keys)) differences.push({ table, ...d });
  }
  return { checked, differences };
}

/** The sampled differences that are still there when compared again. */
export async function compareAgain(
  deps: VerifyDeps,
  differences: SampleDifference[],
): Promise<SampleDifference[]> {
  const byTable = new Map<MappedTable, string[]>();
  for (const d of differences) byTable.set(d.table, [...(byTable.get(d.table) ?? []), d.key]);
  const out: SampleDifference[] = [];
  for (const [table, keys] of byTable)
    for (const d of await compareKeys(deps, table, keys)) out.push({ table, ...d });
  return out;
}
