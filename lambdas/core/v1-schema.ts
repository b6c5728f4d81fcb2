import type { Pool } from 'pg';
import { ident } from './db';
import { V1SchemaMismatchError } from './errors';
import { MAPPINGS, TABLE_ORDER, V1_COLUMNS, type TableMapping } from './mapping';

/** The V1 tables the migration reads, in foreign-key order, with the columns it reads (from mapping.ts). */
export const V1_TABLES = Object.fromEntries(
  TABLE_ORDER.map((t) => [MAPPINGS[t].v1Table, V1_COLUMNS[t].map((c) => c.name)]),
) as Record<TableMapping['v1Table'], string[]>;

export type V1Table = TableMapping['v1Table'];
export const V1_TABLE_NAMES = Object.keys(V1_TABLES) as V1Table[];

/**
 * Checks that V1 has every table and column the migration reads. Throws
 * V1SchemaMismatchError listing everything missing (`table devices`, `column alerts.status`).
 */
export async function checkV1Schema(v1: Pool, schema: string): Promise<{ tables: number; columns: number }> {
  const { rows } = await v1.query<{ table_name: string; column_name: string }>(
    `SELECT table_name, column_name FROM information_schema.columns
      WHERE table_schema = $1 AND table_name = ANY($2::text[])`,
    [schema, V1_TABLE_NAMES],
  );
  const present = new Map<string, Set<string>>();
  for (const r of rows) {
    if (!present.has(r.table_name)) present.set(r.table_name, new Set());
    present.get(r.table_name)!.add(r.column_name);
  }
  const missing: string[] = [];
  let columns = 0;
  for (const table of V1_TABLE_NAMES) {
    const have = present.get(table);
    if (!have) {
      missing.push(`table ${schema}.${table}`);
      continue;
    }
    for (const column of V1_TABLES[table]) {
      if (have.has(column)) columns++;
      else missing.push(`column ${table}.${column}`);
    }
  }
  if (missing.length > 0) throw new V1SchemaMismatchError(missing, schema);
  return { tables: V1_TABLE_NAMES.length, columns };
}

/** Exact row counts of every V1 table, for backup checks and reports. */
export async function countV1Rows(v1: Pool, schema: string): Promise<Record<V1Table, number>> {
  const counts = {} as Record<V1Table, number>;
  for (const table of V1_TABLE_NAMES) {
    const { rows } = await v1.query<{ n: string }>(
      `SELECT count(*) AS n FROM ${ident(schema)}.${ident(table)}`,
    );
    counts[table] = Number(rows[0].n);
  }
  return counts;
}
