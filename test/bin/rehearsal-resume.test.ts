import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Pool } from 'pg';
import { changeControl } from '../../lambdas/core/backfill/control';
import { parseConfig } from '../../lambdas/core/config';
import { dropDatabase, freshDatabases, type TestDatabases } from '../support/pg';

/**
 * A days-long migration dies and is run again: `npm run rehearse -- --v1-url … --v2-url …` is
 * killed with SIGKILL inside each phase in turn, and the same command run again each time goes
 * on from the migration's durable state, until the last run completes with V2 equal to V1 and a
 * report and audit log that tell what happened.
 */
const ROOT = join(__dirname, '..', '..');

interface Run {
  lines: string[];
  /** Resolves once a line of standard output matches; rejects if the process exits first. */
  waitFor(pattern: RegExp): Promise<void>;
  kill(): Promise<void>;
  exit: Promise<number | null>;
}

function rehearse(args: string[]): Run {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bin/rehearse.ts', ...args], {
    cwd: ROOT,
    env: { ...process.env, TSX_DISABLE_CACHE: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const waiters: { pattern: RegExp; resolve: () => void }[] = [];
  let buffered = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    buffered += chunk;
    const parts = buffered.split('\n');
    buffered = parts.pop()!;
    for (const line of parts) {
      lines.push(line);
      for (const w of waiters.filter((x) => x.pattern.test(line))) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    }
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => lines.push(`stderr: ${chunk}`));
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return {
    lines,
    exit,
    waitFor: (pattern) =>
      lines.some((l) => pattern.test(l))
        ? Promise.resolve()
        : new Promise<void>((resolve, reject) => {
            waiters.push({ pattern, resolve });
            void exit.then(() => reject(new Error(`exited before ${pattern}:\n${lines.join('\n')}`)));
          }),
    kill: async () => {
      child.kill('SIGKILL');
      await exit;
    },
  };
}

/** A rehearsal's databases (given by URL), its report folder, and the flags that run it. */
interface Rehearsal {
  dbs: TestDatabases;
  reportDir: string;
  args: string[];
}

/**
 * Fresh databases for a rehearsal that generates a V1 of `devices` devices and `telemetry`
 * telemetry rows and copies it in windows of `windowRows`; `more` flags after the common ones.
 */
async function rehearsal(
  prefix: string,
  sizes: { devices: number; telemetry: number; windowRows: number },
  more: string[] = [],
): Promise<Rehearsal> {
  const dbs = await freshDatabases(prefix);
  // An open V1 session would block Phase 1's backup (a copy of V1 as a template).
  await dbs.v1.end();
  const reportDir = mkdtempSync(join(tmpdir(), `${prefix}-`));
  const args = [
    ...['--v1-url', dbs.v1Url, '--v2-url', dbs.v2Url, '--generate-v1-in', dbs.v1Name],
    ...['--devices', String(sizes.devices), '--telemetry', String(sizes.telemetry)],
    ...['--window-rows', String(sizes.windowRows), '--concurrency', '2'],
    ...['--bake-seconds', '1', '--report-dir', reportDir, ...more],
  ];
  return { dbs, reportDir, args };
}

/** Removes a rehearsal's report folder and databases. */
async function removeRehearsal({ dbs, reportDir }: Rehearsal): Promise<void> {
  rmSync(reportDir, { recursive: true, force: true });
  await dbs.v2.end();
  await Promise.all([dropDatabase(dbs.v1Name), dropDatabase(dbs.v2Name)]);
}

/** The status of the newest run of `phase` in V2's phase_runs (undefined before it began). */
async function phaseStatus(v2: Pool, phase: string): Promise<string | undefined> {
  const { rows } = await v2.query<{ status: string }>(
    `SELECT status FROM migration_control.phase_runs WHERE phase = $1 ORDER BY started_at DESC, id DESC LIMIT 1`,
    [phase],
  );
  return rows[0]?.status;
}

/**
 * The last run's `--json` summary tells of a finished migration: each of `phases` done, traffic
 * at 100 %, verification clean, V2 holding as many rows as V1 in every table, and V1 holding
 * `telemetry` telemetry rows.
 */
function expectFinished(run: Run, phases: string[], telemetry: number): void {
  const summary = JSON.parse(run.lines.filter((l) => l.startsWith('{')).at(-1)!);
  expect(summary).toMatchObject({
    ok: true,
    phases: Object.fromEntries(phases.map((p) => [p, 'done'])),
    trafficPercentage: 100,
    verification: { clean: true, mismatchedWindows: 0 },
  });
  for (const t of Object.values(summary.tables as Record<string, { v1: number; v2: number }>))
    expect(t.v2).toBe(t.v1);
  expect(summary.tables.telemetry.v1).toBe(telemetry);
}

/** V2's audit log, oldest first, and `of(action)`: its entries of one action. */
async function auditLog(v2: Pool) {
  const { rows: audit } = await v2.query<{ action: string; details: Record<string, unknown> }>(
    `SELECT action, details FROM migration_control.audit_log ORDER BY id`,
  );
  return { audit, of: (action: string) => audit.filter((e) => e.action === action) };
}

describe('a rehearsal killed (SIGKILL) inside each phase, and run again each time', () => {
  let dbs: TestDatabases;
  let reportDir: string;
  let args: string[];
  const config = () => parseConfig({ v1: { url: dbs.v1Url }, v2: { url: dbs.v2Url } });
  const phase = (name: string) => phaseStatus(dbs.v2, name);
  /** Windows done, and windows sent to the (in-memory) queue and not done yet. */
  const windows = async () => {
    const { rows } = await dbs.v2.query(
      `SELECT count(*) FILTER (WHERE status = 'done') AS done,
              count(*) FILTER (WHERE status IN ('queued', 'running')) AS queued
         FROM migration_control.windows`,
    );
    return { done: Number(rows[0].done), queued: Number(rows[0].queued) };
  };
  /** Polls V2 until `check` holds (the kill then lands inside a known step), failing if the run ends first. */
  const until = async (run: Run, check: () => Promise<boolean>) => {
    let ended = false;
    void run.exit.then(() => (ended = true));
    while (!(await check().catch(() => false))) {
      if (ended) throw new Error(`the run ended first:\n${run.lines.join('\n')}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };
  const ops = (change: Parameters<typeof changeControl>[1]) =>
    changeControl({ v2: dbs.v2, config: config(), actor: 'person:test' }, change);

  beforeAll(async () => {
    ({ dbs, reportDir, args } = await rehearsal('resume', {
      devices: 20,
      telemetry: 12000,
      windowRows: 500,
    }));
  });
  afterAll(() => removeRehearsal({ dbs, reportDir, args }));

  it('goes on from where each run died, and ends with V2 equal to V1 and the story told', async () => {
    // 1. Killed in Phase 1 (its run recorded, V1 being backed up).
    const first = rehearse(args);
    await first.waitFor(/^\[migration\] Phase 1/);
    await until(first, async () => (await phase('PREPARE')) === 'running');
    await first.kill();
    expect(await phase('PREPARE')).toBe('running');

    // 2. Killed in Phase 2, with windows done and windows to do: ops hold the backfill to
    //    2,000 rows/s (as `migrate throttle --rows-per-second 2000` does), so it cannot finish first.
    await ops({ rowsPerSecond: 2000 });
    const second = rehearse(args);
    await until(second, async () => {
      const now = await windows().catch(() => ({ done: 0, queued: 0 }));
      return now.done > 0 && now.queued > 0;
    });
    await second.kill();
    expect(await phase('PREPARE')).toBe('done');
    expect(await phase('BACKFILL')).toBe('running');
    const total = await dbs.v2.query(`SELECT count(*) AS n FROM migration_control.windows`);
    const doneBefore = (await windows()).done;
    expect(doneBefore).toBeGreaterThan(0);
    expect(doneBefore).toBeLessThan(Number(total.rows[0].n));

    // 3. Killed in Phase 3 (the ceiling holds verification slices too), the backfill finished.
    const third = rehearse(args);
    // Its slices sent (the ceiling holds them back): the run dies with checks queued.
    await until(third, async () => {
      const { rows } = await dbs.v2.query(
        `SELECT count(*) AS n FROM migration_control.verification_slices s
           JOIN migration_control.verification_runs r ON r.id = s.run_id WHERE r.status = 'running'`,
      );
      return Number(rows[0].n) > 0;
    });
    await third.kill();
    // It had found the backfill windows the dead run had queued, and given them back.
    expect(third.lines).toContainEqual(expect.stringMatching(/^resuming: [1-9]\d* backfill windows/));
    expect(await phase('BACKFILL')).toBe('done');
    expect(await phase('VERIFY')).toBe('running');
    // No window was copied twice from scratch: those done before the kill stayed done.
    const redone = await dbs.v2.query(
      `SELECT count(*) AS n FROM migration_control.audit_log WHERE action = 'phase.started' AND details->>'phase' = 'BACKFILL'`,
    );
    expect(Number(redone.rows[0].n)).toBe(1);

    // 4. Killed in Phase 4 once traffic is at 25 %.
    await ops({ rowsPerSecond: null });
    const fourth = rehearse(args);
    await fourth.waitFor(/^\[cutover\] Health gate: alarms and drift · traffic to V2 25 %/);
    await fourth.kill();
    expect(fourth.lines).toContainEqual(
      expect.stringMatching(/ [1-9]\d* verification slices the last run had queued/),
    );
    expect(await phase('VERIFY')).toBe('done');
    expect(await phase('CUTOVER')).toBe('running');
    const level = await dbs.v2.query(`SELECT level, percentage FROM migration_control.cutover_state`);
    expect(level.rows[0].percentage).toBeGreaterThanOrEqual(25);

    // 5. Runs to the end.
    const last = rehearse([...args, '--json']);
    expect(await last.exit).toBe(0);
    expectFinished(last, ['prepare', 'backfill', 'verify', 'cutover'], 12000);

    // Each phase began once; each interrupted one was resumed, its lock taken from the dead run.
    const { of } = await auditLog(dbs.v2);
    expect(of('phase.started').map((e) => e.details.phase)).toEqual([
      'PREPARE',
      'BACKFILL',
      'VERIFY',
      'CUTOVER',
    ]);
    expect(of('phase.resumed').map((e) => e.details.phase)).toEqual(['PREPARE', 'BACKFILL', 'VERIFY']);
    expect(of('lock.taken-over').length).toBeGreaterThanOrEqual(4);
    expect(of('local.work-requeued').length).toBeGreaterThanOrEqual(2);
    expect(of('verification.resumed')).toHaveLength(1);
    expect(of('cutover.continued')[0].details).toMatchObject({ healthGateFirst: true });
    expect(of('cutover.started')).toHaveLength(1);

    // The last run's report tells the same story, and the throttle period.
    const json = readdirSync(reportDir).filter((f) => f.endsWith('.json'));
    const report = JSON.parse(readFileSync(join(reportDir, json.sort().at(-1)!), 'utf8')) as {
      interruptions: { action: string }[];
      throttlePeriods: { state: string; cause: string }[];
    };
    expect(report.interruptions.map((e) => e.action)).toEqual(
      expect.arrayContaining([
        'lock.taken-over',
        'phase.resumed',
        'verification.resumed',
        'cutover.continued',
      ]),
    );
    expect(report.throttlePeriods).toContainEqual(
      expect.objectContaining({ state: 'limited', cause: 'ceiling of 2,000 rows/s set by person:test' }),
    );
    const v1 = new Pool({ connectionString: dbs.v1Url });
    try {
      expect(Number((await v1.query('SELECT count(*) AS n FROM device_data')).rows[0].n)).toBe(12000);
    } finally {
      await v1.end();
    }
  }, 900_000);
});

describe('a rehearsal killed (SIGKILL) inside cleanup, and run again', () => {
  let dbs: TestDatabases;
  let reportDir: string;
  let args: string[];

  beforeAll(async () => {
    // --include-cleanup: on databases given by URL, cleanup (the rename of V1's tables) runs
    // only when asked; the rehearsal then passes the confirmation words an operator types.
    ({ dbs, reportDir, args } = await rehearsal(
      'resume_cleanup',
      { devices: 10, telemetry: 3000, windowRows: 1000 },
      ['--include-cleanup'],
    ));
  });
  afterAll(() => removeRehearsal({ dbs, reportDir, args }));

  it('renames V1 once, after the archive of the resumed run, and tells the story', async () => {
    const holder = new Client({ connectionString: dbs.v1Url });
    // Polls from its own session: pg_stat_activity stays as it was for a whole transaction.
    const watcher = new Client({ connectionString: dbs.v1Url });
    const first = rehearse(args);
    let holding = false;
    try {
      // Once V1 exists and Phase 1 is done, the test holds a read lock on V1's alerts table in
      // an open transaction: cleanup's rename (ACCESS EXCLUSIVE) then waits for it, and the
      // process is killed while it waits, inside Phase 5 with the archive made and checked.
      await first.waitFor(/^\[migration\] Phase 2/);
      await Promise.all([holder.connect(), watcher.connect()]);
      await holder.query('BEGIN');
      await holder.query('SELECT 1 FROM public.alerts LIMIT 1');
      holding = true;
      const holderPid = (await holder.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;
      await first.waitFor(/^\[migration\] Phase 5/);
      let waiting: number[] = [];
      const ended = { now: false };
      void first.exit.then(() => (ended.now = true));
      while (waiting.length === 0) {
        if (ended.now) throw new Error(`the run ended first:\n${first.lines.join('\n')}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
        const { rows } = await watcher.query<{ pid: number }>(
          `SELECT pid FROM pg_stat_activity
            WHERE $1::int = ANY (pg_blocking_pids(pid)) AND query ILIKE 'ALTER TABLE%RENAME TO%'`,
          [holderPid],
        );
        waiting = rows.map((r) => r.pid);
      }
      await first.kill();
      // The dead process's sessions die with it (the server notices a closed socket only when
      // it next writes to it: end the waiting one as the server would).
      await watcher.query('SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid', [waiting]);
    } finally {
      if (holding) await holder.query('ROLLBACK');
      await Promise.all([holder.end(), watcher.end()]);
      await first.kill();
    }
    expect(await phaseStatus(dbs.v2, 'CLEANUP')).toBe('running');
    const v1Tables = async () => {
      const pool = new Pool({ connectionString: dbs.v1Url });
      try {
        const { rows } = await pool.query<{ name: string }>(
          `SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public' ORDER BY 1`,
        );
        return rows.map((r) => r.name);
      } finally {
        await pool.end();
      }
    };
    // Nothing was renamed: the rename is one transaction, and it never committed.
    expect(await v1Tables()).toEqual(['alerts', 'device_data', 'devices', 'users']);

    const last = rehearse([...args, '--json']);
    const code = await last.exit;
    // The output shown when it fails: it says why.
    expect({ code, output: code === 0 ? '' : last.lines.join('\n') }).toEqual({ code: 0, output: '' });
    expectFinished(last, ['prepare', 'backfill', 'verify', 'cutover', 'cleanup'], 3000);
    expect(await phaseStatus(dbs.v2, 'CLEANUP')).toBe('done');
    expect(await v1Tables()).toEqual([
      'alerts_v1_archived',
      'device_data_v1_archived',
      'devices_v1_archived',
      'users_v1_archived',
    ]);

    const { audit, of } = await auditLog(dbs.v2);
    // Cleanup began once, was resumed once, and renamed exactly once, after the resumed run's archive.
    expect(of('phase.started').map((e) => e.details.phase)).toEqual([
      'PREPARE',
      'BACKFILL',
      'VERIFY',
      'CUTOVER',
      'CLEANUP',
    ]);
    expect(of('phase.resumed').map((e) => e.details.phase)).toEqual(['CLEANUP']);
    expect(of('lock.taken-over').length).toBeGreaterThanOrEqual(1);
    expect(of('cleanup.archive-started')).toHaveLength(2);
    expect(of('cleanup.renamed')).toHaveLength(1);
    expect(of('cleanup.renamed')[0].details.counts).toMatchObject({ device_data: 3000 });
    const order = audit.map((e) => e.action);
    expect(order.lastIndexOf('cleanup.archive-started')).toBeLessThan(order.indexOf('cleanup.renamed'));
    const cleanupDone = audit.filter((e) => e.action === 'phase.done' && e.details.phase === 'CLEANUP');
    expect(cleanupDone).toHaveLength(1);
    expect(audit.indexOf(cleanupDone[0])).toBeGreaterThan(order.indexOf('cleanup.renamed'));

    const json = readdirSync(reportDir).filter((f) => f.endsWith('.json'));
    expect(json).toHaveLength(1); // the killed run wrote none
    const report = JSON.parse(readFileSync(join(reportDir, json[0]), 'utf8')) as {
      interruptions: { action: string; details?: Record<string, unknown> }[];
    };
    expect(report.interruptions).toContainEqual(
      expect.objectContaining({
        action: 'phase.resumed',
        details: expect.objectContaining({ phase: 'CLEANUP' }),
      }),
    );
    expect(report.interruptions.map((e) => e.action)).toContain('lock.taken-over');
  }, 600_000);
});
