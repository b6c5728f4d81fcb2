import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MigrationApplyError, MigrationChecksumMismatchError } from '../../../lambdas/core/errors';
import { migrate, projectMigrationSets, readMigrationFiles } from '../../../lambdas/core/migrator';
import { freshDatabases, type TestDatabases } from '../../support/pg';

let dbs: TestDatabases;
beforeAll(async () => {
  dbs = await freshDatabases('migrator');
});
const scratchDirs: string[] = [];
afterAll(async () => {
  for (const dir of scratchDirs) rmSync(dir, { recursive: true, force: true });
  await dbs.drop();
});

function scratchSet(files: Record<string, string>) {
  const dir = mkdtempSync(join(tmpdir(), 'migr-'));
  scratchDirs.push(dir);
  for (const [name, sql] of Object.entries(files)) writeFileSync(join(dir, name), sql);
  return dir;
}

const tables = async (schema: string) =>
  (
    await dbs.v2.query<{ table_name: string }>(
      'SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1',
      [schema],
    )
  ).rows.map((r) => r.table_name);

describe('migrator', () => {
  it('applies the project sets in order, records checksums, and re-runs as a no-op', async () => {
    const sets = projectMigrationSets({ v2: 'mig_v2', control: 'mig_ctl' });
    const first = [];
    for (const set of sets) first.push(await migrate(dbs.v2, 'mig_ctl', set));
    expect(first.map((r) => r.applied)).toEqual(sets.map((set) => set.files.map((f) => f.name)));
    expect(first[0].applied[0]).toBe('0001_control_schema.sql');
    expect(await tables('mig_v2')).toEqual(
      expect.arrayContaining(['tenants', 'users', 'device_templates', 'devices', 'alerts']),
    );
    const history = await dbs.v2.query(
      'SELECT migration_set, name, checksum FROM mig_ctl.schema_migrations ORDER BY 1, 2',
    );
    expect(history.rows).toEqual(
      sets.flatMap((set) =>
        set.files.map((f) => ({ migration_set: set.set, name: f.name, checksum: f.checksum })),
      ),
    );

    for (const set of sets) {
      const again = await migrate(dbs.v2, 'mig_ctl', set);
      expect(again.applied).toEqual([]);
    }
    expect((await dbs.v2.query('SELECT count(*)::int AS n FROM mig_ctl.schema_migrations')).rows[0].n).toBe(
      sets.reduce((n, set) => n + set.files.length, 0),
    );
  });

  it('refuses an edited applied file with a named error and applies nothing else', async () => {
    const dir = scratchSet({ '0001_a.sql': 'CREATE TABLE a (x int);' });
    await migrate(dbs.v2, 'edit_ctl', { set: 'edit', schema: 'edit_s', files: readMigrationFiles(dir) });
    writeFileSync(join(dir, '0001_a.sql'), 'CREATE TABLE a (x int, y int);');
    writeFileSync(join(dir, '0002_b.sql'), 'CREATE TABLE b (x int);');

    const run = migrate(dbs.v2, 'edit_ctl', {
      set: 'edit',
      schema: 'edit_s',
      files: readMigrationFiles(dir),
    });
    await expect(run).rejects.toThrow(MigrationChecksumMismatchError);
    await expect(run).rejects.toThrow(/edit\/0001_a\.sql/);
    expect(await tables('edit_s')).toEqual(['a']);
    const cols = await dbs.v2.query(
      "SELECT column_name FROM information_schema.columns WHERE table_schema = 'edit_s' AND table_name = 'a'",
    );
    expect(cols.rows).toEqual([{ column_name: 'x' }]);
  });

  it('rolls back a failing file entirely and records nothing for it', async () => {
    const dir = scratchSet({
      '0001_ok.sql': 'CREATE TABLE ok (x int);',
      '0002_bad.sql': 'CREATE TABLE half (x int); SELECT no_such_function();',
    });
    const run = migrate(dbs.v2, 'fail_ctl', {
      set: 'fail',
      schema: 'fail_s',
      files: readMigrationFiles(dir),
    });
    await expect(run).rejects.toThrow(MigrationApplyError);
    expect(await tables('fail_s')).toEqual(['ok']);
    const history = await dbs.v2.query('SELECT name FROM fail_ctl.schema_migrations');
    expect(history.rows).toEqual([{ name: '0001_ok.sql' }]);
  });
});
