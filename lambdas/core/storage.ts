import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Pool, PoolClient } from 'pg';
import type { MigrationConfig } from './config';
import { controlSchema, ident, literal, withTransaction } from './db';
import { STORED_DIGEST, storedDigestExpression } from './digest';
import { StorageSetupError } from './errors';
import { SQL_DIR } from './migrator';

export type TelemetryStorageKind = 'timescaledb' | 'partitioned';

export interface StorageDecision {
  kind: TelemetryStorageKind;
  reason: string;
}

/** Whether the server can `CREATE EXTENSION timescaledb` (what pg_available_extensions reports). */
export async function timescaleAvailable(v2: Pool): Promise<boolean> {
  const { rows } = await v2.query(
    "SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'timescaledb'",
  );
  return rows.length > 0;
}

/**
 * Chooses the telemetry storage: TimescaleDB where the extension is available, else native
 * range partitioning; config can force either. Forcing TimescaleDB where it is missing fails.
 */
export function decideStorage(
  mode: MigrationConfig['telemetryStorage'],
  available: boolean,
): StorageDecision {
  if (mode === 'partitioned')
    return { kind: 'partitioned', reason: 'forced by config (telemetryStorage=partitioned)' };
  if (mode === 'timescaledb') {
    if (!available) {
      throw new StorageSetupError(
        'telemetryStorage=timescaledb but the timescaledb extension is not available on the V2 server',
        { mode },
      );
    }
    return { kind: 'timescaledb', reason: 'forced by config (telemetryStorage=timescaledb)' };
  }
  return available
    ? { kind: 'timescaledb', reason: 'timescaledb extension available' }
    : { kind: 'partitioned', reason: 'timescaledb extension not available: native monthly range partitions' };
}

/**
 * The DDL a storage kind runs (sql/storage/<kind>.sql), applied with search_path at the V2
 * schema, with the stored row digest's expression and version filled in.
 */
export function storageSql(kind: TelemetryStorageKind, sqlDir = SQL_DIR): string {
  return readFileSync(join(sqlDir, 'storage', `${kind}.sql`), 'utf8')
    .replaceAll('{{row_digest}}', storedDigestExpression())
    .replaceAll('{{row_digest_version}}', literal(STORED_DIGEST.version));
}

/** The age at which the compression policy compresses a telemetry chunk. */
export const COMPRESS_AFTER = '90 days';

/** The telemetry storage Phase 1 set up, as it recorded it (undefined before it has). */
export async function recordedTelemetryStorage(
  v2: Pool,
  config: Pick<MigrationConfig, 'schemas'>,
): Promise<TelemetryStorageKind | undefined> {
  const { rows } = await v2.query<{ kind: TelemetryStorageKind }>(
    `SELECT kind FROM ${controlSchema(config)}.telemetry_storage WHERE id = 1`,
  );
  return rows[0]?.kind;
}

/**
 * When TimescaleDB compression may run during a migration: only once cleanup has archived V1.
 *
 * Until then, the migration rewrites history: window repair deletes and re-inserts a window's
 * rows (bounded by the window's time range, which on compressed chunks still decompresses
 * every batch of every device overlapping that range: far more than the window's rows, and
 * beyond TimescaleDB's default limit of 100,000 decompressed rows per statement at a million
 * rows), verification reruns after a rollback, and the dual writer updates and deletes single
 * rows. Storage setup therefore configures compression (segment by tenant and device, ordered
 * by time) but adds no policy; `addCompressionPolicy` adds it when cleanup finishes. The cost:
 * during the migration (and the cutover's soak time) V2 telemetry stays uncompressed, taking
 * about the disk space V1's table takes, and the policy's first run compresses the whole
 * history older than {@link COMPRESS_AFTER} at once, after cleanup.
 */
export async function addCompressionPolicy(
  v2: Pool,
  config: Pick<MigrationConfig, 'schemas'>,
): Promise<{ policy: 'added' | 'already there' | 'not a hypertable'; jobId?: number }> {
  if ((await recordedTelemetryStorage(v2, config)) !== 'timescaledb') return { policy: 'not a hypertable' };
  const job = async () =>
    (
      await v2.query<{ job_id: number }>(
        `SELECT job_id FROM timescaledb_information.jobs
          WHERE proc_name = 'policy_compression' AND hypertable_schema = $1 AND hypertable_name = 'telemetry'`,
        [config.schemas.v2],
      )
    ).rows[0]?.job_id;
  if ((await job()) !== undefined) return { policy: 'already there', jobId: await job() };
  const sql = readFileSync(join(SQL_DIR, 'storage', 'timescaledb-compression-policy.sql'), 'utf8').replaceAll(
    '{{compress_after}}',
    literal(COMPRESS_AFTER),
  );
  try {
    await withTransaction(v2, async (client) => {
      await client.query(`SET LOCAL search_path TO ${ident(config.schemas.v2)}, public`);
      await client.query(sql);
    });
  } catch (cause) {
    throw new StorageSetupError(
      `adding the telemetry compression policy failed: ${(cause as Error).message}`,
      { compressAfter: COMPRESS_AFTER },
      { cause },
    );
  }
  return { policy: 'added', jobId: await job() };
}

export interface StorageResult extends StorageDecision {
  created: boolean;
  partitionsCreated: string[];
}

/**
 * Sets up the telemetry table once and records the choice. A second run finds the recorded
 * choice and the table and changes nothing. The choice is never changed once recorded.
 */
export async function setupTelemetryStorage(
  v2: Pool,
  config: Pick<MigrationConfig, 'telemetryStorage' | 'schemas'>,
  options: { isTimescaleAvailable?: (v2: Pool) => Promise<boolean>; now?: Date } = {},
): Promise<StorageResult> {
  const control = controlSchema(config);
  const recorded = await v2.query<{ kind: TelemetryStorageKind; reason: string }>(
    `SELECT kind, reason FROM ${control}.telemetry_storage WHERE id = 1`,
  );
  if (recorded.rows.length > 0) {
    const { kind, reason } = recorded.rows[0];
    if (config.telemetryStorage !== 'auto' && config.telemetryStorage !== kind) {
      throw new StorageSetupError(
        `telemetry storage was already set up as ${kind}; config now asks for ${config.telemetryStorage}`,
        { recorded: kind, requested: config.telemetryStorage },
      );
    }
    return { kind, reason, created: false, partitionsCreated: [] };
  }
  const probe = options.isTimescaleAvailable ?? timescaleAvailable;
  const decision = decideStorage(config.telemetryStorage, await probe(v2));
  try {
    await withTransaction(v2, async (client) => {
      await client.query(`SET LOCAL search_path TO ${ident(config.schemas.v2)}, public`);
      await client.query(storageSql(decision.kind));
      await client.query(`INSERT INTO ${control}.telemetry_storage (kind, reason) VALUES ($1, $2)`, [
        decision.kind,
        decision.reason,
      ]);
    });
  } catch (cause) {
    throw new StorageSetupError(
      `setting up ${decision.kind} telemetry storage failed: ${(cause as Error).message}`,
      { kind: decision.kind },
      { cause },
    );
  }
  const partitionsCreated =
    decision.kind === 'partitioned'
      ? await ensureMonthlyPartitions(v2, config.schemas.v2, monthsAhead(options.now ?? new Date(), 3))
      : [];
  return { ...decision, created: true, partitionsCreated };
}

/** The first day (UTC) of a timestamp's month. */
export function monthStart(t: Date): Date {
  return new Date(Date.UTC(t.getUTCFullYear(), t.getUTCMonth(), 1));
}

function addMonths(t: Date, n: number): Date {
  return new Date(Date.UTC(t.getUTCFullYear(), t.getUTCMonth() + n, 1));
}

/** The current month and the next `ahead` months. */
export function monthsAhead(now: Date, ahead: number): Date[] {
  const first = monthStart(now);
  return Array.from({ length: ahead + 1 }, (_, i) => addMonths(first, i));
}

export function partitionName(month: Date): string {
  const y = String(month.getUTCFullYear()).padStart(4, '0');
  const m = String(month.getUTCMonth() + 1).padStart(2, '0');
  return `telemetry_p${y}${m}`;
}

/**
 * Creates the monthly partition of each given month unless it exists. Rows of that month that
 * already sit in the default partition are moved into the new partition in the same
 * transaction, so creating a partition late never fails and never loses a row.
 */
export async function ensureMonthlyPartitions(v2: Pool, schema: string, months: Date[]): Promise<string[]> {
  const wanted = [...new Map(months.map((m) => [partitionName(monthStart(m)), monthStart(m)])).entries()];
  if (wanted.length === 0) return [];
  const existing = new Set(
    (
      await v2.query<{ relname: string }>(
        `SELECT c.relname FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
           JOIN pg_class p ON p.oid = i.inhparent
           JOIN pg_namespace n ON n.oid = p.relnamespace
          WHERE p.relname = 'telemetry' AND n.nspname = $1`,
        [schema],
      )
    ).rows.map((r) => r.relname),
  );
  const created: string[] = [];
  for (const [name, month] of wanted) {
    if (existing.has(name)) continue;
    try {
      const made = await withTransaction(v2, (client) =>
        createPartition(client, schema, name, month, addMonths(month, 1)),
      );
      if (made) created.push(name);
    } catch (cause) {
      // Another worker created it first: that is the outcome we wanted.
      if ((cause as { code?: string }).code === '42P07') continue;
      throw new StorageSetupError(
        `creating telemetry partition ${name} failed: ${(cause as Error).message}`,
        { partition: name },
        { cause },
      );
    }
  }
  return created;
}

/** Creates one monthly partition; false when it already existed (another worker made it). */
async function createPartition(
  client: PoolClient,
  schema: string,
  name: string,
  from: Date,
  to: Date,
): Promise<boolean> {
  const s = ident(schema);
  // Serialise partition changes on this table so two workers never race the default partition.
  await client.query(`LOCK TABLE ${s}.telemetry_default IN EXCLUSIVE MODE`);
  const bounds = [from.toISOString(), to.toISOString()];
  const inDefault = await client.query(
    `SELECT 1 FROM ${s}.telemetry_default WHERE "timestamp" >= $1 AND "timestamp" < $2 LIMIT 1`,
    bounds,
  );
  const exists = await client.query(`SELECT to_regclass($1) AS r`, [`${schema}.${name}`]);
  if (exists.rows[0].r) return false;
  if (inDefault.rows.length === 0) {
    await client.query(
      `CREATE TABLE ${s}.${ident(name)} PARTITION OF ${s}.telemetry FOR VALUES FROM ('${bounds[0]}') TO ('${bounds[1]}')`,
    );
    return true;
  }
  // Move the month's rows out of the default partition, then attach the new partition.
  await client.query(
    `CREATE TABLE ${s}.${ident(name)} (LIKE ${s}.telemetry INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED)`,
  );
  // Every stored column but the generated ones (the row digest), which PostgreSQL computes.
  const written = await client.query<{ name: string }>(
    `SELECT attname AS name FROM pg_catalog.pg_attribute
      WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum`,
    [`${s}.telemetry`],
  );
  const columns = written.rows.map((r) => ident(r.name)).join(', ');
  await client.query(
    `WITH moved AS (DELETE FROM ${s}.telemetry_default WHERE "timestamp" >= $1 AND "timestamp" < $2 RETURNING *)
     INSERT INTO ${s}.${ident(name)} (${columns}) SELECT ${columns} FROM moved`,
    bounds,
  );
  await client.query(
    `ALTER TABLE ${s}.telemetry ATTACH PARTITION ${s}.${ident(name)} FOR VALUES FROM ('${bounds[0]}') TO ('${bounds[1]}')`,
  );
  return true;
}
