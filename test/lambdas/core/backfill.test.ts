import { LocalQueue } from '../../../lambdas/adapters/local/local-queue';
import { runBackfillLocally } from '../../../lambdas/adapters/local/local-backfill';
import {
  backfillProgress,
  copyWindow,
  planBackfill,
  pumpBackfill,
  type BackfillDeps,
} from '../../../lambdas/core/backfill';
import type { MigrationConfig } from '../../../lambdas/core/config';
import { parseWorkMessage } from '../../../lambdas/core/work-messages';
import {
  BackfillFailedError,
  InvalidMessageError,
  ParentRowsMissingError,
  UnmappableRowError,
} from '../../../lambdas/core/errors';
import type { MappedTable } from '../../../lambdas/core/mapping';
import { telemetryWindowDevices } from '../../../lambdas/core/sync/window-copy';
import { loadWindow } from '../../../lambdas/core/windows';
import { copyRidingOutFaults } from '../../../lambdas/core/backfill/retry';
import { workerBatchHandler } from '../../../lambdas/core/worker';
import { Pool } from 'pg';
import { TransientDatabaseError } from '../../../lambdas/core/errors';
import { freshDatabases, testUrl, type TestDatabases } from '../../support/pg';
import { seedV1, testConfig } from '../../support/fixtures';
import { prepared, v2Fingerprint } from '../../support/migration';
import { describeEachStorage, PARTITIONS, type StorageCase } from '../../support/servers';
import { expectAllInSync } from '../../support/in-sync';

const small = {
  batch: { telemetryWindowRows: 2000, entityWindowRows: 7, concurrency: 2, maxReceiveCount: 3 },
};

async function setup(prefix: string, seed = 5, telemetry = 12_000, storage: StorageCase = PARTITIONS) {
  const dbs = await freshDatabases(prefix, storage.server);
  await seedV1(dbs.v1, { devices: 30, telemetry, seed });
  const config = testConfig(dbs, small);
  await prepared(dbs, config);
  const deps: BackfillDeps = { v1: dbs.v1, v2: dbs.v2, config };
  return { dbs, config, deps };
}

const TABLES: MappedTable[] = ['users', 'devices', 'telemetry', 'alerts'];

/** Every V1 row in V2 exactly once, each column as the Phase 3 verifier compares them. */
const expectExactCopy = (dbs: TestDatabases, config: MigrationConfig) => expectAllInSync(dbs, config);

describeEachStorage('backfill', (storage) => {
  let ctx: Awaited<ReturnType<typeof setup>>;
  beforeAll(async () => {
    ctx = await setup('backfill', 5, 12_000, storage);
  });
  afterAll(() => ctx.dbs.drop());

  it('plans windows once: planning again adds none', async () => {
    const first = await planBackfill(ctx.deps);
    expect(first.tables.telemetry.windows).toBe(6);
    expect(first.tables.telemetry.expectedRows).toBe(12_000);
    expect(first.tables.devices.windows).toBe(5);
    const second = await planBackfill(ctx.deps);
    expect(Object.values(second.tables).every((t) => t.planned === 'before')).toBe(true);
    const n = await ctx.dbs.v2.query('SELECT count(*)::int AS n FROM migration_control.windows');
    expect(n.rows[0].n).toBe(Object.values(first.tables).reduce((a, t) => a + t.windows, 0));
  });

  it('retries a window whose parents are not in V2 yet instead of failing it', async () => {
    const w = await ctx.dbs.v2.query(
      "SELECT id FROM migration_control.windows WHERE table_name = 'telemetry' ORDER BY seq LIMIT 1",
    );
    const error = await copyWindow(ctx.deps, Number(w.rows[0].id)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ParentRowsMissingError);
    expect((error as ParentRowsMissingError).retryable).toBe(true);
    expect((await ctx.dbs.v2.query('SELECT count(*)::int AS n FROM telemetry')).rows[0].n).toBe(0);
  });

  it('copies every row exactly once with the exact mapping, stage by stage', async () => {
    const seen: number[] = [];
    const progress = await runBackfillLocally(ctx.deps, { onProgress: (p) => seen.push(p.windowsDone) });
    expect(progress.complete).toBe(true);
    expect(progress.windowsFailed).toBe(0);
    expect(progress.rowsCopied).toBe(progress.rowsExpected);
    expect(seen.length).toBeGreaterThan(1);
    await expectExactCopy(ctx.dbs, ctx.config);
    // One template per tenant and device type.
    const templates = await ctx.dbs.v2.query(
      'SELECT tenant_id, device_type, count(*)::int AS n FROM device_templates GROUP BY 1, 2',
    );
    const types = await ctx.dbs.v1.query('SELECT DISTINCT type FROM devices');
    expect(templates.rows).toHaveLength(types.rows.length);
    expect(templates.rows.every((r) => r.n === 1)).toBe(true);
  });

  it('leaves V2 identical when the whole backfill runs again, and when every message is delivered twice', async () => {
    const before = await Promise.all(TABLES.map((t) => v2Fingerprint(ctx.dbs, t)));
    await ctx.dbs.v2.query("UPDATE migration_control.windows SET status = 'pending'");
    await runBackfillLocally(ctx.deps, {
      wrapHandler: (handler) => async (records) => {
        await handler(records);
        // Redelivery: the same message again, after its window was done, and forced to redo.
        for (const r of records) {
          const message = parseWorkMessage(r.body);
          if (message.type !== 'copy-window') throw new Error(`unexpected ${r.body}`);
          await ctx.dbs.v2.query("UPDATE migration_control.windows SET status = 'queued' WHERE id = $1", [
            message.windowId,
          ]);
        }
        return handler(records);
      },
    });
    expect(await Promise.all(TABLES.map((t) => v2Fingerprint(ctx.dbs, t)))).toEqual(before);
    const paths = await ctx.dbs.v2.query(
      "SELECT sum(rows_inserted)::int AS inserted FROM migration_control.windows WHERE table_name = 'telemetry'",
    );
    expect(paths.rows[0].inserted).toBe(0);
  });

  it('runs two workers on the same window at once without duplicating a row', async () => {
    const w = await ctx.dbs.v2.query(
      "SELECT id FROM migration_control.windows WHERE table_name = 'telemetry' ORDER BY seq LIMIT 1",
    );
    const id = Number(w.rows[0].id);
    await ctx.dbs.v2.query(
      'DELETE FROM telemetry WHERE legacy_id IN (SELECT legacy_id FROM telemetry ORDER BY "timestamp", legacy_id LIMIT 2000)',
    );
    await ctx.dbs.v2.query("UPDATE migration_control.windows SET status = 'queued' WHERE id = $1", [id]);
    const results = await Promise.all([
      copyWindow(ctx.deps, id),
      copyWindow(ctx.deps, id).catch((e: Error) => e),
    ]);
    expect(results.some((r) => !(r instanceof Error) && r.rowsInserted === 2000)).toBe(true);
    await expectExactCopy(ctx.dbs, ctx.config);
  });

  it('takes the staging path with ON CONFLICT DO NOTHING when a window is partly in V2, inserting only what is missing', async () => {
    const w = await ctx.dbs.v2.query(
      "SELECT id FROM migration_control.windows WHERE table_name = 'telemetry' ORDER BY seq OFFSET 2 LIMIT 1",
    );
    const id = Number(w.rows[0].id);
    const gone = await ctx.dbs.v2.query(
      `DELETE FROM telemetry WHERE legacy_id IN (SELECT legacy_id FROM telemetry ORDER BY "timestamp", legacy_id OFFSET 4100 LIMIT 7) RETURNING legacy_id`,
    );
    expect(gone.rowCount).toBe(7);
    await ctx.dbs.v2.query("UPDATE migration_control.windows SET status = 'queued' WHERE id = $1", [id]);
    const result = await copyWindow(ctx.deps, id);
    expect(result).toMatchObject({ path: 'staging', rowsCopied: 2000, rowsInserted: 7 });
    await expectExactCopy(ctx.dbs, ctx.config);
  });
});

describeEachStorage('backfill failures', (storage) => {
  let ctx: Awaited<ReturnType<typeof setup>>;
  beforeAll(async () => {
    ctx = await setup('backfill_fail', 9, 6000, storage);
  });
  afterAll(() => ctx.dbs.drop());

  it('loses nothing when a worker dies mid-window, and sends a poison message to the DLQ while the rest completes', async () => {
    let killed = 0;
    const queue = new LocalQueue({
      visibilityTimeoutMs: 60_000,
      maxReceiveCount: 3,
      concurrency: 2,
      retryDelayMs: 10,
      batchSize: 5,
    });
    const handler = workerBatchHandler(ctx.deps);
    queue.start(async (records) => {
      // Kill the V2 session of the first telemetry window while it is copying.
      for (const r of records) {
        let msg: { type?: string; windowId?: number } = {};
        try {
          msg = JSON.parse(r.body);
        } catch {
          // the poison message: the worker itself must cope with it
        }
        if (
          killed === 0 &&
          msg.type === 'copy-window' &&
          typeof msg.windowId === 'number' &&
          r.receiveCount === 1
        ) {
          const w = await ctx.dbs.v2.query('SELECT table_name FROM migration_control.windows WHERE id = $1', [
            msg.windowId,
          ]);
          if (w.rows[0].table_name === 'telemetry') {
            killed++;
            const killer = setInterval(() => {
              void ctx.dbs.v2.query(
                // This database's running COPYs only: the server is shared with other suites, and
                // pg_stat_activity shows an idle session's last query too.
                `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                  WHERE datname = current_database() AND state = 'active'
                    AND query LIKE 'COPY%telemetry%' AND pid <> pg_backend_pid()`,
              );
            }, 5);
            try {
              return await handler(records);
            } finally {
              clearInterval(killer);
            }
          }
        }
      }
      return handler(records);
    });
    await queue.sendAll(['{"type":"copy-window","windowId":"not-a-number"}', 'garbage']);
    await planBackfill(ctx.deps);
    for (let i = 0; i < 200; i++) {
      const { progress } = await pumpBackfill({ ...ctx.deps, queue });
      if (progress.complete) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    await queue.whenIdle();
    await queue.stop();
    expect(killed).toBe(1);
    expect((await backfillProgress(ctx.dbs.v2, ctx.config)).complete).toBe(true);
    expect(
      queue
        .dlq()
        .map((d) => d.body)
        .sort(),
    ).toEqual(['garbage', '{"type":"copy-window","windowId":"not-a-number"}'].sort());
    expect(queue.dlq().every((d) => d.receiveCount === 3)).toBe(true);
    const v1n = (await ctx.dbs.v1.query('SELECT count(*)::int AS n FROM device_data')).rows[0].n;
    expect((await v2Fingerprint(ctx.dbs, 'telemetry')).n).toBe(v1n);
    const dupes = await ctx.dbs.v2.query('SELECT legacy_id FROM telemetry GROUP BY 1 HAVING count(*) > 1');
    expect(dupes.rows).toEqual([]);
  });

  it('names malformed messages', () => {
    expect(() => parseWorkMessage('garbage')).toThrow(InvalidMessageError);
    expect(() => parseWorkMessage('{"type":"copy-window","windowId":-1}')).toThrow(/windowId/);
    expect(() => parseWorkMessage('{"type":"copy-window","windowId":1,"rows":[1]}')).toThrow(
      InvalidMessageError,
    );
  });
});

describeEachStorage('backfill with concurrent writes and bad rows', (storage) => {
  let ctx: Awaited<ReturnType<typeof setup>>;
  beforeAll(async () => {
    ctx = await setup('backfill_race', 11, 4000, storage);
  });
  afterAll(() => ctx.dbs.drop());

  it('never overwrites rows written to both sides while it runs', async () => {
    const tenant = ctx.config.tenant.id;
    const user = (await ctx.dbs.v1.query('SELECT * FROM users ORDER BY id LIMIT 1')).rows[0];
    const device = (
      await ctx.dbs.v1.query(
        'SELECT * FROM devices d WHERE EXISTS (SELECT 1 FROM device_data t WHERE t."deviceId" = d.id) ORDER BY id LIMIT 1',
      )
    ).rows[0];
    const reading = (
      await ctx.dbs.v1.query('SELECT * FROM device_data WHERE "deviceId" = $1 ORDER BY id LIMIT 1', [
        device.id,
      ])
    ).rows[0];
    // The backend updates V1 then V2 (dual write) before the backfill reaches these rows.
    await ctx.dbs.v1.query(`UPDATE users SET name = 'renamed' WHERE id = $1`, [user.id]);
    await ctx.dbs.v2.query(
      `INSERT INTO users (id, tenant_id, email, name, password_hash, role, created_at, updated_at)
       VALUES ($1, $2, $3, 'renamed', $4, $5, now(), now())`,
      [user.id, tenant, user.email, user.passwordHash, user.role],
    );
    await ctx.dbs.v2.query(
      `INSERT INTO device_templates (id, tenant_id, device_type, name) VALUES ('tpl_custom', $1, $2, 'custom') ON CONFLICT DO NOTHING`,
      [tenant, device.type],
    );
    await ctx.dbs.v2.query(
      `INSERT INTO devices (id, tenant_id, template_id, name, status, owner_id, updated_at)
       VALUES ($1, $2, (SELECT id FROM device_templates WHERE tenant_id = $2 AND device_type = $3), 'newer name', 'ONLINE', NULL, now())`,
      [device.id, tenant, device.type],
    );
    await ctx.dbs.v2.query(
      `INSERT INTO telemetry (tenant_id, device_id, "timestamp", metrics, protocol, source, quality, legacy_id)
       VALUES ($1, $2, $3::timestamp AT TIME ZONE 'UTC', '{"newer": true}', 'MQTT', 'live', 'GOOD', $4)`,
      [tenant, reading.deviceId, reading.timestamp, reading.id],
    );
    await runBackfillLocally(ctx.deps);
    expect((await ctx.dbs.v2.query('SELECT name FROM users WHERE id = $1', [user.id])).rows[0].name).toBe(
      'renamed',
    );
    expect((await ctx.dbs.v2.query('SELECT name FROM devices WHERE id = $1', [device.id])).rows[0].name).toBe(
      'newer name',
    );
    const t = await ctx.dbs.v2.query('SELECT metrics, source FROM telemetry WHERE legacy_id = $1', [
      reading.id,
    ]);
    expect(t.rows).toEqual([{ metrics: { newer: true }, source: 'live' }]);
    // Devices of that type use the template that already existed.
    const tpl = await ctx.dbs.v2.query(
      `SELECT DISTINCT d.template_id FROM devices d JOIN device_templates t ON t.id = d.template_id WHERE t.device_type = $1`,
      [device.type],
    );
    expect(tpl.rows).toEqual([{ template_id: 'tpl_custom' }]);
  });

  it('checks telemetry parents once per window: a device deleted while its window copies leaves no row behind', async () => {
    const race = await setup('backfill_del', 13, 4000, storage);
    const { dbs, deps, config } = race;
    const holder = await dbs.v2.connect();
    const deleter = await dbs.v2.connect();
    try {
      await planBackfill(deps);
      const parents = await dbs.v2.query(
        `SELECT id FROM migration_control.windows WHERE table_name IN ('users', 'devices') ORDER BY id`,
      );
      for (const r of parents.rows) await copyWindow(deps, Number(r.id));
      const windowId = Number(
        (
          await dbs.v2.query(
            `SELECT id FROM migration_control.windows WHERE table_name = 'telemetry' ORDER BY seq LIMIT 1`,
          )
        ).rows[0].id,
      );
      const reader = await dbs.v1.connect();
      let device: string;
      try {
        await reader.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
        device = (
          await telemetryWindowDevices(reader, config, await loadWindow(dbs.v2, config, windowId))
        )[0];
        await reader.query('COMMIT');
      } finally {
        reader.release();
      }
      /** Until a V2 session runs a statement starting with `prefix` and waits for a lock. */
      const waitingOnLock = async (prefix: string) => {
        for (let i = 0; i < 6000; i++) {
          const { rows } = await dbs.v2.query(
            `SELECT 1 FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE $1 || '%'`,
            [prefix],
          );
          if (rows.length > 0) return;
          await new Promise((r) => setTimeout(r, 20));
        }
        throw new Error(`no session waits on a lock running ${prefix}…`);
      };
      // The window's COPY waits behind a lock on telemetry while the device is deleted from V2
      // (a dual write): its cascade, which cannot see the window's rows, runs and commits first.
      // The window, checking its devices after its COPY, must then fail and leave nothing.
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE telemetry IN SHARE MODE');
      const copying = copyWindow(deps, windowId).catch((e: unknown) => e);
      await waitingOnLock('COPY');
      await deleter.query('BEGIN');
      const deleting = deleter.query('DELETE FROM devices WHERE id = $1', [device]);
      await waitingOnLock('DELETE FROM devices');
      await holder.query('COMMIT');
      expect((await deleting).rowCount).toBe(1);
      await deleter.query('COMMIT');
      const error = await copying;
      expect(error).toBeInstanceOf(ParentRowsMissingError);
      expect((error as Error).message).toContain(device);
      const count = async (sql: string) => (await dbs.v2.query(sql)).rows[0].n;
      expect(await count('SELECT count(*)::int AS n FROM telemetry')).toBe(0);
      // The dual write deletes the device from V1 too; the window's next delivery then copies
      // every other device's rows, its devices checked once, not row by row.
      await dbs.v1.query('DELETE FROM device_data WHERE "deviceId" = $1', [device]);
      await dbs.v1.query('DELETE FROM alerts WHERE "deviceId" = $1', [device]);
      await dbs.v1.query('DELETE FROM devices WHERE id = $1', [device]);
      const result = await copyWindow(deps, windowId);
      expect(result).toMatchObject({ path: 'fast', foreignKeys: 'window' });
      expect(result.rowsCopied).toBeGreaterThan(0);
      expect(await count('SELECT count(*)::int AS n FROM telemetry')).toBe(result.rowsCopied);
      // No V2 row without its device.
      expect(
        await count(
          'SELECT count(*)::int AS n FROM telemetry t WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.id = t.device_id)',
        ),
      ).toBe(0);
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      await deleter.query('ROLLBACK').catch(() => undefined);
      holder.release();
      deleter.release();
      await dbs.drop();
    }
  });

  it('fails a window loudly, naming the V1 row it cannot map', async () => {
    const dbs = await freshDatabases('backfill_bad', storage.server);
    try {
      await seedV1(dbs.v1, { devices: 5, telemetry: 50 });
      await dbs.v1.query(`ALTER TYPE "UserRole" ADD VALUE 'SUPERADMIN'`);
      await dbs.v1.query(
        `INSERT INTO users (id, email, "passwordHash", role, "updatedAt") VALUES ('zz_bad_user', 'bad@example.com', 'h', 'SUPERADMIN', now())`,
      );
      const config = testConfig(dbs, { batch: { ...small.batch, maxReceiveCount: 2 } });
      await prepared(dbs, config);
      const failures: Error[] = [];
      const run = runBackfillLocally(
        { v1: dbs.v1, v2: dbs.v2, config },
        { hooks: { onError: (_r, e) => failures.push(e) } },
      );
      await expect(run).rejects.toThrow(BackfillFailedError);
      await expect(run).rejects.toThrow(/users\.id=zz_bad_user/);
      expect(failures[0]).toBeInstanceOf(UnmappableRowError);
      expect((failures[0] as UnmappableRowError).rowKey).toBe('users.id=zz_bad_user');
      // The window failed as a whole: none of its rows is in V2.
      expect(
        (await dbs.v2.query(`SELECT count(*)::int AS n FROM users WHERE id = 'zz_bad_user'`)).rows[0].n,
      ).toBe(0);
    } finally {
      await dbs.drop();
    }
  });
});

describe('backfill lock waits', () => {
  let ctx: Awaited<ReturnType<typeof setup>>;
  let v2: Pool;
  beforeAll(async () => {
    ctx = await setup('backfill_lock', 11, 1000);
    await planBackfill(ctx.deps);
    // V2 sessions that give up on a lock after 100 ms (SQLSTATE 55P03), as a V2 whose role or
    // database sets lock_timeout does.
    v2 = new Pool({ connectionString: testUrl(ctx.dbs.v2Name), options: '-c lock_timeout=100' });
    v2.on('error', () => undefined);
  });
  afterAll(async () => {
    await v2.end();
    await ctx.dbs.drop();
  });

  /** A window of `table` not copied yet, and a transaction holding that V2 table against inserts. */
  async function lockedWindow(table: 'users' | 'telemetry') {
    const window = await ctx.dbs.v2.query<{ id: number }>(
      `SELECT id FROM migration_control.windows WHERE table_name = $1 AND status <> 'done' ORDER BY id LIMIT 1`,
      [table],
    );
    const holder = await ctx.dbs.v2.connect();
    await holder.query('BEGIN');
    await holder.query(`LOCK TABLE ${ctx.config.schemas.v2}.${table} IN SHARE MODE`);
    return { windowId: window.rows[0].id, holder };
  }

  it('rides out a lock timeout (55P03) within the delivery with backoff, then copies the window', async () => {
    const { windowId, holder } = await lockedWindow('users');
    const retried: number[] = [];
    const waits: number[] = [];
    const result = await copyRidingOutFaults({ ...ctx.deps, v2 }, windowId, 1, {
      attempts: 5,
      baseMs: 40,
      onRetry: (attempt, error) => {
        expect(error).toBeInstanceOf(TransientDatabaseError);
        retried.push(attempt);
      },
      sleep: async (ms) => {
        waits.push(ms);
        // The lock is let go after the second timeout: the third attempt gets through.
        if (waits.length === 2) {
          await holder.query('COMMIT');
          holder.release();
        }
      },
    });
    expect(retried).toEqual([1, 2]);
    // Jittered exponential backoff: half to all of 40 ms, then of 80 ms.
    expect(waits[0]).toBeGreaterThanOrEqual(20);
    expect(waits[0]).toBeLessThanOrEqual(40);
    expect(waits[1]).toBeGreaterThanOrEqual(40);
    expect(waits[1]).toBeLessThanOrEqual(80);
    expect(result).toMatchObject({ windowId, table: 'users', path: 'staging', attempts: 3 });
    expect(result.rowsInserted).toBeGreaterThan(0);
    const row = await ctx.dbs.v2.query(
      'SELECT status, last_error FROM migration_control.windows WHERE id = $1',
      [windowId],
    );
    // One delivery: the lock waits were ridden out inside it, not by a redelivery.
    expect(row.rows[0]).toEqual({ status: 'done', last_error: null });
  });

  it('gives up after its attempts with a retryable TransientDatabaseError, the window queued again', async () => {
    const { windowId, holder } = await lockedWindow('telemetry');
    const retried: number[] = [];
    try {
      const error = await copyRidingOutFaults({ ...ctx.deps, v2 }, windowId, 1, {
        attempts: 3,
        baseMs: 10,
        onRetry: (attempt) => retried.push(attempt),
      }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(TransientDatabaseError);
      expect(error).toMatchObject({ retryable: true, message: expect.stringMatching(/lock timeout/) });
      expect(retried).toEqual([1, 2]);
    } finally {
      await holder.query('COMMIT');
      holder.release();
    }
    const row = await ctx.dbs.v2.query(
      'SELECT status, last_error FROM migration_control.windows WHERE id = $1',
      [windowId],
    );
    expect(row.rows[0]).toEqual({
      status: 'queued',
      last_error: expect.stringMatching(/^TransientDatabaseError: .*lock timeout/),
    });
  });
});
