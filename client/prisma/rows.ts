import { V1_COLUMNS } from '../../lambdas/core/mapping';
import type { ClientTable } from '../v1-rows';

/** The shapes the extension handles: a Prisma row or argument object, a model delegate, a client. */
export type Row = Record<string, unknown>;
export type Delegate = Record<string, (args: unknown) => Promise<unknown>>;
export type ClientObject = Record<string, unknown> & {
  $transaction(arg: unknown, options?: unknown): Promise<unknown>;
};

export const isObject = (v: unknown): v is Row => typeof v === 'object' && v !== null && !Array.isArray(v);
export const asArray = (v: unknown): unknown[] => (Array.isArray(v) ? v : v === undefined ? [] : [v]);
/** A value a row can be found back by in a `where` (JSON values are not compared). */
export const isComparable = (v: unknown) =>
  typeof v === 'string' ||
  typeof v === 'number' ||
  typeof v === 'boolean' ||
  typeof v === 'bigint' ||
  v instanceof Date;

/** Every V1 column (= Prisma field) of a table, from the mapping's list. */
export const v1Fields = (table: ClientTable): string[] => V1_COLUMNS[table].map((c) => c.name);

/** The V1 columns a nested create can be found back by: all but JSON ones. */
export const comparableFields = (table: ClientTable): string[] =>
  V1_COLUMNS[table].filter((c) => c.type !== 'jsonb').map((c) => c.name);

/** A V1 row as the DualWriter takes it, when Prisma returned every column (else undefined). */
export function wholeRow(table: ClientTable, row: unknown): Row | undefined {
  if (!isObject(row)) return undefined;
  const columns = v1Fields(table);
  if (!columns.every((c) => c in row)) return undefined;
  const out = Object.fromEntries(columns.map((c) => [c, row[c]]));
  if (table === 'telemetry') out.id = String(out.id);
  return out;
}

/** Makes sure a result carries `id`: returns the args to run and whether to take it out again. */
export function withId(args: Row): { args: Row; strip: boolean } {
  if (isObject(args.select) && args.select.id !== true) {
    return { args: { ...args, select: { ...args.select, id: true } }, strip: true };
  }
  if (isObject(args.omit) && args.omit.id === true) {
    return { args: { ...args, omit: { ...args.omit, id: false } }, strip: true };
  }
  return { args, strip: false };
}

export function stripId<R>(result: R, strip: boolean): R {
  if (!strip) return result;
  for (const row of asArray(result)) if (isObject(row)) delete row.id;
  return result;
}
