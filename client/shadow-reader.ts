import type { Pool } from 'pg';
import { z } from 'zod';
import { describeIssues } from '../lambdas/core/config';
import { ident } from '../lambdas/core/db';
import { ConfigError, ShadowReadError } from '../lambdas/core/errors';
import { MAPPINGS, mapRow, type V1Row, type V2Row } from '../lambdas/core/mapping';
import { parseId, parseTable, type ClientTable, type RowId } from './v1-rows';
import { clientSettings, type ClientSettings, type ClientSettingsInput } from '../lambdas/core/sync/row-sync';
import { runHook } from './hooks';
import { METRIC_NAMES } from '../lib/runtime-contract';

/**
 * Metric counting shadow reads whose V2 row differs from the mapped V1 row: the one the stack's
 * ShadowReadMismatch alarm reads (publish it in METRICS_NAMESPACE with no dimensions).
 */
export const SHADOW_READ_MISMATCH_METRIC = METRIC_NAMES.shadowReadMismatch;
/** Metric counting shadow reads that could not read V2. */
export const SHADOW_READ_ERROR_METRIC = 'ShadowReadError';
/** Metric counting sampled reads skipped because too many shadow reads were in flight. */
export const SHADOW_READ_SKIPPED_METRIC = 'ShadowReadSkipped';
export const DEFAULT_SHADOW_SAMPLE_RATE = 0.01;
export const DEFAULT_SHADOW_MAX_IN_FLIGHT = 16;

/** What differed between V1 (mapped) and V2 for one row. */
export interface ShadowMismatch {
  table: ClientTable;
  id: string;
  /**
   * `missing`: V1 has the row, V2 not; `unexpected`: V2 has a row V1 has not; `different`:
   * both have it and `columns` differ; `duplicated`: V2 has several rows for the V1 row.
   */
  kind: 'missing' | 'unexpected' | 'different' | 'duplicated';
  /** The V2 columns that differ (every mapped column for missing / unexpected rows). */
  columns: string[];
}

export interface ShadowReaderOptions extends ClientSettingsInput {
  readonly v2: Pool;
  /**
   * The share of observed reads that are compared with V2, from 0 to 1.
   * @default DEFAULT_SHADOW_SAMPLE_RATE
   */
  readonly sampleRate?: number;
  /**
   * Shadow reads in flight at most; a sampled read beyond it is skipped (and counted).
   * @default DEFAULT_SHADOW_MAX_IN_FLIGHT
   */
  readonly maxInFlight?: number;
  /** Called with a metric name and value (e.g. to emit an EMF metric). */
  readonly onMetric?: (name: string, value: number) => void;
  readonly onMismatch?: (mismatch: ShadowMismatch) => void;
  readonly onError?: (error: ShadowReadError) => void;
  /**
   * Source of sampling randomness in [0, 1).
   * @default Math.random
   */
  readonly random?: () => number;
}

const optionsSchema = z.object({
  sampleRate: z.number().min(0).max(1).default(DEFAULT_SHADOW_SAMPLE_RATE),
  maxInFlight: z.number().int().min(1).max(10_000).default(DEFAULT_SHADOW_MAX_IN_FLIGHT),
});

const isDate = (v: unknown): v is Date => Object.prototype.toString.call(v) === '[object Date]';
/**
 * A timestamp as node-postgres gives it, as a number: ±Infinity for ±infinity, NaN for an
 * instant beyond what a JavaScript Date holds (the backend reads such a value as an Invalid Date
 * from either side, so two of them compare equal).
 */
const asInstant = (v: unknown): number | null =>
  v === null || v === undefined
    ? null
    : typeof v === 'number'
      ? v
      : isDate(v)
        ? v.getTime()
        : new Date(String(v)).getTime();

/** JSON values compared structurally: object keys in any order, arrays in order. */
function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const bs = b as unknown[];
    return a.length === bs.length && a.every((v, i) => sameJson(v, bs[i]));
  }
  const ao = a as Record<string, unknown>;
  const bo = b as Record<string, unknown>;
  const keys = Object.keys(ao);
  return (
    keys.length === Object.keys(bo).length &&
    keys.every((k) => Object.prototype.hasOwnProperty.call(bo, k) && sameJson(ao[k], bo[k]))
  );
}

/** A deep copy of a mapped row (plain JSON values and Dates), so a caller's later changes do not count. */
function copyMapped(value: unknown): unknown {
  if (isDate(value)) return new Date(value.getTime());
  if (Array.isArray(value)) return value.map(copyMapped);
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, copyMapped(v)]));
  }
  return value;
}

/**
 * The V2 columns whose values differ between the mapped V1 row and a V2 row: JSON compared
 * structurally, timestamps as instants, bigints as numbers, text exactly. For devices, the
 * template is compared by its device type (`templateType`, the V2 template's `device_type`).
 * Columns in `nullAlso` also match a V2 null (see `readsNullAmbiguously` in the mapping).
 */
export function differingColumns(
  table: ClientTable,
  mappedV1: V2Row,
  v2: V2Row,
  templateType?: { v1: unknown; v2: unknown },
  nullAlso: ReadonlySet<string> = new Set(),
): string[] {
  const out: string[] = [];
  for (const c of MAPPINGS[table].columns) {
    const a = mappedV1[c.v2] ?? null;
    const b = v2[c.v2] ?? null;
    const alsoNull = b === null && nullAlso.has(c.v2);
    const same =
      alsoNull ||
      (c.kind === 'instant'
        ? Object.is(asInstant(a), asInstant(b))
        : c.kind === 'json'
          ? sameJson(a, b)
          : c.kind === 'bigint'
            ? (a === null ? null : String(a)) === (b === null ? null : String(b))
            : a === b);
    if (!same) out.push(c.v2);
  }
  if (templateType && templateType.v1 !== templateType.v2) out.push('template_id');
  return out;
}

/**
 * Shadow reads: for a sampled share of the reads still served from V1, the same row is read
 * from V2 after the caller has its answer, and compared under the mapping. Differences are
 * reported (`ShadowReadMismatch`, with the columns), V2 failures too (`ShadowReadError`).
 * Nothing of this adds latency to the caller or throws into it.
 */
export class ShadowReader {
  private readonly settings: ClientSettings;
  private readonly sampleRate: number;
  private readonly maxInFlight: number;
  private readonly random: () => number;
  private readonly inFlight = new Set<Promise<void>>();

  constructor(private readonly options: ShadowReaderOptions) {
    this.settings = clientSettings(options, 'ShadowReader options');
    const parsed = optionsSchema.safeParse({
      sampleRate: options.sampleRate,
      maxInFlight: options.maxInFlight,
    });
    if (!parsed.success) throw new ConfigError(describeIssues(parsed.error), 'ShadowReader options');
    this.sampleRate = parsed.data.sampleRate;
    this.maxInFlight = parsed.data.maxInFlight;
    this.random = options.random ?? Math.random;
  }

  /**
   * Runs the caller's V1 read and returns its result unchanged (its errors are the caller's);
   * when sampled, V2's row of the same id is compared afterwards. A null result means V1 has
   * no such row, and V2 should have none either.
   */
  async read<R extends object>(
    table: ClientTable,
    id: RowId,
    v1Read: () => Promise<R | null | undefined>,
  ): Promise<R | null | undefined> {
    const row = await v1Read();
    this.schedule(table, id, row ?? null);
    return row;
  }

  /** Compares (when sampled) a V1 row the caller has already read; returns at once. */
  observe(table: ClientTable, v1Row: object): void {
    this.schedule(table, (v1Row as { id?: unknown }).id, v1Row);
  }

  /** Resolves once the shadow reads started so far have finished (for tests and shutdown). */
  async idle(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
  }

  private schedule(table: unknown, id: unknown, v1Row: object | null): void {
    try {
      if (this.sampleRate <= 0 || this.random() >= this.sampleRate) return;
      if (this.inFlight.size >= this.maxInFlight) {
        this.metric(SHADOW_READ_SKIPPED_METRIC);
        return;
      }
      const t = parseTable(table);
      const key = parseId(t, id);
      // Mapped and copied now: the caller may change its row once it has it.
      const expected =
        v1Row === null ? null : (copyMapped(mapRow(t, v1Row as V1Row, this.settings)) as V2Row);
      const type = v1Row === null ? undefined : (v1Row as { type?: unknown }).type;
      const nullAlso = new Set(
        v1Row === null
          ? []
          : MAPPINGS[t].columns.filter((c) => c.readsNullAmbiguously?.(v1Row as V1Row)).map((c) => c.v2),
      );
      // setImmediate: the V2 query starts only after the caller's continuation has run.
      const run = new Promise<void>((resolve) => setImmediate(resolve))
        .then(() => this.compare(t, key, expected, type, nullAlso))
        .catch((error: unknown) => this.fail(t, key, error))
        .finally(() => this.inFlight.delete(run));
      this.inFlight.add(run);
    } catch (error) {
      this.fail(String(table) as ClientTable, String(id), error);
    }
  }

  private async compare(
    table: ClientTable,
    id: string,
    expected: V2Row | null,
    type: unknown,
    nullAlso: ReadonlySet<string>,
  ): Promise<void> {
    const m = MAPPINGS[table];
    const schema = ident(this.settings.v2Schema);
    const target = `${schema}.${ident(m.v2Table)}`;
    const sql =
      table === 'devices'
        ? `SELECT d.*, t.device_type AS template_device_type FROM ${target} d
             LEFT JOIN ${schema}.device_templates t ON t.id = d.template_id
            WHERE d.id = $1 AND d.tenant_id = $2`
        : `SELECT * FROM ${target} WHERE ${ident(m.v2Key)} = $1 AND tenant_id = $2`;
    const { rows } = await this.options.v2.query<V2Row>(sql, [id, this.settings.tenantId]);
    const all = m.columns.map((c) => c.v2);
    let mismatch: ShadowMismatch | undefined;
    if (expected === null) {
      if (rows.length > 0) mismatch = { table, id, kind: 'unexpected', columns: all };
    } else if (rows.length === 0) {
      mismatch = { table, id, kind: 'missing', columns: all };
    } else if (rows.length > 1) {
      mismatch = { table, id, kind: 'duplicated', columns: [m.v2Key] };
    } else {
      const columns = differingColumns(
        table,
        expected,
        rows[0],
        table === 'devices' ? { v1: type, v2: rows[0].template_device_type } : undefined,
        nullAlso,
      );
      if (columns.length > 0) mismatch = { table, id, kind: 'different', columns };
    }
    if (!mismatch) return;
    const found = mismatch;
    this.metric(SHADOW_READ_MISMATCH_METRIC);
    this.hook(() => this.options.onMismatch?.(found));
  }

  private fail(table: ClientTable, id: string, cause: unknown): void {
    const reason = cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause);
    const error = new ShadowReadError(table, id, reason, { cause });
    this.metric(SHADOW_READ_ERROR_METRIC);
    this.hook(() => this.options.onError?.(error));
  }

  private metric(name: string): void {
    this.hook(() => this.options.onMetric?.(name, 1));
  }

  private hook(callback: () => void): void {
    runHook(callback, 'ShadowReaderCallbackWarning');
  }
}
