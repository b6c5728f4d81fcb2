import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_TIMESCALEDB_PG_BIN, timescaleInstallation } from '../lambdas/adapters/local/timescale-pg';
import { log } from './support';

/**
 * pgcopydb (Debian's package) as the benchmark's yardstick: `pgcopydb clone` of the whole V1
 * into an empty database of the same server. It speaks to PostgreSQL 10–15 through the
 * `pg_dump`/`pg_restore` of that major version, so the comparison runs on PostgreSQL 15.
 */

const has = (command: string) => {
  try {
    execFileSync('/bin/sh', ['-c', `command -v ${command}`], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
};

const isRoot = () => process.getuid?.() === 0;

function aptInstall(packages: string[]): void {
  log(`installing ${packages.join(', ')} with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  execFileSync('apt-get', ['install', '-y', '-qq', ...packages], { stdio: 'inherit', env });
}

/**
 * Makes sure PostgreSQL 15 with TimescaleDB and pgcopydb are installed, installing what is
 * missing as the TimescaleDB test harness's CI does (`../shared/timescaledb/install.sh`,
 * `apt-get install pgcopydb`). Returns why the comparison cannot run, or undefined when it can.
 */
export function ensurePgcopydb(): string | undefined {
  const installer = join(__dirname, '..', '..', 'shared', 'timescaledb', 'install.sh');
  try {
    if ('missing' in timescaleInstallation() && isRoot() && existsSync(installer)) {
      log(`installing PostgreSQL 15 with TimescaleDB (${installer})`);
      execFileSync(installer, { stdio: 'inherit' });
    }
    if (!has('pgcopydb') && isRoot() && has('apt-get')) aptInstall(['pgcopydb']);
  } catch (error) {
    return `installing failed: ${(error as Error).message}`;
  }
  const installation = timescaleInstallation();
  if ('missing' in installation) return installation.missing;
  if (!has('pgcopydb')) return 'pgcopydb is not installed (apt-get install pgcopydb, as root)';
  if (!existsSync(join(DEFAULT_TIMESCALEDB_PG_BIN, 'pg_dump')))
    return `no pg_dump in ${DEFAULT_TIMESCALEDB_PG_BIN}`;
  return undefined;
}

/** Runs `pgcopydb clone` (2 table jobs, 2 index jobs) and returns its wall-clock seconds. */
export async function pgcopydbClone(sourceUrl: string, targetUrl: string): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-pgcopydb-'));
  const started = process.hrtime.bigint();
  try {
    await new Promise<void>((resolve, reject) => {
      const child = spawn(
        'pgcopydb',
        [
          'clone',
          '--source',
          sourceUrl,
          '--target',
          targetUrl,
          '--table-jobs',
          '2',
          '--index-jobs',
          '2',
          '--dir',
          join(dir, 'work'),
          '--no-owner',
          '--no-acl',
        ],
        {
          // pgcopydb runs the pg_dump and pg_restore it finds first on PATH: PostgreSQL 15's.
          env: { ...process.env, PATH: `${DEFAULT_TIMESCALEDB_PG_BIN}:${process.env.PATH ?? ''}` },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      const tail: string[] = [];
      const keep = (chunk: Buffer) => {
        tail.push(chunk.toString('utf8'));
        if (tail.length > 50) tail.shift();
      };
      child.stdout.on('data', keep);
      child.stderr.on('data', keep);
      child.once('error', reject);
      child.once('exit', (code) =>
        code === 0
          ? resolve()
          : reject(new Error(`pgcopydb clone exited with ${code}: ${tail.join('').slice(-3000)}`)),
      );
    });
    return Number(process.hrtime.bigint() - started) / 1e9;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
