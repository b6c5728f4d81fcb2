import { types, type CustomTypesConfig, type Pool } from 'pg';
import { z } from 'zod';
import { describeIssues } from '../config';
import { ident } from '../db';
import { InvalidInputError } from '../errors';
import { MAPPINGS, TABLE_ORDER, V1_COLUMNS, v1ColumnAsText, type MappedTable } from '../mapping';

/** The tables whose single rows are re-synced, named as in V2 (`telemetry` is V1's `device_data`). */
export const SYNC_TABLES = TABLE_ORDER;

/** A V1 `device_data` id: the bigserial, as digits. */
export const bigintId = z
  .union([z.string().regex(/^[0-9]{1,19}$/), z.number().int().nonnegative(), z.bigint().nonnegative()])
  .transform(String);

/** Checks a row id for a table (telemetry ids are digits); returns it as text. */
export function parseId(table: MappedTable, id: unknown): string {
  const schema = table === 'telemetry' ? bigintId : z.string().min(1);
  const parsed = schema.safeParse(id);
  if (!parsed.success) throw new InvalidInputError(`${table} id`, describeIssues(parsed.error));
  return parsed.data;
}

// ---------------------------------------------------------------------------------------------
// Reading V1

const parseTimestamptz = types.getTypeParser(types.builtins.TIMESTAMPTZ) as (value: string) => unknown;

/**
 * Query types that read V1's `timestamp without time zone` as UTC (Prisma's convention)
 * whatever the process's time zone; node-postgres alone would read it as local time.
 */
export const V1_QUERY_TYPES: CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => {
    if (oid === types.builtins.TIMESTAMP && format !== 'binary') {
      return (value: string) =>
        /^-?infinity$/.test(value)
          ? parseTimestamptz(value)
          : parseTimestamptz(value.replace(/( BC)?$/, '+00$1'));
    }
    return format === 'binary' ? types.getTypeParser(oid, 'binary') : types.getTypeParser(oid);
  }) as CustomTypesConfig['getTypeParser'],
};

/** The qualified V1 table of a mapped table. */
export function v1Table(schema: string, table: MappedTable): string {
  return `${ident(schema)}.${ident(MAPPINGS[table].v1Table)}`;
}

/** Reads one V1 row by id (timestamps as UTC), or null when V1 has none. */
export async function readV1Row(
  v1: Pick<Pool, 'query'>,
  schema: string,
  table: MappedTable,
  id: string,
): Promise<Record<string, unknown> | null> {
  const { rows } = await v1.query({
    text: `SELECT * FROM ${v1Table(schema, table)} WHERE id = $1`,
    values: [id],
    types: V1_QUERY_TYPES,
  });
  return rows[0] ?? null;
}

/**
 * A V1 row as the single-row sync carries it: every column of V1_COLUMNS as PostgreSQL text
 * (`v1ColumnAsText`), in that order; null for SQL NULL. Nothing passes through a JavaScript
 * value, so a JSON `null`, a number beyond 2^53 or a timestamp beyond year 275760 arrives on
 * V2 exactly as V1 holds it.
 */
export type V1Source = (string | null)[];

/** The SQL expression (in a SELECT or RETURNING list) of a V1 row's source text. */
export function v1SourceSql(table: MappedTable): string {
  return `ARRAY[${V1_COLUMNS[table].map(v1ColumnAsText).join(', ')}]::text[]`;
}

/** Reads one V1 row by id as its source text, or null when V1 has none. */
export async function readV1Source(
  v1: Pick<Pool, 'query'>,
  schema: string,
  table: MappedTable,
  id: string,
): Promise<V1Source | null> {
  const { rows } = await v1.query<{ source: V1Source }>(
    `SELECT ${v1SourceSql(table)} AS source FROM ${v1Table(schema, table)} WHERE id = $1`,
    [id],
  );
  return rows[0]?.source ?? null;
}

/** Whether two reads of a V1 row hold the same values (null: no row). */
export function sameSource(a: V1Source | null, b: V1Source | null): boolean {
  if (a === null || b === null) return a === b;
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
