import { createHash } from 'node:crypto';
import type { MigrationConfig } from './config';
import { ident } from './db';
import { MAPPINGS, TENANT_SQL, type ColumnMapping, type MappedTable } from './mapping';
import { qualified } from './windows';

/**
 * The row digest that Phase 3 sums, on both sides: V1 projected through the mapping, V2 as
 * stored.
 *
 * Each column is hashed with its type's hash function (jsonb hashes its canonical binary
 * form, so key order and whitespace do not matter). A row's digest chains its columns: each
 * column's hash is seeded with the hash of the columns before it, in a fixed order, so the
 * digest binds every value to its row and its column (values swapped between columns or
 * between rows show). A row with a NULL column (a strict hash gives NULL) takes instead the
 * XOR of its columns' hashes, each seeded by its position, with a fixed number per position
 * for a NULL. A window's checksum is the sum of its rows' digests (numeric, no overflow), so
 * equal multisets of rows give equal checksums and a missing, extra, duplicated or changed
 * row changes it.
 *
 * Instants hash as the `timestamp` holding their UTC wall time (the count of microseconds
 * since 2000-01-01 UTC that both timestamp types store), so no session time zone enters a
 * digest: V1's `timestamp` columns hold UTC and are hashed as stored; V2 converts with
 * `AT TIME ZONE 'UTC'`, which is immutable. Columns that are one value for every V1 row (the
 * tenant, a literal such as quality) come first in the chain, so V1 hashes them once per
 * query (an InitPlan), not per row.
 *
 * V2 telemetry (native partitions or hypertable) stores each row's digest in a generated column
 * ({@link STORED_DIGEST}), computed by PostgreSQL from the row's stored values whenever the
 * row is written or updated, so verification sums it instead of hashing a million rows again.
 */

/** A column as the verifier compares it: the V1 expression and the V2 expression, same type. */
export interface VerifiedColumn {
  name: string;
  kind: ColumnMapping['kind'];
  v1: string;
  v2: string;
}

export function verifiedColumns(
  table: MappedTable,
  config?: Pick<MigrationConfig, 'schemas'>,
): VerifiedColumn[] {
  const columns: VerifiedColumn[] = MAPPINGS[table].columns.map((c) => ({
    name: c.v2,
    kind: c.kind,
    v1: c.sql,
    v2: ident(c.v2),
  }));
  if (table === 'devices') {
    if (!config) throw new Error('the devices digest needs the configured schemas');
    // The template must be the tenant's template of the V1 device type.
    columns.push({
      name: 'template_id',
      kind: 'text',
      v1: `"type"`,
      v2: `(SELECT t.device_type FROM ${qualified(config.schemas.v2, 'device_templates')} t
             WHERE t.id = template_id AND t.tenant_id = ${qualified(config.schemas.v2, 'devices')}.tenant_id)`,
    });
  }
  return columns;
}

export const typed = (kind: ColumnMapping['kind'], expr: string) =>
  kind === 'json'
    ? `(${expr})::jsonb`
    : kind === 'instant'
      ? `(${expr})::timestamptz`
      : kind === 'bigint'
        ? `(${expr})::bigint`
        : `(${expr})::text COLLATE "C"`;

const HASH: Record<ColumnMapping['kind'], string> = {
  json: 'jsonb_hash_extended',
  instant: 'timestamp_hash_extended',
  bigint: 'hashint8extended',
  text: 'hashtextextended',
};

/** A V1 instant mapped as `("column" AT TIME ZONE 'UTC')`: the column holds the UTC wall time. */
const UTC_COLUMN = /^\(("(?:[^"]|"")+") AT TIME ZONE 'UTC'\)$/;

/** True for a V1 expression that is one value for every row (the tenant, a literal). */
const isConstant = (expr: string) => expr === TENANT_SQL || /^'(?:[^']|'')*'$/.test(expr);

/** A column's hash with the given seed (an SQL expression), NULL when the value is. */
function hashColumn(column: VerifiedColumn, side: 'v1' | 'v2', seed: string): string {
  if (column.kind === 'instant') {
    const utc = side === 'v1' ? UTC_COLUMN.exec(column.v1) : null;
    // A V1 `timestamp` as stored is the UTC wall time, whose value is the instant's.
    const wall = utc
      ? `${utc[1]}::timestamp`
      : `(${typed('instant', side === 'v1' ? column.v1 : column.v2)} AT TIME ZONE 'UTC')`;
    return `timestamp_hash_extended(${wall}, ${seed})`;
  }
  return `${HASH[column.kind]}(${typed(column.kind, side === 'v1' ? column.v1 : column.v2)}, ${seed})`;
}

/** One column's own hash (seed 0), as the verifier compares a column of two rows. */
export const columnHash = (column: VerifiedColumn, side: 'v1' | 'v2'): string =>
  hashColumn(column, side, '0');

/**
 * One column's value as text for a report: instants in ISO 8601 (UTC in the verifier's
 * sessions, `BC` and ±infinity included), JSON as canonical jsonb text, every digit kept.
 */
export function columnText(column: VerifiedColumn, side: 'v1' | 'v2'): string {
  const value = typed(column.kind, side === 'v1' ? column.v1 : column.v2);
  return column.kind === 'instant' ? `(to_json(${value}) #>> '{}')` : `(${value})::text`;
}

/** A row's digest as an SQL expression over the side's table (see the comment at the top). */
export function rowDigest(
  table: MappedTable,
  side: 'v1' | 'v2',
  config?: Pick<MigrationConfig, 'schemas'>,
): string {
  const columns = verifiedColumns(table, config).map((c, i) => ({
    c,
    seed: i + 1,
    constant: isConstant(c.v1),
  }));
  const xor: string[] = [];
  const once: string[] = [];
  for (const { c, seed, constant } of columns)
    (side === 'v1' && constant ? once : xor).push(
      `coalesce(${hashColumn(c, side, String(seed))}, ${seed * 7919 + 17})`,
    );
  if (once.length > 0) xor.push(`(SELECT ${once.join(' # ')})`);
  const order = [
    ...columns.filter((x) => x.constant),
    ...columns.filter((x) => !x.constant && x.c.kind === 'instant'),
    ...columns.filter((x) => !x.constant && x.c.kind !== 'instant'),
  ];
  let chain = '0';
  order.forEach((x, i) => {
    chain = hashColumn(x.c, side, chain);
    if (side === 'v1' && x.constant && !order[i + 1]?.constant) chain = `(SELECT ${chain})`;
  });
  return `coalesce(${chain}, ${xor.join(' # ')})`;
}

/**
 * The version of a digest expression: a hash of its SQL text, so that any change to the
 * expression (a mapping change, a hash change) gives stored digests another version, which
 * the verifier then does not trust.
 */
export const digestVersion = (expression: string): string =>
  `iot-v2-migration row digest ${createHash('sha256').update(expression).digest('hex').slice(0, 16)}`;

/** The generated column's expression: every function in it is immutable. */
export const storedDigestExpression = () => rowDigest('telemetry', 'v2');

/**
 * The stored digest of V2 telemetry: a generated column whose expression is
 * `rowDigest('telemetry', 'v2')`. Its comment carries {@link STORED_DIGEST.version}, derived
 * from that expression; the verifier sums the column only when the comment names the current
 * version (an older expression would not match V1's digests), else it hashes the rows itself.
 */
export const STORED_DIGEST = {
  table: 'telemetry' as const,
  column: 'row_digest',
  version: digestVersion(storedDigestExpression()),
};
