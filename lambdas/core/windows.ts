import type { Pool, PoolClient } from 'pg';
import type { MigrationConfig } from './config';
import { controlSchema, ident } from './db';
import { MigrationError, WindowNotFoundError } from './errors';
import { MAPPINGS, type MappedTable } from './mapping';

/** A window's bound: a text id, or a V1 ("timestamp", id) pair (timestamp as V1 text). */
export interface Bound {
  id: string;
  ts?: string;
}

export interface WindowRow {
  id: number;
  table_name: MappedTable;
  seq: number;
  lower_bound: Bound | null;
  upper_bound: Bound | null;
  expected_rows: number;
  status: 'pending' | 'queued' | 'running' | 'done' | 'failed';
  attempts: number;
}

/**
 * Puts a window's bounds into transaction-local settings with `set_config` (values bound as
 * parameters), and returns the WHERE clause that selects the window's rows on V1 or V2 from
 * those settings. The clause text comes from a fixed set of shapes, never from input.
 */
export async function bindWindow(
  client: PoolClient,
  table: MappedTable,
  window: Pick<WindowRow, 'lower_bound' | 'upper_bound'>,
  side: 'v1' | 'v2',
): Promise<string> {
  const m = MAPPINGS[table];
  const settings: [string, string][] = [];
  const parts: string[] = [];
  // Each bound is a scalar subquery, so it is read and converted once per query (an InitPlan),
  // not once per row: current_setting is only stable, and parsing a timestamp costs more than
  // the comparison it feeds.
  const bound = (name: string, b: Bound, op: '>=' | '<') => {
    if (m.windowKey === 'id') {
      settings.push([`migration.${name}_id`, b.id]);
      parts.push(`id COLLATE "C" ${op} (SELECT current_setting('migration.${name}_id') COLLATE "C")`);
    } else {
      settings.push([`migration.${name}_ts`, b.ts ?? ''], [`migration.${name}_id`, b.id]);
      const ts =
        side === 'v1'
          ? `(SELECT current_setting('migration.${name}_ts')::timestamp)`
          : `(SELECT current_setting('migration.${name}_ts')::timestamp AT TIME ZONE 'UTC')`;
      const key = side === 'v1' ? `("timestamp", id)` : `("timestamp", legacy_id)`;
      // The plain timestamp conjunct lets the planner use time-led indexes for the range.
      parts.push(`"timestamp" ${op === '>=' ? '>=' : '<='} ${ts}`);
      parts.push(`${key} ${op} (${ts}, (SELECT current_setting('migration.${name}_id')::bigint))`);
    }
  };
  if (window.lower_bound) bound('lo', window.lower_bound, '>=');
  if (window.upper_bound) bound('hi', window.upper_bound, '<');
  if (settings.length > 0) {
    await client.query(
      `SELECT ${settings.map((_, i) => `set_config($${2 * i + 1}, $${2 * i + 2}, true)`).join(', ')}`,
      settings.flat(),
    );
  }
  return parts.length > 0 ? parts.join(' AND ') : 'TRUE';
}

/** The qualified V1 or V2 table of a mapping. */
export function qualified(schema: string, table: string): string {
  return `${ident(schema)}.${ident(table)}`;
}

const WINDOW_COLUMNS = `id::int AS id, table_name, seq, lower_bound, upper_bound, expected_rows::int AS expected_rows, status, attempts`;

/** Loads windows by id, in key order; all of one table (a slice), else MigrationError. */
export async function loadWindows(v2: Pool, config: MigrationConfig, ids: number[]): Promise<WindowRow[]> {
  const { rows } = await v2.query<WindowRow>(
    `SELECT ${WINDOW_COLUMNS} FROM ${controlSchema(config)}.windows WHERE id = ANY($1::bigint[]) ORDER BY seq`,
    [ids],
  );
  if (rows.length !== ids.length) {
    const found = new Set(rows.map((r) => r.id));
    throw new WindowNotFoundError(ids.find((id) => !found.has(id)) ?? ids[0]);
  }
  const tables = new Set(rows.map((r) => r.table_name));
  if (tables.size > 1)
    throw new MigrationError(`A verification slice spans tables (${[...tables].join(', ')})`, { ids });
  return rows;
}

/** Loads one window by id (WindowNotFoundError when there is none). */
export async function loadWindow(v2: Pool, config: MigrationConfig, windowId: number): Promise<WindowRow> {
  return (await loadWindows(v2, config, [windowId]))[0];
}
