import type { Pool, PoolClient } from 'pg';
import { ident } from '../db';
import { MAPPINGS, V1_COLUMNS, v1ProjectionList, type MappedTable } from '../mapping';
import { inverseProjection, v2SourceColumns, v2SourceSql, type V2Source } from '../mapping-inverse';
import { LegacyIdUnavailableError } from '../write-switch-errors';
import { V2RowSync } from './row-sync';
import { V1_QUERY_TYPES, v1Table } from './v1-read';

/**
 * Writes of V1-shaped rows to V2 first, for the time V2 is the write primary: the backend keeps
 * calling the DualWriter with V1's rows, and each write goes to V2 under the forward mapping
 * (the backfill's SQL projection, over the V1 row built in SQL from the given values and V1's
 * defaults), V2's constraints deciding as V1's would have. The caller gets the V1 row as V1
 * will hold it: V2's row under the inverse mapping, computed by the same statement. The V2 row
 * comes back as its source text too, for the mirror to V1 (`syncRowToV1`).
 */

/** What a V2-first write returns: the V1-shaped row (node-postgres values) and the V2 source. */
export interface V2Written {
  row: Record<string, unknown>;
  source: V2Source;
}

/** The column of a V2-first write's result that carries the V2 row's source text. */
const SOURCE = '__iot_v2_migration_v2_source';

/** V1 ids reserved per call of V1's sequence. @default 100 */
export const DEFAULT_LEGACY_ID_BLOCK = 100;

/**
 * Hands out V1 ids (`device_data.id`) for telemetry rows written to V2 first, from V1's own
 * sequence: ids are reserved in blocks with `nextval` (never `setval`), so they are unique on
 * both sides by construction, whoever else writes V1 meanwhile, and V1's sequence stays ahead
 * of every id in use (a rollback to V1 needs no sequence fix). The next block is reserved when
 * half of the current one is used, so a V1 that is briefly unreachable does not stop telemetry
 * inserts; one that stays unreachable for longer than a block lasts does
 * (LegacyIdUnavailableError).
 */
export class LegacyIdAllocator {
  private ids: string[] = [];
  private refill: Promise<void> | undefined;
  private lastError: unknown;

  constructor(
    private readonly v1: Pick<Pool, 'query'>,
    private readonly v1Schema: string,
    private readonly blockSize = DEFAULT_LEGACY_ID_BLOCK,
  ) {}

  /** The next `count` ids, as decimal text. */
  async take(count: number): Promise<string[]> {
    while (this.ids.length < count) {
      await this.reserve(Math.max(this.blockSize, count - this.ids.length));
      if (this.ids.length < count)
        throw new LegacyIdUnavailableError(describe(this.lastError), { cause: this.lastError });
    }
    const taken = this.ids.splice(0, count);
    if (this.ids.length < this.blockSize / 2) void this.reserve(this.blockSize).catch(() => undefined);
    return taken;
  }

  private reserve(count: number): Promise<void> {
    this.refill ??= (async () => {
      try {
        const { rows } = await this.v1.query<{ id: string }>(
          `SELECT nextval(pg_get_serial_sequence($1, 'id'))::text AS id FROM generate_series(1, $2)`,
          [`${ident(this.v1Schema)}.${ident(MAPPINGS.telemetry.v1Table)}`, count],
        );
        this.ids.push(...rows.map((r) => r.id));
        this.lastError = undefined;
      } catch (error) {
        this.lastError = error;
      } finally {
        this.refill = undefined;
      }
    })();
    return this.refill;
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : 'V1 gave no ids';
}

/**
 * The V2-first statements. Every identifier comes from the mapping or the configured schema,
 * quoted; every value is a parameter.
 */
export class V2PrimaryWrites {
  private readonly templates: V2RowSync;

  constructor(
    private readonly v2: Pool,
    private readonly schema: string,
    private readonly tenantId: string,
  ) {
    this.templates = new V2RowSync(v2, schema, tenantId);
  }

  private qualified(table: string): string {
    return `${ident(this.schema)}.${ident(table)}`;
  }

  /**
   * Inserts a V1 row (validated (column, value) pairs, telemetry with its id) into V2; V1's
   * defaults fill the columns not given. V2's errors are the caller's (a duplicate id, a
   * missing parent), as V1's were before the switch.
   */
  async insert(table: MappedTable, entries: [string, unknown][]): Promise<V2Written> {
    const given = new Map(entries);
    const values: unknown[] = [this.tenantId];
    const v1Columns = V1_COLUMNS[table].map((c) => {
      if (given.has(c.name)) {
        values.push(given.get(c.name));
        return `$${values.length}::${c.sqlType} AS ${ident(c.name)}`;
      }
      if (c.defaultSql) return `${c.defaultSql}::${c.sqlType} AS ${ident(c.name)}`;
      return `NULL::${c.sqlType} AS ${ident(c.name)}`;
    });
    if (table === 'devices') await this.templates.templateFor(String(given.get('type')));
    const { projected, list } = this.projection(table, '$1::text');
    const sql = `WITH v1 AS (SELECT ${v1Columns.join(', ')}),
      v2 AS (SELECT ${list} FROM v1),
      written AS (INSERT INTO ${this.qualified(MAPPINGS[table].v2Table)} AS v2row (${projected.map(ident).join(', ')})
                  SELECT ${projected.map(ident).join(', ')} FROM v2
                  RETURNING ${this.returning(table)})
      SELECT ${inverseProjection(table)}, ${ident(SOURCE)} FROM written`;
    return (await this.run(this.v2, sql, values))!;
  }

  /**
   * Updates the given V1 columns of a row in V2: the row as V1 holds it (V2's row under the
   * inverse mapping) with the patch applied, mapped forward again. Null when V2 has no such row
   * of the tenant. A telemetry row whose time changes is deleted and inserted again in one
   * statement (TimescaleDB does not move a row between chunks on UPDATE).
   */
  async update(table: MappedTable, id: string, entries: [string, unknown][]): Promise<V2Written | null> {
    const patch = new Map(entries);
    const target = this.qualified(MAPPINGS[table].v2Table);
    const values: unknown[] = [this.tenantId, id];
    const match = await this.keyMatch(table, id, values);
    if (match === null) return null;
    if (table === 'devices' && patch.has('type')) await this.templates.templateFor(String(patch.get('type')));
    const v1Columns = V1_COLUMNS[table].map((c) => {
      if (!patch.has(c.name)) return `old.${ident(c.name)}`;
      values.push(patch.get(c.name));
      return `$${values.length}::${c.sqlType} AS ${ident(c.name)}`;
    });
    const { projected, list } = this.projection(table, '$1::text');
    const moves = table === 'telemetry' && patch.has('timestamp');
    const read = moves
      ? `DELETE FROM ${target} v2row WHERE ${match} RETURNING ${v2SourceColumns(table, this.schema)}`
      : `SELECT ${v2SourceColumns(table, this.schema)} FROM ${target} v2row WHERE ${match} FOR UPDATE OF v2row`;
    const write = moves
      ? `INSERT INTO ${target} AS v2row (${projected.map(ident).join(', ')})
           SELECT ${projected.map(ident).join(', ')} FROM v2`
      : `UPDATE ${target} AS v2row SET (${projected.map(ident).join(', ')}) = (SELECT ${projected.map(ident).join(', ')} FROM v2)
          WHERE ${match}`;
    const sql = `WITH current AS (${read}),
      old AS (SELECT ${inverseProjection(table)} FROM current),
      v1 AS (SELECT ${v1Columns.join(', ')} FROM old),
      v2 AS (SELECT ${list} FROM v1),
      written AS (${write} RETURNING ${this.returning(table)})
      SELECT ${inverseProjection(table)}, ${ident(SOURCE)} FROM written`;
    return this.run(this.v2, sql, values);
  }

  /** Deletes a row from V2 (V2's cascades follow V1's); returns it as V1 held it, or null. */
  async remove(table: MappedTable, id: string): Promise<V2Written | null> {
    const values: unknown[] = [this.tenantId, id];
    const match = await this.keyMatch(table, id, values);
    if (match === null) return null;
    const sql = `WITH written AS (DELETE FROM ${this.qualified(MAPPINGS[table].v2Table)} v2row WHERE ${match}
                                  RETURNING ${this.returning(table)})
      SELECT ${inverseProjection(table)}, ${ident(SOURCE)} FROM written`;
    return this.run(this.v2, sql, values);
  }

  /**
   * The predicate of the row's V2 key ($1 the tenant, $2 the id), or null when V2 has none.
   * Telemetry names its whole key (tenant, device, time, legacy_id), looked up first, so that
   * on TimescaleDB only the rows' own compressed batches are touched.
   */
  private async keyMatch(table: MappedTable, id: string, values: unknown[]): Promise<string | null> {
    if (table !== 'telemetry') return `v2row.${ident(MAPPINGS[table].v2Key)} = $2 AND v2row.tenant_id = $1`;
    const { rows } = await this.v2.query<{ device_id: string; ts: string }>(
      `SELECT device_id, "timestamp"::text AS ts FROM ${this.qualified('telemetry')} WHERE legacy_id = $1 AND tenant_id = $2`,
      [id, this.tenantId],
    );
    if (rows.length === 0) return null;
    values.push(
      rows.map((r) => r.device_id),
      rows.map((r) => r.ts),
    );
    const n = values.length;
    return `v2row.legacy_id = $2 AND v2row.tenant_id = $1 AND v2row.device_id = ANY($${n - 1}::text[]) AND v2row."timestamp" = ANY($${n}::timestamptz[])`;
  }

  /** The forward projection of the `v1` CTE's row, with the tenant and (devices) the template. */
  private projection(table: MappedTable, tenant: string): { projected: string[]; list: string } {
    const m = MAPPINGS[table];
    const list = v1ProjectionList(table, tenant)
      .slice(0, m.columns.length)
      .map((expr, i) => `${expr} AS ${ident(m.columns[i].v2)}`);
    const projected = m.columns.map((c) => c.v2);
    if (table === 'devices') {
      list.push(
        `(SELECT t.id FROM ${this.qualified('device_templates')} t WHERE t.tenant_id = ${tenant} AND t.device_type = "type") AS template_id`,
      );
      projected.push('template_id');
    }
    return { projected, list: list.join(', ') };
  }

  /** What a V2-first statement returns: the row's V2 source, as columns and as text. */
  private returning(table: MappedTable): string {
    return `${v2SourceColumns(table, this.schema)}, ${v2SourceSql(table, this.schema)} AS ${ident(SOURCE)}`;
  }

  private async run(db: Pool | PoolClient, sql: string, values: unknown[]): Promise<V2Written | null> {
    const { rows } = await db.query({ text: sql, values, types: V1_QUERY_TYPES });
    if (rows.length === 0) return null;
    const { [SOURCE]: source, ...row } = rows[0] as Record<string, unknown>;
    return { row, source: source as V2Source };
  }
}

export { v1Table };
