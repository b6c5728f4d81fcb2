import { z } from 'zod';
import { describeIssues } from '../lambdas/core/config';
import { InvalidInputError } from '../lambdas/core/errors';
import { V1_COLUMNS, type MappedTable, type V1Column, type V1ColumnType } from '../lambdas/core/mapping';
import { bigintId, parseId } from '../lambdas/core/sync/v1-read';

export { parseId };

/** The tables the backend writes, named as in V2 (`telemetry` is V1's `device_data`). */
export type ClientTable = MappedTable;
export const CLIENT_TABLES = [
  'users',
  'devices',
  'telemetry',
  'alerts',
] as const satisfies readonly MappedTable[];

/** A V1 `users` row, with Prisma's column names. */
export interface V1User {
  id: string;
  email: string;
  name: string | null;
  passwordHash: string;
  role: 'ADMIN' | 'OPERATOR' | 'VIEWER';
  createdAt: Date;
  updatedAt: Date;
}

/** A V1 `devices` row. */
export interface V1Device {
  id: string;
  name: string;
  type: string;
  status: string;
  config: unknown;
  ownerId: string | null;
  lastSeenAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
}

/** A V1 `device_data` row (`id` is a bigserial, returned as a decimal string). */
export interface V1DeviceData {
  id: string;
  deviceId: string;
  timestamp: Date;
  data: unknown;
  protocol: string;
  source: string | null;
}

/** A V1 `alerts` row. */
export interface V1Alert {
  id: string;
  deviceId: string;
  severity: string;
  message: string;
  status: string;
  createdAt: Date;
  resolvedAt: Date | null;
}

/** The V1 row type of each table. */
export interface V1Rows {
  users: V1User;
  devices: V1Device;
  telemetry: V1DeviceData;
  alerts: V1Alert;
}

/** A timestamp as a Date or an ISO 8601 string with a zone (`Z` or an offset). */
export type TimestampInput = Date | string;
type Inputs<T> = {
  [K in keyof T]: T[K] extends Date
    ? TimestampInput
    : T[K] extends Date | null
      ? TimestampInput | null
      : T[K];
};

/** What an insert takes: the columns without a database default are required. */
export type V1Insert<T extends ClientTable> = {
  users: Inputs<Pick<V1User, 'id' | 'email' | 'passwordHash' | 'updatedAt'>> &
    Partial<Inputs<Pick<V1User, 'name' | 'role' | 'createdAt'>>>;
  devices: Inputs<Pick<V1Device, 'id' | 'name' | 'type' | 'updatedAt'>> &
    Partial<Inputs<Omit<V1Device, 'id' | 'name' | 'type' | 'updatedAt'>>>;
  telemetry: Inputs<Pick<V1DeviceData, 'deviceId' | 'timestamp' | 'data' | 'protocol'>> &
    Partial<Inputs<Pick<V1DeviceData, 'source'>>> & { id?: string | number | bigint };
  alerts: Inputs<Pick<V1Alert, 'id' | 'deviceId' | 'severity' | 'message'>> &
    Partial<Inputs<Pick<V1Alert, 'status' | 'createdAt' | 'resolvedAt'>>>;
}[T];

/** What an update takes: any columns but `id`. */
export type V1Patch<T extends ClientTable> = Partial<Inputs<Omit<V1Rows[T], 'id'>>>;

/** A row id: text ids for users, devices and alerts; the bigserial id (digits) for telemetry. */
export type RowId = string | number | bigint;

// ---------------------------------------------------------------------------------------------
// Validation: the only column names that ever reach SQL are the keys of these schemas.

const text = z.string();
const timestamp = z
  .union([z.date(), z.iso.datetime({ offset: true })])
  .transform((v) => (v instanceof Date ? v : new Date(v)))
  .refine((d) => !Number.isNaN(d.getTime()), 'must be a valid date')
  // V1 columns are `timestamp without time zone` holding UTC; the `Z` of the ISO form is
  // ignored by PostgreSQL for that type, so the stored wall time is the UTC one.
  .transform((d) => d.toISOString());
const json = z.json().transform((v) => JSON.stringify(v));

type ColumnSchemas = Record<string, { schema: z.ZodType<unknown>; required: boolean }>;

const BY_TYPE: Record<V1ColumnType, (column: V1Column) => z.ZodType<unknown>> = {
  text: () => text,
  enum: (column) => z.enum(column.values as [string, ...string[]]),
  jsonb: () => json,
  timestamp: () => timestamp,
  bigint: () => bigintId,
};

/**
 * Each table's columns as the V1 contract in mapping.ts has them: the type's schema, nullable
 * where V1 allows NULL, required in an insert unless V1 has a default (or allows NULL).
 */
const COLUMNS = Object.fromEntries(
  CLIENT_TABLES.map((t) => [
    t,
    Object.fromEntries(
      V1_COLUMNS[t].map((c) => {
        const schema = BY_TYPE[c.type](c);
        return [
          c.name,
          { schema: c.nullable ? schema.nullable() : schema, required: !c.nullable && !c.hasDefault },
        ];
      }),
    ),
  ]),
) as Record<ClientTable, ColumnSchemas>;

const insertSchemas = Object.fromEntries(
  CLIENT_TABLES.map((t) => [
    t,
    z
      .object(
        Object.fromEntries(
          Object.entries(COLUMNS[t]).map(([name, c]) => [name, c.required ? c.schema : c.schema.optional()]),
        ),
      )
      .strict(),
  ]),
) as unknown as Record<ClientTable, z.ZodType<Record<string, unknown>>>;

const patchSchemas = Object.fromEntries(
  CLIENT_TABLES.map((t) => [
    t,
    z
      .object(
        Object.fromEntries(
          Object.entries(COLUMNS[t])
            .filter(([name]) => name !== 'id')
            .map(([name, c]) => [name, c.schema.optional()]),
        ),
      )
      .strict()
      .refine((p) => Object.values(p).some((v) => v !== undefined), 'must name at least one column'),
  ]),
) as unknown as Record<ClientTable, z.ZodType<Record<string, unknown>>>;

const tableSchema = z.enum(CLIENT_TABLES);

/** Checks a table name from the caller; throws InvalidInputError for anything else. */
export function parseTable(table: unknown): ClientTable {
  const parsed = tableSchema.safeParse(table);
  if (!parsed.success) throw new InvalidInputError('table', describeIssues(parsed.error));
  return parsed.data;
}

function parseWith(
  schema: z.ZodType<Record<string, unknown>>,
  what: string,
  input: unknown,
): [string, unknown][] {
  const parsed = schema.safeParse(input);
  if (!parsed.success) throw new InvalidInputError(what, describeIssues(parsed.error));
  return Object.entries(parsed.data).filter(([, v]) => v !== undefined);
}

/** Validates a row to insert; returns (column, SQL parameter value) pairs. */
export function parseInsert(table: ClientTable, row: unknown): [string, unknown][] {
  return parseWith(insertSchemas[table], `${table} row`, row);
}

/** Validates an update's columns; returns (column, SQL parameter value) pairs. */
export function parsePatch(table: ClientTable, patch: unknown): [string, unknown][] {
  return parseWith(patchSchemas[table], `${table} patch`, patch);
}
