import '../../lambdas/core/polyfills';
import { Pool } from 'pg';
import { LocalQueue } from '../../lambdas/adapters/local/local-queue';
import { runVerificationLocally } from '../../lambdas/adapters/local/local-verify';
import { runBackfillLocally } from '../../lambdas/adapters/local/local-backfill';
import { DualWriteV2Error, InvalidMessageError } from '../../lambdas/core/errors';
import type { MappedTable } from '../../lambdas/core/mapping';
import {
  DUAL_WRITE_REPAIR_ENQUEUE_FAILURE_METRIC,
  DUAL_WRITE_V2_FAILURE_METRIC,
  DualWriter,
  parseRepairMessage,
  repairBatchHandler,
  repairMessage,
  repairRow,
  type DualWriteFailure,
  type RepairDeps,
} from '../../client';
import { seedV1, testConfig } from '../support/fixtures';
import { prepared } from '../support/migration';
import { freshDatabases } from '../support/pg';
import {
  dualWriteSwitch,
  expectAllInSync,
  expectRowInSync,
  recorder,
  recordingQueue,
  v2RowsOf,
} from './helpers';

const at = (iso: string) => new Date(iso);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('parseRepairMessage', () => {
  it('accepts the message the dual writer sends', () => {
    expect(parseRepairMessage(repairMessage('telemetry', '42'))).toEqual({
      type: 'repair-row',
      table: 'telemetry',
      id: '42',
    });
  });

  it.each([
    ['not JSON', 'nope'],
    ['another type', JSON.stringify({ type: 'copy-window', windowId: 1 })],
    ['an unknown table', JSON.stringify({ type: 'repair-row', table: 'device_data', id: '1' })],
    [
      'a non-numeric telemetry id',
      JSON.stringify({ type: 'repair-row', table: 'telemetry', id: '1 OR 1=1' }),
    ],
    ['an extra field', JSON.stringify({ type: 'repair-row', table: 'users', id: 'u', row: {} })],
    ['an empty id', JSON.stringify({ type: 'repair-row', table: 'users', id: '' })],
  ])('refuses %s with InvalidMessageError', (_what, body) => {
    expect(() => parseRepairMessage(body)).toThrow(InvalidMessageError);
  });
});

describe('dual writes while V2 is unreachable, then the repair worker', () => {
  let ctx: Awaited<ReturnType<typeof setup>>;

  async function setup() {
    const dbs = await freshDatabases('repair');
    await seedV1(dbs.v1, { devices: 6, telemetry: 200, seed: 11 });
    const config = testConfig(dbs);
    await prepared(dbs, config);
    await runBackfillLocally({ v1: dbs.v1, v2: dbs.v2, config });
    return { dbs, config };
  }

  beforeAll(async () => {
    ctx = await setup();
  });
  afterAll(() => ctx.dbs.drop());

  /** A dual writer over its own V2 pool, recording what it reports. */
  function writer(v2: Pool, options: { v2TimeoutMs?: number } = {}) {
    const queue = recordingQueue();
    const rec = recorder();
    const failures: DualWriteFailure[] = [];
    const w = new DualWriter({
      v1: ctx.dbs.v1,
      v2,
      router: dualWriteSwitch(true),
      repairQueue: queue,
      onMetric: rec.onMetric,
      onV2Failure: (f) => void failures.push(f),
      ...options,
    });
    return { w, queue, rec, failures };
  }

  const repairs: string[] = [];
  const touched: [MappedTable, string][] = [];

  it('succeeds for the caller when the V2 pool is closed, and records a repair for every row', async () => {
    const { dbs } = ctx;
    const closed = new Pool({ connectionString: dbs.v2Url });
    await closed.end();
    const { w, queue, rec, failures } = writer(closed);
    const [user] = (await dbs.v1.query(`SELECT id FROM users ORDER BY id LIMIT 1`)).rows;
    const [device] = (await dbs.v1.query(`SELECT id, type FROM devices ORDER BY id LIMIT 1`)).rows;
    const [telemetry] = (await dbs.v1.query(`SELECT id::text AS id FROM device_data ORDER BY id LIMIT 1`))
      .rows;
    const [gone] = (await dbs.v1.query(`SELECT id::text AS id FROM device_data ORDER BY id DESC LIMIT 1`))
      .rows;
    const [alert] = (await dbs.v1.query(`SELECT id FROM alerts ORDER BY id LIMIT 1`)).rows;

    const inserted = await w.insert('users', {
      id: 'down_user',
      email: 'down@example.com',
      passwordHash: 'h',
      updatedAt: at('2026-02-01T00:00:00Z'),
    });
    expect(inserted.id).toBe('down_user');
    expect((await w.update('users', user.id, { name: 'renamed while V2 was down' }))?.name).toBe(
      'renamed while V2 was down',
    );
    await w.update('devices', device.id, { type: `${device.type}_v2down`, config: { v: 2 } });
    const newTelemetry = await w.insert('telemetry', {
      deviceId: device.id,
      timestamp: at('2026-02-02T00:00:00Z'),
      data: { x: 1 },
      protocol: 'HTTP',
    });
    await w.update('telemetry', telemetry.id, { timestamp: at('2025-01-15T08:00:00Z'), data: { moved: 1 } });
    expect((await w.delete('alerts', alert.id))?.id).toBe(alert.id);
    expect((await w.delete('telemetry', gone.id))?.id).toBe(gone.id);

    touched.push(
      ['users', 'down_user'],
      ['users', user.id],
      ['devices', device.id],
      ['telemetry', newTelemetry.id],
      ['telemetry', telemetry.id],
      ['alerts', alert.id],
      ['telemetry', gone.id],
    );
    expect(queue.bodies).toEqual(touched.map(([t, id]) => repairMessage(t, id)));
    expect(rec.count(DUAL_WRITE_V2_FAILURE_METRIC)).toBe(7);
    expect(failures.every((f) => f.error instanceof DualWriteV2Error && f.repairQueued)).toBe(true);
    expect(failures[0].error.message).toMatch(/after calling end/);
    // V2 really is behind: the new user is missing and the deleted alert is still there.
    expect(await v2RowsOf(dbs, 'users', 'down_user')).toEqual([]);
    expect(await v2RowsOf(dbs, 'alerts', alert.id)).toHaveLength(1);
    repairs.push(...queue.bodies);
  });

  it('succeeds for the caller when its V2 connection is killed mid-write (pg_terminate_backend)', async () => {
    const { dbs } = ctx;
    const v2 = new Pool({ connectionString: dbs.v2Url, max: 1, application_name: 'dual-writer-kill-test' });
    const { w, queue, failures } = writer(v2, { v2TimeoutMs: 60_000 });
    const [user] = (await dbs.v1.query(`SELECT id FROM users ORDER BY id OFFSET 1 LIMIT 1`)).rows;
    // Hold the V2 row so the dual write waits in V2, where it is killed.
    const blocker = await dbs.v2.connect();
    try {
      await blocker.query('BEGIN');
      await blocker.query('SELECT 1 FROM users WHERE id = $1 FOR UPDATE', [user.id]);
      const write = w.update('users', user.id, { name: 'killed in V2' });
      let killed = 0;
      for (let i = 0; i < 200 && killed === 0; i++) {
        await sleep(20);
        const r = await dbs.v2.query(
          `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity
            WHERE application_name = 'dual-writer-kill-test' AND wait_event_type = 'Lock'`,
        );
        killed = r.rows.length;
      }
      expect(killed).toBe(1);
      expect((await write)?.name).toBe('killed in V2');
    } finally {
      await blocker.query('ROLLBACK');
      blocker.release();
    }
    expect(failures).toHaveLength(1);
    expect(failures[0].error.message).toMatch(/terminat/i);
    expect(queue.bodies).toEqual([repairMessage('users', user.id)]);
    expect((await v2RowsOf(dbs, 'users', user.id))[0].name).not.toBe('killed in V2');
    // The pool recovers: the next dual write reaches V2 again.
    const [other] = (await dbs.v1.query(`SELECT id FROM users ORDER BY id OFFSET 2 LIMIT 1`)).rows;
    await w.update('users', other.id, { email: 'recovered@example.com' });
    await expectRowInSync(dbs, ctx.config, 'users', other.id);
    await v2.end();
    // The name is still stale in V2 until its repair runs.
    expect((await v2RowsOf(dbs, 'users', user.id))[0].name).not.toBe('killed in V2');
    repairs.push(...queue.bodies);
    touched.push(['users', user.id]);
  });

  it('does not wait for a V2 that does not answer: the write returns after v2TimeoutMs', async () => {
    const { dbs } = ctx;
    const v2 = new Pool({ connectionString: dbs.v2Url, max: 1 });
    const { w, queue, failures } = writer(v2, { v2TimeoutMs: 200 });
    const [alert] = (await dbs.v1.query(`SELECT id FROM alerts ORDER BY id DESC LIMIT 1`)).rows;
    const blocker = await dbs.v2.connect();
    try {
      await blocker.query('BEGIN');
      await blocker.query('LOCK TABLE alerts IN ACCESS EXCLUSIVE MODE');
      const started = Date.now();
      expect((await w.update('alerts', alert.id, { severity: 'LOW' }))?.severity).toBe('LOW');
      expect(Date.now() - started).toBeLessThan(5_000);
      expect(failures.map((f) => f.error.message)).toEqual([expect.stringMatching(/within 200 ms/)]);
      expect(queue.bodies).toEqual([repairMessage('alerts', alert.id)]);
    } finally {
      await blocker.query('ROLLBACK');
      blocker.release();
    }
    await sleep(100);
    await v2.end();
    repairs.push(...queue.bodies);
    touched.push(['alerts', alert.id]);
  });

  it('never throws into the caller when the repair message cannot be sent either, or a hook throws', async () => {
    const { dbs } = ctx;
    const closed = new Pool({ connectionString: dbs.v2Url });
    await closed.end();
    const queue = recordingQueue();
    queue.fail = true;
    const rec = recorder();
    const failures: DualWriteFailure[] = [];
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      const w = new DualWriter({
        v1: dbs.v1,
        v2: closed,
        router: dualWriteSwitch(true),
        repairQueue: queue,
        onMetric: rec.onMetric,
        onV2Failure: (f) => {
          failures.push(f);
          throw new Error('a broken hook');
        },
      });
      const row = await w.insert('users', {
        id: 'lost_user',
        email: 'lost@example.com',
        passwordHash: 'h',
        updatedAt: at('2026-02-01T00:00:00Z'),
      });
      expect(row.id).toBe('lost_user');
      const throwingRouter = new DualWriter({
        v1: dbs.v1,
        v2: dbs.v2,
        router: {
          dualWriteEnabled: () => {
            throw new Error('router broken');
          },
        },
        repairQueue: recordingQueue(),
      });
      expect((await throwingRouter.update('users', 'lost_user', { name: 'n' }))?.name).toBe('n');
      expect(warn).toHaveBeenCalledWith('a broken hook', 'DualWriterCallbackWarning');
    } finally {
      warn.mockRestore();
    }
    expect(rec.count(DUAL_WRITE_V2_FAILURE_METRIC)).toBe(1);
    expect(rec.count(DUAL_WRITE_REPAIR_ENQUEUE_FAILURE_METRIC)).toBe(1);
    expect(failures).toMatchObject([{ table: 'users', id: 'lost_user', repairQueued: false }]);
    expect(String(failures[0].repairError)).toMatch(/SQS is unreachable/);
    // Nothing can repair this row but the verification: queue it by hand for the worker below.
    repairs.push(repairMessage('users', 'lost_user'));
    touched.push(['users', 'lost_user']);
  });

  it('makes V2 equal to V1 for every repaired row once V2 is back, through the queue', async () => {
    const { dbs, config } = ctx;
    // V2 lags V1 on the rows written while it was down.
    const lagging = await Promise.all(
      touched.map(([t, id]) =>
        expectRowInSync(dbs, config, t, id).then(
          () => false,
          () => true,
        ),
      ),
    );
    expect(lagging.filter(Boolean).length).toBeGreaterThanOrEqual(6);

    const deps: RepairDeps = { v1: dbs.v1, v2: dbs.v2, tenantId: config.tenant.id };
    const errors: Error[] = [];
    const repaired: string[] = [];
    const queue = new LocalQueue({
      visibilityTimeoutMs: 30_000,
      maxReceiveCount: 5,
      concurrency: 2,
      retryDelayMs: 20,
      batchSize: 3,
    });
    queue.start(
      repairBatchHandler(deps, {
        onRepaired: (_r, result) => void repaired.push(`${result.table}:${result.id}:${result.action}`),
        onError: (_r, e) => void errors.push(e),
      }),
    );
    const bad = [
      '{"type":"repair-row"',
      JSON.stringify({ type: 'repair-row', table: 'telemetry', id: 'abc' }),
    ];
    // Every message twice: redelivery and duplicates are harmless.
    await queue.sendAll([...repairs, ...bad, ...repairs]);
    await queue.whenIdle();
    await queue.stop();

    expect(queue.dlq().map((d) => d.body)).toEqual(bad);
    expect(errors.length).toBeGreaterThanOrEqual(bad.length);
    expect(errors.filter((e) => !(e instanceof InvalidMessageError))).toEqual([]);
    expect(repaired).toContain(`alerts:${touched.find(([t]) => t === 'alerts')?.[1]}:deleted`);
    for (const [table, id] of touched) await expectRowInSync(dbs, config, table, id);
    await expectAllInSync(dbs, config);
    // And the Phase 3 verifier, window by window on both sides, agrees.
    const report = await runVerificationLocally(
      { v1: dbs.v1, v2: dbs.v2, config },
      { repair: false, sampleSize: 50 },
    );
    expect(report.mismatches).toEqual([]);
    expect(report.clean).toBe(true);
  });

  it("repairs idempotently, and brings a row's parent V2 does not have yet from V1 first", async () => {
    const { dbs, config } = ctx;
    const deps: RepairDeps = { v1: dbs.v1, v2: dbs.v2, tenantId: config.tenant.id };
    const [user] = (await dbs.v1.query(`SELECT id FROM users ORDER BY id LIMIT 1`)).rows;
    const first = await repairRow(deps, 'users', user.id);
    const again = await repairRow(deps, 'users', user.id);
    expect([first.action, again.action]).toEqual(['upserted', 'upserted']);
    await expectRowInSync(dbs, config, 'users', user.id);
    expect(await repairRow(deps, 'alerts', 'never_existed')).toEqual({
      table: 'alerts',
      id: 'never_existed',
      action: 'deleted',
    });

    // A device and its alert written to V1 only (dual-write off): V2 refuses the alert without
    // its device, so the repair syncs the device from V1 first.
    await dbs.v1.query(
      `INSERT INTO devices (id, name, type, "updatedAt") VALUES ('orphan_dev', 'o', 'orphan_type', now())`,
    );
    await dbs.v1.query(
      `INSERT INTO alerts (id, "deviceId", severity, message) VALUES ('orphan_alert', 'orphan_dev', 'LOW', 'm')`,
    );
    expect(await repairRow(deps, 'alerts', 'orphan_alert')).toMatchObject({ action: 'upserted' });
    await expectRowInSync(dbs, config, 'devices', 'orphan_dev');
    await expectRowInSync(dbs, config, 'alerts', 'orphan_alert');
  });
});
