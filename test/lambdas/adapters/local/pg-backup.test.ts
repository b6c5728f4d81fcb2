import { readdirSync, readFileSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from 'pg';
import { backupName } from '../../../../lambdas/adapters/local/backup-name';
import { LocalBackup, restoreAndCheck } from '../../../../lambdas/adapters/local/pg-backup';
import { BackupError, InvalidInputError } from '../../../../lambdas/core/errors';
import { restoreFlags } from '../../../../bin/restore-backup';
import { parseArgs } from '../../../../bin/cli-args';
import { rowCounts, seedV1 } from '../../../support/fixtures';
import { testBackupDir } from '../../../support/migration';
import { extraDatabase, freshDatabases, testUrl, type TestDatabases } from '../../../support/pg';
import { describeOnTimescale, type TestServerKind } from '../../../support/servers';

describe('backup names', () => {
  it('never repeat, even for many backups in the same millisecond', () => {
    const now = new Date('2026-11-26T10:00:11.123Z');
    const names = new Set(Array.from({ length: 2000 }, () => backupName('v1_before_migration', now)));
    expect(names.size).toBe(2000);
    expect(backupName('V1 before-migration!', now, 'abc123')).toBe(
      'v1_before_migration__20261126t100011123_abc123',
    );
  });
});

/**
 * A live V1: one session sits idle in an open transaction for the whole backup, and another
 * keeps inserting, updating and deleting telemetry and alerts until told to stop.
 */
async function liveV1(dbs: TestDatabases) {
  const held = new Client({ connectionString: dbs.v1Url });
  await held.connect();
  await held.query('BEGIN');
  await held.query('SELECT count(*) FROM users');
  const writer = new Client({ connectionString: dbs.v1Url });
  await writer.connect();
  let stop = false;
  let writes = 0;
  const device = (await writer.query('SELECT id FROM devices ORDER BY id LIMIT 1')).rows[0].id as string;
  const loop = (async () => {
    while (!stop) {
      // One transaction: a snapshot sees all of an iteration's writes or none.
      await writer.query('BEGIN');
      await writer.query(
        `INSERT INTO device_data ("deviceId", "timestamp", data, protocol) VALUES ($1, now(), '{"live": true}', 'MQTT')`,
        [device],
      );
      await writer.query(
        `UPDATE device_data SET data = jsonb_build_object('n', $1::int) WHERE id = (SELECT min(id) FROM device_data)`,
        [writes],
      );
      // An alert replaced by a new one: the count stays, the rows change.
      await writer.query(`DELETE FROM alerts WHERE id = (SELECT min(id) FROM alerts)`);
      await writer.query(
        `INSERT INTO alerts (id, "deviceId", severity, message) VALUES ('live_' || $1::text, $2, 'LOW', 'live')`,
        [String(writes).padStart(6, '0'), device],
      );
      await writer.query('COMMIT');
      writes++;
    }
  })();
  return {
    held,
    get writes() {
      return writes;
    },
    async stop() {
      stop = true;
      await loop;
      await writer.end();
      await held.query('ROLLBACK');
      await held.end();
    },
  };
}

function backupScenario(server: TestServerKind, method: 'pg_dump' | 'export') {
  let dbs: TestDatabases;
  beforeAll(async () => {
    dbs = await freshDatabases(`backup_${method}`, server);
    await seedV1(dbs.v1, { devices: 15, telemetry: 20_000, seed: 8 });
  });
  afterAll(() => dbs.drop());

  it(`backs up a V1 that has an open session and concurrent writes (${method}), and the check restores it equal to its snapshot`, async () => {
    const backup = new LocalBackup({
      v1Url: dbs.v1Url,
      v1Schema: 'public',
      mode: 'auto',
      directory: testBackupDir(),
    });
    const before = await rowCounts(dbs.v1, 'public');
    const live = await liveV1(dbs);
    let ref;
    let verification;
    try {
      // Let the writes get going, then back up and check while they continue.
      while (live.writes < 5) await new Promise((r) => setTimeout(r, 5));
      ref = await backup.start('v1_before_migration');
      const writesDuringBackup = live.writes;
      verification = await backup.verify(ref, before);
      expect(live.writes).toBeGreaterThan(writesDuringBackup);
    } finally {
      await live.stop();
    }
    expect(ref.kind).toBe(method);
    expect(backup.lastChoice).toMatch(method === 'pg_dump' ? /pg_dump \d+ matches/ : /built-in export/);
    const evidence = verification.evidence as {
      tables: Record<string, number>;
      restoreCheck: { passed: boolean; tablesCompared: number };
    };
    expect(evidence.restoreCheck).toMatchObject({ passed: true, tablesCompared: 4 });
    // The snapshot sits between the counts before and after the writes.
    const after = await rowCounts(dbs.v1, 'public');
    expect(evidence.tables.device_data).toBeGreaterThan(before.device_data);
    expect(evidence.tables.device_data).toBeLessThan(after.device_data);
    expect(evidence.tables.alerts).toBe(before.alerts);

    // The documented restore, into a database of one's own: equal to the snapshot again, with
    // keys, foreign keys and sequences in place (the restored V1 takes new rows).
    const target = await extraDatabase(`${dbs.v1Name}_restored`, server);
    try {
      const restored = await restoreAndCheck(ref.location, target.url);
      expect(restored.differing).toEqual([]);
      expect(restored.tables.device_data.rows).toBe(evidence.tables.device_data);
      const inserted = await target.pool.query(
        `INSERT INTO device_data ("deviceId", "timestamp", data, protocol) SELECT id, now(), '{}', 'x' FROM devices LIMIT 1 RETURNING id`,
      );
      expect(Number(inserted.rows[0].id)).toBeGreaterThan(evidence.tables.device_data);
      await expect(
        target.pool.query(
          `INSERT INTO device_data ("deviceId", "timestamp", data, protocol) VALUES ('no such device', now(), '{}', 'x')`,
        ),
      ).rejects.toThrow(/foreign key/);
      await expect(
        target.pool.query(
          `INSERT INTO users (id, email, "passwordHash", role, "updatedAt") VALUES ('u', 'e', 'h', 'NOPE', now())`,
        ),
      ).rejects.toThrow(/enum/);
    } finally {
      await target.drop();
    }
  });

  it(`fails the check, naming the table, when the backup (${method}) lost rows`, async () => {
    const backup = new LocalBackup({
      v1Url: dbs.v1Url,
      v1Schema: 'public',
      mode: 'auto',
      directory: testBackupDir(),
    });
    const ref = await backup.start('tampered');
    if (ref.kind === 'export') {
      // The alerts file loses its rows.
      const manifest = JSON.parse(readFileSync(join(ref.location, 'manifest.json'), 'utf8')) as {
        tables: { name: string; file: string }[];
      };
      truncateSync(join(ref.location, manifest.tables.find((t) => t.name === 'alerts')!.file), 0);
      const error = await backup.verify(ref, {}).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(BackupError);
      expect((error as Error).message).toMatch(/alerts has 0 rows \(V1 had \d+\)/);
    } else {
      truncateSync(join(ref.location, 'v1.pgdump'), 1000);
      await expect(backup.verify(ref, {})).rejects.toThrow(BackupError);
    }
    // The scratch database of the check is gone either way.
    const left = await dbs.v1.query(`SELECT datname FROM pg_database WHERE datname LIKE 'tampered%'`);
    expect(left.rows).toEqual([]);
  });
}

describe('local backup on embedded PostgreSQL (no pg_dump of its major version: built-in export)', () => {
  backupScenario('embedded', 'export');

  it('refuses mode pg_dump without a matching pg_dump, naming the version, and writes nothing', async () => {
    const dbs = await freshDatabases('backup_nodump');
    try {
      await seedV1(dbs.v1, { devices: 2, telemetry: 10 });
      const dir = join(testBackupDir(), 'nodump');
      const backup = new LocalBackup({
        v1Url: dbs.v1Url,
        v1Schema: 'public',
        mode: 'pg_dump',
        directory: dir,
      });
      await expect(backup.start('x')).rejects.toThrow(/backup mode pg_dump needs pg_dump 17/);
      expect(() => readdirSync(dir)).toThrow();
    } finally {
      await dbs.drop();
    }
  });

  it('says which backup is missing or unfinished', async () => {
    const backup = new LocalBackup({
      v1Url: testUrl('postgres'),
      v1Schema: 'public',
      mode: 'auto',
      directory: testBackupDir(),
    });
    await expect(
      backup.verify({ id: 'gone', kind: 'export', location: '/nonexistent/gone' }, {}),
    ).rejects.toThrow(/\/nonexistent\/gone is missing or holds no finished backup/);
    expect(await backup.status({ id: 'gone', kind: 'export', location: '/nonexistent/gone' })).toBe('failed');
  });

  it('restore command: names a bad flag', () => {
    expect(() => parseArgs(['--backup', 'x', '--target-url', 'mysql://x'], restoreFlags)).toThrow(
      InvalidInputError,
    );
    expect(() => parseArgs(['--backup', 'x', '--target-url', 'mysql://x'], restoreFlags)).toThrow(
      /--target-url/,
    );
  });
});

describeOnTimescale('local backup on PostgreSQL 15 (pg_dump 15 matches)', () => {
  backupScenario('timescaledb', 'pg_dump');
});
