import { LocalAlarms } from '../../lambdas/adapters/local/local-alarms';
import { LocalBackup } from '../../lambdas/adapters/local/pg-backup';
import type { MigrationConfig, MigrationConfigInput } from '../../lambdas/core/config';
import { runBackfillLocally } from '../../lambdas/adapters/local/local-backfill';
import type { OrchestratorDeps } from '../../lambdas/core/orchestrator';
import type { ParameterPort } from '../../lambdas/ports/parameters';
import type { QueuePort } from '../../lambdas/ports/queue';
import { runPrepare } from '../../lambdas/core/prepare';
import { seedV1, testConfig } from './fixtures';
import { freshDatabases, type TestDatabases } from './pg';
import { ENV } from './servers';

/** The folder of this jest run's backups (made by global setup, removed by teardown). */
export function testBackupDir(): string {
  const dir = process.env[ENV.backupDir];
  if (!dir) throw new Error(`${ENV.backupDir} is not set: run the tests through jest`);
  return dir;
}

/** The local backup of a test V1, as the rehearsal makes it (pg_dump where it matches, else the export). */
export function testBackup(dbs: Pick<TestDatabases, 'v1Url'>, config?: MigrationConfig): LocalBackup {
  return new LocalBackup({
    v1Url: dbs.v1Url,
    v1Schema: config?.schemas.v1 ?? 'public',
    mode: 'auto',
    directory: testBackupDir(),
  });
}

/** Runs Phase 1 against a test database pair. */
export async function prepared(dbs: TestDatabases, config: MigrationConfig) {
  return runPrepare({ v1: dbs.v1, v2: dbs.v2, config, actor: 'test', backup: testBackup(dbs, config) });
}

/** A stable fingerprint of a V2 table's content (ids of telemetry excluded: they are surrogate). */
export async function v2Fingerprint(dbs: TestDatabases, table: string): Promise<{ n: number; h: string }> {
  const sql =
    table === 'telemetry'
      ? `SELECT count(*)::int AS n, md5(string_agg(row(tenant_id, device_id, "timestamp", metrics, protocol, source, quality, legacy_id)::text, '|' ORDER BY legacy_id)) AS h FROM telemetry`
      : `SELECT count(*)::int AS n, md5(string_agg(t::text, '|' ORDER BY id)) AS h FROM ${table} t`;
  return (await dbs.v2.query(sql)).rows[0];
}

/**
 * What the orchestrator runs with on the test databases, as the rehearsal wires it: the given
 * parameters and worker queue, local alarms (none firing) and a pg_dump backup of V1.
 */
export function localOrchestratorDeps(
  dbs: TestDatabases,
  config: MigrationConfig,
  parameters: ParameterPort,
  queue: QueuePort,
): OrchestratorDeps {
  return {
    v1: dbs.v1,
    v2: dbs.v2,
    config,
    parameters,
    alarms: new LocalAlarms(),
    queue,
    backup: testBackup(dbs),
  };
}

/**
 * What most suites start from: fresh V1 and V2 databases on the embedded server, V1 seeded,
 * Phase 1 done, and with `backfilled` the whole backfill run.
 */
export async function preparedDatabases(
  prefix: string,
  seed: Parameters<typeof seedV1>[1],
  options: { config?: Partial<MigrationConfigInput>; backfilled?: boolean } = {},
): Promise<{ dbs: TestDatabases; config: MigrationConfig }> {
  const dbs = await freshDatabases(prefix);
  await seedV1(dbs.v1, seed);
  const config = testConfig(dbs, options.config);
  await prepared(dbs, config);
  if (options.backfilled) await runBackfillLocally({ v1: dbs.v1, v2: dbs.v2, config });
  return { dbs, config };
}
