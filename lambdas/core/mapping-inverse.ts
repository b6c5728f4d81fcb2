import { ident } from './db';
import { MAPPINGS, V1_COLUMNS, type MappedTable, type V1Column } from './mapping';

/**
 * The inverse of the V1 → V2 mapping (mapping.ts), for the time after the write switch, when V2
 * is the write primary and V1 is kept current from it: each V1 column as a SQL expression over a
 * V2 row. Like the forward mapping, it runs only in SQL: a V2 row travels as PostgreSQL text (its
 * "V2 source", `v2SourceSql`) and is projected into V1's columns by SQL on V1, never through
 * JavaScript values.
 *
 * The V2 source of a row is the V2 columns the inverse needs, instants as their UTC wall time
 * (`timestamp`, the way V1 stores them), plus for devices the device type of the row's template.
 * A test holds every V1 column to exactly one inverse column, and proves with generated rows that
 * a V1 row mapped to V2 and back is the V1 row again, as the verifier compares them.
 *
 * Two V1 columns map many to one: a V1 `config` of SQL NULL and `{}` both become V2 attributes
 * `{}`, and a telemetry `source` of NULL and `'migrated'` both become `'migrated'` (DESIGN.md's
 * mapping). The inverse cannot tell them apart from V2 alone, so it writes `attributes` and
 * `source` as they are, and where V1 already holds the row, V1 keeps its own value whenever that
 * value maps to V2's (`lossy`): a V1 row mapped to V2 and back is the same row, untouched, and a
 * row born in V2 gets the value V2 shows.
 *
 * What V1 cannot hold at all is not mapped back: rows of another tenant (V1 is single-tenant),
 * telemetry without a `legacy_id`, and V2 columns the forward mapping fills with constants
 * (`quality`, a device's `metadata`, the template beyond its device type). V2 values outside the
 * forward mapping's image (a quality other than GOOD, microseconds V1's `timestamp(3)` rounds
 * away) make the row differ when verified, which is what they are.
 */

/** The SQL types of a V2 source's columns. */
export type V2SourceType = 'text' | 'jsonb' | 'timestamp' | 'bigint';

export interface V2SourceColumn {
  /** The column's name in the source (the V2 column name, or `device_type` for devices). */
  name: string;
  type: V2SourceType;
  /** The expression over a V2 row of the table, aliased `row`, in the given V2 schema. */
  sql: (row: string, v2Schema: string) => string;
}

export interface InverseColumn {
  /** The V1 column. */
  v1: string;
  /** The V1 value: SQL over the V2 source's columns (alias-free), of the V1 column's SQL type. */
  sql: string;
  /**
   * The V2 column whose forward mapping sends several V1 values of this column to one V2 value:
   * V1 keeps its own value where it maps to V2's.
   */
  lossy?: string;
}

export interface InverseMapping {
  /** The V2 column that holds the V1 id (`legacy_id` for telemetry). */
  key: string;
  /** The V2 source of a row, in order. */
  source: V2SourceColumn[];
  /** One expression per V1 column, in V1_COLUMNS order. */
  columns: InverseColumn[];
}

const text = (name: string): V2SourceColumn => ({
  name,
  type: 'text',
  sql: (row) => `${row}.${ident(name)}`,
});
const json = (name: string): V2SourceColumn => ({
  name,
  type: 'jsonb',
  sql: (row) => `${row}.${ident(name)}`,
});
/** A V2 instant as its UTC wall time, the form V1 stores. */
const instant = (name: string): V2SourceColumn => ({
  name,
  type: 'timestamp',
  sql: (row) => `(${row}.${ident(name)} AT TIME ZONE 'UTC')`,
});

const same = (v1: string, v2 = v1): InverseColumn => ({ v1, sql: ident(v2) });
/** V1's `timestamp(3)` of a UTC wall time (rounded to milliseconds, as V1 stores it). */
const wallTime = (v1: string, v2: string): InverseColumn => ({ v1, sql: `${ident(v2)}::timestamp(3)` });

export const INVERSE_MAPPINGS: Record<MappedTable, InverseMapping> = {
  users: {
    key: 'id',
    source: [
      text('id'),
      text('email'),
      text('name'),
      text('password_hash'),
      text('role'),
      instant('created_at'),
      instant('updated_at'),
    ],
    columns: [
      same('id'),
      same('email'),
      same('name'),
      same('passwordHash', 'password_hash'),
      same('role'),
      wallTime('createdAt', 'created_at'),
      wallTime('updatedAt', 'updated_at'),
    ],
  },
  devices: {
    key: 'id',
    source: [
      text('id'),
      text('name'),
      {
        name: 'device_type',
        type: 'text',
        sql: (row, schema) =>
          `(SELECT t.device_type FROM ${ident(schema)}.device_templates t WHERE t.id = ${row}.template_id)`,
      },
      text('status'),
      json('attributes'),
      text('owner_id'),
      instant('last_seen_at'),
      instant('created_at'),
      instant('updated_at'),
    ],
    columns: [
      same('id'),
      same('name'),
      same('type', 'device_type'),
      same('status'),
      { v1: 'config', sql: ident('attributes'), lossy: 'attributes' },
      same('ownerId', 'owner_id'),
      wallTime('lastSeenAt', 'last_seen_at'),
      wallTime('createdAt', 'created_at'),
      wallTime('updatedAt', 'updated_at'),
    ],
  },
  telemetry: {
    key: 'legacy_id',
    source: [
      { name: 'legacy_id', type: 'bigint', sql: (row) => `${row}.legacy_id` },
      text('device_id'),
      instant('timestamp'),
      json('metrics'),
      text('protocol'),
      text('source'),
    ],
    columns: [
      same('id', 'legacy_id'),
      same('deviceId', 'device_id'),
      wallTime('timestamp', 'timestamp'),
      same('data', 'metrics'),
      same('protocol'),
      { v1: 'source', sql: ident('source'), lossy: 'source' },
    ],
  },
  alerts: {
    key: 'id',
    source: [
      text('id'),
      text('device_id'),
      text('severity'),
      text('message'),
      text('status'),
      instant('created_at'),
      instant('resolved_at'),
    ],
    columns: [
      same('id'),
      same('deviceId', 'device_id'),
      same('severity'),
      same('message'),
      same('status'),
      wallTime('createdAt', 'created_at'),
      wallTime('resolvedAt', 'resolved_at'),
    ],
  },
};

/**
 * A V2 row as the reverse sync carries it: every column of its V2 source as PostgreSQL text, in
 * order; null for SQL NULL.
 */
export type V2Source = (string | null)[];

/** A source column as text that reads back into the same value on any server and session. */
function sourceText(column: V2SourceColumn, row: string, schema: string): string {
  const expr = column.sql(row, schema);
  return column.type === 'timestamp'
    ? `(to_json(${expr}) #>> '{}')`
    : column.type === 'text'
      ? expr
      : `(${expr})::text`;
}

/** The SQL (in a SELECT list) of a V2 row's source text; the row is aliased `v2row`. */
export function v2SourceSql(table: MappedTable, v2Schema: string, row = 'v2row'): string {
  return `ARRAY[${INVERSE_MAPPINGS[table].source.map((c) => sourceText(c, row, v2Schema)).join(', ')}]::text[]`;
}

/** The SELECT list of a V2 row's source columns, typed, named as in the source (row aliased `v2row`). */
export function v2SourceColumns(table: MappedTable, v2Schema: string, row = 'v2row'): string {
  return INVERSE_MAPPINGS[table].source.map((c) => `${c.sql(row, v2Schema)} AS ${ident(c.name)}`).join(', ');
}

/** The V1 columns in V1_COLUMNS order, each with its inverse expression. */
export function inverseColumns(table: MappedTable): (V1Column & InverseColumn)[] {
  const inverse = new Map(INVERSE_MAPPINGS[table].columns.map((c) => [c.v1, c]));
  return V1_COLUMNS[table].map((column) => {
    const c = inverse.get(column.name);
    if (!c) throw new Error(`No inverse mapping for ${table}.${column.name}`);
    return { ...column, ...c };
  });
}

/**
 * The SELECT list that projects a V2 source (its columns by name, from `v2SourceColumns` or a
 * CTE of the source text) into V1's columns, named as in V1, of V1's SQL types (an enum as text).
 */
export function inverseProjection(table: MappedTable): string {
  return inverseColumns(table)
    .map((c) => `(${c.sql})::${c.sqlType} AS ${ident(c.name)}`)
    .join(', ');
}

/**
 * The forward mapping of one V1 column (the V2 column named by `lossy`) applied to `value`, an
 * SQL expression of that column's V1 type: what V2 would hold for it.
 */
export function forwardOf(table: MappedTable, lossy: string, v1Column: string, value: string): string {
  const mapping = MAPPINGS[table].columns.find((c) => c.v2 === lossy);
  if (!mapping) throw new Error(`No V2 column ${table}.${lossy} in the mapping`);
  return `(SELECT ${mapping.sql} FROM (SELECT ${value}) AS forward(${ident(v1Column)}))`;
}
