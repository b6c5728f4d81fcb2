import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pool } from 'pg';
import { z } from 'zod';
import { startLocalPostgres, type LocalPostgres } from '../lambdas/adapters/local/embedded-pg';
import { LocalBackup } from '../lambdas/adapters/local/pg-backup';
import { startTimescalePostgres } from '../lambdas/adapters/local/timescale-pg';
import { applyV1Schema, generateV1 } from '../lambdas/adapters/local/v1-generator';
import { parseConfig, type MigrationConfig, type MigrationConfigInput } from '../lambdas/core/config';
import { APPLICATION_NAME } from '../lambdas/core/db';
import { runPrepare } from '../lambdas/core/prepare';

/** The flags every benchmark's V1 takes: its telemetry rows and devices. */
export const sizeFlags = {
  rows: z.coerce.number().int().min(1000).default(1_000_000).describe('telemetry rows of the generated V1'),
  devices: z.coerce.number().int().min(1).default(1000).describe('devices of the generated V1'),
};

/** The `--help` of a benchmark: its command line and what it measures. */
export const benchHelp = (script: string, summary: string, values: Record<string, string> = {}) => ({
  usage: `npm run ${script} -- [flags]`,
  summary,
  values: { rows: 'N', devices: 'N', ...values },
  notes: ['The last line printed is one JSON object with the figures.'],
});

export interface BenchEnv {
  pg: LocalPostgres;
  v1: Pool;
  v2: Pool;
  config: MigrationConfig;
  close(): Promise<void>;
}

export const seconds = (start: bigint) => Number(process.hrtime.bigint() - start) / 1e9;
export const log = (line: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${line}`);

/** Pools on a bench server's database (8 connections, errors of idle clients ignored). */
export function benchPool(pg: LocalPostgres, database: string): Pool {
  const pool = new Pool({ connectionString: pg.url(database), max: 8, application_name: APPLICATION_NAME });
  pool.on('error', () => undefined);
  return pool;
}

/** Creates database `v1` on the server and generates V1 into it (then VACUUM ANALYZE). */
export async function benchV1(
  pg: LocalPostgres,
  rows: number,
  options: { devices?: number; seed?: number } = {},
): Promise<Pool> {
  await pg.createDatabase('v1');
  const v1 = benchPool(pg, 'v1');
  await applyV1Schema(v1);
  const generated = await generateV1(v1, {
    devices: options.devices ?? 1000,
    telemetry: rows,
    seed: options.seed ?? 1,
  });
  log(
    `V1 generated: ${rows.toLocaleString('en-US')} telemetry rows at ${generated.telemetryRowsPerSec.toLocaleString('en-US')} rows/s`,
  );
  await v1.query('VACUUM ANALYZE');
  return v1;
}

/**
 * Creates a V2 database on the server and runs Phase 1 into it (backup of V1 and its check
 * included), with V2 telemetry on the given storage.
 */
export async function benchV2(
  pg: LocalPostgres,
  v1: Pool,
  database: string,
  storage: 'partitioned' | 'timescaledb',
  overrides: Partial<MigrationConfigInput> = {},
): Promise<{ v2: Pool; config: MigrationConfig; close(): Promise<void> }> {
  await pg.createDatabase(database);
  const v2 = benchPool(pg, database);
  const config = parseConfig({
    v1: { url: pg.url('v1') },
    v2: { url: pg.url(database) },
    telemetryStorage: storage,
    ...overrides,
  });
  const backups = mkdtempSync(join(tmpdir(), 'bench-backups-'));
  try {
    await runPrepare({
      v1,
      v2,
      config,
      actor: 'bench',
      backup: new LocalBackup({ v1Url: pg.url('v1'), v1Schema: 'public', mode: 'auto', directory: backups }),
    });
  } finally {
    rmSync(backups, { recursive: true, force: true });
  }
  return { v2, config, close: () => v2.end() };
}

/**
 * A throw-away PostgreSQL with a generated V1 of `rows` telemetry rows and a prepared V2
 * (Phase 1 done), as every benchmark starts from: embedded PostgreSQL (V2 telemetry on native
 * partitions), or PostgreSQL 15 with TimescaleDB (a hypertable; V1 on the same server).
 */
export async function benchEnv(
  rows: number,
  options: {
    devices?: number;
    seed?: number;
    config?: Partial<MigrationConfigInput>;
    storage?: 'partitioned' | 'timescaledb';
  } = {},
): Promise<BenchEnv> {
  const pg = options.storage === 'timescaledb' ? await startTimescalePostgres() : await startLocalPostgres();
  log(`server: ${pg.label}`);
  const v1 = await benchV1(pg, rows, options);
  const { v2, config } = await benchV2(pg, v1, 'v2', options.storage ?? 'partitioned', options.config);
  return {
    pg,
    v1,
    v2,
    config,
    close: async () => {
      await Promise.all([v1.end(), v2.end()]);
      await pg.stop();
    },
  };
}
