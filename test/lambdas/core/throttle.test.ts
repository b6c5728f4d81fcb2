import { Pool } from 'pg';
import { LocalQueue } from '../../../lambdas/adapters/local/local-queue';
import {
  planBackfill,
  pumpBackfill,
  backfillProgress,
  type BackfillDeps,
} from '../../../lambdas/core/backfill';
import { probeV1 } from '../../../lambdas/core/backfill/pressure';
import {
  changeControl,
  parseControlChange,
  readControl,
  NO_CONTROL,
  throttlePeriods,
  type BackfillControl,
} from '../../../lambdas/core/backfill/control';
import {
  DEFAULT_THROTTLE,
  windowRowsNow,
  type ThrottleSettings,
} from '../../../lambdas/core/backfill/throttle';
import { InvalidInputError } from '../../../lambdas/core/errors';
import {
  handleWorkMessage,
  workerBatchHandler,
  type WorkerDeps,
  type WorkResult,
} from '../../../lambdas/core/worker';
import { runVerificationLocally } from '../../../lambdas/adapters/local/local-verify';
import { seedV1, testConfig } from '../../support/fixtures';
import { prepared } from '../../support/migration';
import { freshDatabases, suiteSetup, type TestDatabases } from '../../support/pg';
import { expectAllInSync } from '../../support/in-sync';

/** Thresholds no healthy test server crosses, so that only what a test sets holds work back. */
const CALM: ThrottleSettings = { ...DEFAULT_THROTTLE, commitLatencyMs: 10_000, probeTimeoutMs: 30_000 };

async function setup(prefix: string) {
  const dbs = await freshDatabases(prefix);
  await seedV1(dbs.v1, { devices: 20, telemetry: 6000, seed: 11 });
  const config = testConfig(dbs, {
    batch: { telemetryWindowRows: 1000, entityWindowRows: 10, concurrency: 2, maxReceiveCount: 3 },
  });
  await prepared(dbs, config);
  const deps: BackfillDeps = { v1: dbs.v1, v2: dbs.v2, config };
  await planBackfill(deps);
  return { dbs, config, deps };
}

const count = async (dbs: TestDatabases, sql: string, params: unknown[] = []) =>
  Number((await dbs.v2.query(sql, params)).rows[0].n);

/** Sends what the pump sends and runs it through the worker until the queue is idle. */
async function drain(deps: WorkerDeps, results: WorkResult[] = []) {
  const queue = new LocalQueue({
    visibilityTimeoutMs: 60_000,
    maxReceiveCount: 3,
    concurrency: 2,
    retryDelayMs: 10,
  });
  queue.start(workerBatchHandler(deps, { onDone: (_, r) => results.push(r) }));
  for (;;) {
    const { enqueued, progress } = await pumpBackfill({ ...deps, queue });
    await queue.whenIdle();
    if (enqueued === 0 || progress.complete) break;
  }
  await queue.stop();
  return results;
}

describe('the backfill control: pause, resume, a ceiling, a window size', () => {
  let s: Awaited<ReturnType<typeof setup>>;
  beforeAll(async () => {
    s = await setup('throttle');
  });
  afterAll(() => s.dbs.drop());

  it('refuses a change that says nothing, or says it wrongly, naming the field', () => {
    expect(() => parseControlChange({})).toThrow(InvalidInputError);
    expect(() => parseControlChange({ rowsPerSecond: 0 })).toThrow(/rowsPerSecond/);
    expect(() => parseControlChange({ windowRows: 5 })).toThrow(/windowRows/);
    expect(() => parseControlChange({ pause: 'yes' })).toThrow(/pause/);
    expect(parseControlChange({ pause: true, reason: 'V1 batch job' })).toEqual({
      pause: true,
      reason: 'V1 batch job',
    });
  });

  it('a paused backfill copies nothing until resumed, then completes', async () => {
    const paused = await changeControl(
      { ...s.deps, actor: 'person:ops' },
      { pause: true, reason: 'nightly V1 batch' },
    );
    expect(paused).toMatchObject({
      paused: true,
      state: 'paused',
      stateCause: 'paused by person:ops: nightly V1 batch',
    });

    // The pump sends nothing while paused.
    const sent: string[] = [];
    const spy = { sendAll: async (b: readonly string[]) => (sent.push(...b), { sent: b.length, calls: 1 }) };
    expect((await pumpBackfill({ ...s.deps, queue: spy })).enqueued).toBe(0);
    expect(sent).toEqual([]);

    // Work already queued before the pause is given back, not done.
    const windows = (
      await s.dbs.v2.query(`SELECT id FROM migration_control.windows WHERE table_name = 'users'`)
    ).rows;
    await s.dbs.v2.query(`UPDATE migration_control.windows SET status = 'queued' WHERE table_name = 'users'`);
    const results: WorkResult[] = [];
    for (const w of windows)
      results.push(
        await handleWorkMessage(
          { ...s.deps, throttle: CALM },
          JSON.stringify({ type: 'copy-window', windowId: Number(w.id) }),
        ),
      );
    expect(results.every((r) => r.type === 'deferred' && r.throttle.state === 'paused')).toBe(true);
    expect(await count(s.dbs, 'SELECT count(*) AS n FROM users')).toBe(0);
    expect(
      await count(s.dbs, `SELECT count(*) AS n FROM migration_control.windows WHERE status = 'done'`),
    ).toBe(0);
    expect(
      await count(
        s.dbs,
        `SELECT count(*) AS n FROM migration_control.windows WHERE status = 'pending' AND table_name = 'users'`,
      ),
    ).toBe(windows.length);
    expect((await backfillProgress(s.dbs.v2, s.config)).throttle).toMatchObject({
      state: 'paused',
      paused: true,
    });

    await changeControl({ ...s.deps, actor: 'person:ops' }, { pause: false });
    await drain({ ...s.deps, throttle: CALM });
    const progress = await backfillProgress(s.dbs.v2, s.config);
    expect(progress.complete).toBe(true);
    expect(progress.throttle.state).toBe('running');
    await expectAllInSync(s.dbs, s.config);

    const periods = await throttlePeriods(s.dbs.v2, s.config);
    expect(periods[0]).toMatchObject({ state: 'paused', cause: 'paused by person:ops: nightly V1 batch' });
    expect(periods[0].endedAt).not.toBeNull();
    const audit = await s.dbs.v2.query(
      `SELECT actor, details FROM migration_control.audit_log WHERE action = 'throttle.changed' ORDER BY id`,
    );
    expect(audit.rows.map((r) => [r.actor, r.details.to.paused])).toEqual([
      ['person:ops', true],
      ['person:ops', false],
    ]);
  });
});

describe('a ceiling and a window size set while the backfill runs hold from the next window', () => {
  let s: Awaited<ReturnType<typeof setup>>;
  beforeAll(async () => {
    s = await setup('throttle_rate');
    // Entities first: the telemetry windows below need their devices.
    await s.dbs.v2.query(
      `UPDATE migration_control.windows SET status = 'done' WHERE table_name = 'telemetry'`,
    );
    await drain({ ...s.deps, throttle: CALM });
    await s.dbs.v2.query(
      `UPDATE migration_control.windows SET status = 'queued', rows_copied = NULL, finished_at = NULL WHERE table_name = 'telemetry'`,
    );
  });
  afterAll(() => s.dbs.drop());

  const telemetryWindows = async () =>
    (
      await s.dbs.v2.query<{
        id: string;
        seq: number;
        expected_rows: string;
        lower_bound: unknown;
        upper_bound: unknown;
        status: string;
      }>(
        `SELECT id, seq, expected_rows, lower_bound, upper_bound, status FROM migration_control.windows WHERE table_name = 'telemetry' ORDER BY seq`,
      )
    ).rows;

  it('paces windows to the ceiling from the window after the change', async () => {
    const waits: number[] = [];
    // The worker's sleeps are recorded, not slept: the bucket alone says how long each waits.
    const deps: WorkerDeps = { ...s.deps, throttle: CALM };
    const sleep = async (ms: number) => void waits.push(ms);
    const [first, second, third, fourth] = await telemetryWindows();
    const message = (id: string) => JSON.stringify({ type: 'copy-window', windowId: Number(id) });

    const before = await handleWorkMessage({ ...deps, sleep }, message(first.id));
    expect(before).toMatchObject({ type: 'copy-window', rowsCopied: 1000, throttle: { state: 'running' } });
    expect(waits).toEqual([]);

    await changeControl({ ...s.deps, actor: 'person:ops' }, { rowsPerSecond: 500 });
    const paced = [];
    const started = performance.now();
    for (const w of [second, third]) paced.push(await handleWorkMessage({ ...deps, sleep }, message(w.id)));
    const elapsed = performance.now() - started;
    // 1,000 rows at 500 rows/s: each window starts 2 s after the one before it. The sleeps are
    // not slept, so the third window's wait is those 2 s less the time the second one took.
    expect(paced.every((r) => r.type === 'copy-window' && r.throttle.state === 'limited')).toBe(true);
    expect(waits).toHaveLength(2);
    expect(waits[0]).toBeLessThan(100);
    expect(waits[1]).toBeGreaterThan(0);
    expect(waits[1]).toBeLessThanOrEqual(2000);
    expect(waits[1] + elapsed).toBeGreaterThanOrEqual(1990);
    expect((await readControl(s.dbs.v2, s.config)).stateCause).toBe(
      'ceiling of 500 rows/s set by person:ops',
    );

    // A window whose turn is further off than the longest wait is given back.
    const short = { ...CALM, maxWaitSeconds: 1 };
    const late = await handleWorkMessage({ ...deps, throttle: short }, message(fourth.id));
    expect(late).toMatchObject({ type: 'deferred', throttle: { state: 'limited' } });
    expect((await telemetryWindows()).find((w) => w.id === fourth.id)?.status).toBe('pending');
    await changeControl({ ...s.deps, actor: 'person:ops' }, { rowsPerSecond: null });
  });

  it('splits a window larger than the window size into consecutive windows, and copies them all', async () => {
    await changeControl(
      { ...s.deps, actor: 'person:ops' },
      { windowRows: 300, reason: 'shorter V1 transactions' },
    );
    const before = await telemetryWindows();
    const target = before[3];

    const result = await handleWorkMessage(
      { ...s.deps, throttle: CALM },
      JSON.stringify({ type: 'copy-window', windowId: Number(target.id) }),
    );

    expect(result).toMatchObject({ type: 'copy-window', rowsCopied: 300 });
    const after = await telemetryWindows();
    expect(after).toHaveLength(before.length + 3);
    // Key order kept: each window starts where the one before it ends, the last one where the old one ended.
    expect(after.map((w) => w.seq)).toEqual(after.map((_, i) => i + 1));
    for (let i = 1; i < after.length; i++) expect(after[i].lower_bound).toEqual(after[i - 1].upper_bound);
    const pieces = after.slice(3, 7);
    expect(pieces.map((w) => Number(w.expected_rows))).toEqual([300, 300, 300, 100]);
    expect(pieces[3].upper_bound).toEqual(target.upper_bound);
    expect(pieces.slice(1).every((w) => w.status === 'pending')).toBe(true);

    await s.dbs.v2.query(`UPDATE migration_control.windows SET status = 'pending' WHERE status = 'queued'`);
    await drain({ ...s.deps, throttle: CALM });
    expect((await backfillProgress(s.dbs.v2, s.config)).complete).toBe(true);
    // Every window copied after the change was at most 300 rows (those done before keep their size).
    const doneBefore = new Set(before.filter((w) => w.status === 'done').map((w) => w.id));
    const copiedAfter = (await telemetryWindows()).filter((w) => !doneBefore.has(w.id));
    expect(copiedAfter.length).toBeGreaterThan(pieces.length);
    expect(Math.max(...copiedAfter.map((w) => Number(w.expected_rows)))).toBeLessThanOrEqual(300);
    await expectAllInSync(s.dbs, s.config);
    const verification = await runVerificationLocally(s.deps, { repair: false });
    expect(verification.clean).toBe(true);
  });
});

describe('the automatic throttle: V1 pressure measured before each window', () => {
  const s = suiteSetup(() => setup('throttle_auto'));

  it('probes V1 with a committed write, its sessions and its replicas', async () => {
    const { probe, pressure } = await probeV1(s.dbs.v1, CALM);
    expect(pressure).toBeNull();
    expect(probe.commitMs).toBeGreaterThan(0);
    expect(['wal-message', 'xid']).toContain(probe.commitKind);
    expect(probe.activeSessions).toBeGreaterThanOrEqual(0);
    expect(probe.replicaLagSeconds).toBeNull();
  });

  it('waits while V1 shows pressure, then gives the window back, recording the period and its cause', async () => {
    const window = (
      await s.dbs.v2.query(`SELECT id FROM migration_control.windows WHERE table_name = 'users' LIMIT 1`)
    ).rows[0];
    await s.dbs.v2.query(`UPDATE migration_control.windows SET status = 'queued' WHERE id = $1`, [window.id]);
    const pressed: ThrottleSettings = {
      ...CALM,
      commitLatencyMs: 0,
      maxWaitSeconds: 0.3,
      pressureBackoffMs: 50,
    };

    const result = await handleWorkMessage(
      { ...s.deps, throttle: pressed },
      JSON.stringify({ type: 'copy-window', windowId: Number(window.id) }),
    );

    expect(result).toMatchObject({
      type: 'deferred',
      throttle: { state: 'pressure', cause: 'V1 commit latency over 0 ms' },
    });
    expect(result.throttle.waitedMs).toBeGreaterThanOrEqual(50);
    expect(await count(s.dbs, 'SELECT count(*) AS n FROM users')).toBe(0);
    const control = await readControl(s.dbs.v2, s.config);
    expect(control).toMatchObject({ state: 'pressure', stateCause: 'V1 commit latency over 0 ms' });
    expect(control.lastProbe?.pressureAt).toBeDefined();
    expect((await throttlePeriods(s.dbs.v2, s.config)).at(-1)).toMatchObject({
      state: 'pressure',
      endedAt: null,
    });

    // V1 calm again: the next window goes (after the hold-down, the state is running).
    const calm = await handleWorkMessage(
      { ...s.deps, throttle: { ...CALM, pressureHoldSeconds: 0 } },
      JSON.stringify({ type: 'copy-window', windowId: Number(window.id) }),
    );
    expect(calm).toMatchObject({ type: 'copy-window', throttle: { state: 'running' } });
    expect((await throttlePeriods(s.dbs.v2, s.config)).at(-1)?.endedAt).not.toBeNull();
  });

  it('assumes pressure when V1 gives no signal at all', async () => {
    const unreachable = new Pool({
      connectionString: 'postgres://nobody@127.0.0.1:1/none',
      connectionTimeoutMillis: 500,
    });
    unreachable.on('error', () => undefined);
    try {
      const { pressure, probe } = await probeV1(unreachable, CALM);
      expect(pressure).toBe('no signal from V1');
      expect(probe.error).toBeDefined();
    } finally {
      await unreachable.end();
    }
  });

  it('turns off with the control, for ops who know better', async () => {
    await changeControl({ ...s.deps, actor: 'person:ops' }, { autoThrottle: false });
    const window = (
      await s.dbs.v2.query(
        // A users window if one is left, else a devices one (its users are all copied then).
        `SELECT id FROM migration_control.windows WHERE table_name IN ('users', 'devices') AND status <> 'done'
          ORDER BY table_name = 'users' DESC, seq LIMIT 1`,
      )
    ).rows[0];
    const result = await handleWorkMessage(
      { ...s.deps, throttle: { ...CALM, commitLatencyMs: 0 } },
      JSON.stringify({ type: 'copy-window', windowId: Number(window.id) }),
    );
    expect(result).toMatchObject({ type: 'copy-window', throttle: { state: 'running' } });
  });
});

describe('window size under pressure (windowRowsNow)', () => {
  const now = Date.parse('2026-12-02T04:00:00Z');
  // The fields windowRowsNow reads are stated here (no window size set, the auto-throttle on, no
  // probe yet); the rest, bookkeeping it does not read, are those of a control that holds nothing back.
  const control = (over: Partial<BackfillControl>): BackfillControl => ({
    ...NO_CONTROL,
    windowRows: null,
    autoThrottle: true,
    lastProbe: null,
    ...over,
  });
  const probe = (secondsAgo: number) => ({
    at: new Date(now).toISOString(),
    commitMs: 1,
    commitKind: 'wal-message' as const,
    activeSessions: 0,
    replicaLagSeconds: null,
    pressureAt: new Date(now - secondsAgo * 1000).toISOString(),
  });
  const settings = { ...DEFAULT_THROTTLE, pressureHoldSeconds: 10, pressureWindowRows: 5000 };

  it('shrinks windows to pressureWindowRows while pressure was seen within the hold time', () => {
    expect(windowRowsNow(control({ lastProbe: probe(3) }), settings, now)).toBe(5000);
    // Ops' smaller window size wins; a larger one gives way to the pressure size.
    expect(windowRowsNow(control({ lastProbe: probe(3), windowRows: 2000 }), settings, now)).toBe(2000);
    expect(windowRowsNow(control({ lastProbe: probe(3), windowRows: 20000 }), settings, now)).toBe(5000);
  });

  it('keeps windows as planned (or as ops set them) once the hold time has passed, or with the throttle off', () => {
    expect(windowRowsNow(control({ lastProbe: probe(11) }), settings, now)).toBeNull();
    expect(windowRowsNow(control({ lastProbe: probe(11), windowRows: 20000 }), settings, now)).toBe(20000);
    expect(windowRowsNow(control({ lastProbe: probe(3), autoThrottle: false }), settings, now)).toBeNull();
    expect(
      windowRowsNow(control({ lastProbe: probe(3) }), { ...settings, pressureWindowRows: null }, now),
    ).toBeNull();
    expect(windowRowsNow(control({}), settings, now)).toBeNull();
  });
});
