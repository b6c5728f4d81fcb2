import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startLocalPostgres, type LocalPostgres } from '../../lambdas/adapters/local/embedded-pg';
import { startTimescalePostgres, timescaleInstallation } from '../../lambdas/adapters/local/timescale-pg';
import { ENV, timescaleRequired, type TestServerKind } from './servers';
import { isolateTempDir } from './temp-dir';

declare global {
  var __TEST_SERVERS__: LocalPostgres[] | undefined;
  var __TEST_TMPDIR__: string | undefined;
}

/** The TimescaleDB server, or why there is none (an error when REQUIRE_TIMESCALEDB=1). */
async function timescaleServer(): Promise<LocalPostgres | string> {
  const installation = timescaleInstallation();
  if ('missing' in installation) {
    if (timescaleRequired()) throw new Error(`${ENV.requireTimescale}=1 but ${installation.missing}`);
    return `TimescaleDB is not installed: ${installation.missing}`;
  }
  try {
    return await startTimescalePostgres();
  } catch (error) {
    const message = (error as Error).message;
    const hint = /undefined symbol/.test(message)
      ? ' (this TimescaleDB build needs a newer PostgreSQL 15 minor release: apt-get install postgresql-15)'
      : '';
    if (timescaleRequired()) throw new Error(`${ENV.requireTimescale}=1 but ${message}${hint}`);
    return `the TimescaleDB server did not start: ${message.slice(0, 500)}${hint}`;
  }
}

function publish(kind: TestServerKind, pg: LocalPostgres): void {
  process.env[ENV.port[kind]] = String(pg.port);
  process.env[ENV.user[kind]] = pg.user;
  process.env[ENV.password[kind]] = pg.password;
}

/**
 * Starts the run's servers once, on free ports: embedded PostgreSQL, and PostgreSQL 15 with
 * TimescaleDB where it is installed. Each suite takes fresh databases on them
 * (test/support/pg.ts). Workers are forked after this, so they inherit the env.
 */
export default async function globalSetup(): Promise<void> {
  const [started, timescaleStart] = await Promise.allSettled([startLocalPostgres(), timescaleServer()]);
  if (started.status === 'rejected' || timescaleStart.status === 'rejected') {
    // One failed: stop the one that started, or its postgres outlives the run.
    await Promise.all(
      [started, timescaleStart].map((r) =>
        r.status === 'fulfilled' && typeof r.value !== 'string' ? r.value.stop() : undefined,
      ),
    );
    throw started.status === 'rejected' ? started.reason : (timescaleStart as PromiseRejectedResult).reason;
  }
  const [embedded, timescale] = [started.value, timescaleStart.value];
  const servers = [embedded];
  publish('embedded', embedded);
  if (typeof timescale === 'string') {
    process.env[ENV.timescaleMissing] = timescale;
  } else {
    servers.push(timescale);
    publish('timescaledb', timescale);
    delete process.env[ENV.timescaleMissing];
  }
  globalThis.__TEST_SERVERS__ = servers;
  process.env[ENV.backupDir] = mkdtempSync(join(tmpdir(), 'iot-migration-test-backups-'));
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      void Promise.all(servers.map((s) => s.stop())).finally(() => process.exit(130));
    });
  }
  // After the servers' own data folders are made: the workers' temporary files go to a checked one.
  globalThis.__TEST_TMPDIR__ = isolateTempDir();
}
