import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from 'pg';
import { LocalPostgresError } from '../../core/errors';
import { startCluster, type LocalPostgres } from './pg-cluster';

/**
 * Where `../shared/timescaledb/install.sh` puts PostgreSQL 15 with TimescaleDB (Debian's
 * postgresql-15 package); `TIMESCALEDB_PG_BIN` names another PostgreSQL `bin` folder.
 */
export const DEFAULT_TIMESCALEDB_PG_BIN = '/usr/lib/postgresql/15/bin';

export type TimescaleInstallation = { binDir: string; libDir: string } | { missing: string };

/** Whether a PostgreSQL server with the TimescaleDB library is installed, and why not. */
export function timescaleInstallation(
  binDir = process.env.TIMESCALEDB_PG_BIN || DEFAULT_TIMESCALEDB_PG_BIN,
): TimescaleInstallation {
  const hint = 'run ../shared/timescaledb/install.sh as root, or set TIMESCALEDB_PG_BIN';
  if (!existsSync(join(binDir, 'postgres')))
    return { missing: `no PostgreSQL server at ${binDir} (${hint})` };
  let libDir: string;
  try {
    libDir = execFileSync(join(binDir, 'pg_config'), ['--pkglibdir'], {
      encoding: 'utf8',
      stdio: 'pipe',
    }).trim();
  } catch {
    libDir = join(binDir, '..', 'lib');
  }
  if (!existsSync(join(libDir, 'timescaledb.so')))
    return {
      missing: `PostgreSQL at ${binDir} has no TimescaleDB (${join(libDir, 'timescaledb.so')} is missing; ${hint})`,
    };
  return { binDir, libDir };
}

/**
 * Starts a throw-away PostgreSQL cluster with TimescaleDB preloaded (telemetry off) on a free
 * port, so `CREATE EXTENSION timescaledb` works in any of its databases. Throws
 * LocalPostgresError saying what is missing when TimescaleDB is not installed.
 */
export async function startTimescalePostgres(
  options: { log?: (line: string) => void; binDir?: string } = {},
): Promise<LocalPostgres> {
  const installation = timescaleInstallation(options.binDir);
  if ('missing' in installation) throw new LocalPostgresError(`TimescaleDB: ${installation.missing}`);
  const pg = await startCluster({
    binDir: installation.binDir,
    label: 'TimescaleDB test server',
    log: options.log,
    settings: {
      shared_preload_libraries: 'timescaledb',
      'timescaledb.telemetry_level': 'off',
      // Each database with the extension gets a job scheduler; tests create many databases.
      max_worker_processes: 64,
      'timescaledb.max_background_workers': 48,
      shared_buffers: '256MB',
    },
  });
  const client = new Client({ connectionString: pg.url('postgres') });
  client.on('error', () => undefined);
  try {
    await client.connect();
    const { rows } = await client.query<{ v: string }>(
      `SELECT default_version AS v FROM pg_available_extensions WHERE name = 'timescaledb'`,
    );
    if (rows.length === 0)
      throw new LocalPostgresError('TimescaleDB test server: the timescaledb extension is not available');
    return { ...pg, label: `TimescaleDB ${rows[0].v} on PostgreSQL ${await serverVersion(client)}` };
  } catch (error) {
    await client.end().catch(() => undefined);
    await pg.stop();
    throw error;
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function serverVersion(client: Client): Promise<string> {
  return (await client.query<{ server_version: string }>('SHOW server_version')).rows[0].server_version.split(
    ' ',
  )[0];
}
