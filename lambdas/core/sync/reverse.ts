import type { Pool } from 'pg';
import { ident } from '../db';
import { RepairRowError } from '../errors';
import type { MappedTable } from '../mapping';
import {
  forwardOf,
  INVERSE_MAPPINGS,
  inverseColumns,
  inverseProjection,
  v2SourceSql,
  type V2Source,
} from '../mapping-inverse';
import { resolvedPerDeps, type ClientSettings } from './row-sync';
import type { RepairDeps, RepairResult } from './repair';
import { parseId, sameSource, v1Table } from './v1-read';

/**
 * The reverse sync, for the time after the write switch: single rows V2 → V1 under the inverse
 * mapping (mapping-inverse.ts). The V2 row is read as its source text (`readV2Source`) and
 * projected into V1's columns by SQL on V1, so nothing passes through a JavaScript value. Used
 * by the dual writer's mirror while V2 is the write primary and by the repair worker for
 * `repair-row` messages `from` V2.
 */

/** The qualified V2 table of a mapped table. */
const v2Table = (schema: string, table: MappedTable) =>
  `${ident(schema)}.${ident(table === 'telemetry' ? 'telemetry' : table)}`;

/**
 * Reads one V2 row of the tenant by its V1 id (telemetry: `legacy_id`) as its source text, or
 * null when V2 has none. Two telemetry rows of one `legacy_id` are an anomaly the sync never
 * makes (it moves a row's time in place): named, never guessed between.
 */
export async function readV2Source(
  v2: Pick<Pool, 'query'>,
  settings: Pick<ClientSettings, 'v2Schema' | 'tenantId'>,
  table: MappedTable,
  id: string,
): Promise<V2Source | null> {
  const key = INVERSE_MAPPINGS[table].key;
  const { rows } = await v2.query<{ source: V2Source }>(
    `SELECT ${v2SourceSql(table, settings.v2Schema)} AS source FROM ${v2Table(settings.v2Schema, table)} v2row
      WHERE v2row.${ident(key)} = $1 AND v2row.tenant_id = $2 LIMIT 2`,
    [id, settings.tenantId],
  );
  if (rows.length > 1)
    throw new RepairRowError(table, id, `V2 holds more than one telemetry row of legacy_id ${id}`, {
      target: 'V1',
    });
  return rows[0]?.source ?? null;
}

/**
 * Writes single V2 rows into V1 under the inverse mapping: upserts take V2's state (V1 keeps its
 * own value of a column whose value maps to V2's, so a row already equal under the mapping is
 * left untouched, not rewritten); deletes go by id. Every identifier comes from the mapping or
 * the configured schema, quoted; every value is a parameter.
 */
export class V1RowSync {
  private readonly statements = new Map<MappedTable, string>();

  constructor(
    private readonly v1: Pick<Pool, 'query'>,
    private readonly schema: string,
  ) {}

  /** Upserts the V2 row given as its source text; returns whether V1's row was written. */
  async upsert(table: MappedTable, source: V2Source): Promise<boolean> {
    const columns = INVERSE_MAPPINGS[table].source;
    if (source.length !== columns.length)
      throw new Error(`A ${table} V2 source row has ${source.length} values, not ${columns.length}`);
    const { rowCount } = await this.v1.query(this.upsertSql(table), source);
    return (rowCount ?? 0) > 0;
  }

  /** Deletes V1's row of an id (V1's cascades follow V2's); returns how many. */
  async remove(table: MappedTable, id: string): Promise<number> {
    const { rowCount } = await this.v1.query(`DELETE FROM ${v1Table(this.schema, table)} WHERE id = $1`, [
      id,
    ]);
    return rowCount ?? 0;
  }

  /** The upsert of a V2 source given as parameters ($1…, in source order). */
  private upsertSql(table: MappedTable): string {
    const cached = this.statements.get(table);
    if (cached !== undefined) return cached;
    const source = INVERSE_MAPPINGS[table].source;
    const sql = v1UpsertSql(
      table,
      this.schema,
      `(SELECT ${source.map((c, i) => `$${i + 1}::${c.type} AS ${ident(c.name)}`).join(', ')}) AS v2`,
    );
    this.statements.set(table, sql);
    return sql;
  }
}

/**
 * The upsert into V1 of the V2 rows of `from` (a relation with the V2 source's columns, by
 * name): `src` projects them into V1's columns (the inverse mapping) and the insert upserts
 * them. A column the forward mapping sends several V1 values to one V2 value keeps V1's value
 * where that maps to V2's, and an update that would change nothing is skipped (the WHERE), so a
 * row already equal under the mapping keeps its version.
 */
export function v1UpsertSql(table: MappedTable, v1Schema: string, from: string): string {
  const columns = inverseColumns(table);
  const cast = (c: (typeof columns)[number]) =>
    c.enumType ? `${ident(c.name)}::${ident(v1Schema)}.${ident(c.enumType)}` : ident(c.name);
  const next = (c: (typeof columns)[number]) =>
    c.lossy
      ? `CASE WHEN ${forwardOf(table, c.lossy, c.name, `t.${ident(c.name)}`)} IS NOT DISTINCT FROM ${forwardOf(table, c.lossy, c.name, `EXCLUDED.${ident(c.name)}`)}
              THEN t.${ident(c.name)} ELSE EXCLUDED.${ident(c.name)} END`
      : `EXCLUDED.${ident(c.name)}`;
  const updated = columns.filter((c) => c.name !== 'id');
  return `INSERT INTO ${v1Table(v1Schema, table)} AS t (${columns.map((c) => ident(c.name)).join(', ')})
    SELECT ${columns.map(cast).join(', ')} FROM (SELECT ${inverseProjection(table)} FROM ${from}) AS src
    ON CONFLICT (id) DO UPDATE SET ${updated.map((c) => `${ident(c.name)} = ${next(c)}`).join(', ')}
    WHERE ROW(${updated.map((c) => `t.${ident(c.name)}`).join(', ')}) IS DISTINCT FROM ROW(${updated.map(next).join(', ')})`;
}

/** Reads of a V2 row that keeps changing under a reverse sync before it gives up (and is retried). */
export const REVERSE_SYNC_MAX_ROUNDS = 5;

// One resolved context (validated settings) per deps object.
const resolve = resolvedPerDeps(
  'reverse sync settings',
  (deps: RepairDeps, settings) => new V1RowSync(deps.v1, settings.v1Schema),
);

/**
 * Syncs one row from V2 to V1 (V2 the write primary): if V2 holds the row (of the tenant) its
 * state is upserted into V1 through the inverse mapping, and if not, V1's row is deleted.
 * Idempotent. V2 is read again afterwards: if the row changed meanwhile the round is repeated,
 * so V1 never ends older than V2 after two writes of a row that raced each other. Throws the
 * underlying error; RepairRowError after REVERSE_SYNC_MAX_ROUNDS changing rounds.
 */
export async function syncRowToV1(
  deps: RepairDeps,
  table: MappedTable,
  id: string,
  options: { known?: V2Source | null } = {},
): Promise<RepairResult> {
  const { settings, sync } = resolve(deps);
  const key = parseId(table, id);
  let row = options.known !== undefined ? options.known : await readV2Source(deps.v2, settings, table, key);
  for (let round = 1; round <= REVERSE_SYNC_MAX_ROUNDS; round++) {
    if (row) await sync.upsert(table, row);
    else await sync.remove(table, key);
    const again = await readV2Source(deps.v2, settings, table, key);
    if (sameSource(again, row)) return { table, id: key, action: row ? 'upserted' : 'deleted' };
    row = again;
  }
  throw new RepairRowError(table, key, `the V2 row changed during ${REVERSE_SYNC_MAX_ROUNDS} rounds`, {
    retryable: true,
    target: 'V1',
  });
}
