import { readFileSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { openPool } from '../../../lambdas/core/db';
import { BackupError, DatabaseConnectionError, V1SchemaMismatchError } from '../../../lambdas/core/errors';
import { runPrepare } from '../../../lambdas/core/prepare';
import type { BackupPort } from '../../../lambdas/ports/backup';
import { freshDatabases, type TestDatabases } from '../../support/pg';
import { rowCounts, seedV1, testConfig } from '../../support/fixtures';
import { testBackup } from '../../support/migration';

let dbs: TestDatabases;
beforeAll(async () => {
  dbs = await freshDatabases('prepare');
  await seedV1(dbs.v1, { devices: 15, telemetry: 3000, seed: 3 });
});
afterAll(() => dbs.drop());

const backupFor = (d: TestDatabases) => testBackup(d);

describe('Phase 1: prepare', () => {
  it('backs up, deploys V2, sets up storage and the tenant; a second run changes nothing', async () => {
    const config = testConfig(dbs);
    const first = await runPrepare({ v1: dbs.v1, v2: dbs.v2, config, backup: backupFor(dbs), actor: 'test' });
    expect(first.steps.map((s) => [s.step, s.outcome])).toEqual([
      ['check-v1', 'unchanged'],
      ['backup', 'done'],
      ['deploy-v2', 'done'],
      ['telemetry-storage', 'done'],
      ['default-tenant', 'done'],
    ]);
    expect(first.storage.kind).toBe('partitioned');
    const tenant = await dbs.v2.query('SELECT id, name, slug, plan, status FROM tenants');
    expect(tenant.rows).toEqual([
      {
        id: 'default_tenant_id',
        name: 'Default Tenant',
        slug: 'default',
        plan: 'ENTERPRISE',
        status: 'ACTIVE',
      },
    ]);
    const backup = await dbs.v2.query('SELECT kind, location, verified_at FROM migration_control.backups');
    expect(backup.rows).toHaveLength(1);
    expect(backup.rows[0].verified_at).toBeInstanceOf(Date);
    // The backup was restored into a scratch database and found equal to V1: the step says so.
    const step = first.steps.find((s) => s.step === 'backup')!;
    expect(step.evidence).toMatchObject({
      kind: 'export',
      tables: await rowCounts(dbs.v1, 'public'),
      restoreCheck: { passed: true, tablesCompared: 4 },
    });
    const audit = await dbs.v2.query(
      `SELECT details FROM migration_control.audit_log WHERE action = 'backup.created'`,
    );
    expect(audit.rows[0].details.restoreCheck).toMatchObject({ passed: true });

    const before = {
      v2: await rowCounts(dbs.v2, 'public'),
      control: await rowCounts(dbs.v2, 'migration_control'),
    };
    const second = await runPrepare({
      v1: dbs.v1,
      v2: dbs.v2,
      config,
      backup: backupFor(dbs),
      actor: 'test',
    });
    expect(second.steps.every((s) => s.outcome === 'unchanged')).toBe(true);
    expect({
      v2: await rowCounts(dbs.v2, 'public'),
      control: await rowCounts(dbs.v2, 'migration_control'),
    }).toEqual(before);
  });

  it('fails loudly when the backup is not usable, before deploying anything', async () => {
    const local = await freshDatabases('badbackup');
    try {
      await seedV1(local.v1, { devices: 5, telemetry: 100 });
      const real = backupFor(local);
      // A backup that completes but lost rows: its alerts are emptied before the check.
      const tampering: BackupPort = {
        start: async (label) => {
          const ref = await real.start(label);
          const manifest = JSON.parse(readFileSync(join(ref.location, 'manifest.json'), 'utf8')) as {
            tables: { name: string; file: string }[];
          };
          truncateSync(join(ref.location, manifest.tables.find((t) => t.name === 'alerts')!.file), 0);
          return ref;
        },
        status: (ref) => real.status(ref),
        verify: (ref, counts) => real.verify(ref, counts),
      };
      const run = runPrepare({
        v1: local.v1,
        v2: local.v2,
        config: testConfig(local),
        backup: tampering,
        actor: 'test',
      });
      await expect(run).rejects.toThrow(BackupError);
      await expect(run).rejects.toThrow(/alerts has 0 rows \(V1 had 10\)/);
      const tables = await local.v2.query(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = 'public'",
      );
      expect(tables.rows).toHaveLength(0);
      const verified = await local.v2.query(
        'SELECT 1 FROM migration_control.backups WHERE verified_at IS NOT NULL',
      );
      expect(verified.rows).toHaveLength(0);
    } finally {
      await local.drop();
    }
  });

  it('reports a backup that vanished as unusable', async () => {
    const backup = backupFor(dbs);
    await expect(
      backup.verify({ id: 'nope', kind: 'export', location: '/nonexistent/no_such_backup' }, { users: 1 }),
    ).rejects.toThrow(/no_such_backup is missing or holds no finished backup/);
    await expect(
      backup.verify({ id: 'x', kind: 'pg_dump', location: '/nonexistent/file.dump' }, {}),
    ).rejects.toThrow(BackupError);
  });

  it('refuses a V1 without the expected tables and columns, listing them, and changes nothing', async () => {
    const local = await freshDatabases('badv1');
    try {
      await seedV1(local.v1, { devices: 3, telemetry: 10 });
      await local.v1.query('DROP TABLE alerts');
      await local.v1.query('ALTER TABLE devices DROP COLUMN "lastSeenAt"');
      const run = runPrepare({
        v1: local.v1,
        v2: local.v2,
        config: testConfig(local),
        backup: backupFor(local),
        actor: 'test',
      });
      await expect(run).rejects.toThrow(V1SchemaMismatchError);
      await expect(run).rejects.toMatchObject({
        missing: ['column devices.lastSeenAt', 'table public.alerts'],
      });
      const schemas = await local.v2.query(
        "SELECT 1 FROM information_schema.schemata WHERE schema_name = 'migration_control'",
      );
      expect(schemas.rows).toHaveLength(0);
    } finally {
      await local.drop();
    }
  });

  it('names the problem for a wrong password, a missing database and a closed port', async () => {
    const good = new URL(dbs.v1Url);
    const wrongPassword = new URL(good);
    wrongPassword.password = 'wrong';
    await expect(openPool({ url: wrongPassword.toString() }, 'V1')).rejects.toThrow(
      /Cannot connect to the V1 database .*password authentication failed/,
    );
    const missing = new URL(good);
    missing.pathname = '/no_such_database';
    await expect(openPool({ url: missing.toString() }, 'V1')).rejects.toThrow(
      /database "no_such_database" does not exist/,
    );
    const closed = new URL(good);
    closed.port = '1';
    const error = await openPool({ url: closed.toString() }, 'V2').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DatabaseConnectionError);
    expect((error as Error).message).toMatch(/connection refused/);
    expect((error as Error).message).not.toContain(good.password);
  });
});
