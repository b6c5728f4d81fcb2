import type { Pool } from 'pg';
import { z } from 'zod';
import { configSchema, DEFAULT_TENANT, describeIssues } from '../config';
import { ident, isTransient } from '../db';
import { ConfigError, V2TenantMismatchError } from '../errors';
import { MAPPINGS, templateIdFor, V1_COLUMNS, v1ProjectionList, type MappedTable } from '../mapping';
import type { V1Source } from './v1-read';

/** The device and time of V2 telemetry rows, as parallel arrays (times as text). */
interface TelemetryKeys {
  devices: string[];
  timestamps: string[];
}

/**
 * The predicate of V2 telemetry rows by their whole key: `legacy_id` ($1), tenant ($2), and the
 * devices ($3) and times ($4) found for them, so that TimescaleDB decompresses only their
 * batches (see `telemetryKeys`).
 */
const TELEMETRY_KEY_MATCH = `legacy_id = $1 AND tenant_id = $2 AND device_id = ANY($3::text[]) AND "timestamp" = ANY($4::timestamptz[])`;

/** The description of default templates, as the backfill writes it. */
const TEMPLATE_DESCRIPTION = 'Default template created by the V1 migration';

/**
 * Writes single V1 rows to V2 under the one mapping, the backfill's SQL projection itself
 * (`v1Projection`): the V1 row arrives as its source text (`readV1Source`), is read back into
 * V1's column types on V2 and projected there, so a row written here is the row a backfill of
 * it would write. Upserts always store the given (newest) V1 state; deletes go by key. Shared
 * by the dual writer and the repair worker. Every identifier comes from the mapping or the
 * configured schema, quoted; every value is a parameter.
 */
export class V2RowSync {
  private readonly templates = new Map<string, string>();
  private readonly statements = new Map<string, string>();

  constructor(
    private readonly v2: Pick<Pool, 'query'>,
    private readonly schema: string,
    private readonly tenantId: string,
  ) {}

  private qualified(table: string): string {
    return `${ident(this.schema)}.${ident(table)}`;
  }

  /**
   * Upserts the V1 row given as its source text. With `replaceStale` (telemetry only), a V2
   * row of the same `legacy_id` under another timestamp (the V1 row's timestamp was changed)
   * is deleted in the same statement.
   */
  async upsert(table: MappedTable, source: V1Source, options: { replaceStale: boolean }): Promise<void> {
    const m = MAPPINGS[table];
    const columns = V1_COLUMNS[table];
    if (source.length !== columns.length)
      throw new Error(`A ${table} source row has ${source.length} values, not ${columns.length}`);
    const id = source[columns.findIndex((c) => c.name === 'id')];
    const type = table === 'devices' ? source[columns.findIndex((c) => c.name === 'type')] : null;
    const values: unknown[] = [...source, this.tenantId];
    if (table === 'devices') values.push(await this.templateFor(String(type)));
    let replaceStale = false;
    if (options.replaceStale && table === 'telemetry') {
      // The rows of this legacy_id V2 holds now, by whole key: the statement deletes those at
      // another time than the new row's.
      const held = await this.telemetryKeys(String(id));
      replaceStale = held.devices.length > 0;
      if (replaceStale) values.push(held.devices, held.timestamps);
    }
    try {
      const { rowCount } = await this.v2.query(this.upsertSql(table, replaceStale), values);
      if (rowCount !== 1) throw new V2TenantMismatchError(m.v2Table, String(id), this.tenantId);
    } catch (error) {
      // A template deleted or replaced behind the cache must be resolved again next time.
      if (table === 'devices') this.templates.delete(String(type));
      throw error;
    }
  }

  /** Deletes the V2 row of a V1 id (telemetry: every row of that `legacy_id`); returns how many. */
  async remove(table: MappedTable, id: string): Promise<number> {
    const m = MAPPINGS[table];
    if (table === 'telemetry') {
      const keys = await this.telemetryKeys(id);
      if (keys.devices.length === 0) return 0;
      const { rowCount } = await this.v2.query(
        `DELETE FROM ${this.qualified(m.v2Table)} WHERE ${TELEMETRY_KEY_MATCH}`,
        [id, this.tenantId, keys.devices, keys.timestamps],
      );
      return rowCount ?? 0;
    }
    const { rowCount } = await this.v2.query(
      `DELETE FROM ${this.qualified(m.v2Table)} WHERE ${ident(m.v2Key)} = $1 AND tenant_id = $2`,
      [id, this.tenantId],
    );
    return rowCount ?? 0;
  }

  /**
   * The device and time of every V2 telemetry row of a `legacy_id`: what a statement that
   * changes them must name. On TimescaleDB a compressed chunk is decompressed for a change only
   * where the predicate names its segment (tenant, device) and time; a predicate on `legacy_id`
   * alone may decompress every batch of the tenant, beyond
   * `timescaledb.max_tuples_decompressed_per_dml_transaction`. Finding the keys is a read, which
   * that limit does not bound. Times go as text, so no precision is lost on the way.
   */
  private async telemetryKeys(legacyId: string): Promise<TelemetryKeys> {
    const { rows } = await this.v2.query<{ device_id: string; ts: string }>(
      `SELECT device_id, "timestamp"::text AS ts FROM ${this.qualified('telemetry')} WHERE legacy_id = $1 AND tenant_id = $2`,
      [legacyId, this.tenantId],
    );
    return { devices: rows.map((r) => r.device_id), timestamps: rows.map((r) => r.ts) };
  }

  /** The template of (tenant, device type): the default one is created first if missing. Cached. */
  async templateFor(type: string): Promise<string> {
    const cached = this.templates.get(type);
    if (cached !== undefined) return cached;
    const templates = this.qualified('device_templates');
    await this.v2.query(
      `INSERT INTO ${templates} (id, tenant_id, device_type, name, description) VALUES ($1, $2, $3, $3, $4)
       ON CONFLICT DO NOTHING`,
      [templateIdFor(this.tenantId, type), this.tenantId, type, TEMPLATE_DESCRIPTION],
    );
    const { rows } = await this.v2.query<{ id: string }>(
      `SELECT id FROM ${templates} WHERE tenant_id = $1 AND device_type = $2`,
      [this.tenantId, type],
    );
    if (rows.length === 0) throw new Error(`No V2 device template for type ${JSON.stringify(type)}`);
    this.templates.set(type, rows[0].id);
    return rows[0].id;
  }

  /**
   * `WITH v1 AS (SELECT $1::text AS "id", …)` reads the source back into V1's types, `row`
   * projects it with the backfill's projection (the tenant bound as a parameter), and the
   * insert upserts it; the parameters are the source values, then the tenant, then (devices)
   * the template, or (telemetry with `replaceStale`) the devices and times of the rows V2 holds
   * of that legacy_id, which the stale rows' delete names so as to touch only their batches.
   */
  private upsertSql(table: MappedTable, replaceStale: boolean): string {
    const key = `${table}:${replaceStale}`;
    const cached = this.statements.get(key);
    if (cached !== undefined) return cached;
    const m = MAPPINGS[table];
    const target = this.qualified(m.v2Table);
    const v1Columns = V1_COLUMNS[table];
    const tenant = `$${v1Columns.length + 1}::text`;
    const projected = [...m.columns.map((c) => c.v2), ...(table === 'devices' ? ['template_id'] : [])];
    const projection = v1ProjectionList(table, tenant)
      .slice(0, m.columns.length)
      .map((expr, i) => `${expr} AS ${ident(m.columns[i].v2)}`);
    if (table === 'devices') projection.push(`$${v1Columns.length + 2}::text AS template_id`);
    const conflictColumns = m.conflict.replace(/[()"\s]/g, '').split(',');
    const updates = projected
      .filter((c) => !conflictColumns.includes(c))
      .map((c) => `${ident(c)} = EXCLUDED.${ident(c)}`);
    const stale = replaceStale
      ? `, stale AS (DELETE FROM ${target} t USING row
           WHERE t.legacy_id = row.legacy_id AND t.tenant_id = row.tenant_id AND t."timestamp" <> row."timestamp"
             AND t.device_id = ANY($${v1Columns.length + 2}::text[])
             AND t."timestamp" = ANY($${v1Columns.length + 3}::timestamptz[]))`
      : '';
    // The WHERE keeps a row of another tenant untouched (rowCount 0 then tells the caller).
    const sql = `WITH v1 AS (SELECT ${v1Columns.map((c, i) => `$${i + 1}::${c.sqlType} AS ${ident(c.name)}`).join(', ')}),
      row AS (SELECT ${projection.join(', ')} FROM v1)${stale}
      INSERT INTO ${target} AS target (${projected.map(ident).join(', ')})
      SELECT ${projected.map(ident).join(', ')} FROM row
      ON CONFLICT ${m.conflict} DO UPDATE SET ${updates.join(', ')}
      WHERE target.tenant_id = EXCLUDED.tenant_id`;
    this.statements.set(key, sql);
    return sql;
  }
}

/** Where single rows are read and written: schema names and the tenant that V1's rows belong to. */
export interface ClientSettingsInput {
  /**
   * Schema names of V1 and V2.
   * @default { v1: 'public', v2: 'public' }
   */
  readonly schemas?: { readonly v1?: string; readonly v2?: string };
  /**
   * The tenant every V1 row belongs to in V2.
   * @default DEFAULT_TENANT.id
   */
  readonly tenantId?: string;
}

export interface ClientSettings {
  v1Schema: string;
  v2Schema: string;
  tenantId: string;
}

const settingsSchema = z.object({
  schemas: configSchema.shape.schemas,
  tenantId: z.string().min(1).max(200).default(DEFAULT_TENANT.id),
});

/** Validates the schema names (SQL identifiers) and tenant id; throws ConfigError naming the field. */
export function clientSettings(input: ClientSettingsInput, source: string): ClientSettings {
  const parsed = settingsSchema.safeParse({
    schemas: input.schemas === undefined ? undefined : { v1: 'public', v2: 'public', ...input.schemas },
    tenantId: input.tenantId,
  });
  if (!parsed.success) throw new ConfigError(describeIssues(parsed.error), source);
  return {
    v1Schema: parsed.data.schemas.v1,
    v2Schema: parsed.data.schemas.v2,
    tenantId: parsed.data.tenantId,
  };
}

/**
 * One resolved context per deps object, made on its first use: the validated settings (`what`
 * names them in a ConfigError) and the row sync built on them.
 */
export function resolvedPerDeps<D extends ClientSettingsInput, S>(
  what: string,
  makeSync: (deps: D, settings: ClientSettings) => S,
): (deps: D) => { settings: ClientSettings; sync: S } {
  const resolved = new WeakMap<D, { settings: ClientSettings; sync: S }>();
  return (deps) => {
    let r = resolved.get(deps);
    if (!r) {
      const settings = clientSettings(deps, what);
      r = { settings, sync: makeSync(deps, settings) };
      resolved.set(deps, r);
    }
    return r;
  };
}

/** Whether a failed single-row write may succeed if tried again (lost connection, missing parent, lock). */
export function isRetryableRowError(error: unknown): boolean {
  const e = error as { code?: string; message?: string };
  if (isTransient(error) || e.code === '23503' || e.code === '57014') return true;
  return /Connection terminated|ECONNRESET|ECONNREFUSED|timeout|Cannot use a pool after calling end/i.test(
    e.message ?? '',
  );
}
