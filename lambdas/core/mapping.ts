import { createHash } from 'node:crypto';

/**
 * The V1 → V2 mapping of DESIGN.md, written once. Each V2 column has its V1 source as a SQL
 * expression (used by the backfill's COPY, the verifier's checksums and the repair) and as a
 * function of a V1 row (used by the backend's dual writer). A test checks that both agree on
 * generated data, so there is one mapping, in two notations, side by side.
 *
 * `current_setting('migration.tenant_id')` is how SQL sees the tenant: it is set with
 * `set_config($1, …)` so the value is always a bound parameter, never spliced into SQL.
 */

/** A V1 row as node-postgres returns it (camelCase keys, Date for timestamps, parsed JSON). */
export type V1Row = Record<string, unknown>;
/** A V2 row (snake_case keys). */
export type V2Row = Record<string, unknown>;

export interface MappingContext {
  tenantId: string;
}

export interface ColumnMapping {
  v2: string;
  /** SQL over the V1 table's columns (alias-free), yielding the V2 value. */
  sql: string;
  /** The same, for one V1 row. */
  fromV1: (row: V1Row, ctx: MappingContext) => unknown;
  /** How the verifier compares it. */
  kind: 'text' | 'json' | 'instant' | 'bigint';
  /**
   * True for a V1 row whose value node-postgres reads as null while V1 may hold either SQL NULL
   * (mapped to a default) or a JSON `null` (kept): `fromV1` can only give the default, and a V2
   * JSON `null` matches as well (used by shadow reads, which see rows as a backend does).
   */
  readsNullAmbiguously?: (row: V1Row) => boolean;
}

export type MappedTable = 'users' | 'devices' | 'telemetry' | 'alerts';

export interface TableMapping {
  v2Table: MappedTable;
  v1Table: 'users' | 'devices' | 'device_data' | 'alerts';
  /** How windows split the V1 table: text id ranges, or ("timestamp", id) ranges. */
  windowKey: 'id' | 'timestamp-id';
  /** The V2 conflict target that makes a copy idempotent. */
  conflict: string;
  /** The V1 column a V2 row points back to (V2 `id`, or `legacy_id` for telemetry). */
  v2Key: string;
  columns: ColumnMapping[];
}

export const TENANT_SQL = `current_setting('migration.tenant_id')`;

/** V1 timestamps are `timestamp without time zone` holding UTC. */
const instant = (column: string) => `(${column} AT TIME ZONE 'UTC')`;
/** A V1 instant as node-postgres reads it: a Date, or ±Infinity for ±infinity, kept as is. */
const asDate = (value: unknown): Date | number | null =>
  value === null || value === undefined
    ? null
    : value instanceof Date || typeof value === 'number'
      ? value
      : new Date(String(value));

const same = (v1: string, v2: string, kind: ColumnMapping['kind'] = 'text'): ColumnMapping => ({
  v2,
  sql: kind === 'instant' ? instant(`"${v1}"`) : `"${v1}"`,
  fromV1: kind === 'instant' ? (row) => asDate(row[v1]) : (row) => row[v1] ?? null,
  kind,
});

const tenant: ColumnMapping = {
  v2: 'tenant_id',
  sql: TENANT_SQL,
  fromV1: (_row, ctx) => ctx.tenantId,
  kind: 'text',
};

export const MAPPINGS: Record<MappedTable, TableMapping> = {
  users: {
    v2Table: 'users',
    v1Table: 'users',
    windowKey: 'id',
    conflict: '(id)',
    v2Key: 'id',
    columns: [
      same('id', 'id'),
      tenant,
      same('email', 'email'),
      same('name', 'name'),
      same('passwordHash', 'password_hash'),
      {
        v2: 'role',
        sql: `"role"::text`,
        fromV1: (row) => (row.role === null ? null : String(row.role)),
        kind: 'text',
      },
      same('createdAt', 'created_at', 'instant'),
      same('updatedAt', 'updated_at', 'instant'),
    ],
  },
  devices: {
    v2Table: 'devices',
    v1Table: 'devices',
    windowKey: 'id',
    conflict: '(id)',
    v2Key: 'id',
    columns: [
      same('id', 'id'),
      tenant,
      same('name', 'name'),
      same('status', 'status'),
      {
        v2: 'attributes',
        sql: `COALESCE("config", '{}'::jsonb)`,
        fromV1: (row) => row.config ?? {},
        readsNullAmbiguously: (row) => row.config === null,
        kind: 'json',
      },
      {
        v2: 'metadata',
        sql: `jsonb_build_object('migratedFrom', 'v1', 'originalType', "type")`,
        fromV1: (row) => ({ migratedFrom: 'v1', originalType: row.type }),
        kind: 'json',
      },
      same('ownerId', 'owner_id'),
      same('lastSeenAt', 'last_seen_at', 'instant'),
      same('createdAt', 'created_at', 'instant'),
      same('updatedAt', 'updated_at', 'instant'),
    ],
  },
  telemetry: {
    v2Table: 'telemetry',
    v1Table: 'device_data',
    windowKey: 'timestamp-id',
    conflict: '(legacy_id, "timestamp")',
    v2Key: 'legacy_id',
    columns: [
      tenant,
      same('deviceId', 'device_id'),
      same('timestamp', 'timestamp', 'instant'),
      { v2: 'metrics', sql: `"data"`, fromV1: (row) => row.data, kind: 'json' },
      same('protocol', 'protocol'),
      {
        v2: 'source',
        sql: `COALESCE("source", 'migrated')`,
        fromV1: (row) => row.source ?? 'migrated',
        kind: 'text',
      },
      { v2: 'quality', sql: `'GOOD'`, fromV1: () => 'GOOD', kind: 'text' },
      {
        v2: 'legacy_id',
        sql: `"id"`,
        fromV1: (row) => (row.id === null || row.id === undefined ? null : String(row.id)),
        kind: 'bigint',
      },
    ],
  },
  alerts: {
    v2Table: 'alerts',
    v1Table: 'alerts',
    windowKey: 'id',
    conflict: '(id)',
    v2Key: 'id',
    columns: [
      same('id', 'id'),
      tenant,
      same('deviceId', 'device_id'),
      same('severity', 'severity'),
      same('message', 'message'),
      same('status', 'status'),
      same('createdAt', 'created_at', 'instant'),
      same('resolvedAt', 'resolved_at', 'instant'),
    ],
  },
};

/** A V1 column's type, as the V1 contract (DESIGN.md, sql/v1/schema.sql) declares it. */
export type V1ColumnType = 'text' | 'enum' | 'jsonb' | 'timestamp' | 'bigint';

export interface V1Column {
  name: string;
  type: V1ColumnType;
  /** The SQL type a V1 value is read back into (on V2 too, where the enum is text). */
  sqlType: string;
  nullable: boolean;
  /** Whether V1 fills it when an insert leaves it out (a default or a sequence). */
  hasDefault: boolean;
  /** The values of an enum column. */
  values?: readonly string[];
  /** An enum column's type, in the V1 schema (what a value written back into V1 is cast to). */
  enumType?: string;
  /**
   * V1's default as SQL of the column's type, for rows written to V2 first (V2 the write
   * primary): what V1 would have filled in. Absent for the bigserial id, which comes from V1's
   * sequence itself.
   */
  defaultSql?: string;
}

/** The values of V1's `"UserRole"` enum. */
export const USER_ROLES = ['ADMIN', 'OPERATOR', 'VIEWER'] as const;

const v1 = (
  name: string,
  type: V1ColumnType,
  options: {
    nullable?: boolean;
    hasDefault?: boolean;
    values?: readonly string[];
    enumType?: string;
    defaultSql?: string;
  } = {},
): V1Column => ({
  name,
  type,
  sqlType: { text: 'text', enum: 'text', jsonb: 'jsonb', timestamp: 'timestamp(3)', bigint: 'bigint' }[type],
  nullable: options.nullable ?? false,
  hasDefault: options.hasDefault ?? false,
  ...(options.values ? { values: options.values } : {}),
  ...(options.enumType ? { enumType: options.enumType } : {}),
  ...(options.defaultSql ? { defaultSql: options.defaultSql } : {}),
});

/** V1's `DEFAULT CURRENT_TIMESTAMP` of a `timestamp(3)` holding UTC. */
const NOW_UTC = `(CURRENT_TIMESTAMP AT TIME ZONE 'UTC')::timestamp(3)`;

/**
 * Every column of the V1 tables the migration reads, in table order (the V1 contract). The
 * schema check of Phase 1, the client's validation of V1 writes and the single-row sync all
 * derive from this list.
 */
export const V1_COLUMNS: Record<MappedTable, readonly V1Column[]> = {
  users: [
    v1('id', 'text'),
    v1('email', 'text'),
    v1('name', 'text', { nullable: true }),
    v1('passwordHash', 'text'),
    v1('role', 'enum', {
      hasDefault: true,
      values: USER_ROLES,
      enumType: 'UserRole',
      defaultSql: `'VIEWER'`,
    }),
    v1('createdAt', 'timestamp', { hasDefault: true, defaultSql: NOW_UTC }),
    v1('updatedAt', 'timestamp'),
  ],
  devices: [
    v1('id', 'text'),
    v1('name', 'text'),
    v1('type', 'text'),
    v1('status', 'text', { hasDefault: true, defaultSql: `'OFFLINE'` }),
    v1('config', 'jsonb', { nullable: true }),
    v1('ownerId', 'text', { nullable: true }),
    v1('lastSeenAt', 'timestamp', { nullable: true }),
    v1('createdAt', 'timestamp', { hasDefault: true, defaultSql: NOW_UTC }),
    v1('updatedAt', 'timestamp'),
  ],
  telemetry: [
    v1('id', 'bigint', { hasDefault: true }),
    v1('deviceId', 'text'),
    v1('timestamp', 'timestamp'),
    v1('data', 'jsonb'),
    v1('protocol', 'text'),
    v1('source', 'text', { nullable: true }),
  ],
  alerts: [
    v1('id', 'text'),
    v1('deviceId', 'text'),
    v1('severity', 'text'),
    v1('message', 'text'),
    v1('status', 'text', { hasDefault: true, defaultSql: `'OPEN'` }),
    v1('createdAt', 'timestamp', { hasDefault: true, defaultSql: NOW_UTC }),
    v1('resolvedAt', 'timestamp', { nullable: true }),
  ],
};

/**
 * A V1 column as text that reads back into the same value on any server and session:
 * timestamps through their JSON form (ISO 8601 whatever the DateStyle, `BC` and ±infinity
 * included), JSON as canonical jsonb text (every digit of every number kept).
 */
export function v1ColumnAsText(column: V1Column): string {
  const q = `"${column.name}"`;
  return column.type === 'timestamp' ? `(to_json(${q}) #>> '{}')` : column.type === 'text' ? q : `${q}::text`;
}

/** Copy and foreign-key order: parents before children. */
export const TABLE_ORDER: MappedTable[] = ['users', 'devices', 'telemetry', 'alerts'];
/** The V1 column of a table that names its parent row (the foreign keys V2 keeps), and that parent. */
export const PARENT_OF: Partial<Record<MappedTable, { column: string; table: MappedTable }>> = {
  devices: { column: 'ownerId', table: 'users' },
  telemetry: { column: 'deviceId', table: 'devices' },
  alerts: { column: 'deviceId', table: 'devices' },
};
/** Stages of the backfill: a stage starts once the one before it is complete. */
export const STAGES: MappedTable[][] = [['users'], ['devices'], ['telemetry', 'alerts']];

/**
 * The extra V1 columns a table's copy needs beyond the mapped ones (devices: `type`, which
 * chooses the device template).
 */
export const EXTRA_V1_COLUMNS: Partial<Record<MappedTable, { name: string; sql: string }[]>> = {
  devices: [{ name: 'type', sql: `"type"` }],
};

/** The deterministic id of the default template for a tenant and V1 device type. */
export function templateIdFor(tenantId: string, type: string): string {
  return `tpl_${createHash('md5').update(`${tenantId}:${type}`).digest('hex')}`;
}
export const TEMPLATE_ID_SQL = (tenantSql: string, typeSql: string) =>
  `'tpl_' || md5(${tenantSql} || ':' || ${typeSql})`;

/** Maps one V1 row to its V2 row (dual writer, repair of single rows). */
export function mapRow(table: MappedTable, row: V1Row, ctx: MappingContext): V2Row {
  const out: V2Row = {};
  for (const column of MAPPINGS[table].columns) out[column.v2] = column.fromV1(row, ctx);
  if (table === 'devices') out.template_id = templateIdFor(ctx.tenantId, String(row.type));
  return out;
}

/**
 * The expressions that project a V1 row into V2 columns (plus the extra columns), in
 * `v2Columns` order. The tenant is `migration.tenant_id` unless another SQL expression (a bound
 * parameter) is given.
 */
export function v1ProjectionList(table: MappedTable, tenantSql = TENANT_SQL): string[] {
  const m = MAPPINGS[table];
  return [
    ...m.columns.map((c) => (c.sql === TENANT_SQL ? tenantSql : c.sql)),
    ...(EXTRA_V1_COLUMNS[table] ?? []).map((c) => c.sql),
  ];
}

/** The SELECT list that projects V1 rows into V2 columns (plus the extra columns). */
export function v1Projection(table: MappedTable): string {
  return v1ProjectionList(table).join(', ');
}

/** The V2 column names, in projection order (plus the extra columns). */
export function v2Columns(table: MappedTable): string[] {
  return [...MAPPINGS[table].columns.map((c) => c.v2), ...(EXTRA_V1_COLUMNS[table] ?? []).map((c) => c.name)];
}
