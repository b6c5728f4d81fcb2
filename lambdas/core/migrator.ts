import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Pool } from 'pg';
import { ident } from './db';
import { MigrationApplyError, MigrationChecksumMismatchError } from './errors';

/** The repository's `sql/` folder (bundled next to the Lambda code by the CDK construct). */
export const SQL_DIR = process.env.MIGRATION_SQL_DIR ?? resolve(__dirname, '..', '..', 'sql');

export interface MigrationFile {
  /** The file name, e.g. `0001_multitenant_schema.sql`; its numeric prefix orders it. */
  name: string;
  sql: string;
  checksum: string;
}

export interface MigrationSet {
  /** Which set the history rows belong to (`v2`, `control`). */
  set: string;
  /** The schema the files are applied in (their search_path). */
  schema: string;
  files: MigrationFile[];
}

export function checksum(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** Reads the numbered `.sql` files of a folder, in order. */
export function readMigrationFiles(dir: string): MigrationFile[] {
  return readdirSync(dir)
    .filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f))
    .sort()
    .map((name) => {
      const sql = readFileSync(join(dir, name), 'utf8');
      return { name, sql, checksum: checksum(sql) };
    });
}

export interface MigrateResult {
  set: string;
  applied: string[];
  alreadyApplied: string[];
}

/** A per-database advisory lock key so that two migrators never interleave. */
const MIGRATOR_LOCK = 0x1077_0002;

/**
 * Applies the pending files of a set, in order, each in its own transaction, and records each
 * with its checksum in `<control>.schema_migrations`. Before applying anything it checks every
 * applied file against its current text: an edited or removed file stops the run with
 * MigrationChecksumMismatchError and nothing is changed.
 */
export async function migrate(
  pool: Pool,
  controlSchema: string,
  migrationSet: MigrationSet,
): Promise<MigrateResult> {
  const client = await pool.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATOR_LOCK]);
    try {
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${ident(controlSchema)}`);
      await client.query(
        `CREATE TABLE IF NOT EXISTS ${ident(controlSchema)}.schema_migrations (
           migration_set text NOT NULL,
           name text NOT NULL,
           checksum text NOT NULL,
           applied_at timestamptz NOT NULL DEFAULT now(),
           PRIMARY KEY (migration_set, name))`,
      );
      const { rows } = await client.query<{ name: string; checksum: string }>(
        `SELECT name, checksum FROM ${ident(controlSchema)}.schema_migrations WHERE migration_set = $1 ORDER BY name`,
        [migrationSet.set],
      );
      const byName = new Map(migrationSet.files.map((f) => [f.name, f]));
      for (const applied of rows) {
        const current = byName.get(applied.name);
        if (!current || current.checksum !== applied.checksum) {
          throw new MigrationChecksumMismatchError(
            `${migrationSet.set}/${applied.name}`,
            applied.checksum,
            current?.checksum ?? '(file missing)',
          );
        }
      }
      const appliedNames = new Set(rows.map((r) => r.name));
      const result: MigrateResult = { set: migrationSet.set, applied: [], alreadyApplied: [...appliedNames] };
      for (const file of migrationSet.files) {
        if (appliedNames.has(file.name)) continue;
        try {
          await client.query('BEGIN');
          await client.query(`CREATE SCHEMA IF NOT EXISTS ${ident(migrationSet.schema)}`);
          await client.query(`SET LOCAL search_path TO ${ident(migrationSet.schema)}, public`);
          await client.query(file.sql);
          await client.query(
            `INSERT INTO ${ident(controlSchema)}.schema_migrations (migration_set, name, checksum) VALUES ($1, $2, $3)`,
            [migrationSet.set, file.name, file.checksum],
          );
          await client.query('COMMIT');
        } catch (cause) {
          await client.query('ROLLBACK').catch(() => undefined);
          throw new MigrationApplyError(`${migrationSet.set}/${file.name}`, (cause as Error).message, {
            cause,
          });
        }
        result.applied.push(file.name);
      }
      return result;
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATOR_LOCK]).catch(() => undefined);
    }
  } finally {
    client.release();
  }
}

/** The control schema's and V2 schema's migration sets, from `sql/`. */
export function projectMigrationSets(
  schemas: { v2: string; control: string },
  sqlDir = SQL_DIR,
): MigrationSet[] {
  return [
    { set: 'control', schema: schemas.control, files: readMigrationFiles(join(sqlDir, 'control')) },
    { set: 'v2', schema: schemas.v2, files: readMigrationFiles(join(sqlDir, 'v2')) },
  ];
}
